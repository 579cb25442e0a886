//! Restore onto a replacement box: a freshly provisioned box (another TPM, so another volume
//! and store key) takes the latest snapshot with the escrowed repository key and becomes the
//! old box's successor.
//!
//! 1. The latest snapshot is restored into a scratch directory on the new box's data volume
//!    and verified like a drill: every file against the manifest, the store opens with the key
//!    it carries, the audit chain verifies against the checkpoints it carries, the row counts
//!    and the chain head match the manifest. Nothing of the box is touched before that passed.
//! 2. The restored store is re-encrypted under the **new** box's store key (`PRAGMA rekey`);
//!    the old key is not kept anywhere on the new box.
//! 3. The new box's own store (its first boot's short history) and state files the snapshot
//!    replaces are moved aside with a `.replaced-<time>` suffix, never deleted; the restored
//!    store, audit checkpoints, TLS certificate and local CA (what the clinic's workstations
//!    trust) and the update trust state take their place. The old configuration is put beside
//!    the new one as `restored-wardbox.toml` for reference: the new box keeps its own.
//! 4. The audit chain continues: a `restored_onto_replacement` record is appended to the
//!    restored chain (so its `prev_hash` is the restored head's hash, which it also names), a
//!    checkpoint of the new head is written, and the whole chain is verified again.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;
use wardbox_backup::{BackupRepository, Destination, RepositoryKey};

use super::stage::{STATE_DIR, STORE_FILE, STORE_KEY_FILE, UPDATE_INSTALLS_FILE, UPDATE_STATE_DIR};
use super::{RunError, RunLock, work_dir};
use crate::audit::{AuditEvent, AuditLog, EventKind};
use crate::store::{Store, StoreKey};

/// The replacement box.
#[derive(Debug)]
pub struct Replacement<'a> {
    /// Its data directory (the unlocked volume) and store file in it.
    pub data_dir: &'a Path,
    pub store_file: &'a Path,
    /// Its own store key (from its TPM-bound volume).
    pub store_key: &'a StoreKey,
    pub state_dir: &'a Path,
    /// Who restores, for the audit record (`cli:<user>`).
    pub actor: &'a str,
}

/// What the restore did: counts, ids and digests only.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaceReport {
    pub snapshot_id: String,
    pub files: usize,
    pub rows: u64,
    /// The restored chain's head, which the restore record links.
    pub restored_head_seq: u64,
    pub restored_head_hash: String,
    /// The restore record's own number.
    pub restore_record_seq: u64,
    /// What was moved aside on the new box.
    pub moved_aside: Vec<String>,
}

/// Restore the latest snapshot at `destination` onto `box_`, opened with the escrowed `key`.
pub fn restore_onto(box_: &Replacement<'_>, destination: &Destination, key: &RepositoryKey) -> Result<ReplaceReport, RunError> {
    let _lock = RunLock::acquire(box_.data_dir, "restore onto a replacement box")?;
    let scratch = work_dir(box_.data_dir, "replace");
    let _ = std::fs::remove_dir_all(&scratch);
    let result = restore_verified(box_, destination, key, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |e| RunError::Restore(format!("{}: {e}", what.display()))
}

/// Brings the restored file or directory `from` (in the scratch directory on the data volume)
/// beside its place `to` as `<to>.restoring`, on `to`'s file system: a rename when both are on
/// one file system, else a copy, synced, and the scratch copy removed. The box's state
/// directory is its own small partition, not the data volume (found by the qemu restore
/// scenario: a plain rename failed with "Invalid cross-device link" half-way through the
/// restore). None when the snapshot holds no `from`.
fn bring_beside(from: &Path, to: &Path) -> Result<Option<PathBuf>, RunError> {
    if !from.exists() {
        return Ok(None);
    }
    let beside = PathBuf::from(format!("{}.restoring", to.display()));
    if beside.is_dir() {
        std::fs::remove_dir_all(&beside).map_err(io(&beside))?;
    } else if beside.exists() {
        std::fs::remove_file(&beside).map_err(io(&beside))?;
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    match std::fs::rename(from, &beside) {
        Ok(()) => return Ok(Some(beside)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {}
        Err(e) => return Err(io(from)(e)),
    }
    copy_synced(from, &beside)?;
    if let Some(parent) = beside.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
    }
    if from.is_dir() {
        std::fs::remove_dir_all(from).map_err(io(from))?;
    } else {
        std::fs::remove_file(from).map_err(io(from))?;
    }
    Ok(Some(beside))
}

/// Copies a file, or a directory of files and directories, with their permission bits, each
/// file synced. Anything else (a link, a device) is an error: a snapshot of the box holds none.
fn copy_synced(from: &Path, to: &Path) -> Result<(), RunError> {
    let meta = std::fs::symlink_metadata(from).map_err(io(from))?;
    if meta.is_file() {
        std::fs::copy(from, to).map_err(io(from))?;
        std::fs::File::open(to).and_then(|f| f.sync_all()).map_err(io(to))?;
    } else if meta.is_dir() {
        std::fs::create_dir(to).map_err(io(to))?;
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            copy_synced(&entry.path(), &to.join(entry.file_name()))?;
        }
        std::fs::File::open(to).and_then(|d| d.sync_all()).map_err(io(to))?;
    } else {
        return Err(RunError::Restore(format!("{}: not a file or a directory; a restored snapshot holds only those", from.display())));
    }
    std::fs::set_permissions(to, meta.permissions()).map_err(io(to))
}

fn restore_verified(box_: &Replacement<'_>, destination: &Destination, key: &RepositoryKey, scratch: &Path) -> Result<ReplaceReport, RunError> {
    // 1. Restore and verify, touching nothing of the box.
    let restored = BackupRepository::open(destination, key)?.restore_latest(scratch)?;
    let drill = super::drill::verify_restored(scratch, &restored.snapshot.id)?;

    // 2. Re-encrypt under the new box's key.
    let old_key_text = zeroize::Zeroizing::new(std::fs::read_to_string(scratch.join(STORE_KEY_FILE)).map_err(io(&scratch.join(STORE_KEY_FILE)))?);
    let old_key = StoreKey::from_hex(old_key_text.trim()).map_err(|e| RunError::Key(e.to_string()))?;
    let restored_store = scratch.join(STORE_FILE);
    {
        let store = Store::open_existing(&restored_store, &old_key).map_err(|e| RunError::Record(e.to_string()))?;
        store.rekey(box_.store_key).map_err(|e| RunError::Restore(format!("cannot re-encrypt the restored store: {e}")))?;
    }
    std::fs::remove_file(scratch.join(STORE_KEY_FILE)).map_err(io(&scratch.join(STORE_KEY_FILE)))?;
    drop(old_key);

    // 3. Put the restored files in their places: first each is brought beside its place (what
    // can fail, a copy onto another file system, happens before anything of the box moves),
    // then the new box's files are moved aside and the restored ones renamed in.
    let state = scratch.join(STATE_DIR);
    let update = crate::update::UpdatePaths::new(box_.data_dir);
    let mut staged = Vec::new();
    for (from, to) in [
        (restored_store, box_.store_file.to_owned()),
        (state.join("audit-checkpoints.jsonl"), box_.state_dir.join("audit-checkpoints.jsonl")),
        (state.join("tls"), box_.state_dir.join("tls")),
        (scratch.join(UPDATE_STATE_DIR), update.state_dir()),
        (scratch.join(UPDATE_INSTALLS_FILE), update.installs()),
        (scratch.join(super::stage::CONFIG_FILE), box_.state_dir.join("restored-wardbox.toml")),
    ] {
        if let Some(beside) = bring_beside(&from, &to)? {
            staged.push((beside, to));
        }
    }
    let suffix = format!("replaced-{}", jiff::Timestamp::now().as_second());
    let mut moved = Vec::new();
    // The store's write-ahead log and shared memory belong to the store they sit beside.
    for ext in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{ext}", box_.store_file.display()));
        if side.exists() {
            let aside = PathBuf::from(format!("{}.{suffix}", side.display()));
            std::fs::rename(&side, &aside).map_err(io(&side))?;
        }
    }
    for (beside, to) in staged {
        if to.exists() {
            let aside = PathBuf::from(format!("{}.{suffix}", to.display()));
            std::fs::rename(&to, &aside).map_err(io(&to))?;
            moved.push(aside.display().to_string());
        }
        std::fs::rename(&beside, &to).map_err(io(&beside))?;
    }

    // The new box's own backup key from its provisioning, if its store never adopted it: the
    // restored store brings the old box's key, which its backups keep using, so this one would
    // only be a stray secret on the volume.
    let unused_key = super::escrow::waiting_key(box_.data_dir).ok().flatten().map(|k| k.fingerprint());
    super::escrow::remove_waiting_key(box_.data_dir).map_err(|e| RunError::Key(e.to_string()))?;

    // The restored store carries the key the old box held when the snapshot was taken; if the
    // key was rotated after that snapshot, that key no longer opens the repository. The key
    // that opened it now (the one given) is the one the box backs up with from here on.
    let superseded_key = adopt_repository_key(box_, key)?;

    // 4. Continue the chain with a record linking the restored head, checkpoint, verify.
    let (log, writer) = AuditLog::start(box_.store_file, box_.store_key).map_err(|e| RunError::Record(e.to_string()))?;
    let (restored_head_seq, restored_head_hash) = {
        let store = Store::open_existing(box_.store_file, box_.store_key).map_err(|e| RunError::Record(e.to_string()))?;
        crate::audit::read_head(&store)?
    };
    let appended = log.append_blocking(AuditEvent::new(
        EventKind::Lifecycle,
        box_.actor,
        json!({
            "event": "restored_onto_replacement",
            "snapshot": drill.snapshot_id,
            "destination": destination.location(),
            "repository_key_fingerprint": key.fingerprint(),
            "restored_head_seq": restored_head_seq,
            "restored_head_hash": restored_head_hash,
            "files": drill.files,
            "rows": drill.rows,
            "moved_aside": moved,
            "unused_provisioning_key_removed": unused_key,
            "superseded_repository_key": superseded_key,
        }),
    ));
    drop(log);
    writer.join();
    let restore_record_seq = appended.map_err(|e| RunError::Restore(format!("cannot audit the restore: {e}")))?;
    let store = Store::open_existing(box_.store_file, box_.store_key).map_err(|e| RunError::Record(e.to_string()))?;
    let (head_seq, head_hash) = crate::audit::read_head(&store)?;
    let checkpoints = crate::daemon::checkpoint_log(box_.state_dir);
    checkpoints.record(head_seq, &head_hash).map_err(|e| RunError::Restore(format!("cannot checkpoint the audit chain: {e}")))?;
    let chain = crate::audit::verify_chain(&store, &checkpoints.read_all().map_err(|e| RunError::Record(e.to_string()))?)
        .map_err(|e| RunError::Record(e.to_string()))?;
    if let Some(problem) = chain.first_break {
        return Err(RunError::Restore(format!("the audit chain after the restore does not verify: {problem}")));
    }
    Ok(ReplaceReport {
        snapshot_id: drill.snapshot_id,
        files: drill.files,
        rows: drill.rows,
        restored_head_seq,
        restored_head_hash,
        restore_record_seq,
        moved_aside: moved,
    })
}

/// Make `key` (the one that opened the repository for this restore) the restored store's
/// repository key. Returns the fingerprint of the key it replaced, if the store held another
/// (one rotated away after the snapshot was taken).
fn adopt_repository_key(box_: &Replacement<'_>, key: &RepositoryKey) -> Result<Option<String>, RunError> {
    let store = Store::open_existing(box_.store_file, box_.store_key).map_err(|e| RunError::Record(e.to_string()))?;
    let held = super::stored_key(&store)?.map(|k| k.fingerprint());
    if held.as_deref() == Some(key.fingerprint().as_str()) {
        return Ok(None);
    }
    store.conn().execute(
        "INSERT OR REPLACE INTO backup_key (id, key_hex, fingerprint, created_at) VALUES (1, ?1, ?2, ?3)",
        rusqlite::params![key.to_hex().as_str(), key.fingerprint(), jiff::Timestamp::now().to_string()],
    )?;
    Ok(held)
}
