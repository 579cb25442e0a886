//! Check a restored snapshot: every file matches the manifest's digest, the store snapshot
//! opens with the store key it carries, the audit chain verifies against the checkpoints it
//! carries, and the row counts and chain head match what the manifest recorded at backup time.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::stage::{self, MANIFEST_FILE, Manifest, STATE_DIR, STORE_FILE, STORE_KEY_FILE};
use crate::store::{Store, StoreKey};

/// What a drill found wrong.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("the restored snapshot has no readable manifest ({path}): {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("restored file {file} is missing")]
    MissingFile { file: String },
    #[error("restored file {file} differs from the manifest (sha256 {found}, expected {expected})")]
    FileDiffers { file: String, expected: String, found: String },
    #[error("the restored store cannot be opened: {0}")]
    StoreOpen(String),
    #[error("the restored audit chain is broken: {0}")]
    ChainBroken(String),
    #[error("restored table {table} has {found} rows, the snapshot had {expected}")]
    RowCount { table: String, expected: u64, found: u64 },
    #[error("the restored audit chain ends at record {found}, the snapshot's at {expected}")]
    Head { expected: u64, found: u64 },
    #[error("cannot read the restored snapshot: {0}")]
    Io(String),
}

/// A successful drill: counts and digests only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrillReport {
    pub snapshot_id: String,
    pub files: usize,
    pub tables: usize,
    pub rows: u64,
    pub audit_records: u64,
    pub audit_head_seq: u64,
    pub checkpoints_checked: usize,
}

/// Verify a restored snapshot in `dir` (see the module comment).
pub fn verify_restored(dir: &Path, snapshot_id: &str) -> Result<DrillReport, DrillError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest: Manifest = std::fs::read(&manifest_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|reason| DrillError::Manifest { path: manifest_path.clone(), reason })?;

    // Digests before anything opens (opening a store writes to it).
    for (file, entry) in &manifest.files {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(DrillError::MissingFile { file: file.clone() });
        }
        let found = stage::file_sha256(&path).map_err(|e| DrillError::Io(e.to_string()))?;
        if found != entry.sha256 {
            return Err(DrillError::FileDiffers { file: file.clone(), expected: entry.sha256.clone(), found });
        }
    }

    let key_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(dir.join(STORE_KEY_FILE)).map_err(|e| DrillError::StoreOpen(format!("{STORE_KEY_FILE}: {e}")))?,
    );
    let key = StoreKey::from_hex(key_text.trim()).map_err(|e| DrillError::StoreOpen(format!("{STORE_KEY_FILE}: {e}")))?;
    let store = Store::open_existing(&dir.join(STORE_FILE), &key).map_err(|e| DrillError::StoreOpen(e.to_string()))?;

    let checkpoints = crate::daemon::checkpoint_log(&dir.join(STATE_DIR))
        .read_all()
        .map_err(|e| DrillError::Io(format!("audit checkpoints: {e}")))?;
    let chain = crate::audit::verify_chain(&store, &checkpoints).map_err(|e| DrillError::ChainBroken(e.to_string()))?;
    if let Some(problem) = &chain.first_break {
        return Err(DrillError::ChainBroken(problem.to_string()));
    }
    if chain.head_seq != manifest.store.audit_head_seq {
        return Err(DrillError::Head { expected: manifest.store.audit_head_seq, found: chain.head_seq });
    }

    let facts = stage::read_facts(&store).map_err(|e| DrillError::StoreOpen(e.to_string()))?;
    for (table, expected) in &manifest.store.rows {
        let found = facts.rows.get(table).copied().unwrap_or(0);
        if found != *expected {
            return Err(DrillError::RowCount { table: table.clone(), expected: *expected, found });
        }
    }
    Ok(DrillReport {
        snapshot_id: snapshot_id.to_owned(),
        files: manifest.files.len(),
        tables: facts.rows.len(),
        rows: facts.rows.values().sum(),
        audit_records: chain.records,
        audit_head_seq: chain.head_seq,
        checkpoints_checked: chain.checkpoints_checked,
    })
}
