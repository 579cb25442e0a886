//! The detector fed by the audit chain, and the daemon task around it.
//!
//! At start the feed replays the whole chain from record 1: the detector is pure and
//! deterministic, so a replay rebuilds exactly the baselines and windows the live feed had
//! (docs/alerts.md says why this rather than a saved state). Alerts of records up to the stored
//! position (`alert_detector.processed_seq`) were stored before and are not raised again. The
//! position starts where the store's migration put it (`outbox::START_MIGRATION_SQL`): 0 for a
//! new box, the head for a box with history from before alerts existed, so old history rebuilds
//! baselines without raising a flood of old alerts. Then the feed follows the chain as records
//! commit (the commits of [`MIN_PASS_INTERVAL`] gathered into one pass), and polls for what
//! another process (the CLI) appended.
//!
//! The position is written with the alerts it covers, and otherwise only now and then (see
//! [`position_due`]), at the end of the replay and at stop: writing it after every record that
//! raised nothing cost every audited request a store commit's worth of waiting. A position
//! left behind by a crash is harmless: the replay judges the records after it again exactly as
//! before (the detector is deterministic), and an alert stored before is not stored twice
//! (the `alerts` table is unique on rule, subject and triggering record).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use wardbox_alerts::{Alert, AlertsConfig, Detector, Record, RecordError};

use super::DeliveryConfig;
use super::deliver;
use super::outbox;
use crate::audit::{AuditEvent, AuditLog, AuditRecord, EventKind, SELECT_RECORDS};
use crate::store::Store;

/// Records read from the store per lock of it, so the web UI is never held up for long.
const BATCH: usize = 2000;
/// How often the feed looks for records appended by another process, and for deliveries due
/// for a retry.
const POLL: Duration = Duration::from_secs(5);
/// Least time between the starts of two passes. Records commit one per audited request; a pass
/// per commit took the store's lock three times per request (reading the records, checking
/// emergency sign-in reviews, looking for unaudited alerts), which the requests then waited
/// for. Gathering the commits of this long costs an alert at most this much delay.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(100);
/// The detector's position is written at least this often while records come in that raise
/// no alert, ...
const SAVE_POSITION_EVERY: Duration = Duration::from_secs(10);
/// ... or once this many records went by since it was last written: at most that many records
/// are judged twice after a crash (about 30 ms of replay), the store is written at most once
/// per this many audited requests.
const SAVE_POSITION_RECORDS: u64 = 10_000;
/// How often the feed looks whether accounts or patients changed (a new account, an imported
/// patient), to rebuild the relations of the related-record rules.
const RELATIONS_CHECK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the alert detector's configuration is invalid: {0}")]
    Config(#[from] wardbox_alerts::ConfigError),
    #[error("the store failed: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("the audit log failed: {0}")]
    Audit(String),
    #[error("the relations between users and patients cannot be built: {0}")]
    Relations(String),
}

/// The detector and where it stands in the chain.
#[derive(Debug)]
pub struct Feed {
    detector: Detector,
    /// The last record the detector has seen (0 before the replay).
    seen: u64,
    /// Alerts of records up to here are stored already.
    stored_through: u64,
    /// The position as written in the store (`alert_detector.processed_seq`), at or behind
    /// `stored_through`, and when it was written.
    saved: u64,
    saved_at: std::time::Instant,
    destinations: Vec<outbox::Destination>,
    related: wardbox_alerts::config::RelatedRecords,
    /// The accounts and patients the relations were built from (see `relations::fingerprint`),
    /// and when that was last looked at.
    relations_of: String,
    relations_checked: std::time::Instant,
}

/// What one step did.
#[derive(Debug, Default)]
pub struct Step {
    pub records: usize,
    /// Ids of alerts stored by this step.
    pub new_alerts: Vec<i64>,
    /// Records the detector could not read (it went on past them); raised by the caller.
    pub unreadable: Vec<RecordError>,
}

impl Feed {
    /// A feed that will replay the chain from its start, raising alerts past the stored
    /// position (set by the store's migration 17; a store without one starts at the head).
    pub fn start(store: &Store, rules: &AlertsConfig, delivery: &DeliveryConfig) -> Result<Feed, FeedError> {
        let detector = Detector::new(rules)?;
        let stored_through = match outbox::processed_seq(store.conn())? {
            Some(seq) => seq,
            None => {
                let (head, _) = crate::audit::read_head(store)?;
                outbox::set_processed_seq(store.conn(), head)?;
                head
            }
        };
        let mut feed = Feed {
            detector,
            seen: 0,
            stored_through,
            saved: stored_through,
            saved_at: std::time::Instant::now(),
            destinations: delivery.destinations(),
            related: rules.related_records.clone(),
            relations_of: String::new(),
            relations_checked: std::time::Instant::now(),
        };
        feed.refresh_relations(store)?;
        Ok(feed)
    }

    /// Rebuild the relations between users and patients when accounts or patients changed.
    fn refresh_relations(&mut self, store: &Store) -> Result<(), FeedError> {
        self.relations_checked = std::time::Instant::now();
        let now = super::relations::fingerprint(store.conn())?;
        if now != self.relations_of {
            let relations = super::relations::load(store.conn(), &self.related).map_err(FeedError::Relations)?;
            self.detector.set_relations(relations);
            self.relations_of = now;
        }
        Ok(())
    }

    /// The last record the detector has seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The position as written in the store: a restart replays from the chain's start and
    /// raises alerts again only for records after it (those stored before are kept as they are).
    pub fn saved_position(&self) -> u64 {
        self.saved
    }

    /// Write the position when records went by since it was last written (at the end of the
    /// replay, and at stop).
    pub fn save_position(&mut self, store: &Store) -> Result<(), FeedError> {
        if self.stored_through > self.saved {
            outbox::set_processed_seq(store.conn(), self.stored_through)?;
            self.saved = self.stored_through;
            self.saved_at = std::time::Instant::now();
        }
        Ok(())
    }

    /// Read up to [`BATCH`] records after the last one seen, feed them to the detector, and
    /// store the alerts of records beyond the stored position with their outbox rows. The
    /// position moves with them, or on its own when [`position_due`].
    pub fn step(&mut self, store: &mut Store) -> Result<Step, FeedError> {
        if self.relations_checked.elapsed() >= RELATIONS_CHECK {
            self.refresh_relations(store)?;
        }
        let records: Vec<AuditRecord> = {
            let mut stmt = store.conn().prepare_cached(&format!("{SELECT_RECORDS} WHERE seq > ?1 ORDER BY seq LIMIT ?2"))?;
            stmt.query_map(rusqlite::params![self.seen as i64, BATCH as i64], AuditRecord::from_row)?
                .collect::<Result<_, _>>()?
        };
        // A directory sign-in creates the account or refreshes its name and postal address
        // just before its `login` record: look at the relations now, so that what the person
        // opens next is judged against them, not against those of up to 30 s ago.
        if records.iter().any(|r| r.kind == "login") {
            self.refresh_relations(store)?;
        }
        let mut step = Step { records: records.len(), ..Step::default() };
        let mut raised: Vec<Alert> = Vec::new();
        for r in &records {
            let record = Record { seq: r.seq, ts: &r.ts, kind: &r.kind, actor: &r.actor, detail: &r.detail };
            match self.detector.observe(&record) {
                Ok(alerts) if r.seq > self.stored_through => raised.extend(alerts),
                Ok(_) => {}
                Err(e) => step.unreadable.push(e),
            }
            self.seen = r.seq;
        }
        if !raised.is_empty() {
            step.new_alerts = outbox::store_alerts(store.conn_mut(), &raised, &self.destinations, self.seen)?;
            self.saved = self.seen;
            self.saved_at = std::time::Instant::now();
        }
        self.stored_through = self.stored_through.max(self.seen);
        if position_due(self.stored_through - self.saved, self.saved_at.elapsed()) {
            self.save_position(store)?;
        }
        Ok(step)
    }
}

/// Whether the detector's position, `unsaved` records behind what it has judged, should be
/// written now, `since` it was last written. Not after every record: that was a store commit
/// (an fsync, under the store's lock) per audited request.
pub fn position_due(unsaved: u64, since: Duration) -> bool {
    unsaved > 0 && (unsaved >= SAVE_POSITION_RECORDS || since >= SAVE_POSITION_EVERY)
}

/// The alert for an emergency sign-in whose own alert (`break_glass_use`, alert `id`) nobody
/// reviewed within `days`: same subject and records, so it is raised once per sign-in.
pub fn break_glass_unreviewed(id: i64, original: &Alert, days: u32, now: &jiff::Timestamp) -> Alert {
    Alert {
        rule: wardbox_alerts::Rule::BreakGlassUnreviewed,
        subject: original.subject.clone(),
        at: now.to_string(),
        threshold: format!("every emergency sign-in reviewed within {days} days"),
        observed: format!("emergency sign-in at {} (alert {id}) not reviewed after {days} days", original.at),
        seqs: original.seqs.clone(),
    }
}

/// Raise `break_glass_unreviewed` for each emergency sign-in whose alert is overdue for review
/// at `now`; returns the ids of the alerts stored (none for one raised before).
pub fn check_break_glass_reviews(store: &mut Store, rules: &AlertsConfig, delivery: &DeliveryConfig, now: jiff::Timestamp) -> Result<Vec<i64>, FeedError> {
    let days = rules.break_glass.review_within_days;
    let overdue = outbox::unreviewed_break_glass(store.conn(), now.as_second(), days)?;
    let alerts: Vec<Alert> = overdue.iter().map(|(id, a)| break_glass_unreviewed(*id, a, days, &now)).collect();
    Ok(outbox::store_agent_alerts(store.conn_mut(), &alerts, &delivery.destinations())?)
}

/// Put every stored alert whose raising is not yet audited into the audit chain: the rule,
/// whom it is about and the records it names (no PHI, like the alert itself).
pub async fn audit_raised(store: &Arc<Mutex<Store>>, audit: &AuditLog) -> Result<usize, FeedError> {
    let pending = blocking(store, |s| Ok(outbox::unaudited(s.conn())?)).await?;
    for (id, a) in &pending {
        let event = AuditEvent::new(
            EventKind::SecurityAlert,
            "system",
            json!({ "source": "alerts", "event": "alert_raised", "alert": id, "rule": a.rule.as_str(), "subject": a.subject,
                    "observed": a.observed, "records": a.seqs }),
        );
        let seq = audit.append(event).await.map_err(|e| FeedError::Audit(e.to_string()))?;
        let id = *id;
        blocking(store, move |s| Ok(outbox::set_audited(s.conn(), id, seq)?)).await?;
    }
    Ok(pending.len())
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&mut Store) -> Result<T, FeedError> + Send + 'static,
) -> Result<T, FeedError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().map_err(|_| FeedError::Audit("the store lock is poisoned".into()))?;
        f(&mut guard)
    })
    .await
    .map_err(|e| FeedError::Audit(format!("the alert task failed: {e}")))?
}

/// Feed every record up to the chain's current head through the detector.
pub async fn catch_up(feed: Feed, store: &Arc<Mutex<Store>>) -> Result<(Feed, Step), FeedError> {
    let mut total = Step::default();
    let mut feed = feed;
    loop {
        let (back, step) = blocking(store, move |s| {
            let step = feed.step(s);
            Ok((feed, step))
        })
        .await?;
        feed = back;
        let step = step?;
        let done = step.records < BATCH;
        total.records += step.records;
        total.new_alerts.extend(step.new_alerts);
        total.unreadable.extend(step.unreadable);
        if done {
            return Ok((feed, total));
        }
    }
}

/// The daemon task: replay, then follow the chain, audit each new alert, and deliver the
/// outbox with backoff, until `stop`. `raise` puts a problem on the status page (an unreadable
/// record, a store or delivery failure): the detector never stops silently.
pub async fn run(
    store: Arc<Mutex<Store>>,
    audit: AuditLog,
    rules: AlertsConfig,
    delivery: DeliveryConfig,
    raise: impl Fn(String) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    let start_store = store.clone();
    let (r2, d2) = (rules.clone(), delivery.clone());
    let started = tokio::task::spawn_blocking(move || {
        let guard = start_store.lock().map_err(|_| FeedError::Audit("the store lock is poisoned".into()))?;
        Feed::start(&guard, &r2, &d2)
    })
    .await;
    let mut feed = match started {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return raise(format!("the alert detector cannot start: {e}")),
        Err(e) => return raise(format!("the alert detector cannot start: {e}")),
    };
    let mut committed = audit.committed();
    let began = std::time::Instant::now();
    let mut replayed = false;
    loop {
        let pass_began = tokio::time::Instant::now();
        match catch_up(feed, &store).await {
            Ok((f, step)) => {
                feed = f;
                if !replayed {
                    replayed = true;
                    tracing::info!(records = feed.seen(), ms = began.elapsed().as_millis() as u64, "alert detector replayed the audit chain");
                    feed = match save_position(feed, &store).await {
                        Ok(f) => f,
                        Err(e) => return raise(format!("the alert detector stopped: {e}")),
                    };
                }
                for e in &step.unreadable {
                    raise(format!("the alert detector cannot read an audit record: {e}"));
                }
            }
            Err(e) => {
                raise(format!("the alert detector stopped: {e}"));
                return;
            }
        }
        let (r3, d3) = (rules.clone(), delivery.clone());
        if let Err(e) = blocking(&store, move |s| check_break_glass_reviews(s, &r3, &d3, jiff::Timestamp::now())).await {
            raise(format!("emergency sign-in reviews cannot be checked: {e}"));
        }
        if let Err(e) = audit_raised(&store, &audit).await {
            raise(format!("alerts cannot be audited: {e}"));
        }
        if !delivery.destinations().is_empty() {
            match deliver::deliver_due(&store, &delivery, jiff::Timestamp::now().as_second()).await {
                Ok(report) => {
                    for e in report.errors {
                        tracing::warn!("alert delivery failed, will retry: {e}");
                    }
                }
                Err(e) => raise(format!("alert delivery failed: {e}")),
            }
            match super::heartbeat::send_due(&store, &delivery, jiff::Timestamp::now().as_second()).await {
                Ok(report) => {
                    for e in report.errors {
                        tracing::warn!("alert heartbeat failed, will retry: {e}");
                    }
                }
                Err(e) => raise(format!("alert heartbeat failed: {e}")),
            }
        }
        tokio::select! {
            _ = committed.changed() => {}
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => break,
        }
        tokio::select! {
            () = tokio::time::sleep_until(pass_began + MIN_PASS_INTERVAL) => {}
            _ = stop.changed() => break,
        }
    }
    // Judge what committed before the stop and write the position, so that the next start
    // judges no record twice (harmless, but not needed). Alerts stored here are audited at the
    // next start, like those a crash leaves unaudited.
    let last = match catch_up(feed, &store).await {
        Ok((f, _)) => save_position(f, &store).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = last {
        raise(format!("the alert detector's position cannot be saved at stop: {e}"));
    }
}

/// Write the feed's position (see [`Feed::save_position`]) under the store's lock.
async fn save_position(feed: Feed, store: &Arc<Mutex<Store>>) -> Result<Feed, FeedError> {
    let (feed, saved) = blocking(store, move |s| {
        let mut feed = feed;
        let saved = feed.save_position(s);
        Ok((feed, saved))
    })
    .await?;
    saved.map(|()| feed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_is_written_every_so_many_records_or_seconds() {
        assert!(!position_due(0, Duration::from_secs(3600)), "nothing new to write");
        assert!(!position_due(1, Duration::ZERO));
        assert!(!position_due(SAVE_POSITION_RECORDS - 1, SAVE_POSITION_EVERY - Duration::from_millis(1)));
        assert!(position_due(SAVE_POSITION_RECORDS, Duration::ZERO));
        assert!(position_due(1, SAVE_POSITION_EVERY));
    }
}
