//! Sign-in, emergency (break-glass) sign-in, sign-out.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroize;

use super::accounts::{self, Source, User};
use super::guard::{clear_cookie, session_cookie};
use super::ldap::{self, LdapError};
use super::pages::{home_of, render, ui_of};
use super::session::random_token;
use super::throttle::{self, FailureEffects, SignInThrottle};
use super::{AppState, Authed, ClientAddr, LOGIN_COOKIE, SESSION_COOKIE, Ui, WebError};
use crate::audit::{EventKind, TextDigest};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    message: Option<String>,
    error: bool,
}

#[derive(Template)]
#[template(path = "emergency.html")]
struct EmergencyPage {
    csrf: String,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    #[serde(default)]
    m: String,
}

/// Messages the sign-in page may show, chosen by code so nothing from the URL is echoed.
fn notice(code: &str) -> Option<String> {
    Some(
        match code {
            "idle" => "You were signed out after a period without activity.",
            "absolute" => "Your session reached its time limit; please sign in again.",
            "signout" => "You are signed out.",
            "signin" => "Please sign in.",
            _ => return None,
        }
        .to_string(),
    )
}

/// A fresh double-submit token: in the form and in a cookie scoped to the sign-in pages.
fn with_login_cookie(mut resp: Response, token: &str, secure: bool) -> Response {
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/login; Max-Age=1800; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn secure(state: &AppState) -> bool {
    state.ui.as_ref().is_none_or(|ui| ui.secure_cookies)
}

pub(super) async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Result<Response, WebError> {
    let csrf = random_token();
    let resp = render(&LoginPage { csrf: csrf.clone(), message: notice(&q.m), error: false })?;
    Ok(with_login_cookie(resp, &csrf, secure(&state)))
}

pub(super) async fn emergency_page(State(state): State<AppState>) -> Result<Response, WebError> {
    let csrf = random_token();
    let resp = render(&EmergencyPage { csrf: csrf.clone(), message: None })?;
    Ok(with_login_cookie(resp, &csrf, secure(&state)))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    reason: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").field("username", &self.username).field("password", &"[redacted]").finish()
    }
}

impl Drop for LoginForm {
    fn drop(&mut self) {
        self.password.zeroize();
    }
}

/// Why a sign-in was refused. The person sees one generic message for the first four, so the
/// page does not tell an attacker which names exist or which accounts are locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadCredentials,
    Locked,
    Disabled,
    UnknownUser,
    /// A break-glass account on the normal page, or a normal account on the emergency page.
    WrongPage,
    DirectoryUnavailable(String),
    NoRole(String),
    Store(String),
    /// Too many failed sign-ins from this client address: refused before any password check.
    Throttled(throttle::Refused),
}

impl Refusal {
    fn audit_reason(&self) -> String {
        match self {
            Refusal::BadCredentials => "bad_password".into(),
            Refusal::Locked => "locked".into(),
            Refusal::Disabled => "disabled".into(),
            Refusal::UnknownUser => "unknown_user".into(),
            Refusal::WrongPage => "wrong_page".into(),
            Refusal::DirectoryUnavailable(e) => format!("directory_unavailable: {e}"),
            Refusal::NoRole(e) => format!("no_role: {e}"),
            Refusal::Store(e) => format!("store: {e}"),
            Refusal::Throttled(_) => "throttled".into(),
        }
    }

    fn user_message(&self, ui: &Ui) -> String {
        let policy = *lock_throttle(ui).policy();
        match self {
            Refusal::BadCredentials | Refusal::Locked | Refusal::Disabled | Refusal::UnknownUser => format!(
                "Sign-in failed: wrong user name or password, or the account is locked or disabled. After {} failed attempts from one computer each further attempt has to wait longer, and after {} sign-in from that computer is paused for {} minutes.",
                policy.free_failures,
                policy.block_after,
                policy.block_secs / 60
            ),
            Refusal::WrongPage => "This account cannot sign in on this page.".into(),
            Refusal::DirectoryUnavailable(_) => {
                "The clinic's directory server cannot be reached, so directory accounts cannot sign in. In an emergency, use emergency access.".into()
            }
            Refusal::NoRole(_) => "Your directory account is not in any Wardbox group; ask IT to add you to one.".into(),
            Refusal::Store(_) => "Sign-in is not possible right now; tell IT.".into(),
            Refusal::Throttled(throttle::Refused::Wait { retry_after }) => format!(
                "Too many failed sign-ins from this computer. Wait {} before trying again.",
                in_words(*retry_after)
            ),
            Refusal::Throttled(throttle::Refused::Crowded) => {
                "Too many sign-ins from this computer are being checked at this moment. Try again in a second.".into()
            }
            Refusal::Throttled(throttle::Refused::Blocked { retry_after }) => format!(
                "Too many failed sign-ins from this computer: sign-in from here is paused for {}. Another workstation is not affected; IT has been alerted.",
                in_words(*retry_after)
            ),
        }
    }
}

/// "1 second", "40 seconds", "15 minutes" (rounded up).
fn in_words(secs: i64) -> String {
    match secs {
        ..=1 => "1 second".into(),
        2..=90 => format!("{secs} seconds"),
        _ => format!("{} minutes", (secs + 59) / 60),
    }
}

fn lock_throttle(ui: &Ui) -> std::sync::MutexGuard<'_, SignInThrottle> {
    // The throttle's state stays consistent across a panic elsewhere (each call is one short
    // update), so a poisoned lock is still usable.
    ui.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn store_err(e: impl std::fmt::Display) -> Refusal {
    Refusal::Store(e.to_string())
}

/// A refused sign-in: the user name (when valid), why, and the account the failure counts
/// against (an existing account with a wrong password).
type Failure = (Option<String>, Refusal, Option<Box<User>>);

/// Check a person's credentials from `client`, through the sign-in throttle. `emergency`
/// selects the break-glass rules: only break-glass accounts, only local passwords (it must work
/// when the directory is down).
pub async fn sign_in(
    state: &AppState,
    client: &ClientAddr,
    raw_username: &str,
    password: &str,
    emergency: bool,
) -> Result<User, (Option<String>, Refusal)> {
    let ui = ui_of(state).map_err(|e| (None, store_err(e)))?;
    let ip = client.0.map(|a| a.ip());
    let now = ui.clock.now();
    if let Err(refused) = lock_throttle(&ui).admit(ip, now) {
        return Err((None, Refusal::Throttled(refused)));
    }
    let result = check_credentials(&ui, ip, raw_username, password, emergency, now).await;
    let effects = match &result {
        Ok(user) => {
            lock_throttle(&ui).succeeded(ip, &user.username, now);
            FailureEffects::default()
        }
        Err((_, Refusal::BadCredentials | Refusal::UnknownUser | Refusal::Locked | Refusal::Disabled, account)) => {
            let counted = account.as_ref().map(|u| u.username.as_str());
            lock_throttle(&ui).failed(ip, counted, now)
        }
        // No verdict on the password (directory or store trouble), or a right password on the
        // wrong page: not a guess.
        Err(_) => {
            lock_throttle(&ui).abandoned(ip);
            FailureEffects::default()
        }
    };
    if effects.address_blocked {
        address_blocked(state, &ui, client).await;
    }
    if let (Some(addresses), Err((_, _, Some(user)))) = (effects.account_locked, &result)
        && let Err(e) = account_locked(state, &ui, user, addresses, now).await
    {
        return Err((Some(user.username.clone()), e));
    }
    result.map_err(|(name, refusal, _)| (name, refusal))
}

async fn check_credentials(
    ui: &Arc<Ui>,
    ip: Option<std::net::IpAddr>,
    raw_username: &str,
    password: &str,
    emergency: bool,
    now: i64,
) -> Result<User, Failure> {
    let Ok(name) = accounts::normalize_username(raw_username) else {
        let pw = password.to_string();
        let _ = tokio::task::spawn_blocking(move || accounts::dummy_verify(&pw)).await;
        return Err((None, Refusal::UnknownUser, None));
    };
    let lookup = name.clone();
    let existing = ui
        .with_store(move |s| accounts::find_by_username(s.conn(), &lookup).map_err(|e| WebError::Internal(e.to_string())))
        .await
        .map_err(|e| (Some(name.clone()), store_err(e), None))?;
    let fail = |r: Refusal, account: Option<&User>| Err((Some(name.clone()), r, account.map(|u| Box::new(u.clone()))));
    let pw = password.to_string();
    let user = match existing {
        // A locked account still lets its person in from an address they signed in from
        // before: the lock is against guessing from elsewhere (see `throttle`).
        Some(u) if u.disabled || (u.is_locked(now) && !lock_throttle(ui).is_known(&u.username, ip, now)) => {
            let _ = tokio::task::spawn_blocking(move || accounts::dummy_verify(&pw)).await;
            return fail(if u.disabled { Refusal::Disabled } else { Refusal::Locked }, None);
        }
        Some(u) if u.source == Source::Local => {
            let hash = u.password_hash.clone().unwrap_or_default();
            let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&hash, &pw)).await.unwrap_or(false);
            if !ok {
                return fail(Refusal::BadCredentials, Some(&u));
            }
            if u.break_glass != emergency {
                return fail(Refusal::WrongPage, None);
            }
            u
        }
        Some(u) => {
            if emergency {
                return fail(Refusal::WrongPage, None);
            }
            match directory_sign_in(ui, &name, password).await {
                Ok(user) => user,
                Err(Refusal::BadCredentials) => return fail(Refusal::BadCredentials, Some(&u)),
                Err(r) => return fail(r, None),
            }
        }
        None if !emergency && ui.ldap.is_some() => {
            directory_sign_in(ui, &name, password).await.map_err(|r| (Some(name.clone()), r, None))?
        }
        None => {
            let _ = tokio::task::spawn_blocking(move || accounts::dummy_verify(&pw)).await;
            return fail(Refusal::UnknownUser, None);
        }
    };
    let id = user.id;
    ui.with_store(move |s| accounts::record_success(s.conn(), id).map_err(|e| WebError::Internal(e.to_string())))
        .await
        .map_err(|e| (Some(name.clone()), store_err(e), None))?;
    Ok(user)
}

/// Sign-in from one address was paused: audited and raised as an alert.
async fn address_blocked(state: &AppState, ui: &Arc<Ui>, client: &ClientAddr) {
    let policy = *lock_throttle(ui).policy();
    tracing::warn!(client = %client, "sign-in from this address paused after {} failures", policy.block_after);
    let _ = ui
        .audit(
            EventKind::SecurityAlert,
            "system",
            json!({ "event": "signin_address_blocked", "client": client.to_string(), "failures": policy.block_after, "for_secs": policy.block_secs }),
        )
        .await;
    raise_access_alert(
        state,
        format!(
            "sign-in from {client} paused for {} minutes after {} failed attempts (password guessing?)",
            policy.block_secs / 60,
            policy.block_after
        ),
    );
}

/// Failures from several addresses locked an account: stored (a restart keeps the lock),
/// audited, and raised as an alert.
async fn account_locked(state: &AppState, ui: &Arc<Ui>, user: &User, addresses: u32, now: i64) -> Result<(), Refusal> {
    let policy = ui.lockout;
    let id = user.id;
    ui.with_store(move |s| accounts::lock(s.conn(), id, now + policy.lock_secs).map_err(|e| WebError::Internal(e.to_string())))
        .await
        .map_err(store_err)?;
    tracing::warn!(user = %user.username, addresses, "account locked after failed sign-ins from several addresses");
    let _ = ui
        .audit(
            EventKind::SecurityAlert,
            "system",
            json!({ "event": "account_locked", "user": user.username, "addresses": addresses, "for_secs": policy.lock_secs }),
        )
        .await;
    raise_access_alert(
        state,
        format!(
            "account {} locked for {} minutes: failed sign-ins from {addresses} different addresses (distributed guessing?); it still signs in from addresses it used before",
            user.username,
            policy.lock_secs / 60
        ),
    );
    Ok(())
}

fn raise_access_alert(state: &AppState, message: String) {
    if let Ok(mut h) = state.health.write() {
        h.raise("access", message);
    }
}

async fn directory_sign_in(ui: &Arc<Ui>, name: &str, password: &str) -> Result<User, Refusal> {
    let Some(cfg) = ui.ldap.clone() else { return Err(Refusal::UnknownUser) };
    let person = match ldap::authenticate(&cfg, name, password).await {
        Ok(p) => p,
        Err(LdapError::InvalidCredentials) => return Err(Refusal::BadCredentials),
        Err(e @ (LdapError::NoRole | LdapError::ConflictingRoles(_))) => return Err(Refusal::NoRole(e.to_string())),
        Err(e) => return Err(Refusal::DirectoryUnavailable(e.to_string())),
    };
    let now = jiff::Timestamp::now().to_string();
    let username = name.to_string();
    ui.with_store(move |s| {
        let user = accounts::upsert_directory_user(s.conn(), &username, &person.display_name, person.role, &now)
            .map_err(|e| WebError::Internal(e.to_string()))?;
        refresh_directory_address(s.conn(), &user.username, person.postal_address.as_ref())?;
        Ok(user)
    })
    .await
    .map_err(store_err)
}

/// Keep the directory's postal address of the person (alert rule `same_address`), refreshed
/// at every sign-in; an address an administrator set stays (`relations::refresh_from_directory`).
/// An address the rule cannot read is treated as none, and said so in the log without its text.
fn refresh_directory_address(conn: &rusqlite::Connection, username: &str, address: Option<&ldap::PostalAddress>) -> Result<(), WebError> {
    use crate::alerting::relations;
    let usable = address.map(ldap::PostalAddress::as_str).filter(|a| match relations::check_address(a) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(user = %username, "the directory's postal address of this person is not used by the same_address alert rule: {why}");
            false
        }
    });
    let done = relations::refresh_from_directory(conn, username, usable).map_err(WebError::Internal)?;
    if matches!(done, relations::DirectoryAddress::Stored | relations::DirectoryAddress::Cleared) {
        tracing::info!(user = %username, "postal address {} from the directory", if done == relations::DirectoryAddress::Stored { "taken" } else { "cleared" });
    }
    Ok(())
}

pub(super) async fn login_submit(
    State(state): State<AppState>,
    client: ClientAddr,
    axum::Form(f): axum::Form<LoginForm>,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    match sign_in(&state, &client, &f.username, &f.password, false).await {
        Ok(user) => start_session(&ui, user, &client, None).await,
        Err((name, refusal)) => refuse(&ui, name, &client, refusal, false).await,
    }
}

/// Longest and shortest reason accepted for emergency access.
const REASON_CHARS: std::ops::RangeInclusive<usize> = 10..=1000;

pub(super) async fn emergency_submit(
    State(state): State<AppState>,
    client: ClientAddr,
    axum::Form(f): axum::Form<LoginForm>,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let reason = f.reason.trim().to_string();
    if !REASON_CHARS.contains(&reason.chars().count()) {
        let csrf = random_token();
        let page = EmergencyPage {
            csrf: csrf.clone(),
            message: Some("Say why emergency access is needed (at least 10 characters); this is reviewed.".into()),
        };
        let mut resp = render(&page)?;
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(with_login_cookie(resp, &csrf, ui.secure_cookies));
    }
    match sign_in(&state, &client, &f.username, &f.password, true).await {
        Ok(user) => {
            let name = user.username.clone();
            let resp = start_session(&ui, user, &client, Some(reason)).await?;
            raise_break_glass_alert(&state, &name, &client.to_string());
            Ok(resp)
        }
        Err((name, refusal)) => refuse(&ui, name, &client, refusal, true).await,
    }
}

async fn refuse(ui: &Arc<Ui>, name: Option<String>, client: &ClientAddr, refusal: Refusal, emergency: bool) -> Result<Response, WebError> {
    // A throttled attempt checked nothing and costs the sender nothing, so it is not written to
    // the audit trail one by one (that would let anyone fill it); the pause itself is audited.
    let retry_after = match &refusal {
        Refusal::Throttled(r) => Some(r.retry_after()),
        _ => None,
    };
    if retry_after.is_none() {
        ui.audit(
            EventKind::LoginFailed,
            name.as_deref().unwrap_or("unknown"),
            json!({ "user": name, "client": client.to_string(), "reason": refusal.audit_reason(), "emergency": emergency }),
        )
        .await?;
    }
    let csrf = random_token();
    let message = Some(refusal.user_message(ui));
    let mut resp = if emergency {
        render(&EmergencyPage { csrf: csrf.clone(), message })?
    } else {
        render(&LoginPage { csrf: csrf.clone(), message, error: true })?
    };
    match retry_after {
        Some(secs) => {
            *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        None => *resp.status_mut() = StatusCode::UNAUTHORIZED,
    }
    Ok(with_login_cookie(resp, &csrf, ui.secure_cookies))
}

async fn start_session(ui: &Arc<Ui>, user: User, client: &ClientAddr, emergency_reason: Option<String>) -> Result<Response, WebError> {
    let now = ui.clock.now();
    let break_glass = emergency_reason.is_some();
    let (token, session) = ui.sessions.create(&user, now, break_glass);
    let who = json!({ "user": user.username, "role": user.role, "client": client.to_string(), "session": session.audit_id, "break_glass": break_glass });
    let logged = if let Some(reason) = &emergency_reason {
        let (id, at, c, r) = (user.id, now, client.to_string(), reason.clone());
        ui.with_store(move |s| accounts::record_break_glass(s.conn(), id, at, &c, &r).map_err(|e| WebError::Internal(e.to_string())))
            .await?;
        tracing::warn!(user = %user.username, client = %client, "EMERGENCY ACCESS: break-glass sign-in");
        ui.audit(
            EventKind::SecurityAlert,
            &user.username,
            json!({ "event": "break_glass_login", "who": who, "reason": TextDigest::of(reason) }),
        )
        .await
    } else {
        ui.audit(EventKind::Login, &user.username, json!({ "who": who, "source": user.source })).await
    };
    if let Err(e) = logged {
        // No audit record, no session.
        ui.sessions.end(&token);
        return Err(e);
    }
    let mut resp = Redirect::to(home_of(user.role)).into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&token, ui.secure_cookies)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(LOGIN_COOKIE, "/login", ui.secure_cookies)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// Break-glass sign-ins raise an alert on the health page too, so the administrators see it
/// on their first page, not only in the audit trail.
pub fn emergency_alert_text(username: &str, client: &str) -> String {
    format!("EMERGENCY ACCESS: {username} signed in through break-glass from {client}; review it under Emergency access")
}

pub(super) async fn logout(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    ui.sessions.end(&a.token);
    ui.audit(EventKind::Logout, &a.session.username, json!({ "who": a.who(), "reason": "user" })).await?;
    let mut resp = Redirect::to("/login?m=signout").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(SESSION_COOKIE, "/", ui.secure_cookies)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub(super) fn raise_break_glass_alert(state: &AppState, username: &str, client: &str) {
    if let Ok(mut h) = state.health.write() {
        h.raise("access", emergency_alert_text(username, client));
    }
}
