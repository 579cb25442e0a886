//! GPU stage: read the GPUs through NVML, keep their health, decide GPU or CPU.
//!
//! The reading, the health state machine and the layer placement live in `wardbox-gpu`; this
//! file holds the `[gpu]` configuration, the stage's interface and the one decision the boot
//! spine needs: may the engine use GPUs, and which. There is no simulated GPU: without a driver
//! (dev laptops, CI) the real probe says "no NVIDIA driver" and the box runs on CPU, degraded
//! and saying so, or refuses when the clinic has turned CPU fallback off.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wardbox_gpu::health::{HealthBook, HealthError, HealthPolicy, HealthState, Transition};
use wardbox_gpu::placement::{self, GpuCandidate, ModelSpec, PlacementError, PlacementPolicy, Plan};
use wardbox_gpu::{GpuError, NvmlMonitor, Snapshot, StatusReport};

use crate::boot::StageReport;
use crate::settings::ConfigError;

const MIB: u64 = 1024 * 1024;

/// `[gpu]`: placement choices the clinic makes, and the health thresholds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// Whether the engine may run on CPU when no healthy GPU is left (always stated loudly).
    pub allow_cpu_fallback: bool,
    /// GPU memory left free for the CUDA context and compute buffers, in MiB.
    #[serde(default = "default_reserve_mib")]
    pub reserve_mib: u64,
    /// Where `libnvidia-ml.so.1` is, when it is not on the loader path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvml_library: Option<PathBuf>,
    /// `[gpu.health]`: when a GPU counts as degraded or failed.
    #[serde(default)]
    pub health: HealthPolicy,
}

fn default_reserve_mib() -> u64 {
    PlacementPolicy::default().reserve_bytes / MIB
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            allow_cpu_fallback: true,
            reserve_mib: default_reserve_mib(),
            nvml_library: None,
            health: HealthPolicy::default(),
        }
    }
}

impl GpuConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.health.validate().map_err(|e| ConfigError::invalid("gpu.health", e.to_string()))?;
        if self.reserve_mib > 1024 * 1024 {
            return Err(ConfigError::invalid("gpu.reserve_mib", "must be at most 1048576 (1 TiB)"));
        }
        if let Some(p) = &self.nvml_library
            && !p.is_absolute()
        {
            return Err(ConfigError::invalid("gpu.nvml_library", "must be an absolute path"));
        }
        Ok(())
    }

    pub fn placement_policy(&self) -> PlacementPolicy {
        PlacementPolicy { allow_cpu_fallback: self.allow_cpu_fallback, reserve_bytes: self.reserve_mib * MIB }
    }
}

/// Where the engine may run. The layer split needs the model, which the engine stage knows:
/// it calls [`Placement::plan`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Placement {
    /// These healthy GPUs take layers.
    Gpu { gpus: Vec<GpuCandidate> },
    /// No healthy GPU (or no driver) and CPU fallback is allowed.
    Cpu { reason: String },
}

impl Placement {
    /// How many layers of `model` go to which GPU. A CPU placement gives an all-CPU plan whose
    /// `degraded` carries the reason.
    pub fn plan(&self, model: &ModelSpec, policy: &PlacementPolicy) -> Result<Plan, PlacementError> {
        match self {
            Placement::Gpu { gpus } => placement::plan(model, gpus, policy),
            Placement::Cpu { reason } => placement::plan_without_nvml(model, policy, reason),
        }
    }
}

/// The GPU stage's interface.
pub trait GpuProbe: Send + Sync + std::fmt::Debug {
    /// Read the GPUs, update their health and decide where the engine may run. Called at boot
    /// and again by every periodic re-check (health keeps its history between calls).
    fn probe(&self) -> Result<(Placement, StageReport), String>;
    /// Health changes since the last call, each with its reason: raise them as alerts and
    /// audit them.
    fn take_transitions(&self) -> Vec<Transition>;
    /// The latest full report, for `/metrics`, the admin page and `wardbox gpu status`.
    fn report(&self) -> Option<StatusReport>;
}

pub fn probe(config: &GpuConfig) -> Box<dyn GpuProbe> {
    Box::new(NvmlProbe::new(config.clone()))
}

/// The decision, pure: from a snapshot (or why there is none) and the GPUs' health.
pub fn decide(
    snapshot: Result<&Snapshot, &GpuError>,
    book: &HealthBook,
    allow_cpu_fallback: bool,
) -> Result<(Placement, StageReport), String> {
    let cpu = |why: String| {
        if allow_cpu_fallback {
            let reason = format!("{why}; running on CPU");
            Ok((Placement::Cpu { reason: reason.clone() }, StageReport::degraded(reason)))
        } else {
            Err(format!("{why}; gpu.allow_cpu_fallback is false, so the engine will not start"))
        }
    };
    let snap = match snapshot {
        Ok(s) => s,
        Err(e) => return cpu(e.to_string()),
    };
    let candidates = placement::candidates(snap, book);
    if candidates.is_empty() {
        return cpu("NVML lists no GPU".into());
    }
    let mut healthy = Vec::new();
    let mut not_used = Vec::new();
    for c in candidates {
        let label = format!("GPU {} {}", c.index, c.name);
        match (c.state, c.free_bytes) {
            (HealthState::Healthy, Some(free)) => {
                let gib = free as f64 / (1024.0 * MIB as f64);
                healthy.push((format!("{label} ({gib:.1} GiB free)"), c));
            }
            (HealthState::Healthy, None) => not_used.push(format!("{label}: free memory unreadable")),
            (state, _) => {
                let why = book.get(&c.gpu).map(|h| h.reasons.join("; ")).unwrap_or_default();
                not_used.push(format!("{label} is {state}: {why}"));
            }
        }
    }
    if healthy.is_empty() {
        return cpu(format!("no healthy GPU ({})", not_used.join("; ")));
    }
    let (labels, gpus): (Vec<String>, Vec<GpuCandidate>) = healthy.into_iter().unzip();
    let detail = format!("{} healthy GPU(s): {}", gpus.len(), labels.join(", "));
    let report = if not_used.is_empty() {
        StageReport::ok(detail)
    } else {
        StageReport::degraded(format!("{detail}; not used: {}", not_used.join("; ")))
    };
    Ok((Placement::Gpu { gpus }, report))
}

/// The periodic GPU re-check: probe every `every` until `stop` turns true, handing each health
/// change to `on_transition` (raise an alert with source `gpu`, audit it, re-plan the engine).
/// NVML calls block, so each probe runs on the blocking pool.
pub async fn recheck(
    probe: Arc<dyn GpuProbe>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut on_transition: impl FnMut(&Transition) + Send,
) {
    let mut tick = tokio::time::interval(every);
    // The boot stage has just probed; the first re-check comes one interval later.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let p = probe.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    let result = p.probe();
                    (result, p.take_transitions())
                })
                .await;
                match outcome {
                    Ok((result, transitions)) => {
                        if let Err(e) = result {
                            tracing::warn!("GPU re-check: {e}");
                        }
                        for t in &transitions {
                            on_transition(t);
                        }
                    }
                    Err(e) => tracing::error!("GPU re-check task failed: {e}"),
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// [`decide`] for a probe whose monitor is running: when a read fails after earlier ones
/// worked, decide on the last good snapshot with the GPUs' current health (which counts the
/// failure toward degrading them), so one failed read does not move the engine, and say so.
pub fn decide_after_read(
    snapshot: Result<&Snapshot, &GpuError>,
    last_good: Option<&Snapshot>,
    book: &HealthBook,
    allow_cpu_fallback: bool,
) -> Result<(Placement, StageReport), String> {
    match (snapshot, last_good) {
        (Err(e), Some(prev)) => decide(Ok(prev), book, allow_cpu_fallback).map(|(p, r)| {
            let detail = format!("NVML read failed ({e}); placement from the previous reading: {}", r.detail);
            (p, StageReport::degraded(detail))
        }),
        (snapshot, _) => decide(snapshot, book, allow_cpu_fallback),
    }
}

/// The real probe: one NVML monitor for the life of the agent, one health book.
#[derive(Debug)]
pub struct NvmlProbe {
    config: GpuConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Made at the first probe; retried while the driver is absent (it may load late).
    monitor: Option<NvmlMonitor>,
    /// An error only if the health policy is invalid, which config validation rules out.
    book: Result<HealthBook, HealthError>,
    pending: Vec<Transition>,
    last: Option<StatusReport>,
    /// The last snapshot NVML gave, so one failed read does not move the engine at once
    /// (the health book counts the failure with the usual hysteresis).
    last_good: Option<Snapshot>,
}

impl NvmlProbe {
    pub fn new(config: GpuConfig) -> Self {
        let book = HealthBook::new(config.health.clone());
        Self { config, inner: Mutex::new(Inner { monitor: None, book, pending: Vec::new(), last: None, last_good: None }) }
    }
}

impl GpuProbe for NvmlProbe {
    fn probe(&self) -> Result<(Placement, StageReport), String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { monitor, book, pending, last, last_good } = &mut *inner;
        let book = match book {
            Ok(b) => b,
            Err(e) => return Err(format!("invalid [gpu.health] policy: {e}")),
        };
        if monitor.is_none() {
            let started = match &self.config.nvml_library {
                Some(p) => NvmlMonitor::init_with_library(p),
                None => NvmlMonitor::init(),
            };
            match started {
                Ok(m) => *monitor = Some(m),
                Err(e) => {
                    let policy = self.config.placement_policy();
                    *last = Some(StatusReport::build(Err(&e), book, None, &policy, Vec::new()));
                    return decide(Err(&e), book, self.config.allow_cpu_fallback);
                }
            }
        }
        let snapshot = monitor.as_ref().map(NvmlMonitor::read).unwrap_or_else(|| {
            Err(GpuError::Nvml { step: "reading", detail: "monitor not started".into() })
        });
        let transitions = match &snapshot {
            Ok(s) => book.observe(s),
            Err(e) => book.observe_unreadable(&e.to_string()),
        };
        for t in &transitions {
            match t.to {
                HealthState::Healthy => tracing::info!(gpu = %t.gpu, "GPU health: {t}"),
                HealthState::Degraded | HealthState::Failed => tracing::warn!(gpu = %t.gpu, "GPU health: {t}"),
            }
        }
        let policy = self.config.placement_policy();
        *last = Some(StatusReport::build(snapshot.as_ref(), book, None, &policy, transitions.clone()));
        pending.extend(transitions);
        let decision = decide_after_read(snapshot.as_ref(), last_good.as_ref(), book, self.config.allow_cpu_fallback);
        if let Ok(s) = snapshot {
            *last_good = Some(s);
        }
        decision
    }

    fn take_transitions(&self) -> Vec<Transition> {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()).pending)
    }

    fn report(&self) -> Option<StatusReport> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardbox_gpu::reading::{Field, recorded_h100};

    fn book() -> HealthBook {
        HealthBook::new(HealthPolicy::default()).expect("default policy")
    }

    #[test]
    fn no_driver_runs_on_cpu_degraded_and_says_so() {
        let e = GpuError::NoDriver { detail: "libnvidia-ml.so.1: cannot open shared object file".into() };
        let (placement, report) = decide(Err(&e), &book(), true).expect("fallback allowed");
        assert!(report.degraded);
        assert!(report.detail.starts_with("no NVIDIA driver (libnvidia-ml.so.1"), "{}", report.detail);
        assert!(report.detail.ends_with("; running on CPU"), "{}", report.detail);
        let plan = placement.plan(&ModelSpec::gemma3_270m(), &PlacementPolicy::default()).expect("cpu plan");
        assert_eq!(plan.cpu_layers, 18);
        assert!(plan.degraded.as_deref().is_some_and(|d| d.contains("no NVIDIA driver")));
    }

    #[test]
    fn no_driver_without_fallback_fails_the_stage() {
        let e = GpuError::NoDriver { detail: "x".into() };
        let err = decide(Err(&e), &book(), false).expect_err("refused");
        assert!(err.contains("gpu.allow_cpu_fallback is false"), "{err}");
    }

    #[test]
    fn healthy_h100_gives_a_gpu_placement_for_gemma() {
        let snap = recorded_h100();
        let mut b = book();
        b.observe(&snap);
        let (placement, report) = decide(Ok(&snap), &b, false).expect("gpu");
        assert!(!report.degraded, "{}", report.detail);
        assert_eq!(report.detail, "1 healthy GPU(s): GPU 0 NVIDIA H100 80GB HBM3 (79.5 GiB free)");
        let plan = placement.plan(&ModelSpec::gemma3_270m(), &GpuConfig::default().placement_policy()).expect("fits");
        assert_eq!((plan.gpus[0].layers, plan.cpu_layers), (18, 0));
    }

    #[test]
    fn failed_gpu_is_named_with_its_reason() {
        let mut snap = recorded_h100();
        snap.gpus[0].ecc.volatile_uncorrected = Field::Ok(1);
        let mut b = book();
        b.observe(&snap);
        let (placement, report) = decide(Ok(&snap), &b, true).expect("cpu");
        assert!(matches!(placement, Placement::Cpu { .. }));
        assert!(report.detail.contains("GPU 0 NVIDIA H100 80GB HBM3 is failed: 1 uncorrectable ECC"), "{}", report.detail);
    }

    #[test]
    fn one_failed_read_keeps_the_gpus_until_health_says_otherwise() {
        let snap = recorded_h100();
        let mut b = book();
        b.observe(&snap);
        let e = GpuError::Nvml { step: "reading", detail: "Unknown Error".into() };
        // First failure: still within hysteresis, the GPU keeps its layers, the stage says why.
        assert!(b.observe_unreadable("Unknown Error").is_empty());
        let (placement, report) = decide_after_read(Err(&e), Some(&snap), &b, false).expect("gpu");
        assert!(matches!(placement, Placement::Gpu { .. }));
        assert!(report.degraded);
        assert!(report.detail.starts_with("NVML read failed (NVML failed during reading (Unknown Error)"), "{}", report.detail);
        // After `degrade_after` failures the GPU is degraded and no longer used.
        b.observe_unreadable("Unknown Error");
        assert_eq!(b.observe_unreadable("Unknown Error").len(), 1);
        let (placement, report) = decide_after_read(Err(&e), Some(&snap), &b, true).expect("cpu");
        assert!(matches!(placement, Placement::Cpu { .. }), "{}", report.detail);
        assert!(report.detail.contains("is degraded: NVML could not read the GPUs"), "{}", report.detail);
        // Never a successful read: the plain no-NVML decision.
        let (placement, _) = decide_after_read(Err(&e), None, &book(), true).expect("cpu");
        assert!(matches!(placement, Placement::Cpu { .. }));
    }

    #[test]
    fn config_validation_names_the_key() {
        let c = GpuConfig { nvml_library: Some("lib/libnvidia-ml.so.1".into()), ..GpuConfig::default() };
        assert!(c.validate().expect_err("relative").to_string().contains("gpu.nvml_library"));
        let mut c = GpuConfig::default();
        c.health.degrade_after = 0;
        assert!(c.validate().expect_err("zero").to_string().contains("gpu.health"));
        let parsed: GpuConfig = toml::from_str("allow_cpu_fallback = false\n[health]\ndegrade_after = 4\n").expect("parse");
        assert_eq!(parsed.health.degrade_after, 4);
        assert_eq!(parsed.health.recover_after, 5);
        assert_eq!(parsed.reserve_mib, 1024);
        assert!(toml::from_str::<GpuConfig>("allow_cpu_fallback = true\nbogus = 1\n").is_err());
    }

    #[tokio::test]
    async fn recheck_runs_until_told_to_stop() {
        let p: Arc<dyn GpuProbe> = Arc::from(probe(&GpuConfig::default()));
        p.probe().expect("boot probe");
        let (tx, rx) = tokio::sync::watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(recheck(p.clone(), Duration::from_millis(20), rx, move |t| {
            s.lock().expect("lock").push(t.clone());
        }));
        tokio::time::sleep(Duration::from_millis(120)).await;
        tx.send(true).expect("send stop");
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("no panic");
        // Without a driver nothing changes; with one, a healthy idle GPU does not flap either.
        assert!(seen.lock().expect("lock").is_empty(), "{:?}", seen.lock().expect("lock"));
        assert!(p.report().is_some());
    }

    /// The real probe on this machine: without a driver it must report "no NVIDIA driver" as
    /// degraded, never succeed silently; with one it must find a GPU.
    #[test]
    fn real_probe_on_this_machine() {
        let p = probe(&GpuConfig::default());
        let (placement, report) = p.probe().expect("fallback is allowed by default");
        if std::path::Path::new("/proc/driver/nvidia/version").exists() {
            assert!(matches!(placement, Placement::Gpu { .. }), "{}", report.detail);
        } else {
            assert!(report.degraded);
            assert!(report.detail.starts_with("no NVIDIA driver"), "{}", report.detail);
            let r = p.report().expect("a report after probing");
            assert!(r.nvml_error.is_some());
        }
    }
}
