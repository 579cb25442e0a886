//! A backup disk that stays mounted but answers with I/O errors (EIO), as a USB disk with bad
//! sectors or a loose cable does: the backup fails with an error naming an I/O error on the
//! destination (not "full", not "went away"), no snapshot is recorded, nothing of the
//! repository is removed, a disk that fails entirely is not taken for an empty one, and once
//! the disk works again the next run succeeds and both rustic's and the stock restic's
//! `check --read-data` are clean.
//!
//! The disk is a real filesystem that returns EIO: a FUSE filesystem (`failing_disk`) mounted on
//! the destination path, passing through to a directory until the test sets a fault. Needs
//! root, /dev/fuse, fusermount and python3-fusepy; fails naming what is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod failing_disk;
mod support;

use failing_disk::FailingDisk;
use support::{make_source, run_restic, text};
use wardbox_backup::{BackupError, BackupRepository, Destination, RETENTION, RepositoryKey};

/// Bytes the backup may write before the disk's writes start failing: well inside the run.
const FAIL_AFTER_BYTES: u64 = 2 << 20;

#[test]
fn a_disk_returning_io_errors_fails_the_backup_by_name_and_the_next_run_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, disk, usb, control) = (tmp.path().join("source"), tmp.path().join("disk"), tmp.path().join("usb"), tmp.path().join("control"));
    std::fs::create_dir(&disk).unwrap();
    std::fs::create_dir(&usb).unwrap();
    make_source(&source, 8 << 20);
    let key = RepositoryKey::generate().unwrap();
    let dest = Destination::LocalDirectory(usb.clone());
    let failing = FailingDisk::mount(&disk, &usb, &control);
    let repository_id = BackupRepository::init(&dest, &key).unwrap().repository_id().unwrap();

    // The disk's writes fail part way through the backup.
    failing.fail_writes_after(FAIL_AFTER_BYTES);
    let mut repo = BackupRepository::open(&dest, &key).unwrap();
    let err = repo.backup(&source, &["nightly"]).expect_err("a backup onto a disk whose writes fail must fail");
    let fired = failing.fired();
    assert!(fired.as_deref().is_some_and(|f| f.starts_with("write")), "the disk's fault did not fire: {fired:?}; outcome {err}");
    assert!(matches!(err, BackupError::DestinationIoError { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&usb.display().to_string()) && message.contains("I/O error"), "{message}");
    assert!(!message.contains("full") && !message.contains("went away"), "{message}");
    // The repository is still on the disk: nothing of it was taken for strays and removed.
    for part in ["config", "keys", "data", "index", "snapshots"] {
        assert!(disk.join(part).exists(), "{part} is gone from the disk after the I/O error");
    }

    // The disk fails entirely: opening it names the I/O error; it is neither "no repository"
    // nor "not mounted", and no repository is initialised over it.
    failing.fail_everything();
    for outcome in [BackupRepository::open(&dest, &key).map(|_| ()), BackupRepository::open_or_init(&dest, &key).map(|_| ())] {
        let err = outcome.expect_err("a disk that answers every request with EIO opens nothing");
        assert!(matches!(err, BackupError::DestinationIoError { operation: "open the destination", .. }), "{err:?}");
    }

    // The disk works again: no snapshot was recorded, the next run recovers, prune removes what
    // the failed run left, and the stock restic checks every byte.
    failing.heal();
    let mut repo = BackupRepository::open(&dest, &key).unwrap();
    assert_eq!(repo.repository_id().unwrap(), repository_id, "the same repository");
    assert!(repo.snapshots().unwrap().is_empty(), "the failed run recorded a snapshot");
    let snap = repo.backup(&source, &["nightly"]).unwrap();
    repo.apply_retention(&RETENTION, &rustic_core::jiff::Zoned::now()).unwrap();
    assert_eq!(repo.snapshots().unwrap().iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![snap.id.clone()]);
    let report = repo.check(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.warnings.is_empty(), "nothing left over: {report:?}");
    let out = run_restic(&usb, &key, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_restic(&usb, &key, &["snapshots", "--json"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&snap.id), "{}", text(&out));
    drop(failing);
}

/// One file the disk cannot read (a bad sector under the repository's `config`) is not a pulled
/// disk: the check after every operation for a repository that went away must not take a
/// `config` it cannot stat for a missing one, and remove the repository's directories on the
/// disk as strays (it did: `data`, `index`, `snapshots` and `keys` were deleted).
#[test]
fn a_config_the_disk_cannot_read_is_not_taken_for_a_pulled_disk_and_nothing_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, disk, usb, control) = (tmp.path().join("source"), tmp.path().join("disk"), tmp.path().join("usb"), tmp.path().join("control"));
    std::fs::create_dir(&disk).unwrap();
    std::fs::create_dir(&usb).unwrap();
    make_source(&source, 1 << 20);
    let key = RepositoryKey::generate().unwrap();
    let dest = Destination::LocalDirectory(usb.clone());
    let failing = FailingDisk::mount(&disk, &usb, &control);
    BackupRepository::init(&dest, &key).unwrap();

    // The repository is open (its config read); then the config's sector goes bad.
    let mut repo = BackupRepository::open(&dest, &key).unwrap();
    failing.fail_path("config");
    let outcome = repo.backup(&source, &["nightly"]);
    let fired = failing.fired();
    assert!(fired.as_deref().is_some_and(|f| f.ends_with(" /config")), "nothing asked the disk for the config: {fired:?}; {outcome:?}");
    for part in ["config", "keys", "data", "index", "snapshots"] {
        assert!(disk.join(part).exists(), "{part} was removed from the disk: {outcome:?}");
    }
    // rustic wrote every pack, the index and the snapshot: the backup stands.
    let snap = outcome.expect("the backup wrote everything it needed");

    failing.heal();
    let repo = BackupRepository::open(&dest, &key).unwrap();
    assert_eq!(repo.snapshots().unwrap().iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![snap.id.clone()]);
    let report = repo.check(true).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report:?}");
    drop(failing);
}
