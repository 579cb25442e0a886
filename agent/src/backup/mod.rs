//! Backups of the box: what is staged, the repository key in the store, the record of every
//! run, and the restore drill. The repository format, retention and restore live in
//! `wardbox-backup`; this module knows the agent's files and its store. See `docs/backup.md`.
//!
//! - [`stage`]: a consistent online snapshot of the store (`VACUUM INTO`, still encrypted with
//!   the store key) and the files the box cannot rebuild, with a manifest of digests and counts.
//! - [`rotate`]: replace the repository key (the escrowed one) and retire the old one.
//! - [`drill`]: check a restored snapshot against its manifest: digests, the store opens, the
//!   audit chain verifies, the row counts match.
//! - [`usb`]: on a box with USB control, the USB window a run on the USB disk opens, waits in
//!   and closes.
//! - here: the key and the run records in the store (migration [`MIGRATION_SQL`]), and
//!   [`run_backup`] and [`run_drill`], which the CLI calls.

pub mod drill;
pub mod escrow;
pub mod lock;
pub mod replace;
pub mod rotate;
pub mod schedule;
pub mod service;
pub mod stage;
pub mod usb;

use std::path::{Path, PathBuf};

use rusqlite::OptionalExtension;
use wardbox_backup::{BackupRepository, Destination, RETENTION, RepositoryKey, SnapshotInfo};

use crate::store::{Store, StoreKey};

pub use drill::{DrillError, DrillReport};
pub use lock::{LockError, RunLock};
pub use stage::{Manifest, StageError};

/// The store migration that holds the repository key and the run records.
pub const MIGRATION_NAME: &str = "backup key and runs";
pub const MIGRATION_SQL: &str = "
    -- The backup repository key (one row). It opens every backup of this box, so it lives
    -- in the encrypted store, and it is escrowed on paper with the recovery key.
    CREATE TABLE backup_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        key_hex     TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  TEXT NOT NULL
    ) STRICT;
    -- Every backup and restore drill with its outcome: counts, sizes, digests or the error,
    -- never PHI. The compliance report reads the last drill.
    CREATE TABLE backup_runs (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('backup', 'drill')),
        destination TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
        snapshot_id TEXT,
        detail      TEXT NOT NULL
    ) STRICT;
";

/// Errors of a backup run, each naming its step.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Repository(#[from] wardbox_backup::BackupError),
    #[error(transparent)]
    Drill(#[from] DrillError),
    /// Another run holds the box's backup lock ([`lock`]); nothing was done.
    #[error(transparent)]
    Busy(#[from] LockError),
    #[error("the backup key in the store cannot be read: {0}")]
    Key(String),
    #[error("a backup run record in the store is unreadable: {0}")]
    Record(String),
    /// Restoring onto this box failed after the snapshot verified (`replace`).
    #[error("the restore onto this box failed: {0}")]
    Restore(String),
    #[error("store error while recording the backup: {0}")]
    Store(#[from] rusqlite::Error),
}

/// The repository key kept in the store, if one was made.
pub fn stored_key(store: &Store) -> Result<Option<RepositoryKey>, RunError> {
    let hex: Option<zeroize::Zeroizing<String>> = store
        .conn()
        .query_row("SELECT key_hex FROM backup_key WHERE id = 1", [], |r| r.get::<_, String>(0))
        .optional()?
        .map(zeroize::Zeroizing::new);
    hex.map(|h| RepositoryKey::from_hex(&h).map_err(|e| RunError::Key(e.to_string()))).transpose()
}

/// The repository key, kept in the store from its first use: the key escrowed at provisioning
/// ([`escrow`], waiting beside the store) if there is one, else a new random one. Returns whether
/// a new one was made now, so the caller can tell the operator to escrow it (an adopted key is
/// on the provisioning sheet already).
pub fn key_or_create(store: &Store) -> Result<(RepositoryKey, bool), RunError> {
    if let Some(key) = stored_key(store)? {
        return Ok((key, false));
    }
    let data_dir = store.path().parent().unwrap_or(Path::new("."));
    let escrowed = escrow::waiting_key(data_dir).map_err(|e| RunError::Key(e.to_string()))?;
    let from_provisioning = escrowed.is_some();
    let key = match escrowed {
        Some(key) => key,
        None => RepositoryKey::generate().map_err(|e| RunError::Key(e.to_string()))?,
    };
    // INSERT OR IGNORE + read back: two first runs at once agree on one key.
    store.conn().execute(
        "INSERT OR IGNORE INTO backup_key (id, key_hex, fingerprint, created_at) VALUES (1, ?1, ?2, ?3)",
        rusqlite::params![key.to_hex().as_str(), key.fingerprint(), jiff::Timestamp::now().to_string()],
    )?;
    let kept = stored_key(store)?.ok_or_else(|| RunError::Key("the key just written is not there".into()))?;
    let ours = kept.fingerprint() == key.fingerprint();
    if from_provisioning && ours {
        // The store holds it now; the copy outside the store goes.
        escrow::remove_waiting_key(data_dir).map_err(|e| RunError::Key(e.to_string()))?;
    }
    Ok((kept, ours && !from_provisioning))
}

/// What kind of run a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Backup,
    Drill,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Drill => "drill",
        }
    }
}

/// One row of `backup_runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub kind: RunKind,
    pub destination: String,
    pub started_at: jiff::Timestamp,
    pub finished_at: jiff::Timestamp,
    pub ok: bool,
    pub snapshot_id: Option<String>,
    /// Counts, sizes and digests, or `{"error": …}`.
    pub detail: serde_json::Value,
}

/// Record a run (after it finished, whatever its outcome).
pub fn record_run(store: &Store, run: &RunRecord) -> Result<(), RunError> {
    store.conn().execute(
        "INSERT INTO backup_runs (kind, destination, started_at, finished_at, ok, snapshot_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![
            run.kind.as_str(),
            run.destination,
            run.started_at.to_string(),
            run.finished_at.to_string(),
            i64::from(run.ok),
            run.snapshot_id,
            run.detail.to_string()
        ],
    )?;
    Ok(())
}

/// The last run of `kind`, if any.
pub fn last_run(store: &Store, kind: RunKind) -> Result<Option<RunRecord>, RunError> {
    let row = store
        .conn()
        .query_row(
            "SELECT destination, started_at, finished_at, ok, snapshot_id, detail FROM backup_runs
             WHERE kind = ?1 ORDER BY id DESC LIMIT 1",
            [kind.as_str()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((destination, started, finished, ok, snapshot_id, detail)) = row else { return Ok(None) };
    Ok(Some(RunRecord {
        kind,
        destination,
        started_at: recorded_time(&started)?,
        finished_at: recorded_time(&finished)?,
        ok: ok == 1,
        snapshot_id,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    }))
}

/// The newest `limit` runs of every kind, newest first (the admin page).
pub fn recent_runs(store: &Store, limit: usize) -> Result<Vec<RunRecord>, RunError> {
    let mut stmt = store.conn().prepare(
        "SELECT kind, destination, started_at, finished_at, ok, snapshot_id, detail FROM backup_runs ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(kind, destination, started, finished, ok, snapshot_id, detail)| {
            Ok(RunRecord {
                kind: if kind == "drill" { RunKind::Drill } else { RunKind::Backup },
                destination,
                started_at: recorded_time(&started)?,
                finished_at: recorded_time(&finished)?,
                ok: ok == 1,
                snapshot_id,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}

/// When a run of `kind` last succeeded, if ever (the compliance report: a failed run after a good
/// one does not make the good one untrue, and the failure shows in its own alert).
pub fn last_success(store: &Store, kind: RunKind) -> Result<Option<jiff::Timestamp>, RunError> {
    let finished: Option<String> = store
        .conn()
        .query_row(
            "SELECT finished_at FROM backup_runs WHERE kind = ?1 AND ok = 1 ORDER BY id DESC LIMIT 1",
            [kind.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    finished.as_deref().map(recorded_time).transpose()
}

fn recorded_time(t: &str) -> Result<jiff::Timestamp, RunError> {
    t.parse().map_err(|e| RunError::Record(format!("backup_runs holds an unreadable time {t:?}: {e}")))
}

/// The last restore drill's time and outcome, for the compliance report (a drill older than
/// 90 days needs attention). `None` when no drill has ever run.
pub fn last_drill(store: &Store) -> Result<Option<RunRecord>, RunError> {
    last_run(store, RunKind::Drill)
}

/// Where a run stages and restores: on the data volume (encrypted at rest), beside the store,
/// never on the unencrypted state partition: the staging holds the store key.
pub fn work_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!(".backup-{name}"))
}

/// Everything a backup run needs from the agent.
#[derive(Debug)]
pub struct BackupInputs<'a> {
    pub store: &'a Store,
    pub store_key: &'a StoreKey,
    pub data_dir: &'a Path,
    pub state_dir: &'a Path,
    /// The configuration file in use, backed up as it is.
    pub config_file: Option<&'a Path>,
}

/// The result of a successful backup run.
#[derive(Debug, Clone)]
pub struct BackupDone {
    pub snapshot: SnapshotInfo,
    pub manifest: Manifest,
    /// SHA-256 of the manifest file, which names every file's digest.
    pub manifest_sha256: String,
    /// Whether the repository was created by this run.
    pub created_repository: bool,
    pub retention: wardbox_backup::RetentionOutcome,
}

/// Stage, back up, apply retention. The staging directory is removed in every case. The run is
/// recorded in `backup_runs` by the caller ([`record_backup`]) so a failure is recorded too.
///
/// Refused with [`RunError::Busy`] while another backup, restore or drill runs on the box.
pub fn run_backup(inputs: &BackupInputs<'_>, destination: &Destination, key: &RepositoryKey, tags: &[&str]) -> Result<BackupDone, RunError> {
    run_backup_reporting(inputs, destination, key, tags, None)
}

/// [`run_backup`], reporting the bytes backed up to `progress` (the admin page shows them).
pub fn run_backup_reporting(
    inputs: &BackupInputs<'_>,
    destination: &Destination,
    key: &RepositoryKey,
    tags: &[&str],
    progress: Option<&std::sync::Arc<wardbox_backup::RunProgress>>,
) -> Result<BackupDone, RunError> {
    let _lock = RunLock::acquire(inputs.data_dir, "backup")?;
    let staging = work_dir(inputs.data_dir, "staging");
    let result = (|| {
        // The repository first: a stick that is not mounted or a wrong key fails before the
        // store is copied.
        let (mut repo, created_repository) = BackupRepository::open_or_init_reporting(destination, key, progress)?;
        let manifest = stage::stage(
            &staging,
            &stage::StageSources {
                store: inputs.store,
                store_key: inputs.store_key,
                state_dir: inputs.state_dir,
                config_file: inputs.config_file,
                data_dir: Some(inputs.data_dir),
            },
        )?;
        let manifest_sha256 = stage::file_sha256(&staging.join(stage::MANIFEST_FILE))
            .map_err(|source| StageError::Io { path: staging.join(stage::MANIFEST_FILE), source })?;
        let snapshot = repo.backup(&staging, tags)?;
        let retention = repo.apply_retention_now(&RETENTION)?;
        Ok(BackupDone { snapshot, manifest, manifest_sha256, created_repository, retention })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Record a finished backup run, good or failed, in the store. A run refused because another
/// held the lock is not recorded: it did nothing, and the one that ran records itself.
pub fn record_backup(store: &Store, destination: &Destination, started_at: jiff::Timestamp, outcome: &Result<BackupDone, RunError>) -> Result<(), RunError> {
    if matches!(outcome, Err(RunError::Busy(_))) {
        return Ok(());
    }
    let (ok, snapshot_id, detail) = match outcome {
        Ok(done) => (true, Some(done.snapshot.id.clone()), backup_detail(done)),
        Err(e) => (false, None, serde_json::json!({ "error": e.to_string() })),
    };
    record_run(
        store,
        &RunRecord {
            kind: RunKind::Backup,
            destination: destination.location(),
            started_at,
            finished_at: jiff::Timestamp::now(),
            ok,
            snapshot_id,
            detail,
        },
    )
}

/// The audit record's detail of a backup run (`action` names who asked: the console, the page,
/// the schedule): its counts or its error, the destination and the key's fingerprint.
pub fn backup_audit_detail(action: &str, destination: &Destination, key: &RepositoryKey, outcome: &Result<BackupDone, RunError>) -> serde_json::Value {
    let mut detail = match outcome {
        Ok(done) => backup_detail(done),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    detail["action"] = serde_json::json!(action);
    detail["ok"] = serde_json::json!(outcome.is_ok());
    detail["destination"] = serde_json::json!(destination.location());
    detail["key_fingerprint"] = serde_json::json!(key.fingerprint());
    detail
}

/// The audit record's detail of a restore drill: its report or its error, and the destination.
pub fn drill_audit_detail(destination: &Destination, outcome: &Result<DrillReport, RunError>) -> serde_json::Value {
    let mut detail = match outcome {
        Ok(report) => serde_json::to_value(report).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    detail["action"] = serde_json::json!("backup_drill");
    detail["ok"] = serde_json::json!(outcome.is_ok());
    detail["destination"] = serde_json::json!(destination.location());
    detail
}

/// Counts, sizes and digests of a backup: what its run record and audit record carry.
pub fn backup_detail(done: &BackupDone) -> serde_json::Value {
    serde_json::json!({
        "snapshot": done.snapshot.id,
        "files": done.snapshot.files,
        "bytes": done.snapshot.bytes,
        "bytes_added": done.snapshot.bytes_added,
        "bytes_added_packed": done.snapshot.bytes_added_packed,
        "manifest_sha256": done.manifest_sha256,
        "store_rows": done.manifest.store.rows.values().sum::<u64>(),
        "audit_head_seq": done.manifest.store.audit_head_seq,
        "created_repository": done.created_repository,
        "snapshots_kept": done.retention.kept,
        "snapshots_forgotten": done.retention.forgotten,
    })
}

/// Restore the latest snapshot into a scratch directory on the data volume, check it against
/// its manifest (digests, the store opens, the audit chain verifies, row counts match), remove
/// the scratch directory, and return the report. Recording is the caller's ([`record_drill`]).
///
/// Refused with [`RunError::Busy`] while another backup, restore or drill runs on the box.
pub fn run_drill(data_dir: &Path, destination: &Destination, key: &RepositoryKey) -> Result<DrillReport, RunError> {
    run_drill_reporting(data_dir, destination, key, None)
}

/// [`run_drill`], reporting the bytes read and restored to `progress`.
pub fn run_drill_reporting(
    data_dir: &Path,
    destination: &Destination,
    key: &RepositoryKey,
    progress: Option<&std::sync::Arc<wardbox_backup::RunProgress>>,
) -> Result<DrillReport, RunError> {
    let _lock = RunLock::acquire(data_dir, "drill")?;
    let scratch = work_dir(data_dir, "drill");
    let _ = std::fs::remove_dir_all(&scratch);
    let result = (|| {
        let mut repo = BackupRepository::open_reporting(destination, key, progress)?;
        let restored = repo.restore_latest(&scratch)?;
        Ok(drill::verify_restored(&scratch, &restored.snapshot.id)?)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Record a drill, good or failed (not one refused by the lock, see [`record_backup`]).
pub fn record_drill(store: &Store, destination: &Destination, started_at: jiff::Timestamp, outcome: &Result<DrillReport, RunError>) -> Result<(), RunError> {
    if matches!(outcome, Err(RunError::Busy(_))) {
        return Ok(());
    }
    let (ok, snapshot_id, detail) = match outcome {
        Ok(report) => (true, Some(report.snapshot_id.clone()), serde_json::to_value(report).unwrap_or_default()),
        Err(e) => (false, None, serde_json::json!({ "error": e.to_string() })),
    };
    record_run(
        store,
        &RunRecord {
            kind: RunKind::Drill,
            destination: destination.location(),
            started_at,
            finished_at: jiff::Timestamp::now(),
            ok,
            snapshot_id,
            detail,
        },
    )
}
