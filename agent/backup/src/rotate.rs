//! Rotation of the repository key, in two steps with the caller's own step between them (the
//! box keeps its key in its store, and must hold the new key before the old one goes):
//!
//! 1. [`add_verified_key`]: open the repository with the key in use, add the new key (a new key
//!    file wrapping the same master key, `restic key add`), then open the repository again with
//!    the new key alone and check it is the same repository and the new key file that opened
//!    it. On any failure the new key file is removed again, so the repository is as it was.
//! 2. [`retire_other_keys`]: open with the new key, remove every other key file (the old
//!    escrow key, and any key someone added by hand with `restic key add`: after a rotation only
//!    the new sheet opens the repository), then check that the old key is refused.
//!
//! What rotation cannot do: the master key stays the same (restic's format wraps it per key;
//! re-encrypting every pack would mean a new repository). Whoever copied a key file while
//! holding its password can still unwrap the master key from that copy. See "Keys" in
//! `docs/backup.md`.

use crate::error::BackupError;
use crate::key::RepositoryKey;
use crate::repo::{BackupRepository, Destination};

/// The new key, added and verified (step 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedKey {
    /// The repository's id (from its `config`), the same for both keys.
    pub repository_id: String,
    /// The key file the key in use opened.
    pub previous_key_id: String,
    /// The key file just written for the new key.
    pub new_key_id: String,
}

/// What step 2 removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKeys {
    /// The key file left: the new key's.
    pub kept_key_id: String,
    /// Every key file removed, sorted.
    pub removed_key_ids: Vec<String>,
}

fn rotation_failed(destination: &Destination, operation: &'static str, message: String) -> BackupError {
    BackupError::Repository { location: destination.location(), operation, message }
}

/// Step 1: add `new` to the repository that `current` opens, and check that `new` alone opens
/// it. An unreachable destination or a `current` that does not open the repository fails
/// before anything is written. A failure after the new key file was written removes it again
/// (if that removal fails too, the error says so: the stray key file's password was never
/// shown to anyone, and the next rotation removes it).
pub fn add_verified_key(destination: &Destination, current: &RepositoryKey, new: &RepositoryKey) -> Result<AddedKey, BackupError> {
    let repo = BackupRepository::open(destination, current)?;
    let repository_id = repo.repository_id()?;
    let previous_key_id = repo.opened_with_key_id()?;
    let new_key_id = repo.add_key(new)?;
    let verified = (|| {
        let reopened = BackupRepository::open(destination, new)?;
        let (reopened_id, opened_with) = (reopened.repository_id()?, reopened.opened_with_key_id()?);
        if reopened_id != repository_id || opened_with != new_key_id {
            return Err(rotation_failed(
                destination,
                "verify the new key",
                format!("the new key opened repository {reopened_id} with key file {opened_with}, not repository {repository_id} with key file {new_key_id}"),
            ));
        }
        Ok(())
    })();
    match verified {
        Ok(()) => Ok(AddedKey { repository_id, previous_key_id, new_key_id }),
        Err(e) => Err(match repo.remove_key(&new_key_id) {
            Ok(()) => e,
            Err(undo) => rotation_failed(
                destination,
                "verify the new key",
                format!("{e}; and the new key file {new_key_id} could not be removed again ({undo}): the next rotation removes it"),
            ),
        }),
    }
}

/// Undo step 1 when the caller could not keep the new key: remove its key file, opening the
/// repository with the key still in use.
pub fn remove_added_key(destination: &Destination, current: &RepositoryKey, added: &AddedKey) -> Result<(), BackupError> {
    BackupRepository::open(destination, current)?.remove_key(&added.new_key_id)
}

/// Step 2: with `new` (added by step 1 and now the key in use), remove every other key file,
/// then check that `old` no longer opens the repository.
pub fn retire_other_keys(destination: &Destination, new: &RepositoryKey, old: &RepositoryKey) -> Result<RetiredKeys, BackupError> {
    let repo = BackupRepository::open(destination, new)?;
    let kept_key_id = repo.opened_with_key_id()?;
    let removed_key_ids: Vec<String> = repo.key_ids()?.into_iter().filter(|id| *id != kept_key_id).collect();
    for id in &removed_key_ids {
        repo.remove_key(id)?;
    }
    let left = repo.key_ids()?;
    if left != [kept_key_id.clone()] {
        return Err(rotation_failed(destination, "retire the old keys", format!("key files left after removing the others: {left:?}")));
    }
    match BackupRepository::open(destination, old) {
        Err(BackupError::WrongKey { .. }) => Ok(RetiredKeys { kept_key_id, removed_key_ids }),
        Ok(_) => Err(rotation_failed(destination, "retire the old keys", "the old key still opens the repository".into())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn repository() -> (tempfile::TempDir, Destination, RepositoryKey) {
        let dir = tempfile::tempdir().unwrap();
        let destination = Destination::LocalDirectory(dir.path().join("repo"));
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        let key = RepositoryKey::generate().unwrap();
        BackupRepository::init(&destination, &key).unwrap();
        (dir, destination, key)
    }

    #[test]
    fn after_both_steps_only_the_new_key_opens_the_repository() {
        let (_dir, destination, old) = repository();
        // A key someone added by hand goes too.
        let stray = RepositoryKey::generate().unwrap();
        BackupRepository::open(&destination, &old).unwrap().add_key(&stray).unwrap();
        let new = RepositoryKey::generate().unwrap();
        let added = add_verified_key(&destination, &old, &new).unwrap();
        assert_ne!(added.previous_key_id, added.new_key_id);
        assert_eq!(BackupRepository::open(&destination, &new).unwrap().key_ids().unwrap().len(), 3);
        let retired = retire_other_keys(&destination, &new, &old).unwrap();
        assert_eq!(retired.kept_key_id, added.new_key_id);
        assert_eq!(retired.removed_key_ids.len(), 2);
        assert!(retired.removed_key_ids.contains(&added.previous_key_id));
        for gone in [&old, &stray] {
            assert!(matches!(BackupRepository::open(&destination, gone), Err(BackupError::WrongKey { .. })));
        }
        let repo = BackupRepository::open(&destination, &new).unwrap();
        assert_eq!(repo.key_ids().unwrap(), [added.new_key_id]);
        assert_eq!(repo.repository_id().unwrap(), added.repository_id);
    }

    #[test]
    fn undoing_step_one_leaves_the_repository_as_it_was() {
        let (_dir, destination, old) = repository();
        let before = BackupRepository::open(&destination, &old).unwrap().key_ids().unwrap();
        let new = RepositoryKey::generate().unwrap();
        let added = add_verified_key(&destination, &old, &new).unwrap();
        remove_added_key(&destination, &old, &added).unwrap();
        assert_eq!(BackupRepository::open(&destination, &old).unwrap().key_ids().unwrap(), before);
        assert!(matches!(BackupRepository::open(&destination, &new), Err(BackupError::WrongKey { .. })));
    }

    #[test]
    fn a_key_that_does_not_open_the_repository_adds_nothing() {
        let (_dir, destination, old) = repository();
        let wrong = RepositoryKey::generate().unwrap();
        let new = RepositoryKey::generate().unwrap();
        assert!(matches!(add_verified_key(&destination, &wrong, &new), Err(BackupError::WrongKey { .. })));
        assert_eq!(BackupRepository::open(&destination, &old).unwrap().key_ids().unwrap().len(), 1);
    }
}
