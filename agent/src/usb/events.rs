//! USB events from the box's root helpers, for the audit trail: every USB device the policy
//! authorized or refused (`wardbox usb authorize`, run by udev for each device plugged in), every
//! USB window opened and closed, every stick mounted (read-only for the Updates page or a
//! restore, read-write for a backup to the backup disk) or refused by the mount helper, every
//! stick removed. The helpers (`wardbox usb`, and the image's
//! `/usr/libexec/wardbox/usb-event` and `usb-mount`) write one small JSON file per event into
//! `update.usb_events_dir` (`/run/wardbox/usb-events`); the daemon reads them every few seconds,
//! audits each (`lifecycle`, `event: "usb_storage"`) and removes the file. A file that is not a
//! valid event is audited as such and removed too: nothing is skipped in silence.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Larger files are not events (an event is well under 1 KiB).
const MAX_EVENT_BYTES: u64 = 4096;

/// One event as the helpers write it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbEvent {
    /// One of [`KINDS`].
    pub event: String,
    /// The kernel's name for it (`1-1:1.0`, `sdb1`).
    pub device: String,
    /// Vendor and product ids, file system type or the refusal's reason.
    #[serde(default)]
    pub detail: String,
    /// When the helper saw it (its clock, as text).
    #[serde(default)]
    pub time: String,
}

/// `device-authorized` / `device-refused` / `storage-refused` (the policy's decision for a
/// device plugged in; `storage-refused` for a device with a mass-storage interface, which the
/// daemon also raises as an alert), `window-opened` / `window-closed`, `mounted`,
/// `mount-refused`, `removed`; `storage-plugged` is what boxes before the USB policy wrote.
pub const KINDS: &[&str] = &[
    "device-authorized",
    "device-refused",
    "storage-refused",
    "window-opened",
    "window-closed",
    "storage-plugged",
    "mounted",
    "mount-refused",
    "removed",
];

/// The events that are also alerts (a `security_alert` with `source: "usb"`): a stick, or
/// something with a storage interface, plugged in and refused; a stick the mount helper refused.
/// Other refused devices (a mouse, a camera) are audited only: a box with one attached would
/// otherwise raise an alert at every boot.
pub fn alert_event(e: &UsbEvent) -> Option<&'static str> {
    match e.event.as_str() {
        "storage-refused" => Some("storage_refused"),
        "mount-refused" => Some("mount_refused"),
        _ => None,
    }
}

/// Leaves one event in `dir` for the daemon (written under a temporary name and renamed, so
/// the daemon never reads half of one). Fields are cut to what [`check`] accepts.
pub fn write(dir: &Path, event: &str, device: &str, detail: &str) -> Result<(), String> {
    let plain = |s: &str| s.chars().filter(|c| !c.is_control()).take(200).collect::<String>();
    let e = UsbEvent { event: event.to_owned(), device: plain(device), detail: plain(detail), time: jiff::Timestamp::now().to_string() };
    check(&e)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = format!("{}-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0), std::process::id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let json = serde_json::json!({ "event": e.event, "device": e.device, "detail": e.detail, "time": e.time });
    std::fs::write(&tmp, json.to_string()).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(format!("{name}.json"))).map_err(|e| format!("cannot write a USB event into {}: {e}", dir.display()))
}

/// Checks an event's fields: a known kind, short printable fields.
fn check(e: &UsbEvent) -> Result<(), String> {
    if !KINDS.contains(&e.event.as_str()) {
        return Err(format!("unknown event kind {:?}", e.event));
    }
    for (name, value) in [("device", &e.device), ("detail", &e.detail), ("time", &e.time)] {
        if value.len() > 200 || value.chars().any(|c| c.is_control()) {
            return Err(format!("the {name} field is too long or holds control characters"));
        }
    }
    Ok(())
}

/// Reads and removes every event file in `dir`, oldest name first. Each entry is the event, or
/// why the file was not one (with its name). A directory that does not exist holds no events.
pub fn drain(dir: &Path) -> Result<Vec<Result<UsbEvent, String>>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for path in names {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parsed = std::fs::symlink_metadata(&path)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                if !m.is_file() {
                    Err("not a regular file".to_owned())
                } else if m.len() > MAX_EVENT_BYTES {
                    Err(format!("{} bytes, more than an event", m.len()))
                } else {
                    std::fs::read(&path).map_err(|e| e.to_string())
                }
            })
            .and_then(|bytes| serde_json::from_slice::<UsbEvent>(&bytes).map_err(|e| e.to_string()))
            .and_then(|e| check(&e).map(|()| e));
        if let Err(e) = std::fs::remove_file(&path) {
            return Err(format!("cannot remove {}: {e}", path.display()));
        }
        out.push(parsed.map_err(|why| format!("{name}: {why}")));
    }
    Ok(out)
}

/// The audit detail of a drained entry.
pub fn audit_detail(entry: &Result<UsbEvent, String>) -> serde_json::Value {
    match entry {
        Ok(e) => serde_json::json!({ "event": "usb_storage", "usb_event": e.event, "device": e.device, "detail": e.detail, "seen": e.time }),
        Err(why) => serde_json::json!({ "event": "usb_storage", "usb_event": "unreadable", "detail": why }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_once_in_order_and_bad_files_are_reported_not_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("1-a.json"), r#"{"event":"storage-plugged","device":"1-1:1.0","detail":"0781:5583","time":"t"}"#).expect("write");
        std::fs::write(d.join("2-b.json"), r#"{"event":"mounted","device":"sdb1","detail":"vfat"}"#).expect("write");
        std::fs::write(d.join("3-c.json"), r#"{"event":"format-disk","device":"sdb"}"#).expect("write");
        std::fs::write(d.join("4-d.json"), "not json").expect("write");
        std::fs::write(d.join("5-e.json"), r#"{"event":"removed","device":"sdb1","extra":1}"#).expect("write");
        std::fs::write(d.join("ignored.tmp"), "half written").expect("write");
        let got = drain(d).expect("drain");
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].as_ref().map(|e| e.event.as_str()), Ok("storage-plugged"));
        assert_eq!(got[1].as_ref().map(|e| e.device.as_str()), Ok("sdb1"));
        assert!(got[2].as_ref().is_err_and(|e| e.contains("3-c.json") && e.contains("unknown event kind")), "{:?}", got[2]);
        assert!(got[3].is_err() && got[4].is_err());
        assert_eq!(audit_detail(&got[3])["usb_event"], "unreadable");
        assert!(drain(d).expect("again").is_empty(), "events are read once");
        assert!(d.join("ignored.tmp").exists(), "a file still being written is left alone");
        assert!(drain(&d.join("none")).expect("absent").is_empty());
    }

    #[test]
    fn written_events_are_drained_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "device-refused", "1-2", "0bda:8153 a network adapter is refused").expect("write");
        assert!(write(dir.path(), "format-disk", "sdb", "").is_err(), "an unknown kind is not written");
        let got = drain(dir.path()).expect("drain");
        assert_eq!(got.len(), 1);
        let e = got[0].as_ref().expect("an event");
        assert_eq!((e.event.as_str(), e.device.as_str()), ("device-refused", "1-2"));
        assert!(e.detail.contains("network adapter") && !e.time.is_empty());
    }
}
