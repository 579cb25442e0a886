//! The USB stick window: the one time the box lets a USB stick in. An administrator opens it
//! for an update (the admin Updates page through the root helper, or `wardbox usb open` as root
//! at the console), or for a backup to the clinic's USB backup disk or a restore from it (the
//! backup commands and the admin Backups page open and close it around the run); it closes when
//! the work is done, when someone closes it, or when its time is up, whichever comes first.
//! While it is open the policy authorizes one mass-storage device, mounted as the window's
//! purpose says ([`Purpose`]); while it is closed none.
//!
//! The window is one small JSON file in a root-owned directory (`/run/wardbox-usb/window.json`
//! on the appliance): the udev-run policy, the mount helper and the agent read it; only root
//! writes it. It lives under /run, so a reboot closes it. An unreadable or malformed file is a
//! closed window (and an error to report), never an open one.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why the window is open, which decides which stick is mounted and how
/// ([`super::policy::mount_plan`]). An unknown purpose in the file is an error, not a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// A stick with an update bundle: any stick with vfat, exfat or ext4, mounted read-only
    /// under the update sticks' directory, the block device itself set read-only.
    Update,
    /// A backup to the clinic's backup disk: only that disk (ext4 labelled
    /// [`super::policy::BACKUP_DISK_LABEL`]), mounted read-write (still nosuid, nodev, noexec)
    /// at the backup disk's mount point, which `[backup] usb_path` names.
    Backup,
    /// Reading the backup disk (restore, drill, list, check): the same disk, mounted read-only
    /// as for an update, at the backup disk's mount point.
    Restore,
}

impl Purpose {
    /// Whether the stick is mounted read-only (and its block device set read-only).
    pub fn read_only(self) -> bool {
        !matches!(self, Purpose::Backup)
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Purpose::Update => "update",
            Purpose::Backup => "backup",
            Purpose::Restore => "restore",
        })
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "update" => Ok(Purpose::Update),
            "backup" => Ok(Purpose::Backup),
            "restore" => Ok(Purpose::Restore),
            other => Err(format!("a USB window is for update, backup or restore, not '{other}'")),
        }
    }
}

/// An open window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub purpose: Purpose,
    /// The account that opened it (an admin's user name, or `console` for root at the console).
    pub opened_by: String,
    /// Seconds since the epoch.
    pub opened_at: i64,
    /// Seconds since the epoch: after this no device is authorized, and the scheduled close runs.
    pub until: i64,
}

/// The longest a window may stay open: long enough to copy a full bundle at stick speed and
/// confirm it, or to back up a large store, short enough that a forgotten window closes by
/// itself.
pub const MAX_MINUTES: u32 = 120;
/// Larger files are not windows.
const MAX_BYTES: u64 = 4096;

impl Window {
    /// A window for `purpose`, opened now by `by` for `minutes` (1 to [`MAX_MINUTES`]).
    pub fn new(purpose: Purpose, by: &str, now: i64, minutes: u32) -> Result<Window, String> {
        if minutes == 0 || minutes > MAX_MINUTES {
            return Err(format!("a USB window is open for 1 to {MAX_MINUTES} minutes, not {minutes}"));
        }
        if by.is_empty() || by.len() > 64 || by.chars().any(|c| c.is_control()) {
            return Err("the name of whoever opens the USB window is empty, too long or holds control characters".into());
        }
        Ok(Window { purpose, opened_by: by.to_owned(), opened_at: now, until: now + i64::from(minutes) * 60 })
    }

    pub fn is_open_at(&self, now: i64) -> bool {
        self.opened_at <= now && now < self.until
    }
}

/// The window in `path`: `Ok(None)` when there is none; an error when the file is there but is
/// not a window (the caller treats that as closed).
pub fn read(path: &Path) -> Result<Option<Window>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the USB window {}: {e}", path.display())),
    };
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(format!("the USB window {} is not a small regular file", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the USB window {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("the USB window {} is not valid: {e}", path.display()))
}

/// Writes the window (a temporary file renamed over, so readers never see half of one).
pub fn write(path: &Path, window: &Window) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{} has no directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(".window.tmp");
    let json = serde_json::to_vec(window).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, json).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write the USB window {}: {e}", path.display()))
}

/// Removes the window; `Ok(false)` when none was open.
pub fn remove(path: &Path) -> Result<bool, String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot close the USB window {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_open_for_its_minutes_only() {
        let w = Window::new(Purpose::Update, "admin", 1000, 15).expect("window");
        assert!(w.is_open_at(1000) && w.is_open_at(1000 + 15 * 60 - 1));
        assert!(!w.is_open_at(1000 + 15 * 60), "closed when its time is up");
        assert!(!w.is_open_at(999), "not open before it was opened (a clock set back)");
        assert!(Window::new(Purpose::Update, "admin", 0, 0).is_err());
        assert!(Window::new(Purpose::Update, "admin", 0, MAX_MINUTES + 1).is_err());
        assert!(Window::new(Purpose::Update, "", 0, 5).is_err());
        assert!(Window::new(Purpose::Update, "a\nb", 0, 5).is_err());
    }

    #[test]
    fn only_a_backup_window_mounts_read_write_and_purposes_are_named() {
        assert!(Purpose::Update.read_only() && Purpose::Restore.read_only() && !Purpose::Backup.read_only());
        for p in [Purpose::Update, Purpose::Backup, Purpose::Restore] {
            assert_eq!(p.to_string().parse::<Purpose>(), Ok(p));
        }
        assert!("Backup".parse::<Purpose>().is_err() && "".parse::<Purpose>().is_err());
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_an_error_not_a_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("usb/window.json");
        assert_eq!(read(&path), Ok(None));
        let w = Window::new(Purpose::Update, "admin", 1000, 15).expect("window");
        write(&path, &w).expect("write");
        assert_eq!(read(&path), Ok(Some(w)));
        std::fs::write(&path, r#"{"purpose":"update","opened_by":"x","opened_at":0,"until":99999999999,"also":1}"#).expect("write");
        assert!(read(&path).is_err(), "unknown fields");
        std::fs::write(&path, r#"{"purpose":"exfiltrate","opened_by":"x","opened_at":0,"until":1}"#).expect("write");
        assert!(read(&path).is_err(), "unknown purpose");
        // A window written before backups had windows reads as it did.
        std::fs::write(&path, r#"{"purpose":"update","opened_by":"admin:jo","opened_at":5,"until":65}"#).expect("write");
        assert_eq!(read(&path).expect("read").map(|w| (w.purpose, w.until)), Some((Purpose::Update, 65)));
        for purpose in [Purpose::Backup, Purpose::Restore] {
            let w = Window::new(purpose, "admin", 1000, 15).expect("window");
            write(&path, &w).expect("write");
            assert_eq!(read(&path), Ok(Some(w)));
        }
        assert_eq!(remove(&path), Ok(true));
        assert_eq!(remove(&path), Ok(false));
    }
}
