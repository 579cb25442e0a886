//! The box's backups as the running agent does them: the nightly schedule, "back up now" and
//! "run a drill" from the admin page, the escrow sheet and the key's rotation. Each run goes through the same
//! functions as `wardbox backup` ([`super::run_backup`], [`super::run_drill`]), is recorded in
//! `backup_runs` and audited.
//!
//! Alerts: a failed backup, and nights the schedule missed, are written to the audit chain as
//! `security_alert` records with `source: "backup"`; the alert detector turns each into a
//! `backup` alert with its outbox rows (delivered to the clinic's collector and relay like
//! every alert), and the daemon's health shows it. They carry the error about the destination
//! or the repository, never PHI. A successful backup after a failure clears them: the health
//! alert goes, and every `backup` alert nobody acknowledged yet is acknowledged by `system`
//! through the alert workflow with a note naming the snapshot that succeeded (the step is
//! recorded like a person's; closing, with a disposition, stays a person's; the clearing is
//! audited).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use wardbox_backup::Destination;

use super::rotate;
use super::schedule::{self, Decision, Nightly};
use super::usb::{self as usb_disk, DiskSession, DiskWindow};
use crate::usb::window::Purpose;
use super::{BackupDone, BackupInputs, RunError, RunKind};
use crate::alerting::workflow;
use crate::audit::{AuditEvent, AuditLog, EventKind};
use crate::store::{Store, StoreKey};
use crate::web::backups::{BackupOverview, BackupService, EscrowSheet, RotatedKey, RunRefused, RunView};

/// The alert rule the detector raises for `source: "backup"` records (`wardbox_alerts::Rule`).
pub const BACKUP_RULE: &str = "backup";
/// How often the daemon asks the schedule whether a backup is due.
pub const SCHEDULE_CHECK: Duration = Duration::from_secs(60);
/// Runs shown on the admin page.
const RUNS_SHOWN: usize = 20;

/// What a run changes about the backup alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    /// Raise one: `event` is `backup_failed` or `backup_missed`.
    Raise { event: &'static str, reason: String },
    /// Backups work again: clear what is open.
    Clear,
}

/// Pure: what a finished backup means for the alert. `missed`: scheduled nights that passed
/// without a run; `failure`: this run's error; `previous_failed`: the run before this one failed.
pub fn alert_changes(missed: u32, missed_since: Option<&str>, failure: Option<&str>, previous_failed: bool) -> Vec<AlertChange> {
    let mut changes = Vec::new();
    if missed > 0 {
        let since = missed_since.map(|s| format!(" since {s}")).unwrap_or_default();
        changes.push(AlertChange::Raise {
            event: "backup_missed",
            reason: format!(
                "{missed} scheduled nightly backup(s) did not run{since} (the box or the agent was not running at the time); a catch-up backup ran at once"
            ),
        });
    }
    match failure {
        Some(error) => changes.push(AlertChange::Raise { event: "backup_failed", reason: error.to_owned() }),
        None if previous_failed => changes.push(AlertChange::Clear),
        None => {}
    }
    changes
}

/// Called with each alert change (the daemon raises or clears its health alert).
pub type HealthHook = Arc<dyn Fn(&AlertChange) + Send + Sync>;

/// Everything a run needs from the box.
pub struct BoxBackups {
    store_path: PathBuf,
    store_key: StoreKey,
    data_dir: PathBuf,
    state_dir: PathBuf,
    config_file: Option<PathBuf>,
    destination: Option<Destination>,
    /// On the appliance a USB destination must be a mounted disk ([`schedule::ensure_mounted`]).
    usb_must_be_mounted: bool,
    /// On a box with USB control, the window a run opens for the USB disk ([`super::usb`]).
    disk_window: Option<Arc<dyn DiskWindow>>,
    nightly: Option<Nightly>,
    schedule_words: String,
    audit: AuditLog,
    /// Set once the daemon's health exists (it is made after the UI that holds this).
    health: Mutex<Option<HealthHook>>,
    /// The run this agent is doing, in words (the page's "running now"), and how far it is.
    running: Mutex<Option<String>>,
    progress: Mutex<Arc<wardbox_backup::RunProgress>>,
}

impl std::fmt::Debug for BoxBackups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxBackups").field("data_dir", &self.data_dir).field("destination", &self.destination).finish_non_exhaustive()
    }
}

/// Where the box's files are.
#[derive(Debug, Clone)]
pub struct BoxPaths {
    pub store_path: PathBuf,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    pub config_file: Option<PathBuf>,
}

impl BoxBackups {
    /// The box's backups as its configuration says; on a box with USB control a USB disk is let
    /// in through the root window helper ([`usb_disk::helper_window`]).
    pub fn new(config: &crate::config::Config, paths: BoxPaths, store_key: &StoreKey, audit: AuditLog) -> Self {
        let window = usb_disk::helper_window(config, config.backup.destination().as_ref());
        Self::with_disk_window(config, paths, store_key, audit, window)
    }

    /// [`Self::new`] with the USB window a run on the USB disk opens (`None`: the disk is
    /// mounted by other means, as on a dev box).
    pub fn with_disk_window(
        config: &crate::config::Config,
        paths: BoxPaths,
        store_key: &StoreKey,
        audit: AuditLog,
        disk_window: Option<Arc<dyn DiskWindow>>,
    ) -> Self {
        // A USB disk behind the window is let in only for a run an administrator starts, so the
        // schedule does not run for it (docs/backup.md, "The USB disk on the appliance").
        let nightly = config.backup.nightly(config.alerts.clinic_hours.utc_offset_minutes).filter(|_| disk_window.is_none());
        let schedule_words = match (&nightly, config.backup.destination()) {
            (_, None) => "none: no destination is configured".to_owned(),
            (None, Some(_)) if disk_window.is_some() => {
                format!(
                    "by hand only: the USB backup disk (ext4, labelled {}) is let in only for a backup an administrator starts (Back up now, or `wardbox backup now` at the console); plug it in first, the box opens a USB window for the run and closes it after",
                    crate::usb::policy::BACKUP_DISK_LABEL
                )
            }
            (None, Some(_)) => "off: backups run only when started by hand".to_owned(),
            (Some(n), Some(_)) => format!("nightly at {} local time, {}", config.backup.nightly_at, n.offset_words()),
        };
        Self {
            store_path: paths.store_path,
            store_key: StoreKey::from_bytes(*store_key.expose()),
            data_dir: paths.data_dir,
            state_dir: paths.state_dir,
            config_file: paths.config_file,
            destination: config.backup.destination(),
            usb_must_be_mounted: config.profile == crate::settings::Profile::Appliance,
            disk_window,
            nightly,
            schedule_words,
            audit,
            health: Mutex::new(None),
            running: Mutex::new(None),
            progress: Mutex::new(Arc::default()),
        }
    }

    /// Tell `hook` about every alert raised or cleared.
    pub fn set_health(&self, hook: HealthHook) {
        if let Ok(mut h) = self.health.lock() {
            *h = Some(hook);
        }
    }

    pub fn nightly(&self) -> Option<Nightly> {
        self.nightly
    }

    fn open_store(&self) -> Result<Store, RunError> {
        Store::open_existing(&self.store_path, &self.store_key).map_err(|e| RunError::Record(format!("cannot open the store: {e}")))
    }

    fn destination_or_refuse(&self) -> Result<Destination, RunRefused> {
        self.destination.clone().ok_or_else(|| RunRefused::NotConfigured("no backup destination is configured ([backup] usb_path or rest_url)".into()))
    }

    /// On a box with USB control, opens the window for a run on the USB disk and waits for the
    /// disk (`None` for any other destination). Refused at once, with no window opened, while
    /// another run holds the backup lock (it may be using the window).
    fn open_disk(&self, destination: &Destination, purpose: Purpose, actor: &str) -> Result<Option<DiskSession>, RunError> {
        let (Some(window), Destination::LocalDirectory(path)) = (&self.disk_window, destination) else { return Ok(None) };
        drop(super::RunLock::acquire(&self.data_dir, purpose.to_string().as_str())?);
        // The helper takes a plain user name: the page's admin, or `system`.
        let actor = actor.rsplit(':').next().unwrap_or(actor);
        usb_disk::open_disk(window.clone(), purpose, actor, path, usb_disk::DISK_WAIT).map(Some)
    }

    /// A USB destination that is an empty mount point on the appliance is refused before the
    /// run (and recorded and alerted as a failed run by the caller).
    fn check_destination(&self, destination: &Destination) -> Result<(), RunError> {
        match destination {
            Destination::LocalDirectory(path) if self.usb_must_be_mounted => Ok(schedule::ensure_mounted(path)?),
            _ => Ok(()),
        }
    }

    /// Mark a run as started (a fresh progress for it) or ended.
    fn set_running(&self, what: Option<String>) -> Arc<wardbox_backup::RunProgress> {
        let fresh: Arc<wardbox_backup::RunProgress> = Arc::default();
        if let Ok(mut p) = self.progress.lock() {
            *p = fresh.clone();
        }
        if let Ok(mut r) = self.running.lock() {
            *r = what;
        }
        fresh
    }

    /// How far the run this agent is doing is; `None` when it is doing none.
    pub fn progress_now(&self) -> Option<wardbox_backup::ProgressReading> {
        self.running.lock().ok()?.as_ref()?;
        self.progress.lock().ok().map(|p| p.read())
    }

    /// The run in progress with how far it is, in words.
    fn running_words(&self) -> Option<String> {
        let what = self.running.lock().ok().and_then(|r| r.clone())?;
        let reading = self.progress.lock().ok().map(|p| p.read());
        Some(match reading {
            Some(r) => format!("{what}; {}", progress_words(&r)),
            None => what,
        })
    }

    fn audit(&self, kind: EventKind, actor: &str, detail: serde_json::Value) -> Result<(), RunError> {
        self.audit
            .append_blocking(AuditEvent::new(kind, actor, detail))
            .map(|_| ())
            .map_err(|e| RunError::Record(format!("the audit log cannot be written: {e}")))
    }

    /// One look at the schedule at `now`: back up when it says so. `Ok(None)`: nothing due.
    pub fn nightly_step(&self, now: jiff::Timestamp) -> Result<Option<Result<BackupDone, RunError>>, RunError> {
        let Some(nightly) = self.nightly else { return Ok(None) };
        let store = self.open_store()?;
        let last = super::last_run(&store, RunKind::Backup)?;
        drop(store);
        match schedule::decide(&nightly, now, last.as_ref().map(|r| r.started_at)) {
            Decision::Wait { .. } => Ok(None),
            Decision::Run { missed, .. } => {
                let since = last.map(|r| nightly.local(r.started_at));
                Ok(Some(self.back_up_as("system", "backup_nightly", missed, since)))
            }
        }
    }

    /// Back up now, record, audit, and raise or clear the alert.
    fn back_up_as(&self, actor: &str, action: &str, missed: u32, missed_since: Option<String>) -> Result<BackupDone, RunError> {
        let Some(destination) = self.destination.clone() else {
            return Err(RunError::Record("no backup destination is configured ([backup] usb_path or rest_url)".into()));
        };
        let store = self.open_store()?;
        let (key, created_key) = super::key_or_create(&store)?;
        let previous_failed = super::last_run(&store, RunKind::Backup)?.is_some_and(|r| !r.ok);
        let started = jiff::Timestamp::now();
        let progress = self.set_running(Some(format!("backup started by {actor} at {started}")));
        let inputs = BackupInputs {
            store: &store,
            store_key: &self.store_key,
            data_dir: &self.data_dir,
            state_dir: &self.state_dir,
            config_file: self.config_file.as_deref(),
        };
        let mut disk = None;
        let outcome = self
            .open_disk(&destination, Purpose::Backup, actor)
            .and_then(|d| {
                disk = d;
                self.check_destination(&destination)
            })
            .and_then(|()| super::run_backup_reporting(&inputs, &destination, &key, &["wardbox"], Some(&progress)));
        // The window closes whatever the outcome, before the run is recorded.
        let window = disk.as_mut().map(DiskSession::close_for_audit);
        self.set_running(None);
        if matches!(outcome, Err(RunError::Busy(_))) {
            return outcome;
        }
        super::record_backup(&store, &destination, started, &outcome)?;
        let mut detail = super::backup_audit_detail(action, &destination, &key, &outcome);
        detail["key_created"] = json!(created_key);
        if let Some(window) = window {
            detail["usb_window"] = window;
        }
        self.audit(EventKind::AdminAction, actor, detail)?;
        let failure = outcome.as_ref().err().map(ToString::to_string);
        for change in alert_changes(missed, missed_since.as_deref(), failure.as_deref(), previous_failed) {
            self.apply(&store, &change, outcome.as_ref().ok())?;
        }
        outcome
    }

    fn apply(&self, store: &Store, change: &AlertChange, done: Option<&BackupDone>) -> Result<(), RunError> {
        match change {
            AlertChange::Raise { event, reason } => {
                self.audit(EventKind::SecurityAlert, "system", json!({ "source": "backup", "event": event, "reason": reason }))?;
            }
            AlertChange::Clear => {
                let snapshot = done.map(|d| d.snapshot.id.clone()).unwrap_or_default();
                let now = jiff::Timestamp::now().to_string();
                let note = format!("cleared: the backup at {now} succeeded (snapshot {snapshot})");
                // Acknowledged by `system` through the alert workflow (the step is recorded like
                // a person's); closing stays a person's, with a disposition.
                let open: Vec<i64> = store
                    .conn()
                    .prepare("SELECT id FROM alerts WHERE rule = ?1 AND reviewed_by IS NULL AND closed_at IS NULL ORDER BY id")?
                    .query_map([BACKUP_RULE], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in &open {
                    workflow::apply(store.conn(), *id, &workflow::Action::Acknowledge, &note, "system", &now)
                        .map_err(|e| RunError::Record(format!("cannot acknowledge backup alert {id}: {e}")))?;
                }
                let closed = open.len();
                self.audit(
                    EventKind::Lifecycle,
                    "system",
                    json!({ "source": "backup", "event": "backup_recovered", "snapshot": snapshot, "alerts_acknowledged": closed }),
                )?;
            }
        }
        if let Some(hook) = self.health.lock().ok().and_then(|h| h.clone()) {
            hook(change);
        }
        Ok(())
    }

    /// A restore drill, recorded and audited.
    fn drill_as(&self, actor: &str) -> Result<super::DrillReport, RunError> {
        let Some(destination) = self.destination.clone() else {
            return Err(RunError::Record("no backup destination is configured ([backup] usb_path or rest_url)".into()));
        };
        let store = self.open_store()?;
        let key = super::stored_key(&store)?.ok_or_else(|| RunError::Key("this box has no backup key yet: back up first".into()))?;
        let started = jiff::Timestamp::now();
        let progress = self.set_running(Some(format!("restore drill started by {actor} at {started}")));
        let mut disk = None;
        let outcome = self
            .open_disk(&destination, Purpose::Restore, actor)
            .and_then(|d| {
                disk = d;
                self.check_destination(&destination)
            })
            .and_then(|()| super::run_drill_reporting(&self.data_dir, &destination, &key, Some(&progress)));
        let window = disk.as_mut().map(DiskSession::close_for_audit);
        self.set_running(None);
        if matches!(outcome, Err(RunError::Busy(_))) {
            return outcome;
        }
        super::record_drill(&store, &destination, started, &outcome)?;
        let mut detail = super::drill_audit_detail(&destination, &outcome);
        if let Some(window) = window {
            detail["usb_window"] = window;
        }
        self.audit(EventKind::AdminAction, actor, detail)?;
        outcome
    }
}

impl BoxBackups {
    /// The escrow sheet of `key` (grouped as the provisioning sheet prints it).
    fn sheet_of(&self, key: &wardbox_backup::RepositoryKey) -> EscrowSheet {
        EscrowSheet {
            key_groups: super::escrow::grouped(key),
            fingerprint: key.fingerprint(),
            destination: self.destination.as_ref().map(Destination::location),
        }
    }
}

fn refusal(e: RunError) -> RunRefused {
    match e {
        RunError::Busy(b) => RunRefused::Busy(b.to_string()),
        other => RunRefused::Failed(other.to_string()),
    }
}

/// Pure: how far a run is, in words.
pub fn progress_words(r: &wardbox_backup::ProgressReading) -> String {
    match (r.step.as_str(), r.percent()) {
        ("", _) => "preparing (a consistent copy of the store)".to_owned(),
        (step, Some(pct)) => format!("{step}: {pct}% ({} of {})", size_words(r.done), size_words(r.total)),
        (step, None) => format!("{step}: {} so far", size_words(r.done)),
    }
}

fn size_words(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes >= 1024 * 1024 { format!("{:.1} MiB", bytes as f64 / MB) } else { format!("{:.1} KiB", bytes as f64 / 1024.0) }
}

impl BackupService for BoxBackups {
    fn overview(&self) -> Result<BackupOverview, String> {
        let store = self.open_store().map_err(|e| e.to_string())?;
        let runs = super::recent_runs(&store, RUNS_SHOWN).map_err(|e| e.to_string())?;
        let last_good = super::last_success(&store, RunKind::Backup).map_err(|e| e.to_string())?;
        let last_drill = super::last_drill(&store).map_err(|e| e.to_string())?;
        let key = super::stored_key(&store).map_err(|e| e.to_string())?;
        let now = jiff::Timestamp::now();
        Ok(BackupOverview {
            destination: self.destination.as_ref().map(Destination::location),
            schedule: self.schedule_words.clone(),
            next_run: self.nightly.map(|n| n.local(n.next_after(now))),
            running: self.running_words(),
            last_good_backup: last_good.map(|t| t.to_string()),
            last_drill: last_drill.map(|d| {
                let outcome = if d.ok { "passed".to_owned() } else { format!("FAILED: {}", d.detail["error"].as_str().unwrap_or("")) };
                format!("{}: {outcome}", d.finished_at)
            }),
            key_fingerprint: key.map(|k| k.fingerprint()),
            runs: runs
                .into_iter()
                .map(|r| {
                    let d = &r.detail;
                    let size = match (r.kind, r.ok) {
                        (RunKind::Backup, true) => format!(
                            "{} ({} new)",
                            size_words(d["bytes"].as_u64().unwrap_or(0)),
                            size_words(d["bytes_added_packed"].as_u64().unwrap_or(0))
                        ),
                        _ => String::new(),
                    };
                    let detail = match (r.kind, r.ok) {
                        (_, false) => d["error"].as_str().unwrap_or("").to_owned(),
                        (RunKind::Backup, true) => format!("snapshot {}", r.snapshot_id.as_deref().unwrap_or("")),
                        (RunKind::Drill, true) => format!(
                            "snapshot {}: {} files, {} rows, audit chain intact to record {}",
                            r.snapshot_id.as_deref().unwrap_or(""),
                            d["files"],
                            d["rows"],
                            d["audit_head_seq"]
                        ),
                    };
                    RunView {
                        kind: r.kind.as_str().to_owned(),
                        started: r.started_at.to_string(),
                        finished: r.finished_at.to_string(),
                        ok: r.ok,
                        size,
                        detail,
                    }
                })
                .collect(),
        })
    }

    fn back_up(&self, actor: &str) -> Result<String, RunRefused> {
        self.destination_or_refuse()?;
        let done = self.back_up_as(actor, "backup_now", 0, None).map_err(refusal)?;
        Ok(format!(
            "snapshot {} of {} files, {}; {} new",
            done.snapshot.id,
            done.snapshot.files,
            size_words(done.snapshot.bytes),
            size_words(done.snapshot.bytes_added_packed)
        ))
    }

    fn drill(&self, actor: &str) -> Result<String, RunRefused> {
        self.destination_or_refuse()?;
        let report = self.drill_as(actor).map_err(refusal)?;
        Ok(format!(
            "snapshot {} restored, {} files match, store opens, audit chain intact ({} records), {} rows match",
            report.snapshot_id, report.files, report.audit_records, report.rows
        ))
    }

    fn escrow_sheet(&self, actor: &str) -> Result<EscrowSheet, String> {
        let store = self.open_store().map_err(|e| e.to_string())?;
        let (key, created) = super::key_or_create(&store).map_err(|e| e.to_string())?;
        // Audited before it is shown: a sheet that cannot be accounted for is not shown.
        self.audit(EventKind::AdminAction, actor, json!({ "action": "backup_key_shown", "via": "web", "key_fingerprint": key.fingerprint(), "created": created }))
            .map_err(|e| e.to_string())?;
        Ok(self.sheet_of(&key))
    }

    fn rotate_key(&self, actor: &str) -> Result<RotatedKey, RunRefused> {
        let destination = self.destination_or_refuse()?;
        let store = self.open_store().map_err(refusal)?;
        let mut disk = None;
        let outcome = self
            .open_disk(&destination, Purpose::Backup, actor)
            .and_then(|d| {
                disk = d;
                self.check_destination(&destination)
            })
            .map_err(rotate::RotateError::NotRotated)
            .and_then(|()| rotate::rotate_key(&store, &self.data_dir, &destination));
        drop(disk);
        if let Err(e) = &outcome
            && e.is_busy()
        {
            return Err(RunRefused::Busy(e.to_string()));
        }
        // Audited before the sheet is shown: a key shown must be accounted for.
        self.audit(EventKind::AdminAction, actor, rotate::rotation_audit_detail("web", &destination, &outcome)).map_err(refusal)?;
        match outcome {
            Ok((key, rotation)) => Ok(RotatedKey {
                sheet: self.sheet_of(&key),
                summary: format!(
                    "The key was rotated: this box backs up with the new key below from now on, and the old key (fingerprint {}) no longer opens the repository ({} key file(s) removed). Print this sheet and destroy the old one.",
                    rotation.old_fingerprint,
                    rotation.removed_key_ids.len()
                ),
                complete: true,
            }),
            Err(e) => match e.key_in_use() {
                // The error names the console's command; on the page the button does the same.
                Some(key) => Ok(RotatedKey {
                    sheet: self.sheet_of(key),
                    summary: format!("{e}. On this page: \"Rotate the key\" again does the same."),
                    complete: false,
                }),
                None => Err(RunRefused::Failed(e.to_string())),
            },
        }
    }
}

/// The daemon's task: every [`SCHEDULE_CHECK`], ask the schedule; back up when it says so (on
/// the blocking pool; the web UI keeps its own store connection). A run refused by the lock
/// (a backup by hand is going) is not recorded, so the next check tries again.
pub async fn run_schedule(backups: Arc<BoxBackups>, stop: watch::Receiver<bool>) {
    if backups.nightly().is_none() {
        return;
    }
    let mut tick = tokio::time::interval(SCHEDULE_CHECK);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let b = backups.clone();
                match tokio::task::spawn_blocking(move || b.nightly_step(jiff::Timestamp::now())).await {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(Ok(done)))) => tracing::info!(snapshot = %done.snapshot.id, "nightly backup done"),
                    Ok(Ok(Some(Err(RunError::Busy(e))))) => tracing::info!("nightly backup waits: {e}"),
                    Ok(Ok(Some(Err(e)))) => tracing::error!("nightly backup failed: {e}"),
                    Ok(Err(e)) => tracing::error!("the backup schedule cannot read its records: {e}"),
                    Err(e) => tracing::error!("the backup task failed: {e}"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_raises_a_success_after_it_clears_and_missed_nights_raise() {
        assert_eq!(alert_changes(0, None, None, false), []);
        assert_eq!(alert_changes(0, None, Some("the backup destination /media/b is not available"), false), [AlertChange::Raise {
            event: "backup_failed",
            reason: "the backup destination /media/b is not available".into()
        }]);
        assert_eq!(alert_changes(0, None, None, true), [AlertChange::Clear]);
        let missed = alert_changes(2, Some("2026-11-27 02:30 (UTC+01:00)"), None, false);
        assert!(matches!(&missed[..], [AlertChange::Raise { event: "backup_missed", reason }] if reason.starts_with("2 scheduled nightly backup(s) did not run since 2026-11-27 02:30")));
        // Missed and failed: both raised; nothing cleared.
        let both = alert_changes(1, None, Some("full"), true);
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|c| matches!(c, AlertChange::Raise { .. })));
    }

    #[test]
    fn progress_is_said_in_words() {
        use wardbox_backup::ProgressReading;
        let r = |step: &str, done, total| ProgressReading { step: step.into(), done, total };
        assert_eq!(progress_words(&r("", 0, 0)), "preparing (a consistent copy of the store)");
        assert_eq!(progress_words(&r("backing up", 3 << 20, 12 << 20)), "backing up: 25% (3.0 MiB of 12.0 MiB)");
        assert_eq!(progress_words(&r("restoring", 512 << 10, 0)), "restoring: 512.0 KiB so far");
    }
}
