//! Administrator and auditor pages: health of every stage, users and roles, models, egress
//! counters, the audit trail with its verify status, emergency sign-ins. No patient content.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::accounts::{self, BreakGlassEvent, NewUser, Role, User};
use super::clinical::{ClinicalError, ModelInfo, TaskKind};
use super::health::Health;
use super::pages::{Chrome, chrome, render, ui_of};
use super::session::Session;
use super::{AppState, Authed, WebError};
use crate::audit::{self, AuditRecord, EventKind};

fn when(ts: i64) -> String {
    jiff::Timestamp::from_second(ts).map(|t| t.to_string()).unwrap_or_default()
}

/// A session as listed for administrators.
#[derive(Debug)]
struct SessionRow {
    username: String,
    role: &'static str,
    since: String,
    break_glass: bool,
}

impl From<&Session> for SessionRow {
    fn from(s: &Session) -> Self {
        Self { username: s.username.clone(), role: s.role.as_str(), since: when(s.created), break_glass: s.break_glass }
    }
}

#[derive(Debug)]
struct BreakGlassRow {
    username: String,
    at: String,
    client: String,
    reason: String,
}

impl From<BreakGlassEvent> for BreakGlassRow {
    fn from(e: BreakGlassEvent) -> Self {
        Self { username: e.username, at: when(e.at), client: e.client, reason: e.reason }
    }
}

#[derive(Template)]
#[template(path = "admin.html")]
struct Dashboard {
    c: Chrome,
    health: Health,
    state: String,
    sessions: Vec<SessionRow>,
    emergencies: Vec<BreakGlassRow>,
    /// Alerts nobody has reviewed yet: the banner on top links to the Alerts page.
    unreviewed_alerts: u64,
}

pub(super) async fn dashboard(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let health = state.health.read().map(|h| h.clone()).unwrap_or_else(|p| p.into_inner().clone());
    let emergencies = ui
        .with_store(|s| accounts::recent_break_glass(s.conn(), 10).map_err(|e| WebError::Internal(e.to_string())))
        .await?
        .into_iter()
        .map(BreakGlassRow::from)
        .collect();
    let unreviewed_alerts = ui
        .with_store(|s| crate::alerting::outbox::unreviewed_count(s.conn()).map_err(|e| WebError::Internal(e.to_string())))
        .await?;
    let sessions = ui.sessions.active(ui.clock.now()).iter().map(SessionRow::from).collect();
    let state_word = format!("{:?}", health.state).to_lowercase();
    render(&Dashboard { c: chrome(&ui, &a), health, state: state_word, sessions, emergencies, unreviewed_alerts })
}

#[derive(Debug)]
struct UserRow {
    username: String,
    display_name: String,
    role: &'static str,
    source: &'static str,
    break_glass: bool,
    disabled: bool,
    locked: bool,
}

impl UserRow {
    fn of(u: &User, now: i64) -> Self {
        Self {
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role.as_str(),
            source: match u.source {
                accounts::Source::Local => "local",
                accounts::Source::Ldap => "directory",
            },
            break_glass: u.break_glass,
            disabled: u.disabled,
            locked: u.is_locked(now),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    c: Chrome,
    users: Vec<UserRow>,
    message: Option<String>,
}

async fn users_page(state: &AppState, a: &Authed, message: Option<String>) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let now = ui.clock.now();
    let users = ui
        .with_store(|s| accounts::list_users(s.conn()).map_err(|e| WebError::Internal(e.to_string())))
        .await?
        .iter()
        .map(|u| UserRow::of(u, now))
        .collect();
    render(&UsersPage { c: chrome(&ui, a), users, message })
}

pub(super) async fn users(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    users_page(&state, &a, None).await
}

#[derive(Deserialize)]
pub(super) struct NewUserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    break_glass: Option<String>,
}

impl std::fmt::Debug for NewUserForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUserForm").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Drop for NewUserForm {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

pub(super) async fn create_user(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<NewUserForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let role: Role = match f.role.parse() {
        Ok(r) => r,
        Err(e) => return bad(users_page(&state, &a, Some(format!("Not created: {e}"))).await),
    };
    let (username, display, password, break_glass) =
        (f.username.clone(), f.display_name.clone(), f.password.clone(), f.break_glass.is_some());
    let now = jiff::Timestamp::now().to_string();
    let created = ui
        .with_store(move |s| {
            let new = NewUser { username: &username, display_name: &display, role, password: &password, break_glass };
            Ok(accounts::add_user(s.conn(), &new, &now))
        })
        .await?;
    match created {
        Ok(user) => {
            ui.audit(
                EventKind::AdminAction,
                &a.session.username,
                json!({ "who": a.who(), "action": "user_create", "target": user.username, "role": user.role, "break_glass": user.break_glass }),
            )
            .await?;
            users_page(&state, &a, Some(format!("Created {} ({}).", user.username, user.role))).await
        }
        Err(accounts::AccountError::Store(e)) if crate::store::is_volume_full(&e) => Err(WebError::VolumeFull),
        Err(e) => bad(users_page(&state, &a, Some(format!("Not created: {e}"))).await),
    }
}

fn bad(resp: Result<Response, WebError>) -> Result<Response, WebError> {
    resp.map(|mut r| {
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        r
    })
}

pub(super) async fn user_action(
    State(state): State<AppState>,
    a: Authed,
    Path((username, action)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    if !matches!(action.as_str(), "disable" | "enable" | "unlock") {
        return Err(WebError::NotFound);
    }
    if action == "disable" && username == a.session.username {
        return bad(users_page(&state, &a, Some("You cannot disable your own account.".into())).await);
    }
    let (target, act) = (username.clone(), action.clone());
    let done = ui
        .with_store(move |s| {
            let r = match act.as_str() {
                "disable" => accounts::set_disabled(s.conn(), &target, true),
                "enable" => accounts::set_disabled(s.conn(), &target, false),
                _ => accounts::unlock(s.conn(), &target),
            };
            let user = accounts::find_by_username(s.conn(), &target).ok().flatten();
            Ok(r.map(|()| user))
        })
        .await?;
    match done {
        Ok(user) => {
            if action == "disable"
                && let Some(u) = user
            {
                // A disabled account's open sessions end now, not at their idle limit.
                ui.sessions.end_user(u.id);
            }
            if action == "unlock" {
                // The failures that locked it do not count towards the next lock.
                ui.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear_account(&username);
            }
            ui.audit(
                EventKind::AdminAction,
                &a.session.username,
                json!({ "who": a.who(), "action": format!("user_{action}"), "target": username }),
            )
            .await?;
            Ok(Redirect::to("/admin/users").into_response())
        }
        Err(e) => bad(users_page(&state, &a, Some(e.to_string())).await),
    }
}

#[derive(Template)]
#[template(path = "admin_models.html")]
struct ModelsPage {
    c: Chrome,
    models: Vec<ModelInfo>,
    unavailable: Option<String>,
    tasks: Vec<TaskChoice>,
    /// Models that can write answers (not the embedding model).
    installed: Vec<String>,
}

pub(super) async fn models(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let (models, unavailable) = match ui.clinical(|c| c.models()).await {
        Ok(m) => (m, None),
        Err(ClinicalError::Unavailable(m)) => (Vec::new(), Some(m)),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let installed: Vec<String> = models.iter().filter(|m| !m.tasks.iter().any(|t| t == "embeddings")).map(|m| m.name.clone()).collect();
    let tasks = TASK_CHOICES
        .iter()
        .map(|(task, label)| {
            let serving = models.iter().find(|m| m.tasks.iter().any(|t| t == task.as_str())).map(|m| m.name.clone()).unwrap_or_default();
            TaskChoice { task: task.as_str(), label, serving }
        })
        .collect();
    render(&ModelsPage { c: chrome(&ui, &a), models, unavailable, tasks, installed })
}

/// The tasks a model can be chosen for, as the page names them.
const TASK_CHOICES: [(TaskKind, &str); 4] = [
    (TaskKind::Ask, "Questions"),
    (TaskKind::Soap, "SOAP summaries"),
    (TaskKind::Discharge, "Discharge instructions"),
    (TaskKind::Medications, "Medication lists"),
];

#[derive(Debug, Clone)]
struct TaskChoice {
    task: &'static str,
    label: &'static str,
    /// The model serving it now.
    serving: String,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct TaskModelForm {
    #[serde(default)]
    task: String,
    #[serde(default)]
    model: String,
}

/// An administrator chooses the model that serves a task; audited with the task and model.
pub(super) async fn set_task_model(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<TaskModelForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let Some((task, _)) = TASK_CHOICES.iter().find(|(t, _)| t.as_str() == f.task).copied() else {
        return Err(WebError::BadRequest(format!("There is no task {:?}.", f.task)));
    };
    let model = f.model.trim().to_owned();
    if model.is_empty() {
        return Err(WebError::BadRequest("Pick a model.".into()));
    }
    let (by, m) = (a.session.username.clone(), model.clone());
    ui.clinical(move |c| c.set_task_model(&by, task, &m)).await.map_err(|e| match e {
        ClinicalError::Rejected(m) => WebError::BadRequest(m),
        ClinicalError::Unavailable(m) => WebError::Unavailable(m),
        other => WebError::Internal(other.to_string()),
    })?;
    ui.audit(EventKind::AdminAction, &a.session.username, json!({ "who": a.who(), "action": "set_task_model", "task": task, "model": model })).await?;
    Ok(Redirect::to("/admin/models").into_response())
}

#[derive(Debug)]
struct CounterRow {
    name: String,
    packets: u64,
    bytes: u64,
}

#[derive(Template)]
#[template(path = "admin_egress.html")]
struct EgressPage {
    c: Chrome,
    counters: Vec<CounterRow>,
    unavailable: Option<String>,
}

pub(super) async fn egress(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    // Reading the counters runs `nft`: off the async threads.
    let source = ui.egress.clone();
    let read = tokio::task::spawn_blocking(move || source.blocked())
        .await
        .map_err(|e| WebError::Internal(format!("counter task failed: {e}")))?;
    let (counters, unavailable) = match read {
        Ok(c) => (c.into_iter().map(|(name, packets, bytes)| CounterRow { name, packets, bytes }).collect(), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    render(&EgressPage { c: chrome(&ui, &a), counters, unavailable })
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    kind: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    c: Chrome,
    q: String,
    kind: String,
    kinds: Vec<&'static str>,
    records: Vec<AuditRecord>,
    verify: String,
    intact: bool,
}

/// Most records shown per search.
const AUDIT_PAGE: u32 = 200;

pub(super) async fn audit_trail(State(state): State<AppState>, a: Authed, Query(q): Query<AuditQuery>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let needle: String = q.q.chars().take(100).collect();
    let kind: String = q.kind.chars().take(40).collect();
    let checkpoints = ui.checkpoints.clone();
    let (n, k) = (needle.clone(), kind.clone());
    let (records, verify, intact) = ui
        .with_store(move |s| {
            let records = search_audit(s, &n, &k).map_err(|e| WebError::Internal(e.to_string()))?;
            let cps = match &checkpoints {
                Some(log) => log.read_all().map_err(|e| WebError::Internal(e.to_string()))?,
                None => Vec::new(),
            };
            let (verify, intact) = match audit::verify_chain(s, &cps) {
                Ok(r) => match &r.first_break {
                    None => (format!("intact: {} records, head {}, {} checkpoints checked", r.records, r.head_seq, r.checkpoints_checked), true),
                    Some(b) => (format!("BROKEN: {b}"), false),
                },
                Err(e) => (format!("could not be verified: {e}"), false),
            };
            Ok((records, verify, intact))
        })
        .await?;
    let kinds = vec![
        "login", "login_failed", "logout", "access", "query", "answer", "admin_action", "security_alert", "boot_stage", "lifecycle", "key_rotation",
    ];
    render(&AuditPage { c: chrome(&ui, &a), q: needle, kind, kinds, records, verify, intact })
}

fn search_audit(s: &crate::store::Store, needle: &str, kind: &str) -> rusqlite::Result<Vec<AuditRecord>> {
    let like = format!("%{}%", needle.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let mut stmt = s.conn().prepare(
        "SELECT seq, ts, kind, actor, detail, prev_hash, hash FROM audit
         WHERE (?1 = '' OR kind = ?1)
           AND (?2 = '%%' OR actor LIKE ?2 ESCAPE '\\' OR detail LIKE ?2 ESCAPE '\\')
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(rusqlite::params![kind, like, AUDIT_PAGE], AuditRecord::from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[derive(Template)]
#[template(path = "admin_break_glass.html")]
struct BreakGlassPage {
    c: Chrome,
    events: Vec<BreakGlassRow>,
}

pub(super) async fn break_glass(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let events = ui
        .with_store(|s| accounts::recent_break_glass(s.conn(), 200).map_err(|e| WebError::Internal(e.to_string())))
        .await?
        .into_iter()
        .map(BreakGlassRow::from)
        .collect();
    render(&BreakGlassPage { c: chrome(&ui, &a), events })
}
