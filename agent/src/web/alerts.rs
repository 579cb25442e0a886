//! The Alerts page for administrators and auditors: the alerts the detector raised over the
//! audit chain, their delivery to the clinic's collector and relay, and the review of each
//! (who, when, a note; audited, the note as a digest only since it is free text).

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::pages::{Chrome, chrome, render, ui_of};
use super::{AppState, Authed, WebError};
use crate::alerting::workflow::{self, Action, ApplyError, Disposition, WorkflowError};
use crate::alerting::{StoredAlert, outbox};
use crate::audit::{EventKind, TextDigest};

/// Alerts listed on the page, newest first.
const LISTED: usize = 200;

#[derive(Debug)]
struct AlertRow {
    id: i64,
    at: String,
    rule: &'static str,
    subject: String,
    observed: String,
    threshold: String,
    records: String,
    deliveries: String,
    reviewed: Option<String>,
    note: String,
    /// Where it stands: open, acknowledged, assigned, its disposition, closed.
    state: String,
    assigned_to: Option<String>,
    disposition: Option<&'static str>,
    /// "notify by 2027-03-02 (50 days left)" while a possible breach is open.
    breach: Option<String>,
    closed: Option<String>,
    /// Each workflow step: who, when, what, the note.
    history: Vec<String>,
}

impl AlertRow {
    fn with_workflow(mut self, st: &workflow::Status, history: Vec<workflow::Step>) -> Self {
        self.assigned_to = st.assigned_to.clone();
        self.disposition = st.disposition.map(Disposition::label);
        self.closed = st.closed_by.as_ref().map(|by| format!("{by}, {}", st.closed_at.clone().unwrap_or_default()));
        self.breach = match (&st.disposition, &st.breach_clock_from, &st.closed_at) {
            (Some(Disposition::PossibleBreach), Some(from), None) => workflow::breach_deadline(from, jiff::Timestamp::now())
                .map(|(due, left)| format!("possible breach since {from}: notify by {due} ({left} days left)")),
            _ => None,
        };
        self.state = match (&self.closed, st.disposition, &st.assigned_to, st.acknowledged) {
            (Some(_), Some(d), _, _) => format!("closed: {}", d.label()),
            (Some(_), None, _, _) => "closed".into(),
            (None, Some(d), _, _) => d.label().into(),
            (None, None, Some(who), _) => format!("assigned to {who}"),
            (None, None, None, true) => "acknowledged".into(),
            (None, None, None, false) => "open".into(),
        };
        self.history = history
            .into_iter()
            .map(|(action, actor, at, value, note)| {
                let value = value.and_then(|v| Disposition::parse(&v).map(|d| d.label().to_string()).or(Some(v)));
                let mut line = format!("{at} {actor}: {action}");
                if let Some(v) = value {
                    line += &format!(" {v}");
                }
                if let Some(n) = note {
                    line += &format!(" ({n})");
                }
                line
            })
            .collect();
        self
    }
}

impl From<StoredAlert> for AlertRow {
    fn from(s: StoredAlert) -> Self {
        let records: Vec<String> = s.alert.seqs.iter().map(u64::to_string).collect();
        let deliveries: Vec<String> = s
            .deliveries
            .iter()
            .map(|(dest, state, attempts, error)| match (state.as_str(), error) {
                ("failed", Some(e)) => format!("{dest}: failed {attempts}x, retrying ({e})"),
                _ => format!("{dest}: {state}"),
            })
            .collect();
        Self {
            id: s.id,
            at: s.alert.at.clone(),
            rule: s.alert.rule.as_str(),
            subject: s.alert.subject.clone(),
            observed: s.alert.observed.clone(),
            threshold: s.alert.threshold.clone(),
            records: records.join(", "),
            deliveries: if deliveries.is_empty() { "shown here only".into() } else { deliveries.join("; ") },
            reviewed: s.reviewed_by.map(|by| format!("{by}, {}", s.reviewed_at.unwrap_or_default())),
            note: s.review_note.unwrap_or_default(),
            state: String::new(),
            assigned_to: None,
            disposition: None,
            breach: None,
            closed: None,
            history: Vec::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_alerts.html")]
struct AlertsPage {
    c: Chrome,
    alerts: Vec<AlertRow>,
    unreviewed: u64,
    /// Open possible breaches with their notification deadlines: (id, text).
    breaches: Vec<(i64, String)>,
}

fn internal(e: rusqlite::Error) -> WebError {
    WebError::Internal(e.to_string())
}

/// An alert with its workflow state and history.
fn row(conn: &rusqlite::Connection, stored: StoredAlert) -> Result<AlertRow, WebError> {
    let id = stored.id;
    let st = workflow::status(conn, id).map_err(internal)?.unwrap_or_default();
    let history = workflow::history(conn, id).map_err(internal)?;
    Ok(AlertRow::from(stored).with_workflow(&st, history))
}

pub(super) async fn list(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let (alerts, unreviewed, breaches) = ui
        .with_store(|s| {
            let rows = outbox::list(s.conn(), LISTED).map_err(internal)?.into_iter().map(|a| row(s.conn(), a)).collect::<Result<Vec<_>, _>>()?;
            let now = jiff::Timestamp::now();
            let breaches = workflow::open_breaches(s.conn())
                .map_err(internal)?
                .into_iter()
                .filter_map(|(id, from)| workflow::breach_deadline(&from, now).map(|(due, left)| (id, format!("notify by {due} ({left} days left)"))))
                .collect();
            Ok((rows, outbox::unreviewed_count(s.conn()).map_err(internal)?, breaches))
        })
        .await?;
    render(&AlertsPage { c: chrome(&ui, &a), alerts, unreviewed, breaches })
}

#[derive(Template)]
#[template(path = "admin_alert.html")]
struct AlertPage {
    c: Chrome,
    a: AlertRow,
    message: Option<String>,
    /// Who the alert can be assigned to.
    reviewers: Vec<String>,
    /// (value, label) of each disposition.
    dispositions: Vec<(&'static str, &'static str)>,
}

fn parse_id(id: &str) -> Result<i64, WebError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or(WebError::NotFound)
}

async fn alert_page(state: &AppState, a: &Authed, id: i64, message: Option<String>) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let (row, reviewers) = ui
        .with_store(move |s| {
            let stored = outbox::get(s.conn(), id).map_err(internal)?.ok_or(WebError::NotFound)?;
            Ok((row(s.conn(), stored)?, workflow::reviewers(s.conn()).map_err(internal)?))
        })
        .await?;
    let dispositions = Disposition::ALL.iter().map(|d| (d.as_str(), d.label())).collect();
    render(&AlertPage { c: chrome(&ui, a), a: row, message, reviewers, dispositions })
}

pub(super) async fn show(State(state): State<AppState>, a: Authed, Path(id): Path<String>) -> Result<Response, WebError> {
    alert_page(&state, &a, parse_id(&id)?, None).await
}


/// Mark an alert reviewed (acknowledged) with a note. A review is never overwritten; the note
/// stays in the store, the audit record keeps its digest (it is free text and may name a patient).
pub(super) async fn review(
    State(state): State<AppState>,
    a: Authed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<StepForm>,
) -> Result<Response, WebError> {
    step(state, a, id, f, Step::Acknowledge).await
}

pub(super) async fn assign(State(state): State<AppState>, a: Authed, Path(id): Path<String>, axum::Form(f): axum::Form<StepForm>) -> Result<Response, WebError> {
    step(state, a, id, f, Step::Assign).await
}

pub(super) async fn dispose(State(state): State<AppState>, a: Authed, Path(id): Path<String>, axum::Form(f): axum::Form<StepForm>) -> Result<Response, WebError> {
    step(state, a, id, f, Step::Dispose).await
}

pub(super) async fn close(State(state): State<AppState>, a: Authed, Path(id): Path<String>, axum::Form(f): axum::Form<StepForm>) -> Result<Response, WebError> {
    step(state, a, id, f, Step::Close).await
}

/// The fields of every workflow form (each form sends the ones it has).
#[derive(Debug, Deserialize)]
pub(super) struct StepForm {
    #[serde(default)]
    note: String,
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    disposition: String,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Acknowledge,
    Assign,
    Dispose,
    Close,
}

/// Take one workflow step: checked, stored with its note, audited with the note's digest.
async fn step(state: AppState, a: Authed, id: String, f: StepForm, kind: Step) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let id = parse_id(&id)?;
    let note = f.note.trim().to_owned();
    let action = match kind {
        Step::Acknowledge => Action::Acknowledge,
        Step::Assign => Action::Assign(f.assignee.trim().to_owned()),
        Step::Dispose => match Disposition::parse(f.disposition.trim()) {
            Some(d) => Action::Dispose(d),
            None => return bad(alert_page(&state, &a, id, Some("Choose a disposition: false positive, policy violation or possible breach.".into())).await),
        },
        Step::Close => Action::Close,
    };
    let (by, at, n, act) = (a.session.username.clone(), jiff::Timestamp::now().to_string(), note.clone(), action.clone());
    let result = ui.with_store(move |s| Ok(workflow::apply(s.conn(), id, &act, &n, &by, &at))).await?;
    match result {
        Ok(_) => {}
        Err(ApplyError::Refused(WorkflowError::NoSuchAlert(_))) => return Err(WebError::NotFound),
        Err(ApplyError::Refused(e)) => {
            let message = match e {
                WorkflowError::AlreadyAcknowledged(_) => "This alert was already reviewed.".to_string(),
                WorkflowError::Note { .. } if matches!(kind, Step::Acknowledge) => "Write what you found before marking the alert reviewed.".to_string(),
                other => format!("{}.", capitalise(&other.to_string())),
            };
            return bad(alert_page(&state, &a, id, Some(message)).await);
        }
        Err(ApplyError::Store(e)) => return Err(internal(e)),
    }
    let (name, value) = match &action {
        Action::Acknowledge => ("alert_review", serde_json::Value::Null),
        Action::Assign(who) => ("alert_assign", json!(who)),
        Action::Dispose(d) => ("alert_disposition", json!(d.as_str())),
        Action::Close => ("alert_close", serde_json::Value::Null),
    };
    let mut detail = json!({ "who": a.who(), "action": name, "alert": id });
    if !value.is_null() {
        detail["value"] = value;
    }
    if !note.is_empty() {
        detail["note"] = json!(TextDigest::of(&note));
    }
    ui.audit(EventKind::AdminAction, &a.session.username, detail).await?;
    Ok(Redirect::to(&format!("/admin/alerts/{id}")).into_response())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn bad(resp: Result<Response, WebError>) -> Result<Response, WebError> {
    resp.map(|mut r| {
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        r
    })
}
