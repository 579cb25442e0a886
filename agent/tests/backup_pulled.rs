//! The backup disk pulled while the nightly backup runs, as the daemon runs it
//! (`BoxBackups::nightly_step`, real store, audit writer and alert detector): the run fails
//! saying the destination went away, it is recorded as failed with no snapshot, a `backup`
//! alert is raised, nothing is left under the empty mount point; the next night, the disk back,
//! the backup succeeds, clears the alert, and the stock `restic check --read-data` passes.
//!
//! The disk is a directory bind-mounted on the configured `usb_path`; mid-run the test detaches
//! the mount (`umount -l`), as when a stick is pulled. Needs mount rights (root); fails saying
//! so without them. One test in this file, as it changes the mount table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use wardbox::alerting::{Feed, outbox};
use wardbox::audit::AuditLog;
use wardbox::backup::service::{BoxBackups, BoxPaths};
use wardbox::config::Config;
use wardbox::store::{Store, StoreKey};
use wardbox_alerts::Rule;

/// Bytes the backup has read before the disk is pulled: well inside the run.
const PULL_AFTER_BYTES: u64 = 6 << 20;

fn mount_disk(disk: &Path, at: &Path) {
    nix::mount::mount(Some(disk), at, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap_or_else(|e| {
        panic!("this test needs mount rights (root) to mount a stand-in backup disk on {} and pull it mid-backup: {e}", at.display())
    });
}

/// Detaches the mount if the test stops early.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

struct WriterGuard(Option<wardbox::audit::WriterThread>);
impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.join_within(Duration::from_secs(5));
        }
    }
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

#[test]
fn a_disk_pulled_mid_backup_fails_the_night_alerts_and_the_next_night_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (data_dir, state_dir, usb, disk) = (base.join("data"), base.join("state"), base.join("usb"), base.join("disk"));
    for d in [&data_dir, &state_dir, &usb, &disk] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Something in the backup large enough that the disk can be pulled while it is written.
    std::fs::write(state_dir.join("firewall-counters.bin"), noise(48 << 20)).unwrap();
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
    let key = StoreKey::random();
    let store_path = data_dir.join("wardbox.db");
    let (mut store, _) = Store::open_or_create(&store_path, &key).unwrap();
    store.migrate().unwrap();
    drop(store);
    let (audit, writer) = AuditLog::start(&store_path, &key).unwrap();
    let _writer = WriterGuard(Some(writer));
    let paths = BoxPaths { store_path: store_path.clone(), data_dir, state_dir, config_file: Some(config_path) };
    let backups = BoxBackups::new(&config, paths, &key, audit);
    let open = || Store::open_existing(&store_path, &key).unwrap();
    let mut feed = Feed::start(&open(), &config.alerts, &config.alert_delivery).unwrap();

    mount_disk(&disk, &usb);
    let mounted = Mounted(usb.clone());

    // Tonight: the disk is pulled while the backup writes.
    let pulled = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let tonight = std::thread::scope(|s| {
        let puller = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut last = None;
            while !finished.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Some(reading) = backups.progress_now() {
                    if reading.step == "backing up" && reading.done >= PULL_AFTER_BYTES {
                        nix::mount::umount2(&usb, MntFlags::MNT_DETACH).unwrap();
                        pulled.store(true, Ordering::SeqCst);
                        return Some(reading);
                    }
                    last = Some(reading);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            last
        });
        let tonight = backups.nightly_step(jiff::Timestamp::now()).unwrap().expect("due");
        finished.store(true, Ordering::SeqCst);
        let at_pull = puller.join().unwrap();
        assert!(pulled.load(Ordering::SeqCst), "the backup ended before the disk was pulled (last progress {at_pull:?})");
        tonight
    });
    let err = tonight.expect_err("a night whose disk was pulled must fail").to_string();
    assert!(err.contains("went away") && err.contains("no snapshot was recorded") && err.contains(&usb.display().to_string()), "{err}");
    assert_eq!(std::fs::read_dir(&usb).unwrap().count(), 0, "the pulled run left files under the empty mount point");
    // Recorded as failed, with no snapshot.
    let runs: Vec<(i64, Option<String>)> = {
        let s = open();
        let mut stmt = s.conn().prepare("SELECT ok, snapshot_id FROM backup_runs WHERE kind = 'backup'").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
    };
    assert_eq!(runs, vec![(0, None)]);
    // Alerted through the detector and the outbox.
    let raised = {
        let mut s = open();
        let step = feed.step(&mut s).unwrap();
        step.new_alerts.iter().map(|id| outbox::get(s.conn(), *id).unwrap().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(raised.iter().map(|a| (a.alert.rule, a.alert.observed.as_str())).collect::<Vec<_>>(), [(Rule::Backup, "backup_failed")]);

    // The next night the disk is back: the backup succeeds and clears the alert; the stock
    // restic finds the repository sound.
    mount_disk(&disk, &usb);
    let next = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24)).unwrap();
    let done = backups.nightly_step(next).unwrap().expect("due the next night").unwrap();
    let cleared = outbox::get(open().conn(), raised[0].id).unwrap().unwrap();
    assert_eq!(cleared.reviewed_by.as_deref(), Some("system"));
    let repo_key = wardbox::backup::stored_key(&open()).unwrap().unwrap();
    let restic = std::env::var_os("RESTIC_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/restic"));
    assert!(restic.is_file(), "stock restic not found at {} (Debian package `restic`, or set RESTIC_BIN)", restic.display());
    for args in [&["check", "--read-data"][..], &["snapshots", "--json"][..]] {
        let out = std::process::Command::new(&restic)
            .arg("-r")
            .arg(&usb)
            .arg("--no-cache")
            .args(args)
            .env("RESTIC_PASSWORD", repo_key.to_hex().as_str())
            .env_remove("RESTIC_PASSWORD_FILE")
            .env_remove("RESTIC_REPOSITORY")
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "restic {args:?}: {said}");
        if args[0] == "snapshots" {
            assert!(said.contains(&done.snapshot.id) && said.matches("\"id\"").count() == 1, "exactly the good snapshot: {said}");
        }
    }
    drop(mounted);
}
