//! Errors of the backup crate, each naming the problem so the person at the console knows what
//! to do. rustic's own errors are long and generic; [`classify`] turns the ones an operator can
//! act on (wrong key, full destination, missing repository) into their own variants.

use std::path::PathBuf;

/// Everything that can go wrong with a backup repository.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The key given does not open this repository.
    #[error("the backup key does not open the repository at {location}: wrong key (check the escrowed key, not the recovery key)")]
    WrongKey { location: String },
    /// Nothing that looks like a repository at the destination.
    #[error("there is no backup repository at {location} (no `config` file); initialise it first")]
    NotARepository { location: String },
    /// `init` on a destination that already holds a repository.
    #[error("{location} already holds a backup repository; refusing to initialise over it")]
    AlreadyARepository { location: String },
    /// The destination directory is missing or unreadable (stick not mounted or pulled).
    #[error("the backup destination {path} is not available: {reason}")]
    DestinationUnavailable { path: PathBuf, reason: String },
    /// A REST server that does not answer (down, wrong address, refused, TLS failed).
    #[error("the backup server {location} cannot be reached: {reason}")]
    ServerUnreachable { location: String, reason: String },
    /// The REST server answered 401: the user or password is wrong, or none was configured for
    /// a server that asks for one. The password is never named.
    #[error("the backup server {location} refused the user name and password (HTTP 401 Unauthorized): check [backup] rest_user and the password in rest_password_file")]
    CredentialsRefused { location: String },
    /// Credentials for a plain http URL: basic authentication would send the password across
    /// the LAN in clear with every request.
    #[error("refusing to send the backup server's password over plain http ({location}): use an https rest_url")]
    CredentialsOverHttp { location: String },
    /// The file that should hold the REST server's password cannot be read, or is empty.
    #[error("the password file for the backup server, {path}, cannot be used: {reason}")]
    CredentialsUnreadable { path: PathBuf, reason: String },
    /// The destination ran out of space (or the file size limit) while writing.
    #[error("the backup destination {location} is full (no space left while writing); no snapshot was recorded")]
    DestinationFull { location: String },
    /// The destination answered a read or write with an I/O error (EIO): a disk that is still
    /// mounted but failing (bad sectors, a loose cable, a dying stick). Not "full", and not
    /// "gone": the disk is there and must be checked or replaced.
    #[error("the backup destination {location} returned an I/O error while trying to {operation} ({detail}): the disk may be failing; check it, or back up to another disk")]
    DestinationIoError { location: String, operation: &'static str, detail: String },
    /// The repository has no snapshot to restore.
    #[error("the repository at {location} has no snapshot")]
    NoSnapshot { location: String },
    /// `check` found damage; restore refuses a damaged repository.
    #[error("the repository at {location} is damaged ({count} problem(s)); first: {first}")]
    Damaged { location: String, count: usize, first: String },
    /// A restore target that is not an empty directory.
    #[error("restore target {path} must be an empty or absent directory")]
    TargetNotEmpty { path: PathBuf },
    /// The source to back up is not a directory.
    #[error("backup source {path} is not a directory")]
    SourceNotADirectory { path: PathBuf },
    /// Any other failure inside rustic, with its short message.
    #[error("backup repository {location}: {operation} failed: {message}")]
    Repository { location: String, operation: &'static str, message: String },
}

/// Turn a rustic error from `operation` on the repository at `location` into a [`BackupError`].
pub(crate) fn classify(location: &str, operation: &'static str, err: &rustic_core::RusticError) -> BackupError {
    if err.is_incorrect_password() {
        return BackupError::WrongKey { location: location.to_owned() };
    }
    if refused_credentials(err) {
        return BackupError::CredentialsRefused { location: location.to_owned() };
    }
    match io_errno_in_chain(err) {
        Some(errno) if is_out_of_space(errno) => return BackupError::DestinationFull { location: location.to_owned() },
        Some(libc_errno::EIO) => return io_error(location, operation, &std::io::Error::from_raw_os_error(libc_errno::EIO)),
        _ => {}
    }
    BackupError::Repository { location: location.to_owned(), operation, message: err.display_log() }
}

/// Whether a REST server answered 401 Unauthorized somewhere in the error's chain (reqwest's
/// "HTTP status client error (401 Unauthorized)", under rustic's "Backoff failed").
pub(crate) fn refused_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.to_string().contains("401 Unauthorized") {
            return true;
        }
        current = e.source();
    }
    false
}

/// The destination's I/O error `io` (EIO) during `operation`, as [`BackupError::DestinationIoError`].
pub(crate) fn io_error(location: &str, operation: &'static str, io: &std::io::Error) -> BackupError {
    BackupError::DestinationIoError { location: location.to_owned(), operation, detail: io.to_string() }
}

/// Whether `io` is the I/O error (EIO) of a failing disk.
pub(crate) fn is_io_error(io: &std::io::Error) -> bool {
    io.raw_os_error() == Some(libc_errno::EIO)
}

/// ENOSPC (disk full), EDQUOT (quota) and EFBIG (file size limit) all mean "the destination
/// cannot take more".
fn is_out_of_space(errno: i32) -> bool {
    [libc_errno::ENOSPC, libc_errno::EDQUOT, libc_errno::EFBIG].contains(&errno)
}

/// The raw OS error of the first `std::io::Error` in the source chain, if any.
fn io_errno_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        current = e.source();
    }
    None
}

/// The Linux errno values we classify (stable kernel ABI).
mod libc_errno {
    pub const EIO: i32 = 5;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EDQUOT: i32 = 122;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustic_core::{ErrorKind, RusticError};

    #[test]
    fn out_of_space_in_the_source_chain_is_destination_full() {
        for errno in [28, 27, 122] {
            let err = RusticError::with_source(ErrorKind::InputOutput, "write failed", std::io::Error::from_raw_os_error(errno));
            assert!(matches!(classify("/mnt/usb", "backup", &err), BackupError::DestinationFull { .. }), "errno {errno}");
        }
        let other = RusticError::with_source(ErrorKind::InputOutput, "x", std::io::Error::from_raw_os_error(13));
        assert!(matches!(classify("/mnt/usb", "backup", &other), BackupError::Repository { .. }));
    }

    #[test]
    fn an_io_error_in_the_source_chain_names_the_io_error_not_a_full_disk() {
        let err = RusticError::with_source(ErrorKind::InputOutput, "write failed", std::io::Error::from_raw_os_error(5));
        let classified = classify("/mnt/usb", "back up", &err);
        assert!(matches!(classified, BackupError::DestinationIoError { operation: "back up", .. }), "{classified}");
        let message = classified.to_string();
        assert!(message.contains("/mnt/usb") && message.contains("I/O error") && message.contains("back up"), "{message}");
        assert!(!message.contains("full"), "{message}");
    }
}
