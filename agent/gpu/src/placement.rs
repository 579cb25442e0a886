//! Placement: how many of the model's layers the engine offloads to which GPU, and what runs on
//! the CPU. Pure; re-run it whenever a GPU changes state, and restart the engine when the plan
//! changes ([`needs_restart`]).
//!
//! The estimate is deliberately simple and errs large: each repeating layer is taken to weigh
//! `file_bytes / layers` (the embedding and output tensors are spread over the layers, so no
//! layer is under-counted), plus the caller's KV-cache bytes per layer, and each GPU keeps
//! [`PlacementPolicy::reserve_bytes`] free for the CUDA context and compute buffers.
//!
//! Only healthy GPUs take layers. A degraded or failed GPU, or any layer left on the CPU, makes
//! the plan degraded with a reason ([`Plan::degraded`]): the box says so on every page and in
//! the audit log. With `allow_cpu_fallback = false` a plan that would put any layer on the CPU
//! is refused instead.

use serde::{Deserialize, Serialize};

use crate::health::{HealthBook, HealthState};
use crate::reading::{Field, Snapshot};

const MIB: u64 = 1024 * 1024;

/// The model to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    /// Size of the GGUF file.
    pub file_bytes: u64,
    /// Repeating (transformer block) layers: GGUF `<arch>.block_count`.
    pub layers: u32,
    /// KV cache per layer at the configured context length (0 when the caller does not know;
    /// the reserve then has to cover it).
    pub kv_bytes_per_layer: u64,
}

impl ModelSpec {
    /// Gemma 3 270M, Q4_K_M: the bundled test model (253,113,024 bytes, 18 blocks).
    pub fn gemma3_270m() -> Self {
        Self {
            name: "gemma-3-270m-q4_k_m".into(),
            file_bytes: 253_113_024,
            layers: 18,
            kv_bytes_per_layer: 0,
        }
    }

    /// Estimated bytes one layer needs on a GPU.
    pub fn bytes_per_layer(&self) -> u64 {
        self.file_bytes.div_ceil(u64::from(self.layers.max(1))) + self.kv_bytes_per_layer
    }
}

/// What the clinic allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementPolicy {
    /// Whether layers may run on the CPU when the healthy GPUs cannot hold them all.
    pub allow_cpu_fallback: bool,
    /// Memory left free on each GPU for the CUDA context, cuBLAS workspace and compute buffers.
    /// 1 GiB covers llama.cpp's CUDA context and buffers for models up to ~8B at 8k context.
    pub reserve_bytes: u64,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        Self {
            allow_cpu_fallback: true,
            reserve_bytes: 1024 * MIB,
        }
    }
}

/// One GPU as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuCandidate {
    pub gpu: String,
    pub index: u32,
    pub name: String,
    pub state: HealthState,
    /// `None` when NVML could not read the memory.
    pub free_bytes: Option<u64>,
}

/// Pair a snapshot with health: the input to [`plan`].
pub fn candidates(snapshot: &Snapshot, health: &HealthBook) -> Vec<GpuCandidate> {
    snapshot
        .gpus
        .iter()
        .map(|r| {
            let gpu = r.key();
            GpuCandidate {
                state: health.state(&gpu),
                gpu,
                index: r.index,
                name: r.name.ok().cloned().unwrap_or_else(|| "unknown GPU".into()),
                free_bytes: match &r.memory {
                    Field::Ok(m) => Some(m.free_bytes),
                    Field::NotSupported | Field::Error(_) => None,
                },
            }
        })
        .collect()
}

/// Layers given to one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLayers {
    pub gpu: String,
    /// NVML index, for `CUDA_VISIBLE_DEVICES` / llama.cpp `main_gpu`.
    pub index: u32,
    pub layers: u32,
    /// Estimated bytes those layers take.
    pub bytes: u64,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub model: String,
    pub total_layers: u32,
    pub bytes_per_layer: u64,
    /// GPUs that take layers, most layers first.
    pub gpus: Vec<GpuLayers>,
    pub cpu_layers: u32,
    /// GPUs left out, each with why.
    pub skipped: Vec<String>,
    /// Why this box is not at full strength; `None` only when every GPU is healthy and every
    /// layer is on a GPU. Never silent: the UI and the audit log show this.
    pub degraded: Option<String>,
}

impl Plan {
    /// llama.cpp's `n_gpu_layers` for this plan. llama.cpp counts the output layer as one
    /// more: when every block is on GPU, offload it too.
    pub fn n_gpu_layers(&self) -> u32 {
        let on_gpu: u32 = self.gpus.iter().map(|g| g.layers).sum();
        if on_gpu == self.total_layers && on_gpu > 0 {
            on_gpu + 1
        } else {
            on_gpu
        }
    }

    /// llama.cpp `tensor_split`: the share of layers per GPU, by NVML index order of
    /// `gpus` (pair with `CUDA_VISIBLE_DEVICES` set to [`Plan::cuda_visible_devices`]).
    pub fn tensor_split(&self) -> Vec<f32> {
        let total: u32 = self.gpus.iter().map(|g| g.layers).sum();
        if total == 0 {
            return Vec::new();
        }
        self.gpus
            .iter()
            .map(|g| g.layers as f32 / total as f32)
            .collect()
    }

    /// `CUDA_VISIBLE_DEVICES` for the engine: only the GPUs that take layers, so the engine
    /// cannot touch a failed one. Empty for a CPU-only plan (hide every GPU).
    pub fn cuda_visible_devices(&self) -> String {
        self.gpus
            .iter()
            .map(|g| g.index.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn is_cpu_only(&self) -> bool {
        self.gpus.is_empty()
    }

    /// One line for logs and tables.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .gpus
            .iter()
            .map(|g| format!("{} layers on GPU {} ({})", g.layers, g.index, g.gpu))
            .collect();
        if self.cpu_layers > 0 {
            parts.push(format!("{} layers on CPU", self.cpu_layers));
        }
        format!("{}: {}", self.model, parts.join(", "))
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("model {model}: size and layer count must both be above zero")]
    EmptyModel { model: String },
    #[error(
        "no healthy GPU for model {model} and gpu.allow_cpu_fallback is false: {why}. Fix the \
         GPU (see `wardbox gpu status`) or set gpu.allow_cpu_fallback = true to run slowly on CPU"
    )]
    NoHealthyGpu { model: String, why: String },
    #[error(
        "model {model} needs {layers} layers of {per_layer_mib} MiB but the healthy GPUs hold \
         only {fit} and gpu.allow_cpu_fallback is false: free GPU memory, use a smaller model, \
         or allow CPU fallback"
    )]
    DoesNotFit {
        model: String,
        layers: u32,
        fit: u32,
        per_layer_mib: u64,
    },
}

/// Decide where the model runs.
pub fn plan(
    model: &ModelSpec,
    gpus: &[GpuCandidate],
    policy: &PlacementPolicy,
) -> Result<Plan, PlacementError> {
    if model.file_bytes == 0 || model.layers == 0 {
        return Err(PlacementError::EmptyModel {
            model: model.name.clone(),
        });
    }
    let per_layer = model.bytes_per_layer();
    let mut skipped = Vec::new();
    // (capacity in layers, candidate), healthy GPUs only.
    let mut usable: Vec<(u32, &GpuCandidate)> = Vec::new();
    for g in gpus {
        let label = format!("GPU {} {} ({})", g.index, g.name, g.gpu);
        if g.state != HealthState::Healthy {
            skipped.push(format!("{label} is {}", g.state));
            continue;
        }
        let Some(free) = g.free_bytes else {
            skipped.push(format!("{label}: free memory unreadable"));
            continue;
        };
        let room = free.saturating_sub(policy.reserve_bytes);
        let fit = u32::try_from(room / per_layer).unwrap_or(u32::MAX);
        if fit == 0 {
            skipped.push(format!(
                "{label}: {} MiB free, under the {} MiB reserve plus one {} MiB layer",
                free / MIB,
                policy.reserve_bytes / MIB,
                per_layer.div_ceil(MIB)
            ));
            continue;
        }
        usable.push((fit, g));
    }
    // Most room first; among equals, the lower index, so plans are stable.
    usable.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.index.cmp(&b.1.index)));

    let mut remaining = model.layers;
    let mut assigned = Vec::new();
    // One GPU when one is enough (no cross-GPU traffic); otherwise fill the roomiest first so
    // the fewest GPUs are used.
    for (fit, g) in &usable {
        if remaining == 0 {
            break;
        }
        let take = (*fit).min(remaining);
        remaining -= take;
        assigned.push(GpuLayers {
            gpu: g.gpu.clone(),
            index: g.index,
            layers: take,
            bytes: u64::from(take) * per_layer,
        });
    }
    let fit_total = model.layers - remaining;

    if assigned.is_empty() && !policy.allow_cpu_fallback {
        let why = if skipped.is_empty() {
            "NVML lists no GPU".to_string()
        } else {
            skipped.join("; ")
        };
        return Err(PlacementError::NoHealthyGpu {
            model: model.name.clone(),
            why,
        });
    }
    if remaining > 0 && !policy.allow_cpu_fallback {
        return Err(PlacementError::DoesNotFit {
            model: model.name.clone(),
            layers: model.layers,
            fit: fit_total,
            per_layer_mib: per_layer.div_ceil(MIB),
        });
    }

    let mut why = Vec::new();
    if assigned.is_empty() {
        why.push(if gpus.is_empty() {
            "no GPU: the engine runs on CPU".to_string()
        } else {
            "no healthy GPU: the engine runs on CPU".to_string()
        });
    } else if remaining > 0 {
        why.push(format!(
            "{remaining} of {} layers run on CPU (GPU memory is short)",
            model.layers
        ));
    }
    why.extend(skipped.iter().cloned());
    Ok(Plan {
        model: model.name.clone(),
        total_layers: model.layers,
        bytes_per_layer: per_layer,
        gpus: assigned,
        cpu_layers: remaining,
        skipped,
        degraded: if why.is_empty() {
            None
        } else {
            Some(why.join("; "))
        },
    })
}

/// Decide when NVML itself is unavailable (no driver): CPU when allowed, with `why` as the
/// stated reason, else refused with it.
pub fn plan_without_nvml(
    model: &ModelSpec,
    policy: &PlacementPolicy,
    why: &str,
) -> Result<Plan, PlacementError> {
    match plan(model, &[], policy) {
        Ok(mut p) => {
            p.degraded = Some(format!("{why}; running on CPU"));
            Ok(p)
        }
        Err(PlacementError::NoHealthyGpu { model, .. }) => Err(PlacementError::NoHealthyGpu {
            model,
            why: why.to_string(),
        }),
        Err(e) => Err(e),
    }
}

/// Whether the engine must restart to follow `new`: the layers moved. A change only in the
/// wording of reasons does not restart it.
pub fn needs_restart(old: &Plan, new: &Plan) -> bool {
    old.gpus != new.gpus || old.cpu_layers != new.cpu_layers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthPolicy;
    use crate::reading::recorded_h100;

    const GIB: u64 = 1024 * MIB;

    fn gpu(index: u32, state: HealthState, free_gib: u64) -> GpuCandidate {
        GpuCandidate {
            gpu: format!("GPU-{index}"),
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            state,
            free_bytes: Some(free_gib * GIB),
        }
    }

    fn strict() -> PlacementPolicy {
        PlacementPolicy {
            allow_cpu_fallback: false,
            ..PlacementPolicy::default()
        }
    }

    #[test]
    fn gemma3_270m_goes_whole_onto_one_h100() {
        let snap = recorded_h100();
        let mut book = HealthBook::new(HealthPolicy::default()).expect("policy");
        book.observe(&snap);
        let c = candidates(&snap, &book);
        assert_eq!(c[0].state, HealthState::Healthy);
        let p = plan(&ModelSpec::gemma3_270m(), &c, &strict()).expect("fits");
        assert_eq!(p.bytes_per_layer, 14_061_835); // ceil(253,113,024 / 18)
        assert_eq!(p.gpus.len(), 1);
        assert_eq!(p.gpus[0].layers, 18);
        assert_eq!(p.gpus[0].index, 0);
        assert_eq!(p.cpu_layers, 0);
        assert_eq!(p.degraded, None);
        assert_eq!(p.n_gpu_layers(), 19, "all blocks plus the output layer");
        assert_eq!(p.cuda_visible_devices(), "0");
        assert_eq!(p.tensor_split(), vec![1.0]);
    }

    #[test]
    fn no_gpu_with_fallback_runs_on_cpu_and_says_so() {
        let p = plan(&ModelSpec::gemma3_270m(), &[], &PlacementPolicy::default()).expect("cpu");
        assert!(p.is_cpu_only());
        assert_eq!(p.cpu_layers, 18);
        assert_eq!(p.n_gpu_layers(), 0);
        assert_eq!(
            p.degraded.as_deref(),
            Some("no GPU: the engine runs on CPU")
        );
    }

    #[test]
    fn no_healthy_gpu_without_fallback_is_refused_with_the_reason() {
        let err = plan(
            &ModelSpec::gemma3_270m(),
            &[gpu(0, HealthState::Failed, 79)],
            &strict(),
        )
        .expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("GPU 0 NVIDIA H100 80GB HBM3 (GPU-0) is failed"),
            "{msg}"
        );
        assert!(msg.contains("gpu.allow_cpu_fallback is false"), "{msg}");
        let err = plan(&ModelSpec::gemma3_270m(), &[], &strict()).expect_err("refused");
        assert!(err.to_string().contains("NVML lists no GPU"), "{err}");
    }

    #[test]
    fn replan_moves_layers_off_a_degraded_gpu() {
        let model = ModelSpec {
            name: "m".into(),
            file_bytes: 40 * GIB,
            layers: 40,
            kv_bytes_per_layer: 0,
        };
        let before = plan(
            &model,
            &[
                gpu(0, HealthState::Healthy, 79),
                gpu(1, HealthState::Healthy, 79),
            ],
            &strict(),
        )
        .expect("fits");
        assert_eq!(
            before
                .gpus
                .iter()
                .map(|g| (g.index, g.layers))
                .collect::<Vec<_>>(),
            vec![(0, 40)]
        );
        let after = plan(
            &model,
            &[
                gpu(0, HealthState::Degraded, 79),
                gpu(1, HealthState::Healthy, 79),
            ],
            &strict(),
        )
        .expect("GPU 1 holds it");
        assert_eq!(
            after
                .gpus
                .iter()
                .map(|g| (g.index, g.layers))
                .collect::<Vec<_>>(),
            vec![(1, 40)]
        );
        assert!(needs_restart(&before, &after));
        assert!(
            after
                .degraded
                .as_deref()
                .is_some_and(|d| d.contains("GPU 0") && d.contains("degraded"))
        );
        assert_eq!(after.cuda_visible_devices(), "1");
    }

    #[test]
    fn a_model_larger_than_one_gpu_is_split_roomiest_first() {
        // 100 layers of 1 GiB; GPU 1 has more room than GPU 0.
        let model = ModelSpec {
            name: "big".into(),
            file_bytes: 100 * GIB,
            layers: 100,
            kv_bytes_per_layer: 0,
        };
        let p = plan(
            &model,
            &[
                gpu(0, HealthState::Healthy, 40),
                gpu(1, HealthState::Healthy, 71),
            ],
            &strict(),
        )
        .expect("fits across two");
        assert_eq!(
            p.gpus
                .iter()
                .map(|g| (g.index, g.layers))
                .collect::<Vec<_>>(),
            vec![(1, 70), (0, 30)]
        );
        assert_eq!(p.degraded, None);
        assert_eq!(p.tensor_split(), vec![0.7, 0.3]);
    }

    #[test]
    fn partial_fit_spills_to_cpu_only_when_allowed() {
        let model = ModelSpec {
            name: "big".into(),
            file_bytes: 100 * GIB,
            layers: 100,
            kv_bytes_per_layer: 0,
        };
        let gpus = [gpu(0, HealthState::Healthy, 41)];
        let err = plan(&model, &gpus, &strict()).expect_err("does not fit");
        assert_eq!(
            err,
            PlacementError::DoesNotFit {
                model: "big".into(),
                layers: 100,
                fit: 40,
                per_layer_mib: 1024
            }
        );
        let p = plan(&model, &gpus, &PlacementPolicy::default()).expect("spills");
        assert_eq!((p.gpus[0].layers, p.cpu_layers), (40, 60));
        assert_eq!(
            p.n_gpu_layers(),
            40,
            "output layer stays on CPU with the rest"
        );
        assert!(
            p.degraded
                .as_deref()
                .is_some_and(|d| d.starts_with("60 of 100 layers run on CPU"))
        );
    }

    #[test]
    fn kv_cache_and_reserve_are_counted() {
        let model = ModelSpec {
            name: "m".into(),
            file_bytes: 10 * GIB,
            layers: 10,
            kv_bytes_per_layer: GIB,
        };
        // 2 GiB per layer; 11 GiB free minus 1 GiB reserve holds 5 layers.
        let p = plan(
            &model,
            &[gpu(0, HealthState::Healthy, 11)],
            &PlacementPolicy::default(),
        )
        .expect("spills");
        assert_eq!((p.gpus[0].layers, p.cpu_layers), (5, 5));
        // Under the reserve: the GPU is skipped with the numbers.
        let p = plan(
            &model,
            &[gpu(0, HealthState::Healthy, 1)],
            &PlacementPolicy::default(),
        )
        .expect("cpu");
        assert!(
            p.skipped[0]
                .contains("1024 MiB free, under the 1024 MiB reserve plus one 2048 MiB layer"),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn unreadable_memory_skips_the_gpu() {
        let mut g = gpu(0, HealthState::Healthy, 79);
        g.free_bytes = None;
        let p = plan(&ModelSpec::gemma3_270m(), &[g], &PlacementPolicy::default()).expect("cpu");
        assert!(p.is_cpu_only());
        assert!(
            p.degraded
                .as_deref()
                .is_some_and(|d| d.contains("free memory unreadable"))
        );
    }

    #[test]
    fn unchanged_layout_needs_no_restart() {
        let gpus = [gpu(0, HealthState::Healthy, 79)];
        let a = plan(&ModelSpec::gemma3_270m(), &gpus, &strict()).expect("fits");
        let mut b = a.clone();
        b.degraded = Some("other wording".into());
        assert!(!needs_restart(&a, &b));
    }

    #[test]
    fn no_nvml_states_the_reason() {
        let why = "no NVIDIA driver (libnvidia-ml.so.1: cannot open)";
        let p = plan_without_nvml(&ModelSpec::gemma3_270m(), &PlacementPolicy::default(), why)
            .expect("cpu allowed");
        assert_eq!(p.cpu_layers, 18);
        assert_eq!(
            p.degraded.as_deref(),
            Some("no NVIDIA driver (libnvidia-ml.so.1: cannot open); running on CPU")
        );
        let e = plan_without_nvml(&ModelSpec::gemma3_270m(), &strict(), why).expect_err("refused");
        assert!(
            e.to_string()
                .contains("allow_cpu_fallback is false: no NVIDIA driver (libnvidia-ml.so.1"),
            "{e}"
        );
    }

    #[test]
    fn empty_model_is_rejected() {
        let m = ModelSpec {
            layers: 0,
            ..ModelSpec::gemma3_270m()
        };
        assert!(matches!(
            plan(&m, &[], &PlacementPolicy::default()),
            Err(PlacementError::EmptyModel { .. })
        ));
    }
}
