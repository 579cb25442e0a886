//! Clinician pages: pick a patient, ask with a streamed answer and citations, SOAP, discharge,
//! upload. Every page is rendered on the server; `ui/static/app.js` only streams and counts down.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;

use super::accounts::Role;
use super::clinical::{AnswerEvent, ClinicalError, Conversation, ConversationSummary, Document, PatientSummary, TaskKind, Viewer};
use super::session::remaining;
use super::{AppState, Authed, Ui, WebError};
use crate::audit::{EventKind, TextDigest};

/// A link in the page header.
#[derive(Debug, Clone)]
pub(super) struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
}

/// What every signed-in page shows around its content: who, role, the session timer, sign out.
#[derive(Debug, Clone)]
pub(super) struct Chrome {
    pub display_name: String,
    pub role: &'static str,
    pub csrf: String,
    pub idle_secs: i64,
    pub remaining: i64,
    pub break_glass: bool,
    pub nav: Vec<NavItem>,
}

pub(super) fn nav_for(role: Role) -> Vec<NavItem> {
    let n = |href, label| NavItem { href, label };
    match role {
        Role::Clinician | Role::Nurse => vec![n("/patients", "Patients")],
        Role::Admin => vec![
            n("/admin", "Health"),
            n("/admin/users", "Users"),
            n("/admin/models", "Models"),
            n("/admin/egress", "Egress"),
            n("/admin/audit", "Audit trail"),
            n("/admin/break-glass", "Emergency access"),
            n("/admin/alerts", "Alerts"),
            n("/admin/review", "Activity review"),
            n("/admin/access", "Access"),
            n("/admin/reports", "Reports"),
            n("/admin/backups", "Backups"),
            n("/admin/updates", "Updates"),
        ],
        Role::Auditor => vec![
            n("/admin/audit", "Audit trail"),
            n("/admin/break-glass", "Emergency access"),
            n("/admin/alerts", "Alerts"),
            n("/admin/review", "Activity review"),
            n("/admin/access", "Access"),
            n("/admin/reports", "Reports"),
            n("/admin/backups", "Backups"),
        ],
    }
}

pub(super) fn chrome(ui: &Ui, a: &Authed) -> Chrome {
    let policy = ui.sessions.policy();
    Chrome {
        display_name: a.session.display_name.clone(),
        role: a.session.role.as_str(),
        csrf: a.session.csrf.clone(),
        idle_secs: policy.idle_secs,
        remaining: remaining(policy, &a.session, ui.clock.now()),
        break_glass: a.session.break_glass,
        nav: nav_for(a.session.role),
    }
}

pub(super) fn viewer(a: &Authed) -> Viewer {
    Viewer { username: a.session.username.clone(), role: a.session.role, break_glass: a.session.break_glass }
}

pub(super) fn ui_of(state: &AppState) -> Result<Arc<Ui>, WebError> {
    state.ui.clone().ok_or_else(|| WebError::Unavailable("the web UI is not running on this box".into()))
}

pub(super) fn render(t: &impl Template) -> Result<Response, WebError> {
    t.render().map(|body| Html(body).into_response()).map_err(|e| WebError::Internal(format!("template: {e}")))
}

pub(super) fn clinical_error(e: ClinicalError) -> WebError {
    match e {
        ClinicalError::Unavailable(m) => WebError::Unavailable(m),
        ClinicalError::UnknownPatient | ClinicalError::UnknownDocument | ClinicalError::UnknownConversation => WebError::NotFound,
        ClinicalError::NotGranted => WebError::NotGranted,
        ClinicalError::Rejected(m) => WebError::BadRequest(m),
        ClinicalError::Failed(m) => WebError::Internal(m),
    }
}

/// Each role's start page.
pub(super) fn home_of(role: Role) -> &'static str {
    match role {
        Role::Clinician | Role::Nurse => "/patients",
        Role::Admin => "/admin",
        Role::Auditor => "/admin/audit",
    }
}

pub(super) async fn home(a: Authed) -> Redirect {
    Redirect::to(home_of(a.session.role))
}

/// Seconds left in this session, for the timer; polling it does not count as activity.
pub(super) async fn session_status(State(state): State<AppState>, a: Authed) -> Result<Json<serde_json::Value>, WebError> {
    let ui = ui_of(&state)?;
    let left = remaining(ui.sessions.policy(), &a.session, ui.clock.now());
    Ok(Json(json!({ "remaining": left })))
}

#[derive(Template)]
#[template(path = "patients.html")]
struct PatientsPage {
    c: Chrome,
    query: String,
    patients: Vec<PatientSummary>,
    unavailable: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
}

pub(super) async fn patients(State(state): State<AppState>, a: Authed, Query(q): Query<SearchQuery>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let query: String = q.q.chars().take(100).collect();
    let (v, q2) = (viewer(&a), query.clone());
    let (patients, unavailable) = match ui.clinical(move |c| c.patients(&v, &q2)).await {
        Ok(p) => (p, None),
        Err(ClinicalError::Unavailable(m)) => (Vec::new(), Some(m)),
        Err(e) => return Err(clinical_error(e)),
    };
    let page = PatientsPage { c: chrome(&ui, &a), query, patients, unavailable: unavailable.clone() };
    let mut resp = render(&page)?;
    if unavailable.is_some() {
        *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    Ok(resp)
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage {
    c: Chrome,
    patient: PatientSummary,
    can_soap: bool,
    /// This user's conversations about the patient (nobody else's).
    conversations: Vec<ConversationSummary>,
    /// The conversation being resumed, its turns above the question box.
    resumed: Option<Conversation>,
    /// The patient's de-identified images, newest first.
    images: Vec<super::images::ImageSummary>,
}

pub(super) async fn patient(State(state): State<AppState>, a: Authed, Path(id): Path<String>) -> Result<Response, WebError> {
    patient_page(state, a, id, None).await
}

/// A conversation resumed: the patient's page with its earlier turns, the next question
/// continuing it. Only the user who had it reaches it (404 for anyone else).
pub(super) async fn conversation(
    State(state): State<AppState>,
    a: Authed,
    Path((id, conversation)): Path<(String, String)>,
) -> Result<Response, WebError> {
    patient_page(state, a, id, Some(conversation)).await
}

async fn patient_page(state: AppState, a: Authed, id: String, conversation: Option<String>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let v = viewer(&a);
    let (patient, conversations, resumed) = ui
        .clinical(move |c| {
            let patient = c.patient(&v, &id)?;
            let resumed = conversation.map(|cid| c.conversation(&v, &id, &cid)).transpose()?;
            Ok((patient, c.conversations(&v, &id)?, resumed))
        })
        .await
        .map_err(clinical_error)?;
    let pid = patient.id.clone();
    let images = ui
        .with_store(move |s| super::images::list(s.conn(), &pid).map_err(|e| WebError::Internal(format!("the image store failed: {e}"))))
        .await?;
    render(&PatientPage { c: chrome(&ui, &a), patient, can_soap: a.session.role == Role::Clinician, conversations, resumed, images })
}

#[derive(Template)]
#[template(path = "document.html")]
struct DocumentPage {
    c: Chrome,
    patient: PatientSummary,
    doc: Document,
}

pub(super) async fn document(
    State(state): State<AppState>,
    a: Authed,
    Path((id, doc)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let v = viewer(&a);
    let (patient, doc) = ui
        .clinical(move |c| Ok((c.patient(&v, &id)?, c.document(&v, &id, &doc)?)))
        .await
        .map_err(clinical_error)?;
    render(&DocumentPage { c: chrome(&ui, &a), patient, doc })
}

#[derive(Debug, Deserialize)]
pub(super) struct TaskForm {
    #[serde(default)]
    text: String,
    /// The conversation a question continues (empty: a new one). Questions only.
    #[serde(default)]
    conversation: String,
}

/// Longest question or note accepted (a long clinical note fits; a pasted record does not).
const MAX_TASK_CHARS: usize = 20_000;

pub(super) async fn ask(state: State<AppState>, a: Authed, id: Path<String>, f: axum::Form<TaskForm>) -> Result<Response, WebError> {
    run_task(state, a, id, f, TaskKind::Ask).await
}

pub(super) async fn soap(state: State<AppState>, a: Authed, id: Path<String>, f: axum::Form<TaskForm>) -> Result<Response, WebError> {
    run_task(state, a, id, f, TaskKind::Soap).await
}

pub(super) async fn discharge(state: State<AppState>, a: Authed, id: Path<String>, f: axum::Form<TaskForm>) -> Result<Response, WebError> {
    run_task(state, a, id, f, TaskKind::Discharge).await
}

pub(super) async fn medications(state: State<AppState>, a: Authed, id: Path<String>, f: axum::Form<TaskForm>) -> Result<Response, WebError> {
    run_task(state, a, id, f, TaskKind::Medications).await
}

/// Start a task and stream its answer as server-sent events: `token` (text), `check` (the
/// answer checked against its sources, JSON), `citation` (JSON), `footer` (text), `timing`
/// (time to the first token and to the end, ms), then `done` or `failed`. The question and
/// the answer are audited as digests, with the ids of the sources retrieval used, the check's
/// counts and the timings.
async fn run_task(
    State(state): State<AppState>,
    a: Authed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<TaskForm>,
    kind: TaskKind,
) -> Result<Response, WebError> {
    let started = std::time::Instant::now();
    let ui = ui_of(&state)?;
    let text = f.text.trim().to_string();
    if text.is_empty() {
        return Err(WebError::BadRequest("Write a question or paste the note first.".into()));
    }
    if text.chars().count() > MAX_TASK_CHARS {
        return Err(WebError::BadRequest(format!("The text is longer than {MAX_TASK_CHARS} characters.")));
    }
    let (v, pid, question, conversation) = (viewer(&a), id.clone(), text.clone(), f.conversation.trim().to_owned());
    let rx = ui
        .clinical(move |c| match kind {
            TaskKind::Ask => c.ask(&v, &pid, Some(conversation.as_str()).filter(|c| !c.is_empty()), &question),
            _ => c.run(&v, &pid, kind, &question),
        })
        .await
        .map_err(clinical_error)?;
    ui.audit(
        EventKind::Query,
        &a.session.username,
        json!({ "who": a.who(), "patient": id, "task": kind, "text": TextDigest::of(&text) }),
    )
    .await?;
    let (tx, out) = tokio::sync::mpsc::channel::<Event>(64);
    let ui2 = ui.clone();
    tokio::spawn(async move {
        let mut answer = String::new();
        let mut cited: Vec<String> = Vec::new();
        let mut rx = ReceiverStream::new(rx);
        let mut outcome = json!("incomplete");
        let mut model = String::new();
        let mut retrieval = serde_json::Value::Null;
        let mut first_token: Option<std::time::Duration> = None;
        let mut check_micros: Option<u64> = None;
        let mut timing = serde_json::Value::Null;
        let mut conversation = serde_json::Value::Null;
        while let Some(ev) = rx.next().await {
            let event = match ev {
                AnswerEvent::Conversation { id: cid, turn, carried, dropped } => {
                    conversation = json!({ "id": cid, "turn": turn, "carried": carried, "dropped": dropped });
                    Event::default().event("conversation").data(conversation.to_string())
                }
                AnswerEvent::Footer(f) => Event::default().event("footer").data(json!(f).to_string()),
                AnswerEvent::Audit(detail) => {
                    retrieval = detail;
                    continue;
                }
                AnswerEvent::Token(t) => {
                    first_token.get_or_insert_with(|| started.elapsed());
                    answer.push_str(&t);
                    Event::default().event("token").data(json!(t).to_string())
                }
                AnswerEvent::Checked(c) => {
                    check_micros = Some(c.micros);
                    Event::default().event("check").data(json!(c).to_string())
                }
                AnswerEvent::Citation(c) => {
                    cited.push(c.document_id.clone());
                    let href = format!("/patients/{}/documents/{}", urlencode(&id), urlencode(&c.document_id));
                    Event::default()
                        .event("citation")
                        .data(json!({ "n": c.n, "title": c.title, "snippet": c.snippet, "href": href }).to_string())
                }
                AnswerEvent::Done { model: m } => {
                    outcome = json!("done");
                    model = m;
                    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    timing = json!({
                        "first_token_ms": first_token.map(ms),
                        "total_ms": ms(started.elapsed()),
                        "check_us": check_micros,
                    });
                    if tx.send(Event::default().event("timing").data(timing.to_string())).await.is_err() {
                        outcome = json!("client_left");
                        break;
                    }
                    Event::default().event("done").data("{}")
                }
                AnswerEvent::Failed(m) => {
                    outcome = json!("failed");
                    Event::default().event("failed").data(json!(m).to_string())
                }
            };
            let last = matches!(outcome.as_str(), Some("done" | "failed"));
            if tx.send(event).await.is_err() {
                outcome = json!("client_left");
                break;
            }
            if last {
                break;
            }
        }
        let _ = ui2
            .audit(
                EventKind::Answer,
                &a.session.username,
                json!({ "who": a.who(), "patient": id, "task": kind, "answer": TextDigest::of(&answer), "model": model, "citations": cited, "outcome": outcome, "retrieval": retrieval, "timing": timing, "conversation": conversation }),
            )
            .await;
    });
    let stream = ReceiverStream::new(out).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[derive(Debug, Deserialize)]
pub(super) struct DraftForm {
    #[serde(default)]
    text: String,
    #[serde(default)]
    kind: String,
}

/// Save a reviewed draft to the patient's record as a new document, marked with who saved it
/// and when; audited with the document id, a digest of the text and what de-identification
/// replaced (counts).
pub(super) async fn save_draft(
    State(state): State<AppState>,
    a: Authed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<DraftForm>,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let kind = match f.kind.as_str() {
        "soap" if a.session.role == Role::Clinician => TaskKind::Soap,
        "discharge" => TaskKind::Discharge,
        "medications" => TaskKind::Medications,
        _ => return Err(WebError::BadRequest("Only SOAP (clinicians), discharge and medication drafts can be saved.".into())),
    };
    let text = f.text.trim().to_owned();
    if text.is_empty() || text.chars().count() > MAX_TASK_CHARS {
        return Err(WebError::BadRequest(format!("A draft must hold between 1 and {MAX_TASK_CHARS} characters.")));
    }
    let saved_at = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string();
    let (v, pid, body) = (viewer(&a), id.clone(), text.clone());
    let saved = ui.clinical(move |c| c.save_draft(&v, &pid, kind, &body, &saved_at)).await.map_err(clinical_error)?;
    ui.audit(
        EventKind::Access,
        &a.session.username,
        json!({ "who": a.who(), "action": "save_draft", "patient": id, "task": kind, "document": saved.document_id, "text": TextDigest::of(&text),
                "identifiers_replaced": saved.identifiers_replaced }),
    )
    .await?;
    Ok(Json(saved).into_response())
}

pub(super) async fn upload(
    State(state): State<AppState>,
    a: Authed,
    Path(id): Path<String>,
    mut form: Multipart,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let super::upload::UploadedFile { file_name, content_type, bytes } = super::upload::read_upload(&mut form).await?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len();
    let (v, pid, name, ctype) = (viewer(&a), id.clone(), file_name.clone(), content_type.clone());
    let uploaded = ui.clinical(move |c| c.upload(&v, &pid, &name, &ctype, bytes.to_vec())).await.map_err(clinical_error)?;
    ui.audit(
        EventKind::Access,
        &a.session.username,
        json!({ "who": a.who(), "action": "upload", "patient": id, "document": uploaded.document_id, "sha256": digest, "bytes": size,
                "content_type": content_type, "identifiers_replaced": uploaded.identifiers_replaced }),
    )
    .await?;
    Ok(Json(uploaded).into_response())
}
