//! Speed of the GPU code paths, printed as a table.
//!
//! The pure paths (health step, placement, metrics rendering) are timed on the recorded H100
//! reading copied to 8 GPUs; the NVML read is timed only where a driver is present (it is the
//! one that matters on a box: the agent reads every few seconds).
//!
//! Run: `cargo run --release -p wardbox-gpu --bin wardbox-gpu-bench`

use std::hint::black_box;
use std::time::{Duration, Instant};

use wardbox_gpu::health::{HealthBook, HealthPolicy};
use wardbox_gpu::metrics::{Exposition, gpu_metrics};
use wardbox_gpu::placement::{self, ModelSpec, PlacementPolicy};
use wardbox_gpu::reading::{Field, recorded_h100};
use wardbox_gpu::{NvmlMonitor, StatusReport};

fn time<T>(iters: u32, mut f: impl FnMut() -> T) -> Duration {
    // One warm-up call so first-touch allocation is not counted.
    black_box(f());
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    start.elapsed() / iters
}

fn row(what: &str, per: Duration, note: &str) {
    println!("| {what:<44} | {:>12.3} | {note}", per.as_secs_f64() * 1e6);
}

fn main() {
    let mut snap = recorded_h100();
    let one = snap.gpus[0].clone();
    snap.gpus = (0..8u32)
        .map(|i| {
            let mut g = one.clone();
            g.index = i;
            g.uuid = Field::Ok(format!("GPU-{i:08}"));
            g
        })
        .collect();
    let model = ModelSpec::gemma3_270m();
    let policy = PlacementPolicy::default();

    println!("| path                                         | µs per call  | note");
    println!("|----------------------------------------------|--------------|-----");
    let mut book = HealthBook::new(HealthPolicy::default()).expect("default policy");
    let per = time(20_000, || book.observe(&snap));
    row("health: observe snapshot of 8 GPUs", per, "pure");
    let cands = placement::candidates(&snap, &book);
    let per = time(100_000, || placement::plan(&model, &cands, &policy));
    row("placement: plan Gemma 3 270M over 8 GPUs", per, "pure");
    let report = StatusReport::build(Ok(&snap), &book, Some(&model), &policy, Vec::new());
    let mut bytes = 0;
    let per = time(5_000, || {
        let mut e = Exposition::new();
        gpu_metrics(&mut e, &report);
        let text = e.render();
        bytes = text.len();
        text
    });
    row(
        "metrics: render exposition for 8 GPUs",
        per,
        &format!("{bytes} bytes"),
    );
    let per = time(5_000, || report.render_table());
    row("status: render table for 8 GPUs", per, "pure");
    let per = time(5_000, || {
        serde_json::to_string(&report).map(|s| s.len()).unwrap_or(0)
    });
    row("status: JSON for 8 GPUs", per, "pure");

    let t = Instant::now();
    match NvmlMonitor::init() {
        Ok(m) => {
            row("nvml: init + register events", t.elapsed(), "real driver");
            let n = m.read().map(|s| s.gpus.len()).unwrap_or(0);
            let per = time(20, || m.read());
            row(
                "nvml: full read of every GPU",
                per,
                &format!("{n} GPU(s), real driver"),
            );
        }
        Err(e) => {
            row("nvml: init (fails: no driver)", t.elapsed(), &e.to_string());
        }
    }
}
