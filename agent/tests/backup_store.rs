//! Backups of a real store (SQLCipher, the audit writer) while writes happen, restored and
//! drilled; the stock `restic` checks the repository with the key kept in the store; a drill
//! over a tampered repository fails and is recorded; the `wardbox backup` commands end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use wardbox::audit::{AuditEvent, AuditLog, EventKind, read_head};
use wardbox::backup::{self, BackupInputs};
use wardbox::config::Config;
use wardbox::store::{Store, StoreKey};
use wardbox_backup::{BackupError, Destination, RepositoryKey};

/// The stock restic; a test that needs it fails naming the package when it is missing.
fn restic() -> PathBuf {
    let path = std::env::var_os("RESTIC_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/restic"));
    assert!(path.is_file(), "stock restic not found at {} (Debian package `restic`, installed by tests/install-deps.sh)", path.display());
    path
}

fn run_restic(repo: &Path, password: &str, args: &[&str]) -> Output {
    Command::new(restic())
        .arg("-r")
        .arg(repo)
        .arg("--no-cache")
        .args(args)
        .env("RESTIC_PASSWORD", password)
        .output()
        .expect("run restic")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A box's files: a migrated store in `data`, checkpoints in `state`, a CA file.
struct TestBox {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    state_dir: PathBuf,
    store_path: PathBuf,
    key: StoreKey,
}

fn test_box() -> TestBox {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(state_dir.join("tls")).unwrap();
    std::fs::write(state_dir.join("tls/ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(state_dir.join("status.json"), "{}").unwrap();
    // The update trust state as `wardbox update` keeps it on the data volume.
    let update = wardbox::update::UpdatePaths::new(&data_dir);
    std::fs::create_dir_all(update.state_dir()).unwrap();
    std::fs::write(update.state_dir().join("root.json"), "{\"signed\":{}}").unwrap();
    std::fs::write(update.installs(), "[]").unwrap();
    let key = StoreKey::random();
    let store_path = data_dir.join("wardbox.db");
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    TestBox { data_dir, state_dir, store_path, key, _dir: dir }
}

/// Writers that keep going until stopped: an audit burst through the real writer thread, and
/// account rows inserted through a connection of their own (as an import would).
struct Writers {
    stop: Arc<AtomicBool>,
    audited: Arc<AtomicU64>,
    inserted: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn start_writers(b: &TestBox) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let (audited, inserted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    {
        let (stop, audited, path, key) = (stop.clone(), audited.clone(), b.store_path.clone(), StoreKey::from_bytes(*b.key.expose()));
        let checkpoints = wardbox::daemon::checkpoint_log(&b.state_dir);
        threads.push(std::thread::spawn(move || {
            let (log, writer) = AuditLog::start(&path, &key).unwrap();
            let reader = Store::open_existing(&path, &key).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                log.append_blocking(AuditEvent::new(EventKind::AdminAction, "test", json!({ "burst": i }))).unwrap();
                i += 1;
                audited.store(i, Ordering::Relaxed);
                if i.is_multiple_of(50) {
                    let (seq, hash) = read_head(&reader).unwrap();
                    checkpoints.record(seq, &hash).unwrap();
                }
            }
            drop(log);
            writer.join();
        }));
    }
    {
        let (stop, inserted, path, key) = (stop.clone(), inserted.clone(), b.store_path.clone(), StoreKey::from_bytes(*b.key.expose()));
        threads.push(std::thread::spawn(move || {
            let store = Store::open_existing(&path, &key).unwrap();
            let mut i = 0u64;
            // Batches of 20 rows, one transaction each, with a breath between them, as an
            // import commits document by document (a tight loop of single-row commits would
            // starve the audit writer's lock, which no real writer does).
            while !stop.load(Ordering::Relaxed) {
                let tx = store.conn().unchecked_transaction().unwrap();
                for _ in 0..20 {
                    tx.execute(
                        "INSERT INTO users (username, display_name, role, created_at) VALUES (?1, ?2, 'clinician', '2026-11-29T00:00:00Z')",
                        rusqlite::params![format!("user{i}"), "x".repeat(200)],
                    )
                    .unwrap();
                    i += 1;
                }
                tx.commit().unwrap();
                inserted.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
    }
    Writers { stop, audited, inserted, threads }
}

impl Writers {
    fn wait_for(&self, audited: u64, inserted: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.audited.load(Ordering::Relaxed) < audited || self.inserted.load(Ordering::Relaxed) < inserted {
            assert!(Instant::now() < deadline, "writers too slow");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (self.audited.load(Ordering::Relaxed), self.inserted.load(Ordering::Relaxed))
    }
}

fn repo_dir(b: &TestBox) -> PathBuf {
    let dir = b.data_dir.parent().unwrap().join("usb");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn largest_pack(repo: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut pending = vec![repo.join("data")];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                let len = std::fs::metadata(&p).unwrap().len();
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, p));
                }
            }
        }
    }
    best.unwrap().1
}

#[test]
fn a_backup_taken_during_writes_restores_with_matching_counts_and_an_intact_chain() {
    let b = test_box();
    let writers = start_writers(&b);
    writers.wait_for(200, 200);

    let store = Store::open_existing(&b.store_path, &b.key).unwrap();
    let (repo_key, created) = backup::key_or_create(&store).unwrap();
    assert!(created);
    let destination = Destination::LocalDirectory(repo_dir(&b));
    let inputs = BackupInputs { store: &store, store_key: &b.key, data_dir: &b.data_dir, state_dir: &b.state_dir, config_file: None };
    let started = jiff::Timestamp::now();
    let outcome = backup::run_backup(&inputs, &destination, &repo_key, &["wardbox"]);
    backup::record_backup(&store, &destination, started, &outcome).unwrap();
    let done = outcome.unwrap();
    // Writes went on during and after the snapshot.
    let (audited, inserted) = {
        writers.wait_for(writers.audited.load(Ordering::Relaxed) + 50, writers.inserted.load(Ordering::Relaxed) + 50);
        writers.stop()
    };
    assert!(!b.data_dir.join(".backup-staging").exists(), "staging removed");
    let facts = &done.manifest.store;
    let snap_users = facts.rows["users"];
    let snap_audit = facts.rows["audit"];
    assert!(snap_users >= 200 && snap_users < inserted, "users in snapshot {snap_users}, inserted {inserted}");
    assert!(snap_audit >= 200 && snap_audit < audited + 10, "audit rows in snapshot {snap_audit}");
    assert!(done.manifest.files.contains_key("state/tls/ca.pem"));
    assert!(done.manifest.files.contains_key("state/audit-checkpoints.jsonl"));
    assert!(done.manifest.files.contains_key("update/state/root.json"), "update trust root backed up");
    assert!(done.manifest.files.contains_key("update/installs.json"));
    assert!(!done.manifest.files.contains_key("state/status.json"), "transient files are not backed up");
    // The snapshot's head is a record of the live chain: the backup is a prefix of it.
    let live_hash: String = store
        .conn()
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [facts.audit_head_seq as i64], |r| r.get(0))
        .unwrap();
    assert_eq!(live_hash, facts.audit_head_hash);

    // The drill restores into a scratch area on the data volume and checks everything.
    let started = jiff::Timestamp::now();
    let drilled = backup::run_drill(&b.data_dir, &destination, &repo_key);
    backup::record_drill(&store, &destination, started, &drilled).unwrap();
    let report = drilled.unwrap();
    assert_eq!(report.snapshot_id, done.snapshot.id);
    assert_eq!(report.audit_head_seq, facts.audit_head_seq);
    assert_eq!(report.audit_records, facts.audit_head_seq);
    assert_eq!(report.rows, facts.rows.values().sum::<u64>());
    assert!(report.checkpoints_checked > 0, "checkpoints taken during the burst were checked");
    assert!(!b.data_dir.join(".backup-drill").exists(), "scratch removed");
    let last = backup::last_drill(&store).unwrap().expect("a drill was recorded");
    assert!(last.ok);
    assert_eq!(last.snapshot_id.as_deref(), Some(done.snapshot.id.as_str()));
    assert!(last.finished_at >= started);

    // The stock restic opens the repository with the key from the store and verifies every pack.
    let repo = repo_dir(&b);
    let out = run_restic(&repo, &repo_key.to_hex(), &["check", "--read-data"]);
    assert!(out.status.success(), "restic check --read-data:\n{}", text(&out));
    let out = run_restic(&repo, &repo_key.to_hex(), &["snapshots", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], done.snapshot.id.as_str());
    // The snapshot's store copy is still SQLCipher-encrypted: restic restores it and it is not
    // a plain SQLite file.
    let target = b.data_dir.parent().unwrap().join("by-restic");
    let out = run_restic(&repo, &repo_key.to_hex(), &["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let head = std::fs::read(target.join("wardbox/store/wardbox.db")).unwrap();
    assert!(!head.starts_with(b"SQLite format 3\0"), "the store snapshot must stay encrypted");
}

#[test]
fn a_drill_over_a_tampered_repository_fails_and_the_failure_is_recorded() {
    let b = test_box();
    let store = Store::open_existing(&b.store_path, &b.key).unwrap();
    let (log, writer) = AuditLog::start(&b.store_path, &b.key).unwrap();
    for i in 0..100 {
        log.append_blocking(AuditEvent::new(EventKind::AdminAction, "test", json!({ "n": i }))).unwrap();
    }
    drop(log);
    writer.join();
    let (repo_key, _) = backup::key_or_create(&store).unwrap();
    let destination = Destination::LocalDirectory(repo_dir(&b));
    let inputs = BackupInputs { store: &store, store_key: &b.key, data_dir: &b.data_dir, state_dir: &b.state_dir, config_file: None };
    backup::run_backup(&inputs, &destination, &repo_key, &[]).unwrap();

    let pack = largest_pack(&repo_dir(&b));
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();

    let started = jiff::Timestamp::now();
    let drilled = backup::run_drill(&b.data_dir, &destination, &repo_key);
    backup::record_drill(&store, &destination, started, &drilled).unwrap();
    let err = drilled.unwrap_err();
    assert!(matches!(err, backup::RunError::Repository(BackupError::Damaged { .. })), "{err}");
    let last = backup::last_drill(&store).unwrap().unwrap();
    assert!(!last.ok);
    assert!(last.detail["error"].as_str().unwrap().contains("damaged"), "{}", last.detail);

    // A wrong key: refused by name, and the drill says so.
    let wrong = RepositoryKey::generate().unwrap();
    let err = backup::run_drill(&b.data_dir, &destination, &wrong).unwrap_err();
    assert!(matches!(err, backup::RunError::Repository(BackupError::WrongKey { .. })), "{err}");
}

// ---- the CLI ----

fn wardbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).stdin(Stdio::null()).output().expect("run wardbox")
}

/// A dev box as `wardbox dev` leaves it: its configuration file, the dev store key file, a
/// migrated store.
fn dev_box() -> (tempfile::TempDir, PathBuf, Config) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("box");
    let config = Config::dev_defaults(&base);
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let data_dir = base.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let (mut store, _) = Store::open_or_create(&data_dir.join(&config.store.file_name), &key).unwrap();
    store.migrate().unwrap();
    (dir, config_path, config)
}

#[test]
fn the_backup_commands_end_to_end() {
    let (dir, config_path, _config) = dev_box();
    let c = config_path.to_str().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let r = usb.to_str().unwrap();

    // A stick that is not mounted: a clear error, recorded as a failed run.
    let out = wardbox(&["backup", "now", "-c", c, "--repo", dir.path().join("not-mounted").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not available"), "{}", text(&out));

    for _ in 0..2 {
        let out = wardbox(&["backup", "now", "-c", c, "--repo", r]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("snapshot "), "{}", text(&out));
    }
    let out = wardbox(&["backup", "list", "-c", c, "--repo", r, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Two backups on one day: retention keeps both while the repository is young (the newest,
    // and the oldest because fewer days than the policy asks for exist).
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let out = wardbox(&["backup", "check", "-c", c, "--repo", r, "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = wardbox(&["backup", "drill", "-c", c, "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("drill passed"), "{}", text(&out));

    // The key for the escrow sheet; the stock restic opens the repository with it.
    let out = wardbox(&["backup", "key", "-c", c]);
    assert!(out.status.success(), "{}", text(&out));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(key.len(), 64);
    let out = run_restic(&usb, &key, &["snapshots"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_restic(&usb, &key, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));

    // Restore with the escrowed key into an empty directory: checked against the manifest.
    let key_file = dir.path().join("escrow.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let target = dir.path().join("restored");
    let out = wardbox(&["backup", "restore", "--repo", r, "--target", target.to_str().unwrap(), "--key-file", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(target.join("store/wardbox.db").is_file() && target.join("config/wardbox.toml").is_file());

    // A wrong escrowed key is refused by name.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, RepositoryKey::generate().unwrap().to_hex().as_str()).unwrap();
    let out = wardbox(&["backup", "restore", "--repo", r, "--target", dir.path().join("t2").to_str().unwrap(), "--key-file", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wrong key"), "{}", text(&out));

    // A tampered pack: check exits 3, restore refuses, the drill fails with exit 3.
    let pack = largest_pack(&usb);
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();
    let out = wardbox(&["backup", "check", "-c", c, "--repo", r, "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = wardbox(&["backup", "restore", "-c", c, "--repo", r, "--target", dir.path().join("t3").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("damaged"), "{}", text(&out));
    let out = wardbox(&["backup", "drill", "-c", c, "--repo", r]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // Every command was audited, the chain verifies, and no audit record holds the key.
    let out = wardbox(&["audit", "verify", "-c", c]);
    assert!(out.status.success(), "{}", text(&out));
    let config = Config::load(&config_path).unwrap();
    let store_key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let store = Store::open_existing(&dir.path().join("box/data").join(&config.store.file_name), &store_key).unwrap();
    let details: Vec<String> = store
        .conn()
        .prepare("SELECT detail FROM audit WHERE detail LIKE '%backup_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let actions: Vec<String> = details
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["action"].as_str().unwrap_or("").to_owned())
        .collect();
    for action in ["backup_now", "backup_list", "backup_check", "backup_drill", "backup_key_shown"] {
        assert!(actions.iter().any(|a| a == action), "{action} audited: {actions:?}");
    }
    assert!(details.iter().all(|d| !d.contains(&key)), "the key never enters the audit trail");
    let last = backup::last_drill(&store).unwrap().unwrap();
    assert!(!last.ok, "the last drill (over the tampered pack) failed and says so");
    let failed_runs: i64 =
        store.conn().query_row("SELECT count(*) FROM backup_runs WHERE kind = 'backup' AND ok = 0", [], |r| r.get(0)).unwrap();
    assert_eq!(failed_runs, 1, "the unmounted destination was recorded as a failed run");
}

/// Two runs never overlap on one box: while one holds the backup lock, a backup, a drill and
/// the CLI's backup and restore are refused with a message saying so, nothing is recorded as
/// a run, and the holder's staging directory is left alone. Once it ends, the next run goes.
#[test]
fn a_second_backup_or_drill_is_refused_while_one_runs() {
    let b = test_box();
    let store = Store::open_existing(&b.store_path, &b.key).unwrap();
    let (repo_key, _) = backup::key_or_create(&store).unwrap();
    let destination = Destination::LocalDirectory(repo_dir(&b));
    let inputs = BackupInputs { store: &store, store_key: &b.key, data_dir: &b.data_dir, state_dir: &b.state_dir, config_file: None };
    backup::run_backup(&inputs, &destination, &repo_key, &[]).unwrap();

    // A run in progress: it holds the lock and is writing its staging directory.
    let running = backup::RunLock::acquire(&b.data_dir, "backup").unwrap();
    let staging = b.data_dir.join(".backup-staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("in-progress"), "x").unwrap();

    let started = jiff::Timestamp::now();
    let second = backup::run_backup(&inputs, &destination, &repo_key, &[]);
    backup::record_backup(&store, &destination, started, &second).unwrap();
    let err = second.unwrap_err();
    assert!(matches!(err, backup::RunError::Busy(_)), "{err}");
    assert!(err.to_string().contains("another backup, restore or drill is running on this box (backup by process"), "{err}");
    let drill = backup::run_drill(&b.data_dir, &destination, &repo_key);
    backup::record_drill(&store, &destination, started, &drill).unwrap();
    assert!(matches!(drill, Err(backup::RunError::Busy(_))), "{drill:?}");
    assert!(staging.join("in-progress").is_file(), "the refused run left the running one's staging alone");
    let runs: i64 = store.conn().query_row("SELECT count(*) FROM backup_runs", [], |r| r.get(0)).unwrap();
    assert_eq!(runs, 0, "a refused run is not recorded (the first backup above was not recorded either)");
    let snapshots = wardbox_backup::BackupRepository::open(&destination, &repo_key).unwrap().snapshots().unwrap();
    assert_eq!(snapshots.len(), 1, "the refused backup wrote no snapshot");

    drop(running);
    std::fs::remove_dir_all(&staging).unwrap();
    backup::run_backup(&inputs, &destination, &repo_key, &[]).unwrap();
}

/// The CLI, in another process, is refused by the lock a running backup holds.
#[test]
fn the_backup_commands_are_refused_while_a_run_holds_the_lock() {
    let (dir, config_path, config) = dev_box();
    let c = config_path.to_str().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let r = usb.to_str().unwrap();
    let out = wardbox(&["backup", "now", "-c", c, "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));

    let data_dir = dir.path().join("box/data");
    let running = backup::RunLock::acquire(&data_dir, "drill").unwrap();
    for args in [
        vec!["backup", "now", "-c", c, "--repo", r],
        vec!["backup", "drill", "-c", c, "--repo", r],
        vec!["backup", "restore", "-c", c, "--repo", r, "--target", dir.path().join("t").to_str().unwrap()],
    ] {
        let out = wardbox(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("another backup, restore or drill is running on this box (drill by process"), "{args:?}: {}", text(&out));
    }
    drop(running);
    let out = wardbox(&["backup", "drill", "-c", c, "--repo", r]);
    assert!(out.status.success(), "{}", text(&out));
    let store_key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let store = Store::open_existing(&data_dir.join(&config.store.file_name), &store_key).unwrap();
    let runs: Vec<(String, i64)> = store
        .conn()
        .prepare("SELECT kind, ok FROM backup_runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(runs, [("backup".to_owned(), 1), ("drill".to_owned(), 1)], "the refused runs were not recorded");
}

/// Without `--repo` the commands use the configured destination; with neither they say so.
#[test]
fn the_commands_use_the_configured_destination() {
    let (dir, config_path, _config) = dev_box();
    let c = config_path.to_str().unwrap();
    let out = wardbox(&["backup", "now", "-c", c]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no backup destination: give --repo"), "{}", text(&out));

    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let mut config = Config::load(&config_path).unwrap();
    config.backup.usb_path = Some(usb.clone());
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let out = wardbox(&["backup", "now", "-c", c]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(usb.join("config").is_file(), "the repository is at the configured path");
    for args in [vec!["backup", "list", "-c", c], vec!["backup", "check", "-c", c], vec!["backup", "drill", "-c", c]] {
        let out = wardbox(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
}
