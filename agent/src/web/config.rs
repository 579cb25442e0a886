//! `[web]`: where the UI listens, its certificate, session limits, lockout, directory sign-in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::accounts::Role;
use crate::settings::{ConfigError, Profile};

/// Where the UI's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// The box made its own CA at provisioning; IT installs its root on the workstations.
    #[default]
    LocalCa,
    /// The clinic's own certificate and key (`cert_file`, `key_file`, PEM).
    Files,
    /// Dev profile only, loopback only: plain HTTP, stated in health as running without TLS.
    PlainHttpDev,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address of the HTTPS UI and the health endpoint.
    pub listen: SocketAddr,
    pub tls: TlsMode,
    /// `tls = "files"`: certificate chain (PEM), leaf first.
    pub cert_file: Option<PathBuf>,
    /// `tls = "files"`: private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key_file: Option<PathBuf>,
    /// `tls = "local-ca"`: the names (and addresses) the workstations use to reach the box;
    /// the server certificate carries them and the CA is constrained to them.
    pub hostnames: Vec<String>,
    /// Plain-HTTP listener that only redirects to HTTPS (port 80 on the box). Unset: none.
    pub redirect_listen: Option<SocketAddr>,
    /// A session ends after this many seconds without a request (15 minutes by default).
    pub idle_timeout_secs: u64,
    /// A session ends this many seconds after sign-in, however busy.
    pub absolute_timeout_secs: u64,
    /// The absolute limit of an emergency (break-glass) session.
    pub break_glass_timeout_secs: u64,
    /// Failed sign-ins from one client address before its further attempts are spaced out
    /// (1, 2, 4... seconds).
    pub signin_free_failures: u32,
    /// Failed sign-ins from one client address after which sign-in from it is paused.
    pub signin_block_after: u32,
    /// How long sign-in from such an address is paused (and how long an address's failures
    /// are remembered).
    pub signin_block_secs: u64,
    /// Failed sign-ins against one account, from at least `lockout_addresses` different
    /// addresses within `lockout_window_secs`, that lock it (distributed guessing).
    pub lockout_threshold: u32,
    /// Different client addresses the failures must come from before an account locks, so a
    /// single guesser cannot lock anyone out (the address throttle stops it instead).
    pub lockout_addresses: u32,
    /// The period over which failures against an account are counted.
    pub lockout_window_secs: u64,
    /// How long a locked account stays locked (an administrator can unlock it sooner).
    pub lockout_secs: u64,
    /// Seconds a client gets to finish the TLS handshake after connecting; a connection that
    /// stalls longer is closed (it would otherwise hold a connection for nothing).
    pub handshake_timeout_secs: u64,
    /// Seconds a client gets to send a whole request head (request line and headers), also
    /// the longest an idle HTTP/1.1 keep-alive connection stays open: a client that trickles
    /// its headers (slowloris) is closed.
    pub header_timeout_secs: u64,
    /// Open connections one client address may hold (IPv6: one /64); the next one is closed
    /// at once. Raise it when many people share one address (a terminal server or NAT). Also
    /// the most sign-ins from one address whose passwords are checked at the same time (the
    /// people behind that address signing in together; see `web::throttle`).
    pub max_connections_per_address: u32,
    /// Directory sign-in; unset: local accounts only.
    pub ldap: Option<LdapConfig>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: TlsMode::LocalCa,
            cert_file: None,
            key_file: None,
            hostnames: vec!["localhost".into(), "127.0.0.1".into()],
            redirect_listen: None,
            idle_timeout_secs: 15 * 60,
            absolute_timeout_secs: 12 * 3600,
            break_glass_timeout_secs: 3600,
            signin_free_failures: 3,
            signin_block_after: 10,
            signin_block_secs: 15 * 60,
            lockout_threshold: 5,
            lockout_addresses: 3,
            lockout_window_secs: 3600,
            lockout_secs: 15 * 60,
            handshake_timeout_secs: 10,
            header_timeout_secs: 15,
            max_connections_per_address: 64,
            ldap: None,
        }
    }
}

impl WebConfig {
    /// The dev profile's UI: plain HTTP on loopback, reported in health as running without TLS.
    pub fn dev() -> Self {
        Self { tls: TlsMode::PlainHttpDev, ..Self::default() }
    }
}

/// `[web.ldap]`: bind as the person, read their groups, map groups to roles.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://dc1.clinic.local:636`, or `ldap://…` with `starttls = true`.
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// The bind DN with `{user}` for the user name, e.g. `uid={user},ou=people,dc=clinic,dc=local`,
    /// or `{user}@clinic.local` for Active Directory.
    pub bind_dn: String,
    /// Where to look for the person's entry (for the display name and the DN used in group
    /// membership), e.g. `ou=people,dc=clinic,dc=local`.
    pub user_base: String,
    /// Filter for the person's entry, with `{user}`; default `(uid={user})`. AD:
    /// `(sAMAccountName={user})`.
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// Where the groups are, e.g. `ou=groups,dc=clinic,dc=local`.
    pub group_base: String,
    /// Group DN → Wardbox role. A person in no mapped group cannot sign in; a person in groups
    /// of two different roles is refused until the directory is fixed.
    pub groups: BTreeMap<String, Role>,
    /// PEM file of the CA that signed the directory's certificate (private CAs are the rule).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for the directory before giving up (sign-in then fails, and the
    /// break-glass page still works).
    #[serde(default = "default_ldap_timeout")]
    pub timeout_secs: u64,
    /// The attribute of the person's entry that holds their postal address, kept for the
    /// `same_address` alert rule and refreshed at every sign-in; default `postalAddress`.
    /// A directory that keeps home addresses apart names `homePostalAddress`; `""` reads none.
    #[serde(default = "default_address_attribute")]
    pub address_attribute: String,
}

fn default_address_attribute() -> String {
    "postalAddress".into()
}

fn default_user_filter() -> String {
    "(uid={user})".into()
}

fn default_ldap_timeout() -> u64 {
    5
}

impl WebConfig {
    pub fn validate(&self, profile: Profile) -> Result<(), ConfigError> {
        let min_idle = if profile == Profile::Dev { 2 } else { 60 };
        if self.idle_timeout_secs < min_idle || self.idle_timeout_secs > 3600 {
            return Err(ConfigError::invalid(
                "web.idle_timeout_secs",
                format!("must be between {min_idle} and 3600 seconds (a workstation left alone must sign out within the hour)"),
            ));
        }
        if self.absolute_timeout_secs < self.idle_timeout_secs || self.absolute_timeout_secs > 24 * 3600 {
            return Err(ConfigError::invalid(
                "web.absolute_timeout_secs",
                "must be at least web.idle_timeout_secs and at most 86400 (24 hours)",
            ));
        }
        if self.break_glass_timeout_secs < self.idle_timeout_secs || self.break_glass_timeout_secs > 4 * 3600 {
            return Err(ConfigError::invalid(
                "web.break_glass_timeout_secs",
                "must be at least web.idle_timeout_secs and at most 14400 (4 hours)",
            ));
        }
        if !(3..=20).contains(&self.lockout_threshold) {
            return Err(ConfigError::invalid("web.lockout_threshold", "must be between 3 and 20 failed sign-ins"));
        }
        if !(60..=86400).contains(&self.lockout_secs) {
            return Err(ConfigError::invalid("web.lockout_secs", "must be between 60 and 86400 seconds"));
        }
        if !(2..=20).contains(&self.lockout_addresses) || self.lockout_addresses > self.lockout_threshold {
            return Err(ConfigError::invalid(
                "web.lockout_addresses",
                "must be between 2 and 20 and at most web.lockout_threshold (one address is throttled, never allowed to lock an account)",
            ));
        }
        if !(300..=7 * 86400).contains(&self.lockout_window_secs) {
            return Err(ConfigError::invalid("web.lockout_window_secs", "must be between 300 and 604800 seconds"));
        }
        if !(1..=10).contains(&self.signin_free_failures) {
            return Err(ConfigError::invalid("web.signin_free_failures", "must be between 1 and 10 failed sign-ins"));
        }
        if self.signin_block_after <= self.signin_free_failures || self.signin_block_after > 50 {
            return Err(ConfigError::invalid(
                "web.signin_block_after",
                "must be more than web.signin_free_failures and at most 50 failed sign-ins",
            ));
        }
        if !(60..=86400).contains(&self.signin_block_secs) {
            return Err(ConfigError::invalid("web.signin_block_secs", "must be between 60 and 86400 seconds"));
        }
        if !(1..=60).contains(&self.handshake_timeout_secs) {
            return Err(ConfigError::invalid("web.handshake_timeout_secs", "must be between 1 and 60 seconds"));
        }
        if !(1..=300).contains(&self.header_timeout_secs) {
            return Err(ConfigError::invalid("web.header_timeout_secs", "must be between 1 and 300 seconds"));
        }
        if !(1..=10_000).contains(&self.max_connections_per_address) {
            return Err(ConfigError::invalid("web.max_connections_per_address", "must be between 1 and 10000 connections"));
        }
        match self.tls {
            TlsMode::PlainHttpDev => {
                if profile != Profile::Dev {
                    return Err(ConfigError::invalid(
                        "web.tls",
                        "plain-http-dev sends passwords and patient data unencrypted; the appliance profile requires local-ca or files",
                    ));
                }
                if !self.listen.ip().is_loopback() {
                    return Err(ConfigError::invalid(
                        "web.tls",
                        "plain-http-dev is allowed only on a loopback web.listen address",
                    ));
                }
            }
            TlsMode::Files => {
                for (key, value) in [("web.cert_file", &self.cert_file), ("web.key_file", &self.key_file)] {
                    match value {
                        None => return Err(ConfigError::invalid(key, "is required when web.tls = \"files\"")),
                        Some(p) if !p.is_absolute() => return Err(ConfigError::invalid(key, "must be an absolute path")),
                        Some(_) => {}
                    }
                }
            }
            TlsMode::LocalCa => {
                if self.hostnames.is_empty() {
                    return Err(ConfigError::invalid(
                        "web.hostnames",
                        "must name at least one host name or address the workstations use to reach the box",
                    ));
                }
                for name in &self.hostnames {
                    if name.parse::<std::net::IpAddr>().is_err() && !valid_dns_name(name) {
                        return Err(ConfigError::invalid("web.hostnames", format!("{name:?} is neither a DNS name nor an IP address")));
                    }
                }
            }
        }
        if let Some(redirect) = self.redirect_listen {
            if self.tls == TlsMode::PlainHttpDev {
                return Err(ConfigError::invalid("web.redirect_listen", "has nothing to redirect to without TLS"));
            }
            if redirect.port() == self.listen.port() {
                return Err(ConfigError::invalid("web.redirect_listen", "must use another port than web.listen"));
            }
        }
        if let Some(ldap) = &self.ldap {
            ldap.validate(profile)?;
        }
        Ok(())
    }
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl LdapConfig {
    pub fn validate(&self, profile: Profile) -> Result<(), ConfigError> {
        let plain = self.url.starts_with("ldap://");
        if !plain && !self.url.starts_with("ldaps://") {
            return Err(ConfigError::invalid("web.ldap.url", "must start with ldaps:// or ldap://"));
        }
        if plain && !self.starttls && profile == Profile::Appliance {
            return Err(ConfigError::invalid(
                "web.ldap.url",
                "ldap:// without starttls sends passwords in clear over the network; use ldaps:// or set web.ldap.starttls = true",
            ));
        }
        if !self.bind_dn.contains("{user}") {
            return Err(ConfigError::invalid("web.ldap.bind_dn", "must contain {user}"));
        }
        if !self.user_filter.contains("{user}") {
            return Err(ConfigError::invalid("web.ldap.user_filter", "must contain {user}"));
        }
        if self.groups.is_empty() {
            return Err(ConfigError::invalid("web.ldap.groups", "must map at least one directory group to a role"));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 60 {
            return Err(ConfigError::invalid("web.ldap.timeout_secs", "must be between 1 and 60"));
        }
        let a = &self.address_attribute;
        let attribute_name = a.starts_with(|c: char| c.is_ascii_alphabetic()) && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !a.is_empty() && !attribute_name {
            return Err(ConfigError::invalid(
                "web.ldap.address_attribute",
                "must be an attribute name (letters, digits, hyphens), e.g. postalAddress, or \"\" to read no address",
            ));
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_absolute()
        {
            return Err(ConfigError::invalid("web.ldap.ca_file", "must be an absolute path"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(profile: Profile, edit: impl FnOnce(&mut WebConfig)) -> Result<(), String> {
        let mut c = WebConfig::default();
        edit(&mut c);
        c.validate(profile).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_for_both_profiles() {
        assert_eq!(check(Profile::Dev, |_| {}), Ok(()));
        assert_eq!(check(Profile::Appliance, |_| {}), Ok(()));
    }

    #[test]
    fn bad_web_settings_name_their_key() {
        type Case = (Profile, Box<dyn FnOnce(&mut WebConfig)>, &'static str);
        let cases: Vec<Case> = vec![
            (Profile::Appliance, Box::new(|c| c.tls = TlsMode::PlainHttpDev), "`web.tls`"),
            (Profile::Dev, Box::new(|c| { c.tls = TlsMode::PlainHttpDev; c.listen = "0.0.0.0:80".parse().expect("addr") }), "loopback"),
            (Profile::Appliance, Box::new(|c| c.idle_timeout_secs = 7200), "`web.idle_timeout_secs`"),
            (Profile::Appliance, Box::new(|c| c.idle_timeout_secs = 5), "`web.idle_timeout_secs`"),
            (Profile::Dev, Box::new(|c| c.absolute_timeout_secs = 10), "`web.absolute_timeout_secs`"),
            (Profile::Dev, Box::new(|c| c.lockout_threshold = 1), "`web.lockout_threshold`"),
            (Profile::Dev, Box::new(|c| c.lockout_addresses = 1), "`web.lockout_addresses`"),
            (Profile::Dev, Box::new(|c| c.lockout_addresses = 6), "`web.lockout_addresses`"),
            (Profile::Dev, Box::new(|c| c.signin_block_after = 3), "`web.signin_block_after`"),
            (Profile::Dev, Box::new(|c| c.signin_free_failures = 0), "`web.signin_free_failures`"),
            (Profile::Dev, Box::new(|c| c.signin_block_secs = 10), "`web.signin_block_secs`"),
            (Profile::Dev, Box::new(|c| c.lockout_window_secs = 10), "`web.lockout_window_secs`"),
            (Profile::Dev, Box::new(|c| c.handshake_timeout_secs = 0), "`web.handshake_timeout_secs`"),
            (Profile::Dev, Box::new(|c| c.header_timeout_secs = 0), "`web.header_timeout_secs`"),
            (Profile::Dev, Box::new(|c| c.max_connections_per_address = 0), "`web.max_connections_per_address`"),
            (Profile::Dev, Box::new(|c| c.tls = TlsMode::Files), "`web.cert_file`"),
            (Profile::Dev, Box::new(|c| { c.tls = TlsMode::Files; c.cert_file = Some("/c.pem".into()) }), "`web.key_file`"),
            (Profile::Dev, Box::new(|c| c.hostnames = vec!["bad name".into()]), "`web.hostnames`"),
            (Profile::Dev, Box::new(|c| c.redirect_listen = Some("127.0.0.1:8443".parse().expect("addr"))), "`web.redirect_listen`"),
        ];
        for (profile, edit, expected) in cases {
            let err = check(profile, edit).expect_err(expected);
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    #[test]
    fn cleartext_ldap_is_refused_on_the_appliance() {
        let ldap = LdapConfig {
            url: "ldap://dc1:389".into(),
            starttls: false,
            bind_dn: "uid={user},ou=people,dc=x".into(),
            user_base: "ou=people,dc=x".into(),
            user_filter: default_user_filter(),
            group_base: "ou=groups,dc=x".into(),
            groups: BTreeMap::from([("cn=doctors,ou=groups,dc=x".to_string(), Role::Clinician)]),
            ca_file: None,
            timeout_secs: 5,
            address_attribute: default_address_attribute(),
        };
        assert!(ldap.validate(Profile::Dev).is_ok());
        let no_address = LdapConfig { address_attribute: String::new(), ..ldap.clone() };
        assert!(no_address.validate(Profile::Dev).is_ok());
        let filter = LdapConfig { address_attribute: "postalAddress)(uid=*".into(), ..ldap.clone() };
        assert!(filter.validate(Profile::Dev).expect_err("not a name").to_string().contains("web.ldap.address_attribute"));
        let err = ldap.validate(Profile::Appliance).expect_err("cleartext").to_string();
        assert!(err.contains("`web.ldap.url`"), "{err}");
        let tls = LdapConfig { starttls: true, ..ldap.clone() };
        assert!(tls.validate(Profile::Appliance).is_ok());
        let bad = LdapConfig { bind_dn: "cn=admin".into(), ..ldap };
        assert!(bad.validate(Profile::Dev).expect_err("no {user}").to_string().contains("web.ldap.bind_dn"));
    }
}
