//! The daemon's task that reads the data volume's free space on schedule and acts on it: the
//! health (through the caller's `report`), one alert record per crossing, and the recovery
//! (open alerts acknowledged by `system`, a lifecycle record).
//!
//! The decisions are `super::level` and `super::step`; this file reads the volume and writes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::{DiskConfig, EVENT_RECOVERED, Level, RULE, Space, Step};
use crate::alerting::{outbox, workflow};
use crate::audit::{AuditEvent, AuditLog, EventKind};
use crate::store::Store;

/// What one check found, for the health.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The volume was read. `changed`: the level differs from the one reported before (the
    /// health's alert is to be replaced by `reason`, or cleared when it is `None`).
    Reading { path: String, space: Space, level: Level, reason: Option<String>, changed: bool },
    /// The volume could not be read (reported once, until it can be read again).
    Unreadable { path: String, error: String },
}

/// The free space of the filesystem holding `path`: what an unprivileged writer may still use
/// (the agent does not run as root; the filesystem's reserve is not the agent's), and its size.
pub fn read(path: &Path) -> Result<Space, String> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    let block = st.fragment_size() as u64;
    let space = Space { total_bytes: (st.blocks() as u64).saturating_mul(block), free_bytes: (st.blocks_available() as u64).saturating_mul(block) };
    if space.total_bytes == 0 {
        return Err(format!("{} reports a size of 0 bytes", path.display()));
    }
    Ok(space)
}

/// What the watch needs: the volume (the store's directory), the thresholds, the store (for
/// the alerts to acknowledge) and the audit log (the alert records).
#[derive(Debug)]
pub struct Watch {
    pub data_dir: PathBuf,
    pub config: DiskConfig,
    pub store: Arc<Mutex<Store>>,
    pub audit: AuditLog,
}

/// Check at once, then every `check_interval_secs`, until `stop` turns true.
pub async fn run(watch: Watch, report: impl Fn(Report) + Send + 'static, mut stop: watch::Receiver<bool>) {
    let Watch { data_dir, config, store, audit } = watch;
    let path = data_dir.display().to_string();
    // The level on record in the audit trail: the highest of the open alerts of an earlier run
    // (so a restart does not raise them again), else ok.
    let mut recorded = on_store(&store, open_alerts).await.map(|open| open.iter().map(|(_, level)| *level).max().unwrap_or(Level::Ok)).unwrap_or_else(|e| {
        tracing::error!("cannot read the open disk_space alerts: {e}");
        Level::Ok
    });
    // The level the health shows (`None`: nothing shown yet, or the volume was unreadable).
    let mut shown: Option<Level> = None;
    let mut unreadable = false;
    // The record of the last alert raised in this run: its recovery waits until the detector
    // has stored the alert, so that the alert it acknowledges is there.
    let mut raised_seq: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(config.check_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let reading = {
            let data_dir = data_dir.clone();
            tokio::task::spawn_blocking(move || read(&data_dir)).await.unwrap_or_else(|e| Err(format!("the disk check task failed: {e}")))
        };
        let space = match reading {
            Ok(space) => space,
            Err(error) => {
                if !unreadable {
                    report(Report::Unreadable { path: path.clone(), error });
                    unreadable = true;
                    shown = None;
                }
                continue;
            }
        };
        unreadable = false;
        let level = super::level(space, &config, shown.unwrap_or(Level::Ok));
        let changed = shown != Some(level);
        shown = Some(level);
        report(Report::Reading { path: path.clone(), space, level, reason: super::reason(&path, space, &config, level), changed });

        match super::step(recorded, level) {
            Step::Same => {}
            Step::Eased(level) => recorded = level,
            Step::Raise(level) => {
                let event = level.event().unwrap_or_default();
                let (warn, critical) = config.thresholds(space.total_bytes);
                let threshold = if level == Level::Critical { critical } else { warn };
                let detail = json!({
                    "source": "disk", "event": event, "path": path,
                    "free_bytes": space.free_bytes, "total_bytes": space.total_bytes, "free_percent": space.free_percent(),
                    "free": space.describe(), "threshold": format!("{} free", super::size(threshold)),
                });
                match audit.append(AuditEvent::new(EventKind::SecurityAlert, "system", detail)).await {
                    Ok(seq) => {
                        recorded = level;
                        raised_seq = Some(seq);
                    }
                    // Tried again at the next check: the health shows it meanwhile.
                    Err(e) => tracing::error!("cannot record the low-space alert of {path}: {e}"),
                }
            }
            Step::Recovered => {
                let note = format!("cleared: the data volume has {} at {}", space.describe(), jiff::Timestamp::now());
                let acknowledged = on_store(&store, move |conn| acknowledge_open(conn, raised_seq, &note)).await;
                match acknowledged {
                    // The detector has not stored the alert yet: again at the next check.
                    Ok(None) => continue,
                    Ok(Some(count)) => {
                        let detail = json!({
                            "source": "disk", "event": EVENT_RECOVERED, "path": path,
                            "free_bytes": space.free_bytes, "total_bytes": space.total_bytes, "free_percent": space.free_percent(),
                            "alerts_acknowledged": count,
                        });
                        match audit.append(AuditEvent::new(EventKind::Lifecycle, "system", detail)).await {
                            Ok(_) => {
                                recorded = Level::Ok;
                                raised_seq = None;
                            }
                            Err(e) => tracing::error!("cannot record the recovery of {path}: {e}"),
                        }
                    }
                    Err(e) => tracing::error!("cannot acknowledge the disk_space alerts: {e}"),
                }
            }
        }
    }
}

/// Run `f` on the store off the async threads.
async fn on_store<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let store = store.lock().map_err(|_| "store lock poisoned".to_string())?;
        f(store.conn())
    })
    .await
    .unwrap_or_else(|e| Err(format!("the store task failed: {e}")))
}

/// The `disk_space` alerts nobody acknowledged or closed: (id, the level it was raised for).
fn open_alerts(conn: &rusqlite::Connection) -> Result<Vec<(i64, Level)>, String> {
    let mut stmt = conn
        .prepare("SELECT id, alert FROM alerts WHERE rule = ?1 AND reviewed_by IS NULL AND closed_at IS NULL ORDER BY id")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([RULE], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|(id, json)| {
            let observed = serde_json::from_str::<serde_json::Value>(&json).ok().and_then(|a| a["observed"].as_str().map(str::to_owned)).unwrap_or_default();
            (id, super::level_of_observed(&observed))
        })
        .collect())
}

/// Acknowledge the open `disk_space` alerts as `system` through the alert workflow (the step
/// is recorded like a person's; closing stays a person's). `None` while the detector has not
/// yet processed the record `raised` of this run's alert.
fn acknowledge_open(conn: &rusqlite::Connection, raised: Option<u64>, note: &str) -> Result<Option<usize>, String> {
    if let Some(seq) = raised {
        let processed = outbox::processed_seq(conn).map_err(|e| e.to_string())?;
        if processed.is_none_or(|p| p < seq) {
            return Ok(None);
        }
    }
    let open = open_alerts(conn)?;
    let now = jiff::Timestamp::now().to_string();
    for (id, _) in &open {
        workflow::apply(conn, *id, &workflow::Action::Acknowledge, note, "system", &now).map_err(|e| format!("alert {id}: {e}"))?;
    }
    Ok(Some(open.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_gives_the_size_and_free_space_and_a_missing_directory_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = read(dir.path()).expect("a temporary directory can be read");
        assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes, "{space:?}");
        let missing = dir.path().join("not-mounted");
        let err = read(&missing).expect_err("a missing directory");
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }
}
