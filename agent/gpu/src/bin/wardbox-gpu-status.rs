//! `wardbox-gpu-status`: the GPU diagnostic, a small binary that needs nothing but glibc and
//! the NVIDIA driver (the full `wardbox` binary also links OpenSSL for SQLCipher). It prints
//! what `wardbox gpu status` prints: the monitor's full reading of every GPU, each GPU's
//! health, and the placement decision for a model (Gemma 3 270M unless told otherwise).
//!
//! ```text
//! wardbox-gpu-status [--json] [--no-cpu-fallback] [--model-bytes N --layers N]
//!                    [--readings N] [--interval-ms MS] [--nvml-library PATH]
//! ```
//!
//! With `--readings N` it keeps one monitor and one health book over N readings, printing each
//! health transition on stderr as it happens, then the report of the last reading.
//!
//! Exit status: 0 healthy, 1 degraded (including "no NVIDIA driver"), 2 placement refused,
//! 64 bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wardbox_gpu::health::{HealthBook, HealthPolicy};
use wardbox_gpu::placement::{ModelSpec, PlacementPolicy};
use wardbox_gpu::{PlacementOutcome, watch};

#[derive(Debug)]
struct Args {
    json: bool,
    model: ModelSpec,
    policy: PlacementPolicy,
    readings: u32,
    interval: Duration,
    library: Option<PathBuf>,
}

const USAGE: &str = "usage: wardbox-gpu-status [--json] [--no-cpu-fallback] \
                     [--model-bytes N --layers N] [--readings N] [--interval-ms MS] \
                     [--nvml-library PATH]";

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        model: ModelSpec::gemma3_270m(),
        policy: PlacementPolicy::default(),
        readings: 1,
        interval: Duration::from_millis(1000),
        library: None,
    };
    let mut it = std::env::args().skip(1);
    let num = |flag: &str, v: Option<String>| -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: '{v}' is not a whole number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => a.json = true,
            "--no-cpu-fallback" => a.policy.allow_cpu_fallback = false,
            "--model-bytes" => {
                a.model.file_bytes = num(&arg, it.next())?;
                a.model.name = "model".into();
            }
            "--layers" => {
                a.model.layers = u32::try_from(num(&arg, it.next())?)
                    .map_err(|_| "--layers is too large".to_string())?;
                a.model.name = "model".into();
            }
            "--readings" => {
                a.readings = u32::try_from(num(&arg, it.next())?)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("--readings must be 1 or more")?;
            }
            "--interval-ms" => a.interval = Duration::from_millis(num(&arg, it.next())?),
            "--nvml-library" => {
                a.library = Some(it.next().ok_or("--nvml-library needs a path")?.into())
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let book = match HealthBook::new(HealthPolicy::default()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let report = watch(
        args.library.as_deref(),
        book,
        args.readings,
        args.interval,
        Some(&args.model),
        &args.policy,
        |i, t| eprintln!("reading {i}: {t}"),
    );
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("cannot encode the report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.render_table());
    }
    match (&report.placement, report.is_degraded()) {
        (Some(PlacementOutcome::Refused { .. }), _) => ExitCode::from(2),
        (_, true) => ExitCode::from(1),
        (_, false) => ExitCode::SUCCESS,
    }
}
