//! A backup disk that stays mounted but answers with I/O errors (EIO), as a disk with bad
//! sectors or a loose cable does, on a dev box with a real SQLCipher store:
//!
//! - during the nightly backup as the daemon runs it (`BoxBackups::nightly_step`, real audit
//!   writer and alert detector): the run fails naming an I/O error on the destination (not
//!   "full"), is recorded failed with no snapshot, raises a `backup` alert with its outbox row;
//!   the next night, the disk working again, the backup succeeds and clears the alert;
//! - during a key rotation (`wardbox backup rotate-key`), the disk failing just as the old key
//!   file is removed (after the new key was added and the store took it): the rotation ends
//!   "rotated only in part", exit 1, names the command to run next and prints the new sheet;
//!   the store holds the new key; with the disk working again both keys open the repository,
//!   the box backs up with the new key, and the named command finishes the rotation.
//!
//! The disk is a real filesystem that returns EIO: a FUSE filesystem
//! (`agent/backup/tests/failing_disk`) mounted on the configured `usb_path`, passing through to
//! a directory until the test sets a fault. Needs root, /dev/fuse, fusermount and
//! python3-fusepy; fails naming what is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../backup/tests/failing_disk/mod.rs"]
mod failing_disk;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use failing_disk::FailingDisk;
use wardbox::alerting::{Feed, outbox};
use wardbox::audit::AuditLog;
use wardbox::backup::escrow;
use wardbox::backup::service::{BoxBackups, BoxPaths};
use wardbox::config::Config;
use wardbox::store::{Store, StoreKey};
use wardbox_alerts::Rule;
use wardbox_backup::{BackupError, BackupRepository, Destination, RepositoryKey};

fn wardbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).stdin(Stdio::null()).output().expect("run wardbox")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The stock restic with the key as its password (in the environment, never the command line).
fn restic(repo: &Path, key: &RepositoryKey, args: &[&str]) -> Output {
    let restic = std::env::var_os("RESTIC_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/restic"));
    assert!(restic.is_file(), "stock restic not found at {} (Debian package `restic`, or set RESTIC_BIN)", restic.display());
    Command::new(restic)
        .arg("-r")
        .arg(repo)
        .arg("--no-cache")
        .args(args)
        .env("RESTIC_PASSWORD", key.to_hex().as_str())
        .env_remove("RESTIC_PASSWORD_FILE")
        .env_remove("RESTIC_REPOSITORY")
        .output()
        .unwrap()
}

/// Deterministic bytes that neither compress nor dedupe (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

struct WriterGuard(Option<wardbox::audit::WriterThread>);
impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.join_within(Duration::from_secs(5));
        }
    }
}

/// A dev box backing up to the failing disk mounted at `<base>/usb` (its contents in
/// `<base>/disk`), nightly at a time that passed five minutes ago, with alert delivery
/// configured so an alert gets its outbox row. Provisioning left the backup key on the volume;
/// the sheet's key is returned.
struct DevBox {
    config_path: PathBuf,
    config: Config,
    key: StoreKey,
    store_path: PathBuf,
    data_dir: PathBuf,
    usb: PathBuf,
    disk: PathBuf,
}

fn dev_box(base: &Path) -> (DevBox, FailingDisk, RepositoryKey) {
    let (data_dir, state_dir, usb, disk) = (base.join("data"), base.join("state"), base.join("usb"), base.join("disk"));
    for d in [&data_dir, &state_dir, &usb, &disk] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Something in the backup large enough that the disk fails while it is written.
    std::fs::write(state_dir.join("firewall-counters.bin"), noise(6 << 20)).unwrap();
    let due = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_mins(5)).unwrap();
    let at = due.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M").to_string();
    let text = format!(
        "profile = \"dev\"\nstate_dir = \"{}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{}\"\n\
         [backup]\nusb_path = \"{}\"\nnightly_at = \"{at}\"\nutc_offset_minutes = 0\n\
         [alert_delivery]\nadmin_url = \"https://wardbox.clinic.local:8443\"\n\
         [alert_delivery.syslog]\naddress = \"127.0.0.1:6514\"\nserver_name = \"syslog.clinic.local\"\nca_file = \"/etc/wardbox/clinic-ca.pem\"\n",
        state_dir.display(),
        data_dir.display(),
        usb.display()
    );
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path).unwrap();
    let sheet = escrow::provision_key(&data_dir).unwrap();
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    let store_path = data_dir.join(&config.store.file_name);
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    let failing = FailingDisk::mount(&disk, &usb, &base.join("disk-control"));
    (DevBox { config_path, config, key, store_path, data_dir, usb, disk }, failing, sheet)
}

impl DevBox {
    fn c(&self) -> &str {
        self.config_path.to_str().unwrap()
    }

    fn store(&self) -> Store {
        Store::open_existing(&self.store_path, &self.key).unwrap()
    }

    fn repository_key(&self) -> RepositoryKey {
        wardbox::backup::stored_key(&self.store()).unwrap().expect("the box has a backup key")
    }

    fn audit_details(&self) -> Vec<serde_json::Value> {
        let store = self.store();
        let mut stmt = store.conn().prepare("SELECT detail FROM audit ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|d| serde_json::from_str(&d.unwrap()).unwrap()).collect()
    }

    fn backup_runs(&self) -> Vec<(i64, Option<String>)> {
        let store = self.store();
        let mut stmt = store.conn().prepare("SELECT ok, snapshot_id FROM backup_runs WHERE kind = 'backup' ORDER BY id").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
    }

    fn destination(&self) -> Destination {
        Destination::LocalDirectory(self.usb.clone())
    }
}

/// The key as the rotation's sheet prints it: the indented line of eight groups of eight hex
/// digits after "NEW BACKUP KEY".
fn printed_key(out: &Output) -> RepositoryKey {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let after = stdout.split("NEW BACKUP KEY").nth(1).unwrap_or_else(|| panic!("no new sheet printed: {}", text(out)));
    let line = after.lines().find(|l| l.starts_with("    ")).unwrap_or_else(|| panic!("no key line: {}", text(out)));
    let groups: Vec<&str> = line.split_whitespace().collect();
    assert!(groups.len() == 8 && groups.iter().all(|g| g.len() == 8 && g.chars().all(|c| c.is_ascii_hexdigit())), "{line:?}");
    RepositoryKey::from_hex(&groups.join(" ")).unwrap()
}

#[test]
fn a_disk_returning_io_errors_fails_the_night_alerts_and_the_next_night_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, failing, _) = dev_box(dir.path());
    let (audit, writer) = AuditLog::start(&a.store_path, &a.key).unwrap();
    let _writer = WriterGuard(Some(writer));
    let paths = BoxPaths {
        store_path: a.store_path.clone(),
        data_dir: a.data_dir.clone(),
        state_dir: a.config.state_dir.clone(),
        config_file: Some(a.config_path.clone()),
    };
    let backups = BoxBackups::new(&a.config, paths, &a.key, audit);
    let mut feed = Feed::start(&a.store(), &a.config.alerts, &a.config.alert_delivery).unwrap();

    // Tonight the disk's writes fail once 1 MiB is written.
    failing.fail_writes_after(1 << 20);
    let tonight = backups.nightly_step(jiff::Timestamp::now()).unwrap().expect("due");
    let fired = failing.fired();
    assert!(fired.as_deref().is_some_and(|f| f.starts_with("write")), "the disk's fault did not fire: {fired:?}; {tonight:?}");
    let err = tonight.expect_err("a night whose disk returns I/O errors must fail").to_string();
    assert!(err.contains("I/O error") && err.contains(&a.usb.display().to_string()), "{err}");
    assert!(!err.contains("full") && !err.contains("went away"), "{err}");
    // Recorded as failed, with no snapshot; the repository is still on the disk.
    assert_eq!(a.backup_runs(), vec![(0, None)]);
    assert!(a.disk.join("config").is_file() && a.disk.join("data").is_dir(), "the repository was removed from the failing disk");
    // Alerted through the detector and the outbox, with the reason.
    let raised = {
        let mut s = a.store();
        let step = feed.step(&mut s).unwrap();
        step.new_alerts.iter().map(|id| outbox::get(s.conn(), *id).unwrap().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(raised.iter().map(|x| (x.alert.rule, x.alert.observed.as_str())).collect::<Vec<_>>(), [(Rule::Backup, "backup_failed")]);
    let alert = a.audit_details().into_iter().find(|d| d["source"] == "backup" && d["event"] == "backup_failed").unwrap();
    assert!(alert["reason"].as_str().unwrap().contains("I/O error"), "{alert}");

    // Failing entirely, the disk is named as failing, not as absent, also by the appliance's
    // check that a disk is mounted at `usb_path`.
    failing.fail_everything();
    let err = wardbox::backup::schedule::ensure_mounted(&a.usb).expect_err("a disk answering with EIO");
    assert!(matches!(err, BackupError::DestinationIoError { .. }), "{err:?}");
    assert!(err.to_string().contains("I/O error") && !err.to_string().contains("not available"), "{err}");

    // The next night the disk works again: the backup succeeds and clears the alert; the stock
    // restic finds the repository sound, with exactly the good snapshot.
    failing.heal();
    let next = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24)).unwrap();
    let done = backups.nightly_step(next).unwrap().expect("due the next night").unwrap();
    assert_eq!(a.backup_runs(), vec![(0, None), (1, Some(done.snapshot.id.clone()))]);
    let cleared = outbox::get(a.store().conn(), raised[0].id).unwrap().unwrap();
    assert_eq!(cleared.reviewed_by.as_deref(), Some("system"));
    let key = a.repository_key();
    let check = restic(&a.usb, &key, &["check", "--read-data"]);
    assert!(check.status.success(), "{}", text(&check));
    let snapshots = restic(&a.usb, &key, &["snapshots", "--json"]);
    let said = text(&snapshots);
    assert!(snapshots.status.success() && said.contains(&done.snapshot.id) && said.matches("\"id\"").count() == 1, "{said}");
    drop(backups);
    drop(failing);
}

#[test]
fn a_disk_failing_while_the_old_key_is_removed_leaves_the_rotation_in_part_and_a_rerun_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, failing, old) = dev_box(dir.path());
    let out = wardbox(&["backup", "now", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(a.repository_key().fingerprint(), old.fingerprint(), "the box backs up with the key on its provisioning sheet");

    // The disk fails as the old key file is being removed: the new key was added and verified
    // and the store took it (steps 2 and 3), the removal (step 4) gets EIO, and whether the
    // old key still opens the repository cannot be told.
    failing.fail_at_first_unlink_in("keys");
    let out = wardbox(&["backup", "rotate-key", "-c", a.c()]);
    let said = text(&out);
    let fired = failing.fired();
    assert!(fired.as_deref().is_some_and(|f| f.starts_with("unlink /keys/")), "the disk's fault did not fire: {fired:?}; {said}");
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("rotated only in part") && said.contains("I/O error"), "{said}");
    assert!(said.contains("Run `wardbox backup rotate-key` again"), "the message names what to run next: {said}");
    // The new sheet is printed: the box backs up with its key now.
    let new = printed_key(&out);
    assert_ne!(new.fingerprint(), old.fingerprint());
    assert!(said.contains(&format!("fingerprint {}", new.fingerprint())), "{said}");
    assert_eq!(a.repository_key().fingerprint(), new.fingerprint(), "the store holds the new key");
    let rotation = a.audit_details().into_iter().rfind(|d| d["action"] == "backup_key_rotated").unwrap();
    assert_eq!((rotation["ok"].as_bool(), rotation["complete"].as_bool()), (Some(false), Some(false)), "{rotation}");
    assert_eq!(rotation["new_key_fingerprint"].as_str(), Some(new.fingerprint().as_str()), "{rotation}");

    // The disk works again: both keys open the repository, for our code and the stock restic.
    failing.heal();
    let destination = a.destination();
    for key in [&old, &new] {
        assert_eq!(BackupRepository::open(&destination, key).unwrap().key_ids().unwrap().len(), 2);
        let listed = restic(&a.usb, key, &["key", "list", "--json"]);
        assert!(listed.status.success(), "{}", text(&listed));
    }
    // The box backs up with the new key.
    let out = wardbox(&["backup", "now", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let backed_up = a.audit_details().into_iter().rfind(|d| d["action"] == "backup_now").unwrap();
    assert_eq!(backed_up["key_fingerprint"].as_str(), Some(new.fingerprint().as_str()), "{backed_up}");

    // The named command finishes the rotation: its own key is the only one left.
    let out = wardbox(&["backup", "rotate-key", "-c", a.c()]);
    assert!(out.status.success(), "{}", text(&out));
    let newest = printed_key(&out);
    assert_eq!(a.repository_key().fingerprint(), newest.fingerprint());
    for gone in [&old, &new] {
        assert!(matches!(BackupRepository::open(&destination, gone), Err(BackupError::WrongKey { .. })), "a retired key still opens the repository");
        assert!(!restic(&a.usb, gone, &["snapshots"]).status.success(), "the stock restic opens the repository with a retired key");
    }
    let listed = restic(&a.usb, &newest, &["key", "list", "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_else(|_| panic!("{}", text(&listed)));
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    let rotation = a.audit_details().into_iter().rfind(|d| d["action"] == "backup_key_rotated").unwrap();
    assert_eq!(rotation["ok"].as_bool(), Some(true), "{rotation}");
    assert_eq!(rotation["removed_key_ids"].as_array().unwrap().len(), 2, "the old key's file and the partial rotation's: {rotation}");
    let check = restic(&a.usb, &newest, &["check", "--read-data"]);
    assert!(check.status.success(), "{}", text(&check));
    drop(failing);
}
