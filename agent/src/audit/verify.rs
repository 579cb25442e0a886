//! Walk the chain and name the first broken record.

use serde::Serialize;

use super::walk::{Parallelism, Walk, walk_rows};
use super::{Checkpoint, GENESIS_HASH, SELECT_RECORDS};
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
///
/// The records' hashes are recomputed on every core and their links checked in order
/// ([`super::walk`]); the first broken record named is the one a walk one record at a time
/// would name.
pub fn verify_chain(store: &Store, checkpoints: &[Checkpoint]) -> rusqlite::Result<VerifyReport> {
    verify_chain_with(store, checkpoints, Parallelism::of_this_machine())
}

pub(super) fn verify_chain_with(
    store: &Store,
    checkpoints: &[Checkpoint],
    parallelism: Parallelism,
) -> rusqlite::Result<VerifyReport> {
    let mut stmt = store.conn().prepare(&format!("{SELECT_RECORDS} ORDER BY seq"))?;
    let start = Walk::after(0, GENESIS_HASH, checkpoints.iter().map(|c| c.seq));
    let walk = walk_rows(stmt.query([])?, start, parallelism)?;
    let first_break = walk.first_break.or_else(|| check_checkpoints(checkpoints, &walk.checkpointed, walk.prev_seq));
    Ok(VerifyReport {
        records: walk.walked,
        head_seq: walk.prev_seq,
        head_hash: walk.prev_hash,
        checkpoints_checked: checkpoints.len(),
        first_break,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{chain, tamper};
    use crate::audit::read_head;

    /// Batches of a few records over several threads, so a 40-record chain from the real
    /// writer spans many batches.
    const SMALL_BATCHES: Parallelism = Parallelism { batch_records: 4, hashing_threads: 3 };

    #[test]
    fn small_batches_walk_a_real_chain_to_its_head() {
        let (_dir, store, _path, _key) = chain(40);
        let (seq, hash) = read_head(&store).expect("head");
        let checkpoint = Checkpoint { seq, hash: hash.clone(), taken_at: "2026-11-29T10:00:00Z".into() };
        let report = verify_chain_with(&store, &[checkpoint], SMALL_BATCHES).expect("verify");
        assert_eq!((report.records, report.head_seq, report.head_hash, report.first_break), (40, 40, hash, None));
    }

    #[test]
    fn small_batches_name_the_first_of_two_edited_records() {
        let (_dir, store, _path, _key) = chain(40);
        tamper(&store, r#"UPDATE audit SET detail = '{"n":"edited"}' WHERE seq IN (9, 30)"#);
        let report = verify_chain_with(&store, &[], SMALL_BATCHES).expect("verify");
        assert_eq!(report.first_break, Some(ChainBreak::Altered { seq: 9 }));
        assert_eq!((report.records, report.head_seq), (40, 40), "the walk still reads to the head");
    }

    /// A field that is not UTF-8 text fails the walk with the error reading it as a record
    /// gives (the table is STRICT, so text is all a field can hold).
    #[test]
    fn a_field_that_is_not_utf8_fails_as_reading_the_record_does() {
        let (_dir, store, _path, _key) = chain(12);
        tamper(&store, "UPDATE audit SET actor = CAST(x'ff00' AS TEXT) WHERE seq = 6");
        let reading = store
            .conn()
            .query_row(&format!("{SELECT_RECORDS} WHERE seq = 6"), [], super::super::AuditRecord::from_row)
            .expect_err("not UTF-8");
        let walking = verify_chain_with(&store, &[], SMALL_BATCHES).expect_err("the walk fails");
        assert_eq!(walking.to_string(), reading.to_string());
    }

    #[test]
    fn small_batches_catch_a_truncated_tail_by_its_checkpoint() {
        let (_dir, store, _path, _key) = chain(40);
        let (seq, hash) = read_head(&store).expect("head");
        let checkpoint = Checkpoint { seq, hash, taken_at: "2026-11-29T10:00:00Z".into() };
        tamper(&store, "DELETE FROM audit WHERE seq = 40");
        let report = verify_chain_with(&store, &[checkpoint], SMALL_BATCHES).expect("verify");
        assert_eq!(report.first_break, Some(ChainBreak::Truncated { last_present: 39, checkpoint_seq: 40 }));
    }
}
