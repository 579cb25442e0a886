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
use crate::alerting::{StoredAlert, outbox};
use crate::audit::{EventKind, TextDigest};

/// Alerts listed on the page, newest first.
const LISTED: usize = 200;
/// Longest review note accepted.
const MAX_NOTE_CHARS: usize = 2000;

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
        }
    }
}

#[derive(Template)]
#[template(path = "admin_alerts.html")]
struct AlertsPage {
    c: Chrome,
    alerts: Vec<AlertRow>,
    unreviewed: u64,
}

pub(super) async fn list(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let (alerts, unreviewed) = ui
        .with_store(|s| {
            let internal = |e: rusqlite::Error| WebError::Internal(e.to_string());
            Ok((outbox::list(s.conn(), LISTED).map_err(internal)?, outbox::unreviewed_count(s.conn()).map_err(internal)?))
        })
        .await?;
    render(&AlertsPage { c: chrome(&ui, &a), alerts: alerts.into_iter().map(AlertRow::from).collect(), unreviewed })
}

#[derive(Template)]
#[template(path = "admin_alert.html")]
struct AlertPage {
    c: Chrome,
    a: AlertRow,
    message: Option<String>,
}

fn parse_id(id: &str) -> Result<i64, WebError> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or(WebError::NotFound)
}

async fn alert_page(state: &AppState, a: &Authed, id: i64, message: Option<String>) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let stored = ui.with_store(move |s| outbox::get(s.conn(), id).map_err(|e| WebError::Internal(e.to_string()))).await?;
    let stored = stored.ok_or(WebError::NotFound)?;
    render(&AlertPage { c: chrome(&ui, a), a: AlertRow::from(stored), message })
}

pub(super) async fn show(State(state): State<AppState>, a: Authed, Path(id): Path<String>) -> Result<Response, WebError> {
    alert_page(&state, &a, parse_id(&id)?, None).await
}

#[derive(Debug, Deserialize)]
pub(super) struct ReviewForm {
    #[serde(default)]
    note: String,
}

/// Mark an alert reviewed with a note. A review is never overwritten; the note stays in the
/// store, the audit record keeps its digest (it is free text and may name a patient).
pub(super) async fn review(
    State(state): State<AppState>,
    a: Authed,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ReviewForm>,
) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let id = parse_id(&id)?;
    let note = f.note.trim().to_owned();
    if note.is_empty() {
        return bad(alert_page(&state, &a, id, Some("Write what you found before marking the alert reviewed.".into())).await);
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return bad(alert_page(&state, &a, id, Some(format!("The note is longer than {MAX_NOTE_CHARS} characters."))).await);
    }
    let (by, at, n) = (a.session.username.clone(), jiff::Timestamp::now().to_string(), note.clone());
    let done = ui
        .with_store(move |s| {
            if outbox::get(s.conn(), id).map_err(|e| WebError::Internal(e.to_string()))?.is_none() {
                return Err(WebError::NotFound);
            }
            outbox::review(s.conn(), id, &by, &at, &n).map_err(|e| WebError::Internal(e.to_string()))
        })
        .await?;
    if !done {
        return bad(alert_page(&state, &a, id, Some("This alert was already reviewed.".into())).await);
    }
    ui.audit(
        EventKind::AdminAction,
        &a.session.username,
        json!({ "who": a.who(), "action": "alert_review", "alert": id, "note": TextDigest::of(&note) }),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/alerts/{id}")).into_response())
}

fn bad(resp: Result<Response, WebError>) -> Result<Response, WebError> {
    resp.map(|mut r| {
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        r
    })
}
