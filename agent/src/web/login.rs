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
        }
    }

    fn user_message(&self, ui: &Ui) -> String {
        match self {
            Refusal::BadCredentials | Refusal::Locked | Refusal::Disabled | Refusal::UnknownUser => format!(
                "Sign-in failed: wrong user name or password, or the account is locked or disabled. After {} failed attempts an account is locked for {} minutes; an administrator can unlock it sooner.",
                ui.lockout.threshold,
                ui.lockout.lock_secs / 60
            ),
            Refusal::WrongPage => "This account cannot sign in on this page.".into(),
            Refusal::DirectoryUnavailable(_) => {
                "The clinic's directory server cannot be reached, so directory accounts cannot sign in. In an emergency, use emergency access.".into()
            }
            Refusal::NoRole(_) => "Your directory account is not in any Wardbox group; ask IT to add you to one.".into(),
            Refusal::Store(_) => "Sign-in is not possible right now; tell IT.".into(),
        }
    }
}

fn store_err(e: impl std::fmt::Display) -> Refusal {
    Refusal::Store(e.to_string())
}

/// Check a person's credentials. `emergency` selects the break-glass rules: only break-glass
/// accounts, only local passwords (it must work when the directory is down).
pub async fn sign_in(ui: &Arc<Ui>, raw_username: &str, password: &str, emergency: bool) -> Result<User, (Option<String>, Refusal)> {
    let Ok(name) = accounts::normalize_username(raw_username) else {
        let pw = password.to_string();
        let _ = tokio::task::spawn_blocking(move || accounts::dummy_verify(&pw)).await;
        return Err((None, Refusal::UnknownUser));
    };
    let now = ui.clock.now();
    let lookup = name.clone();
    let existing = ui
        .with_store(move |s| accounts::find_by_username(s.conn(), &lookup).map_err(|e| WebError::Internal(e.to_string())))
        .await
        .map_err(|e| (Some(name.clone()), store_err(e)))?;
    let fail = |r: Refusal| Err((Some(name.clone()), r));
    let pw = password.to_string();
    let user = match existing {
        Some(u) if u.disabled || u.is_locked(now) => {
            let _ = tokio::task::spawn_blocking(move || accounts::dummy_verify(&pw)).await;
            return fail(if u.disabled { Refusal::Disabled } else { Refusal::Locked });
        }
        Some(u) if u.source == Source::Local => {
            let hash = u.password_hash.clone().unwrap_or_default();
            let ok = tokio::task::spawn_blocking(move || accounts::verify_password(&hash, &pw)).await.unwrap_or(false);
            if !ok {
                return fail(count_failure(ui, &u, now).await);
            }
            if u.break_glass != emergency {
                return fail(Refusal::WrongPage);
            }
            u
        }
        Some(u) => {
            if emergency {
                return fail(Refusal::WrongPage);
            }
            match directory_sign_in(ui, &name, password).await {
                Ok(user) => user,
                Err(Refusal::BadCredentials) => return fail(count_failure(ui, &u, now).await),
                Err(r) => return fail(r),
            }
        }
        None if !emergency && ui.ldap.is_some() => directory_sign_in(ui, &name, password).await.map_err(|r| (Some(name.clone()), r))?,
        None => {
            let _ = tokio::task::spawn_blocking(move || accounts::dummy_verify(&pw)).await;
            return fail(Refusal::UnknownUser);
        }
    };
    let id = user.id;
    ui.with_store(move |s| accounts::record_success(s.conn(), id).map_err(|e| WebError::Internal(e.to_string())))
        .await
        .map_err(|e| (Some(name.clone()), store_err(e)))?;
    Ok(user)
}

async fn count_failure(ui: &Arc<Ui>, user: &User, now: i64) -> Refusal {
    let policy = ui.lockout;
    let u = user.clone();
    match ui.with_store(move |s| accounts::record_failure(s.conn(), &u, policy, now).map_err(|e| WebError::Internal(e.to_string()))).await {
        Ok(true) => {
            let _ = ui
                .audit(EventKind::SecurityAlert, "system", json!({ "event": "account_locked", "user": user.username, "for_secs": policy.lock_secs }))
                .await;
            Refusal::BadCredentials
        }
        Ok(false) => Refusal::BadCredentials,
        Err(e) => store_err(e),
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
        accounts::upsert_directory_user(s.conn(), &username, &person.display_name, person.role, &now)
            .map_err(|e| WebError::Internal(e.to_string()))
    })
    .await
    .map_err(store_err)
}

pub(super) async fn login_submit(
    State(state): State<AppState>,
    client: ClientAddr,
    axum::Form(f): axum::Form<LoginForm>,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    match sign_in(&ui, &f.username, &f.password, false).await {
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
    match sign_in(&ui, &f.username, &f.password, true).await {
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
    ui.audit(
        EventKind::LoginFailed,
        name.as_deref().unwrap_or("unknown"),
        json!({ "user": name, "client": client.to_string(), "reason": refusal.audit_reason(), "emergency": emergency }),
    )
    .await?;
    let csrf = random_token();
    let message = Some(refusal.user_message(ui));
    let mut resp = if emergency {
        render(&EmergencyPage { csrf: csrf.clone(), message })?
    } else {
        render(&LoginPage { csrf: csrf.clone(), message, error: true })?
    };
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
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
