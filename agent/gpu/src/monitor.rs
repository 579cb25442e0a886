//! Reads every GPU through NVML (`nvml-wrapper`, which loads `libnvidia-ml.so.1` at run time).
//!
//! This is the only module that talks to the driver. It decides nothing: it turns NVML's
//! answers into [`Snapshot`]s, recording each value a GPU does not offer as
//! [`Field::NotSupported`] and each failed call as [`Field::Error`], so one missing counter
//! never hides the rest of the reading.

use std::path::Path;
use std::sync::Mutex;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, RetirementCause, TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::{Bits, NvmlError};
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device, EventSet, Nvml};

use crate::reading::{
    ClockEvents, Clocks, EccCounts, EventKind, Field, GpuEvent, GpuReading, MemoryUse, PcieLink,
    RemappedRows, RetiredPages, Snapshot, SystemInfo, Utilization,
};

/// Why the monitor could not start or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpuError {
    /// The library or the kernel driver is absent: the normal state of a box without an NVIDIA
    /// GPU, of CI and of the dev profile.
    #[error("no NVIDIA driver ({detail}): install the NVIDIA driver and check `nvidia-smi`")]
    NoDriver { detail: String },
    /// This binary cannot load shared libraries at all: a fully static (musl) build, whose
    /// `dlopen` always fails. Telling IT "no driver" here would send them after the wrong fault.
    #[error(
        "this wardbox binary cannot load libnvidia-ml ({detail}): it is a static musl build; use \
         the x86_64-unknown-linux-gnu build (see docs/gpu.md)"
    )]
    StaticBinary { detail: String },
    /// The driver is there but refused this process.
    #[error(
        "NVML refused access ({detail}); the agent's user needs read/write access to \
         /dev/nvidiactl and /dev/nvidia*"
    )]
    NoPermission { detail: String },
    /// The driver is there and NVML failed anyway (often a driver/library version mismatch
    /// after an upgrade without a reboot).
    #[error(
        "NVML failed during {step} ({detail}); check `nvidia-smi` and reboot after driver upgrades"
    )]
    Nvml { step: &'static str, detail: String },
}

impl GpuError {
    fn from_init(e: NvmlError) -> Self {
        let detail = e.to_string();
        if detail.contains("Dynamic loading not supported") {
            return GpuError::StaticBinary { detail };
        }
        match e {
            NvmlError::LibloadingError(_)
            | NvmlError::LibraryNotFound
            | NvmlError::DriverNotLoaded
            | NvmlError::FailedToLoadSymbol(_)
            | NvmlError::FunctionNotFound => GpuError::NoDriver { detail },
            NvmlError::NoPermission => GpuError::NoPermission { detail },
            _ => GpuError::Nvml {
                step: "initialisation",
                detail,
            },
        }
    }
}

/// The event types the monitor listens for. Single-bit ECC events are collected to count them;
/// the health policy acts on Xids and double-bit errors.
const WANTED_EVENTS: [(EventTypes, EventKind); 3] = [
    (EventTypes::CRITICAL_XID_ERROR, EventKind::CriticalXid),
    (EventTypes::DOUBLE_BIT_ECC_ERROR, EventKind::DoubleBitEcc),
    (EventTypes::SINGLE_BIT_ECC_ERROR, EventKind::SingleBitEcc),
];

/// At most this many events are drained per GPU per reading, so a GPU that floods events
/// cannot stall the monitor; the rest wait for the next reading.
const MAX_EVENTS_PER_READING: usize = 256;

/// One GPU's event set: NVML frees a set when registering on it fails, so each GPU gets its
/// own and one GPU's refusal costs only that GPU its events.
struct DeviceEvents {
    set: Option<EventSet<'static>>,
    registered: Field<Vec<EventKind>>,
}

/// A live connection to NVML with an event set per GPU.
///
/// Make one per process and keep it: the event sets borrow the NVML handle for as long as they
/// listen, so the handle is leaked once (NVML is process-global and the driver cleans up on
/// exit); a monitor made per reading would also miss every event between readings.
pub struct NvmlMonitor {
    nvml: &'static Nvml,
    events: Mutex<Vec<DeviceEvents>>,
}

impl std::fmt::Debug for NvmlMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlMonitor").finish_non_exhaustive()
    }
}

impl NvmlMonitor {
    /// Load `libnvidia-ml.so.1` from the loader path and start listening for events.
    pub fn init() -> Result<Self, GpuError> {
        Self::start(Nvml::init())
    }

    /// Load NVML from an explicit path (a box whose driver lives outside the loader path).
    pub fn init_with_library(path: &Path) -> Result<Self, GpuError> {
        Self::start(Nvml::builder().lib_path(path.as_os_str()).init())
    }

    fn start(nvml: Result<Nvml, NvmlError>) -> Result<Self, GpuError> {
        let nvml: &'static Nvml = Box::leak(Box::new(nvml.map_err(GpuError::from_init)?));
        let count = nvml.device_count().map_err(|e| GpuError::Nvml {
            step: "counting GPUs",
            detail: e.to_string(),
        })?;
        let events = (0..count).map(|i| register_events(nvml, i)).collect();
        Ok(Self {
            nvml,
            events: Mutex::new(events),
        })
    }

    /// Driver-wide facts.
    pub fn system(&self) -> SystemInfo {
        SystemInfo {
            driver_version: field(&mut false, self.nvml.sys_driver_version()),
            cuda_driver_version: field(
                &mut false,
                self.nvml.sys_cuda_driver_version().map(|v| {
                    format!(
                        "{}.{}",
                        nvml_wrapper::cuda_driver_version_major(v),
                        nvml_wrapper::cuda_driver_version_minor(v)
                    )
                }),
            ),
            nvml_version: field(&mut false, self.nvml.sys_nvml_version()),
        }
    }

    /// Read every GPU, with the events that arrived since the previous call.
    pub fn read(&self) -> Result<Snapshot, GpuError> {
        let count = self.nvml.device_count().map_err(|e| GpuError::Nvml {
            step: "counting GPUs",
            detail: e.to_string(),
        })?;
        // A poisoned lock only means an earlier reader panicked mid-drain; the sets are still
        // valid NVML handles.
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let slot = events.get_mut(index as usize);
            gpus.push(self.read_device(index, slot));
        }
        Ok(Snapshot {
            system: self.system(),
            gpus,
        })
    }

    fn read_device(&self, index: u32, events: Option<&mut DeviceEvents>) -> GpuReading {
        let dev = match self.nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                let lost = matches!(e, NvmlError::GpuLost);
                return GpuReading::unreachable(index, &e.to_string(), lost);
            }
        };
        let mut lost = false;
        let l = &mut lost;
        let (events_registered, events) = match events {
            Some(ev) => (ev.registered.clone(), drain_events(ev, l)),
            None => (
                Field::Error("GPU appeared after the monitor started".into()),
                Vec::new(),
            ),
        };
        let reading = GpuReading {
            index,
            uuid: field(l, dev.uuid()),
            name: field(l, dev.name()),
            pci_bus_id: field(l, dev.pci_info().map(|p| p.bus_id)),
            lost: false,
            memory: field(
                l,
                dev.memory_info().map(|m| MemoryUse {
                    total_bytes: m.total,
                    used_bytes: m.used,
                    free_bytes: m.free,
                }),
            ),
            utilization: field(
                l,
                dev.utilization_rates().map(|u| Utilization {
                    gpu_percent: u.gpu,
                    memory_percent: u.memory,
                }),
            ),
            temperature_c: field(l, dev.temperature(TemperatureSensor::Gpu)),
            temperature_slowdown_c: field(
                l,
                dev.temperature_threshold(TemperatureThreshold::Slowdown),
            ),
            temperature_shutdown_c: field(
                l,
                dev.temperature_threshold(TemperatureThreshold::Shutdown),
            ),
            power_mw: field(l, dev.power_usage()),
            power_limit_mw: field(l, dev.enforced_power_limit()),
            clocks: Clocks {
                graphics_mhz: field(l, dev.clock_info(Clock::Graphics)),
                sm_mhz: field(l, dev.clock_info(Clock::SM)),
                memory_mhz: field(l, dev.clock_info(Clock::Memory)),
                max_graphics_mhz: field(l, dev.max_clock_info(Clock::Graphics)),
                max_sm_mhz: field(l, dev.max_clock_info(Clock::SM)),
                max_memory_mhz: field(l, dev.max_clock_info(Clock::Memory)),
            },
            clock_events: clock_events(l, &dev),
            ecc_enabled: field(l, dev.is_ecc_enabled().map(|m| m.currently_enabled)),
            ecc: EccCounts {
                volatile_corrected: field(
                    l,
                    dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
                ),
                volatile_uncorrected: field(
                    l,
                    dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
                ),
                aggregate_corrected: field(
                    l,
                    dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate),
                ),
                aggregate_uncorrected: field(
                    l,
                    dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate),
                ),
            },
            retired_pages: retired_pages(l, &dev),
            remapped_rows: remapped_rows(l, &dev),
            pcie: PcieLink {
                current_generation: field(l, dev.current_pcie_link_gen()),
                max_generation: field(l, dev.max_pcie_link_gen()),
                current_width: field(l, dev.current_pcie_link_width()),
                max_width: field(l, dev.max_pcie_link_width()),
            },
            events_registered,
            events,
        };
        GpuReading { lost, ..reading }
    }
}

/// Turn one NVML answer into a [`Field`], noting "GPU is lost" on the way.
fn field<T>(lost: &mut bool, r: Result<T, NvmlError>) -> Field<T> {
    match r {
        Ok(v) => Field::Ok(v),
        Err(e) => classify(lost, e),
    }
}

fn classify<T>(lost: &mut bool, e: NvmlError) -> Field<T> {
    match e {
        // A driver older than the wrapper lacks newer functions: that is "not supported here",
        // the same as the GPU saying so.
        NvmlError::NotSupported
        | NvmlError::FunctionNotFound
        | NvmlError::FailedToLoadSymbol(_) => Field::NotSupported,
        NvmlError::GpuLost => {
            *lost = true;
            Field::Error(e.to_string())
        }
        other => Field::Error(other.to_string()),
    }
}

fn clock_events(lost: &mut bool, dev: &Device<'_>) -> Field<ClockEvents> {
    // The strict call keeps bits this wrapper does not know (NVML adds reasons over time); they
    // arrive as `IncorrectBits` and are still decoded, as `unknown_0x...`.
    match dev.current_throttle_reasons_strict() {
        Ok(r) => Field::Ok(ClockEvents::from_bits(r.bits())),
        Err(NvmlError::IncorrectBits(Bits::U64(b))) => Field::Ok(ClockEvents::from_bits(b)),
        Err(NvmlError::IncorrectBits(Bits::U32(b))) => Field::Ok(ClockEvents::from_bits(b.into())),
        Err(e) => classify(lost, e),
    }
}

fn retired_pages(lost: &mut bool, dev: &Device<'_>) -> Field<RetiredPages> {
    let single = match dev.retired_pages(RetirementCause::MultipleSingleBitEccErrors) {
        Ok(p) => p.len() as u64,
        Err(e) => return classify(lost, e),
    };
    let double = match dev.retired_pages(RetirementCause::DoubleBitEccError) {
        Ok(p) => p.len() as u64,
        Err(e) => return classify(lost, e),
    };
    match dev.are_pages_pending_retired() {
        Ok(pending) => Field::Ok(RetiredPages {
            multiple_single_bit: single,
            double_bit: double,
            pending,
        }),
        Err(e) => classify(lost, e),
    }
}

fn remapped_rows(lost: &mut bool, dev: &Device<'_>) -> Field<RemappedRows> {
    // nvml-wrapper 0.13 has no safe wrapper for nvmlDeviceGetRemappedRows; the same four
    // counters are NVML field values, which it does wrap.
    let ids = [
        FieldId(NVML_FI_DEV_REMAPPED_COR),
        FieldId(NVML_FI_DEV_REMAPPED_UNC),
        FieldId(NVML_FI_DEV_REMAPPED_PENDING),
        FieldId(NVML_FI_DEV_REMAPPED_FAILURE),
    ];
    let samples = match dev.field_values_for(&ids) {
        Ok(s) => s,
        Err(e) => return classify(lost, e),
    };
    let mut values = [0u64; 4];
    for (slot, sample) in values.iter_mut().zip(samples) {
        match sample.and_then(|s: FieldValueSample| s.value) {
            Ok(v) => *slot = sample_u64(v),
            Err(e) => return classify(lost, e),
        }
    }
    Field::Ok(RemappedRows {
        correctable: values[0],
        uncorrectable: values[1],
        pending: values[2] != 0,
        failure: values[3] != 0,
    })
}

fn sample_u64(v: SampleValue) -> u64 {
    match v {
        SampleValue::U32(x) => x.into(),
        SampleValue::U64(x) => x,
        SampleValue::I64(x) => x.max(0).unsigned_abs(),
        // Counters are integral; a float would be a driver bug, and rounding keeps it visible.
        SampleValue::F64(x) => {
            if x.is_finite() && x > 0.0 {
                x.round() as u64
            } else {
                0
            }
        }
    }
}

fn register_events(nvml: &'static Nvml, index: u32) -> DeviceEvents {
    let failed = |e: String| DeviceEvents {
        set: None,
        registered: Field::Error(e),
    };
    let dev = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(e) => return failed(e.to_string()),
    };
    let supported = match dev.supported_event_types() {
        Ok(s) => s,
        Err(NvmlError::NotSupported) => {
            return DeviceEvents {
                set: None,
                registered: Field::NotSupported,
            };
        }
        Err(e) => return failed(e.to_string()),
    };
    let mut types = EventTypes::empty();
    let mut kinds = Vec::new();
    for (t, k) in WANTED_EVENTS {
        if supported.contains(t) {
            types |= t;
            kinds.push(k);
        }
    }
    if types.is_empty() {
        return DeviceEvents {
            set: None,
            registered: Field::NotSupported,
        };
    }
    let set = match nvml.create_event_set() {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    match dev.register_events(types, set) {
        Ok(set) => DeviceEvents {
            set: Some(set),
            registered: Field::Ok(kinds),
        },
        Err(e) if matches!(e.error, NvmlError::NotSupported) => DeviceEvents {
            set: None,
            registered: Field::NotSupported,
        },
        Err(e) => failed(e.error.to_string()),
    }
}

fn drain_events(ev: &mut DeviceEvents, lost: &mut bool) -> Vec<GpuEvent> {
    let mut out = Vec::new();
    let Some(set) = ev.set.as_ref() else {
        return out;
    };
    while out.len() < MAX_EVENTS_PER_READING {
        match set.wait(0) {
            Ok(data) => {
                for (t, kind) in WANTED_EVENTS {
                    if data.event_type.contains(t) {
                        let xid = match (kind, &data.event_data) {
                            (EventKind::CriticalXid, Some(XidError::Value(v))) => Some(*v),
                            _ => None,
                        };
                        out.push(GpuEvent { kind, xid });
                    }
                }
            }
            Err(NvmlError::Timeout) => break,
            Err(NvmlError::GpuLost) => {
                *lost = true;
                break;
            }
            Err(e) => {
                // The set is unusable; say so in the reading instead of retrying forever.
                ev.registered = Field::Error(format!("event wait failed: {e}"));
                ev.set = None;
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No driver on this machine or on CI: `init` must come back with `NoDriver`, not panic.
    /// On a machine that has a driver the test says so and checks the opposite.
    #[test]
    fn init_without_driver_reports_no_driver() {
        let have_driver = Path::new("/proc/driver/nvidia/version").exists();
        match NvmlMonitor::init() {
            Err(GpuError::NoDriver { detail }) => {
                assert!(
                    !have_driver,
                    "driver present but NVML did not load: {detail}"
                );
                let msg = GpuError::NoDriver { detail }.to_string();
                assert!(msg.starts_with("no NVIDIA driver"), "{msg}");
            }
            Ok(m) => {
                assert!(have_driver, "NVML loaded without a driver");
                m.read().expect("a monitor that started can read");
            }
            Err(other) => panic!("unexpected NVML init error: {other}"),
        }
    }

    #[test]
    fn library_path_that_does_not_exist_is_no_driver() {
        let err = NvmlMonitor::init_with_library(Path::new("/nonexistent/libnvidia-ml.so.1"))
            .expect_err("no library there");
        match err {
            GpuError::NoDriver { detail } => assert!(detail.contains("nonexistent"), "{detail}"),
            other => panic!("expected NoDriver, got {other}"),
        }
    }

    #[test]
    fn a_library_that_is_not_nvml_is_no_driver() {
        // A real shared object without NVML's symbols: what a wrong path in config looks like.
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("this test needs glibc's libc.so.6 (Debian x86-64)");
        let err = NvmlMonitor::init_with_library(Path::new(libc)).expect_err("libc is not NVML");
        assert!(matches!(err, GpuError::NoDriver { .. }), "{err}");
    }

    #[test]
    fn field_classification() {
        let mut lost = false;
        assert_eq!(
            field::<u32>(&mut lost, Err(NvmlError::NotSupported)),
            Field::NotSupported
        );
        assert_eq!(
            field::<u32>(&mut lost, Err(NvmlError::FunctionNotFound)),
            Field::NotSupported
        );
        assert!(!lost);
        assert!(field::<u32>(&mut lost, Err(NvmlError::NoPermission)).is_error());
        assert!(!lost);
        assert!(field::<u32>(&mut lost, Err(NvmlError::GpuLost)).is_error());
        assert!(lost, "GPU lost must mark the reading");
        assert_eq!(field(&mut lost, Ok(7u32)), Field::Ok(7));
    }

    #[test]
    fn static_musl_dlopen_failure_is_not_called_no_driver() {
        // musl's static dlopen answers exactly this (checked with musl-gcc -static on Debian 12).
        let e = NvmlError::FailedToLoadSymbol("Dynamic loading not supported".into());
        let err = GpuError::from_init(e);
        assert!(matches!(err, GpuError::StaticBinary { .. }), "{err}");
        assert!(
            err.to_string().contains("x86_64-unknown-linux-gnu"),
            "{err}"
        );
    }

    #[test]
    fn init_errors_map_to_actionable_kinds() {
        assert!(matches!(
            GpuError::from_init(NvmlError::DriverNotLoaded),
            GpuError::NoDriver { .. }
        ));
        assert!(matches!(
            GpuError::from_init(NvmlError::NoPermission),
            GpuError::NoPermission { .. }
        ));
        assert!(matches!(
            GpuError::from_init(NvmlError::LibRmVersionMismatch),
            GpuError::Nvml { .. }
        ));
    }
}
