//! Directory sign-in (OpenLDAP, Active Directory): bind as the person, read their groups,
//! map the groups to one Wardbox role.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::LdapConfig;
use super::accounts::Role;

/// What the directory says about a person who proved their password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPerson {
    pub dn: String,
    pub display_name: String,
    pub groups: Vec<String>,
    pub role: Role,
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
        .search(&cfg.user_base, Scope::Subtree, &filter, vec!["cn", "displayName", "memberOf"])
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
    Ok(DirectoryPerson { dn: entry.dn, display_name, groups, role })
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
