//! The Backups page: the last runs with their outcome and size, the last good backup, the last
//! restore drill, the schedule's next run, a run in progress; "back up now" and "run a drill"
//! (administrators, each confirmed and audited); and the repository key's escrow sheet
//! (administrators, shown only after a confirmation, audited by fingerprint, never logged), and
//! its rotation (administrators, confirmed, audited by fingerprint; shows the new sheet).
//!
//! The work is behind [`BackupService`], so this module knows only HTTP: the daemon wires the
//! real one (`crate::backup::service::BoxBackups`, the same code as `wardbox backup`).

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::pages::{Chrome, chrome, render, ui_of};
use super::{AppState, Authed, Ui, WebError};

/// What the page shows (no PHI: times, sizes, snapshot ids, errors about the destination).
#[derive(Debug, Clone, Default)]
pub struct BackupOverview {
    /// Where backups go, or `None` when no destination is configured.
    pub destination: Option<String>,
    /// "nightly at 02:30 (UTC+01:00)", "off", ...
    pub schedule: String,
    pub next_run: Option<String>,
    /// The run in progress in this agent, in words.
    pub running: Option<String>,
    pub last_good_backup: Option<String>,
    /// The last drill: when, and its outcome in words.
    pub last_drill: Option<String>,
    /// The repository key's fingerprint, once a key exists.
    pub key_fingerprint: Option<String>,
    /// Newest first.
    pub runs: Vec<RunView>,
}

/// One recorded run.
#[derive(Debug, Clone)]
pub struct RunView {
    pub kind: String,
    pub started: String,
    pub finished: String,
    pub ok: bool,
    /// Bytes in the snapshot and bytes it added, in words; empty for a drill or a failure.
    pub size: String,
    /// The snapshot id, the drill's counts, or the error.
    pub detail: String,
}

/// The escrow sheet: the key (grouped for copying by hand) and its fingerprint.
pub struct EscrowSheet {
    /// The key in groups of eight hex digits.
    pub key_groups: Zeroizing<String>,
    pub fingerprint: String,
    /// The destination the key opens.
    pub destination: Option<String>,
}

impl std::fmt::Debug for EscrowSheet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowSheet").field("key_groups", &"[redacted]").field("fingerprint", &self.fingerprint).finish()
    }
}

/// A key rotation as the page shows it: the new escrow sheet, and what was done.
#[derive(Debug)]
pub struct RotatedKey {
    /// The sheet of the key the box backs up with now.
    pub sheet: EscrowSheet,
    /// What was done, in words (or, when `complete` is false, what is left to do).
    pub summary: String,
    /// Whether the old key was removed from the repository.
    pub complete: bool,
}

/// Why a run did not happen or did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRefused {
    /// Another backup, restore or drill holds the box's backup lock.
    Busy(String),
    /// No destination is configured.
    NotConfigured(String),
    /// It ran and failed (recorded, and alerted as the schedule's failures are).
    Failed(String),
}

/// Backups as the page drives them. Every method blocks (called off the async threads).
pub trait BackupService: Send + Sync + std::fmt::Debug {
    fn overview(&self) -> Result<BackupOverview, String>;
    /// Back up now as `actor`; a summary of the snapshot.
    fn back_up(&self, actor: &str) -> Result<String, RunRefused>;
    /// Run a restore drill as `actor`; a summary of what it verified.
    fn drill(&self, actor: &str) -> Result<String, RunRefused>;
    /// The key for the escrow sheet (made on first use), audited as shown to `actor`.
    fn escrow_sheet(&self, actor: &str) -> Result<EscrowSheet, String>;
    /// Rotate the repository key as `actor` (audited): the new key's sheet. Refused, with
    /// nothing changed, when the destination cannot be reached.
    fn rotate_key(&self, actor: &str) -> Result<RotatedKey, RunRefused>;
}

#[derive(Template)]
#[template(path = "admin_backups.html")]
struct BackupsPage {
    c: Chrome,
    o: BackupOverview,
    message: Option<String>,
    unavailable: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_backup_key.html")]
struct KeySheetPage<'a> {
    c: Chrome,
    key_groups: &'a str,
    fingerprint: &'a str,
    destination: &'a str,
    shown_at: String,
    shown_to: &'a str,
    /// After a rotation: what was done.
    notice: Option<String>,
}

fn service(state: &AppState) -> Result<std::sync::Arc<dyn BackupService>, String> {
    ui_of(state)
        .ok()
        .and_then(|ui| ui.backups.clone())
        .ok_or_else(|| "backups are not set up on this box".to_owned())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| WebError::Internal(format!("backup task failed: {e}")))
}

async fn page(state: &AppState, a: &Authed, message: Option<String>, status: StatusCode) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let (o, unavailable) = match service(state) {
        Ok(s) => match blocking(move || s.overview()).await? {
            Ok(o) => (o, None),
            Err(e) => (BackupOverview::default(), Some(format!("The backup records cannot be read: {e}"))),
        },
        Err(e) => (BackupOverview::default(), Some(format!("Backups: {e}."))),
    };
    let mut resp = render(&BackupsPage { c: chrome(&ui, a), o, message, unavailable })?;
    *resp.status_mut() = status;
    Ok(resp)
}

pub(super) async fn show(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    page(&state, &a, None, StatusCode::OK).await
}

/// The buttons' forms: the box must be ticked (a backup or a drill takes minutes and loads
/// the box, so it is never started by a stray click).
#[derive(Debug, Deserialize)]
pub(super) struct ConfirmForm {
    #[serde(default)]
    confirm: Option<String>,
}

impl ConfirmForm {
    fn confirmed(&self) -> bool {
        self.confirm.as_deref() == Some("yes")
    }
}

fn refused(what: &str, r: RunRefused) -> (String, StatusCode) {
    match r {
        RunRefused::Busy(m) => (format!("No {what} was started: {m}"), StatusCode::CONFLICT),
        RunRefused::NotConfigured(m) => (format!("No {what} was started: {m}"), StatusCode::SERVICE_UNAVAILABLE),
        RunRefused::Failed(m) => (format!("The {what} failed: {m}"), StatusCode::OK),
    }
}

pub(super) async fn run_backup(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<ConfirmForm>) -> Result<Response, WebError> {
    if !f.confirmed() {
        return page(&state, &a, Some("Tick the box to confirm the backup.".into()), StatusCode::BAD_REQUEST).await;
    }
    let s = service(&state).map_err(WebError::Unavailable)?;
    let actor = a.session.username.clone();
    let (message, status) = match blocking(move || s.back_up(&actor)).await? {
        Ok(summary) => (format!("Backup done: {summary}."), StatusCode::OK),
        Err(r) => refused("backup", r),
    };
    page(&state, &a, Some(message), status).await
}

pub(super) async fn run_drill(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<ConfirmForm>) -> Result<Response, WebError> {
    if !f.confirmed() {
        return page(&state, &a, Some("Tick the box to confirm the restore drill.".into()), StatusCode::BAD_REQUEST).await;
    }
    let s = service(&state).map_err(WebError::Unavailable)?;
    let actor = a.session.username.clone();
    let (message, status) = match blocking(move || s.drill(&actor)).await? {
        Ok(summary) => (format!("Restore drill passed: {summary}."), StatusCode::OK),
        Err(r) => refused("restore drill", r),
    };
    page(&state, &a, Some(message), status).await
}

/// The escrow sheet, after the confirmation. Not cached, not logged; the audit record names
/// the key by its fingerprint only.
pub(super) async fn key_sheet(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<ConfirmForm>) -> Result<Response, WebError> {
    if !f.confirmed() {
        return page(&state, &a, Some("Tick the box to confirm that you are printing the escrow sheet now.".into()), StatusCode::BAD_REQUEST).await;
    }
    let ui = ui_of(&state)?;
    let s = service(&state).map_err(WebError::Unavailable)?;
    let actor = a.session.username.clone();
    let sheet = match blocking(move || s.escrow_sheet(&actor)).await? {
        Ok(sheet) => sheet,
        Err(e) => return page(&state, &a, Some(format!("The key cannot be shown: {e}")), StatusCode::INTERNAL_SERVER_ERROR).await,
    };
    sheet_page(&ui, &a, &sheet, None, StatusCode::OK)
}

/// The escrow sheet page (not cached).
fn sheet_page(ui: &Ui, a: &Authed, sheet: &EscrowSheet, notice: Option<String>, status: StatusCode) -> Result<Response, WebError> {
    let shown_at = jiff::Timestamp::from_second(ui.clock.now()).map(|t| t.to_string()).unwrap_or_default();
    let mut resp = render(&KeySheetPage {
        c: chrome(ui, a),
        key_groups: sheet.key_groups.as_str(),
        fingerprint: &sheet.fingerprint,
        destination: sheet.destination.as_deref().unwrap_or("none configured"),
        shown_at,
        shown_to: &a.session.username,
        notice,
    })?;
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Rotate the repository key, after a confirmation, and show the new escrow sheet. A rotation
/// that could not start (destination unreachable, another run going) changes nothing and shows
/// the page with the reason; one that finished only in part shows the new sheet (the box backs
/// up with that key now) with what is left to do.
pub(super) async fn rotate_key(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<ConfirmForm>) -> Result<Response, WebError> {
    if !f.confirmed() {
        return page(&state, &a, Some("Tick the box to confirm the key rotation.".into()), StatusCode::BAD_REQUEST).await;
    }
    let ui = ui_of(&state)?;
    let s = service(&state).map_err(WebError::Unavailable)?;
    let actor = a.session.username.clone();
    match blocking(move || s.rotate_key(&actor)).await? {
        Ok(rotated) => sheet_page(&ui, &a, &rotated.sheet, Some(rotated.summary), StatusCode::OK),
        Err(r) => {
            let (message, status) = refused("key rotation", r);
            page(&state, &a, Some(message), status).await
        }
    }
}
