//! Server-side sessions: a random token in a cookie, only its sha256 kept here.
//!
//! Sessions live in the agent's memory on purpose: no session token is ever written to disk,
//! and a restart of the agent ends every session (fail closed). Each session ends after the idle
//! limit without a request, at an absolute limit however busy it is, and at logout, when it is
//! removed here so the cookie is worthless even if someone kept a copy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::accounts::{Role, User};

/// The time source for every expiry decision, so tests can move time instead of sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix seconds.
    fn now(&self) -> i64;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        jiff::Timestamp::now().as_second()
    }
}

/// A clock the caller sets: for tests of idle and absolute expiry.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: i64) -> Self {
        Self(AtomicI64::new(start))
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Ended after this many seconds without a request (15 minutes by default).
    pub idle_secs: i64,
    /// Ended this many seconds after sign-in, however busy.
    pub absolute_secs: i64,
    /// The absolute limit of an emergency (break-glass) session, shorter on purpose.
    pub break_glass_absolute_secs: i64,
}

/// 32 random bytes, hex: the session cookie and the CSRF token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The session's id as it appears in audit records: a prefix of the token's hash, which
/// identifies the session across records without revealing the cookie.
pub fn audit_session_id(token: &str) -> String {
    hex::encode(&token_hash(token)[..8])
}

/// Constant-time string comparison for tokens.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// One signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub created: i64,
    pub last_seen: i64,
    /// Sent with every state-changing request (form field or header) and compared here.
    pub csrf: String,
    pub break_glass: bool,
    /// The hashed id used in audit records.
    pub audit_id: String,
}

/// Why a session is no longer valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No such session: never signed in, logged out, or the agent restarted.
    Unknown,
    Idle,
    Absolute,
}

impl Ended {
    pub fn message(self) -> &'static str {
        match self {
            Ended::Unknown => "Please sign in.",
            Ended::Idle => "You were signed out after a period without activity.",
            Ended::Absolute => "Your session reached its time limit; please sign in again.",
        }
    }
}

/// The expiry rule (pure): idle first, because that is what the person at the desk sees.
pub fn check_expiry(policy: SessionPolicy, s: &Session, now: i64) -> Result<(), Ended> {
    let absolute = if s.break_glass { policy.break_glass_absolute_secs } else { policy.absolute_secs };
    if now - s.last_seen >= policy.idle_secs {
        Err(Ended::Idle)
    } else if now - s.created >= absolute {
        Err(Ended::Absolute)
    } else {
        Ok(())
    }
}

/// Seconds left before the session ends, whichever limit comes first.
pub fn remaining(policy: SessionPolicy, s: &Session, now: i64) -> i64 {
    let absolute = if s.break_glass { policy.break_glass_absolute_secs } else { policy.absolute_secs };
    let idle_left = policy.idle_secs - (now - s.last_seen);
    let abs_left = absolute - (now - s.created);
    idle_left.min(abs_left).max(0)
}

/// The table of live sessions, keyed by the sha256 of the token.
#[derive(Debug)]
pub struct Sessions {
    policy: SessionPolicy,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(policy: SessionPolicy) -> Self {
        Self { policy, map: Mutex::new(HashMap::new()) }
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A poisoned lock only means a thread panicked while holding it; the map itself is
        // still consistent (every change is a single insert or remove).
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a session; returns the token for the cookie and the session.
    pub fn create(&self, user: &User, now: i64, break_glass: bool) -> (String, Session) {
        let token = random_token();
        let session = Session {
            user_id: user.id,
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            role: user.role,
            created: now,
            last_seen: now,
            csrf: random_token(),
            break_glass,
            audit_id: audit_session_id(&token),
        };
        let mut map = self.lock();
        // Sweep expired sessions whenever one is created, so the table cannot grow without
        // bound from abandoned browsers.
        let policy = self.policy;
        map.retain(|_, s| check_expiry(policy, s, now).is_ok());
        map.insert(token_hash(&token), session.clone());
        (token, session)
    }

    /// Validate a token and count this request as activity.
    pub fn touch(&self, token: &str, now: i64) -> Result<Session, Ended> {
        self.check(token, now, true)
    }

    /// Validate a token without counting activity (the session timer's own polling must not
    /// keep a session alive).
    pub fn peek(&self, token: &str, now: i64) -> Result<Session, Ended> {
        self.check(token, now, false)
    }

    fn check(&self, token: &str, now: i64, activity: bool) -> Result<Session, Ended> {
        let key = token_hash(token);
        let mut map = self.lock();
        let Some(session) = map.get_mut(&key) else { return Err(Ended::Unknown) };
        if let Err(ended) = check_expiry(self.policy, session, now) {
            map.remove(&key);
            return Err(ended);
        }
        if activity {
            session.last_seen = now;
        }
        Ok(session.clone())
    }

    /// Logout: the session is gone from the server, whatever the browser keeps.
    pub fn end(&self, token: &str) -> Option<Session> {
        self.lock().remove(&token_hash(token))
    }

    /// End every session of a user (account disabled, role changed).
    pub fn end_user(&self, user_id: i64) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| s.user_id != user_id);
        before - map.len()
    }

    /// Live sessions, for the administrators' page.
    pub fn active(&self, now: i64) -> Vec<Session> {
        let policy = self.policy;
        let mut v: Vec<Session> =
            self.lock().values().filter(|s| check_expiry(policy, s, now).is_ok()).cloned().collect();
        v.sort_by(|a, b| a.username.cmp(&b.username));
        v
    }
}

/// A cookie's value from a `Cookie` header, by name.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::accounts::Source;

    fn user() -> User {
        User {
            id: 7,
            username: "dr.a".into(),
            display_name: "Dr A".into(),
            role: Role::Clinician,
            password_hash: None,
            source: Source::Local,
            break_glass: false,
            disabled: false,
            failed_logins: 0,
            locked_until: 0,
        }
    }

    const POLICY: SessionPolicy = SessionPolicy { idle_secs: 900, absolute_secs: 8 * 3600, break_glass_absolute_secs: 3600 };

    #[test]
    fn idle_expiry_counts_from_the_last_request() {
        let sessions = Sessions::new(POLICY);
        let (token, _) = sessions.create(&user(), 0, false);
        assert!(sessions.touch(&token, 899).is_ok());
        assert!(sessions.touch(&token, 899 + 899).is_ok(), "activity moved the idle deadline");
        assert_eq!(sessions.touch(&token, 899 + 899 + 900).err(), Some(Ended::Idle));
        assert_eq!(sessions.touch(&token, 899 + 899 + 901).err(), Some(Ended::Unknown), "an expired session is removed");
    }

    #[test]
    fn peek_does_not_keep_a_session_alive() {
        let sessions = Sessions::new(POLICY);
        let (token, _) = sessions.create(&user(), 0, false);
        assert!(sessions.peek(&token, 800).is_ok());
        assert_eq!(sessions.peek(&token, 900).err(), Some(Ended::Idle));
    }

    #[test]
    fn absolute_expiry_however_busy() {
        let sessions = Sessions::new(POLICY);
        let (token, _) = sessions.create(&user(), 0, false);
        let mut t = 0;
        while t + 600 < 8 * 3600 {
            t += 600;
            assert!(sessions.touch(&token, t).is_ok(), "at {t}");
        }
        assert_eq!(sessions.touch(&token, 8 * 3600).err(), Some(Ended::Absolute));
        let (bg, _) = sessions.create(&user(), 0, true);
        for t in (600..3600).step_by(600) {
            assert!(sessions.touch(&bg, t).is_ok());
        }
        assert_eq!(sessions.touch(&bg, 3600).err(), Some(Ended::Absolute), "break-glass sessions are short");
    }

    #[test]
    fn logout_ends_the_session_on_the_server() {
        let sessions = Sessions::new(POLICY);
        let (token, s) = sessions.create(&user(), 0, false);
        assert_eq!(s.audit_id.len(), 16);
        assert!(!token.contains(&s.audit_id));
        assert!(sessions.end(&token).is_some());
        assert_eq!(sessions.touch(&token, 1).err(), Some(Ended::Unknown));
    }

    #[test]
    fn tokens_compare_exactly() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert!(tokens_equal(&t, &t.clone()));
        assert!(!tokens_equal(&t, &random_token()));
        assert!(!tokens_equal(&t, &t[..63]));
    }

    #[test]
    fn cookie_parsing_finds_the_named_cookie() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(axum::http::header::COOKIE, "a=1; wb_session=abc; b=2".parse().expect("header"));
        assert_eq!(cookie_value(&h, "wb_session"), Some("abc"));
        assert_eq!(cookie_value(&h, "missing"), None);
    }
}
