//! The weekly activity review page for administrators and auditors (`/admin/review`): one
//! week of the audit trail summarised (off-hours sessions, large prompts, failed sign-ins,
//! emergency access, users by patients touched), who reviewed that week last and when, and
//! "Mark week reviewed" with a note (audited, the note as a digest).

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use wardbox_alerts::review::WeeklyReview;

use super::pages::{Chrome, chrome, render, ui_of};
use super::{AppState, Authed, WebError};
use crate::alerting::review;
use crate::audit::{EventKind, TextDigest};

const MAX_NOTE_CHARS: usize = 2000;

#[derive(Template)]
#[template(path = "admin_review.html")]
struct ReviewPage {
    c: Chrome,
    week: String,
    previous: String,
    next: String,
    w: WeeklyReview,
    /// The latest review of this week: (who, when, note).
    this_week: Option<review::Review>,
    /// The latest review of any week: (week, who, when).
    last_any: Option<(String, String, String)>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct WeekQuery {
    #[serde(default)]
    week: Option<String>,
}

/// The Monday of the week asked for, or of last week (a review looks at a finished week).
fn week_of(asked: Option<&str>) -> Result<jiff::civil::Date, WebError> {
    match asked.filter(|w| !w.is_empty()) {
        Some(w) => w.parse::<jiff::civil::Date>().map(review::monday_of).map_err(|_| WebError::NotFound),
        None => {
            let today = today_utc();
            Ok(review::monday_of(today.checked_sub(jiff::Span::new().days(7)).unwrap_or(today)))
        }
    }
}

fn today_utc() -> jiff::civil::Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

async fn show(state: &AppState, a: &Authed, monday: jiff::civil::Date, message: Option<String>) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let rules = ui.alert_rules.clone();
    let (w, this_week, last_any) = ui
        .with_store(move |s| {
            let internal = |e: String| WebError::Internal(e);
            let w = review::summary(s.conn(), &rules, monday).map_err(internal)?;
            let this_week = review::review_of(s.conn(), monday).map_err(|e| internal(e.to_string()))?;
            let last_any = review::last_review(s.conn()).map_err(|e| internal(e.to_string()))?;
            Ok((w, this_week, last_any))
        })
        .await?;
    let shift = |days: i64| monday.checked_add(jiff::Span::new().days(days)).unwrap_or(monday).to_string();
    render(&ReviewPage { c: chrome(&ui, a), week: monday.to_string(), previous: shift(-7), next: shift(7), w, this_week, last_any, message })
}

pub(super) async fn page(State(state): State<AppState>, a: Authed, Query(q): Query<WeekQuery>) -> Result<Response, WebError> {
    let monday = week_of(q.week.as_deref())?;
    show(&state, &a, monday, None).await
}

#[derive(Debug, Deserialize)]
pub(super) struct MarkForm {
    #[serde(default)]
    week: String,
    #[serde(default)]
    note: String,
}

/// Record that the week was reviewed, with a note; audited with the note's digest.
pub(super) async fn mark(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<MarkForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let monday = week_of(Some(&f.week))?;
    let note = f.note.trim().to_owned();
    // A week that has not started has nothing to review; recording it would mark a future week
    // as done before any of its activity exists.
    let refusal = if monday > today_utc() {
        Some(format!("The week of {monday} has not started yet; only a week with activity to look at can be marked reviewed."))
    } else if note.is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        Some(format!("Write what you looked at and found (at most {MAX_NOTE_CHARS} characters)."))
    } else {
        None
    };
    if let Some(message) = refusal {
        let resp = show(&state, &a, monday, Some(message)).await;
        return resp.map(|mut r| {
            *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            r
        });
    }
    let (by, at, n) = (a.session.username.clone(), jiff::Timestamp::now().to_string(), note.clone());
    ui.with_store(move |s| review::record_review(s.conn(), monday, &by, &at, &n).map_err(|e| WebError::Internal(e.to_string())))
        .await?;
    ui.audit(
        EventKind::AdminAction,
        &a.session.username,
        json!({ "who": a.who(), "action": "activity_review", "week": monday.to_string(), "note": TextDigest::of(&note) }),
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/review?week={monday}")).into_response())
}
