//! Alerts on anomalous access, wired into the agent: the detector (`wardbox-alerts`) fed by the
//! audit chain, a durable outbox in the store, and delivery to the clinic's own LAN (syslog
//! over TLS, e-mail through the clinic's relay with STARTTLS).
//!
//! - `feed`: reads the chain in `seq` order into one `Detector`, stores each alert with its
//!   outbox rows, and audits it. At start it replays the whole chain to rebuild the detector's
//!   baselines (see docs/alerts.md for why replay rather than a saved state).
//! - `outbox`: the SQL of the `alerts`, `alert_outbox` and `alert_detector` tables, and the
//!   pure backoff.
//! - `heartbeat`: one message a day to each destination, so silence is noticed there.
//! - `review`: the weekly activity review of the audit trail and who reviewed which week.
//! - `relations`: the names compared in memory for the related-record rules (own record,
//!   co-worker's, same surname); only (user, hashed patient id, relation) reaches the detector.
//! - `workflow`: acknowledge, assign, disposition, close, each recorded and audited; "possible
//!   breach" starts the 60-day notification clock.
//! - `deliver`: the messages (no PHI), the RFC 5425 syslog client and the SMTP client.
//! - `smtp_auth`: SMTP AUTH for a relay that requires it: the password file, the choice of
//!   PLAIN or LOGIN from the relay's EHLO, their encodings (pure but for the file).
//! - this file: the `[alert_delivery]` section and the firewall rules it implies.

pub mod deliver;
pub mod feed;
pub mod heartbeat;
pub mod outbox;
pub mod relations;
pub mod review;
pub mod smtp_auth;
pub mod workflow;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wardbox_firewall::{AllowOut, Protocol};

use crate::settings::ConfigError;

pub use feed::{Feed, FeedError};
pub use outbox::{Destination, StoredAlert};

/// `[alert_delivery]`: where alerts go besides the admin page. Both destinations are optional;
/// with neither, alerts are only stored and shown on the box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// The box's address as the clinic's staff reach it (`https://wardbox.clinic.local:8443`):
    /// each message links to the alert's page there instead of carrying its details.
    pub admin_url: String,
    /// First retry after a failed delivery, in seconds; doubled at each failure.
    pub retry_initial_secs: Option<u64>,
    /// Longest wait between retries, in seconds.
    pub retry_max_secs: Option<u64>,
    /// Seconds between heartbeats to each destination (a day by default), so the receiving
    /// side notices when the box falls silent.
    pub heartbeat_secs: Option<u64>,
    pub syslog: Option<SyslogConfig>,
    pub email: Option<EmailConfig>,
}

/// RFC 5424 messages over TLS (RFC 5425) to the clinic's log collector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// The collector's IP address and port (`10.1.5.20:6514`). An address, not a name: the
    /// firewall opens exactly this destination, and the box needs no DNS to reach it.
    pub address: String,
    /// The name the collector's certificate carries (`syslog.clinic.local`).
    pub server_name: String,
    /// The CA that signed the collector's certificate (PEM), by absolute path.
    pub ca_file: PathBuf,
    /// The box's own certificate (PEM) for mutual authentication (RFC 5425 section 5.1), so the
    /// collector accepts messages only from the box; with `client_key_file`, or neither.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file` (PEM), by absolute path; read at each session, never logged.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// E-mail through the clinic's relay; STARTTLS is required, never optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The relay's IP address and port (`10.1.5.25:25`); the firewall opens exactly this.
    pub relay: String,
    /// The name the relay's certificate carries.
    pub server_name: String,
    /// The CA that signed the relay's certificate (PEM), by absolute path.
    pub ca_file: PathBuf,
    /// Sender address (`wardbox@clinic.local`).
    pub from: String,
    /// Recipients (the privacy officer, IT).
    pub to: Vec<String>,
    /// For a relay that accepts mail only after authentication (Exchange, submission on 587):
    /// the user name, with `password_file`. Sent only inside TLS, after STARTTLS.
    #[serde(default)]
    pub user: Option<String>,
    /// The file (absolute path, readable by its owner only) whose first line is the relay
    /// password. The password itself is never in the configuration; the file is checked when
    /// the configuration is loaded and read again at each session.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

impl EmailConfig {
    /// The user name and password file when the relay is to be authenticated to.
    pub fn credentials(&self) -> Option<(&str, &std::path::Path)> {
        self.user.as_deref().zip(self.password_file.as_deref())
    }
}

fn default_timeout() -> u64 {
    10
}

pub const DEFAULT_RETRY_INITIAL_SECS: u64 = 30;
pub const DEFAULT_RETRY_MAX_SECS: u64 = 3600;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 86_400;
/// Names of the firewall rules the destinations open (they appear in rule comments).
pub const SYSLOG_RULE: &str = "alerts-syslog";
pub const SMTP_RULE: &str = "alerts-smtp";

impl DeliveryConfig {
    /// The destinations configured, in a fixed order.
    pub fn destinations(&self) -> Vec<Destination> {
        let mut d = Vec::new();
        if self.syslog.is_some() {
            d.push(Destination::Syslog);
        }
        if self.email.is_some() {
            d.push(Destination::Email);
        }
        d
    }

    pub fn retry_initial_secs(&self) -> u64 {
        self.retry_initial_secs.unwrap_or(DEFAULT_RETRY_INITIAL_SECS)
    }

    pub fn retry_max_secs(&self) -> u64 {
        self.retry_max_secs.unwrap_or(DEFAULT_RETRY_MAX_SECS)
    }

    pub fn heartbeat_secs(&self) -> u64 {
        self.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS)
    }

    /// Every check; each error names its key. `firewall_on`: with the egress firewall on, a
    /// destination must be an internal address (the firewall opens it and nothing else).
    pub fn validate(&self, firewall_on: bool) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| Err(ConfigError::invalid(format!("alert_delivery.{key}"), problem));
        if self.syslog.is_none() && self.email.is_none() {
            return Ok(());
        }
        let url = &self.admin_url;
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 10 || url.chars().any(|c| c.is_control() || c == ' ') {
            return bad("admin_url", format!("`{url}` must be the box's address as staff reach it, e.g. https://wardbox.clinic.local:8443"));
        }
        let initial = self.retry_initial_secs();
        let max = self.retry_max_secs();
        if !(1..=3600).contains(&initial) {
            return bad("retry_initial_secs", format!("{initial} must be between 1 and 3600 seconds"));
        }
        if max < initial || max > 86_400 {
            return bad("retry_max_secs", format!("{max} must be at least retry_initial_secs ({initial}) and at most 86400 seconds"));
        }
        let heartbeat = self.heartbeat_secs();
        if !(300..=7 * 86_400).contains(&heartbeat) {
            return bad("heartbeat_secs", format!("{heartbeat} must be between 300 seconds and 7 days (604800)"));
        }
        if let Some(s) = &self.syslog {
            check_endpoint("syslog", "address", &s.address, &s.server_name, &s.ca_file, s.timeout_secs, firewall_on)?;
            match (&s.client_cert_file, &s.client_key_file) {
                (None, None) => {}
                (Some(cert), Some(key)) => {
                    for (k, path) in [("client_cert_file", cert), ("client_key_file", key)] {
                        if !path.is_absolute() {
                            return bad(&format!("syslog.{k}"), format!("`{}` must be an absolute path", path.display()));
                        }
                    }
                }
                (Some(_), None) => return bad("syslog.client_key_file", "client_cert_file needs its key: name both or neither".into()),
                (None, Some(_)) => return bad("syslog.client_cert_file", "client_key_file needs its certificate: name both or neither".into()),
            }
        }
        if let Some(e) = &self.email {
            check_endpoint("email", "relay", &e.relay, &e.server_name, &e.ca_file, e.timeout_secs, firewall_on)?;
            if !is_mail_address(&e.from) {
                return bad("email.from", format!("`{}` is not an e-mail address", e.from));
            }
            if e.to.is_empty() {
                return bad("email.to", "name at least one recipient".into());
            }
            for (i, to) in e.to.iter().enumerate() {
                if !is_mail_address(to) {
                    return bad(&format!("email.to[{i}]"), format!("`{to}` is not an e-mail address"));
                }
            }
            match (&e.user, &e.password_file) {
                (None, None) => {}
                (Some(_), None) => return bad("email.password_file", "user needs password_file (the file that holds its password)".into()),
                (None, Some(_)) => return bad("email.user", "password_file needs user (the user name the relay knows)".into()),
                (Some(user), Some(file)) => {
                    if user.is_empty() || user.len() > 255 || user.chars().any(char::is_control) {
                        return bad("email.user", "the user name must be 1 to 255 characters, without control characters".into());
                    }
                    if !file.is_absolute() {
                        return bad("email.password_file", format!("`{}` must be an absolute path", file.display()));
                    }
                    // The one check here that reads a file: a password that cannot be used
                    // would otherwise surface only as failed deliveries, hours later.
                    if let Err(e) = smtp_auth::read_password_file(file) {
                        return bad("email.password_file", e.reason);
                    }
                }
            }
        }
        Ok(())
    }

    /// The outbound rules the destinations need, one each: exactly the configured address,
    /// TCP, its port. Added to the firewall policy when the configuration is loaded, so the
    /// ruleset, its verification and drift repair all know them.
    pub fn egress(&self) -> Vec<AllowOut> {
        let rule = |name: &str, addr: &str| {
            addr.parse::<SocketAddr>().ok().map(|a| AllowOut {
                name: name.to_owned(),
                dest: a.ip().to_string(),
                protocol: Protocol::Tcp,
                port: u32::from(a.port()),
            })
        };
        let mut rules = Vec::new();
        rules.extend(self.syslog.as_ref().and_then(|s| rule(SYSLOG_RULE, &s.address)));
        rules.extend(self.email.as_ref().and_then(|e| rule(SMTP_RULE, &e.relay)));
        rules
    }
}

fn check_endpoint(
    section: &str,
    addr_key: &str,
    address: &str,
    server_name: &str,
    ca_file: &std::path::Path,
    timeout_secs: u64,
    firewall_on: bool,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("alert_delivery.{section}.{k}");
    let Ok(addr) = address.parse::<SocketAddr>() else {
        return Err(ConfigError::invalid(
            key(addr_key),
            format!("`{address}` must be an IP address and port, e.g. 10.1.5.20:6514 (the firewall opens exactly this destination)"),
        ));
    };
    if addr.port() == 0 {
        return Err(ConfigError::invalid(key(addr_key), "port 0 is not a port"));
    }
    if firewall_on && !crate::settings::is_clinic_address(addr.ip()) {
        return Err(ConfigError::invalid(
            key(addr_key),
            format!("`{}` is not an address inside the clinic (10/8, 172.16/12, 192.168/16, fc00::/7); alerts never leave the clinic", addr.ip()),
        ));
    }
    if rustls_pki_types::ServerName::try_from(server_name.to_owned()).is_err() || server_name.is_empty() {
        return Err(ConfigError::invalid(key("server_name"), format!("`{server_name}` is not a host name the certificate could carry")));
    }
    if !ca_file.is_absolute() {
        return Err(ConfigError::invalid(key("ca_file"), format!("`{}` must be an absolute path", ca_file.display())));
    }
    if !(1..=120).contains(&timeout_secs) {
        return Err(ConfigError::invalid(key("timeout_secs"), format!("{timeout_secs} must be between 1 and 120 seconds")));
    }
    Ok(())
}

/// Plain `local@domain`, nothing that could end an SMTP command or add a header.
fn is_mail_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.contains('@')
        && a.len() <= 254
        && a.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '(' | ')' | ',' | ';' | ':' | '\\' | '[' | ']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DeliveryConfig {
        toml::from_str(text).expect("toml")
    }

    const GOOD: &str = r#"
        admin_url = "https://wardbox.clinic.local:8443"
        [syslog]
        address = "10.1.5.20:6514"
        server_name = "syslog.clinic.local"
        ca_file = "/etc/wardbox/clinic-ca.pem"
        [email]
        relay = "10.1.5.25:25"
        server_name = "mail.clinic.local"
        ca_file = "/etc/wardbox/clinic-ca.pem"
        from = "wardbox@clinic.local"
        to = ["privacy@clinic.local", "it@clinic.local"]
    "#;

    #[test]
    fn a_good_section_opens_exactly_its_two_destinations() {
        let c = parse(GOOD);
        c.validate(true).expect("valid");
        let rules: Vec<String> = c.egress().iter().map(|r| format!("{} {} {:?} {}", r.name, r.dest, r.protocol, r.port)).collect();
        assert_eq!(rules, ["alerts-syslog 10.1.5.20 Tcp 6514", "alerts-smtp 10.1.5.25 Tcp 25"]);
        assert_eq!(c.destinations(), [Destination::Syslog, Destination::Email]);
        assert!(DeliveryConfig::default().egress().is_empty(), "no destination, no rule");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("10.1.5.20:6514", "syslog.clinic.local", "alert_delivery.syslog.address` is fine"),
            ("syslog.clinic.local:6514", "syslog.clinic.local", "`alert_delivery.syslog.address`: `syslog.clinic.local:6514` must be an IP address and port"),
            ("8.8.8.8:6514", "syslog.clinic.local", "`alert_delivery.syslog.address`: `8.8.8.8` is not an address inside the clinic"),
            ("10.1.5.20:6514", "", "`alert_delivery.syslog.server_name`"),
        ];
        for (address, name, expected) in cases {
            let text = GOOD.replace("10.1.5.20:6514", address).replace("\"syslog.clinic.local\"", &format!("\"{name}\""));
            let result = parse(&text).validate(true);
            if expected.ends_with("is fine") {
                assert!(result.is_ok(), "{result:?}");
            } else {
                let err = result.expect_err(address).to_string();
                assert!(err.contains(expected), "{err}\nwanted {expected}");
            }
        }
        let others: &[(&str, &str, &str)] = &[
            ("wardbox@clinic.local", "wardbox@clinic", "`alert_delivery.email.from`"),
            ("\"privacy@clinic.local\", \"it@clinic.local\"", "\"privacy@clinic.local\", \"it@clinic.local>\\r\\nBcc: x@y.z\"", "`alert_delivery.email.to[1]`"),
            ("https://wardbox.clinic.local:8443", "wardbox", "`alert_delivery.admin_url`"),
            ("/etc/wardbox/clinic-ca.pem", "clinic-ca.pem", "`alert_delivery.syslog.ca_file`"),
        ];
        for (from, to, expected) in others {
            let text = GOOD.replacen(from, to, 1);
            let err = parse(&text).validate(true).expect_err(to).to_string();
            assert!(err.contains(expected), "{err}\nwanted {expected}");
        }
        // Loopback is fine while the firewall is off (a dev box), refused with it on.
        let local = GOOD.replace("10.1.5.20:6514", "127.0.0.1:6514");
        assert!(parse(&local).validate(false).is_ok());
        assert!(parse(&local).validate(true).is_err());
    }

    /// The relay's credentials: both or neither, an absolute path, a file that holds a password
    /// and that only its owner may read; each refusal names its key and never the password.
    #[test]
    fn relay_credentials_are_refused_at_load_unless_usable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("smtp.pw");
        std::fs::write(&file, "Relay-Pw-7\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let with = |extra: &str| parse(&GOOD.replace("from = \"wardbox@clinic.local\"", &format!("from = \"wardbox@clinic.local\"\n{extra}")));
        let good = with(&format!("user = \"wardbox-alerts\"\npassword_file = \"{}\"", file.display()));
        good.validate(true).expect("valid");
        assert_eq!(good.email.as_ref().and_then(EmailConfig::credentials), Some(("wardbox-alerts", file.as_path())));
        assert_eq!(parse(GOOD).email.as_ref().and_then(EmailConfig::credentials), None);
        let group_readable = dir.path().join("shared.pw");
        std::fs::write(&group_readable, "Relay-Pw-7\n").expect("write");
        std::fs::set_permissions(&group_readable, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let cases = [
            ("user = \"wardbox-alerts\"".to_owned(), "`alert_delivery.email.password_file`: user needs password_file"),
            (format!("password_file = \"{}\"", file.display()), "`alert_delivery.email.user`: password_file needs user"),
            (format!("user = \"\"\npassword_file = \"{}\"", file.display()), "`alert_delivery.email.user`"),
            (format!("user = \"a\\r\\nRCPT TO:<x@y.z>\"\npassword_file = \"{}\"", file.display()), "`alert_delivery.email.user`"),
            ("user = \"wardbox-alerts\"\npassword_file = \"smtp.pw\"".to_owned(), "`alert_delivery.email.password_file`: `smtp.pw` must be an absolute path"),
            (format!("user = \"wardbox-alerts\"\npassword_file = \"{}\"", dir.path().join("absent").display()), "`alert_delivery.email.password_file`: "),
            (format!("user = \"wardbox-alerts\"\npassword_file = \"{}\"", group_readable.display()), "may be read by other accounts (mode 640)"),
        ];
        for (extra, expected) in &cases {
            let err = with(extra).validate(true).expect_err(extra).to_string();
            assert!(err.contains(expected), "{err}\nwanted {expected}");
            assert!(!err.contains("Relay-Pw-7"), "the error quotes the password: {err}");
        }
        let missing = with(&format!("user = \"u\"\npassword_file = \"{}\"", dir.path().join("absent").display())).validate(true).expect_err("absent").to_string();
        assert!(missing.contains("cannot be read"), "{missing}");
        // A password in the configuration itself is not a key.
        let inline = toml::from_str::<DeliveryConfig>(&GOOD.replace("from = \"wardbox@clinic.local\"", "from = \"wardbox@clinic.local\"\npassword = \"x\""));
        assert!(inline.is_err(), "a clear-text password was accepted in the configuration");
    }

    /// Through the whole configuration file: the firewall gets exactly one rule per
    /// destination, and a bad destination is named by its own key.
    #[test]
    fn the_configuration_file_opens_the_destinations_in_the_firewall() {
        let base = "profile = \"dev\"\nstate_dir = \"/tmp/wb/state\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"/tmp/wb/data\"\n[firewall]\nenabled = true\nclinic_lan = [\"10.1.0.0/16\"]\n";
        let section = GOOD.replace("[syslog]", "[alert_delivery.syslog]").replace("[email]", "[alert_delivery.email]");
        let text = format!("{base}[alert_delivery]\n{section}");
        let config = crate::config::Config::parse(&text, std::path::Path::new("t.toml")).expect("valid");
        let rules: Vec<(&str, &str, u32)> = config.firewall.policy.allow_out.iter().map(|r| (r.name.as_str(), r.dest.as_str(), r.port)).collect();
        assert_eq!(rules, [("alerts-syslog", "10.1.5.20", 6514), ("alerts-smtp", "10.1.5.25", 25)]);
        config.firewall.ruleset().expect("the ruleset builds with them");
        let bad = text.replace("10.1.5.20:6514", "52.1.2.3:6514");
        let err = crate::config::Config::parse(&bad, std::path::Path::new("t.toml")).expect_err("public collector").to_string();
        assert!(err.contains("`alert_delivery.syslog.address`"), "{err}");
        let off = text.replace("enabled = true", "enabled = false");
        let config = crate::config::Config::parse(&off, std::path::Path::new("t.toml")).expect("valid");
        assert!(config.firewall.policy.allow_out.is_empty(), "a rule opened while the firewall is off");
    }
}
