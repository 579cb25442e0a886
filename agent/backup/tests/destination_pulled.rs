//! The backup disk pulled while a backup runs: the run fails with a clear error naming the
//! destination, no snapshot is recorded, and once the disk is back the next run succeeds and
//! both rustic's and the stock restic's `check --read-data` are clean.
//!
//! The disk is a real mount that goes away: the repository's directory is bind-mounted on the
//! destination path (as a USB disk is mounted on `/media/wardbox-backup`), and while rustic is
//! writing packs the test detaches the mount (`umount -l`, what happens when a stick is pulled
//! and the automounter or the kernel drops it); the path is then an empty directory of the
//! parent filesystem. "Back" is the same directory mounted again. Needs mount rights (root); it
//! fails saying so without them. One test in this file, as it changes the mount table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use support::{make_source, run_restic, text};
use wardbox_backup::{BackupError, BackupRepository, Destination, RETENTION, RepositoryKey, RunProgress};

/// Bytes the backup has read before the disk is pulled: well inside the run.
const PULL_AFTER_BYTES: u64 = 6 << 20;

fn mount_disk(disk: &Path, at: &Path) {
    nix::mount::mount(Some(disk), at, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap_or_else(|e| {
        panic!(
            "this test needs mount rights (root) to mount a stand-in backup disk on {} and pull it mid-backup: mount failed: {e}",
            at.display()
        )
    });
}

fn pull_disk(at: &Path) -> nix::Result<()> {
    nix::mount::umount2(at, MntFlags::MNT_DETACH)
}

/// Detaches the mount if the test stops early, so no mount outlives it.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = pull_disk(&self.0);
    }
}

#[test]
fn stick_pulled_mid_backup_records_no_snapshot_and_the_next_run_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, disk, mount_point) = (tmp.path().join("source"), tmp.path().join("disk"), tmp.path().join("media-backup"));
    std::fs::create_dir(&disk).unwrap();
    std::fs::create_dir(&mount_point).unwrap();
    make_source(&source, 48 << 20);
    let key = RepositoryKey::generate().unwrap();
    let dest = Destination::LocalDirectory(mount_point.clone());

    mount_disk(&disk, &mount_point);
    let guard = Mounted(mount_point.clone());
    BackupRepository::init(&dest, &key).unwrap();

    // Pull the disk once the backup has read some megabytes (rustic writes packs as it goes).
    let progress = Arc::new(RunProgress::default());
    let pulled = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let puller = {
        let (progress, pulled, finished, at) = (progress.clone(), pulled.clone(), finished.clone(), mount_point.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !finished.load(Ordering::SeqCst) && Instant::now() < deadline {
                let reading = progress.read();
                if reading.step.to_lowercase().contains("backing up") && reading.done >= PULL_AFTER_BYTES {
                    pull_disk(&at).unwrap();
                    pulled.store(true, Ordering::SeqCst);
                    return reading;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            progress.read()
        })
    };
    let (mut repo, _) = BackupRepository::open_or_init_reporting(&dest, &key, Some(&progress)).unwrap();
    let outcome = repo.backup(&source, &["nightly"]);
    finished.store(true, Ordering::SeqCst);
    let at_pull = puller.join().unwrap();
    assert!(pulled.load(Ordering::SeqCst), "the backup ended before the disk was pulled (last progress {at_pull:?}); outcome {outcome:?}");

    let err = outcome.expect_err("a backup whose disk was pulled must fail");
    assert!(matches!(err, BackupError::DestinationUnavailable { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&mount_point.display().to_string()) && message.contains("went away"), "{message}");
    assert!(message.contains("no snapshot was recorded"), "{message}");
    // Nothing was written onto the filesystem under the mount point (the "system disk").
    assert_eq!(std::fs::read_dir(&mount_point).unwrap().count(), 0, "the pulled run wrote under the empty mount point");

    // The disk comes back: no snapshot was recorded as good, the next run recovers, prune
    // removes what the pulled run left, and the stock restic checks every byte.
    mount_disk(&disk, &mount_point);
    let mut repo = BackupRepository::open(&dest, &key).unwrap();
    assert!(repo.snapshots().unwrap().is_empty(), "the pulled run recorded a snapshot");
    let snap = repo.backup(&source, &["nightly"]).unwrap();
    repo.apply_retention(&RETENTION, &rustic_core::jiff::Zoned::now()).unwrap();
    assert_eq!(repo.snapshots().unwrap().iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![snap.id.clone()]);
    let report = repo.check(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.warnings.is_empty(), "nothing left over: {report:?}");
    let out = run_restic(&mount_point, &key, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_restic(&mount_point, &key, &["snapshots", "--json"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&snap.id), "{}", text(&out));
    drop(guard);
}
