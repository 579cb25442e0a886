//! Chains for the audit module's tests: written by the real writer into a real store, and
//! tampered with as someone holding the store key could.

use std::path::{Path, PathBuf};

use crate::audit::{AuditEvent, AuditLog, EventKind};
use crate::store::{Store, StoreKey};

/// A store with `n` chained records, written by the real writer.
pub(crate) fn chain(n: usize) -> (tempfile::TempDir, Store, PathBuf, StoreKey) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = StoreKey::random();
    let path = dir.path().join("store.db");
    let (mut store, _) = Store::open_or_create(&path, &key).expect("store");
    store.migrate().expect("migrate");
    append(&path, &key, n);
    (dir, store, path, key)
}

/// Append `n` records through the real writer.
pub(crate) fn append(path: &Path, key: &StoreKey, n: usize) {
    let (log, writer) = AuditLog::start(path, key).expect("writer");
    for i in 0..n {
        log.append_blocking(AuditEvent::new(EventKind::Access, "dr.smith", serde_json::json!({ "n": i }))).expect("append");
    }
    drop(log);
    writer.join();
}

/// Change records behind the append-only triggers, as someone with the key could.
pub(crate) fn tamper(store: &Store, sql: &str) {
    store
        .conn()
        .execute_batch(&format!(
            "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; {sql};
             CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'x'); END;
             CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'x'); END;"
        ))
        .expect("tamper");
}
