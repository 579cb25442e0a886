//! Rotation of the repository key (the escrowed one: the box backs up with the key on its escrow
//! sheet), when someone who saw the sheet leaves or the sheet is lost. `wardbox backup
//! rotate-key` and the admin page's "Rotate the key" call [`rotate_key`]; they print the new
//! sheet and audit the rotation by fingerprint.
//!
//! [`adopt_key`] brings a second repository of the box (a disk that was not plugged in at the
//! rotation) onto the box's new key, with the old key typed from the old sheet.
//!
//! The order keeps the box able to back up at every step, and the repository openable by a key
//! the box holds:
//!
//! 1. the box's backup lock (no backup, drill or restore meanwhile);
//! 2. a new random key is added to the repository and verified to open it alone
//!    (`wardbox_backup::rotate::add_verified_key`); an unreachable destination, or a key that
//!    does not open it, fails here with nothing changed;
//! 3. the store's key is replaced by the new one (the box's backups use it from now on); if
//!    the store cannot take it, the new key file is removed again: nothing changed;
//! 4. every other key file is removed from the repository, and the old key is checked to be
//!    refused (`retire_other_keys`). If this step fails while the old key still opens the
//!    repository (a server that refuses deletion), the rotation is rolled back: the store takes
//!    the old key again and the new key file is removed (if the server lets it), so nothing
//!    changed and the old sheet stays valid ([`RotateError::RolledBack`]). If the old key no
//!    longer opens it, or that cannot be told (the server went away), the box keeps the new
//!    key, which opens the repository: [`RotateError::Incomplete`] says so, its sheet must be
//!    printed, and running the rotation again finishes it (it removes every key but its own).

use serde_json::json;
use wardbox_backup::rotate::{self, AddedKey};
use wardbox_backup::{BackupError, BackupRepository, Destination, RepositoryKey};

use super::{RunError, RunLock};
use crate::store::Store;

/// A finished rotation: fingerprints and key file ids only (the key file ids are the names
/// `restic key list` shows; they reveal nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub destination: String,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    pub repository_id: String,
    pub new_key_id: String,
    /// Key files removed: the old key's, and any added by hand.
    pub removed_key_ids: Vec<String>,
}

/// Why a rotation did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Nothing changed: the repository and the store hold the old key only.
    #[error("the backup key was not rotated (nothing changed): {0}")]
    NotRotated(RunError),
    /// Nothing changed: the box has no key yet.
    #[error("the backup key was not rotated (nothing changed): this box has no backup key yet, so there is nothing to rotate; back up first")]
    NoKey,
    /// Nothing changed: the store could not take the new key (its key file was removed again).
    #[error("the backup key was not rotated (nothing changed): the store could not take the new key: {0}")]
    StoreNotUpdated(String),
    /// Removing the old key failed while it still opened the repository; the box went back to
    /// it, so nothing changed and the old escrow sheet stays valid.
    #[error(
        "the backup key was not rotated (nothing changed): removing the old key from the repository failed ({error}), so this box keeps its key and the old escrow sheet stays valid{}",
        .leftover.as_deref().map(|l| format!("; {l}")).unwrap_or_default()
    )]
    RolledBack { error: BackupError, leftover: Option<String> },
    /// The box holds and uses the new key, which opens the repository; removing the old key
    /// failed, so it may still open the repository.
    #[error(
        "the backup key was rotated only in part: this box now backs up with the new key (fingerprint {new}), which opens the repository, but removing the old key (fingerprint {old}) failed, so it may still open the repository: {error}. Run `wardbox backup rotate-key` again when the destination is reachable and works again: it removes every key but its own",
        new = .0.new_fingerprint,
        old = .0.old_fingerprint,
        error = .0.error
    )]
    Incomplete(Box<PartialRotation>),
}

/// What a rotation that finished only in part left behind.
#[derive(Debug)]
pub struct PartialRotation {
    /// The key the box holds and backs up with now.
    pub new_key: RepositoryKey,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    pub added: AddedKey,
    /// Why the old key could not be retired.
    pub error: BackupError,
}

impl RotateError {
    /// The key the box uses after this failure, when it is a new one (its sheet must be
    /// printed: the box backs up with it).
    pub fn key_in_use(&self) -> Option<&RepositoryKey> {
        match self {
            RotateError::Incomplete(partial) => Some(&partial.new_key),
            _ => None,
        }
    }

    /// Refused because another backup, restore or drill was running.
    pub fn is_busy(&self) -> bool {
        matches!(self, RotateError::NotRotated(RunError::Busy(_)))
    }

    /// Whether the store's key changed (only when the rotation finished only in part).
    pub fn changed(&self) -> bool {
        matches!(self, RotateError::Incomplete(_))
    }
}

fn not_rotated(e: impl Into<RunError>) -> RotateError {
    RotateError::NotRotated(e.into())
}

/// Rotate the key of the repository at `destination` (see the module comment). Returns the
/// new key, which the caller prints on a new escrow sheet, and what was done.
pub fn rotate_key(store: &Store, data_dir: &std::path::Path, destination: &Destination) -> Result<(RepositoryKey, Rotation), RotateError> {
    let _lock = RunLock::acquire(data_dir, "key rotation").map_err(not_rotated)?;
    let old = super::stored_key(store).map_err(not_rotated)?.ok_or(RotateError::NoKey)?;
    let new = RepositoryKey::generate().map_err(|e| not_rotated(RunError::Key(e.to_string())))?;
    let added = rotate::add_verified_key(destination, &old, &new).map_err(not_rotated)?;

    if let Err(e) = replace_stored_key(store, &old, &new) {
        let note = leftover_note(rotate::remove_added_key(destination, &old, &added), &added);
        return Err(RotateError::StoreNotUpdated(match note {
            Some(note) => format!("{e}; {note}"),
            None => e,
        }));
    }

    let (old_fingerprint, new_fingerprint) = (old.fingerprint(), new.fingerprint());
    match rotate::retire_other_keys(destination, &new, &old) {
        Ok(retired) => Ok((
            new,
            Rotation {
                destination: destination.location(),
                old_fingerprint,
                new_fingerprint,
                repository_id: added.repository_id,
                new_key_id: retired.kept_key_id,
                removed_key_ids: retired.removed_key_ids,
            },
        )),
        Err(error) => {
            // While the old key still opens the repository, go back to it: nothing changed.
            let old_still_opens = BackupRepository::open(destination, &old).is_ok();
            if old_still_opens && replace_stored_key(store, &new, &old).is_ok() {
                let leftover = leftover_note(rotate::remove_added_key(destination, &old, &added), &added);
                return Err(RotateError::RolledBack { error, leftover });
            }
            Err(RotateError::Incomplete(Box::new(PartialRotation { new_key: new, old_fingerprint, new_fingerprint, added, error })))
        }
    }
}

/// When the new key file could not be removed again: a note saying so (harmless: its key was
/// never shown and is forgotten; the next rotation removes the file).
fn leftover_note(removed: Result<(), BackupError>, added: &AddedKey) -> Option<String> {
    removed.err().map(|e| {
        format!(
            "the new key file {} could not be removed from the repository again ({e}); its key was never shown and is forgotten, and the next rotation removes the file",
            added.new_key_id
        )
    })
}

/// Why [`adopt_key`] did not finish.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("this box has no backup key yet: back up first")]
    NoKey,
    #[error("the key given is already this box's key: nothing to adopt")]
    SameKey,
    #[error(transparent)]
    Repository(#[from] BackupError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// A second repository brought onto the box's key (see [`adopt_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub destination: String,
    /// The key that opened it (from the old sheet), and the box's key it now has instead.
    pub old_fingerprint: String,
    pub key_fingerprint: String,
    pub repository_id: String,
    pub new_key_id: String,
    pub removed_key_ids: Vec<String>,
}

/// After a rotation, bring another repository of this box (a second backup disk, still on the
/// key before the rotation) onto the box's current key: opened with `old` (typed from the old
/// sheet), the box's key is added and verified, every other key file removed, and `old`
/// checked to be refused. The store does not change. A failure before the removal leaves the
/// repository as it was; a failure during it leaves both keys, and running it again finishes
/// (the box's key opening it already, only the others are removed).
pub fn adopt_key(store: &Store, data_dir: &std::path::Path, destination: &Destination, old: &RepositoryKey) -> Result<Adoption, AdoptError> {
    let _lock = RunLock::acquire(data_dir, "key adoption").map_err(RunError::from)?;
    let current = super::stored_key(store)?.ok_or(AdoptError::NoKey)?;
    if current.fingerprint() == old.fingerprint() {
        return Err(AdoptError::SameKey);
    }
    // The box's key opens it already when an earlier run got as far as adding it.
    let repository_id = match BackupRepository::open(destination, &current) {
        Ok(repo) => repo.repository_id()?,
        Err(BackupError::WrongKey { .. }) => rotate::add_verified_key(destination, old, &current)?.repository_id,
        Err(e) => return Err(AdoptError::Repository(e)),
    };
    let retired = rotate::retire_other_keys(destination, &current, old)?;
    Ok(Adoption {
        destination: destination.location(),
        old_fingerprint: old.fingerprint(),
        key_fingerprint: current.fingerprint(),
        repository_id,
        new_key_id: retired.kept_key_id,
        removed_key_ids: retired.removed_key_ids,
    })
}

/// Replace the store's key, only if it is still `old` (another rotation at the same moment is
/// already excluded by the lock; this also catches a store changed under us).
fn replace_stored_key(store: &Store, old: &RepositoryKey, new: &RepositoryKey) -> Result<(), String> {
    let changed = store
        .conn()
        .execute(
            "UPDATE backup_key SET key_hex = ?1, fingerprint = ?2, created_at = ?3 WHERE id = 1 AND fingerprint = ?4",
            rusqlite::params![new.to_hex().as_str(), new.fingerprint(), jiff::Timestamp::now().to_string(), old.fingerprint()],
        )
        .map_err(|e| e.to_string())?;
    if changed != 1 {
        return Err("the backup key in the store changed during the rotation".into());
    }
    Ok(())
}

/// The audit record's detail of a rotation, good or failed (`via`: `cli` or `web`):
/// fingerprints and key file ids, never a key.
pub fn rotation_audit_detail(via: &str, destination: &Destination, outcome: &Result<(RepositoryKey, Rotation), RotateError>) -> serde_json::Value {
    match outcome {
        Ok((_, r)) => json!({
            "action": "backup_key_rotated",
            "ok": true,
            "via": via,
            "destination": r.destination,
            "old_key_fingerprint": r.old_fingerprint,
            "new_key_fingerprint": r.new_fingerprint,
            "repository_id": r.repository_id,
            "new_key_id": r.new_key_id,
            "removed_key_ids": r.removed_key_ids,
        }),
        Err(RotateError::Incomplete(partial)) => json!({
            "action": "backup_key_rotated",
            "ok": false,
            "complete": false,
            "via": via,
            "destination": destination.location(),
            "old_key_fingerprint": partial.old_fingerprint,
            "new_key_fingerprint": partial.new_fingerprint,
            "repository_id": partial.added.repository_id,
            "new_key_id": partial.added.new_key_id,
            "error": partial.error.to_string(),
        }),
        Err(e) => json!({
            "action": "backup_key_rotated",
            "ok": false,
            "changed": false,
            "rolled_back": matches!(e, RotateError::RolledBack { .. }),
            "via": via,
            "destination": destination.location(),
            "error": e.to_string(),
        }),
    }
}
