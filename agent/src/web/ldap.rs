//! Directory sign-in (OpenLDAP, Active Directory): bind as the person, read their groups,
//! map the groups to one Wardbox role.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

use super::LdapConfig;
use super::accounts::Role;

/// What the directory says about a person who proved their password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPerson {
    pub dn: String,
    pub display_name: String,
    pub groups: Vec<String>,
    pub role: Role,
    /// The person's postal address (`web.ldap.address_attribute`), for the `same_address`
    /// alert rule; `None` when the entry has none.
    pub postal_address: Option<PostalAddress>,
}

/// A postal address from the directory, its lines separated by line breaks (the form the
/// store keeps and the alert rule reads). It is personal data that must reach no log: its
/// `Debug` says only how many lines it has, and it is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct PostalAddress(Zeroizing<String>);

impl PostalAddress {
    /// One value of an LDAP Postal Address attribute (RFC 4517 section 3.3.28: lines
    /// separated by `$`, a `$` or `\` inside a line written `\24` or `\5C`); Active Directory's
    /// free text with line breaks reads the same. Each line is trimmed and blank lines are
    /// dropped; `None` when nothing is left.
    pub fn from_ldap(value: &str) -> Option<PostalAddress> {
        let mut lines: Vec<String> = value
            .split(['$', '\n'])
            .map(|line| unescape_postal_line(line.trim_matches(|c: char| c.is_whitespace())))
            .filter(|line| !line.is_empty())
            .collect();
        let address = (!lines.is_empty()).then(|| PostalAddress(Zeroizing::new(lines.join("\n"))));
        zeroize::Zeroize::zeroize(&mut lines);
        address
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PostalAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostalAddress(<{} lines, not shown>)", self.0.lines().count())
    }
}

/// `\24` → `$` and `\5C` → `\` (hex case-insensitive); any other backslash is kept as it is.
fn unescape_postal_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let escaped = rest.get(i + 1..i + 3);
        match escaped.map(str::to_ascii_lowercase).as_deref() {
            Some("24") => out.push('$'),
            Some("5c") => out.push('\\'),
            _ => {
                out.push('\\');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("the directory refused the user name or password")]
    InvalidCredentials,
    #[error("the directory server cannot be reached: {0}")]
    Unreachable(String),
    #[error("the directory answered with an error: {0}")]
    Protocol(String),
    #[error("the person is in no directory group mapped to a Wardbox role (web.ldap.groups)")]
    NoRole,
    #[error("the person is in directory groups of different Wardbox roles ({0:?}); put them in one")]
    ConflictingRoles(Vec<Role>),
    #[error("the directory settings cannot be used: {0}")]
    Config(String),
}

/// LDAP result code for a bad password or unknown bind DN.
const INVALID_CREDENTIALS: u32 = 49;

/// Group DNs are compared without case and without spaces after separators, the way
/// directories treat them.
fn normalize_dn(dn: &str) -> String {
    dn.split(',').map(|rdn| rdn.trim().to_lowercase()).collect::<Vec<_>>().join(",")
}

/// The role for a set of group DNs (pure). Exactly one role must come out: none is refused,
/// and two different roles are refused rather than guessed (fail closed).
pub fn map_role(groups: &[String], mapping: &BTreeMap<String, Role>) -> Result<Role, LdapError> {
    let mapping: BTreeMap<String, Role> = mapping.iter().map(|(k, v)| (normalize_dn(k), *v)).collect();
    let mut roles: Vec<Role> = groups.iter().filter_map(|g| mapping.get(&normalize_dn(g)).copied()).collect();
    roles.sort();
    roles.dedup();
    match roles.as_slice() {
        [] => Err(LdapError::NoRole),
        [one] => Ok(*one),
        _ => Err(LdapError::ConflictingRoles(roles)),
    }
}

fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| LdapError::Config(format!("web.ldap.ca_file {}: {e}", ca_file.display())))?;
    for c in certs {
        roots.add(c).map_err(|e| LdapError::Config(format!("web.ldap.ca_file {}: {e}", ca_file.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Bind as `username` with `password`, then find the person's entry and groups.
///
/// `username` must already be normalised (`accounts::normalize_username`); it is escaped
/// anyway where it enters a DN or a filter.
pub async fn authenticate(cfg: &LdapConfig, username: &str, password: &str) -> Result<DirectoryPerson, LdapError> {
    // An empty password is an anonymous bind, which most directories accept: never let it
    // count as proof of anything.
    if password.is_empty() {
        return Err(LdapError::InvalidCredentials);
    }
    let timeout = Duration::from_secs(cfg.timeout_secs);
    tokio::time::timeout(timeout * 3, authenticate_inner(cfg, username, password, timeout))
        .await
        .map_err(|_| LdapError::Unreachable(format!("no answer within {} seconds", cfg.timeout_secs * 3)))?
}

async fn authenticate_inner(cfg: &LdapConfig, username: &str, password: &str, timeout: Duration) -> Result<DirectoryPerson, LdapError> {
    let mut settings = LdapConnSettings::new().set_conn_timeout(timeout).set_starttls(cfg.starttls);
    if let Some(ca) = &cfg.ca_file {
        settings = settings.set_config(tls_config(ca)?);
    }
    let (conn, mut ldap) =
        LdapConnAsync::with_settings(settings, &cfg.url).await.map_err(|e| LdapError::Unreachable(e.to_string()))?;
    ldap3::drive!(conn);
    let bind_dn = cfg.bind_dn.replace("{user}", &dn_escape(username));
    let bound = ldap.with_timeout(timeout).simple_bind(&bind_dn, password).await.map_err(|e| LdapError::Unreachable(e.to_string()))?;
    if bound.rc == INVALID_CREDENTIALS {
        let _ = ldap.unbind().await;
        return Err(LdapError::InvalidCredentials);
    }
    bound.success().map_err(|e| LdapError::Protocol(e.to_string()))?;

    let filter = cfg.user_filter.replace("{user}", &ldap_escape(username));
    let (entries, _) = ldap
        .with_timeout(timeout)
        .search(&cfg.user_base, Scope::Subtree, &filter, wanted_attributes(cfg))
        .await
        .map_err(|e| LdapError::Protocol(e.to_string()))?
        .success()
        .map_err(|e| LdapError::Protocol(e.to_string()))?;
    let Some(entry) = entries.into_iter().next().map(SearchEntry::construct) else {
        let _ = ldap.unbind().await;
        return Err(LdapError::Protocol(format!("no entry matches {filter} under {}", cfg.user_base)));
    };
    let first = |attr: &str| entry.attrs.get(attr).and_then(|v| v.first()).cloned();
    let display_name = first("displayName").or_else(|| first("cn")).unwrap_or_else(|| username.to_string());
    let mut groups: Vec<String> = entry.attrs.get("memberOf").cloned().unwrap_or_default();
    // Attribute names are case-insensitive; the server answers with its schema's spelling.
    let postal_address = entry
        .attrs
        .iter()
        .find(|(name, _)| !cfg.address_attribute.is_empty() && name.eq_ignore_ascii_case(&cfg.address_attribute))
        .and_then(|(_, values)| values.iter().find_map(|v| PostalAddress::from_ldap(v)));

    let dn = ldap_escape(&entry.dn).into_owned();
    let user = ldap_escape(username).into_owned();
    let group_filter = format!("(|(member={dn})(uniqueMember={dn})(memberUid={user}))");
    let (found, _) = ldap
        .with_timeout(timeout)
        .search(&cfg.group_base, Scope::Subtree, &group_filter, vec!["1.1"])
        .await
        .map_err(|e| LdapError::Protocol(e.to_string()))?
        .success()
        .map_err(|e| LdapError::Protocol(e.to_string()))?;
    groups.extend(found.into_iter().map(|e| SearchEntry::construct(e).dn));
    let _ = ldap.unbind().await;
    let role = map_role(&groups, &cfg.groups)?;
    Ok(DirectoryPerson { dn: entry.dn, display_name, groups, role, postal_address })
}

/// The attributes read from the person's entry.
fn wanted_attributes(cfg: &LdapConfig) -> Vec<&str> {
    let mut attrs = vec!["cn", "displayName", "memberOf"];
    if !cfg.address_attribute.is_empty() {
        attrs.push(&cfg.address_attribute);
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> BTreeMap<String, Role> {
        BTreeMap::from([
            ("cn=doctors,ou=groups,dc=clinic,dc=test".to_string(), Role::Clinician),
            ("cn=nurses,ou=groups,dc=clinic,dc=test".to_string(), Role::Nurse),
            ("cn=it,ou=groups,dc=clinic,dc=test".to_string(), Role::Admin),
        ])
    }

    #[test]
    fn ldap_postal_addresses_become_lines() {
        let lines = |v: &str| PostalAddress::from_ldap(v).map(|a| a.as_str().to_string());
        assert_eq!(lines("12 Elm Street$Springfield, OR 97000").as_deref(), Some("12 Elm Street\nSpringfield, OR 97000"));
        assert_eq!(lines(" 12 Elm Street $ $Springfield ").as_deref(), Some("12 Elm Street\nSpringfield"), "blank lines and spaces go");
        assert_eq!(lines("Unit 4 \\24 5\\5c6$1 Main St").as_deref(), Some("Unit 4 $ 5\\6\n1 Main St"), "escaped $ and \\ stay in the line");
        assert_eq!(lines("12 Elm Street\r\nSpringfield").as_deref(), Some("12 Elm Street\nSpringfield"), "Active Directory's line breaks");
        assert_eq!(lines("C:\\x$").as_deref(), Some("C:\\x"), "a backslash that escapes nothing is kept");
        assert_eq!(lines(" $ $ "), None);
        let a = PostalAddress::from_ldap("12 Elm Street$Springfield").expect("address");
        assert_eq!(format!("{a:?}"), "PostalAddress(<2 lines, not shown>)");
    }

    #[test]
    fn groups_map_to_exactly_one_role() {
        let g = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(map_role(&g(&["CN=Doctors, OU=Groups,DC=clinic,DC=test"]), &mapping()).ok(), Some(Role::Clinician));
        assert_eq!(map_role(&g(&["cn=unmapped,dc=x", "cn=nurses,ou=groups,dc=clinic,dc=test"]), &mapping()).ok(), Some(Role::Nurse));
        assert!(matches!(map_role(&g(&["cn=unmapped,dc=x"]), &mapping()), Err(LdapError::NoRole)));
        assert!(matches!(map_role(&[], &mapping()), Err(LdapError::NoRole)));
        assert!(matches!(
            map_role(&g(&["cn=doctors,ou=groups,dc=clinic,dc=test", "cn=it,ou=groups,dc=clinic,dc=test"]), &mapping()),
            Err(LdapError::ConflictingRoles(_))
        ));
    }
}
