//! The model store, in Ollama's on-disk layout, and the importer that fills it.
//!
//! A store is a directory holding `manifests/<host>/<namespace>/<model>/<tag>` (JSON, one per
//! model) and `blobs/sha256-<hex>` (content-addressed layers: the GGUF weights, the chat
//! template, default parameters, licence, system prompt, and a config blob). It is the layout
//! `ollama pull` writes, so a model pulled on an internet-connected workstation can be carried
//! to the box in a signed bundle and read here unchanged.
//!
//! Every blob is named by its sha256; [`Store::resolve`] re-hashes each one before handing out
//! a path, so a corrupted or swapped blob is refused rather than loaded.

pub mod gguf;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Media types of manifest layers, as Ollama writes them.
pub mod media {
    pub const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const MODEL: &str = "application/vnd.ollama.image.model";
    pub const TEMPLATE: &str = "application/vnd.ollama.image.template";
    pub const PARAMS: &str = "application/vnd.ollama.image.params";
    pub const LICENSE: &str = "application/vnd.ollama.image.license";
    pub const SYSTEM: &str = "application/vnd.ollama.image.system";
    pub const PROJECTOR: &str = "application/vnd.ollama.image.projector";
    /// Every layer type the engine knows how to use. Anything else is refused: a manifest that
    /// asks for something we do not understand is not loaded half-understood.
    pub const KNOWN_LAYERS: &[&str] = &[MODEL, TEMPLATE, PARAMS, LICENSE, SYSTEM, PROJECTOR];
}

/// Registry host and namespace that Ollama assumes for short names like `gemma3:270m`.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
pub const DEFAULT_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";

/// Errors of the model store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A model name that does not parse.
    #[error("invalid model name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    /// A digest that is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid blob digest {0:?}: expected sha256:<64 hex digits>")]
    BadDigest(String),
    /// No manifest for this model.
    #[error("model {0:?} not found in the store")]
    NotFound(String),
    /// A manifest that is not valid JSON of the expected shape.
    #[error("manifest of model {name:?} is unreadable: {source}")]
    BadManifest { name: String, source: serde_json::Error },
    /// A manifest that lists a layer type we do not know.
    #[error("model {name:?} has a layer of unknown type {media_type:?}: refusing to load it")]
    UnknownLayer { name: String, media_type: String },
    /// A manifest without exactly one model layer.
    #[error("model {name:?} has {count} model (GGUF) layers; exactly one is required")]
    ModelLayerCount { name: String, count: usize },
    /// A blob the manifest names is missing.
    #[error("blob {digest} of model {name:?} is missing from the store")]
    MissingBlob { name: String, digest: String },
    /// A blob whose content does not hash to its name: corrupted or tampered with.
    #[error("blob {digest} is corrupted: its content hashes to sha256:{actual} (size {size}); refusing to load it. Re-import or re-install the model bundle")]
    CorruptBlob { digest: String, actual: String, size: u64 },
    /// A blob whose size differs from the manifest's record of it.
    #[error("blob {digest} has size {actual}, the manifest says {expected}; refusing to load it")]
    BlobSize { digest: String, expected: u64, actual: u64 },
    /// The params layer is not a JSON object.
    #[error("params of model {name:?} are not a JSON object: {why}")]
    BadParams { name: String, why: String },
    /// The input file of an import is not a GGUF.
    #[error("{path}: {source}")]
    Gguf { path: PathBuf, source: gguf::GgufError },
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { action, path: path.to_path_buf(), source }
}

/// A content digest: always sha256, kept as 64 lowercase hex digits. Validated on parse, so a
/// digest taken from a manifest can never name a path outside `blobs/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    pub fn from_hex(hex: &str) -> Result<Self, StoreError> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest(hex.to_owned()))
        } else {
            Err(StoreError::BadDigest(hex.to_owned()))
        }
    }

    pub fn of_bytes(bytes: &[u8]) -> Self {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The file name in `blobs/` (`sha256-<hex>`).
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FromStr for Digest {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let hex = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("sha256-"))
            .ok_or_else(|| StoreError::BadDigest(s.to_owned()))?;
        Digest::from_hex(hex).map_err(|_| StoreError::BadDigest(s.to_owned()))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A model name: `[host/][namespace/]model[:tag]`, as Ollama parses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for ModelName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let bad = |why| StoreError::BadName { name: s.to_owned(), why };
        let (path, tag) = match s.rsplit_once(':') {
            // A colon inside the host part (`host:port/...`) is not a tag separator.
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (s, DEFAULT_TAG),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (host, namespace, model) = match parts.as_slice() {
            [m] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *m),
            [n, m] => (DEFAULT_HOST, *n, *m),
            [h, n, m] => (*h, *n, *m),
            _ => return Err(bad("too many '/' (expected [host/][namespace/]model[:tag])")),
        };
        for part in [namespace, model, tag] {
            if !valid_part(part) {
                return Err(bad("each part must be 1-128 of [A-Za-z0-9._-] and not '.' or '..'"));
            }
        }
        if !valid_part(&host.replace(':', "_")) {
            return Err(bad("invalid host"));
        }
        Ok(ModelName {
            host: host.to_owned(),
            namespace: namespace.to_owned(),
            model: model.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl fmt::Display for ModelName {
    /// The short form Ollama shows (`gemma3:270m`) for default host and namespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host == DEFAULT_HOST && self.namespace == DEFAULT_NAMESPACE {
            write!(f, "{}:{}", self.model, self.tag)
        } else if self.host == DEFAULT_HOST {
            write!(f, "{}/{}:{}", self.namespace, self.model, self.tag)
        } else {
            write!(f, "{}/{}/{}:{}", self.host, self.namespace, self.model, self.tag)
        }
    }
}

impl ModelName {
    fn manifest_rel(&self) -> PathBuf {
        PathBuf::from(&self.host).join(&self.namespace).join(&self.model).join(&self.tag)
    }
}

/// One layer (or the config) of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// A model manifest (Docker distribution v2 shape, as Ollama writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Layer,
    pub layers: Vec<Layer>,
}

impl Manifest {
    pub fn layers_of<'a>(&'a self, media_type: &'a str) -> impl Iterator<Item = &'a Layer> + 'a {
        self.layers.iter().filter(move |l| l.media_type == media_type)
    }

    /// Total size of all blobs, as `/api/tags` reports it. Sizes come from the manifest, which
    /// may be damaged or hostile: the sum saturates instead of overflowing (a model whose blobs
    /// do not have their recorded sizes is refused by `resolve` anyway).
    pub fn total_size(&self) -> u64 {
        self.layers.iter().fold(self.config.size, |sum, l| sum.saturating_add(l.size))
    }
}

/// The config blob: what `ollama show` prints under "details".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub model_format: String,
    #[serde(default)]
    pub model_family: String,
    #[serde(default)]
    pub model_families: Vec<String>,
    #[serde(default)]
    pub model_type: String,
    #[serde(default)]
    pub file_type: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// What to import: the pieces `ollama create` takes from a Modelfile.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub name: ModelName,
    /// The GGUF weights.
    pub gguf: PathBuf,
    /// Chat template (Ollama's Go template text, or a llama.cpp built-in template name).
    pub template: Option<String>,
    /// Default options (`{"stop": [...], "temperature": 0.7}`), as Modelfile `PARAMETER` lines.
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Licence texts, one layer each.
    pub licenses: Vec<String>,
    /// Default system prompt.
    pub system: Option<String>,
}

/// Whether an import changed the store (importing the same thing twice changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Created { manifest_digest: Digest },
    Replaced { manifest_digest: Digest },
    Unchanged { manifest_digest: Digest },
}

/// Whether a remove found something to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    Removed { blobs_deleted: usize },
    NotPresent,
}

/// A model as listed.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: ModelName,
    pub manifest: Manifest,
    pub manifest_digest: Digest,
    pub modified: SystemTime,
    /// The config blob, when it exists and parses (listing must not fail on one bad model).
    pub config: Option<ModelConfig>,
}

/// A model checked and ready to load: every blob re-hashed, every layer understood.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub entry: ModelEntry,
    pub model_path: PathBuf,
    pub projector_path: Option<PathBuf>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub licenses: Vec<String>,
}

/// A model store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// A store at `root`. Nothing is created until something is imported.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.file_name())
    }

    fn manifest_path(&self, name: &ModelName) -> PathBuf {
        self.manifests().join(name.manifest_rel())
    }

    /// Import a GGUF (plus template, params, licence, system prompt) as model `req.name`.
    pub fn import(&self, req: &ImportRequest) -> Result<ImportOutcome, StoreError> {
        let file = File::open(&req.gguf).map_err(io_err("opening", &req.gguf))?;
        let metadata = gguf::Metadata::read(&mut BufReader::new(file))
            .map_err(|source| StoreError::Gguf { path: req.gguf.clone(), source })?;
        fs::create_dir_all(self.blobs()).map_err(io_err("creating", &self.blobs()))?;

        let mut layers = vec![self.put_file(&req.gguf, media::MODEL)?];
        if let Some(t) = &req.template {
            layers.push(self.put_bytes(t.as_bytes(), media::TEMPLATE)?);
        }
        if let Some(s) = &req.system {
            layers.push(self.put_bytes(s.as_bytes(), media::SYSTEM)?);
        }
        for l in &req.licenses {
            layers.push(self.put_bytes(l.as_bytes(), media::LICENSE)?);
        }
        if let Some(p) = &req.params {
            let json = serde_json::to_vec(p).map_err(|e| StoreError::BadParams {
                name: req.name.to_string(),
                why: e.to_string(),
            })?;
            layers.push(self.put_bytes(&json, media::PARAMS)?);
        }

        let family = metadata.architecture().unwrap_or("unknown").to_owned();
        let config = ModelConfig {
            model_format: "gguf".into(),
            model_family: family.clone(),
            model_families: vec![family],
            model_type: size_label(&metadata),
            file_type: metadata.quantization().unwrap_or("unknown").into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: RootFs { kind: "layers".into(), diff_ids: layers.iter().map(|l| l.digest.clone()).collect() },
        };
        let config_json = serde_json::to_vec(&config).map_err(|e| StoreError::BadParams {
            name: req.name.to_string(),
            why: e.to_string(),
        })?;
        let config_layer = self.put_bytes(&config_json, media::CONFIG)?;

        let manifest = Manifest {
            schema_version: 2,
            media_type: media::MANIFEST.into(),
            config: config_layer,
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| StoreError::BadParams {
            name: req.name.to_string(),
            why: e.to_string(),
        })?;
        let manifest_digest = Digest::of_bytes(&bytes);
        let path = self.manifest_path(&req.name);
        let previous = match fs::read(&path) {
            Ok(old) => Some(old),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        if previous.as_deref() == Some(&bytes[..]) {
            return Ok(ImportOutcome::Unchanged { manifest_digest });
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        write_atomic(&path, &bytes)?;
        if previous.is_some() {
            // The old manifest's blobs may now be unreferenced.
            self.collect_garbage()?;
            Ok(ImportOutcome::Replaced { manifest_digest })
        } else {
            Ok(ImportOutcome::Created { manifest_digest })
        }
    }

    /// Copy a file into `blobs/`, hashing as it goes; the blob appears under its name only
    /// once complete (temp file + rename), so a crash never leaves a half blob with a good name.
    fn put_file(&self, src: &Path, media_type: &str) -> Result<Layer, StoreError> {
        let mut input = File::open(src).map_err(io_err("opening", src))?;
        let tmp = self.blobs().join(format!(".import-{}", std::process::id()));
        let mut out = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(io_err("reading", src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err("writing", &tmp))?;
            size += n as u64;
        }
        out.sync_all().map_err(io_err("syncing", &tmp))?;
        drop(out);
        let digest = Digest(hex::encode(hasher.finalize()));
        let dest = self.blob_path(&digest);
        fs::rename(&tmp, &dest).map_err(io_err("renaming into", &dest))?;
        Ok(Layer { media_type: media_type.into(), digest, size })
    }

    fn put_bytes(&self, bytes: &[u8], media_type: &str) -> Result<Layer, StoreError> {
        let digest = Digest::of_bytes(bytes);
        let dest = self.blob_path(&digest);
        if !dest.exists() {
            write_atomic(&dest, bytes)?;
        }
        Ok(Layer { media_type: media_type.into(), digest, size: bytes.len() as u64 })
    }

    /// Every model in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<ModelEntry>, StoreError> {
        let mut out = Vec::new();
        let root = self.manifests();
        if !root.exists() {
            return Ok(out);
        }
        for host in read_dir_sorted(&root)? {
            for ns in read_dir_sorted(&host)? {
                for model in read_dir_sorted(&ns)? {
                    for tag in read_dir_sorted(&model)? {
                        let name = [&host, &ns, &model, &tag]
                            .iter()
                            .map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
                            .collect::<Vec<_>>();
                        let text = format!("{}/{}/{}:{}", name[0], name[1], name[2], name[3]);
                        let Ok(name) = text.parse::<ModelName>() else { continue };
                        out.push(self.entry(&name)?);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Read one model's manifest (no blob is hashed).
    pub fn entry(&self, name: &ModelName) -> Result<ModelEntry, StoreError> {
        let path = self.manifest_path(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.to_string()));
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|source| StoreError::BadManifest { name: name.to_string(), source })?;
        let modified = fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let config = fs::read(self.blob_path(&manifest.config.digest))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(ModelEntry { name: name.clone(), manifest, manifest_digest: Digest::of_bytes(&bytes), modified, config })
    }

    /// Check a model completely and return what the engine needs to load it: every layer of a
    /// known type, every blob present, of the recorded size, and hashing to its name.
    pub fn resolve(&self, name: &ModelName) -> Result<ResolvedModel, StoreError> {
        let entry = self.entry(name)?;
        let m = &entry.manifest;
        for layer in &m.layers {
            if !media::KNOWN_LAYERS.contains(&layer.media_type.as_str()) {
                return Err(StoreError::UnknownLayer {
                    name: name.to_string(),
                    media_type: layer.media_type.clone(),
                });
            }
        }
        let models: Vec<&Layer> = m.layers_of(media::MODEL).collect();
        if models.len() != 1 {
            return Err(StoreError::ModelLayerCount { name: name.to_string(), count: models.len() });
        }
        for layer in m.layers.iter().chain(std::iter::once(&m.config)) {
            self.verify_blob(name, layer)?;
        }
        let text = |media_type: &str| -> Result<Option<String>, StoreError> {
            match m.layers_of(media_type).last() {
                Some(l) => {
                    let p = self.blob_path(&l.digest);
                    fs::read_to_string(&p).map(Some).map_err(io_err("reading", &p))
                }
                None => Ok(None),
            }
        };
        let params = match text(media::PARAMS)? {
            Some(t) => match serde_json::from_str::<serde_json::Value>(&t) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => return Err(StoreError::BadParams { name: name.to_string(), why: "not an object".into() }),
                Err(e) => return Err(StoreError::BadParams { name: name.to_string(), why: e.to_string() }),
            },
            None => serde_json::Map::new(),
        };
        let mut licenses = Vec::new();
        for l in m.layers_of(media::LICENSE) {
            let p = self.blob_path(&l.digest);
            licenses.push(fs::read_to_string(&p).map_err(io_err("reading", &p))?);
        }
        let model_path = self.blob_path(&models[0].digest);
        let projector_path = m.layers_of(media::PROJECTOR).next().map(|l| self.blob_path(&l.digest));
        let template = text(media::TEMPLATE)?;
        let system = text(media::SYSTEM)?;
        Ok(ResolvedModel { model_path, projector_path, template, system, params, licenses, entry })
    }

    fn verify_blob(&self, name: &ModelName, layer: &Layer) -> Result<(), StoreError> {
        let path = self.blob_path(&layer.digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob { name: name.to_string(), digest: layer.digest.to_string() });
            }
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let (actual, size) = hash_reader(file).map_err(io_err("reading", &path))?;
        if actual != layer.digest {
            return Err(StoreError::CorruptBlob { digest: layer.digest.to_string(), actual: actual.0, size });
        }
        if size != layer.size {
            return Err(StoreError::BlobSize { digest: layer.digest.to_string(), expected: layer.size, actual: size });
        }
        Ok(())
    }

    /// Remove a model, then every blob no remaining manifest refers to.
    pub fn remove(&self, name: &ModelName) -> Result<RemoveOutcome, StoreError> {
        let path = self.manifest_path(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RemoveOutcome::NotPresent),
            Err(e) => return Err(io_err("removing", &path)(e)),
        }
        // Tidy empty directories up to manifests/ so `list` stays cheap; failure is harmless.
        let stop = self.manifests();
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == stop || fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        let blobs_deleted = self.collect_garbage()?;
        Ok(RemoveOutcome::Removed { blobs_deleted })
    }

    /// Delete blobs that no manifest references. Returns how many were deleted. A store with an
    /// unreadable manifest deletes nothing: we cannot tell what that manifest needs.
    pub fn collect_garbage(&self) -> Result<usize, StoreError> {
        let mut keep = BTreeSet::new();
        for entry in self.list()? {
            keep.insert(entry.manifest.config.digest.clone());
            keep.extend(entry.manifest.layers.iter().map(|l| l.digest.clone()));
        }
        let mut deleted = 0;
        let blobs = self.blobs();
        if !blobs.exists() {
            return Ok(0);
        }
        for path in read_dir_sorted(&blobs)? {
            let Some(fname) = path.file_name().and_then(|f| f.to_str()) else { continue };
            let Ok(digest) = fname.parse::<Digest>() else { continue };
            if !keep.contains(&digest) {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// sha256 and length of everything `r` yields.
pub fn hash_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest(hex::encode(hasher.finalize())), size))
}

/// `model_type` as Ollama shows it ("268M"): from `general.size_label` or the parameter count.
fn size_label(md: &gguf::Metadata) -> String {
    if let Some(label) = md.get_str("general.size_label") {
        return label.to_owned();
    }
    match md.get_u64("general.parameter_count") {
        Some(n) if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        Some(n) => format!("{}M", n / 1_000_000),
        None => "unknown".into(),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(bytes).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming into", path))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().is_some_and(|f| f.to_string_lossy().starts_with('.')))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::gguf::Value;
    use super::*;

    fn fake_gguf(dir: &Path) -> PathBuf {
        let mut bytes = gguf::tests::header(&[
            ("general.architecture", Value::Str("gemma3".into())),
            ("general.file_type", Value::Uint(15)),
            ("general.size_label", Value::Str("268M".into())),
        ]);
        bytes.extend(b"tensor data stands in here");
        let p = dir.join("m.gguf");
        fs::write(&p, bytes).expect("write");
        p
    }

    fn request(gguf: PathBuf) -> ImportRequest {
        let mut params = serde_json::Map::new();
        params.insert("stop".into(), serde_json::json!(["<end_of_turn>"]));
        ImportRequest {
            name: "gemma3:270m".parse().expect("name"),
            gguf,
            template: Some("gemma".into()),
            params: Some(params),
            licenses: vec!["Gemma Terms of Use".into()],
            system: None,
        }
    }

    #[test]
    fn names_parse_like_ollama() {
        let n: ModelName = "gemma3:270m".parse().expect("short");
        assert_eq!((n.host.as_str(), n.namespace.as_str(), n.model.as_str(), n.tag.as_str()),
            ("registry.ollama.ai", "library", "gemma3", "270m"));
        assert_eq!(n.to_string(), "gemma3:270m");
        assert_eq!("smollm2".parse::<ModelName>().expect("no tag").to_string(), "smollm2:latest");
        assert_eq!("me/x:1".parse::<ModelName>().expect("ns").to_string(), "me/x:1");
        let full: ModelName = "localhost:5000/me/x:1".parse().expect("host with port");
        assert_eq!(full.host, "localhost:5000");
        for bad in ["", "../x", "a/../b", "a b", "x:", "a/b/c/d", "x:..", "x:a/b"] {
            assert!(bad.parse::<ModelName>().is_err(), "{bad:?} must be refused");
        }
    }

    /// A crash of the `manifest` fuzz target (models-bundle/fuzz): layer sizes summing past
    /// u64::MAX overflowed (a panic in debug builds, a wrong size in release).
    #[test]
    fn total_size_of_a_hostile_manifest_saturates() {
        let layer = |size| Layer { media_type: media::MODEL.into(), digest: Digest::of_bytes(b""), size };
        let m = Manifest { schema_version: 2, media_type: String::new(), config: layer(u64::MAX), layers: vec![layer(1), layer(u64::MAX)] };
        assert_eq!(m.total_size(), u64::MAX);
        let m = Manifest { config: layer(3), layers: vec![layer(4)], ..m };
        assert_eq!(m.total_size(), 7);
    }

    #[test]
    fn digests_are_strict() {
        let hex = "a".repeat(64);
        assert!(format!("sha256:{hex}").parse::<Digest>().is_ok());
        assert!(format!("sha256-{hex}").parse::<Digest>().is_ok());
        for bad in ["sha256:abc", "md5:00", &format!("sha256:{}", "A".repeat(64)), &format!("sha256:../{}", "a".repeat(61))] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn import_list_resolve_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("store"));
        let req = request(fake_gguf(dir.path()));
        let first = store.import(&req).expect("import");
        assert!(matches!(first, ImportOutcome::Created { .. }));
        let again = store.import(&req).expect("re-import");
        assert!(matches!(again, ImportOutcome::Unchanged { .. }), "{again:?}");

        let list = store.list().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name.to_string(), "gemma3:270m");
        let cfg = list[0].config.clone().expect("config");
        assert_eq!((cfg.model_family.as_str(), cfg.file_type.as_str(), cfg.model_type.as_str()), ("gemma3", "Q4_K_M", "268M"));

        let r = store.resolve(&req.name).expect("resolve");
        assert_eq!(r.template.as_deref(), Some("gemma"));
        assert_eq!(r.params["stop"], serde_json::json!(["<end_of_turn>"]));
        assert_eq!(r.licenses, vec!["Gemma Terms of Use".to_string()]);
        assert_eq!(fs::read(&r.model_path).expect("blob"), fs::read(&req.gguf).expect("src"));

        assert!(matches!(store.remove(&req.name).expect("remove"), RemoveOutcome::Removed { blobs_deleted: 5 }));
        assert!(store.list().expect("list").is_empty());
        assert_eq!(store.remove(&req.name).expect("remove twice"), RemoveOutcome::NotPresent);
        assert_eq!(fs::read_dir(store.root().join("blobs")).expect("blobs").count(), 0);
    }

    #[test]
    fn corrupted_blob_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("store"));
        let req = request(fake_gguf(dir.path()));
        store.import(&req).expect("import");
        let path = store.resolve(&req.name).expect("resolve").model_path;
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).expect("write");
        let err = store.resolve(&req.name).expect_err("corruption must be detected");
        assert!(matches!(err, StoreError::CorruptBlob { .. }), "{err}");
        fs::remove_file(&path).expect("rm");
        assert!(matches!(store.resolve(&req.name), Err(StoreError::MissingBlob { .. })));
    }

    #[test]
    fn unknown_layer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("store"));
        let req = request(fake_gguf(dir.path()));
        store.import(&req).expect("import");
        let mpath = store.manifest_path(&req.name);
        let mut m: Manifest = serde_json::from_slice(&fs::read(&mpath).expect("read")).expect("parse");
        m.layers[1].media_type = "application/vnd.example.unknown".into();
        fs::write(&mpath, serde_json::to_vec(&m).expect("json")).expect("write");
        assert!(matches!(store.resolve(&req.name), Err(StoreError::UnknownLayer { .. })));
    }

    #[test]
    fn non_gguf_import_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("store"));
        let bogus = dir.path().join("x.gguf");
        fs::write(&bogus, b"<html>not a model</html>").expect("write");
        let err = store.import(&request(bogus)).expect_err("must refuse");
        assert!(matches!(err, StoreError::Gguf { .. }), "{err}");
        assert!(!store.root().exists(), "a refused import must leave no trace");
    }
}
