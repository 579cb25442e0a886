//! `wardbox gpu status` as IT runs it: the real binary, the real NVML load.
//!
//! On this machine and on CI there is no NVIDIA driver, so these check the "no driver" report
//! and exit codes; on a machine with the driver (`/proc/driver/nvidia/version`) the same tests
//! require a real reading instead, so they never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

fn wardbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wardbox"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn have_driver() -> bool {
    Path::new("/proc/driver/nvidia/version").exists()
}

/// A dev-profile configuration with the given `[gpu]` section body.
fn config(dir: &Path, gpu: &str) -> PathBuf {
    let path = dir.join("wardbox.toml");
    let body = format!(
        "profile = \"dev\"\nstate_dir = \"{state}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{data}\"\n[gpu]\n{gpu}\n",
        state = dir.join("state").display(),
        data = dir.join("data").display(),
    );
    std::fs::write(&path, body).expect("write config");
    path
}

#[test]
fn status_reports_the_driver_state_and_places_gemma() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "allow_cpu_fallback = true");
    let out = wardbox().args(["gpu", "status", "-c"]).arg(&cfg).output().expect("run");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Placement of gemma-3-270m-q4_k_m (253113024 bytes, 18 layers):"), "{stdout}");
    if have_driver() {
        assert!(stdout.starts_with("NVML: driver "), "{stdout}");
        assert!(stdout.contains("\nGPU 0  "), "{stdout}");
        assert!(matches!(out.status.code(), Some(0 | 3)), "{stdout}");
    } else {
        assert_eq!(out.status.code(), Some(3), "degraded is a check that found a problem: {stdout}");
        assert!(stdout.starts_with("NVML: unavailable: no NVIDIA driver ("), "{stdout}");
        assert!(stdout.contains("18 layers on CPU"), "{stdout}");
        assert!(stdout.contains("running on CPU"), "{stdout}");
        assert!(stdout.ends_with("Overall: DEGRADED\n"), "{stdout}");
    }
}

#[test]
fn json_and_no_cpu_fallback_from_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "allow_cpu_fallback = false");
    let out = wardbox().args(["gpu", "status", "--json", "-c"]).arg(&cfg).output().expect("run");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    if have_driver() {
        assert!(json["system"]["driver_version"]["status"] == "ok", "{json}");
    } else {
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(json["placement"]["outcome"], "refused", "{json}");
        let error = json["placement"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("gpu.allow_cpu_fallback is false: no NVIDIA driver"), "{error}");
    }
}

#[test]
fn a_bad_gpu_section_is_refused_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "allow_cpu_fallback = true\n[gpu.health]\ndegrade_after = 0");
    let out = wardbox().args(["gpu", "status", "-c"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("gpu.health") && stderr.contains("degrade_after"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing is reported from a bad config");
}

#[test]
fn a_custom_model_size_is_placed() {
    let out = wardbox()
        .args(["gpu", "status", "--model-bytes", "4000000000", "--layers", "32", "-c", "/nonexistent/wardbox.toml"])
        .output()
        .expect("run");
    // An explicit config path that does not exist is an error, not a silent default.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "allow_cpu_fallback = true");
    let out = wardbox()
        .args(["gpu", "status", "--model-bytes", "4000000000", "--layers", "32", "-c"])
        .arg(&cfg)
        .output()
        .expect("run");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Placement of model (4000000000 bytes, 32 layers):"), "{stdout}");
}
