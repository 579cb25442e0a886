//! Which USB devices the box lets in. The image boots with `usbcore.authorized_default=0` on
//! its signed kernel command line, so the kernel binds no driver to a USB device until
//! something writes 1 to its `authorized` file; udev runs `wardbox usb authorize` for each new
//! device, which decides here, from the device's descriptors:
//!
//! - hubs: yes (what is plugged into them is decided on its own);
//! - keyboards (every interface HID, at least one a boot keyboard): yes, for the console;
//! - mass storage (every interface of class 08): only while an administrator's window is open
//!   ([`super::window`]), and one stick at a time;
//! - everything else, including a device that is storage *and* something else (a stick that
//!   also types), mice, network adapters, cameras and anything whose descriptors do not parse:
//!   no.
//!
//! And, once a stick's file system shows up, whether and how it is mounted ([`mount_plan`]): in
//! an update window any stick read-only; in a backup or restore window only the clinic's backup
//! disk, read-write for a backup and read-only for a restore.
//!
//! Pure: the caller reads sysfs and the window, writes `authorized`, mounts, and audits the
//! decision.

use super::descriptors::UsbDescriptors;
use super::window::{Purpose, Window};

const HUB: u8 = 0x09;
const HID: u8 = 0x03;
/// The mass-storage interface class.
pub const MASS_STORAGE: u8 = 0x08;

/// What a device is, as far as the policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    Hub,
    Keyboard,
    Storage,
    /// Anything else, described for the audit trail.
    Other(String),
}

impl DeviceKind {
    pub fn name(&self) -> &str {
        match self {
            DeviceKind::Hub => "hub",
            DeviceKind::Keyboard => "keyboard",
            DeviceKind::Storage => "storage",
            DeviceKind::Other(_) => "other",
        }
    }
}

pub fn classify(d: &UsbDescriptors) -> DeviceKind {
    let all = |class: u8| !d.interfaces.is_empty() && d.interfaces.iter().all(|i| i.class == class);
    if all(HUB) {
        DeviceKind::Hub
    } else if all(HID) && d.interfaces.iter().any(|i| i.subclass == 1 && i.protocol == 1) {
        DeviceKind::Keyboard
    } else if all(MASS_STORAGE) {
        DeviceKind::Storage
    } else if d.interfaces.is_empty() {
        DeviceKind::Other("a device with no interfaces".into())
    } else if all(HID) {
        DeviceKind::Other("an input device that is not a keyboard (a mouse, tablet or game controller)".into())
    } else {
        let classes: Vec<String> = d.interfaces.iter().map(ToString::to_string).collect();
        DeviceKind::Other(format!("a device with interfaces {}", classes.join(" ")))
    }
}

/// The decision for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Authorize(DeviceKind),
    Refuse(String),
}

/// Decides for a device that is not authorized yet. `window` is the open window, if any (a
/// window that could not be read is `None`); `sticks_in` counts the mass-storage devices
/// already authorized.
pub fn decide(d: &UsbDescriptors, window: Option<&Window>, now: i64, sticks_in: usize) -> Decision {
    match classify(d) {
        kind @ (DeviceKind::Hub | DeviceKind::Keyboard) => Decision::Authorize(kind),
        DeviceKind::Storage => match window {
            None => Decision::Refuse("USB storage is refused unless an administrator opened a USB window for an update or a backup".into()),
            Some(w) if !w.is_open_at(now) => Decision::Refuse("USB storage is refused: the USB window's time is up".into()),
            Some(_) if sticks_in > 0 => Decision::Refuse("USB storage is refused: a stick is already in the USB window (one at a time)".into()),
            Some(_) => Decision::Authorize(DeviceKind::Storage),
        },
        DeviceKind::Other(what) => Decision::Refuse(format!("{what} is refused: only keyboards, hubs and, in an administrator's USB window, one stick")),
    }
}

/// The file system label that makes a disk the clinic's backup disk. Preparing a disk is the
/// explicit step an administrator takes once (`mkfs.ext4 -L WARDBOX-BACKUP`, docs/backup.md);
/// in a backup or restore window no other stick is mounted. A disk that carries the label but
/// holds another box's repository is refused later, by the repository's key ("wrong key").
pub const BACKUP_DISK_LABEL: &str = "WARDBOX-BACKUP";

/// Where and how a stick's file system is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// Mounted read-only, and its block device set read-only before anything reads it.
    pub read_only: bool,
    /// At the backup disk's mount point (`[backup] usb_path`); otherwise under the update
    /// sticks' directory, one directory per device.
    pub backup_disk: bool,
    /// The `mount -o` options: always nosuid, nodev, noexec.
    pub options: &'static str,
}

/// Decides whether the file system `fs_type` labelled `label` on a stick the policy let in is
/// mounted, and how, in `window` at `now`. `Err` is the refusal's reason (audited as
/// `mount-refused`, which raises the `usb_refused` alert).
pub fn mount_plan(window: Option<&Window>, now: i64, fs_type: &str, label: &str) -> Result<MountPlan, String> {
    let Some(window) = window.filter(|w| w.is_open_at(now)) else {
        return Err("no USB window is open".into());
    };
    match window.purpose {
        Purpose::Update => {
            let options = match fs_type {
                "vfat" | "exfat" => "ro,nosuid,nodev,noexec,uid=0,gid=0,fmask=0133,dmask=0022",
                // noload: not even the journal is replayed, so the stick is not written.
                "ext4" => "ro,nosuid,nodev,noexec,noload",
                other => return Err(format!("file system '{other}', not vfat, exfat or ext4")),
            };
            Ok(MountPlan { read_only: true, backup_disk: false, options })
        }
        Purpose::Backup | Purpose::Restore => {
            if fs_type != "ext4" || label != BACKUP_DISK_LABEL {
                // The label itself is not repeated: it is written by whoever formatted the
                // stick and could name a patient, and the reason goes into the audit trail.
                let labelled = match label {
                    "" => "without a label",
                    BACKUP_DISK_LABEL => "labelled WARDBOX-BACKUP",
                    _ => "with another label",
                };
                return Err(format!(
                    "not the backup disk: in a {} window only an ext4 file system labelled {BACKUP_DISK_LABEL} is mounted, this one is '{}' {labelled}",
                    window.purpose,
                    fs_type.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect::<String>()
                ));
            }
            if window.purpose == Purpose::Backup {
                Ok(MountPlan { read_only: false, backup_disk: true, options: "rw,nosuid,nodev,noexec" })
            } else {
                Ok(MountPlan { read_only: true, backup_disk: true, options: "ro,nosuid,nodev,noexec,noload" })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::descriptors::{parse, tests::device};
    use super::super::window::Purpose;
    use super::*;

    fn dev(class: u8, interfaces: &[(u8, u8, u8)]) -> UsbDescriptors {
        parse(&device(class, 0x1234, 0x5678, interfaces)).expect("parse")
    }

    #[test]
    fn keyboards_and_hubs_always_other_devices_never() {
        let keyboard = dev(0, &[(3, 1, 1), (3, 0, 0)]);
        assert_eq!(decide(&keyboard, None, 0, 0), Decision::Authorize(DeviceKind::Keyboard));
        assert_eq!(decide(&dev(9, &[(9, 0, 0)]), None, 0, 0), Decision::Authorize(DeviceKind::Hub));
        for (what, d) in [
            ("mouse", dev(0, &[(3, 1, 2)])),
            ("network adapter", dev(0, &[(2, 6, 0), (10, 0, 0)])),
            ("camera", dev(0xef, &[(14, 1, 0), (14, 2, 0)])),
            ("no interfaces", dev(0, &[])),
        ] {
            assert!(matches!(decide(&d, None, 0, 0), Decision::Refuse(_)), "{what}");
        }
    }

    #[test]
    fn a_stick_only_inside_an_open_window_and_one_at_a_time() {
        let stick = dev(0, &[(8, 6, 0x50)]);
        let w = Window::new(Purpose::Update, "admin", 1000, 10).expect("window");
        assert!(matches!(decide(&stick, None, 1000, 0), Decision::Refuse(r) if r.contains("unless an administrator")));
        assert_eq!(decide(&stick, Some(&w), 1001, 0), Decision::Authorize(DeviceKind::Storage));
        assert!(matches!(decide(&stick, Some(&w), 1001, 1), Decision::Refuse(r) if r.contains("one at a time")));
        assert!(matches!(decide(&stick, Some(&w), 1000 + 600, 0), Decision::Refuse(r) if r.contains("time is up")));
        // UAS: the same device class with the UAS protocol.
        assert_eq!(decide(&dev(0, &[(8, 6, 0x62)]), Some(&w), 1001, 0), Decision::Authorize(DeviceKind::Storage));
    }

    #[test]
    fn an_update_window_mounts_any_stick_read_only() {
        let w = Window::new(Purpose::Update, "admin", 1000, 10).expect("window");
        for fs in ["vfat", "exfat", "ext4"] {
            let plan = mount_plan(Some(&w), 1001, fs, "KINGSTON").expect(fs);
            assert!(plan.read_only && !plan.backup_disk && plan.options.starts_with("ro,nosuid,nodev,noexec"), "{fs}: {plan:?}");
        }
        assert!(mount_plan(Some(&w), 1001, "ext4", "").expect("ext4").options.ends_with("noload"));
        assert!(mount_plan(Some(&w), 1001, "ntfs", "").expect_err("ntfs").contains("'ntfs'"));
        assert_eq!(mount_plan(None, 1001, "vfat", ""), Err("no USB window is open".into()));
        assert_eq!(mount_plan(Some(&w), 1000 + 600, "vfat", ""), Err("no USB window is open".into()), "its time is up");
    }

    #[test]
    fn a_backup_window_mounts_only_the_backup_disk_read_write_and_a_restore_window_read_only() {
        let backup = Window::new(Purpose::Backup, "admin", 1000, 10).expect("window");
        let plan = mount_plan(Some(&backup), 1001, "ext4", BACKUP_DISK_LABEL).expect("the backup disk");
        assert_eq!(plan, MountPlan { read_only: false, backup_disk: true, options: "rw,nosuid,nodev,noexec" });
        let restore = Window::new(Purpose::Restore, "admin", 1000, 10).expect("window");
        let plan = mount_plan(Some(&restore), 1001, "ext4", BACKUP_DISK_LABEL).expect("the backup disk");
        assert_eq!(plan, MountPlan { read_only: true, backup_disk: true, options: "ro,nosuid,nodev,noexec,noload" });
        for w in [&backup, &restore] {
            for (fs, label) in [("vfat", "KINGSTON"), ("vfat", BACKUP_DISK_LABEL), ("exfat", BACKUP_DISK_LABEL), ("ext4", "wardbox-backup"), ("ext4", "")] {
                let why = mount_plan(Some(w), 1001, fs, label).expect_err("another stick");
                assert!(why.starts_with("not the backup disk") && why.contains(&format!("'{fs}'")), "{fs} {label}: {why}");
            }
        }
        // The reason is audited: it never repeats a label (whoever formatted the stick wrote it).
        let why = mount_plan(Some(&backup), 1001, "vfat", "J SMITH MRI").expect_err("label");
        assert!(why.ends_with("this one is 'vfat' with another label") && !why.contains("SMITH"), "{why}");
        assert!(mount_plan(Some(&backup), 1001, "vfat", "").expect_err("no label").ends_with("without a label"));
    }

    #[test]
    fn a_stick_that_also_types_is_refused_even_in_a_window() {
        let w = Window::new(Purpose::Update, "admin", 1000, 10).expect("window");
        let badusb = dev(0, &[(8, 6, 0x50), (3, 1, 1)]);
        assert!(matches!(decide(&badusb, Some(&w), 1001, 0), Decision::Refuse(r) if r.contains("08:06:50 03:01:01")));
    }
}
