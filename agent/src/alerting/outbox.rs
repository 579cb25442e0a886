//! The alerts and their outbox in the store (migration 6), and the retry backoff.
//!
//! Every function takes a connection and does one thing in SQL; the callers decide when.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use wardbox_alerts::Alert;

/// Where an alert is delivered besides the admin page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    Syslog,
    Email,
}

impl Destination {
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Syslog => "syslog",
            Destination::Email => "email",
        }
    }
}

/// An alert as stored, with its delivery states.
#[derive(Debug, Clone, Serialize)]
pub struct StoredAlert {
    pub id: i64,
    pub alert: Alert,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<String>,
    pub review_note: Option<String>,
    /// (destination, state, attempts, last error).
    pub deliveries: Vec<(String, String, i64, Option<String>)>,
}

/// Store migration 17: the detector's starting position, set when the store is migrated. A new
/// store has an empty chain, so it starts at 0 and every record of the box's life is judged,
/// the first start's own included (a backup that fails at once, before the detector's task has
/// started, is an alert). A store that had a chain before alerts existed starts at its head, so
/// that history raises nothing. (Before, the detector took the head at its own first start, and
/// what the box recorded between its start and the detector's was never judged.)
pub const START_MIGRATION_NAME: &str = "the alert detector's starting position";
pub const START_MIGRATION_SQL: &str = "
    INSERT OR IGNORE INTO alert_detector (id, processed_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM audit;
";

/// How far the detector has stored alerts, or `None` before its first start.
pub fn processed_seq(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.query_row("SELECT processed_seq FROM alert_detector WHERE id = 1", [], |r| r.get::<_, i64>(0))
        .optional()
        .map(|s| s.map(|s| s as u64))
}

pub fn set_processed_seq(conn: &Connection, seq: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO alert_detector (id, processed_seq) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET processed_seq = excluded.processed_seq",
        params![seq as i64],
    )?;
    Ok(())
}

/// Store alerts with one outbox row per destination, and move the detector's position to
/// `through`, in one transaction. An alert stored before (same rule, subject and triggering
/// record: a replay after a crash) is left as it is. Returns the ids of the new ones.
pub fn store_alerts(conn: &mut Connection, alerts: &[Alert], destinations: &[Destination], through: u64) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let ids = insert_alerts(&tx, alerts, destinations)?;
    set_processed_seq(&tx, through)?;
    tx.commit()?;
    Ok(ids)
}

/// Store alerts raised by the agent itself from stored state (not by the detector from a
/// record), with their outbox rows, without moving the detector's position. Same uniqueness:
/// an alert stored before is left as it is. Returns the ids of the new ones.
pub fn store_agent_alerts(conn: &mut Connection, alerts: &[Alert], destinations: &[Destination]) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let ids = insert_alerts(&tx, alerts, destinations)?;
    tx.commit()?;
    Ok(ids)
}

/// Insert the alerts not stored before, each with one outbox row per destination, inside the
/// caller's transaction; the ids of the new ones.
fn insert_alerts(tx: &rusqlite::Transaction<'_>, alerts: &[Alert], destinations: &[Destination]) -> rusqlite::Result<Vec<i64>> {
    let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO alerts (rule, subject, trigger_seq, at, alert) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    let mut outbox = tx.prepare_cached("INSERT INTO alert_outbox (alert_id, destination) VALUES (?1, ?2)")?;
    let mut ids = Vec::new();
    for a in alerts {
        let trigger = a.seqs.last().copied().unwrap_or_default();
        let json = serde_json::to_string(a).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        if insert.execute(params![a.rule.as_str(), a.subject, trigger as i64, a.at, json])? == 1 {
            let id = tx.last_insert_rowid();
            for d in destinations {
                outbox.execute(params![id, d.as_str()])?;
            }
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `break_glass_use` alerts nobody reviewed that were raised more than `days` before `now`
/// (unix seconds): (id, alert). Oldest first.
pub fn unreviewed_break_glass(conn: &Connection, now: i64, days: u32) -> rusqlite::Result<Vec<(i64, Alert)>> {
    let cutoff = jiff::Timestamp::from_second(now - i64::from(days) * 86_400).unwrap_or_default().to_string();
    let mut stmt = conn.prepare(
        "SELECT id, alert FROM alerts WHERE rule = 'break_glass_use' AND reviewed_by IS NULL AND at < ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([cutoff], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|r| r.and_then(|(id, json)| Ok((id, parse_alert(&json)?)))).collect()
}

/// Alerts whose raising is not yet in the audit chain (new ones, or left by a crash).
pub fn unaudited(conn: &Connection) -> rusqlite::Result<Vec<(i64, Alert)>> {
    let mut stmt = conn.prepare("SELECT id, alert FROM alerts WHERE audit_seq IS NULL ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|r| r.and_then(|(id, json)| Ok((id, parse_alert(&json)?)))).collect()
}

pub fn set_audited(conn: &Connection, id: i64, audit_seq: u64) -> rusqlite::Result<()> {
    conn.execute("UPDATE alerts SET audit_seq = ?2 WHERE id = ?1", params![id, audit_seq as i64])?;
    Ok(())
}

fn parse_alert(json: &str) -> rusqlite::Result<Alert> {
    serde_json::from_str(json).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// Outbox rows of `destination` that are due at `now` (unix seconds): new, or failed with
/// their retry time come. Oldest first, at most `limit`.
pub fn due(conn: &Connection, destination: Destination, now: i64, limit: usize) -> rusqlite::Result<Vec<(i64, Alert, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT a.id, a.alert, o.attempts FROM alert_outbox o JOIN alerts a ON a.id = o.alert_id
         WHERE o.destination = ?1 AND o.state IN ('new', 'failed') AND o.next_attempt <= ?2
         ORDER BY a.id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![destination.as_str(), now, limit as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
    })?;
    rows.map(|r| r.and_then(|(id, json, attempts)| Ok((id, parse_alert(&json)?, attempts)))).collect()
}

pub fn mark_delivered(conn: &Connection, id: i64, destination: Destination, at: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE alert_outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?3, last_error = NULL
         WHERE alert_id = ?1 AND destination = ?2",
        params![id, destination.as_str(), at],
    )?;
    Ok(())
}

pub fn mark_failed(conn: &Connection, id: i64, destination: Destination, error: &str, next_attempt: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE alert_outbox SET state = 'failed', attempts = attempts + 1, last_error = ?3, next_attempt = ?4
         WHERE alert_id = ?1 AND destination = ?2",
        params![id, destination.as_str(), error, next_attempt],
    )?;
    Ok(())
}

/// Seconds to wait after the `attempts`-th failed attempt (1, 2, ...): `initial`, doubled at
/// each further failure, at most `max`.
pub fn backoff(attempts: i64, initial: u64, max: u64) -> u64 {
    let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
    initial.saturating_mul(1u64 << doublings).min(max)
}

/// The newest alerts first, with their delivery states.
pub fn list(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<StoredAlert>> {
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare("SELECT id FROM alerts ORDER BY id DESC LIMIT ?1")?;
        stmt.query_map([limit as i64], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    ids.into_iter().filter_map(|id| get(conn, id).transpose()).collect()
}

pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<StoredAlert>> {
    let row = conn
        .query_row(
            "SELECT alert, reviewed_by, reviewed_at, review_note FROM alerts WHERE id = ?1",
            [id],
            |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((json, reviewed_by, reviewed_at, review_note)) = row else { return Ok(None) };
    let mut stmt = conn.prepare(
        "SELECT destination, state, attempts, last_error FROM alert_outbox WHERE alert_id = ?1 ORDER BY destination DESC",
    )?;
    let deliveries = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
    Ok(Some(StoredAlert { id, alert: parse_alert(&json)?, reviewed_by, reviewed_at, review_note, deliveries }))
}

/// How many alerts nobody has reviewed yet (the dashboard's count).
pub fn unreviewed_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM alerts WHERE reviewed_by IS NULL", [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
}

/// Mark an alert reviewed. False when there is no such alert or it was already reviewed (a
/// review is not overwritten).
pub fn review(conn: &Connection, id: i64, by: &str, at: &str, note: &str) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE alerts SET reviewed_by = ?2, reviewed_at = ?3, review_note = ?4 WHERE id = ?1 AND reviewed_by IS NULL",
        params![id, by, at, note],
    )?;
    Ok(changed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n, 30, 3600)).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(1_000_000, 30, 3600), 3600, "no overflow after many failures");
        assert_eq!(backoff(0, 30, 3600), 30);
    }
}
