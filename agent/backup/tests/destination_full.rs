//! A destination that cannot take more: the backup fails with a clear error, no snapshot is
//! recorded, and the next run (with space again) succeeds and leaves a repository that both
//! rustic and the stock restic check clean.
//!
//! A full USB disk is simulated with the process's file size limit (RLIMIT_FSIZE): writing a
//! pack past it fails with EFBIG, which reaches the backend exactly as ENOSPC does (an I/O
//! error from the write). A small tmpfs would be closer but needs mount rights. This file holds
//! one test so that the limit, which is process-wide, touches no other test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, Signal};
use support::{make_source, run_restic, text};
use wardbox_backup::{BackupError, BackupRepository, Destination, RETENTION, RepositoryKey};

#[test]
fn destination_full_records_no_snapshot_and_the_next_run_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, repo_dir) = (tmp.path().join("source"), tmp.path().join("repo"));
    std::fs::create_dir(&repo_dir).unwrap();
    make_source(&source, 8 << 20);
    let key = RepositoryKey::generate().unwrap();
    let dest = Destination::LocalDirectory(repo_dir.clone());
    let mut repo = BackupRepository::init(&dest, &key).unwrap();

    // Past the limit the kernel sends SIGXFSZ (which would kill the process) and the write
    // fails with EFBIG. Block the signal in this thread before rustic starts its worker
    // threads, which inherit the mask, so the write error is what rustic sees.
    let mut xfsz = SigSet::empty();
    xfsz.add(Signal::SIGXFSZ);
    xfsz.thread_block().unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, 1 << 20, hard).unwrap();
    let failed = repo.backup(&source, &["nightly"]);
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();

    let err = failed.expect_err("a backup into a full destination must fail");
    assert!(matches!(err, BackupError::DestinationFull { .. }), "{err}");
    assert!(err.to_string().contains("full"), "{err}");

    let mut repo = BackupRepository::open(&dest, &key).unwrap();
    assert!(repo.snapshots().unwrap().is_empty(), "no snapshot may be recorded");

    // The next run recovers: the backup succeeds, prune removes what the failed run left.
    let snap = repo.backup(&source, &["nightly"]).unwrap();
    repo.apply_retention(&RETENTION, &rustic_core::jiff::Zoned::now()).unwrap();
    assert_eq!(repo.snapshots().unwrap().iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![snap.id]);
    let report = repo.check(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.warnings.is_empty(), "nothing left over: {report:?}");
    let out = run_restic(&repo_dir, &key, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));
}
