//! The GPU status of the box as one value: readings, health, placement. `wardbox gpu status`
//! prints it (a table, or JSON with `--json`), `/metrics` exports it, the admin page shows it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::health::{HealthBook, HealthState, Transition};
use crate::monitor::{GpuError, NvmlMonitor};
use crate::placement::{self, ModelSpec, PlacementPolicy, Plan};
use crate::reading::{Field, GpuReading, Snapshot, SystemInfo};

/// One GPU: its reading and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuStatus {
    pub reading: GpuReading,
    pub state: HealthState,
    /// Why the GPU is not healthy (empty when healthy).
    pub reasons: Vec<String>,
    /// Critical Xids seen since the agent started, by number.
    pub xid_counts: BTreeMap<u64, u64>,
}

/// What placement decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PlacementOutcome {
    Planned {
        plan: Plan,
    },
    /// No plan is allowed (no healthy GPU and CPU fallback off): the engine must not start.
    Refused {
        error: String,
    },
}

/// The whole GPU picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Driver facts; `None` when NVML is unavailable.
    pub system: Option<SystemInfo>,
    /// Why NVML is unavailable, e.g. "no NVIDIA driver (...)".
    pub nvml_error: Option<String>,
    pub gpus: Vec<GpuStatus>,
    /// The model placed; `None` when the caller has no model yet (the boot probe, `/metrics`
    /// before the engine stage).
    pub model: Option<ModelSpec>,
    pub placement: Option<PlacementOutcome>,
    /// Health changes caused by this report's reading.
    pub transitions: Vec<Transition>,
}

impl StatusReport {
    /// Build from a snapshot (or the reason there is none) with health kept by the caller.
    pub fn build(
        snapshot: Result<&Snapshot, &GpuError>,
        book: &HealthBook,
        model: Option<&ModelSpec>,
        policy: &PlacementPolicy,
        transitions: Vec<Transition>,
    ) -> Self {
        let (system, nvml_error, gpus, planned) = match snapshot {
            Ok(snap) => {
                let gpus = snap
                    .gpus
                    .iter()
                    .map(|r| {
                        let h = book.get(&r.key());
                        GpuStatus {
                            reading: r.clone(),
                            state: book.state(&r.key()),
                            reasons: h.map(|h| h.reasons.clone()).unwrap_or_default(),
                            xid_counts: h.map(|h| h.xid_counts.clone()).unwrap_or_default(),
                        }
                    })
                    .collect();
                let cands = placement::candidates(snap, book);
                let planned = model.map(|m| placement::plan(m, &cands, policy));
                (Some(snap.system.clone()), None, gpus, planned)
            }
            Err(e) => {
                let why = e.to_string();
                let planned = model.map(|m| placement::plan_without_nvml(m, policy, &why));
                (None, Some(why), Vec::new(), planned)
            }
        };
        let placement = planned.map(|p| match p {
            Ok(plan) => PlacementOutcome::Planned { plan },
            Err(e) => PlacementOutcome::Refused {
                error: e.to_string(),
            },
        });
        Self {
            system,
            nvml_error,
            gpus,
            model: model.cloned(),
            placement,
            transitions,
        }
    }

    /// One reading taken into `book` (fresh for the CLI and the diagnostic).
    pub fn from_snapshot(
        snapshot: Result<Snapshot, GpuError>,
        mut book: HealthBook,
        model: Option<&ModelSpec>,
        policy: &PlacementPolicy,
    ) -> Self {
        let transitions = match &snapshot {
            Ok(s) => book.observe(s),
            Err(_) => Vec::new(),
        };
        Self::build(snapshot.as_ref(), &book, model, policy, transitions)
    }

    /// Whether anything is short of full strength: no NVML, a GPU not healthy, layers on CPU,
    /// or no plan at all.
    pub fn is_degraded(&self) -> bool {
        self.nvml_error.is_some()
            || self.gpus.iter().any(|g| g.state != HealthState::Healthy)
            || match &self.placement {
                Some(PlacementOutcome::Planned { plan }) => plan.degraded.is_some(),
                Some(PlacementOutcome::Refused { .. }) => true,
                None => false,
            }
    }

    /// The table `wardbox gpu status` prints.
    pub fn render_table(&self) -> String {
        let mut o = String::new();
        match (&self.system, &self.nvml_error) {
            (Some(s), _) => {
                let _ = writeln!(
                    o,
                    "NVML: driver {}, CUDA {}, NVML {}",
                    s.driver_version.display(),
                    s.cuda_driver_version.display(),
                    s.nvml_version.display()
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(o, "NVML: unavailable: {e}");
            }
            (None, None) => {
                let _ = writeln!(o, "NVML: unavailable");
            }
        }
        if self.system.is_some() && self.gpus.is_empty() {
            let _ = writeln!(o, "NVML lists no GPU.");
        }
        for g in &self.gpus {
            render_gpu(&mut o, g);
        }
        if let Some(m) = &self.model {
            let _ = writeln!(
                o,
                "Placement of {} ({} bytes, {} layers):",
                m.name, m.file_bytes, m.layers
            );
        }
        match &self.placement {
            None => {}
            Some(PlacementOutcome::Planned { plan }) => {
                let _ = writeln!(o, "  {}", plan.summary());
                let _ = writeln!(
                    o,
                    "  n_gpu_layers {}, CUDA_VISIBLE_DEVICES \"{}\"",
                    plan.n_gpu_layers(),
                    plan.cuda_visible_devices()
                );
                if let Some(d) = &plan.degraded {
                    let _ = writeln!(o, "  DEGRADED: {d}");
                }
            }
            Some(PlacementOutcome::Refused { error }) => {
                let _ = writeln!(o, "  REFUSED: {error}");
            }
        }
        let _ = writeln!(
            o,
            "Overall: {}",
            if self.is_degraded() {
                "DEGRADED"
            } else {
                "healthy"
            }
        );
        o
    }
}

/// What a table shows for a value NVML did not give.
fn missing<T>(f: &Field<T>) -> String {
    match f {
        Field::Ok(_) => String::new(),
        Field::NotSupported => "not supported".into(),
        Field::Error(e) => format!("error: {e}"),
    }
}

fn gib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0 * 1024.0))
}

fn render_gpu(o: &mut String, g: &GpuStatus) {
    let r = &g.reading;
    let _ = writeln!(
        o,
        "GPU {}  {}  {}  bus {}{}",
        r.index,
        r.name.display(),
        r.uuid.display(),
        r.pci_bus_id.display(),
        if r.lost { "  LOST" } else { "" }
    );
    let _ = writeln!(o, "  health        {}", g.state);
    for reason in &g.reasons {
        let _ = writeln!(o, "    - {reason}");
    }
    let mem = match &r.memory {
        Field::Ok(m) => format!(
            "{} / {} GiB used ({} GiB free)",
            gib(m.used_bytes),
            gib(m.total_bytes),
            gib(m.free_bytes)
        ),
        other => missing(other),
    };
    let _ = writeln!(o, "  memory        {mem}");
    let util = match &r.utilization {
        Field::Ok(u) => format!("gpu {}%, memory {}%", u.gpu_percent, u.memory_percent),
        other => missing(other),
    };
    let _ = writeln!(o, "  utilization   {util}");
    let _ = writeln!(
        o,
        "  temperature   {} C (slowdown {} C, shutdown {} C)",
        r.temperature_c.display(),
        r.temperature_slowdown_c.display(),
        r.temperature_shutdown_c.display()
    );
    let watts = |f: &Field<u32>| {
        f.clone()
            .map(|mw| format!("{:.1}", f64::from(mw) / 1000.0))
            .display()
    };
    let _ = writeln!(
        o,
        "  power         {} / {} W",
        watts(&r.power_mw),
        watts(&r.power_limit_mw)
    );
    let c = &r.clocks;
    let _ = writeln!(
        o,
        "  clocks (MHz)  graphics {}/{}, sm {}/{}, memory {}/{}",
        c.graphics_mhz.display(),
        c.max_graphics_mhz.display(),
        c.sm_mhz.display(),
        c.max_sm_mhz.display(),
        c.memory_mhz.display(),
        c.max_memory_mhz.display()
    );
    let events = match &r.clock_events {
        Field::Ok(ev) if ev.reasons.is_empty() => format!("none ({:#x})", ev.bits),
        Field::Ok(ev) => format!("{} ({:#x})", ev.reasons.join(", "), ev.bits),
        other => missing(other),
    };
    let _ = writeln!(o, "  clock events  {events}");
    let e = &r.ecc;
    let _ = writeln!(
        o,
        "  ECC           {}; volatile corrected {} uncorrected {}; aggregate corrected {} uncorrected {}",
        r.ecc_enabled
            .clone()
            .map(|on| if on { "on" } else { "off" })
            .display(),
        e.volatile_corrected.display(),
        e.volatile_uncorrected.display(),
        e.aggregate_corrected.display(),
        e.aggregate_uncorrected.display()
    );
    let pages = match &r.retired_pages {
        Field::Ok(p) => format!(
            "multiple single-bit {}, double-bit {}, pending {}",
            p.multiple_single_bit,
            p.double_bit,
            yes_no(p.pending)
        ),
        Field::NotSupported => "not supported".into(),
        Field::Error(e) => format!("error: {e}"),
    };
    let _ = writeln!(o, "  retired pages {pages}");
    let rows = match &r.remapped_rows {
        Field::Ok(x) => format!(
            "correctable {}, uncorrectable {}, pending {}, failure {}",
            x.correctable,
            x.uncorrectable,
            yes_no(x.pending),
            yes_no(x.failure)
        ),
        Field::NotSupported => "not supported".into(),
        Field::Error(e) => format!("error: {e}"),
    };
    let _ = writeln!(o, "  remapped rows {rows}");
    let p = &r.pcie;
    let _ = writeln!(
        o,
        "  PCIe          gen {}/{}, width x{}/x{}",
        p.current_generation.display(),
        p.max_generation.display(),
        p.current_width.display(),
        p.max_width.display()
    );
    let listening = match &r.events_registered {
        Field::Ok(kinds) => {
            let names: Vec<String> = kinds
                .iter()
                .map(|k| {
                    serde_json::to_value(k)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .collect();
            format!("listening for {}", names.join(", "))
        }
        Field::NotSupported => "event set not supported".into(),
        Field::Error(e) => format!("cannot listen: {e}"),
    };
    let xids: Vec<String> = g
        .xid_counts
        .iter()
        .map(|(x, n)| format!("Xid {x} x{n}"))
        .collect();
    let _ = writeln!(
        o,
        "  events        {listening}; {} new; {}",
        r.events.len(),
        if xids.is_empty() {
            "no Xid seen".to_string()
        } else {
            xids.join(", ")
        }
    );
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Read the GPUs once and decide placement: what `wardbox gpu status` and the GPU diagnostic
/// run. Without a driver the report says "no NVIDIA driver" and places the model on CPU (or
/// refuses, when CPU fallback is off).
pub fn status_once(
    library: Option<&Path>,
    health: HealthBook,
    model: Option<&ModelSpec>,
    policy: &PlacementPolicy,
) -> StatusReport {
    watch(library, health, 1, Duration::ZERO, model, policy, |_, _| {})
}

/// Take `readings` readings `interval` apart with one monitor and one health book, calling
/// `on_transition` with the reading number (from 1) as each health change happens, and report
/// on the last reading. This is how to see the hysteresis on a real GPU.
pub fn watch(
    library: Option<&Path>,
    mut book: HealthBook,
    readings: u32,
    interval: Duration,
    model: Option<&ModelSpec>,
    policy: &PlacementPolicy,
    mut on_transition: impl FnMut(u32, &Transition),
) -> StatusReport {
    let monitor = match library {
        Some(path) => NvmlMonitor::init_with_library(path),
        None => NvmlMonitor::init(),
    };
    let monitor = match monitor {
        Ok(m) => m,
        Err(e) => return StatusReport::from_snapshot(Err(e), book, model, policy),
    };
    let mut all = Vec::new();
    let mut last = monitor.read();
    for i in 1..=readings.max(1) {
        if i > 1 {
            std::thread::sleep(interval);
            last = monitor.read();
        }
        let ts = match &last {
            Ok(s) => book.observe(s),
            Err(e) => book.observe_unreadable(&e.to_string()),
        };
        for t in &ts {
            on_transition(i, t);
        }
        all.extend(ts);
    }
    StatusReport::build(last.as_ref(), &book, model, policy, all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthPolicy;
    use crate::reading::recorded_h100;

    fn book() -> HealthBook {
        HealthBook::new(HealthPolicy::default()).expect("default policy")
    }

    #[test]
    fn recorded_h100_table() {
        let report = StatusReport::from_snapshot(
            Ok(recorded_h100()),
            book(),
            Some(&ModelSpec::gemma3_270m()),
            &PlacementPolicy {
                allow_cpu_fallback: false,
                ..PlacementPolicy::default()
            },
        );
        assert!(!report.is_degraded());
        let expected = "\
NVML: driver 580.159.04, CUDA 13.0, NVML 13.580.159.04
GPU 0  NVIDIA H100 80GB HBM3  GPU-00000000-0000-0000-0000-000000000000  bus 00000000:00:00.0
  health        healthy
  memory        0.5 / 80.0 GiB used (79.5 GiB free)
  utilization   gpu 0%, memory 0%
  temperature   45 C (slowdown 89 C, shutdown 95 C)
  power         130.0 / 700.0 W
  clocks (MHz)  graphics 345/1980, sm 345/1980, memory 2619/2619
  clock events  gpu_idle (0x1)
  ECC           on; volatile corrected 0 uncorrected 0; aggregate corrected 0 uncorrected 0
  retired pages not supported
  remapped rows correctable 0, uncorrectable 0, pending no, failure no
  PCIe          gen 5/5, width x16/x16
  events        listening for critical_xid, double_bit_ecc, single_bit_ecc; 0 new; no Xid seen
Placement of gemma-3-270m-q4_k_m (253113024 bytes, 18 layers):
  gemma-3-270m-q4_k_m: 18 layers on GPU 0 (GPU-00000000-0000-0000-0000-000000000000)
  n_gpu_layers 19, CUDA_VISIBLE_DEVICES \"0\"
Overall: healthy
";
        assert_eq!(report.render_table(), expected);
    }

    #[test]
    fn no_driver_report_runs_on_cpu_and_says_degraded() {
        let err = GpuError::NoDriver {
            detail: "libnvidia-ml.so.1: cannot open shared object file".into(),
        };
        let report = StatusReport::from_snapshot(
            Err(err),
            book(),
            Some(&ModelSpec::gemma3_270m()),
            &PlacementPolicy::default(),
        );
        assert!(report.is_degraded());
        let table = report.render_table();
        assert!(
            table.starts_with("NVML: unavailable: no NVIDIA driver (libnvidia-ml.so.1"),
            "{table}"
        );
        assert!(table.contains("18 layers on CPU"), "{table}");
        assert!(
            table.contains("DEGRADED: no NVIDIA driver (libnvidia-ml.so.1: cannot open shared object file): install the NVIDIA driver and check `nvidia-smi`; running on CPU"),
            "{table}"
        );
        assert!(table.ends_with("Overall: DEGRADED\n"), "{table}");
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["placement"]["outcome"], "planned");
        assert_eq!(json["placement"]["plan"]["cpu_layers"], 18);
    }

    #[test]
    fn no_driver_without_fallback_is_refused() {
        let report = StatusReport::from_snapshot(
            Err(GpuError::NoDriver { detail: "x".into() }),
            book(),
            Some(&ModelSpec::gemma3_270m()),
            &PlacementPolicy {
                allow_cpu_fallback: false,
                ..PlacementPolicy::default()
            },
        );
        assert!(matches!(
            report.placement,
            Some(PlacementOutcome::Refused { .. })
        ));
        let table = report.render_table();
        assert!(table.contains("REFUSED: no healthy GPU for model gemma-3-270m-q4_k_m and gpu.allow_cpu_fallback is false: no NVIDIA driver (x)"), "{table}");
    }

    /// The real thing on this machine: no driver here (and on CI) gives the clean report. On a
    /// machine with the driver it must read at least one GPU.
    #[test]
    fn status_once_on_this_machine() {
        let report = status_once(
            None,
            book(),
            Some(&ModelSpec::gemma3_270m()),
            &PlacementPolicy::default(),
        );
        if std::path::Path::new("/proc/driver/nvidia/version").exists() {
            assert!(report.nvml_error.is_none(), "{:?}", report.nvml_error);
            assert!(!report.gpus.is_empty());
        } else {
            let e = report.nvml_error.as_deref().unwrap_or_default();
            assert!(e.starts_with("no NVIDIA driver"), "{e}");
            assert!(report.is_degraded());
        }
    }
}
