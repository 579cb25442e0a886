//! The Updates page (administrators): what the inserted USB sticks hold (each bundle as
//! `wardbox update inspect` shows it: signers, versions, kind, contents with sizes, release
//! notes, whether this box would take it), the box's update status, an apply that starts only
//! after the admin ticks the confirmation for exactly the bundle shown (its manifest digest),
//! its progress (bytes, rate, time left; the page reloads itself while it runs, and
//! `/admin/updates/progress` answers the same as JSON), its outcome, and the signed install
//! receipt to download. Inserting a stick installs nothing by itself; on the appliance no stick
//! is even let in until an admin opens the USB window here (`crate::usb`).
//!
//! The work is behind [`UpdateService`], so this module knows only HTTP: the daemon wires the
//! real one (`crate::update::service::BoxUpdates`, the same code as `wardbox update`), which
//! audits every step as the signed-in admin.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::pages::{Chrome, chrome, render, ui_of};
use super::{AppState, Authed, WebError};

/// One signing role of a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct SignerView {
    pub role: String,
    pub version: u64,
    pub expires: String,
    /// "2 of 2 needed: 1a2b…, 3c4d…"
    pub keys: String,
}

/// One target of a bundle.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub role: String,
    pub name: String,
    pub size: String,
}

/// A bundle found on a stick, as inspect shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BundleView {
    /// `<stick>/<directory>`: what the apply form names.
    pub id: String,
    /// Present when the bundle verified.
    pub sha256: Option<String>,
    pub kind: String,
    pub version: String,
    /// The installed version of its track.
    pub installed: String,
    pub root_version: String,
    pub signers: Vec<SignerView>,
    pub targets: Vec<TargetView>,
    pub total: String,
    pub notes: Option<String>,
    /// None: this box would take it. Some: why not (or why it cannot be read at all).
    pub refused: Option<String>,
}

/// The apply running in this agent, or the last one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyView {
    pub bundle: String,
    pub sha256: String,
    pub kind: String,
    pub version: String,
    pub by: String,
    pub running: bool,
    pub phase: String,
    pub done: u64,
    pub total: u64,
    pub percent: u64,
    /// "12.3 MiB of 1.00 GiB, 45.1 MiB/s, 21 s left"
    pub words: String,
    /// "installed", "pending-reboot", "refused", "rolled-back", "failed"; empty while running.
    pub outcome: String,
    pub message: String,
    pub lines: Vec<String>,
}

/// What the page shows.
#[derive(Debug, Clone, Default)]
pub struct UpdatesOverview {
    /// Where sticks are mounted.
    pub usb_dir: String,
    pub sticks_error: Option<String>,
    pub bundles: Vec<BundleView>,
    /// (label, text) lines of the box's update status.
    pub status: Vec<(String, String)>,
    pub any_install: bool,
    pub apply: Option<ApplyView>,
    /// The USB window: whether this box has one (the appliance), and its state in words.
    pub usb_window: UsbWindowView,
}

/// The USB window as the page shows it.
#[derive(Debug, Clone, Default)]
pub struct UsbWindowView {
    /// The box has a window helper: the page offers to open and close the window.
    pub controls: bool,
    pub open: bool,
    /// "open for an update by admin:jo until 10:42:00 UTC", "closed", or why it cannot be read.
    pub words: String,
}

/// Why an apply did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyRefused {
    /// Another apply runs.
    Busy(String),
    /// The bundle is not on a stick (any more), or changed since it was shown.
    NotFound(String),
    /// Verification refused it (audited); nothing changed.
    Refused { message: String, exit_code: u8 },
}

/// A receipt to download.
#[derive(Debug, Clone)]
pub struct ReceiptFile {
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// Updates as the page drives them. Every method blocks (called off the async threads).
pub trait UpdateService: Send + Sync + std::fmt::Debug {
    fn overview(&self) -> Result<UpdatesOverview, String>;
    /// Verifies the bundle `id` (which must still have manifest digest `sha256`) and starts
    /// installing it in the background as `actor`.
    fn start_apply(&self, id: &str, sha256: &str, actor: &str) -> Result<(), ApplyRefused>;
    /// The apply running now, or the last one since the agent started.
    fn progress(&self) -> Option<ApplyView>;
    /// The receipt of the last install, audited as exported by `actor`.
    fn receipt(&self, actor: &str) -> Result<ReceiptFile, String>;
    /// Opens (`open`) or closes the USB window as `actor`, audited; the answer in words.
    fn usb_window(&self, open: bool, actor: &str) -> Result<String, String>;
}

#[derive(Template)]
#[template(path = "admin_updates.html")]
struct UpdatesPage {
    c: Chrome,
    o: UpdatesOverview,
    message: Option<String>,
    unavailable: Option<String>,
}

fn service(state: &AppState) -> Result<std::sync::Arc<dyn UpdateService>, String> {
    ui_of(state)
        .ok()
        .and_then(|ui| ui.updates.clone())
        .ok_or_else(|| "updates are not set up on this box".to_owned())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| WebError::Internal(format!("update task failed: {e}")))
}

async fn page(state: &AppState, a: &Authed, message: Option<String>, status: StatusCode) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let (o, unavailable) = match service(state) {
        Ok(s) => match blocking(move || s.overview()).await? {
            Ok(o) => (o, None),
            Err(e) => (UpdatesOverview::default(), Some(format!("The update status cannot be read: {e}"))),
        },
        Err(e) => (UpdatesOverview::default(), Some(format!("Updates: {e}."))),
    };
    let running = o.apply.as_ref().is_some_and(|a| a.running);
    let mut resp = render(&UpdatesPage { c: chrome(&ui, a), o, message, unavailable })?;
    *resp.status_mut() = status;
    if running {
        // Polling without script: the page reloads itself while an apply runs.
        resp.headers_mut().insert(header::REFRESH, HeaderValue::from_static("2"));
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub(super) async fn show(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    page(&state, &a, None, StatusCode::OK).await
}

/// The apply form: the bundle, the digest the admin saw, and the tick.
#[derive(Debug, Deserialize)]
pub(super) struct ApplyForm {
    #[serde(default)]
    bundle: String,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    confirm: Option<String>,
}

pub(super) async fn apply(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<ApplyForm>) -> Result<Response, WebError> {
    if f.confirm.as_deref() != Some("yes") {
        return page(&state, &a, Some("Tick the box to confirm this update; nothing was applied.".into()), StatusCode::BAD_REQUEST).await;
    }
    if f.bundle.is_empty() || f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return page(&state, &a, Some("The form does not name a bundle and its digest; nothing was applied.".into()), StatusCode::BAD_REQUEST).await;
    }
    let s = service(&state).map_err(WebError::Unavailable)?;
    let actor = a.session.username.clone();
    let (message, status) = match blocking(move || s.start_apply(&f.bundle, &f.sha256, &actor)).await? {
        Ok(()) => ("The update was verified and is being applied; this page shows its progress.".to_owned(), StatusCode::ACCEPTED),
        Err(ApplyRefused::Busy(m)) => (format!("Not applied: {m}"), StatusCode::CONFLICT),
        Err(ApplyRefused::NotFound(m)) => (format!("Not applied: {m}"), StatusCode::NOT_FOUND),
        Err(ApplyRefused::Refused { message, exit_code }) => {
            (format!("Refused (exit code {exit_code}): {message}"), StatusCode::UNPROCESSABLE_ENTITY)
        }
    };
    page(&state, &a, Some(message), status).await
}

/// The USB window form: `open` or `close`.
#[derive(Debug, Deserialize)]
pub(super) struct UsbWindowForm {
    #[serde(default)]
    action: String,
}

/// Opens or closes the USB window (the root helper does it; the page only asks).
pub(super) async fn usb_window(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<UsbWindowForm>) -> Result<Response, WebError> {
    let open = match f.action.as_str() {
        "open" => true,
        "close" => false,
        _ => return page(&state, &a, Some("The form does not say whether to open or close the USB window; nothing was changed.".into()), StatusCode::BAD_REQUEST).await,
    };
    let s = service(&state).map_err(WebError::Unavailable)?;
    let actor = a.session.username.clone();
    let (message, status) = match blocking(move || s.usb_window(open, &actor)).await? {
        Ok(m) => (m, StatusCode::OK),
        Err(m) => (format!("The USB window was not {}: {m}", if open { "opened" } else { "closed" }), StatusCode::CONFLICT),
    };
    page(&state, &a, Some(message), status).await
}

/// The progress as JSON, for scripts and for a page that polls with script.
pub(super) async fn progress(State(state): State<AppState>, _a: Authed) -> Result<Response, WebError> {
    let s = service(&state).map_err(WebError::Unavailable)?;
    let view = blocking(move || s.progress()).await?;
    let body = serde_json::to_vec(&serde_json::json!({ "apply": view })).map_err(|e| WebError::Internal(e.to_string()))?;
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The receipt of the last install, as a download (a POST: exporting it is audited).
pub(super) async fn receipt(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let s = service(&state).map_err(WebError::Unavailable)?;
    let actor = a.session.username.clone();
    let file = match blocking(move || s.receipt(&actor)).await? {
        Ok(f) => f,
        Err(e) => return page(&state, &a, Some(format!("No receipt: {e}")), StatusCode::NOT_FOUND).await,
    };
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", file.file_name))
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let mut resp = (StatusCode::OK, file.bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
