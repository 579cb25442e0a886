//! The system-version floor in the TPM: an NV counter (`wardbox_volume::nvcounter`) that only
//! goes up, so restoring an old copy of the state directory (or of the whole data volume) cannot
//! lower the bar a full bundle must pass.
//!
//! **Mapping.** A TPM counter cannot be set, only incremented by one, and a new counter starts
//! at a value the box does not choose (the highest any counter on that TPM ever had, plus one).
//! So the box keeps the counter's first value, its *base*, in `<state>/tpm-counter.json`, and the
//! counter's *offset* above the base encodes a version:
//!
//! ```text
//! offset = major × 10000 + min(minor, 99) × 100 + min(patch, 99)
//! ```
//!
//! Monotonic (a higher version never has a lower offset) and exact while minor and patch stay
//! below 100; above that it saturates, so the TPM floor reads lower than the installed version
//! and the state directory's floor decides between such versions (it never reads higher, so it
//! never refuses a bundle that is really newer). Raising the floor increments the counter until
//! the offset reaches the version's: a patch release costs a few increments, a minor release up
//! to 100, a major release up to 10000 (about 1.3 ms each on swtpm; hardware TPMs are slower,
//! so the daemon raises it in the background after the boot was found healthy). 64 bits leave
//! room for any `u32` major version many times over.
//!
//! **When.** Only after a version booted healthy: the daemon raises the counter to the higher of
//! the running version and the state directory's system floor at each healthy boot (which also
//! finishes a raise a power cut interrupted). **Where it counts.** `wardbox update apply` refuses a
//! full bundle whose version is not above the TPM floor (exit 11), whatever the state directory
//! says, and refuses every full bundle when the counter exists but the state directory does not
//! know its base (a state directory restored from a copy older than the counter) or the TPM
//! cannot be read. Models and policy have no TPM floor.
//!
//! A box with no TPM for this (the dev profile's plain-directory volume without
//! `update.rollback_tpm`) says so in `wardbox update status`; it never passes silently.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wardbox_update::manifest::Version;
use wardbox_volume::nvcounter::{CounterError, CounterValue, NvCounter, SYSTEM_VERSION_COUNTER};

const BASE_FILE: &str = "tpm-counter.json";

/// How far apart the fields are in the offset (see the module documentation).
const MAJOR_STEP: u64 = 10_000;
const MINOR_STEP: u64 = 100;
const FIELD_MAX: u64 = 99;

/// A version's offset above the counter's base.
pub fn encode(v: Version) -> u64 {
    u64::from(v.major) * MAJOR_STEP + u64::from(v.minor).min(FIELD_MAX) * MINOR_STEP + u64::from(v.patch).min(FIELD_MAX)
}

/// The highest version an offset proves was installed (saturated fields read as 99).
pub fn decode(offset: u64) -> Version {
    let major = u32::try_from(offset / MAJOR_STEP).unwrap_or(u32::MAX);
    // Both below 100 by construction.
    let minor = u32::try_from((offset % MAJOR_STEP) / MINOR_STEP).unwrap_or(0);
    let patch = u32::try_from(offset % MINOR_STEP).unwrap_or(0);
    Version::new(major, minor, patch)
}

/// What `<state>/tpm-counter.json` says. `base` is none between defining the counter and its
/// first increment (so a power cut there is finished at the next boot, not mistaken for a
/// restored state directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseFile {
    index: u32,
    base: Option<u64>,
}

fn base_path(state_dir: &Path) -> PathBuf {
    state_dir.join(BASE_FILE)
}

fn read_base(state_dir: &Path) -> Result<Option<BaseFile>, String> {
    let path = base_path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{} is unreadable: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_base(state_dir: &Path, file: BaseFile) -> Result<(), String> {
    let path = base_path(state_dir);
    std::fs::create_dir_all(state_dir).map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    super::write_atomic(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The TPM floor as the box sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmFloor {
    /// No TPM holds the counter (dev profile without `update.rollback_tpm`).
    NoTpm,
    /// The counter is not there yet: the first healthy boot defines it.
    NotProvisioned,
    /// The floor the counter proves.
    Floor { version: Version, counter: u64, base: u64, index: u32 },
    /// The counter exists, but the state directory does not record its base: the state directory
    /// was restored from a copy older than the counter.
    BaseUnknown { index: u32, counter: Option<u64> },
    /// A TPM is configured but the counter could not be read, or the index is not ours.
    Unreadable(String),
}

impl TpmFloor {
    /// One line for `wardbox update status` and `inspect`.
    pub fn describe(&self) -> String {
        match self {
            TpmFloor::NoTpm => "none: this box has no TPM for it (dev profile); the system floor is kept in the state directory only, so restoring an old copy of that directory would lower it".into(),
            TpmFloor::NotProvisioned => "not provisioned yet: the TPM counter is defined at the next healthy boot".into(),
            TpmFloor::Floor { version, counter, base, index } => format!("{version} (NV counter {index:#010x} at {counter}, base {base})"),
            TpmFloor::BaseUnknown { index, counter } => format!(
                "UNKNOWN: the TPM counter {index:#010x} exists{} but the state directory does not record its base (restored from an older copy?); system updates are refused",
                counter.map_or_else(String::new, |c| format!(" at {c}"))
            ),
            TpmFloor::Unreadable(why) => format!("UNREADABLE: {why}; system updates are refused"),
        }
    }

    pub fn version(&self) -> Option<Version> {
        match self {
            TpmFloor::Floor { version, .. } => Some(*version),
            _ => None,
        }
    }
}

/// Why a full bundle does not pass the TPM floor, with its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmRefusal {
    pub message: String,
    pub exit_code: u8,
}

/// Whether a full bundle of `version` passes the TPM floor. Pure. `state_floor`: what the state
/// directory says, named in the message when it disagrees with the TPM.
pub fn check_system_bundle(floor: &TpmFloor, version: Version, state_floor: Option<Version>) -> Result<(), TpmRefusal> {
    use wardbox_update::error::exit;
    match floor {
        TpmFloor::NoTpm | TpmFloor::NotProvisioned => Ok(()),
        TpmFloor::Floor { version: tpm, counter, .. } if version <= *tpm => {
            let state = match state_floor {
                Some(s) if s >= *tpm => String::new(),
                Some(s) => format!("; the state directory says {s}, so it was restored from an older copy"),
                None => "; the state directory records no system floor, so it was restored from an older copy".into(),
            };
            Err(TpmRefusal {
                message: format!(
                    "downgrade refused: this full bundle is version {version}, and the TPM's anti-rollback counter (at {counter}) proves version {tpm} was installed and booted healthy on this box (a bundle must be higher){state}"
                ),
                exit_code: exit::DOWNGRADE,
            })
        }
        TpmFloor::Floor { .. } => Ok(()),
        TpmFloor::BaseUnknown { .. } | TpmFloor::Unreadable(_) => Err(TpmRefusal {
            message: format!("system updates are refused: the TPM floor is {}", floor.describe()),
            exit_code: exit::OPERATIONAL,
        }),
    }
}

/// The TPM holding the counter: `update.rollback_tpm`, else the volume's TPM; none for a
/// plain-directory volume.
pub fn tcti(config: &crate::config::Config) -> Option<String> {
    use crate::stages::unlock::VolumeConfig;
    config.update.rollback_tpm.clone().or_else(|| match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Some(c.tcti.clone()),
        VolumeConfig::PlainDirectory { .. } => None,
    })
}

fn counter_error(e: CounterError) -> String {
    e.to_string()
}

/// Reads the TPM floor. `tcti`: the TPM holding the counter (none: no TPM).
pub fn read(tcti: Option<&str>, state_dir: &Path) -> TpmFloor {
    let Some(tcti) = tcti else { return TpmFloor::NoTpm };
    let result = (|| {
        let mut counter = NvCounter::connect(tcti, SYSTEM_VERSION_COUNTER).map_err(counter_error)?;
        let value = counter.read().map_err(counter_error)?;
        let base = read_base(state_dir)?;
        Ok::<_, String>(floor_of(value, base, SYSTEM_VERSION_COUNTER))
    })();
    result.unwrap_or_else(TpmFloor::Unreadable)
}

/// The floor from the counter's value and the recorded base. Pure.
fn floor_of(value: CounterValue, base: Option<BaseFile>, index: u32) -> TpmFloor {
    let base = base.filter(|b| b.index == index);
    match (value, base) {
        (CounterValue::Absent, _) => TpmFloor::NotProvisioned,
        // Defined in this state directory's history, first increment not done: no floor yet.
        (CounterValue::Unwritten, Some(_)) => TpmFloor::NotProvisioned,
        (CounterValue::Unwritten, None) => TpmFloor::BaseUnknown { index, counter: None },
        (CounterValue::Value(counter), Some(BaseFile { base: Some(base), .. })) if counter >= base => {
            TpmFloor::Floor { version: decode(counter - base), counter, base, index }
        }
        (CounterValue::Value(counter), Some(BaseFile { base: Some(base), .. })) => TpmFloor::Unreadable(format!(
            "the TPM counter {index:#010x} is at {counter}, below the base {base} the state directory records: it is not the counter this box defined"
        )),
        (CounterValue::Value(counter), _) => TpmFloor::BaseUnknown { index, counter: Some(counter) },
    }
}

/// What [`raise`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub from: Option<Version>,
    pub to: Version,
    pub increments: u64,
    /// The counter was defined by this call.
    pub defined: bool,
}

/// Raises the TPM floor to `target` (defining the counter first when it is not there). Never
/// lowers it; refuses when the counter exists but its base is unknown (see [`TpmFloor::BaseUnknown`]).
pub fn raise(tcti: &str, state_dir: &Path, target: Version) -> Result<Raised, String> {
    let index = SYSTEM_VERSION_COUNTER;
    let mut counter = NvCounter::connect(tcti, index).map_err(counter_error)?;
    let mut base = read_base(state_dir)?.filter(|b| b.index == index);
    let mut defined = false;
    let mut value = counter.read().map_err(counter_error)?;
    if value == CounterValue::Absent {
        // Say first that this state directory is defining it, so a power cut before the first
        // increment is finished next time instead of read as a restored state directory.
        let file = BaseFile { index, base: None };
        write_base(state_dir, file)?;
        base = Some(file);
        counter.define().map_err(counter_error)?;
        defined = true;
        value = CounterValue::Unwritten;
    }
    if value == CounterValue::Unwritten {
        if base.is_none() {
            return Err(TpmFloor::BaseUnknown { index, counter: None }.describe());
        }
        let first = counter.increment().map_err(counter_error)?;
        let file = BaseFile { index, base: Some(first) };
        write_base(state_dir, file)?;
        base = Some(file);
        value = CounterValue::Value(first);
    }
    let floor = floor_of(value, base, index);
    let TpmFloor::Floor { version: from, counter: mut now, base: b, .. } = floor else {
        return Err(floor.describe());
    };
    let goal = encode(target);
    let mut increments = 0u64;
    while now - b < goal {
        now = counter.increment().map_err(counter_error)?;
        increments += 1;
    }
    Ok(Raised { from: (!defined).then_some(from), to: decode(now - b), increments, defined })
}

/// Adopts a counter whose base the state directory lost (see [`TpmFloor::BaseUnknown`]): IT
/// states the floor (`wardbox update tpm-adopt`, audited; the caller checks it is not below the
/// running version or the state directory's floor), the counter is raised to reach it if it is
/// below, and the base is recorded so that the counter reads exactly that floor. Refuses when
/// the state directory knows the counter (nothing to adopt) or there is no counter yet.
pub fn adopt(tcti: &str, state_dir: &Path, floor: Version) -> Result<Raised, String> {
    let index = SYSTEM_VERSION_COUNTER;
    let mut counter = NvCounter::connect(tcti, index).map_err(counter_error)?;
    let base = read_base(state_dir)?.filter(|b| b.index == index);
    let mut value = match (counter.read().map_err(counter_error)?, base) {
        (CounterValue::Absent, _) => return Err("there is no TPM counter to adopt: the next healthy boot defines it".into()),
        (CounterValue::Value(_), Some(BaseFile { base: Some(_), .. })) => {
            return Err("the state directory knows the TPM counter's base: there is nothing to adopt".into());
        }
        (CounterValue::Unwritten, _) => counter.increment().map_err(counter_error)?,
        (CounterValue::Value(v), _) => v,
    };
    let goal = encode(floor);
    let mut increments = 0u64;
    while value < goal {
        value = counter.increment().map_err(counter_error)?;
        increments += 1;
    }
    write_base(state_dir, BaseFile { index, base: Some(value - goal) })?;
    Ok(Raised { from: None, to: floor, increments, defined: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    #[test]
    fn the_encoding_is_monotonic_and_exact_below_100() {
        let versions = ["0.0.0", "0.0.1", "0.1.0", "0.1.99", "0.2.0", "0.99.99", "1.0.0", "1.0.150", "1.4.7", "1.150.0", "2.0.0", "4294967295.0.0"];
        for pair in versions.windows(2) {
            let (a, b) = (v(pair[0]), v(pair[1]));
            assert!(a < b && encode(a) <= encode(b), "{a} -> {b}");
        }
        for s in ["0.0.0", "0.1.0", "1.4.7", "12.99.99", "4294967295.3.2"] {
            assert_eq!(decode(encode(v(s))), v(s), "{s}");
        }
        // Saturated: the floor reads lower, never higher.
        assert_eq!(decode(encode(v("1.0.150"))), v("1.0.99"));
        assert_eq!(decode(encode(v("1.150.3"))), v("1.99.3"));
        assert_eq!(encode(v("1.4.7")), 10_407);
    }

    #[test]
    fn a_bundle_must_be_above_the_tpm_floor_whatever_the_state_directory_says() {
        let floor = TpmFloor::Floor { version: v("0.5.0"), counter: 1_501, base: 1_001, index: SYSTEM_VERSION_COUNTER };
        let refused = check_system_bundle(&floor, v("0.3.0"), None).expect_err("below");
        assert_eq!(refused.exit_code, 11);
        assert!(refused.message.contains("proves version 0.5.0") && refused.message.contains("restored from an older copy"), "{}", refused.message);
        assert!(check_system_bundle(&floor, v("0.5.0"), Some(v("0.5.0"))).is_err(), "the same version is a downgrade");
        assert_eq!(check_system_bundle(&floor, v("0.5.1"), Some(v("0.2.0"))), Ok(()));
        assert_eq!(check_system_bundle(&TpmFloor::NoTpm, v("0.0.1"), None), Ok(()));
        assert_eq!(check_system_bundle(&TpmFloor::NotProvisioned, v("0.0.1"), None), Ok(()));
        let unknown = TpmFloor::BaseUnknown { index: SYSTEM_VERSION_COUNTER, counter: Some(9) };
        assert_eq!(check_system_bundle(&unknown, v("9.0.0"), None).map_err(|r| r.exit_code), Err(1));
        assert_eq!(check_system_bundle(&TpmFloor::Unreadable("x".into()), v("9.0.0"), None).map_err(|r| r.exit_code), Err(1));
    }

    #[test]
    fn the_floor_needs_the_base_this_state_directory_recorded() {
        let i = SYSTEM_VERSION_COUNTER;
        let with = |base| Some(BaseFile { index: i, base });
        assert_eq!(floor_of(CounterValue::Absent, None, i), TpmFloor::NotProvisioned);
        assert_eq!(floor_of(CounterValue::Unwritten, with(None), i), TpmFloor::NotProvisioned);
        assert_eq!(floor_of(CounterValue::Unwritten, None, i), TpmFloor::BaseUnknown { index: i, counter: None });
        assert_eq!(floor_of(CounterValue::Value(10_107), with(Some(7)), i).version(), Some(v("1.1.0")));
        assert_eq!(floor_of(CounterValue::Value(50), None, i), TpmFloor::BaseUnknown { index: i, counter: Some(50) });
        // Defined, first increment done, base not yet recorded: a power cut in that window.
        assert_eq!(floor_of(CounterValue::Value(50), with(None), i), TpmFloor::BaseUnknown { index: i, counter: Some(50) });
        assert!(matches!(floor_of(CounterValue::Value(3), with(Some(7)), i), TpmFloor::Unreadable(_)));
        // A base recorded for another index does not count.
        assert!(matches!(floor_of(CounterValue::Value(50), Some(BaseFile { index: 1, base: Some(0) }), i), TpmFloor::BaseUnknown { .. }));
    }
}
