//! Accounts: roles, argon2id passwords, the account lock, and the `users` table.
//!
//! Every account is one person (unique user name, no shared accounts). Local accounts keep an
//! argon2id hash here; directory (LDAP) accounts keep no password and get their role from their
//! groups at each sign-in. Emergency-access ("break glass") accounts are local accounts that the
//! normal sign-in refuses: they work only through the emergency page, which is audited loudly.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// What a signed-in person may see. Each role sees only what its work needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Asks questions about patients, drafts SOAP notes and discharge instructions.
    Clinician,
    /// Asks questions and drafts discharge instructions; no SOAP drafting.
    Nurse,
    /// Runs the box: health, users, models, audit trail, egress counters. No patient content.
    Admin,
    /// Reads the audit trail and the emergency-access report. No patient content.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Clinician, Role::Nurse, Role::Admin, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// Whether this role ever sees patient content.
    pub fn sees_patients(self) -> bool {
        matches!(self, Role::Clinician | Role::Nurse)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AccountError::BadRole(s.to_string()))
    }
}

/// Where an account's password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Local,
    Ldap,
}

/// An account as stored.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// argon2id PHC string; `None` for directory accounts.
    pub password_hash: Option<String>,
    pub source: Source,
    pub break_glass: bool,
    pub disabled: bool,
    /// The column of an earlier per-account counter; failures are counted by `web::throttle`
    /// now (per address and per account), so it stays 0.
    pub failed_logins: u32,
    /// Unix seconds until which sign-in is refused; 0 when not locked.
    pub locked_until: i64,
}

impl User {
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until > now
    }
}

/// An account problem, worded for the administrator or the person at the console.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("`{0}` is not a role; use clinician, nurse, admin or auditor")]
    BadRole(String),
    #[error("user name {0:?} is not valid: use 2 to 64 characters a-z, 0-9, '.', '_' or '-', starting with a letter")]
    BadUsername(String),
    #[error("the display name must be 1 to 100 printable characters")]
    BadDisplayName,
    #[error("the password is too short: at least {min} characters are required")]
    WeakPassword { min: usize },
    #[error("the user {0} already exists; every person gets their own account")]
    Exists(String),
    #[error("there is no user {0}")]
    NoSuchUser(String),
    #[error("a break-glass account must be a local account with a password")]
    BreakGlassNeedsPassword,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the account store failed: {0}")]
    Store(#[from] rusqlite::Error),
}

/// Shortest password accepted (NIST SP 800-63B asks for at least 8; a clinic workstation
/// password that unlocks patient records gets more).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Normalise and check a user name: lower case, a small alphabet, so that "Dr.Smith" and
/// "dr.smith" are one account and no name can smuggle markup or control characters.
pub fn normalize_username(raw: &str) -> Result<String, AccountError> {
    let name = raw.trim().to_lowercase();
    let ok = (2..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(name) } else { Err(AccountError::BadUsername(raw.chars().take(80).collect())) }
}

pub fn check_display_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AccountError::BadDisplayName);
    }
    Ok(name.to_string())
}

pub fn check_password_strength(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::WeakPassword { min: MIN_PASSWORD_CHARS });
    }
    Ok(())
}

/// argon2id with the OWASP-recommended minimum (19 MiB, 2 passes, 1 lane): about 20-40 ms per
/// check on the box, which is what makes an offline guess at a stolen hash expensive.
fn hasher() -> Argon2<'static> {
    // The parameters are constants within argon2's limits, so `new` cannot fail; fall back to
    // the crate's default (also argon2id) rather than panic.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    // 16 random bytes from the OS generator (through `rand`), as argon2's salt.
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| AccountError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Check a password against a stored PHC string. A malformed hash never verifies.
pub fn verify_password(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spend the same time as a real check, so that the response time does not tell an attacker
/// whether a user name exists.
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(hash) = DUMMY.get_or_init(|| hash_password("wardbox-dummy-password").ok()) {
        let _ = verify_password(hash, password);
    }
}

/// The account lock: how long it lasts, and (for the sign-in page's message) how many failed
/// sign-ins from different addresses set it off. The decision is `web::throttle`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub lock_secs: i64,
}

const USER_COLUMNS: &str =
    "id, username, display_name, role, password_hash, source, break_glass, disabled, failed_logins, locked_until";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = row.get(3)?;
    let source: String = row.get(5)?;
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        // The table's CHECK constraint admits only the four roles.
        role: role.parse().unwrap_or(Role::Auditor),
        password_hash: row.get(4)?,
        source: if source == "ldap" { Source::Ldap } else { Source::Local },
        break_glass: row.get::<_, i64>(6)? != 0,
        disabled: row.get::<_, i64>(7)? != 0,
        failed_logins: row.get::<_, i64>(8)?.try_into().unwrap_or(u32::MAX),
        locked_until: row.get(9)?,
    })
}

/// A local account to create.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub role: Role,
    pub password: &'a str,
    pub break_glass: bool,
}

/// Create a local account. Refuses a name that exists (no shared or reused accounts).
pub fn add_user(conn: &Connection, new: &NewUser<'_>, now: &str) -> Result<User, AccountError> {
    let username = normalize_username(new.username)?;
    let display = check_display_name(new.display_name)?;
    check_password_strength(new.password)?;
    let hash = hash_password(new.password)?;
    let inserted = conn.execute(
        "INSERT INTO users (username, display_name, role, password_hash, created_at, source, break_glass) VALUES (?1, ?2, ?3, ?4, ?5, 'local', ?6)",
        params![username, display, new.role.as_str(), hash, now, new.break_glass as i64],
    );
    match inserted {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            return Err(AccountError::Exists(username));
        }
        Err(e) => return Err(e.into()),
    }
    find_by_username(conn, &username)?.ok_or(AccountError::NoSuchUser(username))
}

pub fn find_by_username(conn: &Connection, username: &str) -> Result<Option<User>, AccountError> {
    Ok(conn
        .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"), [username], user_from_row)
        .optional()?)
}

pub fn find_by_id(conn: &Connection, id: i64) -> Result<Option<User>, AccountError> {
    Ok(conn
        .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [id], user_from_row)
        .optional()?)
}

pub fn list_users(conn: &Connection) -> Result<Vec<User>, AccountError> {
    let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"))?;
    let users = stmt.query_map([], user_from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(users)
}

/// Lock an account until `until` (unix seconds): failed sign-ins against it came from several
/// addresses (`web::throttle`). Kept in the store so a restart does not lift it.
pub fn lock(conn: &Connection, user_id: i64, until: i64) -> Result<(), AccountError> {
    conn.execute("UPDATE users SET failed_logins = 0, locked_until = ?1 WHERE id = ?2", params![until, user_id])?;
    Ok(())
}

/// A successful sign-in. It leaves a lock in place: the person may pass it from an address
/// they used before, while the guessing it stops may still be going on elsewhere.
pub fn record_success(conn: &Connection, user_id: i64) -> Result<(), AccountError> {
    conn.execute("UPDATE users SET failed_logins = 0 WHERE id = ?1", [user_id])?;
    Ok(())
}

/// Lift a lockout (administrator action).
pub fn unlock(conn: &Connection, username: &str) -> Result<(), AccountError> {
    let n = conn.execute("UPDATE users SET failed_logins = 0, locked_until = 0 WHERE username = ?1", [username])?;
    if n == 0 { Err(AccountError::NoSuchUser(username.to_string())) } else { Ok(()) }
}

pub fn set_disabled(conn: &Connection, username: &str, disabled: bool) -> Result<(), AccountError> {
    let n = conn.execute("UPDATE users SET disabled = ?1 WHERE username = ?2", params![disabled as i64, username])?;
    if n == 0 { Err(AccountError::NoSuchUser(username.to_string())) } else { Ok(()) }
}

pub fn set_password(conn: &Connection, username: &str, password: &str) -> Result<(), AccountError> {
    check_password_strength(password)?;
    let hash = hash_password(password)?;
    let n = conn.execute(
        "UPDATE users SET password_hash = ?1, failed_logins = 0, locked_until = 0 WHERE username = ?2 AND source = 'local'",
        params![hash, username],
    )?;
    if n == 0 { Err(AccountError::NoSuchUser(username.to_string())) } else { Ok(()) }
}

/// Create or update a directory account after a successful directory bind: the directory's
/// groups decide the role at every sign-in, so a change there takes effect at the next one.
/// A local account of the same name is never taken over.
pub fn upsert_directory_user(
    conn: &Connection,
    username: &str,
    display_name: &str,
    role: Role,
    now: &str,
) -> Result<User, AccountError> {
    let username = normalize_username(username)?;
    let display = check_display_name(display_name).unwrap_or_else(|_| username.clone());
    match find_by_username(conn, &username)? {
        Some(existing) if existing.source == Source::Local => Err(AccountError::Exists(username)),
        Some(_) => {
            conn.execute(
                "UPDATE users SET role = ?1, display_name = ?2 WHERE username = ?3 AND source = 'ldap'",
                params![role.as_str(), display, username],
            )?;
            find_by_username(conn, &username)?.ok_or(AccountError::NoSuchUser(username))
        }
        None => {
            conn.execute(
                "INSERT INTO users (username, display_name, role, password_hash, created_at, source) VALUES (?1, ?2, ?3, NULL, ?4, 'ldap')",
                params![username, display, role.as_str(), now],
            )?;
            find_by_username(conn, &username)?.ok_or(AccountError::NoSuchUser(username))
        }
    }
}

/// An emergency sign-in as shown to administrators.
#[derive(Debug, Clone, Serialize)]
pub struct BreakGlassEvent {
    pub id: i64,
    pub username: String,
    pub at: i64,
    pub client: String,
    pub reason: String,
}

pub fn record_break_glass(conn: &Connection, user_id: i64, at: i64, client: &str, reason: &str) -> Result<(), AccountError> {
    conn.execute(
        "INSERT INTO break_glass_events (user_id, at, client, reason) VALUES (?1, ?2, ?3, ?4)",
        params![user_id, at, client, reason],
    )?;
    Ok(())
}

pub fn recent_break_glass(conn: &Connection, limit: u32) -> Result<Vec<BreakGlassEvent>, AccountError> {
    let mut stmt = conn.prepare(
        "SELECT b.id, u.username, b.at, b.client, b.reason FROM break_glass_events b JOIN users u ON u.id = b.user_id ORDER BY b.id DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok(BreakGlassEvent { id: r.get(0)?, username: r.get(1)?, at: r.get(2)?, client: r.get(3)?, reason: r.get(4)? })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised_and_checked() {
        assert_eq!(normalize_username(" Dr.Smith ").expect("ok"), "dr.smith");
        for bad in ["", "a", "1abc", "dr smith", "<script>", "dr/smith", &"a".repeat(65)] {
            assert!(normalize_username(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn argon2id_hash_verifies_only_the_right_password() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterY"));
        assert!(!verify_password("not a hash", "correct horse battery"));
        assert_ne!(h, hash_password("correct horse battery").expect("hash"), "salts differ");
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(matches!(check_password_strength("short"), Err(AccountError::WeakPassword { .. })));
        assert!(check_password_strength("twelve chars").is_ok());
    }
}
