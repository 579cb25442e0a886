//! Shared set-up for the `model_` tier: the real `wardbox-engine` binary and the test model
//! store. Missing either fails the test naming what to run; it never passes silently.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use wardbox::stages::engine::{EngineConfig, SupervisedEngine};

pub const GEMMA: &str = "gemma3:270m";
pub const MINILM: &str = "all-minilm:l6-v2";
pub const SMOLLM2: &str = "smollm2:135m";

pub fn engine_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WARDBOX_ENGINE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    for candidate in [target.join("debug/wardbox-engine"), target.join("release/wardbox-engine"), root.join("target-engine/debug/wardbox-engine")] {
        if candidate.exists() {
            return candidate.canonicalize().unwrap();
        }
    }
    panic!(
        "MISSING ENGINE BINARY: build it with `cargo build -p wardbox-engine` (looked in {}), or set WARDBOX_ENGINE_BIN",
        target.display()
    );
}

/// The model store, checked to hold `models` (e.g. "gemma3:270m").
pub fn store_dir(models: &[&str]) -> PathBuf {
    let dir = std::env::var("WARDBOX_MODEL_STORE").map(PathBuf::from).unwrap_or_else(|_| {
        let cache = std::env::var("WARDBOX_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/wardbox/models"));
        cache.join("store")
    });
    for model in models {
        if !dir.join("manifests/registry.ollama.ai/library").join(model.replace(':', "/")).exists() {
            panic!("MISSING TEST MODEL: {model} is not in {}; run models-bundle/fetch-test-model.sh", dir.display());
        }
    }
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The engine supervised by the agent on a free loopback port, preloading `models`.
pub fn engine_config(models: &[&str], threads: u32) -> EngineConfig {
    EngineConfig {
        endpoint: Some(format!("http://127.0.0.1:{}", free_port())),
        supervise: Some(SupervisedEngine {
            binary: engine_binary(),
            store: store_dir(models),
            socket: None,
            preload: models.iter().map(|m| m.to_string()).collect(),
            slots: 2,
            ctx_per_slot: 2048,
            threads: Some(threads),
            gpu_layers: 0,
        }),
        ready_timeout_secs: 120,
        probe_interval_secs: 1,
    }
}
