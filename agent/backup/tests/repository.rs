//! rustic_core writes the repository; the stock `restic` reads and checks it. Restore round
//! trips, retention, a wrong key, and a tampered pack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use rustic_core::jiff::Zoned;
use support::{make_source, noise, run_restic, text, tree};
use wardbox_backup::{BackupError, BackupRepository, Destination, RETENTION, RepositoryKey};

fn destination(dir: &Path) -> Destination {
    Destination::LocalDirectory(dir.to_owned())
}

#[test]
fn stock_restic_checks_and_lists_what_we_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, repo_dir) = (tmp.path().join("source"), tmp.path().join("repo"));
    std::fs::create_dir(&repo_dir).unwrap();
    // Large enough for several content-defined chunks (rustic's average chunk is 1 MiB), so a
    // 1 % change touches one or two of them.
    make_source(&source, 24 << 20);
    let key = RepositoryKey::generate().unwrap();

    let mut repo = BackupRepository::init(&destination(&repo_dir), &key).unwrap();
    let first = repo.backup(&source, &["nightly"]).unwrap();
    assert_eq!(first.files, 4);
    // 1 % of the store changes: the second backup adds a small fraction of it.
    let mut store = std::fs::read(source.join("store/wardbox.db")).unwrap();
    let (at, changed) = (store.len() / 2, store.len() / 100);
    store[at..at + changed].copy_from_slice(&noise(changed, 7));
    std::fs::write(source.join("store/wardbox.db"), &store).unwrap();
    let second = repo.backup(&source, &["nightly"]).unwrap();
    assert!(second.bytes_added < first.bytes_added / 4, "incremental added {} of {}", second.bytes_added, first.bytes_added);

    let listed = repo.snapshots().unwrap();
    assert_eq!(listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![first.id.clone(), second.id.clone()]);
    assert!(repo.check(true).unwrap().is_ok());

    let check = run_restic(&repo_dir, &key, &["check", "--read-data"]);
    assert!(check.status.success(), "restic check --read-data failed:\n{}", text(&check));
    assert!(text(&check).contains("no errors were found"), "{}", text(&check));

    let snapshots = run_restic(&repo_dir, &key, &["snapshots", "--json"]);
    assert!(snapshots.status.success(), "restic snapshots failed:\n{}", text(&snapshots));
    let json: serde_json::Value = serde_json::from_slice(&snapshots.stdout).unwrap();
    let ids: Vec<&str> = json.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![first.id.as_str(), second.id.as_str()]);
    assert_eq!(json[0]["paths"][0], "/wardbox");
    assert!(json[0]["tags"].as_array().unwrap().iter().any(|t| t == "nightly"));

    // And restic restores the files byte for byte.
    let by_restic = tmp.path().join("by-restic");
    let out = run_restic(&repo_dir, &key, &["restore", "latest", "--target", by_restic.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree(&by_restic.join("wardbox")), tree(&source));
}

#[test]
fn restore_gives_back_the_files_of_the_latest_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, repo_dir, target) = (tmp.path().join("source"), tmp.path().join("repo"), tmp.path().join("target"));
    std::fs::create_dir(&repo_dir).unwrap();
    make_source(&source, 1 << 20);
    let key = RepositoryKey::generate().unwrap();
    let (mut repo, created) = BackupRepository::open_or_init(&destination(&repo_dir), &key).unwrap();
    assert!(created);
    repo.backup(&source, &[]).unwrap();
    std::fs::write(source.join("config.toml"), "profile = \"appliance\"\n").unwrap();
    let latest = repo.backup(&source, &[]).unwrap();

    let mut reopened = BackupRepository::open(&destination(&repo_dir), &key).unwrap();
    let restored = reopened.restore_latest(&target).unwrap();
    assert_eq!(restored.snapshot.id, latest.id);
    assert_eq!(tree(&target), tree(&source));

    // A target with something in it is refused, and left as it was.
    let err = reopened.restore_latest(&target).unwrap_err();
    assert!(matches!(err, BackupError::TargetNotEmpty { .. }), "{err}");
    assert_eq!(tree(&target), tree(&source));
}

#[test]
fn a_wrong_key_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    std::fs::create_dir(&repo_dir).unwrap();
    let key = RepositoryKey::generate().unwrap();
    BackupRepository::init(&destination(&repo_dir), &key).unwrap();
    let before = tree(&repo_dir);

    let wrong = RepositoryKey::generate().unwrap();
    let err = BackupRepository::open(&destination(&repo_dir), &wrong).unwrap_err();
    assert!(matches!(err, BackupError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("wrong key"), "{err}");
    // Refusing changed nothing in the repository.
    assert_eq!(tree(&repo_dir), before);
    // restic agrees.
    let out = run_restic(&repo_dir, &wrong, &["snapshots"]);
    assert!(!out.status.success());

    // Initialising over an existing repository is refused too.
    let err = BackupRepository::init(&destination(&repo_dir), &key).unwrap_err();
    assert!(matches!(err, BackupError::AlreadyARepository { .. }), "{err}");
    // A destination without a repository, and one that is not there.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(BackupRepository::open(&destination(&empty), &key), Err(BackupError::NotARepository { .. })));
    let absent = tmp.path().join("not-mounted");
    assert!(matches!(
        BackupRepository::open(&destination(&absent), &key),
        Err(BackupError::DestinationUnavailable { .. })
    ));
}

#[test]
fn a_tampered_pack_fails_check_and_restore_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, repo_dir, target) = (tmp.path().join("source"), tmp.path().join("repo"), tmp.path().join("target"));
    std::fs::create_dir(&repo_dir).unwrap();
    make_source(&source, 2 << 20);
    let key = RepositoryKey::generate().unwrap();
    let mut repo = BackupRepository::init(&destination(&repo_dir), &key).unwrap();
    repo.backup(&source, &[]).unwrap();

    // Flip one byte in the middle of the largest pack (the store's data).
    let pack = largest_file(&repo_dir.join("data"));
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&pack, &bytes).unwrap();

    let report = repo.check(true).unwrap();
    assert!(!report.is_ok(), "check must find the tampered pack");
    let err = repo.restore_latest(&target).unwrap_err();
    assert!(matches!(err, BackupError::Damaged { .. }), "{err}");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(), "restore wrote nothing");

    let out = run_restic(&repo_dir, &key, &["check", "--read-data"]);
    assert!(!out.status.success(), "restic check must fail too:\n{}", text(&out));
}

#[test]
fn retention_forgets_and_prunes_and_restic_still_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, repo_dir) = (tmp.path().join("source"), tmp.path().join("repo"));
    std::fs::create_dir(&repo_dir).unwrap();
    make_source(&source, 512 << 10);
    let key = RepositoryKey::generate().unwrap();
    let mut repo = BackupRepository::init(&destination(&repo_dir), &key).unwrap();
    for round in 0..3u64 {
        std::fs::write(source.join("store/wardbox.db"), noise(512 << 10, 100 + round)).unwrap();
        repo.backup(&source, &[]).unwrap();
    }
    let packs_before = std::fs::read_dir(repo_dir.join("data")).unwrap().count();
    let ids: Vec<String> = repo.snapshots().unwrap().into_iter().map(|s| s.id).collect();
    // Three snapshots on one day: every rule keeps the newest of the day; while the repository
    // has fewer days than the policy asks for, the oldest snapshot is kept too (restic's rule
    // since 0.16, which rustic follows). The one in between goes.
    let outcome = repo.apply_retention(&RETENTION, &Zoned::now()).unwrap();
    assert_eq!((outcome.kept, outcome.forgotten), (2, 1));
    let left: Vec<String> = repo.snapshots().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(left, vec![ids[0].clone(), ids[2].clone()]);
    let size_after: u64 = walk_sizes(&repo_dir.join("data"));
    assert!(size_after < 5 * (512 << 10) / 2, "prune removed the forgotten data ({size_after} bytes left)");
    assert!(packs_before > 0);
    assert!(repo.check(true).unwrap().is_ok());
    let out = run_restic(&repo_dir, &key, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));
}

fn largest_file(dir: &Path) -> std::path::PathBuf {
    let mut best: Option<(u64, std::path::PathBuf)> = None;
    for entry in walkdir(dir) {
        let len = std::fs::metadata(&entry).unwrap().len();
        if best.as_ref().is_none_or(|(l, _)| len > *l) {
            best = Some((len, entry));
        }
    }
    best.expect("a pack").1
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walkdir(&path)) } else { out.push(path) }
    }
    out
}

fn walk_sizes(dir: &Path) -> u64 {
    walkdir(dir).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

/// The running backup reports its bytes: after it, the step is "backing up" and every byte of
/// the source is counted, of a total measured first.
#[test]
fn a_backup_reports_its_progress_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    make_source(&source, 2 << 20);
    let source_bytes: u64 = tree(&source).iter().map(|(_, b)| b.len() as u64).sum();
    let progress = std::sync::Arc::new(wardbox_backup::RunProgress::default());
    assert_eq!(progress.read().percent(), None, "nothing known before the run");
    let key = RepositoryKey::generate().unwrap();
    std::fs::create_dir_all(dir.path().join("repo")).unwrap();
    let (mut repo, _) = BackupRepository::open_or_init_reporting(&destination(&dir.path().join("repo")), &key, Some(&progress)).unwrap();
    repo.backup(&source, &[]).unwrap();
    let reading = progress.read();
    assert_eq!(reading.step, "backing up", "{reading:?}");
    assert_eq!((reading.done, reading.total), (source_bytes, source_bytes), "{reading:?}");
    assert_eq!(reading.percent(), Some(100));
}
