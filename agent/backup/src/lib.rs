//! Encrypted, deduplicated backups of the box's state in restic's repository format, written
//! with rustic_core, so that IT or an auditor can verify a backup with the stock `restic` tool.
//!
//! This crate knows repositories, keys and retention; it does not know the agent. The agent
//! (`wardbox backup …`) stages what to back up (a consistent snapshot of the store, the
//! configuration, certificates, trust roots, audit checkpoints) into a directory and hands it
//! here. See `docs/backup.md`.
//!
//! - [`key`]: the repository key (redacted, zeroed on drop).
//! - [`retention`]: which snapshots to keep (pure).
//! - [`repo`]: init, open, backup, list, check, restore, forget + prune.
//! - [`rotate`]: replace the repository key: add the new one, verify it, retire the others.
//! - [`progress`]: how far a running backup or restore is (bytes of its current step).
//! - [`error`]: one error type that names what the operator can act on.

pub mod error;
pub mod key;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod rotate;

pub use error::BackupError;
pub use key::{KeyError, RepositoryKey};
pub use progress::{ProgressReading, RunProgress};
pub use repo::{BackupRepository, CheckReport, Destination, RestCredentials, RestoreOutcome, RetentionOutcome, SnapshotInfo};
pub use retention::{RETENTION, Retention};
