//! A manifest from an untrusted store (a carried bundle): parsing it, listing and resolving the
//! model must give a value or an error, never panic, and never touch a path outside the store.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wardbox_models_bundle::{Manifest, ModelName, Store};

/// One store for the whole run, with a blob any manifest may name (the empty blob).
fn store() -> &'static (tempfile::TempDir, PathBuf) {
    static STORE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).expect("blobs dir");
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        std::fs::write(blobs.join(format!("sha256-{empty}")), b"").expect("empty blob");
        let manifest = dir.path().join("manifests/registry.ollama.ai/library/fuzz/latest");
        std::fs::create_dir_all(manifest.parent().expect("parent")).expect("manifest dir");
        (dir, manifest)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        // The store reads manifests with the same parse: nothing more to reach.
        return;
    };
    let _ = m.total_size();
    let _ = m.layers_of(wardbox_models_bundle::media::MODEL).count();
    // What the store writes back must read back the same.
    let again: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).expect("serialises")).expect("round trip");
    assert_eq!(again, m);
    let (dir, manifest) = store();
    std::fs::write(manifest, data).expect("write manifest");
    let store = Store::new(dir.path());
    let name: ModelName = "fuzz:latest".parse().expect("name");
    let _ = store.entry(&name);
    let _ = store.resolve(&name);
    if let Ok(list) = store.list() {
        for e in list {
            let _ = e.manifest.total_size();
        }
    }
});
