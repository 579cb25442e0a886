//! What happens to an alert after it is raised: acknowledged, assigned to an administrator or
//! auditor, given a disposition (false positive, policy violation, possible breach), closed.
//! Every step is recorded with who, when and a note (`alert_actions`), and audited by the
//! caller with the note as a digest. "Possible breach" starts the 60-day notification clock
//! (HIPAA §164.404: without unreasonable delay and no later than 60 days after discovery),
//! shown until the alert is closed.
//!
//! [`check`] is the pure decision; [`apply`] writes a checked step in one transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub const MIGRATION_NAME: &str = "alert workflow and activity reviews";
pub const MIGRATION_SQL: &str = "
    -- The alert's state after review: assignee, disposition, when a possible breach was
    -- declared (the start of the notification clock), who closed it and when.
    ALTER TABLE alerts ADD COLUMN assigned_to TEXT;
    ALTER TABLE alerts ADD COLUMN disposition TEXT
        CHECK (disposition IN ('false_positive', 'policy_violation', 'possible_breach'));
    ALTER TABLE alerts ADD COLUMN breach_clock_from TEXT;
    ALTER TABLE alerts ADD COLUMN closed_by TEXT;
    ALTER TABLE alerts ADD COLUMN closed_at TEXT;
    -- Every step of the workflow with its note (free text: stays here, only its digest is
    -- audited). Append-only like the audit log.
    CREATE TABLE alert_actions (
        id       INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        action   TEXT NOT NULL CHECK (action IN ('acknowledge', 'assign', 'disposition', 'close')),
        actor    TEXT NOT NULL,
        at       TEXT NOT NULL,
        value    TEXT,
        note     TEXT
    ) STRICT;
    CREATE TRIGGER alert_actions_no_update BEFORE UPDATE ON alert_actions
        BEGIN SELECT RAISE(ABORT, 'alert actions are append-only'); END;
    CREATE TRIGGER alert_actions_no_delete BEFORE DELETE ON alert_actions
        BEGIN SELECT RAISE(ABORT, 'alert actions are append-only'); END;
    -- The weekly activity review (`alerting::review`): who reviewed which week (its local
    -- Monday), when, and their note (free text: only its digest is audited).
    CREATE TABLE activity_reviews (
        id          INTEGER PRIMARY KEY,
        week        TEXT NOT NULL,
        reviewed_by TEXT NOT NULL,
        reviewed_at TEXT NOT NULL,
        note        TEXT NOT NULL
    ) STRICT;
";

/// Days from the discovery of a possible breach to the latest notification.
pub const NOTIFICATION_DAYS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    FalsePositive,
    PolicyViolation,
    PossibleBreach,
}

impl Disposition {
    pub const ALL: [Disposition; 3] = [Disposition::FalsePositive, Disposition::PolicyViolation, Disposition::PossibleBreach];

    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::FalsePositive => "false_positive",
            Disposition::PolicyViolation => "policy_violation",
            Disposition::PossibleBreach => "possible_breach",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Disposition::FalsePositive => "false positive",
            Disposition::PolicyViolation => "policy violation",
            Disposition::PossibleBreach => "possible breach",
        }
    }

    pub fn parse(s: &str) -> Option<Disposition> {
        Disposition::ALL.into_iter().find(|d| d.as_str() == s || d.label() == s)
    }
}

/// One step asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Assign(String),
    Dispose(Disposition),
    Close,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Assign(_) => "assign",
            Action::Dispose(_) => "disposition",
            Action::Close => "close",
        }
    }
}

/// An alert's workflow state, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub acknowledged: bool,
    pub assigned_to: Option<String>,
    pub disposition: Option<Disposition>,
    /// When "possible breach" was first declared (RFC 3339), the start of the clock.
    pub breach_clock_from: Option<String>,
    pub closed_by: Option<String>,
    pub closed_at: Option<String>,
}

/// Why a step is refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("there is no alert {0}")]
    NoSuchAlert(i64),
    #[error("alert {0} is closed; a closed alert is not changed")]
    Closed(i64),
    #[error("alert {0} was already acknowledged")]
    AlreadyAcknowledged(i64),
    #[error("write a note saying what you found or decided (at most {max} characters)")]
    Note { max: usize },
    #[error("{0} is not an administrator or auditor account that can take an alert")]
    NotAReviewer(String),
    #[error("alert {0} has no disposition yet: say whether it was a false positive, a policy violation or a possible breach before closing it")]
    NoDisposition(i64),
}

/// Longest note accepted.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Whether `action` may be taken on an alert in `status`. `reviewers`: the accounts an alert
/// may be assigned to (administrators and auditors, not disabled).
pub fn check(id: i64, status: &Status, action: &Action, note: &str, reviewers: &[String]) -> Result<(), WorkflowError> {
    if status.closed_at.is_some() {
        return Err(WorkflowError::Closed(id));
    }
    let note_ok = !note.trim().is_empty() && note.chars().count() <= MAX_NOTE_CHARS;
    match action {
        Action::Acknowledge if status.acknowledged => Err(WorkflowError::AlreadyAcknowledged(id)),
        Action::Assign(who) if !reviewers.contains(who) => Err(WorkflowError::NotAReviewer(who.clone())),
        Action::Close if status.disposition.is_none() => Err(WorkflowError::NoDisposition(id)),
        Action::Assign(_) if note.chars().count() > MAX_NOTE_CHARS => Err(WorkflowError::Note { max: MAX_NOTE_CHARS }),
        Action::Acknowledge | Action::Dispose(_) | Action::Close if !note_ok => Err(WorkflowError::Note { max: MAX_NOTE_CHARS }),
        _ => Ok(()),
    }
}

/// The deadline of a possible breach's notification (RFC 3339 date) and the days left at `now`.
pub fn breach_deadline(clock_from: &str, now: jiff::Timestamp) -> Option<(String, i64)> {
    let from: jiff::Timestamp = clock_from.parse().ok()?;
    let due = from.checked_add(jiff::SignedDuration::from_hours(24 * NOTIFICATION_DAYS)).ok()?;
    let left = (due.as_second() - now.as_second()).div_euclid(86_400);
    Some((due.strftime("%Y-%m-%d").to_string(), left))
}

pub fn status(conn: &Connection, id: i64) -> rusqlite::Result<Option<Status>> {
    conn.query_row(
        "SELECT reviewed_by IS NOT NULL, assigned_to, disposition, breach_clock_from, closed_by, closed_at FROM alerts WHERE id = ?1",
        [id],
        |r| {
            Ok(Status {
                acknowledged: r.get(0)?,
                assigned_to: r.get(1)?,
                disposition: r.get::<_, Option<String>>(2)?.as_deref().and_then(Disposition::parse),
                breach_clock_from: r.get(3)?,
                closed_by: r.get(4)?,
                closed_at: r.get(5)?,
            })
        },
    )
    .optional()
}

/// Administrators and auditors whose accounts are enabled: who can take an alert.
pub fn reviewers(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT username FROM users WHERE role IN ('admin', 'auditor') AND disabled = 0 ORDER BY username")?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// Check and take a step, in one transaction: the alert's state and the step's record.
/// Closing an alert nobody acknowledged acknowledges it too, with the closing note.
pub fn apply(conn: &Connection, id: i64, action: &Action, note: &str, by: &str, at: &str) -> Result<Status, ApplyError> {
    // The web layer and the CLI hold the store behind a shared reference; nothing else runs a
    // transaction on this connection meanwhile (the store's lock is held).
    let tx = conn.unchecked_transaction()?;
    let current = status(&tx, id)?.ok_or(WorkflowError::NoSuchAlert(id))?;
    let reviewers = reviewers(&tx)?;
    check(id, &current, action, note, &reviewers)?;
    let note = note.trim();
    let value = match action {
        Action::Acknowledge => {
            tx.execute("UPDATE alerts SET reviewed_by = ?2, reviewed_at = ?3, review_note = ?4 WHERE id = ?1", params![id, by, at, note])?;
            None
        }
        Action::Assign(who) => {
            tx.execute("UPDATE alerts SET assigned_to = ?2 WHERE id = ?1", params![id, who])?;
            Some(who.clone())
        }
        Action::Dispose(d) => {
            tx.execute("UPDATE alerts SET disposition = ?2 WHERE id = ?1", params![id, d.as_str()])?;
            if *d == Disposition::PossibleBreach {
                // The clock starts at the first declaration and is not reset by a second one.
                tx.execute("UPDATE alerts SET breach_clock_from = coalesce(breach_clock_from, ?2) WHERE id = ?1", params![id, at])?;
            }
            Some(d.as_str().to_string())
        }
        Action::Close => {
            tx.execute(
                "UPDATE alerts SET closed_by = ?2, closed_at = ?3,
                     reviewed_by = coalesce(reviewed_by, ?2), reviewed_at = coalesce(reviewed_at, ?3), review_note = coalesce(review_note, ?4)
                 WHERE id = ?1",
                params![id, by, at, note],
            )?;
            None
        }
    };
    tx.execute(
        "INSERT INTO alert_actions (alert_id, action, actor, at, value, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, action.name(), by, at, value, (!note.is_empty()).then_some(note)],
    )?;
    let after = status(&tx, id)?.ok_or(WorkflowError::NoSuchAlert(id))?;
    tx.commit()?;
    Ok(after)
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] WorkflowError),
    #[error("the store failed: {0}")]
    Store(#[from] rusqlite::Error),
}

/// One recorded step, for the alert's page: (action, who, when, value, note).
pub type Step = (String, String, String, Option<String>, Option<String>);

pub fn history(conn: &Connection, id: i64) -> rusqlite::Result<Vec<Step>> {
    let mut stmt = conn.prepare("SELECT action, actor, at, value, note FROM alert_actions WHERE alert_id = ?1 ORDER BY id")?;
    stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect()
}

/// Open alerts declared possible breaches: (id, clock start), oldest first.
pub fn open_breaches(conn: &Connection) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare(
        "SELECT id, breach_clock_from FROM alerts WHERE disposition = 'possible_breach' AND closed_at IS NULL AND breach_clock_from IS NOT NULL ORDER BY breach_clock_from",
    )?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_checked_against_the_state() {
        let open = Status::default();
        let who = vec!["it.admin".to_string()];
        assert_eq!(check(1, &open, &Action::Acknowledge, "  ", &who), Err(WorkflowError::Note { max: MAX_NOTE_CHARS }));
        assert_eq!(check(1, &open, &Action::Acknowledge, "seen", &who), Ok(()));
        assert_eq!(check(1, &open, &Action::Assign("dr.a".into()), "", &who), Err(WorkflowError::NotAReviewer("dr.a".into())));
        assert_eq!(check(1, &open, &Action::Assign("it.admin".into()), "", &who), Ok(()));
        assert_eq!(check(1, &open, &Action::Close, "done", &who), Err(WorkflowError::NoDisposition(1)));
        let disposed = Status { disposition: Some(Disposition::FalsePositive), ..Status::default() };
        assert_eq!(check(1, &disposed, &Action::Close, "done", &who), Ok(()));
        let acked = Status { acknowledged: true, ..Status::default() };
        assert_eq!(check(1, &acked, &Action::Acknowledge, "again", &who), Err(WorkflowError::AlreadyAcknowledged(1)));
        let closed = Status { closed_at: Some("t".into()), ..disposed };
        assert_eq!(check(1, &closed, &Action::Dispose(Disposition::PossibleBreach), "x", &who), Err(WorkflowError::Closed(1)));
    }

    #[test]
    fn the_breach_clock_runs_sixty_days() {
        let now: jiff::Timestamp = "2027-01-11T09:00:00Z".parse().expect("ts");
        assert_eq!(breach_deadline("2027-01-01T10:00:00Z", now), Some(("2027-03-02".into(), 50)));
        assert_eq!(Disposition::parse("possible breach"), Some(Disposition::PossibleBreach));
        assert_eq!(Disposition::parse("breach"), None);
    }
}
