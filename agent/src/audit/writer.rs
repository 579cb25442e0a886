//! The audit writer: one thread per process appends with group commit.
//!
//! Why a thread: every append must extend the same head, so appends are serialised anyway, and
//! a durable commit costs an fsync. Callers hand events to the writer; it takes whatever has
//! queued up (up to [`MAX_GROUP`]), writes them in one transaction, commits with
//! `synchronous = FULL`, and only then acknowledges each caller. An acknowledged record is on
//! disk; a record whose caller was not acknowledged may or may not be, and the chain verifies
//! either way. The head is read inside each write transaction (`BEGIN IMMEDIATE` holds the
//! database's write lock), so the CLI and the daemon can both append without forking the chain.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use super::{AuditEvent, AuditRecord, GENESIS_HASH};
use crate::store::{Store, StoreError, StoreKey};

/// Most events written in one transaction.
const MAX_GROUP: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log cannot be opened: {0}")]
    Open(#[from] StoreError),
    #[error("the audit record could not be written: {0}")]
    Write(String),
    /// The data volume has no space left: the record was not written and nothing acknowledged
    /// was touched; appends work again once space is freed, without a restart.
    #[error("the data volume is full; the audit record could not be written")]
    VolumeFull,
    #[error("the audit writer has stopped; the agent must not go on without an audit log")]
    WriterGone,
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

struct Job {
    event: AuditEvent,
    reply: Reply,
}

/// Handle to the audit writer. Cheap to clone; the writer stops when the last handle drops.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
    /// The sequence number of the newest record this process committed, for readers that
    /// follow the chain (the alert detector) without polling the store.
    committed: watch::Receiver<u64>,
}

/// Joins the writer thread when the log is shut down.
#[derive(Debug)]
pub struct WriterThread(Option<JoinHandle<()>>);

impl WriterThread {
    /// Wait for the writer to finish what is queued. Call after dropping every [`AuditLog`].
    pub fn join(mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }

    /// Wait at most `limit` for the writer to finish; false (and detached) if it has not.
    /// For owners that cannot know whether every [`AuditLog`] handle is gone yet.
    pub fn join_within(self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while let Some(handle) = self.0.as_ref() {
            if handle.is_finished() {
                self.join();
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }
}

impl AuditLog {
    /// Open the store at `path` a second time for the writer and start it.
    ///
    /// The store must already be migrated (the store stage does that first).
    pub fn start(path: &Path, key: &StoreKey) -> Result<(AuditLog, WriterThread), AuditError> {
        let store = Store::open_existing(path, key)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (head_tx, committed) = watch::channel(0);
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_loop(store, rx, head_tx))
            .map_err(|e| AuditError::Write(format!("cannot start the writer thread: {e}")))?;
        Ok((AuditLog { tx, path: path.to_owned(), committed }, WriterThread(Some(handle))))
    }

    /// Append and wait until the record is durable. Returns its sequence number.
    pub async fn append(&self, event: AuditEvent) -> Result<u64, AuditError> {
        self.submit(event)?.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Blocking flavour for the CLI and for threads outside the runtime.
    pub fn append_blocking(&self, event: AuditEvent) -> Result<u64, AuditError> {
        self.submit(event)?.blocking_recv().map_err(|_| AuditError::WriterGone)?
    }

    fn submit(&self, event: AuditEvent) -> Result<oneshot::Receiver<Result<u64, AuditError>>, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { event, reply }).map_err(|_| AuditError::WriterGone)?;
        Ok(rx)
    }

    pub fn store_path(&self) -> &Path {
        &self.path
    }

    /// Changes whenever this process's writer commits; holds the newest committed `seq`.
    /// Records appended by another process (the CLI) do not show here: followers also poll.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

/// The newest record's (seq, hash), or the genesis values for an empty log.
pub fn read_head(store: &Store) -> rusqlite::Result<(u64, String)> {
    read_head_in(store.conn())
}

fn read_head_in(conn: &rusqlite::Connection) -> rusqlite::Result<(u64, String)> {
    let head = conn.query_row(
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?)),
    );
    match head {
        Ok(h) => Ok(h),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok((0, GENESIS_HASH.to_string())),
        Err(e) => Err(e),
    }
}

fn writer_loop(mut store: Store, rx: mpsc::Receiver<Job>, head: watch::Sender<u64>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        match write_group(&mut store, &group) {
            Ok(seqs) => {
                if let Some(last) = seqs.last() {
                    head.send_replace(*last);
                }
                for (job, seq) in group.into_iter().zip(seqs) {
                    let _ = job.reply.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!("audit write failed: {e}");
                let full = crate::store::is_volume_full(&e);
                for job in group {
                    let error = if full { AuditError::VolumeFull } else { AuditError::Write(e.to_string()) };
                    let _ = job.reply.send(Err(error));
                }
            }
        }
    }
}

fn write_group(store: &mut Store, group: &[Job]) -> rusqlite::Result<Vec<u64>> {
    let tx = store.conn_mut().transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (mut seq, mut prev) = read_head_in(&tx)?;
    let mut seqs = Vec::with_capacity(group.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (seq, ts, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for job in group {
            seq += 1;
            let ts = jiff::Timestamp::now().to_string();
            let kind = job.event.kind.as_str();
            let detail = job.event.detail.to_string();
            let hash = AuditRecord::compute_hash(seq, &ts, kind, &job.event.actor, &detail, &prev);
            insert.execute(rusqlite::params![seq as i64, ts, kind, job.event.actor, detail, prev, hash])?;
            prev = hash;
            seqs.push(seq);
        }
    }
    tx.commit()?;
    Ok(seqs)
}
