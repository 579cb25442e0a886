//! The workstation side: keys, root metadata (with rotation) and bundles. Runs on an offline
//! signing workstation, never on the box. See `docs/update.md`, "Key ceremony".

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::num::NonZeroU64;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use jiff::Timestamp;
use serde::Serialize;
use tough::editor::RepositoryEditor;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::key::Key;
use tough::schema::{RoleKeys, RoleType, Root, Signature, Signed};
use tough::sign::{Sign, parse_keypair};

use crate::manifest::{BundleManifest, ContentEntry, ContentRole, MANIFEST_TARGET, validate};
use crate::verify::{METADATA_DIR, TARGETS_DIR};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("root metadata: {0}")]
    Root(String),
    #[error("input: {0}")]
    Input(String),
    #[error("signing the repository: {0}")]
    Tuf(Box<tough::error::Error>),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
}

impl From<tough::error::Error> for BuildError {
    fn from(e: tough::error::Error) -> Self {
        BuildError::Tuf(Box::new(e))
    }
}

fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { what, path, source }
}

/// Generates an ed25519 key (PKCS#8 DER, the form tough reads) at `path`, readable by its owner
/// only, refusing to overwrite a file. Returns its public half, as it appears in root metadata.
pub fn generate_key(path: &Path) -> Result<Key, BuildError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|e| BuildError::Key { path: path.to_owned(), why: e.to_string() })?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating key file", path))?;
    f.write_all(pkcs8.as_ref()).map_err(io("writing key file", path))?;
    f.sync_all().map_err(io("syncing key file", path))?;
    public_key(path)
}

/// The public half of a private key file.
pub fn public_key(path: &Path) -> Result<Key, BuildError> {
    Ok(signer(path)?.tuf_key())
}

fn signer(path: &Path) -> Result<impl Sign, BuildError> {
    let bytes = fs::read(path).map_err(io("reading key file", path))?;
    parse_keypair(&bytes).map_err(|e| BuildError::Key { path: path.to_owned(), why: e.to_string() })
}

/// The hex key id of a public key.
pub fn key_id(key: &Key) -> Result<String, BuildError> {
    Ok(hex::encode(key.key_id().map_err(|e| BuildError::Root(e.to_string()))?))
}

/// Who may sign what, in one root version.
#[derive(Debug, Clone)]
pub struct RootSpec {
    pub version: u64,
    pub expires: Timestamp,
    pub root_keys: Vec<Key>,
    pub root_threshold: u64,
    pub targets_keys: Vec<Key>,
    pub snapshot_keys: Vec<Key>,
    pub timestamp_keys: Vec<Key>,
}

/// An unsigned root (sign it with [`sign_root`], once per key holder).
pub fn new_root(spec: &RootSpec) -> Result<Signed<Root>, BuildError> {
    let mut keys = HashMap::new();
    let mut roles = HashMap::new();
    let mut role = |rt: RoleType, list: &[Key], threshold: u64| -> Result<(), BuildError> {
        if list.is_empty() || threshold == 0 || threshold > list.len() as u64 {
            return Err(BuildError::Root(format!("{rt:?}: threshold {threshold} of {} keys cannot be met", list.len())));
        }
        let mut ids = Vec::new();
        for k in list {
            let id = k.key_id().map_err(|e| BuildError::Root(e.to_string()))?;
            if ids.contains(&id) {
                return Err(BuildError::Root(format!("{rt:?}: the same key is listed twice")));
            }
            ids.push(id.clone());
            keys.insert(id, k.clone());
        }
        roles.insert(rt, RoleKeys { keyids: ids, threshold: NonZeroU64::new(threshold).unwrap_or(NonZeroU64::MIN), _extra: HashMap::new() });
        Ok(())
    };
    role(RoleType::Root, &spec.root_keys, spec.root_threshold)?;
    role(RoleType::Targets, &spec.targets_keys, 1)?;
    role(RoleType::Snapshot, &spec.snapshot_keys, 1)?;
    role(RoleType::Timestamp, &spec.timestamp_keys, 1)?;
    let version = NonZeroU64::new(spec.version).ok_or_else(|| BuildError::Root("version starts at 1".into()))?;
    Ok(Signed {
        signed: Root {
            spec_version: "1.0.0".into(),
            // Targets keep their plain names on the stick, which keeps the file check simple.
            consistent_snapshot: false,
            version,
            expires: spec.expires,
            keys,
            roles,
            _extra: HashMap::new(),
        },
        signatures: Vec::new(),
    })
}

/// Adds one key holder's signature to a root. For a rotation, the new root is signed by a
/// threshold of the old root's keys and a threshold of its own.
pub async fn sign_root(root: &mut Signed<Root>, key_path: &Path) -> Result<String, BuildError> {
    let key = signer(key_path)?;
    let keyid = key.tuf_key().key_id().map_err(|e| BuildError::Root(e.to_string()))?;
    let mut data = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut data, olpc_cjson::CanonicalFormatter::new());
    root.signed.serialize(&mut ser).map_err(|e| BuildError::Root(e.to_string()))?;
    let sig = key
        .sign(&data, &SystemRandom::new())
        .await
        .map_err(|e| BuildError::Key { path: key_path.to_owned(), why: e.to_string() })?;
    root.signatures.retain(|s| s.keyid != keyid);
    root.signatures.push(Signature { keyid: keyid.clone(), sig: sig.into() });
    Ok(hex::encode(keyid))
}

/// Writes root metadata the way tough reads it.
pub fn write_root(root: &Signed<Root>, path: &Path) -> Result<(), BuildError> {
    let mut bytes = serde_json::to_vec_pretty(root).map_err(|e| BuildError::Root(e.to_string()))?;
    bytes.push(b'\n');
    fs::write(path, bytes).map_err(io("writing root", path))
}

pub fn read_root(path: &Path) -> Result<Signed<Root>, BuildError> {
    let bytes = fs::read(path).map_err(io("reading root", path))?;
    serde_json::from_slice(&bytes).map_err(|e| BuildError::Root(format!("{}: {e}", path.display())))
}

/// Everything a bundle is built from.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Directory holding `1.root.json` .. `N.root.json` (every root ever signed, so a box that
    /// trusts an old one can walk the rotations).
    pub roots_dir: PathBuf,
    pub targets_key: PathBuf,
    pub snapshot_key: PathBuf,
    pub timestamp_key: PathBuf,
    /// The manifest, without `contents` (filled from the inputs below).
    pub manifest: BundleManifest,
    /// When targets, snapshot and timestamp metadata expire.
    pub expires: Timestamp,
    pub system_image: Option<PathBuf>,
    /// The signed UKI that boots slot A (its command line names root-a's PARTUUID).
    pub uki_a: Option<PathBuf>,
    /// The signed UKI that boots slot B.
    pub uki_b: Option<PathBuf>,
    /// An Ollama models directory (`manifests/…`, `blobs/sha256-…`), e.g. `~/.ollama/models`
    /// after `ollama pull` on a connected workstation.
    pub models_dir: Option<PathBuf>,
    pub firmware_policy: Option<PathBuf>,
    pub release_notes: Option<PathBuf>,
    /// The bundle directory to create (must not exist).
    pub out: PathBuf,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub root_version: u64,
    pub targets: Vec<(String, u64)>,
}

/// Builds a bundle directory: `metadata/` (every root, targets, snapshot, timestamp) and
/// `targets/` (the signed files, including `bundle.json`).
pub async fn build_bundle(spec: &BuildSpec) -> Result<BuildReport, BuildError> {
    let roots = root_history(&spec.roots_dir)?;
    let latest = roots.last().ok_or_else(|| BuildError::Root(format!("no N.root.json in {}", spec.roots_dir.display())))?;
    if spec.out.exists() {
        return Err(BuildError::Input(format!("{} already exists", spec.out.display())));
    }

    // Inputs: (target name, source file, content entry).
    let mut inputs: Vec<(String, PathBuf, ContentEntry)> = Vec::new();
    let mut add = |name: String, src: PathBuf, role: ContentRole, path: Option<String>| {
        inputs.push((name.clone(), src, ContentEntry { target: name, role, path }));
    };
    if let Some(p) = &spec.system_image {
        add("system.img".into(), p.clone(), ContentRole::SystemImage, None);
    }
    if let Some(p) = &spec.uki_a {
        add("wardbox-a.efi".into(), p.clone(), ContentRole::UkiA, None);
    }
    if let Some(p) = &spec.uki_b {
        add("wardbox-b.efi".into(), p.clone(), ContentRole::UkiB, None);
    }
    if let Some(p) = &spec.firmware_policy {
        add("firmware-policy.toml".into(), p.clone(), ContentRole::FirmwarePolicy, None);
    }
    if let Some(p) = &spec.release_notes {
        let text = fs::read(p).map_err(io("reading release notes", p))?;
        if std::str::from_utf8(&text).is_err() {
            return Err(BuildError::Input(format!("{}: release notes must be UTF-8 text", p.display())));
        }
        add("release-notes.txt".into(), p.clone(), ContentRole::ReleaseNotes, None);
    }
    if let Some(dir) = &spec.models_dir {
        for (name, src, role, path) in model_files(dir)? {
            add(name, src, role, Some(path));
        }
    }

    let mut manifest = spec.manifest.clone();
    manifest.contents = inputs.iter().map(|(_, _, e)| e.clone()).collect();
    validate(&manifest)?;

    let staging = tempfile::tempdir().map_err(io("creating temporary directory", std::env::temp_dir()))?;
    let manifest_path = staging.path().join(MANIFEST_TARGET);
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| BuildError::Input(e.to_string()))?;
    manifest_bytes.push(b'\n');
    fs::write(&manifest_path, &manifest_bytes).map_err(io("writing manifest", &manifest_path))?;

    let mut editor = RepositoryEditor::new(latest).await?;
    // Metadata versions follow the build time, so later bundles carry higher versions.
    let version = NonZeroU64::new(u64::try_from(manifest.created.as_second()).unwrap_or(1).max(1)).unwrap_or(NonZeroU64::MIN);
    editor
        .targets_version(version)?
        .targets_expires(spec.expires)?
        .snapshot_version(version)
        .snapshot_expires(spec.expires)
        .timestamp_version(version)
        .timestamp_expires(spec.expires);
    let mut report = Vec::new();
    for (name, src) in inputs.iter().map(|(n, s, _)| (n.clone(), s.clone())).chain([(MANIFEST_TARGET.to_owned(), manifest_path.clone())]) {
        let (_, target) = RepositoryEditor::build_target(&src).await?;
        report.push((name.clone(), target.length));
        editor.add_target(name.as_str(), target)?;
    }
    let keys: Vec<Box<dyn KeySource>> = [&spec.targets_key, &spec.snapshot_key, &spec.timestamp_key]
        .into_iter()
        .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
        .collect();
    let signed = editor.sign(&keys).await?;

    let metadata = spec.out.join(METADATA_DIR);
    let targets = spec.out.join(TARGETS_DIR);
    fs::create_dir_all(&targets).map_err(io("creating", &targets))?;
    signed.write(&metadata).await?;
    for root in &roots {
        let name = root.file_name().ok_or_else(|| BuildError::Root("root path without a name".into()))?;
        fs::copy(root, metadata.join(name)).map_err(io("copying root", root))?;
    }
    for (name, src) in inputs.iter().map(|(n, s, _)| (n, s)).chain([(&MANIFEST_TARGET.to_owned(), &manifest_path)]) {
        fs::copy(src, targets.join(name)).map_err(io("copying target", src))?;
    }
    Ok(BuildReport { root_version: roots.len() as u64, targets: report })
}

/// `1.root.json` .. `N.root.json`, in order, with no gap.
fn root_history(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut out = Vec::new();
    for n in 1u64.. {
        let p = dir.join(format!("{n}.root.json"));
        if !p.is_file() {
            break;
        }
        out.push(p);
    }
    Ok(out)
}

/// The manifests of an Ollama models directory and the blobs they name.
fn model_files(dir: &Path) -> Result<Vec<(String, PathBuf, ContentRole, String)>, BuildError> {
    #[derive(serde::Deserialize)]
    struct Layer {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct OllamaManifest {
        config: Layer,
        layers: Vec<Layer>,
    }
    let mut manifests = Vec::new();
    walk(&dir.join("manifests"), &mut manifests)?;
    manifests.sort();
    if manifests.is_empty() {
        return Err(BuildError::Input(format!("no model manifests under {}", dir.join("manifests").display())));
    }
    let mut out = Vec::new();
    let mut blobs = std::collections::BTreeSet::new();
    for (i, m) in manifests.iter().enumerate() {
        let rel = m
            .strip_prefix(dir)
            .ok()
            .and_then(|p| p.to_str())
            .ok_or_else(|| BuildError::Input(format!("{}: not a UTF-8 path", m.display())))?
            .to_owned();
        let bytes = fs::read(m).map_err(io("reading model manifest", m))?;
        let parsed: OllamaManifest =
            serde_json::from_slice(&bytes).map_err(|e| BuildError::Input(format!("{}: {e}", m.display())))?;
        for layer in std::iter::once(&parsed.config).chain(&parsed.layers) {
            let hex = layer
                .digest
                .strip_prefix("sha256:")
                .ok_or_else(|| BuildError::Input(format!("{}: digest {} is not sha256", m.display(), layer.digest)))?;
            blobs.insert(hex.to_owned());
        }
        out.push((format!("model-manifest-{i:04}"), m.clone(), ContentRole::ModelManifest, rel));
    }
    for hex in blobs {
        let rel = format!("blobs/sha256-{hex}");
        let src = dir.join(&rel);
        if !src.is_file() {
            return Err(BuildError::Input(format!("{} is named by a manifest but missing", src.display())));
        }
        out.push((format!("model-blob-sha256-{hex}"), src, ContentRole::ModelBlob, rel));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    for entry in fs::read_dir(dir).map_err(io("reading", dir))? {
        let path = entry.map_err(io("reading", dir))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
