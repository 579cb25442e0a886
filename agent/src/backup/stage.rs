//! What a backup holds, staged into one directory:
//!
//! ```text
//! store/wardbox.db     VACUUM INTO of the live store: one read transaction, so consistent,
//!                      while the agent keeps writing; still encrypted with the store key
//! keys/store.key       the store key (hex), so the escrowed repository key alone restores
//!                      onto a replacement box whose TPM and volume key differ
//! config/wardbox.toml  the configuration file in use
//! state/…              the state directory: TLS certificates and the local CA, audit
//!                      checkpoints, firewall counter history
//! update/state/…       the update trust root and version floors, and update/installs.json,
//!                      the install log (`<data_dir>/update`; not its staging or previous
//!                      versions, which a bundle rebuilds)
//! MANIFEST.json        every file's size and SHA-256, the store's schema version, row counts
//!                      per table and audit chain head, as of the snapshot
//! ```
//!
//! The state directory is copied before the store snapshot is taken, so every audit
//! checkpoint in the copy vouches for a record the snapshot holds. Not staged: the models
//! (a models bundle restores them), the status and engine files (rewritten at every start).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreKey};

pub const MANIFEST_FILE: &str = "MANIFEST.json";
pub const STORE_FILE: &str = "store/wardbox.db";
pub const STORE_KEY_FILE: &str = "keys/store.key";
pub const CONFIG_FILE: &str = "config/wardbox.toml";
pub const STATE_DIR: &str = "state";
pub const UPDATE_STATE_DIR: &str = "update/state";
pub const UPDATE_INSTALLS_FILE: &str = "update/installs.json";

/// Files of the state directory that are rewritten at every start and say nothing about the
/// box's history: not backed up.
const TRANSIENT_STATE_FILES: &[&str] = &["status.json", "engine.json"];

/// Staging failures, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot stage {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot take a consistent snapshot of the store into {path}: {source}")]
    Snapshot { path: PathBuf, source: rusqlite::Error },
    #[error("cannot read the staged store snapshot: {0}")]
    Facts(String),
}

/// One staged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// What the store snapshot holds, read back from the snapshot itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFacts {
    pub schema_version: u32,
    /// Rows per ordinary table (virtual tables are counted through their shadow tables).
    pub rows: BTreeMap<String, u64>,
    pub audit_head_seq: u64,
    pub audit_head_hash: String,
}

/// The manifest written beside the staged files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    /// Relative path → size and digest. The manifest itself is not in it.
    pub files: BTreeMap<String, FileEntry>,
    pub store: StoreFacts,
}

/// What to stage.
#[derive(Debug)]
pub struct StageSources<'a> {
    pub store: &'a Store,
    pub store_key: &'a StoreKey,
    pub state_dir: &'a Path,
    pub config_file: Option<&'a Path>,
    /// The unlocked data directory, whose `update/` holds the update trust state.
    pub data_dir: Option<&'a Path>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io { path: path.to_owned(), source }
}

/// Stage everything into `dir` (emptied first) and write the manifest.
pub fn stage(dir: &Path, sources: &StageSources<'_>) -> Result<Manifest, StageError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;

    // The state directory first: its checkpoints then never name a record the store snapshot
    // lacks.
    if sources.state_dir.is_dir() {
        copy_tree(sources.state_dir, &dir.join(STATE_DIR), true)?;
    }
    if let Some(data_dir) = sources.data_dir {
        let update = crate::update::UpdatePaths::new(data_dir);
        if update.state_dir().is_dir() {
            copy_tree(&update.state_dir(), &dir.join(UPDATE_STATE_DIR), false)?;
        }
        if update.installs().is_file() {
            let target = dir.join(UPDATE_INSTALLS_FILE);
            create_parent(&target)?;
            std::fs::copy(update.installs(), &target).map_err(io(&update.installs()))?;
        }
    }
    if let Some(config) = sources.config_file {
        let target = dir.join(CONFIG_FILE);
        create_parent(&target)?;
        std::fs::copy(config, &target).map_err(io(config))?;
    }
    let key_path = dir.join(STORE_KEY_FILE);
    create_parent(&key_path)?;
    write_private(&key_path, sources.store_key.to_hex().as_bytes())?;

    let snapshot = dir.join(STORE_FILE);
    create_parent(&snapshot)?;
    snapshot_store(sources.store, &snapshot)?;
    let store = store_facts(&snapshot, sources.store_key)?;

    let mut files = BTreeMap::new();
    for path in list_files(dir)? {
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
        let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
        files.insert(rel, FileEntry { bytes, sha256: file_sha256(&path).map_err(io(&path))? });
    }
    let manifest = Manifest { format: 1, created_at: jiff::Timestamp::now().to_string(), files, store };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| StageError::Facts(e.to_string()))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, text).map_err(io(&manifest_path))?;
    Ok(manifest)
}

/// `VACUUM INTO`: SQLite copies the database as of one read transaction, so the copy is
/// consistent while other connections keep writing (WAL mode lets them). SQLCipher writes the
/// copy encrypted with the connection's key.
pub fn snapshot_store(store: &Store, target: &Path) -> Result<(), StageError> {
    let target_text = target.to_string_lossy().into_owned();
    store
        .conn()
        .execute("VACUUM INTO ?1", [&target_text])
        .map(|_| ())
        .map_err(|source| StageError::Snapshot { path: target.to_owned(), source })
}

/// Open a store snapshot and read its schema version, row counts and audit head.
pub fn store_facts(path: &Path, key: &StoreKey) -> Result<StoreFacts, StageError> {
    let store = Store::open_existing(path, key).map_err(|e| StageError::Facts(e.to_string()))?;
    let facts = read_facts(&store).map_err(|e| StageError::Facts(e.to_string()))?;
    drop(store);
    // Opening switched the copy to WAL; closing the last connection folds the WAL back in and
    // removes it, so nothing but the database file is left to back up.
    for extra in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{extra}", path.display()));
        if p.exists() {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    Ok(facts)
}

/// Schema version, rows per ordinary table, audit head.
pub fn read_facts(store: &Store) -> Result<StoreFacts, rusqlite::Error> {
    let conn = store.conn();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut rows = BTreeMap::new();
    for table in tables {
        let quoted = table.replace('"', "\"\"");
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM \"{quoted}\""), [], |r| r.get(0))?;
        rows.insert(table, n as u64);
    }
    let (audit_head_seq, audit_head_hash) = crate::audit::read_head(store)?;
    Ok(StoreFacts { schema_version: store.schema_version().map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?, rows, audit_head_seq, audit_head_hash })
}

fn create_parent(path: &Path) -> Result<(), StageError> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(io(parent)),
        None => Ok(()),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}

/// Copy regular files and directories (not sockets, links or devices); at the top level of the
/// state directory, skip the transient files.
fn copy_tree(from: &Path, to: &Path, top: bool) -> Result<(), StageError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        let name = entry.file_name();
        if top && TRANSIENT_STATE_FILES.iter().any(|t| name == *t) {
            continue;
        }
        // Temporary files, and the backups' own staging, scratch and lock (were the state
        // directory ever to hold the data directory, staging would copy itself endlessly).
        if name.to_string_lossy().ends_with(".tmp") || name.to_string_lossy().starts_with(".backup") {
            continue;
        }
        if kind.is_dir() {
            copy_tree(&path, &to.join(&name), false)?;
        } else if kind.is_file() {
            std::fs::copy(&path, to.join(&name)).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Every regular file under `dir`, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, StageError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(io(&d))? {
            let path = entry.map_err(io(&d))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// SHA-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
