//! `wardbox gpu …`: what NVML says about every GPU, each GPU's health, and where a model would
//! be placed. Reads the GPUs directly (it does not need the agent to be running).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use wardbox_gpu::health::HealthBook;
use wardbox_gpu::placement::ModelSpec;

use super::{CliError, CliResult, DEFAULT_CONFIG, load_config};
use crate::stages::gpu::GpuConfig;

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Read every GPU through NVML and show its health and the model's placement.
    ///
    /// Exit status: 0 all healthy, 3 degraded (no driver, a GPU not healthy, layers on CPU) or
    /// placement refused, 1 on an error.
    Status {
        /// Configuration whose `[gpu]` section applies (CPU fallback, reserve, thresholds).
        /// Without it, /etc/wardbox/wardbox.toml when present, else the built-in defaults.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Size of the model file to place, in bytes (default: the bundled Gemma 3 270M).
        #[arg(long, requires = "layers")]
        model_bytes: Option<u64>,
        /// Repeating layers of the model to place (GGUF `<arch>.block_count`).
        #[arg(long, requires = "model_bytes")]
        layers: Option<u32>,
        /// Take this many readings, showing health changes as they happen.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        readings: u32,
        /// Milliseconds between readings.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
}

pub fn run(cmd: GpuCommand) -> CliResult {
    match cmd {
        GpuCommand::Status { config, json, model_bytes, layers, readings, interval_ms } => {
            let gpu = gpu_config(config.as_deref())?;
            let model = match (model_bytes, layers) {
                (Some(file_bytes), Some(layers)) => {
                    ModelSpec { name: "model".into(), file_bytes, layers, kv_bytes_per_layer: 0 }
                }
                _ => ModelSpec::gemma3_270m(),
            };
            let book = HealthBook::new(gpu.health.clone()).map_err(|e| CliError::new(e.to_string()))?;
            let report = wardbox_gpu::watch(
                gpu.nvml_library.as_deref(),
                book,
                readings,
                Duration::from_millis(interval_ms),
                Some(&model),
                &gpu.placement_policy(),
                |i, t| eprintln!("reading {i}: {t}"),
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_table());
            }
            Ok(if report.is_degraded() { ExitCode::from(3) } else { ExitCode::SUCCESS })
        }
    }
}

fn gpu_config(explicit: Option<&Path>) -> Result<GpuConfig, CliError> {
    match explicit {
        Some(path) => Ok(load_config(path)?.gpu),
        None if Path::new(DEFAULT_CONFIG).exists() => Ok(load_config(Path::new(DEFAULT_CONFIG))?.gpu),
        None => {
            eprintln!("wardbox: no {DEFAULT_CONFIG}; using the built-in [gpu] defaults");
            Ok(GpuConfig::default())
        }
    }
}
