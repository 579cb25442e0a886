//! The release engineer's side of the qemu scenarios: the workstation tool (`wardbox-bundle`),
//! its keys and first root (the key ceremony of docs/update.md), signed bundles, and the USB
//! sticks that carry them to the box.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{Phases, run};

/// The release engineer's side: the workstation tool, its keys and the first root.
#[derive(Debug)]
pub struct Workstation {
    tool: PathBuf,
    keys: PathBuf,
    pub roots: PathBuf,
}

impl Workstation {
    pub fn tool(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(&self.tool).args(args))
    }

    pub fn key(&self, name: &str) -> String {
        self.keys.join(format!("{name}.pk8")).display().to_string()
    }

    /// The key ceremony of docs/update.md: three root keys (threshold 2), one key each for
    /// targets, snapshot and timestamp; root version 1 signed by two holders.
    pub fn ceremony(repo: &Path, work: &Path, phases: &mut Phases) -> Result<Workstation, String> {
        phases.start("workstation: build wardbox-bundle (release), keys, root 1");
        run(Command::new("cargo").current_dir(repo).args(["build", "--release", "-p", "wardbox-update", "--bin", "wardbox-bundle"]))?;
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
        let ws = Workstation { tool: target.join("release/wardbox-bundle"), keys: work.join("tuf-keys"), roots: work.join("tuf-roots") };
        std::fs::create_dir_all(&ws.keys).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&ws.roots).map_err(|e| e.to_string())?;
        for name in ["root-1", "root-2", "root-3", "targets", "snapshot", "timestamp"] {
            ws.tool(&["keygen", &ws.key(name)])?;
        }
        let public = |name: &str| format!("{}.pub.json", ws.key(name));
        let root = ws.roots.join("1.root.json").display().to_string();
        let expires = years_from_now(5);
        ws.tool(&[
            "root", "new", "--version", "1", "--expires", &expires,
            "--root-key", &public("root-1"), "--root-key", &public("root-2"), "--root-key", &public("root-3"),
            "--root-threshold", "2", "--targets-key", &public("targets"), "--snapshot-key", &public("snapshot"),
            "--timestamp-key", &public("timestamp"), "--out", &root,
        ])?;
        ws.tool(&["root", "sign", &root, "--key", &ws.key("root-1")])?;
        ws.tool(&["root", "sign", &root, "--key", &ws.key("root-2")])?;
        Ok(ws)
    }

    /// A signed models-only bundle in `<stick>/wardbox-models-<version>` from an Ollama models
    /// directory.
    pub fn models_bundle(&self, version: &str, from: &str, models: &Path, notes: &Path, stick: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(stick).map_err(|e| e.to_string())?;
        let out = stick.join(format!("wardbox-models-{version}"));
        let path = |p: &Path| p.display().to_string();
        self.tool(&[
            "build", "--roots", &path(&self.roots), "--targets-key", &self.key("targets"),
            "--snapshot-key", &self.key("snapshot"), "--timestamp-key", &self.key("timestamp"),
            "--kind", "models-only", "--version", version, "--min-starting-version", from, "--expires", &years_from_now(1),
            "--models", &path(models), "--release-notes", &path(notes), "--out", &path(&out),
        ])?;
        Ok(out)
    }

    /// A signed full bundle in `<stick>/wardbox-<version>`.
    #[allow(clippy::too_many_arguments)]
    pub fn full_bundle(&self, version: &str, from: &str, image: &Path, uki_a: &Path, uki_b: &Path, notes: &Path, stick: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(stick).map_err(|e| e.to_string())?;
        let out = stick.join(format!("wardbox-{version}"));
        let path = |p: &Path| p.display().to_string();
        self.tool(&[
            "build", "--roots", &path(&self.roots), "--targets-key", &self.key("targets"),
            "--snapshot-key", &self.key("snapshot"), "--timestamp-key", &self.key("timestamp"),
            "--kind", "full", "--version", version, "--min-starting-version", from, "--expires", &years_from_now(1),
            "--system-image", &path(image), "--uki-a", &path(uki_a), "--uki-b", &path(uki_b),
            "--release-notes", &path(notes), "--out", &path(&out),
        ])?;
        Ok(out)
    }
}

/// The models a clinic's box answers with by default (`[clinical] chat_model` and
/// `embed_model`): the models-only bundle brings them to a box that has none.
pub const BUNDLED_MODELS: [&str; 2] = ["smollm2:135m", "all-minilm:l6-v2"];

/// An Ollama models directory holding only `models` (their manifests and the blobs they name),
/// as on a connected workstation where `ollama pull` fetched them: taken from the test model
/// store (`models-bundle/fetch-test-model.sh`; `WARDBOX_MODEL_STORE`, or `store/` under
/// `WARDBOX_MODEL_CACHE`, default `~/.cache/wardbox/models`).
pub fn models_dir(models: &[&str], out: &Path) -> Result<(), String> {
    let store = std::env::var_os("WARDBOX_MODEL_STORE").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("WARDBOX_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wardbox/models"));
        cache.join("store")
    });
    for model in models {
        let (name, tag) = model.split_once(':').ok_or_else(|| format!("model {model} has no tag"))?;
        let rel = Path::new("manifests/registry.ollama.ai/library").join(name).join(tag);
        let manifest = store.join(&rel);
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| format!("MISSING TEST MODEL: {model} is not in {} ({e}); run models-bundle/fetch-test-model.sh", store.display()))?;
        let dest = out.join(&rel);
        std::fs::create_dir_all(dest.parent().ok_or("no parent")?).map_err(|e| e.to_string())?;
        std::fs::write(&dest, &text).map_err(|e| e.to_string())?;
        let json: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
        let layers = json["layers"].as_array().cloned().unwrap_or_default();
        for digest in layers.iter().chain(std::iter::once(&json["config"])).filter_map(|l| l["digest"].as_str()) {
            let blob = format!("blobs/{}", digest.replace(':', "-"));
            std::fs::create_dir_all(out.join("blobs")).map_err(|e| e.to_string())?;
            if !out.join(&blob).exists() {
                std::fs::copy(store.join(&blob), out.join(&blob)).map_err(|e| format!("{}: {e}", store.join(&blob).display()))?;
            }
        }
    }
    Ok(())
}

/// `YYYY-12-31`, `years` after this year.
pub fn years_from_now(years: u64) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{}-12-31", 1970 + secs / 31_556_952 + years)
}

/// A USB stick's image for the guest: ext4 labelled WBBUNDLE holding the bundle directory.
pub fn bundle_disk(stick_dir: &Path, out: &Path) -> Result<(), String> {
    let used = run(Command::new("du").args(["-sm", "--apparent-size"]).arg(stick_dir))?;
    let mib: u64 = used.split_whitespace().next().and_then(|n| n.parse().ok()).ok_or("du gave no size")?;
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "WBBUNDLE", "-m", "0", "-d"]).arg(stick_dir).arg(out).arg(format!("{}M", mib * 5 / 4 + 64)))?;
    Ok(())
}

/// The `version:` line of the image's information (image/build.sh).
pub fn image_version(image: &Path) -> Result<String, String> {
    let info = std::fs::read_to_string(image.join("image-info.txt")).map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| "image-info.txt has no `version:` line (an image built before versions were recorded)".into())
}

