//! The daily heartbeat: one message a day to each configured destination, so the clinic's
//! collector and mailbox notice when the box falls silent (a box that sends no alerts looks
//! the same as a box that is off, unless it also says, every day, that it is alive).
//!
//! The message carries counts only: alerts not yet acknowledged, the newest alert's number,
//! deliveries pending, the audit chain's head record number, and the link to the box. A failed
//! heartbeat is retried with the alerts' backoff; the next one is due a full interval after the
//! last one that was accepted. Store migration: `alert_heartbeats` (the state per destination).

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::deliver::{self, DeliveryError, PassReport};
use super::outbox::{self, Destination};
use super::{DeliveryConfig, EmailConfig};
use crate::store::Store;

pub const MIGRATION_NAME: &str = "alert heartbeats";
pub const MIGRATION_SQL: &str = "
    -- The daily heartbeat to each alert destination: when the last one was accepted (unix
    -- seconds), and the failed attempts since, with the time of the next (backoff).
    CREATE TABLE alert_heartbeats (
        destination  TEXT PRIMARY KEY CHECK (destination IN ('syslog', 'email')),
        last_sent    INTEGER,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT
    ) STRICT;
";

/// Whether a heartbeat is due at `now`: never sent, or the last accepted one is `interval`
/// seconds old; and any retry wait after a failure is over.
pub fn due(last_sent: Option<i64>, next_attempt: i64, now: i64, interval: u64) -> bool {
    now >= next_attempt && last_sent.is_none_or(|t| now.saturating_sub(t) >= interval as i64)
}

/// A destination's heartbeat state: (last accepted, failed attempts since, next attempt).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub last_sent: Option<i64>,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
}

pub fn state(conn: &Connection, d: Destination) -> rusqlite::Result<State> {
    Ok(conn
        .query_row(
            "SELECT last_sent, attempts, next_attempt, last_error FROM alert_heartbeats WHERE destination = ?1",
            [d.as_str()],
            |r| Ok(State { last_sent: r.get(0)?, attempts: r.get(1)?, next_attempt: r.get(2)?, last_error: r.get(3)? }),
        )
        .optional()?
        .unwrap_or_default())
}

fn mark_sent(conn: &Connection, d: Destination, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO alert_heartbeats (destination, last_sent, attempts, next_attempt, last_error) VALUES (?1, ?2, 0, 0, NULL)
         ON CONFLICT (destination) DO UPDATE SET last_sent = ?2, attempts = 0, next_attempt = 0, last_error = NULL",
        params![d.as_str(), now],
    )?;
    Ok(())
}

fn mark_failed(conn: &Connection, d: Destination, error: &str, next_attempt: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO alert_heartbeats (destination, attempts, next_attempt, last_error) VALUES (?1, 1, ?3, ?2)
         ON CONFLICT (destination) DO UPDATE SET attempts = attempts + 1, next_attempt = ?3, last_error = ?2",
        params![d.as_str(), error, next_attempt],
    )?;
    Ok(())
}

/// What a heartbeat says: counts and numbers, no PHI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub open_alerts: u64,
    pub newest_alert: Option<i64>,
    pub pending_deliveries: u64,
    pub audit_head: u64,
}

pub fn facts(conn: &Connection) -> rusqlite::Result<Facts> {
    Ok(Facts {
        open_alerts: outbox::unreviewed_count(conn)?,
        newest_alert: conn.query_row("SELECT max(id) FROM alerts", [], |r| r.get(0))?,
        pending_deliveries: conn.query_row("SELECT count(*) FROM alert_outbox WHERE state != 'delivered'", [], |r| r.get::<_, i64>(0))? as u64,
        audit_head: conn.query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |r| r.get::<_, i64>(0))? as u64,
    })
}

fn text(f: &Facts, interval: u64, admin_url: &str) -> String {
    let newest = f.newest_alert.map_or("none".to_string(), |n| n.to_string());
    format!(
        "heartbeat: the Wardbox is running; alerts not yet acknowledged {}, newest alert {newest}, deliveries pending {}, audit records {}; next heartbeat within {} h; box: {}",
        f.open_alerts,
        f.pending_deliveries,
        f.audit_head,
        interval.div_ceil(3600),
        admin_url.trim_end_matches('/')
    )
}

/// RFC 5424, authpriv.info, msgid `heartbeat`.
pub fn syslog_heartbeat(f: &Facts, interval: u64, host: &str, admin_url: &str, now: &jiff::Timestamp) -> String {
    const PRI: u8 = 10 * 8 + 6;
    let at = now.round(jiff::Unit::Microsecond).map(|t| t.to_string()).unwrap_or_else(|_| "-".into());
    format!("<{PRI}>1 {at} {host} wardbox - heartbeat - {}", text(f, interval, admin_url))
}

pub fn email_heartbeat(cfg: &EmailConfig, f: &Facts, interval: u64, admin_url: &str, now: &jiff::Timestamp) -> String {
    let date = jiff::fmt::rfc2822::to_string(&now.to_zoned(jiff::tz::TimeZone::UTC)).unwrap_or_default();
    format!(
        "From: {}\r\nTo: {}\r\nSubject: Wardbox: daily heartbeat\r\nDate: {date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n\r\nIf this message stops arriving, the box has stopped sending: check it.\r\n",
        cfg.from,
        cfg.to.join(", "),
        text(f, interval, admin_url)
    )
}

/// Send the heartbeat to each destination where one is due at `now` (unix seconds).
pub async fn send_due(store: &Arc<Mutex<Store>>, cfg: &DeliveryConfig, now: i64) -> Result<PassReport, DeliveryError> {
    let mut report = PassReport::default();
    let interval = cfg.heartbeat_secs();
    let at = jiff::Timestamp::from_second(now).unwrap_or_default();
    for destination in cfg.destinations() {
        let (st, f) = deliver::with_store(store, move |s| Ok((state(s.conn(), destination)?, facts(s.conn())?))).await?;
        if !due(st.last_sent, st.next_attempt, now, interval) {
            continue;
        }
        let result = match destination {
            Destination::Syslog => {
                let s = cfg.syslog.as_ref().ok_or_else(|| DeliveryError::Protocol("syslog is not configured".into()))?;
                deliver::send_syslog(s, &[syslog_heartbeat(&f, interval, &deliver::hostname(), &cfg.admin_url, &at)]).await
            }
            Destination::Email => {
                let e = cfg.email.as_ref().ok_or_else(|| DeliveryError::Protocol("e-mail is not configured".into()))?;
                deliver::send_email(e, &email_heartbeat(e, &f, interval, &cfg.admin_url, &at)).await
            }
        };
        let error = result.err().map(|e| e.to_string());
        let wait = outbox::backoff(st.attempts + 1, cfg.retry_initial_secs(), cfg.retry_max_secs());
        let e2 = error.clone();
        deliver::with_store(store, move |s| match &e2 {
            None => mark_sent(s.conn(), destination, now),
            Some(e) => mark_failed(s.conn(), destination, e, now + wait as i64),
        })
        .await?;
        match error {
            None => report.delivered += 1,
            Some(e) => {
                report.failed += 1;
                report.errors.push(format!("{} heartbeat: {e}", destination.as_str()));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_due_once_an_interval_after_the_last_accepted_one() {
        assert!(due(None, 0, 1000, 86_400), "never sent");
        assert!(!due(Some(1000), 0, 1000 + 86_399, 86_400));
        assert!(due(Some(1000), 0, 1000 + 86_400, 86_400));
        assert!(!due(Some(1000), 90_000, 89_999, 86_400), "waiting after a failure");
        assert!(due(None, 90_000, 90_000, 86_400));
    }

    #[test]
    fn the_message_carries_counts_and_the_link_only() {
        let f = Facts { open_alerts: 3, newest_alert: Some(17), pending_deliveries: 1, audit_head: 4242 };
        let now: jiff::Timestamp = "2026-11-29T06:00:00Z".parse().expect("ts");
        let m = syslog_heartbeat(&f, 86_400, "wardbox1", "https://box.clinic.local/", &now);
        assert_eq!(
            m,
            "<86>1 2026-11-29T06:00:00Z wardbox1 wardbox - heartbeat - heartbeat: the Wardbox is running; alerts not yet acknowledged 3, newest alert 17, deliveries pending 1, audit records 4242; next heartbeat within 24 h; box: https://box.clinic.local"
        );
    }
}
