//! A backup to the USB disk on a box with USB control goes through a USB window, as the admin
//! Backups page runs it (`BoxBackups` over a real store and audit writer): the agent asks the
//! root window helper (the real `usb::helper` protocol over a Unix socket, the real
//! `usb::control` on a sysfs-shaped directory with a recording host) to open a backup window,
//! waits for the backup disk, backs up, and closes the window whatever the outcome.
//!
//! What udev and the image's mount helper do on the appliance is played by a thread: when the
//! policy has let the stick in (its `authorized` file is 1), it asks `usb::control::mount_plan`
//! (what `usb-mount` asks through `wardbox usb mount-plan`) and, when the plan says so, enters
//! the mount in the mount table the agent reads. The stick's file system and label are the
//! test's. No real USB, no mount rights needed.
//!
//! Covered: a stick that is not the backup disk is refused (audited as `mount-refused`, an
//! alert event) and the run fails saying so, the window closed and the stick taken out; the
//! backup disk is let in read-write, the backup succeeds and the window closes; a drill opens a
//! restore window (read-only); a backup that fails on the disk (another box's repository) still
//! closes the window; an update window already open is not this run's and stays open; the
//! schedule does not run for a disk behind the window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wardbox::audit::AuditLog;
use wardbox::backup::service::{BoxBackups, BoxPaths};
use wardbox::backup::usb::HelperWindow;
use wardbox::config::Config;
use wardbox::store::{Store, StoreKey};
use wardbox::usb::control::{self, Host, Paths};
use wardbox::usb::window::Purpose;
use wardbox::web::backups::{BackupService, RunRefused};

/// The host of the root side: records what it is asked; an unmount takes the mount out of the
/// mount table, as the stick's mount unit would.
#[derive(Clone)]
struct RecordingHost {
    calls: Arc<Mutex<Vec<String>>>,
    mount_table: PathBuf,
}

impl Host for RecordingHost {
    fn load_storage_drivers(&mut self) -> Result<(), String> {
        self.calls.lock().unwrap().push("load".into());
        Ok(())
    }
    fn unload_storage_drivers(&mut self) -> Result<(), String> {
        self.calls.lock().unwrap().push("unload".into());
        Ok(())
    }
    fn unmount(&mut self, dir: &Path) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("unmount {}", dir.display()));
        let table = std::fs::read_to_string(&self.mount_table).unwrap_or_default();
        let kept: String = table.lines().filter(|l| l.split_whitespace().nth(1) != Some(&dir.display().to_string())).map(|l| format!("{l}\n")).collect();
        std::fs::write(&self.mount_table, kept).map_err(|e| e.to_string())
    }
    fn schedule_close(&mut self, seconds: i64) -> Result<(), String> {
        self.calls.lock().unwrap().push(format!("schedule {seconds}"));
        Ok(())
    }
    fn cancel_scheduled_close(&mut self) {
        self.calls.lock().unwrap().push("cancel".into());
    }
}

/// A USB stick's descriptors as the kernel shows them: device, configuration, one mass-storage
/// interface (bulk-only).
fn stick_descriptors() -> Vec<u8> {
    let mut d = vec![18, 1, 0, 2, 0, 0, 0, 64, 0x81, 0x07, 0x83, 0x55, 0, 1, 1, 2, 3, 1];
    d.extend_from_slice(&[9, 2, 18, 0, 1, 1, 0, 0x80, 50]);
    d.extend_from_slice(&[9, 4, 0, 0, 2, 8, 6, 0x50, 0]);
    d
}

struct WriterGuard(Option<wardbox::audit::WriterThread>);
impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.join_within(Duration::from_secs(5));
        }
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    paths: Paths,
    calls: Arc<Mutex<Vec<String>>>,
    /// The file system and label on the stick plugged in, and how many times one was plugged in
    /// (each stick plugged in is mounted at most once).
    stick: Arc<Mutex<(String, String, u32)>>,
    stop: Arc<AtomicBool>,
    store_path: PathBuf,
    key: StoreKey,
    backups: BoxBackups,
    _writer: WriterGuard,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let paths = Paths {
            sysfs_devices: base.join("sys"),
            window: base.join("run-usb/window.json"),
            events: base.join("usb-events"),
            mounts: base.join("usb"),
            backup_disk: base.join("backup-disk"),
            mount_table: base.join("proc-mounts"),
        };
        let (data_dir, state_dir) = (base.join("data"), base.join("state"));
        for d in [&data_dir, &state_dir, &paths.sysfs_devices, &paths.backup_disk] {
            std::fs::create_dir_all(d).unwrap();
        }
        let calls = Arc::new(Mutex::new(Vec::new()));
        let host = RecordingHost { calls: calls.clone(), mount_table: paths.mount_table.clone() };
        let stop = Arc::new(AtomicBool::new(false));

        // The root window helper behind its socket, one request per connection as systemd's
        // Accept=yes runs it.
        let socket = base.join("usb-window.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (served_paths, served_host) = (paths.clone(), host.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = stream.unwrap();
                let mut host = served_host.clone();
                let input = stream.try_clone().unwrap();
                let _ = wardbox::usb::helper::serve(input, stream, &served_paths, &mut host, jiff::Timestamp::now().as_second());
            }
        });

        // udev and the mount helper: a stick let in is mounted as the plan says, once.
        let stick = Arc::new(Mutex::new((String::new(), String::new(), 0)));
        let (udev_paths, udev_stick, udev_stop) = (paths.clone(), stick.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut asked = 0;
            while !udev_stop.load(Ordering::SeqCst) {
                let authorized = std::fs::read_to_string(udev_paths.sysfs_devices.join("1-2/authorized")).is_ok_and(|a| a.trim() == "1");
                let (fs, label, plugged) = udev_stick.lock().unwrap().clone();
                if authorized && asked != plugged {
                    asked = plugged;
                    if let Ok((plan, at)) = control::mount_plan(&udev_paths, "sdb1", &fs, &label, jiff::Timestamp::now().as_second()) {
                        let mode = if plan.read_only { "ro" } else { "rw" };
                        let line = format!("/dev/sdb1 {} {fs} {mode},{} 0 0\n", at.display(), plan.options);
                        let mut table = std::fs::read_to_string(&udev_paths.mount_table).unwrap_or_default();
                        table.push_str(&line);
                        std::fs::write(&udev_paths.mount_table, table).unwrap();
                        wardbox::usb::events::write(&udev_paths.events, "mounted", "sdb1", &format!("{fs} {mode}")).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });

        let text = format!(
            "profile = \"dev\"\nstate_dir = \"{}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{}\"\n[backup]\nusb_path = \"{}\"\nutc_offset_minutes = 0\n",
            state_dir.display(),
            data_dir.display(),
            paths.backup_disk.display()
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
        let box_paths = BoxPaths { store_path: store_path.clone(), data_dir, state_dir, config_file: Some(config_path) };
        let window = HelperWindow { socket, paths: paths.clone() };
        let backups = BoxBackups::with_disk_window(&config, box_paths, &key, audit, Some(Arc::new(window)));
        Rig { _dir: dir, paths, calls, stick, stop, store_path, key, backups, _writer: WriterGuard(Some(writer)) }
    }

    /// Plugs a stick with `fs` labelled `label` into port 1-2, not authorized (the image boots
    /// with usbcore.authorized_default=0).
    fn plug(&self, fs: &str, label: &str) {
        let mut stick = self.stick.lock().unwrap();
        *stick = (fs.to_owned(), label.to_owned(), stick.2 + 1);
        let d = self.paths.sysfs_devices.join("1-2");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("descriptors"), stick_descriptors()).unwrap();
        std::fs::write(d.join("authorized"), "0").unwrap();
    }

    fn stick_authorized(&self) -> bool {
        std::fs::read_to_string(self.paths.sysfs_devices.join("1-2/authorized")).unwrap().trim() == "1"
    }

    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn events(&self) -> Vec<String> {
        wardbox::usb::events::drain(&self.paths.events)
            .unwrap()
            .into_iter()
            .map(|e| e.map(|e| format!("{} {} {}", e.event, e.device, e.detail)).unwrap_or_else(|e| e))
            .collect()
    }

    /// The audit details of the admin actions named `action`, oldest first.
    fn audited(&self, action: &str) -> Vec<serde_json::Value> {
        let store = Store::open_existing(&self.store_path, &self.key).unwrap();
        let mut stmt = store.conn().prepare("SELECT detail FROM audit ORDER BY seq").unwrap();
        let details: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        details.iter().map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()).filter(|d| d["action"] == action).collect()
    }

    /// The backups' outcomes, oldest first.
    fn runs_ok(&self) -> Vec<bool> {
        self.backups.overview().unwrap().runs.iter().rev().filter(|r| r.kind == "backup").map(|r| r.ok).collect()
    }

    fn assert_window_closed(&self) {
        assert!(!self.paths.window.exists(), "the window is still open");
        assert!(!self.stick_authorized(), "the stick was not taken out");
        assert_eq!(control::backup_disk_mounted(&self.paths), None, "the disk is still mounted");
    }
}

#[test]
fn a_backup_to_the_usb_disk_goes_through_a_backup_window_that_closes_whatever_the_outcome() {
    let rig = Rig::new();
    let overview = rig.backups.overview().unwrap();
    assert!(rig.backups.nightly().is_none(), "the schedule must not let a USB disk in by itself");
    assert!(overview.schedule.starts_with("by hand only"), "{}", overview.schedule);

    // A stick that is not the backup disk: let in by the window's policy, refused by the mount
    // plan, the run fails saying why, the window closes and the stick is taken out.
    rig.plug("vfat", "KINGSTON");
    let err = match rig.backups.back_up("it.admin") {
        Err(RunRefused::Failed(e)) => e,
        other => panic!("a wrong stick must fail the run: {other:?}"),
    };
    assert!(err.contains("refused") && err.contains("not the backup disk") && err.contains("WARDBOX-BACKUP"), "{err}");
    rig.assert_window_closed();
    assert_eq!(rig.take_calls(), ["schedule 7200", "load", "cancel", "unload"]);
    let events = rig.events();
    assert!(events.iter().any(|e| e.starts_with("window-opened window for backup by admin:it.admin for 120 min")), "{events:?}");
    let refused: Vec<&String> = events.iter().filter(|e| e.starts_with("mount-refused sdb1 not the backup disk")).collect();
    assert_eq!(refused.len(), 1, "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("window-closed window the backup by admin:it.admin ended; sticks de-authorized: 1-2")), "{events:?}");
    // The refusal is an alert event (`usb_refused`), as any stick the mount helper refuses.
    let refusal = wardbox::usb::events::UsbEvent { event: "mount-refused".into(), device: "sdb1".into(), detail: String::new(), time: String::new() };
    assert_eq!(wardbox::usb::events::alert_event(&refusal), Some("mount_refused"));
    assert!(std::fs::read_dir(&rig.paths.backup_disk).unwrap().next().is_none(), "nothing was written");
    assert_eq!(rig.runs_ok(), [false], "recorded as a failed run");
    let audited = rig.audited("backup_now");
    assert_eq!(audited.len(), 1);
    assert!(audited[0]["error"].as_str().is_some_and(|e| e.contains("not the backup disk")), "{:?}", audited[0]);

    // The backup disk: mounted read-write, backed up, the window closed after the run.
    rig.plug("ext4", "WARDBOX-BACKUP");
    let done = rig.backups.back_up("it.admin").expect("a backup to the backup disk");
    assert!(done.starts_with("snapshot "), "{done}");
    assert!(rig.paths.backup_disk.join("config").is_file(), "the repository is on the disk");
    rig.assert_window_closed();
    let disk = rig.paths.backup_disk.display().to_string();
    assert_eq!(rig.take_calls(), ["schedule 7200".to_string(), "load".into(), "cancel".into(), format!("unmount {disk}"), "unload".into()]);
    let events = rig.events();
    assert!(events.iter().any(|e| e == "mounted sdb1 ext4 rw"), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("window-closed window the backup by admin:it.admin ended; sticks de-authorized: 1-2; unmounted: 1")), "{events:?}");
    let audited = rig.audited("backup_now");
    assert_eq!(audited[1]["ok"], true, "{:?}", audited[1]);
    assert_eq!(audited[1]["usb_window"]["purpose"], "backup");
    assert_eq!(audited[1]["usb_window"]["device"], "sdb1");
    assert_eq!(audited[1]["usb_window"]["closed"], true, "{:?}", audited[1]);

    // A drill reads the disk in a restore window: mounted read-only, closed afterwards.
    rig.plug("ext4", "WARDBOX-BACKUP");
    let drilled = rig.backups.drill("it.admin").expect("a drill from the backup disk");
    assert!(drilled.contains("audit chain intact"), "{drilled}");
    rig.assert_window_closed();
    let events = rig.events();
    assert!(events.iter().any(|e| e.starts_with("window-opened window for restore by admin:it.admin")), "{events:?}");
    assert!(events.iter().any(|e| e == "mounted sdb1 ext4 ro"), "{events:?}");
    rig.take_calls();

    // A backup that fails on the disk (it holds another box's repository): the window closes.
    let ours = rig.paths.backup_disk.with_file_name("our-disk");
    std::fs::rename(&rig.paths.backup_disk, &ours).unwrap();
    std::fs::create_dir_all(&rig.paths.backup_disk).unwrap();
    let other_key = wardbox_backup::RepositoryKey::generate().unwrap();
    wardbox_backup::BackupRepository::init(&wardbox_backup::Destination::LocalDirectory(rig.paths.backup_disk.clone()), &other_key).unwrap();
    rig.plug("ext4", "WARDBOX-BACKUP");
    let err = match rig.backups.back_up("it.admin") {
        Err(RunRefused::Failed(e)) => e,
        other => panic!("another box's repository must fail the run: {other:?}"),
    };
    assert!(err.contains("wrong key"), "{err}");
    rig.assert_window_closed();
    assert_eq!(rig.take_calls(), ["schedule 7200".to_string(), "load".into(), "cancel".into(), format!("unmount {disk}"), "unload".into()]);
    let audited = rig.audited("backup_now");
    assert_eq!((audited[2]["ok"].as_bool(), audited[2]["usb_window"]["closed"].as_bool()), (Some(false), Some(true)), "{:?}", audited[2]);
    assert_eq!(rig.runs_ok(), [false, true, false]);

    // An update window already open is not this run's: the run is refused and leaves it open.
    std::fs::remove_dir_all(&rig.paths.backup_disk).unwrap();
    std::fs::rename(&ours, &rig.paths.backup_disk).unwrap();
    let mut host = RecordingHost { calls: rig.calls.clone(), mount_table: rig.paths.mount_table.clone() };
    let now = jiff::Timestamp::now().as_second();
    control::open_window(&rig.paths, &mut host, Purpose::Update, "admin:jo", 15, now).unwrap();
    rig.take_calls();
    let err = match rig.backups.back_up("it.admin") {
        Err(RunRefused::Failed(e)) => e,
        other => panic!("a run while an update window is open must fail: {other:?}"),
    };
    assert!(err.contains("could not be opened") && err.contains("already open (for update, by admin:jo)"), "{err}");
    assert!(wardbox::usb::window::read(&rig.paths.window).unwrap().is_some_and(|w| w.purpose == Purpose::Update), "the update window stays open");
    assert_eq!(rig.take_calls(), Vec::<String>::new(), "nothing of the update window was touched");
    control::close_window(&rig.paths, &mut host, "the update is done").unwrap();
}
