//! The store: one SQLCipher database on the data volume, opened with a key from the unlock stage.
//!
//! Architecture invariant: nothing outside this module and the unlock stage ever holds the store
//! key, and nothing here ever creates a fresh database over an existing file it cannot open.

mod key;
mod migrations;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

pub use key::StoreKey;
pub use migrations::{MIGRATIONS, Migration};

/// A store problem, worded for the person at the console.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {path} cannot be opened with this key: the key is wrong or the file is not a Wardbox store; nothing was changed"
    )]
    WrongKey { path: PathBuf },
    #[error("the store {path} is an empty file; refusing to create a new database over it")]
    EmptyFile { path: PathBuf },
    #[error("the store {path} does not exist")]
    Missing { path: PathBuf },
    #[error(
        "the store {path} has schema version {found}, newer than this agent knows ({known}); refusing to touch it (was the agent downgraded?)"
    )]
    FromTheFuture { path: PathBuf, found: u32, known: u32 },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration { version: u32, name: &'static str, source: rusqlite::Error },
    #[error("store error on {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
}

/// Whether a write failed because the filesystem under the store has no space left
/// (`SQLITE_FULL`). SQLite rolls the statement back and the connection stays usable, so the
/// same process writes again once space is freed.
pub fn is_volume_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// How a store was opened, so the boot record can say whether a database was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Existing,
    Created,
}

/// An open SQLCipher database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open the store at `path`, creating it only if no file exists there.
    pub fn open_or_create(path: &Path, key: &StoreKey) -> Result<(Store, Opened), StoreError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.len() == 0 => Err(StoreError::EmptyFile { path: path.to_owned() }),
            Ok(_) => Ok((Self::open_existing(path, key)?, Opened::Existing)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let store = Self::keyed(connect(path, flags)?, path, key)?;
                Ok((store, Opened::Created))
            }
            Err(e) => Err(StoreError::Sqlite {
                path: path.to_owned(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            }),
        }
    }

    /// Open an existing store; never creates one.
    pub fn open_existing(path: &Path, key: &StoreKey) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing { path: path.to_owned() });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::keyed(connect(path, flags)?, path, key)
    }

    /// Apply the key, prove it opens the file, then set the durable pragmas.
    fn keyed(conn: Connection, path: &Path, key: &StoreKey) -> Result<Store, StoreError> {
        // Quiet SQLCipher's own "hmac check failed" stderr noise on a wrong key: the error
        // below says it better.
        conn.execute_batch("PRAGMA cipher_log_level = NONE;").map_err(|e| sqlite(path, e))?;
        conn.execute_batch(&key.pragma("key")).map_err(|e| sqlite(path, e))?;
        // The first read decrypts page 1: a wrong key fails here, before anything is written.
        let probe: Result<i64, _> =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0));
        match probe {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(err, _))
                if err.code == rusqlite::ErrorCode::NotADatabase =>
            {
                return Err(StoreError::WrongKey { path: path.to_owned() });
            }
            Err(e) => return Err(sqlite(path, e)),
        }
        // WAL for concurrent readers; FULL so a committed transaction survives power loss.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
        )
        .map_err(|e| sqlite(path, e))?;
        Ok(Store { conn, path: path.to_owned() })
    }

    /// Bring the schema up to the newest version, one transaction per migration.
    ///
    /// Returns the versions applied (empty when already current).
    pub fn migrate(&mut self) -> Result<Vec<u32>, StoreError> {
        self.migrate_to(MIGRATIONS.len() as u32)
    }

    /// Migrate up to `target` only: used by tests to make a store of an older version.
    pub fn migrate_to(&mut self, target: u32) -> Result<Vec<u32>, StoreError> {
        let known = MIGRATIONS.len() as u32;
        let current = self.schema_version()?;
        if current > known {
            return Err(StoreError::FromTheFuture { path: self.path.clone(), found: current, known });
        }
        let mut applied = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| m.version > current && m.version <= target) {
            let tx = self.conn.transaction().map_err(|e| sqlite(&self.path, e))?;
            tx.execute_batch(m.sql)
                .and_then(|()| tx.pragma_update(None, "user_version", m.version))
                .and_then(|()| tx.commit())
                .map_err(|source| StoreError::Migration { version: m.version, name: m.name, source })?;
            tracing::info!(version = m.version, name = m.name, "store migrated");
            applied.push(m.version);
        }
        Ok(applied)
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| sqlite(&self.path, e))
    }

    /// Re-encrypt the whole database under `new_key` (SQLCipher `PRAGMA rekey`).
    ///
    /// SQLCipher cannot rekey a database in WAL mode, so the journal is switched to DELETE for
    /// the duration and back afterwards.
    pub fn rekey(&self, new_key: &StoreKey) -> Result<(), StoreError> {
        let p = &self.path;
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .map_err(|e| sqlite(p, e))?;
        self.conn.execute_batch(&new_key.pragma("rekey")).map_err(|e| sqlite(p, e))?;
        self.conn.execute_batch("PRAGMA journal_mode = WAL;").map_err(|e| sqlite(p, e))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for modules that own tables in this store.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Every store connection is opened here: the retrieval index's vector tables need
/// sqlite-vec, which SQLite attaches to a connection as it opens.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    wardbox_rag::index::register_sqlite_vec();
    Connection::open_with_flags(path, flags).map_err(|e| sqlite(path, e))
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_file(path: &Path) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
    }

    fn new_store(dir: &Path, key: &StoreKey) -> PathBuf {
        let path = dir.join("w.db");
        let (mut store, opened) = Store::open_or_create(&path, key).expect("create");
        assert_eq!(opened, Opened::Created);
        store.migrate().expect("migrate");
        store
            .conn()
            .execute("INSERT INTO users (username, display_name, role, created_at) VALUES ('dr.a', 'Dr A', 'clinician', 'now')", [])
            .expect("insert");
        path
    }

    #[test]
    fn reopen_with_the_key_finds_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = StoreKey::random();
        let path = new_store(dir.path(), &key);
        let (store, opened) = Store::open_or_create(&path, &key).expect("reopen");
        assert_eq!(opened, Opened::Existing);
        let n: i64 = store.conn().query_row("SELECT count(*) FROM users", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1);
        // The file is really encrypted: no SQLite header, no plaintext.
        let bytes = std::fs::read(&path).expect("read");
        assert!(!bytes.starts_with(b"SQLite format 3"));
        assert!(!bytes.windows(4).any(|w| w == b"dr.a"));
    }

    #[test]
    fn wrong_key_is_refused_and_the_file_is_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = StoreKey::random();
        let path = new_store(dir.path(), &key);
        // Fold the WAL into the main file so the byte comparison covers everything.
        drop(Store::open_existing(&path, &key).expect("open"));
        let before = sha256_file(&path);
        let err = Store::open_or_create(&path, &StoreKey::random()).expect_err("wrong key must fail");
        assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("nothing was changed"));
        assert_eq!(sha256_file(&path), before, "a wrong key changed the file");
        Store::open_existing(&path, &key).expect("right key still opens");
    }

    #[test]
    fn an_empty_file_is_not_silently_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        std::fs::write(&path, b"").expect("write");
        let err = Store::open_or_create(&path, &StoreKey::random()).expect_err("empty");
        assert!(matches!(err, StoreError::EmptyFile { .. }), "{err}");
        assert!(Store::open_existing(&dir.path().join("absent.db"), &StoreKey::random()).is_err());
    }

    #[test]
    fn migration_from_an_older_schema_keeps_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = StoreKey::random();
        let path = dir.path().join("w.db");
        let (mut store, _) = Store::open_or_create(&path, &key).expect("create");
        store.migrate_to(1).expect("v1");
        assert_eq!(store.schema_version().expect("v"), 1);
        store
            .conn()
            .execute(
                "INSERT INTO audit (seq, ts, kind, actor, detail, prev_hash, hash) VALUES (1, 't', 'k', 'a', '{}', 'p', 'h')",
                [],
            )
            .expect("insert v1 row");
        drop(store);
        let (mut store, _) = Store::open_or_create(&path, &key).expect("reopen");
        let applied = store.migrate().expect("migrate");
        assert_eq!(applied, (2..=MIGRATIONS.len() as u32).collect::<Vec<_>>());
        assert_eq!(store.schema_version().expect("v"), MIGRATIONS.len() as u32);
        let n: i64 = store.conn().query_row("SELECT count(*) FROM audit", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1, "the v1 data survived the migration");
        assert!(store.migrate().expect("again").is_empty(), "migrating twice changes nothing");
    }

    #[test]
    fn a_store_from_a_newer_agent_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = StoreKey::random();
        let path = new_store(dir.path(), &key);
        let store = Store::open_existing(&path, &key).expect("open");
        store.conn().pragma_update(None, "user_version", 999).expect("bump");
        drop(store);
        let mut store = Store::open_existing(&path, &key).expect("open");
        let err = store.migrate().expect_err("future schema");
        assert!(matches!(err, StoreError::FromTheFuture { found: 999, .. }), "{err}");
    }

    #[test]
    fn rekey_then_only_the_new_key_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = StoreKey::random();
        let new = StoreKey::random();
        let path = new_store(dir.path(), &old);
        let store = Store::open_existing(&path, &old).expect("open");
        store.rekey(&new).expect("rekey");
        drop(store);
        assert!(matches!(Store::open_existing(&path, &old), Err(StoreError::WrongKey { .. })));
        let store = Store::open_existing(&path, &new).expect("new key opens");
        let n: i64 = store.conn().query_row("SELECT count(*) FROM users", [], |r| r.get(0)).expect("count");
        assert_eq!(n, 1);
        let mode: String = store.conn().query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("mode");
        assert_eq!(mode, "wal");
    }
}
