//! Walk the chain and name the first broken record.

use serde::Serialize;

use super::{AuditRecord, Checkpoint, GENESIS_HASH, SELECT_RECORDS};
use crate::store::Store;

/// The first thing wrong with the chain, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "break", rename_all = "snake_case")]
pub enum ChainBreak {
    /// The record's contents do not match its hash: it was edited, or moved from elsewhere.
    Altered { seq: u64 },
    /// Records are missing between two that remain: deleted.
    Missing { after: u64, next_found: u64 },
    /// The record's hash is intact but it does not follow the record before it: records were
    /// reordered, or deleted and the rest renumbered.
    NotLinked { seq: u64 },
    /// The log ends before a checkpoint taken earlier: its tail was truncated.
    Truncated { last_present: u64, checkpoint_seq: u64 },
    /// A checkpointed record is present but has a different hash than when checkpointed.
    CheckpointMismatch { seq: u64 },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Altered { seq } => write!(f, "record {seq} was altered: its contents do not match its hash"),
            ChainBreak::Missing { after, next_found } => write!(
                f,
                "records {}..{} are missing (deleted): record {after} is followed by record {next_found}",
                after + 1,
                next_found - 1
            ),
            ChainBreak::NotLinked { seq } => write!(
                f,
                "record {seq} does not follow the record before it: records were reordered or removed"
            ),
            ChainBreak::Truncated { last_present, checkpoint_seq } => write!(
                f,
                "the log was truncated: it ends at record {last_present}, but a checkpoint vouches for record {checkpoint_seq}"
            ),
            ChainBreak::CheckpointMismatch { seq } => {
                write!(f, "record {seq} differs from the checkpoint taken of it: the chain was rewritten")
            }
        }
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: String,
    pub checkpoints_checked: usize,
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Walk every record in sequence order, then hold the result against the checkpoints.
pub fn verify_chain(store: &Store, checkpoints: &[Checkpoint]) -> rusqlite::Result<VerifyReport> {
    let mut stmt = store.conn().prepare(&format!("{SELECT_RECORDS} ORDER BY seq"))?;
    let mut rows = stmt.query([])?;
    let mut records = 0u64;
    let mut prev_seq = 0u64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut first_break = None;
    // Hashes of checkpointed records, collected during the single pass.
    let mut wanted: std::collections::BTreeMap<u64, Option<String>> =
        checkpoints.iter().map(|c| (c.seq, None)).collect();
    while let Some(row) = rows.next()? {
        let record = AuditRecord::from_row(row)?;
        records += 1;
        if let Some(slot) = wanted.get_mut(&record.seq) {
            *slot = Some(record.hash.clone());
        }
        if first_break.is_none() {
            first_break = check_link(&record, prev_seq, &prev_hash);
        }
        prev_seq = record.seq;
        prev_hash = record.hash;
    }
    if first_break.is_none() {
        first_break = check_checkpoints(checkpoints, &wanted, prev_seq);
    }
    Ok(VerifyReport {
        records,
        head_seq: prev_seq,
        head_hash: prev_hash,
        checkpoints_checked: checkpoints.len(),
        first_break,
    })
}

pub(super) fn check_link(record: &AuditRecord, prev_seq: u64, prev_hash: &str) -> Option<ChainBreak> {
    if record.seq > prev_seq + 1 {
        return Some(ChainBreak::Missing { after: prev_seq, next_found: record.seq });
    }
    if record.expected_hash() != record.hash {
        return Some(ChainBreak::Altered { seq: record.seq });
    }
    if record.prev_hash != prev_hash {
        return Some(ChainBreak::NotLinked { seq: record.seq });
    }
    None
}

pub(super) fn check_checkpoints(
    checkpoints: &[Checkpoint],
    found: &std::collections::BTreeMap<u64, Option<String>>,
    last_present: u64,
) -> Option<ChainBreak> {
    // The newest checkpoint beyond the end of the log proves truncation.
    if let Some(newest) = checkpoints.iter().map(|c| c.seq).max()
        && newest > last_present
    {
        return Some(ChainBreak::Truncated { last_present, checkpoint_seq: newest });
    }
    for c in checkpoints {
        match found.get(&c.seq) {
            Some(Some(hash)) if *hash == c.hash => {}
            _ => return Some(ChainBreak::CheckpointMismatch { seq: c.seq }),
        }
    }
    None
}
