//! One backup, restore or drill at a time on a box.
//!
//! Two runs at once would share the staging and scratch directories (one deleting what the
//! other is writing) and race on the repository (a prune while a backup writes packs deletes
//! them). So every run takes an exclusive, non-blocking `flock` on `<data_dir>/.backup.lock`;
//! a second run is **refused** at once with [`Busy`], naming what holds the lock since when,
//! rather than waiting: the nightly schedule tries again at its next check, and a person who
//! pressed "back up now" sees that a run is already going.
//!
//! The kernel drops the lock when its holder exits, however it exits, so a crash never leaves
//! a stale lock. The file's contents (kind, process id, start time) only serve the message.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file, on the data volume beside the store.
pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(".backup.lock")
}

/// Another run holds the lock (or the lock file cannot be used).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another backup, restore or drill is running on this box ({holder}); try again when it has finished")]
    Busy { holder: String },
    #[error("cannot use the backup lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held for the whole of a run; released on drop (and by the kernel if the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: Flock<std::fs::File>,
}

impl RunLock {
    /// Take the lock for a run of `kind` (`backup`, `drill`, `restore`), or say who has it.
    pub fn acquire(data_dir: &Path, kind: &str) -> Result<RunLock, LockError> {
        let path = lock_path(data_dir);
        let io = |source| LockError::Io { path: path.clone(), source };
        let file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "a run that just started".to_owned() } else { holder.to_owned() };
                return Err(LockError::Busy { holder });
            }
        };
        let note = format!("{kind} by process {} since {}", std::process::id(), jiff::Timestamp::now());
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(note.as_bytes()).map_err(io)?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_run_is_refused_naming_the_first_and_may_go_once_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "backup").unwrap();
        let err = RunLock::acquire(dir.path(), "drill").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Busy { .. }), "{text}");
        assert!(text.contains("another backup, restore or drill is running") && text.contains("backup by process"), "{text}");
        drop(first);
        RunLock::acquire(dir.path(), "drill").unwrap();
    }
}
