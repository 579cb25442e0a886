//! The last readings of our drop counters, kept in a file so that a reset is noticed between
//! separate runs: the agent's periodic re-verification, an agent restart, `wardbox firewall
//! verify` from a shell. Side effects (files, `/proc`); the comparison itself is
//! `verify::counter_resets`.
//!
//! Counters start at zero when the table is created at boot and exist per network namespace,
//! so a reading is only compared with one taken in the same boot (`boot_id`) and the same
//! network namespace; any other reading is replaced. The file is written whole to a
//! temporary file, synced and renamed over the old one, so a power cut leaves the old or the
//! new reading, never half of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ruleset::Counters;
use crate::verify::highest;

/// The kernel's identifier of the current boot.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// The same identifier as systemd hands it to a unit (`Environment=WARDBOX_BOOT_ID=%b`): the
/// appliance's units run with `ProcSubset=pid`, where `/proc/sys` does not exist, and a shell's
/// `wardbox firewall verify` reads [`BOOT_ID`]; both are normalised to 32 lowercase hex digits.
pub const BOOT_ID_ENV: &str = "WARDBOX_BOOT_ID";
/// The calling thread's network namespace (a thread, because the traffic tests move single
/// threads into test namespaces, exactly as they run nft).
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Why the counter history could not be read or kept. Reset detection is then not working,
/// so callers report it rather than carry on in silence.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the firewall counter history {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "the firewall counter history {path} is unreadable ({reason}); delete it to start a new one"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the firewall counter history {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot tell which boot and network namespace this is: {path}: {reason}")]
    Place { path: PathBuf, reason: String },
}

/// Where counter readings are comparable: one boot, one network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub boot_id: String,
    /// As `readlink` shows it: `net:[4026531840]`.
    pub netns: String,
}

impl Place {
    /// The boot and network namespace of the calling thread.
    pub fn current() -> Result<Place, HistoryError> {
        let place_error = |path: &str, e: std::io::Error| HistoryError::Place {
            path: PathBuf::from(path),
            reason: e.to_string(),
        };
        let (boot_id, source) = match std::env::var(BOOT_ID_ENV) {
            Ok(from_unit) => (from_unit, BOOT_ID_ENV),
            Err(_) => (std::fs::read_to_string(BOOT_ID).map_err(|e| place_error(BOOT_ID, e))?, BOOT_ID),
        };
        let boot_id = normalise_boot_id(&boot_id).ok_or_else(|| HistoryError::Place {
            path: PathBuf::from(source),
            reason: format!("{:?} is not a boot id (128 bits in hex)", boot_id.trim()),
        })?;
        let netns = std::fs::read_link(THREAD_NETNS).map_err(|e| place_error(THREAD_NETNS, e))?;
        Ok(Place {
            boot_id,
            netns: netns.to_string_lossy().into_owned(),
        })
    }
}

/// A boot id as 32 lowercase hex digits, whether written with dashes (the kernel's file) or
/// without (systemd's `%b`); `None` for anything else.
fn normalise_boot_id(text: &str) -> Option<String> {
    let hex: String = text.trim().chars().filter(|c| *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// One reading as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reading {
    place: Place,
    counters: Counters,
}

/// The file that holds the last reading.
#[derive(Debug, Clone)]
pub struct CounterHistory {
    path: PathBuf,
}

impl CounterHistory {
    pub fn new(path: impl Into<PathBuf>) -> CounterHistory {
        CounterHistory { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last reading taken in this boot and network namespace, if any.
    pub fn last(&self) -> Result<Option<Counters>, HistoryError> {
        self.last_at(&Place::current()?)
    }

    /// Keep `now` as the last reading, except counters that went down since `last`: those
    /// keep their last value, so the reset stays visible until a repair restores them.
    /// Nothing is written when that is `last` unchanged: the agent records every 30 s, and
    /// the counters move only when something is blocked.
    pub fn record(&self, last: Option<&Counters>, now: &Counters) -> Result<(), HistoryError> {
        let kept = highest(last, now);
        if last == Some(&kept) {
            return Ok(());
        }
        self.record_at(&Place::current()?, &kept)
    }

    fn last_at(&self, place: &Place) -> Result<Option<Counters>, HistoryError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(HistoryError::Read {
                    path: self.path.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let reading: Reading = serde_json::from_str(&text).map_err(|e| HistoryError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        Ok((reading.place == *place).then_some(reading.counters))
    }

    fn record_at(&self, place: &Place, counters: &Counters) -> Result<(), HistoryError> {
        let write_error = |e: std::io::Error| HistoryError::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        let reading = Reading {
            place: place.clone(),
            counters: *counters,
        };
        // Serialising plain data to JSON cannot fail.
        let text = serde_json::to_string(&reading).unwrap_or_default();
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(write_error)?;
        file.write_all(text.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        std::fs::rename(&temporary, &self.path).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Count;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wardbox-fw-history-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn place(boot: &str) -> Place {
        Place {
            boot_id: boot.into(),
            netns: "net:[1]".into(),
        }
    }

    fn out(packets: u64) -> Counters {
        Counters {
            blocked_out: Count {
                packets,
                bytes: packets * 60,
            },
            ..Counters::default()
        }
    }

    #[test]
    fn a_reading_is_kept_and_compared_only_in_its_boot_and_namespace() {
        let dir = scratch("place");
        let history = CounterHistory::new(dir.join("state/firewall-counters.json"));
        assert_eq!(history.last_at(&place("a")).expect("no file yet"), None);
        history
            .record_at(&place("a"), &out(5))
            .expect("written, directory created");
        assert_eq!(history.last_at(&place("a")).expect("read"), Some(out(5)));
        assert_eq!(
            history.last_at(&place("b")).expect("read"),
            None,
            "another boot"
        );
        let other_ns = Place {
            netns: "net:[2]".into(),
            ..place("a")
        };
        assert_eq!(
            history.last_at(&other_ns).expect("read"),
            None,
            "another namespace"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn boot_ids_from_the_kernel_and_from_systemd_are_the_same() {
        let kernel = "0f3c6a2e-7b1d-4c59-9e8a-1d2b3c4d5e6f\n";
        let systemd = "0F3C6A2E7B1D4C599E8A1D2B3C4D5E6F";
        assert_eq!(normalise_boot_id(kernel), normalise_boot_id(systemd));
        assert_eq!(normalise_boot_id(kernel).as_deref(), Some("0f3c6a2e7b1d4c599e8a1d2b3c4d5e6f"));
        assert_eq!(normalise_boot_id(""), None);
        assert_eq!(normalise_boot_id("%b"), None, "a unit file whose specifier was not expanded");
        assert_eq!(normalise_boot_id("0f3c6a2e-7b1d-4c59-9e8a-1d2b3c4d5e6"), None);
    }

    #[test]
    fn the_current_place_is_readable() {
        let here = Place::current().expect("boot id and namespace");
        assert!(here.netns.starts_with("net:["), "{here:?}");
        assert_eq!(here.boot_id.len(), 32, "{here:?}");
        let dir = scratch("current");
        let history = CounterHistory::new(dir.join("h.json"));
        history.record(None, &out(3)).expect("write");
        // A counter that went down keeps its last value in the history.
        history.record(Some(&out(3)), &out(1)).expect("write");
        assert_eq!(history.last().expect("read"), Some(out(3)));
        history.record(Some(&out(3)), &out(4)).expect("write");
        assert_eq!(history.last().expect("read"), Some(out(4)));
        // An unchanged reading is not written again.
        std::fs::remove_file(history.path()).expect("remove");
        history
            .record(Some(&out(4)), &out(4))
            .expect("nothing to write");
        assert!(!history.path().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_history_is_an_error_naming_the_file() {
        let dir = scratch("corrupt");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("h.json");
        std::fs::write(&path, "{\"place\": 7").expect("write");
        let err = CounterHistory::new(&path)
            .last_at(&place("a"))
            .expect_err("refused");
        assert!(
            err.to_string().starts_with(&format!(
                "the firewall counter history {} is unreadable (",
                path.display()
            )),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
