//! One error type for everything between the stick and the slot, with a stable exit code per
//! class. The codes are documented in `docs/update.md`; scripts and the admin page depend on
//! them, so a code never changes meaning.

use std::path::PathBuf;

use crate::decide::Refusal;
use crate::manifest::ManifestError;

/// Stable exit codes of `wardbox-bundle` and (later) `wardbox update`.
pub mod exit {
    /// Operational failure on the box's side (state directory, slot device, I/O).
    pub const OPERATIONAL: u8 = 1;
    /// Usage error (clap's own code).
    pub const USAGE: u8 = 2;
    /// Signatures or thresholds do not verify against the box's trusted root.
    pub const BAD_SIGNATURE: u8 = 10;
    /// Version not higher than the installed one (or older TUF metadata than trusted).
    pub const DOWNGRADE: u8 = 11;
    /// Another product, architecture, or a starting version this box does not meet.
    pub const INCOMPATIBLE: u8 = 12;
    /// A target or metadata file is missing, truncated, too long or does not hash to the signed
    /// value; or the signed manifest is malformed.
    pub const CORRUPT: u8 = 13;
    /// Not enough room in the staging directory or the slot.
    pub const NO_SPACE: u8 = 14;
    /// The bundle directory holds a file the signed metadata does not name.
    pub const UNKNOWN_FILE: u8 = 15;
    /// Metadata expired at the box's trusted time.
    pub const EXPIRED: u8 = 16;
    /// The slot did not read back with the signed hash after writing.
    pub const WRITE_VERIFY: u8 = 17;
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The metadata's signatures do not meet the thresholds of the trusted root.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Older TUF metadata than the box already trusts (a root rollback).
    #[error("metadata rollback refused: {0}")]
    MetadataRollback(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Metadata or a target is missing, malformed, the wrong size or the wrong hash.
    #[error("corrupt bundle: {0}")]
    Corrupt(String),
    #[error("corrupt bundle: {0}")]
    Manifest(#[from] ManifestError),
    #[error("no space: {what} needs {needed} bytes, {available} available")]
    NoSpace { what: String, needed: u64, available: u64 },
    #[error("unknown file in the bundle directory: {path} ({why}); the signed metadata does not name it")]
    UnknownFile { path: PathBuf, why: &'static str },
    #[error("slot {slot} did not read back as written: expected sha256 {expected}, read {actual}")]
    WriteVerify { slot: PathBuf, expected: String, actual: String },
    /// The box's own trusted root does not parse or does not verify itself: the state directory
    /// is damaged (a box-side problem, not the stick's).
    #[error("the box's trusted root is not usable: {0}")]
    TrustedRoot(String),
    /// The state directory holds no trusted root yet.
    #[error("no trusted root in {0}: provision the state directory with the image's root.json first")]
    NoTrustedRoot(PathBuf),
    #[error("refusing to write {0}: it is the running slot")]
    RunningSlot(PathBuf),
    #[error("the bundle has no {0} target")]
    NoSuchTarget(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A failure inside the TUF library that is none of the above (a bug or an I/O error).
    #[error("verifying the bundle failed: {0}")]
    Tuf(String),
}

impl UpdateError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> UpdateError {
        let path = path.into();
        move |source| UpdateError::Io { what, path, source }
    }

    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            UpdateError::BadSignature(_) => exit::BAD_SIGNATURE,
            UpdateError::MetadataRollback(_) => exit::DOWNGRADE,
            UpdateError::Refused(r) => match r {
                Refusal::Downgrade { .. } => exit::DOWNGRADE,
                Refusal::Expired { .. } | Refusal::CreatedAfterExpiry { .. } => exit::EXPIRED,
                Refusal::OtherProduct { .. } | Refusal::OtherArchitecture { .. } | Refusal::StartingVersion { .. } => {
                    exit::INCOMPATIBLE
                }
            },
            UpdateError::Corrupt(_) | UpdateError::Manifest(_) => exit::CORRUPT,
            UpdateError::NoSpace { .. } => exit::NO_SPACE,
            UpdateError::UnknownFile { .. } => exit::UNKNOWN_FILE,
            UpdateError::WriteVerify { .. } => exit::WRITE_VERIFY,
            UpdateError::NoTrustedRoot(_)
            | UpdateError::TrustedRoot(_)
            | UpdateError::RunningSlot(_)
            | UpdateError::NoSuchTarget(_)
            | UpdateError::Io { .. }
            | UpdateError::Tuf(_) => exit::OPERATIONAL,
        }
    }
}

/// Sorts tough's errors into the classes above. Anything unexpected stays `Tuf` (operational),
/// never silently "ok".
pub(crate) fn from_tough(e: tough::error::Error) -> UpdateError {
    use tough::error::Error as E;
    let text = e.to_string();
    match e {
        E::VerifyMetadata { .. } | E::VerifyRoleMetadata { .. } => UpdateError::BadSignature(text),
        E::VerifyTrustedMetadata { .. } | E::ParseTrustedMetadata { .. } => UpdateError::TrustedRoot(text),
        E::OlderMetadata { .. } | E::OlderSnapshotInTimestamp { .. } | E::SnapshotRoleRollback { .. } => {
            UpdateError::MetadataRollback(text)
        }
        E::ParseMetadata { .. }
        | E::HashMismatch { .. }
        | E::MaxSizeExceeded { .. }
        | E::MaxUpdatesExceeded { .. }
        | E::MetaMissing { .. }
        | E::MissingSnapshotMeta { .. }
        | E::SnapshotTargetsMetaMissing { .. }
        | E::SnapshotRoleMissing { .. }
        | E::TimestampMetaLength { .. }
        | E::VersionMismatch { .. }
        | E::SpecVersion { .. }
        | E::Transport { .. } => UpdateError::Corrupt(text),
        _ => UpdateError::Tuf(text),
    }
}
