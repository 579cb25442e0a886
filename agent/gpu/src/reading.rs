//! What one look at the GPUs returns, as plain serde data with no NVML types in it.
//!
//! The health state machine, placement, metrics and `wardbox gpu status` all work from these
//! types, so each of them is tested with recorded and synthetic readings on a machine with no
//! GPU, and a reading taken on a real H100 can be stored as JSON and replayed.

use std::collections::BTreeMap;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use serde::{Deserialize, Serialize};

/// One value read from NVML.
///
/// "Not supported" is its own value and never zero: an H100 has no retired-page counter (it
/// remaps rows instead), and a zero there would tell IT that pages were checked and none were
/// retired, which is not true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "value", rename_all = "snake_case")]
pub enum Field<T> {
    /// NVML answered.
    Ok(T),
    /// This GPU or driver does not offer the value (NVML `NOT_SUPPORTED`, or the driver's
    /// library lacks the function).
    NotSupported,
    /// NVML was asked and failed; the text is NVML's reason.
    Error(String),
}

impl<T> Field<T> {
    /// The value, when NVML gave one.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Field::Ok(v) => Some(v),
            Field::NotSupported | Field::Error(_) => None,
        }
    }

    /// Whether NVML failed (as opposed to answering or saying "not supported").
    pub fn is_error(&self) -> bool {
        matches!(self, Field::Error(_))
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Field::Ok(v) => Field::Ok(f(v)),
            Field::NotSupported => Field::NotSupported,
            Field::Error(e) => Field::Error(e),
        }
    }
}

impl<T: std::fmt::Display> Field<T> {
    /// For tables: the value, "n/a" (not supported) or "error".
    pub fn display(&self) -> String {
        match self {
            Field::Ok(v) => v.to_string(),
            Field::NotSupported => "n/a".to_string(),
            Field::Error(_) => "error".to_string(),
        }
    }
}

/// Facts about the driver, the same for every GPU in the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// Kernel driver version, e.g. "580.159.04": what NVIDIA's release notes and Xid catalogue
    /// are keyed by.
    pub driver_version: Field<String>,
    /// Highest CUDA version the driver supports, e.g. "13.0": the engine's CUDA build must not
    /// be newer.
    pub cuda_driver_version: Field<String>,
    pub nvml_version: Field<String>,
}

/// Frame-buffer memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryUse {
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What placement may still give to the engine.
    pub free_bytes: u64,
}

/// Percent of the last sample period (NVML's own window, about 1 s on data-centre GPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utilization {
    /// Time one or more kernels ran.
    pub gpu_percent: u32,
    /// Time device memory was read or written.
    pub memory_percent: u32,
}

/// Current and maximum clocks in MHz.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    pub graphics_mhz: Field<u32>,
    pub sm_mhz: Field<u32>,
    pub memory_mhz: Field<u32>,
    pub max_graphics_mhz: Field<u32>,
    pub max_sm_mhz: Field<u32>,
    pub max_memory_mhz: Field<u32>,
}

/// Why the clocks are below their maximum ("throttle reasons", renamed "clock event reasons" by
/// NVIDIA), as NVML's bit mask and as names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEvents {
    pub bits: u64,
    /// One name per set bit, from [`CLOCK_EVENT_REASONS`]; bits this build does not know are
    /// named `unknown_0x...` rather than dropped.
    pub reasons: Vec<String>,
}

/// Every clock event reason NVML defines: bit, name, and whether it means the GPU is hot,
/// starved of power or slowed by hardware (as opposed to idle or capped by a setting).
pub const CLOCK_EVENT_REASONS: &[(u64, &str, bool)] = &[
    (ThrottleReasons::GPU_IDLE.bits(), "gpu_idle", false),
    (
        ThrottleReasons::APPLICATIONS_CLOCKS_SETTING.bits(),
        "applications_clocks_setting",
        false,
    ),
    (ThrottleReasons::SW_POWER_CAP.bits(), "sw_power_cap", false),
    (ThrottleReasons::HW_SLOWDOWN.bits(), "hw_slowdown", true),
    (ThrottleReasons::SYNC_BOOST.bits(), "sync_boost", false),
    (
        ThrottleReasons::SW_THERMAL_SLOWDOWN.bits(),
        "sw_thermal_slowdown",
        true,
    ),
    (
        ThrottleReasons::HW_THERMAL_SLOWDOWN.bits(),
        "hw_thermal_slowdown",
        true,
    ),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN.bits(),
        "hw_power_brake_slowdown",
        true,
    ),
    (
        ThrottleReasons::DISPLAY_CLOCK_SETTING.bits(),
        "display_clock_setting",
        false,
    ),
];

impl ClockEvents {
    /// Decode NVML's mask. Pure, so the names are tested without a GPU.
    pub fn from_bits(bits: u64) -> Self {
        let mut reasons = Vec::new();
        let mut known = 0u64;
        for (bit, name, _) in CLOCK_EVENT_REASONS {
            known |= bit;
            if bits & bit != 0 {
                reasons.push((*name).to_string());
            }
        }
        let unknown = bits & !known;
        for shift in 0..64 {
            let bit = 1u64 << shift;
            if unknown & bit != 0 {
                reasons.push(format!("unknown_{bit:#x}"));
            }
        }
        Self { bits, reasons }
    }

    /// The names among `reasons` that mean heat, power brake or hardware slowdown.
    pub fn slowdowns(&self) -> Vec<&str> {
        CLOCK_EVENT_REASONS
            .iter()
            .filter(|(bit, _, slow)| *slow && self.bits & bit != 0)
            .map(|(_, name, _)| *name)
            .collect()
    }
}

/// ECC error counts. Volatile counts reset when the driver loads; aggregate counts last the
/// lifetime of the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EccCounts {
    pub volatile_corrected: Field<u64>,
    pub volatile_uncorrected: Field<u64>,
    pub aggregate_corrected: Field<u64>,
    pub aggregate_uncorrected: Field<u64>,
}

/// Dynamic page retirement (GPUs before Ampere A100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredPages {
    pub multiple_single_bit: u64,
    pub double_bit: u64,
    /// A retirement waits for the next driver reload or GPU reset.
    pub pending: bool,
}

/// Row remapping (A100, H100 and later), read through NVML field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemappedRows {
    pub correctable: u64,
    pub uncorrectable: u64,
    /// A remap waits for a GPU reset; until then the bad row is still in use.
    pub pending: bool,
    /// The GPU ran out of spare rows: NVIDIA says to replace the board.
    pub failure: bool,
}

/// PCIe link state. The generation drops at idle to save power, so only a narrower-than-maximum
/// width is taken as a sign of a bad link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcieLink {
    pub current_generation: Field<u32>,
    pub max_generation: Field<u32>,
    pub current_width: Field<u32>,
    pub max_width: Field<u32>,
}

/// What kind of NVML event arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    CriticalXid,
    DoubleBitEcc,
    SingleBitEcc,
}

/// One event from NVML's event set, collected between two readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEvent {
    pub kind: EventKind,
    /// The Xid number for `critical_xid` events; `None` when NVML reported it as unknown (999)
    /// or for ECC events.
    pub xid: Option<u64>,
}

/// Everything NVML says about one GPU at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuReading {
    /// NVML's index: what `CUDA_VISIBLE_DEVICES` and llama.cpp's `main_gpu` use, but not
    /// stable across reboots when boards move; `uuid` is the identity.
    pub index: u32,
    pub uuid: Field<String>,
    pub name: Field<String>,
    pub pci_bus_id: Field<String>,
    /// NVML said "GPU is lost" (fallen off the bus or otherwise inaccessible) for some call in
    /// this reading, or the device could not be opened at all.
    pub lost: bool,
    pub memory: Field<MemoryUse>,
    pub utilization: Field<Utilization>,
    pub temperature_c: Field<u32>,
    /// NVML's hardware slowdown threshold: clocks halve at this temperature.
    pub temperature_slowdown_c: Field<u32>,
    /// NVML's shutdown threshold: the board powers itself off at this temperature.
    pub temperature_shutdown_c: Field<u32>,
    pub power_mw: Field<u32>,
    /// The enforced power limit, after any administrator cap.
    pub power_limit_mw: Field<u32>,
    pub clocks: Clocks,
    pub clock_events: Field<ClockEvents>,
    /// Whether ECC is on now (a pending change needs a reboot).
    pub ecc_enabled: Field<bool>,
    pub ecc: EccCounts,
    pub retired_pages: Field<RetiredPages>,
    pub remapped_rows: Field<RemappedRows>,
    pub pcie: PcieLink,
    /// Event types the monitor listens for on this GPU, or why it cannot listen.
    pub events_registered: Field<Vec<EventKind>>,
    /// Events that arrived since the previous reading.
    pub events: Vec<GpuEvent>,
}

impl GpuReading {
    /// The identity used across readings: the UUID when NVML gave one, else the index (a GPU
    /// whose UUID cannot be read is in trouble anyway).
    pub fn key(&self) -> String {
        match &self.uuid {
            Field::Ok(uuid) => uuid.clone(),
            Field::NotSupported | Field::Error(_) => format!("index-{}", self.index),
        }
    }

    /// A reading for a GPU that NVML lists but cannot open or that vanished: every field
    /// carries the same error.
    pub fn unreachable(index: u32, error: &str, lost: bool) -> Self {
        fn err<T>(error: &str) -> Field<T> {
            Field::Error(error.to_string())
        }
        Self {
            index,
            uuid: err(error),
            name: err(error),
            pci_bus_id: err(error),
            lost,
            memory: err(error),
            utilization: err(error),
            temperature_c: err(error),
            temperature_slowdown_c: err(error),
            temperature_shutdown_c: err(error),
            power_mw: err(error),
            power_limit_mw: err(error),
            clocks: Clocks {
                graphics_mhz: err(error),
                sm_mhz: err(error),
                memory_mhz: err(error),
                max_graphics_mhz: err(error),
                max_sm_mhz: err(error),
                max_memory_mhz: err(error),
            },
            clock_events: err(error),
            ecc_enabled: err(error),
            ecc: EccCounts {
                volatile_corrected: err(error),
                volatile_uncorrected: err(error),
                aggregate_corrected: err(error),
                aggregate_uncorrected: err(error),
            },
            retired_pages: err(error),
            remapped_rows: err(error),
            pcie: PcieLink {
                current_generation: err(error),
                max_generation: err(error),
                current_width: err(error),
                max_width: err(error),
            },
            events_registered: err(error),
            events: Vec::new(),
        }
    }
}

/// One look at every GPU NVML lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub system: SystemInfo,
    pub gpus: Vec<GpuReading>,
}

impl Snapshot {
    /// Readings by key, for code that pairs them with health records.
    pub fn by_key(&self) -> BTreeMap<String, &GpuReading> {
        self.gpus.iter().map(|g| (g.key(), g)).collect()
    }
}

/// The healthy H100 reading recorded on a real H100 (driver 580.159.04, CUDA 13.0):
/// temperature and thresholds, clock event mask, ECC, remapped
/// rows, unsupported retired pages, power and limit, PCIe link. What that record does not hold
/// (clocks, memory use, utilization, NVML version, UUID, bus id) is filled with the board's
/// published figures or placeholders. Used by tests, the bench and the docs.
pub fn recorded_h100() -> Snapshot {
    const GIB: u64 = 1024 * 1024 * 1024;
    Snapshot {
        system: SystemInfo {
            driver_version: Field::Ok("580.159.04".into()),
            cuda_driver_version: Field::Ok("13.0".into()),
            nvml_version: Field::Ok("13.580.159.04".into()),
        },
        gpus: vec![GpuReading {
            index: 0,
            uuid: Field::Ok("GPU-00000000-0000-0000-0000-000000000000".into()),
            name: Field::Ok("NVIDIA H100 80GB HBM3".into()),
            pci_bus_id: Field::Ok("00000000:00:00.0".into()),
            lost: false,
            memory: Field::Ok(MemoryUse {
                total_bytes: 80 * GIB,
                used_bytes: GIB / 2,
                free_bytes: 80 * GIB - GIB / 2,
            }),
            utilization: Field::Ok(Utilization {
                gpu_percent: 0,
                memory_percent: 0,
            }),
            temperature_c: Field::Ok(45),
            temperature_slowdown_c: Field::Ok(89),
            temperature_shutdown_c: Field::Ok(95),
            power_mw: Field::Ok(130_000),
            power_limit_mw: Field::Ok(700_000),
            clocks: Clocks {
                graphics_mhz: Field::Ok(345),
                sm_mhz: Field::Ok(345),
                memory_mhz: Field::Ok(2619),
                max_graphics_mhz: Field::Ok(1980),
                max_sm_mhz: Field::Ok(1980),
                max_memory_mhz: Field::Ok(2619),
            },
            clock_events: Field::Ok(ClockEvents::from_bits(0x1)),
            ecc_enabled: Field::Ok(true),
            ecc: EccCounts {
                volatile_corrected: Field::Ok(0),
                volatile_uncorrected: Field::Ok(0),
                aggregate_corrected: Field::Ok(0),
                aggregate_uncorrected: Field::Ok(0),
            },
            retired_pages: Field::NotSupported,
            remapped_rows: Field::Ok(RemappedRows {
                correctable: 0,
                uncorrectable: 0,
                pending: false,
                failure: false,
            }),
            pcie: PcieLink {
                current_generation: Field::Ok(5),
                max_generation: Field::Ok(5),
                current_width: Field::Ok(16),
                max_width: Field::Ok(16),
            },
            events_registered: Field::Ok(vec![
                EventKind::CriticalXid,
                EventKind::DoubleBitEcc,
                EventKind::SingleBitEcc,
            ]),
            events: Vec::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_mask_decodes_to_gpu_idle() {
        let ev = ClockEvents::from_bits(0x1);
        assert_eq!(ev.reasons, vec!["gpu_idle"]);
        assert!(ev.slowdowns().is_empty());
    }

    #[test]
    fn thermal_and_unknown_bits_are_named_not_dropped() {
        // 0x40 is HW thermal slowdown; 0x8000 is not a reason this build knows.
        let ev = ClockEvents::from_bits(0x40 | 0x4 | 0x8000);
        assert_eq!(
            ev.reasons,
            vec!["sw_power_cap", "hw_thermal_slowdown", "unknown_0x8000"]
        );
        assert_eq!(ev.slowdowns(), vec!["hw_thermal_slowdown"]);
    }

    #[test]
    fn clock_event_table_matches_nvml_header_values() {
        // The values in nvml.h; a wrapper upgrade that changed them would mis-name reasons.
        let bits: Vec<u64> = CLOCK_EVENT_REASONS.iter().map(|(b, _, _)| *b).collect();
        assert_eq!(
            bits,
            vec![0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100]
        );
    }

    #[test]
    fn not_supported_round_trips_through_json_as_its_own_value() {
        let snap = recorded_h100();
        let json = serde_json::to_string(&snap).expect("serialize");
        assert!(
            json.contains(r#""retired_pages":{"status":"not_supported"}"#),
            "{json}"
        );
        let back: Snapshot = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, snap);
        assert_eq!(back.gpus[0].retired_pages, Field::NotSupported);
    }

    #[test]
    fn key_falls_back_to_index_without_uuid() {
        let r = GpuReading::unreachable(3, "GPU is lost", true);
        assert_eq!(r.key(), "index-3");
        assert_eq!(
            recorded_h100().gpus[0].key(),
            "GPU-00000000-0000-0000-0000-000000000000"
        );
    }
}
