//! Incremental verification of the chain: from the head the last intact verification reached
//! (the *anchor*) to the head now, instead of every record.
//!
//! What it checks:
//! - the anchor record is present, its contents still give its hash, and that hash is the one
//!   remembered: since every hash covers the previous one, a record before the anchor that was
//!   changed *and rehashed* (with every later record rehashed to keep the links) changes the
//!   anchor's hash and is caught here;
//! - every record after the anchor, exactly as a full walk does (contents, links, gaps);
//! - every checkpoint: those after the anchor from the walk, those before it by a point lookup
//!   whose contents must still give the checkpointed hash; a log ending before the newest
//!   checkpoint is truncated.
//!
//! What it cannot see: a record *before* the anchor edited in place while its stored hash was
//! left alone, or deleted (both need the store key and the append-only triggers bypassed), is
//! found only by recomputing that record. So a full walk ([`super::verify_chain`]) must still
//! run periodically; [`VerifiedHead`] remembers when one last found the chain intact, and the
//! compliance report shows it (and asks for attention when it is older than its limit).
//!
//! The anchor lives in a file on the state partition, outside the database. Someone who can
//! rewrite the database and that file together can move the anchor; the checkpoints (in their
//! own log and in the journal) still pin the chain at their records.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::verify::check_checkpoints;
use super::walk::{Parallelism, Walk, walk_rows};
use super::{AuditRecord, ChainBreak, Checkpoint, SELECT_RECORDS, VerifyReport, read_head};
use crate::store::Store;

/// Where the last intact verification left the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedHead {
    /// The head that verification reached: the next one starts after it.
    pub seq: u64,
    pub hash: String,
    pub verified_at: jiff::Timestamp,
    /// The newest full walk that found the chain intact, and the head it reached; `None` when
    /// none is on record.
    pub full_walk_at: Option<jiff::Timestamp>,
    pub full_walk_seq: u64,
}

/// The file holding the [`VerifiedHead`] (JSON, replaced atomically).
#[derive(Debug, Clone)]
pub struct VerifiedHeadFile {
    path: PathBuf,
}

impl VerifiedHeadFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `audit-verified.json` in the agent's state directory, beside the checkpoint log.
    pub fn in_state_dir(state_dir: &Path) -> Self {
        Self::new(state_dir.join("audit-verified.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remembered head; `None` when no verification was recorded. A file that does not
    /// parse is an error, never taken as "nothing verified yet" in silence.
    pub fn read(&self) -> std::io::Result<Option<VerifiedHead>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replace the file durably (temporary file, fsync, rename).
    pub fn write(&self, head: &VerifiedHead) -> std::io::Result<()> {
        use std::io::Write as _;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(head).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// One verification: what it found and how far it looked.
#[derive(Debug, Clone, Serialize)]
pub struct ChainCheck {
    pub report: VerifyReport,
    /// The first record whose hash this verification recomputed in sequence (1 for a full
    /// walk; the record after the anchor for an incremental one).
    pub walked_from: u64,
    pub full_walk: bool,
    /// The newest full walk that found the chain intact (this one, when it was a full walk
    /// and found it intact), and the head it reached.
    pub last_full_walk: Option<(jiff::Timestamp, u64)>,
}

/// Verify the chain: a full walk when `full` or when no anchor is remembered, else from the
/// remembered anchor. An intact result becomes the next anchor (`file` is rewritten); a broken
/// one leaves the file as it was, so the next check starts from the same place and breaks
/// again.
pub fn check_chain(
    store: &Store,
    checkpoints: &[Checkpoint],
    file: &VerifiedHeadFile,
    full: bool,
    now: jiff::Timestamp,
) -> Result<ChainCheck, String> {
    let remembered = file.read().map_err(|e| format!("the last verified head cannot be read: {e}"))?;
    let anchor = remembered.as_ref().filter(|_| !full);
    let (report, walked_from) = match anchor {
        Some(a) => (verify_chain_from(store, checkpoints, a.seq, &a.hash).map_err(|e| e.to_string())?, a.seq + 1),
        None => (super::verify_chain(store, checkpoints).map_err(|e| e.to_string())?, 1),
    };
    let full_walk = anchor.is_none();
    let earlier_full = remembered.as_ref().and_then(|r| r.full_walk_at.map(|at| (at, r.full_walk_seq)));
    let last_full_walk = if full_walk && report.intact() { Some((now, report.head_seq)) } else { earlier_full };
    if report.intact() {
        let next = VerifiedHead {
            seq: report.head_seq,
            hash: report.head_hash.clone(),
            verified_at: now,
            full_walk_at: last_full_walk.map(|(at, _)| at),
            full_walk_seq: last_full_walk.map(|(_, seq)| seq).unwrap_or(0),
        };
        file.write(&next).map_err(|e| format!("the verified head cannot be written to {}: {e}", file.path().display()))?;
    }
    Ok(ChainCheck { report, walked_from, full_walk, last_full_walk })
}

fn record_at(store: &Store, seq: u64) -> rusqlite::Result<Option<AuditRecord>> {
    let mut stmt = store.conn().prepare_cached(&format!("{SELECT_RECORDS} WHERE seq = ?1"))?;
    let mut rows = stmt.query([seq as i64])?;
    rows.next()?.map(AuditRecord::from_row).transpose()
}

/// The anchor (or a checkpointed record) as it should be: present, its contents giving its
/// hash, and that hash the one remembered.
fn check_pinned(store: &Store, seq: u64, hash: &str, head_seq: u64) -> rusqlite::Result<Option<ChainBreak>> {
    let Some(record) = record_at(store, seq)? else {
        if seq > head_seq {
            return Ok(Some(ChainBreak::Truncated { last_present: head_seq, checkpoint_seq: seq }));
        }
        let conn = store.conn();
        let before: Option<i64> = conn.query_row("SELECT max(seq) FROM audit WHERE seq < ?1", [seq as i64], |r| r.get(0))?;
        let after: Option<i64> = conn.query_row("SELECT min(seq) FROM audit WHERE seq > ?1", [seq as i64], |r| r.get(0))?;
        return Ok(Some(ChainBreak::Missing {
            after: before.map(|s| s as u64).unwrap_or(0),
            next_found: after.map(|s| s as u64).unwrap_or(seq + 1),
        }));
    };
    if !record.hash_is_intact() {
        return Ok(Some(ChainBreak::Altered { seq }));
    }
    if record.hash != hash {
        return Ok(Some(ChainBreak::CheckpointMismatch { seq }));
    }
    Ok(None)
}

/// Verify from the record after `anchor_seq` (whose hash must be `anchor_hash`) to the head,
/// and every checkpoint. `records` in the result counts the anchor's sequence number as the
/// records before it (a full walk is what counts them one by one).
pub fn verify_chain_from(
    store: &Store,
    checkpoints: &[Checkpoint],
    anchor_seq: u64,
    anchor_hash: &str,
) -> rusqlite::Result<VerifyReport> {
    let (head_seq, _) = read_head(store)?;
    let mut first_break = check_pinned(store, anchor_seq, anchor_hash, head_seq)?;
    let mut stmt = store.conn().prepare(&format!("{SELECT_RECORDS} WHERE seq > ?1 ORDER BY seq"))?;
    let later_checkpoints = checkpoints.iter().filter(|c| c.seq > anchor_seq).map(|c| c.seq);
    let start = Walk::after(anchor_seq, anchor_hash, later_checkpoints);
    let Walk { walked, prev_seq, prev_hash, first_break: walk_break, checkpointed: wanted } =
        walk_rows(stmt.query([anchor_seq as i64])?, start, Parallelism::of_this_machine())?;
    first_break = first_break.or(walk_break);
    let last_present = if walked == 0 { head_seq.min(anchor_seq) } else { prev_seq };
    if first_break.is_none() {
        let later: Vec<Checkpoint> = checkpoints.iter().filter(|c| c.seq > anchor_seq).cloned().collect();
        first_break = check_checkpoints(&later, &wanted, last_present.max(anchor_seq));
    }
    // Checkpoints at or before the anchor: one point lookup each.
    for c in checkpoints.iter().filter(|c| c.seq <= anchor_seq) {
        if first_break.is_some() {
            break;
        }
        first_break = check_pinned(store, c.seq, &c.hash, head_seq)?;
    }
    Ok(VerifyReport {
        records: anchor_seq + walked,
        head_seq: prev_seq,
        head_hash: prev_hash,
        checkpoints_checked: checkpoints.len(),
        first_break,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{append, chain, tamper};

    /// Rewrite record `seq`'s detail and rehash it and every later record (a forger's best).
    fn rewrite_and_rehash(store: &Store, seq: u64) {
        let records: Vec<AuditRecord> = {
            let mut stmt = store.conn().prepare(&format!("{SELECT_RECORDS} WHERE seq >= ?1 ORDER BY seq")).expect("prepare");
            stmt.query_map([seq as i64], AuditRecord::from_row).expect("query").collect::<Result<_, _>>().expect("rows")
        };
        let mut prev = records[0].prev_hash.clone();
        let mut sql = String::new();
        for (i, r) in records.iter().enumerate() {
            let detail = if i == 0 { r#"{"n":"forged"}"#.to_string() } else { r.detail.clone() };
            let hash = AuditRecord::compute_hash(r.seq, &r.ts, &r.kind, &r.actor, &detail, &prev);
            sql.push_str(&format!("UPDATE audit SET detail = '{detail}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {};", r.seq));
            prev = hash;
        }
        tamper(store, sql.trim_end_matches(';'));
    }

    fn now() -> jiff::Timestamp {
        "2026-11-29T10:00:00Z".parse().expect("time")
    }

    #[test]
    fn the_first_check_walks_in_full_and_the_next_starts_at_its_head() {
        let (dir, store, path, key) = chain(20);
        let file = VerifiedHeadFile::in_state_dir(dir.path());
        let first = check_chain(&store, &[], &file, false, now()).expect("check");
        assert!(first.full_walk && first.report.intact());
        assert_eq!((first.walked_from, first.report.records), (1, 20));
        assert_eq!(first.last_full_walk, Some((now(), 20)));
        append(&path, &key, 5);
        let second = check_chain(&store, &[], &file, false, now()).expect("check");
        assert!(!second.full_walk && second.report.intact(), "{:?}", second.report.first_break);
        assert_eq!((second.walked_from, second.report.records, second.report.head_seq), (21, 25, 25));
        assert_eq!(second.last_full_walk, Some((now(), 20)), "the full walk on record stays the first one");
        let remembered = file.read().expect("read").expect("written");
        assert_eq!(remembered.seq, 25);
    }

    #[test]
    fn a_change_after_the_anchor_is_caught() {
        let (dir, store, path, key) = chain(10);
        let file = VerifiedHeadFile::in_state_dir(dir.path());
        check_chain(&store, &[], &file, false, now()).expect("check");
        append(&path, &key, 5);
        tamper(&store, r#"UPDATE audit SET detail = '{"n":"edited"}' WHERE seq = 13"#);
        let r = check_chain(&store, &[], &file, false, now()).expect("check");
        assert_eq!(r.report.first_break, Some(ChainBreak::Altered { seq: 13 }));
        assert_eq!(file.read().expect("read").expect("file").seq, 10, "a broken chain does not move the anchor");
    }

    #[test]
    fn a_rehashed_rewrite_before_the_anchor_changes_the_anchor_and_is_caught() {
        let (dir, store, _path, _key) = chain(10);
        let file = VerifiedHeadFile::in_state_dir(dir.path());
        check_chain(&store, &[], &file, false, now()).expect("check");
        rewrite_and_rehash(&store, 4);
        let r = check_chain(&store, &[], &file, false, now()).expect("check");
        assert_eq!(r.report.first_break, Some(ChainBreak::CheckpointMismatch { seq: 10 }));
    }

    #[test]
    fn a_checkpoint_before_the_anchor_pins_its_record() {
        let (dir, store, path, key) = chain(10);
        let file = VerifiedHeadFile::in_state_dir(dir.path());
        let cp = |seq: u64| {
            let hash: String = store.conn().query_row("SELECT hash FROM audit WHERE seq = ?1", [seq as i64], |r| r.get(0)).expect("hash");
            Checkpoint { seq, hash, taken_at: "2026-11-28T00:00:00Z".into() }
        };
        let checkpoints = vec![cp(6)];
        check_chain(&store, &checkpoints, &file, false, now()).expect("check");
        append(&path, &key, 2);
        // The checkpointed record edited in place (stored hash kept): its contents no longer
        // give the hash, found by the point lookup.
        tamper(&store, r#"UPDATE audit SET actor = 'someone.else' WHERE seq = 6"#);
        let r = check_chain(&store, &checkpoints, &file, false, now()).expect("check");
        assert_eq!(r.report.first_break, Some(ChainBreak::Altered { seq: 6 }));
    }

    #[test]
    fn a_truncated_log_and_a_deleted_anchor_are_caught() {
        let (dir, store, _path, _key) = chain(10);
        let file = VerifiedHeadFile::in_state_dir(dir.path());
        check_chain(&store, &[], &file, false, now()).expect("check");
        tamper(&store, "DELETE FROM audit WHERE seq >= 9");
        let r = check_chain(&store, &[], &file, false, now()).expect("check");
        assert_eq!(r.report.first_break, Some(ChainBreak::Truncated { last_present: 8, checkpoint_seq: 10 }));
    }

    /// The documented limit: a record before the anchor edited in place, its stored hash left
    /// alone, passes the incremental check; the full walk finds it.
    #[test]
    fn an_in_place_edit_before_the_anchor_needs_the_full_walk() {
        let (dir, store, _path, _key) = chain(10);
        let file = VerifiedHeadFile::in_state_dir(dir.path());
        check_chain(&store, &[], &file, false, now()).expect("check");
        tamper(&store, r#"UPDATE audit SET detail = '{"n":"edited"}' WHERE seq = 3"#);
        let incremental = check_chain(&store, &[], &file, false, now()).expect("check");
        assert!(incremental.report.intact(), "the incremental check cannot see this");
        let full = check_chain(&store, &[], &file, true, now()).expect("check");
        assert!(full.full_walk);
        assert_eq!(full.report.first_break, Some(ChainBreak::Altered { seq: 3 }));
    }

    #[test]
    fn an_unreadable_anchor_file_is_an_error() {
        let (dir, store, _path, _key) = chain(3);
        let file = VerifiedHeadFile::in_state_dir(dir.path());
        std::fs::write(file.path(), "not json").expect("write");
        let err = check_chain(&store, &[], &file, false, now()).expect_err("refused");
        assert!(err.contains("audit-verified.json"), "{err}");
    }
}
