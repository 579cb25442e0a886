//! The weekly activity review in the store: one week's audit records summarised
//! (`wardbox_alerts::review::weekly`), and who reviewed which week, when, with what note
//! (`activity_reviews`, migration "alert workflow and activity reviews"). The compliance
//! report's "information system activity review" reads [`last_review`].

use rusqlite::{Connection, OptionalExtension, params};
use wardbox_alerts::review::WeeklyReview;
use wardbox_alerts::{AlertsConfig, Record};

use crate::audit::{AuditRecord, SELECT_RECORDS};

/// The Monday of the week holding `date`.
pub fn monday_of(date: jiff::civil::Date) -> jiff::civil::Date {
    let back = i64::from(date.weekday().to_monday_zero_offset());
    date.checked_sub(jiff::Span::new().days(back)).unwrap_or(date)
}

/// The week's bounds in UTC (RFC 3339), from the clinic's local Monday 00:00 to the next.
pub fn week_bounds(monday: jiff::civil::Date, utc_offset_minutes: i32) -> (String, String) {
    let start = monday.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).unwrap_or_default();
    let start = start.checked_sub(jiff::SignedDuration::from_mins(i64::from(utc_offset_minutes))).unwrap_or(start);
    let end = start.checked_add(jiff::SignedDuration::from_hours(7 * 24)).unwrap_or(start);
    (start.to_string(), end.to_string())
}

/// Summarise the week starting on local `monday`.
pub fn summary(conn: &Connection, rules: &AlertsConfig, monday: jiff::civil::Date) -> Result<WeeklyReview, String> {
    let (from, to) = week_bounds(monday, rules.clinic_hours.utc_offset_minutes);
    // The audit writer stores timestamps as RFC 3339 UTC with a `Z`, so they order as text.
    let records: Vec<AuditRecord> = {
        let mut stmt = conn.prepare(&format!("{SELECT_RECORDS} WHERE ts >= ?1 AND ts < ?2 ORDER BY seq")).map_err(|e| e.to_string())?;
        stmt.query_map(params![from, to], AuditRecord::from_row)
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(|e| e.to_string())?
    };
    wardbox_alerts::review::weekly(
        rules,
        records.iter().map(|r| Record { seq: r.seq, ts: &r.ts, kind: &r.kind, actor: &r.actor, detail: &r.detail }),
    )
    .map_err(|e| e.to_string())
}

/// A review of a week: (reviewer, when, note).
pub type Review = (String, String, String);

pub fn record_review(conn: &Connection, monday: jiff::civil::Date, by: &str, at: &str, note: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO activity_reviews (week, reviewed_by, reviewed_at, note) VALUES (?1, ?2, ?3, ?4)",
        params![monday.to_string(), by, at, note],
    )?;
    Ok(())
}

/// The latest review of this week, if any.
pub fn review_of(conn: &Connection, monday: jiff::civil::Date) -> rusqlite::Result<Option<Review>> {
    conn.query_row(
        "SELECT reviewed_by, reviewed_at, note FROM activity_reviews WHERE week = ?1 ORDER BY id DESC LIMIT 1",
        [monday.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

/// The latest review of any week: (week's Monday, reviewer, when).
pub fn last_review(conn: &Connection) -> rusqlite::Result<Option<(String, String, String)>> {
    conn.query_row("SELECT week, reviewed_by, reviewed_at FROM activity_reviews ORDER BY id DESC LIMIT 1", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_the_clinics_monday() {
        let d: jiff::civil::Date = "2026-11-26".parse().expect("date");
        assert_eq!(monday_of(d).to_string(), "2026-11-23");
        let (from, to) = week_bounds(monday_of(d), 60);
        assert_eq!((from.as_str(), to.as_str()), ("2026-11-22T23:00:00Z", "2026-11-29T23:00:00Z"));
    }
}
