//! The side effects of the USB policy, as root: reading devices from sysfs, writing their
//! `authorized` files, opening and closing the stick window (the storage drivers, the mounts,
//! the expiry), the mount helper's decision for a stick's file system ([`mount_plan`]), and
//! leaving an event for the audit trail at each step. What the host does beyond files
//! (modprobe, umount, the expiry timer) goes through [`Host`], so the sequence is tested on a
//! sysfs-shaped directory; the mount table is a path too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::descriptors;
use super::events;
use super::policy::{self, Decision, DeviceKind, MountPlan};
use super::window::{self, Purpose, Window};

/// Where things are. [`Paths::appliance`] on the box.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/sys/bus/usb/devices`: one directory (or link) per device and per interface.
    pub sysfs_devices: PathBuf,
    pub window: PathBuf,
    pub events: PathBuf,
    /// Where `wardbox-usb-mount@` mounts sticks (`update.usb_dir`).
    pub mounts: PathBuf,
    /// Where it mounts the backup disk in a backup or restore window (`[backup] usb_path`).
    pub backup_disk: PathBuf,
    /// The mount table (`/proc/self/mounts`): which sticks are mounted where.
    pub mount_table: PathBuf,
}

impl Paths {
    pub fn appliance() -> Paths {
        Paths {
            sysfs_devices: PathBuf::from("/sys/bus/usb/devices"),
            window: PathBuf::from("/run/wardbox-usb/window.json"),
            events: PathBuf::from("/run/wardbox/usb-events"),
            mounts: PathBuf::from("/run/wardbox/usb"),
            backup_disk: PathBuf::from(BACKUP_DISK),
            mount_table: PathBuf::from("/proc/self/mounts"),
        }
    }

    /// Why the mount helper refused a stick in the open window: a note beside the window, so
    /// whoever waits for the backup disk hears at once why it does not come (the refusal itself
    /// is audited as an event).
    pub fn mount_refusal(&self) -> PathBuf {
        self.window.with_file_name("mount-refused")
    }
}

/// The backup disk's mount point on the appliance (`tmpfiles.d/wardbox-usb.conf` makes it; the
/// image's `[backup] usb_path`).
pub const BACKUP_DISK: &str = "/run/wardbox/backup-disk";

/// What the host does for the window beyond files.
pub trait Host {
    /// Loads the USB storage drivers, which the image's modprobe rules keep from loading by
    /// themselves.
    fn load_storage_drivers(&mut self) -> Result<(), String>;
    fn unload_storage_drivers(&mut self) -> Result<(), String>;
    /// Unmounts a stick's mount point.
    fn unmount(&mut self, dir: &Path) -> Result<(), String>;
    /// Closes the window by itself `seconds` from now (replacing an earlier schedule).
    fn schedule_close(&mut self, seconds: i64) -> Result<(), String>;
    fn cancel_scheduled_close(&mut self);
}

/// The real host: kmod's modprobe, the stick's mount unit, a systemd timer.
#[derive(Debug)]
pub struct SystemHost;

const EXPIRY_UNIT: &str = "wardbox-usb-window-expiry";

fn command(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Host for SystemHost {
    fn load_storage_drivers(&mut self) -> Result<(), String> {
        // --ignore-install: the image's `install usb-storage /bin/false` stops every load but
        // this deliberate one. uas too: usb-storage leaves a UAS stick to it.
        command("modprobe", &["--ignore-install", "usb-storage"])?;
        command("modprobe", &["--ignore-install", "uas"])
    }
    fn unload_storage_drivers(&mut self) -> Result<(), String> {
        command("modprobe", &["-r", "uas", "usb-storage"])
    }
    fn unmount(&mut self, dir: &Path) -> Result<(), String> {
        // The stick's mount unit unmounts it, in the host's mount namespace (the window helper
        // runs in a namespace of its own, where an umount would not reach the host's mount).
        // The unit is named after the device: the mount table says which one is mounted there
        // (the backup disk's mount point is not named after it).
        let name = mounted_devices(Path::new("/proc/self/mounts"))
            .into_iter()
            .find(|(_, at)| at == dir)
            .map(|(device, _)| device)
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| is_block_name(n))
            .ok_or_else(|| format!("no USB stick is mounted at {}", dir.display()))?;
        command("systemctl", &["stop", &format!("wardbox-usb-mount@{name}.service")])
    }
    fn schedule_close(&mut self, seconds: i64) -> Result<(), String> {
        self.cancel_scheduled_close();
        command("systemd-run", &[
            &format!("--unit={EXPIRY_UNIT}"),
            &format!("--on-active={seconds}s"),
            "--timer-property=AccuracySec=1s",
            "--description=Wardbox: close the USB window when its time is up",
            "/usr/bin/wardbox",
            "usb",
            "close",
            "--reason",
            "its time was up",
        ])
    }
    fn cancel_scheduled_close(&mut self) {
        let _ = command("systemctl", &["stop", &format!("{EXPIRY_UNIT}.timer")]);
    }
}

/// One USB device as sysfs shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// The kernel's name (`1-1`, `2-1.3`).
    pub name: String,
    /// `vvvv:pppp`, or empty when the descriptors do not parse.
    pub id: String,
    pub kind: String,
    pub authorized: bool,
    /// Why the descriptors did not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// What the policy classified it as; `None` when the descriptors do not parse.
    #[serde(skip)]
    pub descriptor_kind: Option<DeviceKind>,
    #[serde(skip)]
    descriptors: Option<descriptors::UsbDescriptors>,
}

/// A stick's block device as the mount helper accepts it: `sdX`, `sdXN`, `sdXNN`.
pub fn is_block_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 3 && b.len() <= 5 && b.starts_with(b"sd") && b[2].is_ascii_lowercase() && b[3..].iter().all(u8::is_ascii_digit)
}

/// A device name as the kernel gives it: `B-P[.P...]` (root hubs, `usbN`, are the kernel's own).
fn is_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.chars().next().is_some_and(|c| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '.')
        && name.contains('-')
}

fn read_device(paths: &Paths, name: &str) -> Result<Device, String> {
    if !is_device_name(name) {
        return Err(format!("'{name}' is not a USB device name (like 1-1 or 2-1.3)"));
    }
    let dir = paths.sysfs_devices.join(name);
    let authorized = std::fs::read_to_string(dir.join("authorized"))
        .map_err(|e| format!("cannot read {}/authorized: {e}", dir.display()))?
        .trim()
        == "1";
    let parsed = std::fs::read(dir.join("descriptors"))
        .map_err(|e| format!("cannot read {}/descriptors: {e}", dir.display()))
        .and_then(|bytes| descriptors::parse(&bytes));
    Ok(match parsed {
        Ok(d) => {
            let kind = policy::classify(&d);
            Device {
                name: name.to_owned(),
                id: format!("{:04x}:{:04x}", d.vendor, d.product),
                kind: kind.name().to_owned(),
                authorized,
                unreadable: None,
                descriptor_kind: Some(kind),
                descriptors: Some(d),
            }
        }
        Err(why) => Device {
            name: name.to_owned(),
            id: String::new(),
            kind: "unreadable".into(),
            authorized,
            unreadable: Some(why),
            descriptor_kind: None,
            descriptors: None,
        },
    })
}

/// Every USB device (not root hubs, not interfaces), by name.
pub fn devices(paths: &Paths) -> Result<Vec<Device>, String> {
    let entries = std::fs::read_dir(&paths.sysfs_devices).map_err(|e| format!("cannot read {}: {e}", paths.sysfs_devices.display()))?;
    let mut names: Vec<String> = entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| is_device_name(n)).collect();
    names.sort();
    names.iter().map(|n| read_device(paths, n)).collect()
}

fn set_authorized(paths: &Paths, name: &str, on: bool) -> Result<(), String> {
    let file = paths.sysfs_devices.join(name).join("authorized");
    std::fs::write(&file, if on { "1" } else { "0" }).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// The open window, or none (an unreadable window is closed, and reported as an event).
fn current_window(paths: &Paths) -> Option<Window> {
    match window::read(&paths.window) {
        Ok(w) => w,
        Err(why) => {
            let _ = events::write(&paths.events, "device-refused", "window", &why);
            None
        }
    }
}

/// Decides for one device and applies the decision: writes `authorized` when it is let in,
/// and leaves an event either way. A device already authorized is left as it is.
pub fn authorize(paths: &Paths, name: &str, now: i64) -> Result<Decision, String> {
    let device = read_device(paths, name)?;
    if device.authorized {
        return Ok(Decision::Authorize(device.descriptor_kind.unwrap_or(DeviceKind::Other("already authorized".into()))));
    }
    let decision = match &device.descriptors {
        Some(d) => {
            let window = current_window(paths);
            let sticks_in = devices(paths)?.iter().filter(|o| o.name != name && o.authorized && o.descriptor_kind == Some(DeviceKind::Storage)).count();
            policy::decide(d, window.as_ref(), now, sticks_in)
        }
        None => Decision::Refuse(format!("its descriptors do not parse: {}", device.unreadable.as_deref().unwrap_or("unknown"))),
    };
    match &decision {
        Decision::Authorize(kind) => {
            set_authorized(paths, name, true)?;
            events::write(&paths.events, "device-authorized", name, &format!("{} {}", device.id, kind.name()))?;
        }
        Decision::Refuse(why) => {
            let storage = device.descriptors.as_ref().is_some_and(|d| d.interfaces.iter().any(|i| i.class == policy::MASS_STORAGE));
            let kind = if storage { "storage-refused" } else { "device-refused" };
            events::write(&paths.events, kind, name, &format!("{} {why}", device.id))?
        }
    }
    Ok(decision)
}

/// Opens the stick window: writes it, schedules its close, loads the storage drivers, and lets
/// in a stick that is already plugged in. Any failure closes it again.
pub fn open_window(paths: &Paths, host: &mut dyn Host, purpose: Purpose, by: &str, minutes: u32, now: i64) -> Result<Window, String> {
    let w = Window::new(purpose, by, now, minutes)?;
    if let Some(open) = window::read(&paths.window).ok().flatten().filter(|o| o.is_open_at(now)) {
        return Err(format!("a USB window is already open (for {}, by {}); close it first", open.purpose, open.opened_by));
    }
    let _ = std::fs::remove_file(paths.mount_refusal());
    window::write(&paths.window, &w)?;
    let opened = host
        .schedule_close(w.until - now)
        .and_then(|()| host.load_storage_drivers())
        .and_then(|()| events::write(&paths.events, "window-opened", "window", &format!("for {purpose} by {} for {minutes} min", w.opened_by)));
    if let Err(why) = opened {
        let _ = close_window(paths, host, &format!("opening it failed: {why}"));
        return Err(format!("the USB window could not be opened: {why}"));
    }
    for d in devices(paths)? {
        if !d.authorized {
            authorize(paths, &d.name, now)?;
        }
    }
    Ok(w)
}

/// What closing did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Closed {
    pub was_open: bool,
    pub unmounted: Vec<String>,
    pub sticks_out: Vec<String>,
    /// Why the drivers stayed loaded, when they did.
    pub drivers_left: Option<String>,
}

/// Closes the window: no new stick is let in from the first step; then every stick is
/// unmounted and de-authorized (its block device goes away), and the drivers are unloaded.
/// Runs every step even when one fails, and says what failed.
pub fn close_window(paths: &Paths, host: &mut dyn Host, reason: &str) -> Result<Closed, String> {
    let mut closed = Closed { was_open: window::remove(&paths.window)?, ..Closed::default() };
    let _ = std::fs::remove_file(paths.mount_refusal());
    host.cancel_scheduled_close();
    let mut failures = Vec::new();
    for dir in mounted_sticks(paths) {
        match host.unmount(&dir) {
            Ok(()) => closed.unmounted.push(dir.display().to_string()),
            Err(e) => failures.push(e),
        }
    }
    for d in devices(paths)? {
        if d.authorized && d.descriptor_kind == Some(DeviceKind::Storage) {
            match set_authorized(paths, &d.name, false) {
                Ok(()) => closed.sticks_out.push(d.name),
                Err(e) => failures.push(e),
            }
        }
    }
    if let Err(e) = host.unload_storage_drivers() {
        closed.drivers_left = Some(e);
    }
    let detail = format!(
        "{reason}; sticks de-authorized: {}; unmounted: {}{}",
        if closed.sticks_out.is_empty() { "none".into() } else { closed.sticks_out.join(" ") },
        closed.unmounted.len(),
        closed.drivers_left.as_ref().map(|e| format!("; drivers still loaded: {e}")).unwrap_or_default()
    );
    events::write(&paths.events, "window-closed", "window", &detail)?;
    if failures.is_empty() { Ok(closed) } else { Err(format!("the USB window is closed, but: {}", failures.join("; "))) }
}

/// Every `/dev/sdX…` in the mount table with where it is mounted.
fn mounted_devices(table: &Path) -> Vec<(String, PathBuf)> {
    let table = std::fs::read_to_string(table).unwrap_or_default();
    table
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let device = fields.next()?.strip_prefix("/dev/")?.to_owned();
            let at = PathBuf::from(fields.next()?.replace("\\040", " "));
            Some((device, at))
        })
        .collect()
}

/// The sticks' mount points that hold a file system now: under the update sticks' directory,
/// and the backup disk's.
fn mounted_sticks(paths: &Paths) -> Vec<PathBuf> {
    let table = std::fs::read_to_string(&paths.mount_table).unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.parent() == Some(paths.mounts.as_path()) || *p == paths.backup_disk)
        .collect()
}

/// The mount helper's decision for the file system on block device `device` (`sdb1`): where and
/// how to mount it in the open window, or why not. A refusal is an event (`mount-refused`, an
/// alert) and, while a window is open, a note beside it ([`Paths::mount_refusal`]) for whoever
/// waits for the backup disk. Returns the plan and the directory to mount on.
pub fn mount_plan(paths: &Paths, device: &str, fs_type: &str, label: &str, now: i64) -> Result<(MountPlan, PathBuf), String> {
    if !is_block_name(device) {
        return Err(format!("'{device}' is not a USB stick's block device (like sdb or sdb1)"));
    }
    let (window, unreadable) = match window::read(&paths.window) {
        Ok(w) => (w, None),
        Err(e) => (None, Some(e)),
    };
    match policy::mount_plan(window.as_ref(), now, fs_type, label) {
        Ok(plan) => {
            let at = if plan.backup_disk { paths.backup_disk.clone() } else { paths.mounts.join(device) };
            Ok((plan, at))
        }
        Err(why) => {
            let why = match unreadable {
                Some(e) => format!("{why} ({e})"),
                None => why,
            };
            if window.is_some() {
                let note = paths.mount_refusal();
                let tmp = note.with_file_name(".mount-refused.tmp");
                let _ = std::fs::write(&tmp, format!("{device}: {why}")).and_then(|()| std::fs::rename(&tmp, &note));
            }
            events::write(&paths.events, "mount-refused", device, &why)?;
            Err(why)
        }
    }
}

/// The plan as the mount helper reads it (`usb-mount`): one line, `ro|rw DIRECTORY OPTIONS`.
pub fn mount_plan_line(plan: &MountPlan, at: &Path) -> String {
    format!("{} {} {}", if plan.read_only { "ro" } else { "rw" }, at.display(), plan.options)
}

/// The device mounted at the backup disk's mount point, if one is.
pub fn backup_disk_mounted(paths: &Paths) -> Option<String> {
    mounted_devices(&paths.mount_table).into_iter().find(|(_, at)| *at == paths.backup_disk).map(|(device, _)| device)
}

/// How long a wait goes on after the mount helper refused a stick in the window: the backup
/// disk may still come on another partition of the same disk (a vfat partition beside the
/// ext4 one), which is mounted or refused a moment later.
const REFUSAL_GRACE: Duration = Duration::from_secs(3);

/// Waits (at most `wait`) until the backup disk is mounted in the open window, and returns its
/// device; fails soon after the mount helper refused a stick in this window (saying why), or
/// at once when the window is gone.
pub fn wait_for_backup_disk(paths: &Paths, wait: Duration) -> Result<String, String> {
    let deadline = Instant::now() + wait;
    let mut refused_since = None;
    loop {
        if let Some(device) = backup_disk_mounted(paths) {
            return Ok(device);
        }
        if !matches!(window::read(&paths.window), Ok(Some(_))) {
            return Err("the USB window closed before the backup disk was mounted".into());
        }
        let now = Instant::now();
        if let Ok(why) = std::fs::read_to_string(paths.mount_refusal()) {
            let since = *refused_since.get_or_insert(now);
            if now >= since + REFUSAL_GRACE || now >= deadline {
                return Err(format!("the stick that was plugged in is refused: {}", why.trim()));
            }
        } else if now >= deadline {
            return Err(format!(
                "no backup disk was mounted within {} s: plug in the backup disk (ext4, labelled {}) while the window is open",
                wait.as_secs(),
                policy::BACKUP_DISK_LABEL
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `wardbox usb status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub window: Option<Window>,
    /// Why the window file could not be read (the window counts as closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_error: Option<String>,
    pub window_open: bool,
    pub storage_drivers_loaded: bool,
    pub devices: Vec<Device>,
}

pub fn status(paths: &Paths, modules: &Path, now: i64) -> Result<Status, String> {
    let (window, window_error) = match window::read(&paths.window) {
        Ok(w) => (w, None),
        Err(e) => (None, Some(e)),
    };
    Ok(Status {
        window_open: window.as_ref().is_some_and(|w| w.is_open_at(now)),
        window,
        window_error,
        storage_drivers_loaded: ["usb_storage", "uas"].iter().any(|m| modules.join(m).exists()),
        devices: devices(paths)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::descriptors::tests::device;
    use super::*;

    /// A host that records what it was asked.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail_load: bool,
    }

    impl Host for Recorder {
        fn load_storage_drivers(&mut self) -> Result<(), String> {
            self.calls.push("load".into());
            if self.fail_load { Err("modprobe: module not found".into()) } else { Ok(()) }
        }
        fn unload_storage_drivers(&mut self) -> Result<(), String> {
            self.calls.push("unload".into());
            Ok(())
        }
        fn unmount(&mut self, dir: &Path) -> Result<(), String> {
            self.calls.push(format!("unmount {}", dir.display()));
            Ok(())
        }
        fn schedule_close(&mut self, seconds: i64) -> Result<(), String> {
            self.calls.push(format!("schedule {seconds}"));
            Ok(())
        }
        fn cancel_scheduled_close(&mut self) {
            self.calls.push("cancel".into());
        }
    }

    struct Box_ {
        _dir: tempfile::TempDir,
        paths: Paths,
    }

    impl Box_ {
        fn new() -> Box_ {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path();
            let paths = Paths {
                sysfs_devices: root.join("sys"),
                window: root.join("run-usb/window.json"),
                events: root.join("events"),
                mounts: root.join("mounts"),
                backup_disk: root.join("backup-disk"),
                mount_table: root.join("proc-mounts"),
            };
            std::fs::create_dir_all(paths.sysfs_devices.join("usb1")).expect("root hub");
            std::fs::create_dir_all(paths.sysfs_devices.join("1-0:1.0")).expect("root hub interface");
            Box_ { _dir: dir, paths }
        }
        /// Plugs in a device, unauthorized, as the kernel shows it with authorized_default=0.
        fn plug(&self, name: &str, interfaces: &[(u8, u8, u8)]) {
            let d = self.paths.sysfs_devices.join(name);
            std::fs::create_dir_all(&d).expect("device dir");
            std::fs::write(d.join("descriptors"), device(0, 0x0781, 0x5583, interfaces)).expect("descriptors");
            std::fs::write(d.join("authorized"), "0\n").expect("authorized");
        }
        fn authorized(&self, name: &str) -> bool {
            std::fs::read_to_string(self.paths.sysfs_devices.join(name).join("authorized")).expect("read").trim() == "1"
        }
        fn events(&self) -> Vec<String> {
            events::drain(&self.paths.events)
                .expect("drain")
                .into_iter()
                .map(|e| e.map(|e| format!("{} {} {}", e.event, e.device, e.detail)).unwrap_or_else(|e| e))
                .collect()
        }
    }

    const STICK: &[(u8, u8, u8)] = &[(8, 6, 0x50)];

    #[test]
    fn plugged_devices_are_decided_and_every_decision_is_an_event() {
        let b = Box_::new();
        b.plug("1-1", &[(3, 1, 1)]);
        b.plug("1-2", STICK);
        b.plug("1-3", &[(3, 1, 2)]);
        assert_eq!(authorize(&b.paths, "1-1", 0), Ok(Decision::Authorize(DeviceKind::Keyboard)));
        assert!(matches!(authorize(&b.paths, "1-2", 0), Ok(Decision::Refuse(_))));
        assert!(matches!(authorize(&b.paths, "1-3", 0), Ok(Decision::Refuse(_))));
        assert!(b.authorized("1-1") && !b.authorized("1-2") && !b.authorized("1-3"));
        let events = b.events();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[0].starts_with("device-authorized 1-1 0781:5583 keyboard"), "{events:?}");
        assert!(events[1].starts_with("storage-refused 1-2 0781:5583 USB storage is refused"), "{events:?}");
        assert!(events[2].starts_with("device-refused 1-3") && events[2].contains("not a keyboard"), "{events:?}");
        assert!(authorize(&b.paths, "../../etc", 0).is_err(), "only device names");
        assert!(authorize(&b.paths, "usb1", 0).is_err(), "root hubs are the kernel's");
    }

    #[test]
    fn garbage_descriptors_are_refused() {
        let b = Box_::new();
        b.plug("1-4", STICK);
        std::fs::write(b.paths.sysfs_devices.join("1-4/descriptors"), [18, 1, 0]).expect("write");
        assert!(matches!(authorize(&b.paths, "1-4", 0), Ok(Decision::Refuse(r)) if r.contains("do not parse")));
        assert!(!b.authorized("1-4"));
    }

    #[test]
    fn the_window_lets_one_stick_in_and_closing_takes_it_out() {
        let b = Box_::new();
        let mut host = Recorder::default();
        b.plug("1-2", STICK);
        let w = open_window(&b.paths, &mut host, Purpose::Update, "admin", 15, 1000).expect("open");
        assert_eq!(w.until, 1000 + 900);
        assert!(b.authorized("1-2"), "the stick already plugged in is let in");
        assert_eq!(host.calls, vec!["schedule 900", "load"]);
        assert!(open_window(&b.paths, &mut host, Purpose::Update, "admin", 15, 1001).expect_err("a second window").contains("already open"));
        b.plug("1-3", STICK);
        assert!(matches!(authorize(&b.paths, "1-3", 1002), Ok(Decision::Refuse(r)) if r.contains("one at a time")));
        let s = status(&b.paths, &b.paths.mounts, 1002).expect("status");
        assert!(s.window_open && s.devices.len() == 2);

        host.calls.clear();
        let closed = close_window(&b.paths, &mut host, "the update is done").expect("close");
        assert!(closed.was_open && closed.sticks_out == vec!["1-2".to_string()]);
        assert!(!b.authorized("1-2"));
        assert_eq!(host.calls, vec!["cancel", "unload"]);
        assert!(matches!(authorize(&b.paths, "1-3", 1003), Ok(Decision::Refuse(r)) if r.contains("unless an administrator")));
        let events = b.events();
        assert!(events.iter().any(|e| e.starts_with("window-opened window for update by admin for 15 min")), "{events:?}");
        assert!(events.iter().any(|e| e.starts_with("device-authorized 1-2") && e.ends_with("storage")), "{events:?}");
        assert!(events.iter().any(|e| e.starts_with("window-closed window the update is done; sticks de-authorized: 1-2")), "{events:?}");
    }

    #[test]
    fn a_backup_window_mounts_only_the_backup_disk_and_closing_unmounts_it() {
        let b = Box_::new();
        let mut host = Recorder::default();
        b.plug("1-2", STICK);
        open_window(&b.paths, &mut host, Purpose::Backup, "admin:it.admin", 120, 1000).expect("open");
        assert!(b.authorized("1-2"));
        // A stick that is not the backup disk: refused, audited, and the waiting side hears why.
        let why = mount_plan(&b.paths, "sdb1", "vfat", "KINGSTON", 1001).expect_err("another stick");
        assert!(why.starts_with("not the backup disk"), "{why}");
        let waited = wait_for_backup_disk(&b.paths, Duration::from_secs(5)).expect_err("refused");
        assert!(waited.contains("refused: sdb1: not the backup disk"), "{waited}");
        assert!(mount_plan(&b.paths, "../sda", "ext4", policy::BACKUP_DISK_LABEL, 1001).is_err(), "only sdX names");
        // The backup disk: read-write at the backup disk's mount point.
        let (plan, at) = mount_plan(&b.paths, "sdb1", "ext4", policy::BACKUP_DISK_LABEL, 1001).expect("the backup disk");
        assert!(!plan.read_only && at == b.paths.backup_disk, "{plan:?} {}", at.display());
        assert_eq!(mount_plan_line(&plan, &at), format!("rw {} rw,nosuid,nodev,noexec", at.display()), "what usb-mount reads");
        std::fs::write(&b.paths.mount_table, format!("/dev/sda2 / ext4 ro 0 0\n/dev/sdb1 {} ext4 rw,nosuid,nodev,noexec 0 0\n", at.display())).expect("mount table");
        std::fs::remove_file(b.paths.mount_refusal()).expect("the refusal note");
        assert_eq!(wait_for_backup_disk(&b.paths, Duration::from_secs(5)), Ok("sdb1".into()));

        host.calls.clear();
        let closed = close_window(&b.paths, &mut host, "the backup is done").expect("close");
        assert_eq!(host.calls, vec!["cancel".to_string(), format!("unmount {}", b.paths.backup_disk.display()), "unload".into()]);
        assert_eq!(closed.sticks_out, vec!["1-2".to_string()]);
        assert!(!b.authorized("1-2") && !b.paths.mount_refusal().exists());
        let events = b.events();
        assert!(events.iter().any(|e| e.starts_with("window-opened window for backup by admin:it.admin for 120 min")), "{events:?}");
        assert!(events.iter().any(|e| e.starts_with("mount-refused sdb1 not the backup disk: in a backup window only an ext4 file system labelled WARDBOX-BACKUP")), "{events:?}");
        // Outside a window nothing is mounted, and nobody is told through a note.
        assert_eq!(mount_plan(&b.paths, "sdb1", "ext4", policy::BACKUP_DISK_LABEL, 1002).map(|_| ()), Err("no USB window is open".into()));
        assert!(!b.paths.mount_refusal().exists());
        assert!(b.events().iter().any(|e| e.starts_with("mount-refused sdb1 no USB window is open")));
    }

    #[test]
    fn a_refused_partition_beside_the_backup_disk_does_not_fail_the_wait() {
        let b = Box_::new();
        let mut host = Recorder::default();
        let now = jiff::Timestamp::now().as_second();
        open_window(&b.paths, &mut host, Purpose::Backup, "admin", 15, now).expect("open");
        assert!(mount_plan(&b.paths, "sdb2", "vfat", "EFI", now).is_err());
        let (table, disk) = (b.paths.mount_table.clone(), b.paths.backup_disk.clone());
        let partition = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(table, format!("/dev/sdb1 {} ext4 rw 0 0\n", disk.display())).expect("mount table");
        });
        assert_eq!(wait_for_backup_disk(&b.paths, Duration::from_secs(30)), Ok("sdb1".into()));
        partition.join().expect("thread");
    }

    #[test]
    fn waiting_for_the_backup_disk_is_bounded_and_ends_with_the_window() {
        let b = Box_::new();
        let mut host = Recorder::default();
        open_window(&b.paths, &mut host, Purpose::Backup, "admin", 15, jiff::Timestamp::now().as_second()).expect("open");
        let err = wait_for_backup_disk(&b.paths, Duration::from_millis(300)).expect_err("no disk");
        assert!(err.starts_with("no backup disk was mounted within 0 s") && err.contains("WARDBOX-BACKUP"), "{err}");
        close_window(&b.paths, &mut host, "done").expect("close");
        let err = wait_for_backup_disk(&b.paths, Duration::from_secs(5)).expect_err("closed");
        assert!(err.contains("window closed"), "{err}");
        assert!(is_block_name("sdb") && is_block_name("sdz12") && !is_block_name("sda123") && !is_block_name("nvme0n1") && !is_block_name("sd1"));
    }

    #[test]
    fn a_window_that_cannot_load_the_drivers_is_closed_again() {
        let b = Box_::new();
        b.plug("1-2", STICK);
        let mut host = Recorder { fail_load: true, ..Recorder::default() };
        let err = open_window(&b.paths, &mut host, Purpose::Update, "admin", 15, 1000).expect_err("the drivers do not load");
        assert!(err.contains("module not found"), "{err}");
        assert_eq!(window::read(&b.paths.window), Ok(None), "the window is closed again");
        assert!(!b.authorized("1-2"));
    }

    #[test]
    fn an_unreadable_window_is_a_closed_one() {
        let b = Box_::new();
        b.plug("1-2", STICK);
        std::fs::create_dir_all(b.paths.window.parent().expect("dir")).expect("dir");
        std::fs::write(&b.paths.window, "{ not json").expect("write");
        assert!(matches!(authorize(&b.paths, "1-2", 0), Ok(Decision::Refuse(_))));
        assert!(!b.authorized("1-2"));
        assert!(b.events().iter().any(|e| e.contains("window") && e.contains("not valid")));
    }
}
