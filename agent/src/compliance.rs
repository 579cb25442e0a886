//! Attestations and waivers for the compliance report, kept in the encrypted store (migration 5).
//!
//! The administrative and physical checklist items cannot be observed by the box: a named person
//! vouches for each (who, when, which document, valid until when). A waiver is an accepted
//! exception to a waivable item (approver, justification, expiry). Both are entered by an admin
//! (`wardbox report attest|waive`) and read by every report; the checklist decides what they are
//! worth (an expired attestation needs attention, a waiver applies only to waivable items).
//!
//! Bad input is refused here with an error naming the problem and nothing is written. The texts
//! (document, justification) stay in the encrypted store; audit records carry only their digest.

use jiff::Timestamp;
use rusqlite::Connection;
use wardbox_report::facts::{Attestation, Waiver};

/// Longest document name or justification kept.
pub const MAX_TEXT_CHARS: usize = 500;

/// Why an attestation or waiver was refused.
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    #[error("`{0}` is not a checklist item that takes an attestation (administrative and physical items the box cannot observe do; measured items, and the activity and access reviews the box records itself, are never attested)")]
    NotAttestable(String),
    #[error("`{0}` cannot be waived: only USB storage, directory sign-in, visitor log, environment and UPS can")]
    NotWaivable(String),
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {MAX_TEXT_CHARS} characters")]
    TooLong { field: &'static str },
    #[error("{field} ({at}) is not in the future")]
    NotInFuture { field: &'static str, at: Timestamp },
    #[error("the store could not be read or written: {0}")]
    Store(#[from] rusqlite::Error),
}

fn text(field: &'static str, value: &str) -> Result<String, ComplianceError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ComplianceError::Empty { field });
    }
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(ComplianceError::TooLong { field });
    }
    Ok(value.to_string())
}

fn future(field: &'static str, at: Timestamp, now: Timestamp) -> Result<Timestamp, ComplianceError> {
    if at <= now { Err(ComplianceError::NotInFuture { field, at }) } else { Ok(at) }
}

/// Record an attestation made now by `attested_by`.
pub fn attest(
    conn: &Connection,
    item: &str,
    attested_by: &str,
    document: &str,
    valid_until: Timestamp,
    now: Timestamp,
) -> Result<Attestation, ComplianceError> {
    if !wardbox_report::checklist::is_attestation_item(item) {
        return Err(ComplianceError::NotAttestable(item.to_string()));
    }
    let a = Attestation {
        item: item.to_string(),
        attested_by: text("the person attesting", attested_by)?,
        attested_at: now,
        document: text("the document", document)?,
        valid_until: future("valid until", valid_until, now)?,
    };
    conn.execute(
        "INSERT INTO report_attestations (item, attested_by, attested_at, document, valid_until) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![a.item, a.attested_by, a.attested_at.to_string(), a.document, a.valid_until.to_string()],
    )?;
    Ok(a)
}

/// Record a waiver approved now by `approver`.
pub fn waive(
    conn: &Connection,
    item: &str,
    approver: &str,
    justification: &str,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<Waiver, ComplianceError> {
    if !wardbox_report::checklist::is_waivable_item(item) {
        return Err(ComplianceError::NotWaivable(item.to_string()));
    }
    let w = Waiver {
        item: item.to_string(),
        approver: text("the approver", approver)?,
        justification: text("the justification", justification)?,
        approved_at: now,
        expires_at: future("the expiry", expires_at, now)?,
    };
    conn.execute(
        "INSERT INTO report_waivers (item, approver, justification, approved_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![w.item, w.approver, w.justification, w.approved_at.to_string(), w.expires_at.to_string()],
    )?;
    Ok(w)
}

fn time(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Timestamp> {
    let s: String = row.get(i)?;
    s.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

/// Every attestation on record, oldest first (the checklist takes the newest per item).
pub fn attestations(conn: &Connection) -> Result<Vec<Attestation>, ComplianceError> {
    let mut stmt = conn.prepare("SELECT item, attested_by, attested_at, document, valid_until FROM report_attestations ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Attestation { item: r.get(0)?, attested_by: r.get(1)?, attested_at: time(r, 2)?, document: r.get(3)?, valid_until: time(r, 4)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every waiver on record, oldest first (expired ones too: the checklist says why they no
/// longer apply).
pub fn waivers(conn: &Connection) -> Result<Vec<Waiver>, ComplianceError> {
    let mut stmt = conn.prepare("SELECT item, approver, justification, approved_at, expires_at FROM report_waivers ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Waiver { item: r.get(0)?, approver: r.get(1)?, justification: r.get(2)?, approved_at: time(r, 3)?, expires_at: time(r, 4)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A date as typed at the console: `YYYY-MM-DD` (the end of that day, UTC) or an RFC 3339 time.
pub fn parse_until(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let date: jiff::civil::Date = s.parse().map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD) or a time (RFC 3339)"))?;
    date.at(23, 59, 59, 0)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreKey};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open_or_create(&dir.path().join("store.db"), &StoreKey::random()).expect("store");
        store.migrate().expect("migrate");
        (dir, store)
    }

    fn now() -> Timestamp {
        "2026-11-29T10:00:00Z".parse().expect("time")
    }

    #[test]
    fn attestations_and_waivers_are_kept_and_read_back() {
        let (_dir, store) = store();
        let until = parse_until("2027-11-29").expect("date");
        assert_eq!(until.to_string(), "2027-11-29T23:59:59Z");
        let a = attest(store.conn(), "admin-training", "pm.jones", "Training log 2026, binder B", until, now()).expect("attest");
        let w = waive(store.conn(), "physical-usb-storage", "dr.owner", "updates by USB stick", until, now()).expect("waive");
        assert_eq!(attestations(store.conn()).expect("read"), vec![a]);
        assert_eq!(waivers(store.conn()).expect("read"), vec![w]);
    }

    #[test]
    fn bad_input_is_refused_naming_the_problem_and_nothing_is_written() {
        let (_dir, store) = store();
        let until = parse_until("2027-01-01").expect("date");
        let past = parse_until("2026-01-01").expect("date");
        let cases: Vec<(Result<(), ComplianceError>, &str)> = vec![
            (attest(store.conn(), "access-automatic-logoff", "pm.jones", "doc", until, now()).map(drop), "never attested"),
            (attest(store.conn(), "admin-training", "pm.jones", "  ", until, now()).map(drop), "the document is empty"),
            (attest(store.conn(), "admin-training", "pm.jones", "doc", past, now()).map(drop), "not in the future"),
            (attest(store.conn(), "admin-training", "", "doc", until, now()).map(drop), "the person attesting is empty"),
            (attest(store.conn(), "admin-training", "pm.jones", &"x".repeat(501), until, now()).map(drop), "longer than 500"),
            (waive(store.conn(), "admin-training", "dr.owner", "why", until, now()).map(drop), "cannot be waived"),
            (waive(store.conn(), "physical-usb-storage", "dr.owner", "", until, now()).map(drop), "the justification is empty"),
            (waive(store.conn(), "physical-usb-storage", "dr.owner", "why", past, now()).map(drop), "the expiry"),
        ];
        for (result, expected) in cases {
            let err = result.expect_err(expected).to_string();
            assert!(err.contains(expected), "{err} should say {expected}");
        }
        assert!(attestations(store.conn()).expect("read").is_empty());
        assert!(waivers(store.conn()).expect("read").is_empty());
        assert!(parse_until("next tuesday").expect_err("not a date").contains("not a date"));
    }
}
