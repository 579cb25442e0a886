//! The access management page (`/admin/access`): which clinician or nurse may see which
//! patient (the grants of `rag_grants`, used when `[clinical] patient_access = "grants"`), per
//! user and per patient; granting by the patient's record id and revoking; and the quarterly
//! access review, where each user's access is confirmed or revoked as a whole and the decision
//! recorded (`access_reviews`). Administrators and auditors read it; administrators change it.
//! Every change is audited.
//!
//! Patients are shown by their number in the box (the one in every audit record's path), not
//! by name: administrators look after the box, not after patients, and see no patient content.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use rusqlite::{Connection, params};
use serde::Deserialize;
use serde_json::json;
use wardbox_rag::index;

use super::accounts::{self, Role};
use super::pages::{Chrome, chrome, render, ui_of};
use super::{AppState, Authed, WebError};
use crate::audit::EventKind;

pub const MIGRATION_NAME: &str = "quarterly access reviews";
pub const MIGRATION_SQL: &str = "
    -- The quarterly access review: each user's patient access confirmed or revoked as a whole,
    -- by whom and when, with the number of grants the user had then.
    CREATE TABLE access_reviews (
        id          INTEGER PRIMARY KEY,
        quarter     TEXT NOT NULL,              -- 2026-Q4
        username    TEXT NOT NULL,
        decision    TEXT NOT NULL CHECK (decision IN ('confirmed', 'revoked')),
        grants      INTEGER NOT NULL,
        reviewed_by TEXT NOT NULL,
        reviewed_at TEXT NOT NULL
    ) STRICT;
";

/// `2026-Q4` for a time.
pub fn quarter_of(t: jiff::Timestamp) -> String {
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
    format!("{}-Q{}", d.year(), (d.month() - 1) / 3 + 1)
}

fn internal(e: impl std::fmt::Display) -> WebError {
    WebError::Internal(e.to_string())
}

fn grants_of(conn: &Connection, username: &str) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare("SELECT patient FROM rag_grants WHERE username = ?1 ORDER BY patient")?;
    stmt.query_map([username], |r| r.get(0))?.collect()
}

/// Per patient: (patient number, users granted).
fn grants_by_patient(conn: &Connection) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare("SELECT patient, group_concat(username, ', ') FROM (SELECT patient, username FROM rag_grants ORDER BY username) GROUP BY patient ORDER BY patient")?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// This quarter's latest decision per user: (decision, who, when).
fn reviewed_this_quarter(conn: &Connection, quarter: &str, username: &str) -> rusqlite::Result<Option<(String, String, String)>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT decision, reviewed_by, reviewed_at FROM access_reviews WHERE quarter = ?1 AND username = ?2 ORDER BY id DESC LIMIT 1",
        params![quarter, username],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

#[derive(Debug)]
struct UserAccess {
    username: String,
    role: &'static str,
    patients: String,
    count: usize,
    /// "confirmed by it.admin at …" this quarter, if reviewed.
    review: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_access.html")]
struct AccessPage {
    c: Chrome,
    quarter: String,
    users: Vec<UserAccess>,
    by_patient: Vec<(i64, String)>,
    reviewed: usize,
    may_change: bool,
    message: Option<String>,
}

async fn show(state: &AppState, a: &Authed, message: Option<String>) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let quarter = quarter_of(jiff::Timestamp::now());
    let q = quarter.clone();
    let (users, by_patient) = ui
        .with_store(move |s| {
            let mut users = Vec::new();
            for u in accounts::list_users(s.conn()).map_err(internal)? {
                if !matches!(u.role, Role::Clinician | Role::Nurse) {
                    continue;
                }
                let patients = grants_of(s.conn(), &u.username).map_err(internal)?;
                let review = reviewed_this_quarter(s.conn(), &q, &u.username).map_err(internal)?.map(|(d, by, at)| format!("{d} by {by} at {at}"));
                users.push(UserAccess {
                    role: u.role.as_str(),
                    count: patients.len(),
                    patients: patients.iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
                    username: u.username,
                    review,
                });
            }
            Ok((users, grants_by_patient(s.conn()).map_err(internal)?))
        })
        .await?;
    let reviewed = users.iter().filter(|u| u.review.is_some()).count();
    render(&AccessPage { c: chrome(&ui, a), quarter, users, by_patient, reviewed, may_change: a.session.role == Role::Admin, message })
}

pub(super) async fn page(State(state): State<AppState>, a: Authed) -> Result<Response, WebError> {
    show(&state, &a, None).await
}

fn bad(resp: Result<Response, WebError>) -> Result<Response, WebError> {
    resp.map(|mut r| {
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        r
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct GrantForm {
    #[serde(default)]
    username: String,
    /// The patient's record id (MRN, FHIR Patient.id) to grant; or the patient's number to revoke.
    #[serde(default)]
    patient: String,
}

/// Is `username` a clinician or nurse account?
fn care_account(conn: &Connection, username: &str) -> Result<bool, WebError> {
    Ok(accounts::list_users(conn).map_err(internal)?.iter().any(|u| u.username == username && matches!(u.role, Role::Clinician | Role::Nurse)))
}

pub(super) async fn grant(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<GrantForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let (user, record) = (f.username.trim().to_owned(), f.patient.trim().to_owned());
    let u = user.clone();
    let owner = ui
        .with_store(move |s| {
            if !care_account(s.conn(), &u)? {
                return Ok(Err(format!("{u:?} is not a clinician or nurse account.")));
            }
            let Some(owner) = index::find_patient(s.conn(), &record).map_err(internal)? else {
                return Ok(Err("There is no patient with that record id in the index.".to_string()));
            };
            index::grant(s.conn(), &u, owner).map_err(internal)?;
            Ok(Ok(owner))
        })
        .await?;
    let owner = match owner {
        Ok(o) => o,
        Err(m) => return bad(show(&state, &a, Some(m)).await),
    };
    ui.audit(EventKind::AdminAction, &a.session.username, json!({ "who": a.who(), "action": "access_grant", "target": user, "patient": owner })).await?;
    Ok(Redirect::to("/admin/access").into_response())
}

pub(super) async fn revoke(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<GrantForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let user = f.username.trim().to_owned();
    let Ok(owner) = f.patient.trim().parse::<i64>() else {
        return bad(show(&state, &a, Some("Name the patient by their number.".into())).await);
    };
    let u = user.clone();
    let removed = ui.with_store(move |s| index::revoke(s.conn(), &u, owner).map_err(internal)).await?;
    if !removed {
        return bad(show(&state, &a, Some(format!("{user} had no grant for patient {owner}; nothing was changed."))).await);
    }
    ui.audit(EventKind::AdminAction, &a.session.username, json!({ "who": a.who(), "action": "access_revoke", "target": user, "patient": owner })).await?;
    Ok(Redirect::to("/admin/access").into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ReviewForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    decision: String,
}

/// The quarterly review of one user's access: confirmed as it is, or every grant revoked.
pub(super) async fn review(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<ReviewForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let user = f.username.trim().to_owned();
    let decision = match f.decision.as_str() {
        "confirmed" => "confirmed",
        "revoked" => "revoked",
        _ => return bad(show(&state, &a, Some("Confirm the access or revoke it.".into())).await),
    };
    let (by, at, quarter, u) = (a.session.username.clone(), jiff::Timestamp::now().to_string(), quarter_of(jiff::Timestamp::now()), user.clone());
    let q = quarter.clone();
    let grants = ui
        .with_store(move |s| {
            if !care_account(s.conn(), &u)? {
                return Ok(None);
            }
            let tx = s.conn().unchecked_transaction().map_err(internal)?;
            let grants = grants_of(&tx, &u).map_err(internal)?;
            if decision == "revoked" {
                tx.execute("DELETE FROM rag_grants WHERE username = ?1", [&u]).map_err(internal)?;
            }
            tx.execute(
                "INSERT INTO access_reviews (quarter, username, decision, grants, reviewed_by, reviewed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![q, u, decision, grants.len() as i64, by, at],
            )
            .map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(Some(grants.len()))
        })
        .await?;
    let Some(grants) = grants else {
        return bad(show(&state, &a, Some(format!("{user:?} is not a clinician or nurse account."))).await);
    };
    ui.audit(
        EventKind::AdminAction,
        &a.session.username,
        json!({ "who": a.who(), "action": "access_review", "target": user, "quarter": quarter, "decision": decision, "grants": grants }),
    )
    .await?;
    Ok(Redirect::to("/admin/access").into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn quarters() {
        let t: jiff::Timestamp = "2026-11-29T10:00:00Z".parse().expect("ts");
        assert_eq!(super::quarter_of(t), "2026-Q4");
        let t: jiff::Timestamp = "2027-03-31T23:59:59Z".parse().expect("ts");
        assert_eq!(super::quarter_of(t), "2027-Q1");
    }
}
