//! GPU stage: probe GPUs and decide where the engine runs.

use serde::{Deserialize, Serialize};

use crate::boot::StageReport;
use crate::config::ConfigError;

/// `[gpu]`: placement choices the clinic makes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// Whether the engine may run on CPU when no healthy GPU is left (always stated loudly).
    pub allow_cpu_fallback: bool,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self { allow_cpu_fallback: true }
    }
}

impl GpuConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Where the engine will run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Placement {
    Cpu { reason: String },
}

/// The GPU stage's interface.
pub trait GpuProbe: Send + Sync + std::fmt::Debug {
    fn probe(&self) -> Result<(Placement, StageReport), String>;
}

pub fn probe(config: &GpuConfig) -> Box<dyn GpuProbe> {
    Box::new(NoGpu { allow_cpu_fallback: config.allow_cpu_fallback })
}

/// No NVML support wired in: run on CPU if allowed, and say so.
#[derive(Debug)]
pub struct NoGpu {
    allow_cpu_fallback: bool,
}

impl GpuProbe for NoGpu {
    fn probe(&self) -> Result<(Placement, StageReport), String> {
        if !self.allow_cpu_fallback {
            return Err("no GPU monitor available and gpu.allow_cpu_fallback is false".into());
        }
        let reason = "no NVIDIA driver: the engine runs on CPU".to_string();
        Ok((Placement::Cpu { reason: reason.clone() }, StageReport::degraded(reason)))
    }
}
