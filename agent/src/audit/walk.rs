//! The walk both verifications share: records read in sequence order, their hashes recomputed
//! in parallel, their links checked in order.
//!
//! Why this shape: whether a record's contents still give its hash needs that record alone, so
//! that work (most of a walk's hashing) can run on every core; whether a record follows the one
//! before it, and which broken record comes first, needs the records in order, so that part
//! stays one pass in sequence order, on its own thread. The store's connection cannot be
//! shared between threads, so the rows are read on the caller's thread, into batches that hold
//! a batch's text in one buffer (a few allocations a batch instead of six a record). Batches go
//! to the hashing threads through a bounded queue and reach the in-order pass in the order they
//! were read, so a walk holds a few batches in memory whatever the chain's length, and names the
//! same first broken record as a walk one record at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};

use super::{AuditRecord, ChainBreak};

/// Records handed to a hashing thread at once: enough that passing a batch costs little beside
/// hashing it (about 300 bytes of hashed input a record), few enough that the batches in
/// flight stay a few MB.
const BATCH_RECORDS: usize = 1024;

/// How a walk splits its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parallelism {
    pub batch_records: usize,
    pub hashing_threads: usize,
}

impl Parallelism {
    /// One hashing thread per core beside the one reading the store (at least one).
    pub fn of_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Parallelism { batch_records: BATCH_RECORDS, hashing_threads: cores.saturating_sub(1).max(1) }
    }
}

/// Where a walk stands after the records it has seen, in sequence order.
#[derive(Debug, Clone)]
pub(super) struct Walk {
    /// Records walked.
    pub walked: u64,
    /// The last record walked (the walk's starting point before any).
    pub prev_seq: u64,
    pub prev_hash: String,
    /// The first broken record: once found, later records no longer change it.
    pub first_break: Option<ChainBreak>,
    /// The checkpointed sequence numbers, each with the hash its record carries once walked,
    /// so the checkpoints are checked without a second pass.
    pub checkpointed: BTreeMap<u64, Option<String>>,
}

impl Walk {
    /// A walk that starts after record `after_seq` (0 for the genesis), whose hash the first
    /// record walked must name.
    pub fn after(after_seq: u64, after_hash: &str, checkpointed: impl IntoIterator<Item = u64>) -> Self {
        Walk {
            walked: 0,
            prev_seq: after_seq,
            prev_hash: after_hash.to_string(),
            first_break: None,
            checkpointed: checkpointed.into_iter().map(|seq| (seq, None)).collect(),
        }
    }

    /// Take the next record in sequence order; `hash_intact` says whether its contents give its
    /// stored hash (computed beforehand, on any thread).
    fn step(&mut self, record: Fields<'_>, hash_intact: bool) {
        self.walked += 1;
        if let Some(slot) = self.checkpointed.get_mut(&record.seq) {
            *slot = Some(record.hash.to_string());
        }
        if self.first_break.is_none() {
            self.first_break = check_link(&record, hash_intact, self.prev_seq, &self.prev_hash);
        }
        self.prev_seq = record.seq;
        self.prev_hash.clear();
        self.prev_hash.push_str(record.hash);
    }
}

/// What is wrong with `record` following `prev_seq` (whose hash is `prev_hash`), in the order a
/// reader would find it: a gap before it, then its own contents, then its link.
fn check_link(record: &Fields<'_>, hash_intact: bool, prev_seq: u64, prev_hash: &str) -> Option<ChainBreak> {
    if record.seq > prev_seq + 1 {
        return Some(ChainBreak::Missing { after: prev_seq, next_found: record.seq });
    }
    if !hash_intact {
        return Some(ChainBreak::Altered { seq: record.seq });
    }
    if record.prev_hash != prev_hash {
        return Some(ChainBreak::NotLinked { seq: record.seq });
    }
    None
}

/// Records as read, in sequence order: every text field of every record one after another in
/// `text`.
#[derive(Debug, Default)]
struct Batch {
    text: String,
    records: Vec<Packed>,
}

/// A record in a [`Batch`]: its sequence number and where each of its text fields (ts, kind,
/// actor, detail, prev_hash, hash) ends in the batch's text.
#[derive(Debug, Clone, Copy)]
struct Packed {
    seq: u64,
    ends: [usize; 6],
}

/// A record's fields, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
struct Fields<'a> {
    seq: u64,
    ts: &'a str,
    kind: &'a str,
    actor: &'a str,
    detail: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
}

impl Fields<'_> {
    fn hash_is_intact(&self) -> bool {
        AuditRecord::hash_matches(self.seq, self.ts, self.kind, self.actor, self.detail, self.prev_hash, self.hash)
    }
}

impl Batch {
    fn with_capacity(records: usize) -> Self {
        // About 300 bytes of text a record; the buffer grows if a batch holds more.
        Batch { text: String::with_capacity(records * 320), records: Vec::with_capacity(records) }
    }

    /// Append a record: its sequence number and its text fields in the order of [`Packed`].
    fn push(&mut self, seq: u64, fields: [&str; 6]) {
        let mut ends = [0; 6];
        for (end, field) in ends.iter_mut().zip(fields) {
            self.text.push_str(field);
            *end = self.text.len();
        }
        self.records.push(Packed { seq, ends });
    }

    fn fields(&self) -> impl Iterator<Item = Fields<'_>> {
        let mut start = 0;
        self.records.iter().map(move |packed| {
            let mut field = |i: usize| {
                let text = &self.text[start..packed.ends[i]];
                start = packed.ends[i];
                text
            };
            let (ts, kind, actor, detail, prev_hash, hash) = (field(0), field(1), field(2), field(3), field(4), field(5));
            Fields { seq: packed.seq, ts, kind, actor, detail, prev_hash, hash }
        })
    }
}

/// Append the record in `row` (selected in the column order of the `audit` table) to `batch`.
/// Its columns are read as [`AuditRecord::from_row`] reads them, with the same errors.
fn push_row(batch: &mut Batch, row: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
    let seq = row.get::<_, i64>(0)? as u64;
    let fields = [text_at(row, 1)?, text_at(row, 2)?, text_at(row, 3)?, text_at(row, 4)?, text_at(row, 5)?, text_at(row, 6)?];
    batch.push(seq, fields);
    Ok(())
}

/// Column `i` as text, borrowed from the row rather than copied into a `String` of its own.
fn text_at<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    let value = row.get_ref(i)?;
    match value.as_str() {
        Ok(text) => Ok(text),
        // Not text, or not UTF-8: the error `row.get::<_, String>` gives, naming the column,
        // as a walk over `AuditRecord::from_row` reported it.
        Err(e) => Err(row
            .get::<_, String>(i)
            .err()
            .unwrap_or_else(|| rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e)))),
    }
}

/// A batch on its way to a hashing thread, and where its result goes.
struct Job {
    batch: Batch,
    done: mpsc::SyncSender<Hashed>,
}

/// A batch with, for each record, whether its contents give its stored hash.
struct Hashed {
    batch: Batch,
    intact: Vec<bool>,
}

/// Walk every row of `rows` (selected in the column order of the `audit` table, in sequence
/// order) from `walk` on.
pub(super) fn walk_rows(mut rows: rusqlite::Rows<'_>, walk: Walk, parallelism: Parallelism) -> rusqlite::Result<Walk> {
    let read_one = |batch: &mut Batch| match rows.next()? {
        Some(row) => push_row(batch, row).map(|()| true),
        None => Ok(false),
    };
    walk_source(read_one, walk, parallelism)
}

/// Walk the records `read_one` appends to a batch, one a call (false when there are no more),
/// from `walk` on: hashes on `parallelism.hashing_threads` threads, links in order on one more.
/// The first error from `read_one` ends the walk with that error.
fn walk_source<E>(
    read_one: impl FnMut(&mut Batch) -> Result<bool, E>,
    walk: Walk,
    parallelism: Parallelism,
) -> Result<Walk, E> {
    let batch_records = parallelism.batch_records.max(1);
    let hashing_threads = parallelism.hashing_threads.max(1);
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<Job>(2 * hashing_threads);
        // Only the hashing threads hold the queue's receiving end: should they all stop (a
        // panic), sending fails instead of waiting for ever, and the scope passes the panic on.
        let work_rx = Arc::new(Mutex::new(work_rx));
        for _ in 0..hashing_threads {
            let work_rx = Arc::clone(&work_rx);
            scope.spawn(move || hash_batches(&work_rx));
        }
        drop(work_rx);
        // One receiver per batch, in the order the batches were read: the in-order pass waits on
        // each in turn, whichever hashing thread finishes first.
        let (order_tx, order_rx) = mpsc::sync_channel::<mpsc::Receiver<Hashed>>(4 * hashing_threads);
        let in_order = scope.spawn(move || {
            let mut walk = walk;
            for hashed in order_rx {
                // A hashing thread that dropped its batch panicked; the scope passes that panic
                // on, so stopping here never reports a walk as complete.
                let Ok(Hashed { batch, intact }) = hashed.recv() else { break };
                for (record, intact) in batch.fields().zip(intact) {
                    walk.step(record, intact);
                }
            }
            walk
        });

        let read = send_batches(read_one, batch_records, &work_tx, &order_tx);
        // Closing both queues lets the hashing threads and the in-order pass finish.
        drop(work_tx);
        drop(order_tx);
        let walk = match in_order.join() {
            Ok(walk) => walk,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        read.map(|()| walk)
    })
}

/// Read batches and hand each to the hashing threads and its result's receiver to the in-order
/// pass.
fn send_batches<E>(
    mut read_one: impl FnMut(&mut Batch) -> Result<bool, E>,
    batch_records: usize,
    work: &mpsc::SyncSender<Job>,
    order: &mpsc::SyncSender<mpsc::Receiver<Hashed>>,
) -> Result<(), E> {
    loop {
        let mut batch = Batch::with_capacity(batch_records);
        let mut more = true;
        while more && batch.records.len() < batch_records {
            more = read_one(&mut batch)?;
        }
        if batch.records.is_empty() {
            return Ok(());
        }
        let (done, result) = mpsc::sync_channel(1);
        // Either send fails only when a thread of the walk has panicked, which the scope
        // passes on: stop reading.
        if work.send(Job { batch, done }).is_err() || order.send(result).is_err() || !more {
            return Ok(());
        }
    }
}

fn hash_batches(work: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while taking one job off the queue.
        let job = match work.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(Job { batch, done }) = job else { return };
        let intact = batch.fields().map(|record| record.hash_is_intact()).collect();
        // The in-order pass has stopped only if another thread panicked.
        let _ = done.send(Hashed { batch, intact });
    }
}

/// [`walk_source`] over records already read, for the tests of the walk itself.
#[cfg(test)]
fn walk_records<E>(
    mut records: impl Iterator<Item = Result<AuditRecord, E>>,
    walk: Walk,
    parallelism: Parallelism,
) -> Result<Walk, E> {
    let read_one = |batch: &mut Batch| match records.next() {
        Some(record) => {
            let r = record?;
            batch.push(r.seq, [&r.ts, &r.kind, &r.actor, &r.detail, &r.prev_hash, &r.hash]);
            Ok(true)
        }
        None => Ok(false),
    };
    walk_source(read_one, walk, parallelism)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::GENESIS_HASH;

    /// A chain of `n` records as the writer makes them, in memory.
    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let (ts, kind, actor) = ("2026-11-29T10:00:00Z", "access", format!("user-{}", seq % 3));
                let detail = format!(r#"{{"patient":{seq}}}"#);
                let hash = AuditRecord::compute_hash(seq, ts, kind, &actor, &detail, &prev);
                let record = AuditRecord { seq, ts: ts.into(), kind: kind.into(), actor, detail, prev_hash: prev.clone(), hash };
                prev = record.hash.clone();
                record
            })
            .collect()
    }

    /// The walk one record at a time as verification did before it hashed in parallel (its
    /// own code, not [`Walk::step`]): the oracle every split of the work must agree with.
    fn one_at_a_time(records: &[AuditRecord], checkpointed: &[u64]) -> Walk {
        let mut walk = Walk::after(0, GENESIS_HASH, checkpointed.iter().copied());
        for record in records {
            walk.walked += 1;
            if let Some(slot) = walk.checkpointed.get_mut(&record.seq) {
                *slot = Some(record.hash.clone());
            }
            if walk.first_break.is_none() {
                walk.first_break = if record.seq > walk.prev_seq + 1 {
                    Some(ChainBreak::Missing { after: walk.prev_seq, next_found: record.seq })
                } else if record.expected_hash() != record.hash {
                    Some(ChainBreak::Altered { seq: record.seq })
                } else if record.prev_hash != walk.prev_hash {
                    Some(ChainBreak::NotLinked { seq: record.seq })
                } else {
                    None
                };
            }
            walk.prev_seq = record.seq;
            walk.prev_hash = record.hash.clone();
        }
        walk
    }

    /// Batches of one record and of a few, so a 50-record chain spans many and each kind of
    /// break falls on, before and after a batch boundary; more threads than this machine has
    /// cores, so batches finish out of order.
    const SPLITS: [Parallelism; 5] = [
        Parallelism { batch_records: 1, hashing_threads: 1 },
        Parallelism { batch_records: 3, hashing_threads: 2 },
        Parallelism { batch_records: 7, hashing_threads: 3 },
        Parallelism { batch_records: 16, hashing_threads: 8 },
        Parallelism { batch_records: BATCH_RECORDS, hashing_threads: 2 },
    ];

    fn check(records: Vec<AuditRecord>, expected: Option<ChainBreak>) {
        let checkpointed = [5, 20, 49];
        let oracle = one_at_a_time(&records, &checkpointed);
        assert_eq!(oracle.first_break, expected, "the oracle");
        for split in SPLITS {
            let ok = records.iter().cloned().map(Ok::<_, ()>);
            let walk = walk_records(ok, Walk::after(0, GENESIS_HASH, checkpointed), split).expect("walk");
            let got = (walk.walked, walk.prev_seq, &walk.prev_hash, &walk.first_break, &walk.checkpointed);
            let want = (oracle.walked, oracle.prev_seq, &oracle.prev_hash, &oracle.first_break, &oracle.checkpointed);
            assert_eq!(got, want, "{split:?}");
        }
    }

    #[test]
    fn an_intact_chain_walks_to_its_head() {
        check(chain(50), None);
        check(Vec::new(), None);
    }

    #[test]
    fn an_edited_record_is_named_wherever_it_falls() {
        for seq in 1..=50u64 {
            let mut records = chain(50);
            records[seq as usize - 1].actor = "mallory".into();
            check(records, Some(ChainBreak::Altered { seq }));
        }
    }

    #[test]
    fn a_deleted_record_is_named_wherever_it_falls() {
        for seq in 1..50u64 {
            let mut records = chain(50);
            records.remove(seq as usize - 1);
            check(records, Some(ChainBreak::Missing { after: seq - 1, next_found: seq + 1 }));
        }
    }

    #[test]
    fn a_swapped_pair_is_named_by_its_first_record() {
        for seq in 1..50u64 {
            let mut records = chain(50);
            records.swap(seq as usize - 1, seq as usize);
            let (a, b) = (records[seq as usize - 1].seq, records[seq as usize].seq);
            records[seq as usize - 1].seq = b;
            records[seq as usize].seq = a;
            check(records, Some(ChainBreak::Altered { seq }));
        }
    }

    #[test]
    fn a_rehashed_record_breaks_the_link_of_the_next() {
        for seq in 1..50u64 {
            let mut records = chain(50);
            let r = &mut records[seq as usize - 1];
            r.actor = "mallory".into();
            r.hash = r.expected_hash();
            check(records, Some(ChainBreak::NotLinked { seq: seq + 1 }));
        }
    }

    #[test]
    fn of_two_breaks_the_first_is_named() {
        for first in 1..25u64 {
            let mut records = chain(50);
            records[(50 - first) as usize].detail = "{}".into();
            records[first as usize - 1].detail = "{}".into();
            check(records, Some(ChainBreak::Altered { seq: first }));
        }
    }

    #[test]
    fn a_read_error_ends_the_walk_with_that_error() {
        for split in SPLITS {
            let records = chain(30).into_iter().map(|r| if r.seq == 17 { Err("page 17 unreadable") } else { Ok(r) });
            let walk = walk_records(records, Walk::after(0, GENESIS_HASH, []), split);
            assert_eq!(walk.map(|w| w.walked).expect_err("the read error"), "page 17 unreadable", "{split:?}");
        }
    }
}
