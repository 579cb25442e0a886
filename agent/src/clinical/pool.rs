//! A few store connections for the clinical back end, opened at boot.
//!
//! Answering holds a connection for the whole generation (seconds), so the back end does not
//! share the UI's one connection; a handful of its own (SQLite WAL: readers never block each
//! other) bounds the parallel answers too. The connections are opened at boot, so the store
//! key is never kept around for later.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use crate::store::{Store, StoreError, StoreKey};

#[derive(Debug)]
pub struct StorePool {
    idle: Mutex<Vec<Store>>,
    freed: Condvar,
    size: usize,
}

impl StorePool {
    /// Open `size` connections to the existing store at `path`, each with the retrieval
    /// index's page cache (SQLCipher decrypts every page it reads: a warm cache is what keeps
    /// vector search fast).
    pub fn open(path: &Path, key: &StoreKey, size: usize) -> Result<Arc<StorePool>, StoreError> {
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size.max(1) {
            let store = Store::open_existing(path, key)?;
            store
                .conn()
                .execute_batch(wardbox_rag::index::CACHE_PRAGMA)
                .map_err(|source| StoreError::Sqlite { path: path.to_owned(), source })?;
            idle.push(store);
        }
        let size = idle.len();
        Ok(Arc::new(StorePool { idle: Mutex::new(idle), freed: Condvar::new(), size }))
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// A connection, waiting until one is free. Blocking: call it off the async threads.
    pub fn get(self: &Arc<Self>) -> Pooled {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(store) = idle.pop() {
                return Pooled { pool: self.clone(), store: Some(store) };
            }
            idle = self.freed.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A borrowed connection; back to the pool when dropped.
#[derive(Debug)]
pub struct Pooled {
    pool: Arc<StorePool>,
    store: Option<Store>,
}

impl Deref for Pooled {
    type Target = Store;
    fn deref(&self) -> &Store {
        // Present from creation until drop.
        self.store.as_ref().unwrap_or_else(|| unreachable!("a pooled store is present until dropped"))
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Store {
        self.store.as_mut().unwrap_or_else(|| unreachable!("a pooled store is present until dropped"))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(store);
            self.pool.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_lent_and_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let key = StoreKey::random();
        let (mut store, _) = Store::open_or_create(&path, &key).expect("store");
        store.migrate().expect("migrate");
        let pool = StorePool::open(&path, &key, 2).expect("pool");
        let a = pool.get();
        let b = pool.get();
        assert_eq!(pool.idle.lock().expect("lock").len(), 0);
        drop(a);
        let c = pool.get();
        drop((b, c));
        assert_eq!(pool.idle.lock().expect("lock").len(), 2);
    }
}
