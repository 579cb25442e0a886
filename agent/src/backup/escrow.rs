//! Escrow of the repository key at provisioning. `wardbox volume provision` makes the random
//! repository key when it makes the data volume, prints it on the console beside the recovery
//! key, and leaves it on the new (encrypted) volume in [`ESCROWED_KEY_FILE`]. The store does not
//! exist yet at that moment (the agent makes it at its first start), so the first use of the key
//! ([`super::key_or_create`]) adopts the file into the store and deletes it: the key on the
//! provisioning sheet is then the key of every backup. See "Keys" in `docs/backup.md`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use wardbox_backup::RepositoryKey;
use zeroize::Zeroizing;

/// The file, in the data directory (beside the store), that holds the key escrowed at
/// provisioning until the store adopts it. Mode 0600, on the encrypted volume only.
pub const ESCROWED_KEY_FILE: &str = ".backup-key.escrowed";

/// Errors making or adopting the escrowed key.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error("the backup key could not be made: {0}")]
    Random(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Where the escrowed key waits in `data_dir`.
pub fn escrowed_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ESCROWED_KEY_FILE)
}

/// At provisioning: make a random repository key and leave it in `data_dir` (the new volume's
/// root) for the store to adopt. Refuses to replace a key already waiting there. The caller
/// prints the returned key on the provisioning sheet only after this succeeded, so a sheet never
/// shows a key the box does not have.
pub fn provision_key(data_dir: &Path) -> Result<RepositoryKey, EscrowError> {
    let key = RepositoryKey::generate().map_err(|e| EscrowError::Random(e.to_string()))?;
    let path = escrowed_key_path(data_dir);
    let file_error = |e: std::io::Error| EscrowError::File { path: path.clone(), reason: e.to_string() };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(file_error)?;
    let written = file.write_all(key.to_hex().as_bytes()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(file_error(e));
    }
    Ok(key)
}

/// The key waiting in `data_dir`, if provisioning left one. A file that is there but unreadable
/// or malformed is an error (never silently replaced by a new key, which would not match the
/// sheet).
pub fn waiting_key(data_dir: &Path) -> Result<Option<RepositoryKey>, EscrowError> {
    let path = escrowed_key_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EscrowError::File { path, reason: e.to_string() }),
    };
    RepositoryKey::from_hex(&text)
        .map(Some)
        .map_err(|e| EscrowError::File { path, reason: e.to_string() })
}

/// Delete the waiting key once the store holds it.
pub fn remove_waiting_key(data_dir: &Path) -> Result<(), EscrowError> {
    let path = escrowed_key_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EscrowError::File { path, reason: e.to_string() }),
    }
}

/// The key as the provisioning sheet prints it: groups of eight hex digits (what
/// `--key-file` and the admin page's escrow sheet accept).
pub fn grouped(key: &RepositoryKey) -> Zeroizing<String> {
    let hex = key.to_hex();
    Zeroizing::new(hex.as_bytes().chunks(8).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_provisioned_key_waits_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = provision_key(dir.path()).unwrap();
        let mode = std::fs::metadata(escrowed_key_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = waiting_key(dir.path()).unwrap().unwrap();
        assert_eq!(back.fingerprint(), key.fingerprint());
        assert_eq!(RepositoryKey::from_hex(&grouped(&key)).unwrap().fingerprint(), key.fingerprint());
        // A second provisioning onto the same directory does not replace the key on the sheet.
        assert!(matches!(provision_key(dir.path()), Err(EscrowError::File { .. })));
        assert_eq!(waiting_key(dir.path()).unwrap().unwrap().fingerprint(), key.fingerprint());
        remove_waiting_key(dir.path()).unwrap();
        assert!(waiting_key(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_damaged_waiting_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(escrowed_key_path(dir.path()), "not a key").unwrap();
        let err = waiting_key(dir.path()).unwrap_err().to_string();
        assert!(err.contains(ESCROWED_KEY_FILE) && err.contains("64 hexadecimal"), "{err}");
    }
}
