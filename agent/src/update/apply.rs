//! Installing a verified bundle on the box, by kind.
//!
//! Every install first stages each target it needs from the stick into `<update>/staging`
//! (tough checks the signed size while streaming and the hash at the end), so a corrupt stick
//! is refused before anything on the box changes ([`ApplyError::Unchanged`]). Only then are the
//! verified copies moved into place:
//!
//! - **models**: manifests and blobs into the engine's store (Ollama layout). A manifest that a
//!   model already had is kept in `<update>/previous/models/`; new blobs are added beside the
//!   old ones (nothing is deleted). Health: the store resolves every new model (each blob
//!   re-hashed), and a running engine answers with it. On failure every file is put back as it
//!   was, byte for byte ([`ApplyError::RolledBack`]).
//! - **policy**: the firmware policy file. The new text is validated with the firmware-policy
//!   crate and (on the appliance) held against this box's firmware before the switch; the old
//!   file is kept in `<update>/previous/`; after the switch the file is loaded again from its
//!   place, and the previous one comes back when that fails.
//! - **full**: the system image into the inactive slot (`wardbox_update::stage_for_slot`,
//!   then `StagedSlotImage::write`: staged and verified before the ESP or the slot changes,
//!   written, read back), then that slot's UKI (the bundle carries one per slot: each
//!   names its root partition on its signed command line) onto the ESP as `wardbox-<version>+3.efi`
//!   (systemd-boot's boot counting: three tries, then the previous entry). Before either, the
//!   staged UKI must carry a PCR 11 signature the data volume's seal accepts ([`super::uki`]).
//!   The running slot is never opened for writing. The caller records the pending reboot.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use wardbox_models_bundle::{Digest, ModelName, Store};
use wardbox_update::manifest::ContentRole;
use wardbox_update::slot::{Phase, STAGING_RESERVE, SlotPlan, StagedFile, free_bytes, stage_for_slot, stage_target};
use wardbox_update::verify::SignedTarget;
use wardbox_update::{UpdateError, VerifiedBundle};

use super::uki::{self, SealTrust, UkiVerdict};
use super::verity;
use super::{SlotName, SlotsConfig, UpdatePaths};

/// Exit code when an install's health check failed and the previous version is back.
pub const EXIT_HEALTH_FAILED: u8 = 18;

/// The progress callback: phase, bytes done, bytes in all.
pub type Progress<'a> = &'a mut (dyn FnMut(Phase, u64, u64) + Send);

/// Why an install did not complete.
#[derive(Debug)]
pub enum ApplyError {
    /// Refused or failed before anything on the box changed.
    Unchanged(UpdateError),
    /// The box is not set up for this kind of bundle (no model store, no policy file, no way to
    /// tell the running slot); nothing changed.
    NotReady(String),
    /// The bundle's firmware policy does not validate, or would stop this box's next boot;
    /// nothing changed.
    PolicyRefused(String),
    /// The full bundle's UKI would not unlock this box's data (no PCR 11 signature by the key
    /// the volume's seal trusts, for the value it will measure); refused before the slot was
    /// opened, nothing changed.
    UkiRefused(String),
    /// The full bundle's UKI names no verified root on a box whose root is verified, or the
    /// system image written to the slot does not match the root hash on the UKI's command line;
    /// the new slot was not made bootable (docs/update.md, exit code 20).
    RootUnverified(String),
    /// Installed, then the health check (or the install itself) failed, and the previous
    /// version is back in place.
    RolledBack { why: String },
    /// The install failed and putting the previous version back failed too: the box needs
    /// attention (the message names what is where).
    RestoreFailed { why: String, restore: String },
}

impl ApplyError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ApplyError::Unchanged(e) => e.exit_code(),
            ApplyError::NotReady(_) => wardbox_update::error::exit::OPERATIONAL,
            ApplyError::PolicyRefused(_) => wardbox_update::error::exit::INCOMPATIBLE,
            ApplyError::UkiRefused(_) => super::uki::EXIT_UKI_WOULD_NOT_UNLOCK,
            ApplyError::RootUnverified(_) => super::verity::EXIT_ROOT_UNVERIFIED,
            ApplyError::RolledBack { .. } => EXIT_HEALTH_FAILED,
            ApplyError::RestoreFailed { .. } => wardbox_update::error::exit::OPERATIONAL,
        }
    }

    /// Whether anything on the box is different from before the install.
    pub fn changed_nothing(&self) -> bool {
        !matches!(self, ApplyError::RestoreFailed { .. })
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Unchanged(e) => write!(f, "{e}; nothing was changed"),
            ApplyError::NotReady(why) => write!(f, "{why}; nothing was changed"),
            ApplyError::PolicyRefused(why) | ApplyError::UkiRefused(why) => write!(f, "{why}; nothing was changed"),
            ApplyError::RootUnverified(why) => write!(f, "{why}; the new slot was not made bootable"),
            ApplyError::RolledBack { why } => write!(f, "{why}; the previous version is back in place"),
            ApplyError::RestoreFailed { why, restore } => {
                write!(f, "{why}; PUTTING THE PREVIOUS VERSION BACK FAILED: {restore}")
            }
        }
    }
}

impl From<UpdateError> for ApplyError {
    fn from(e: UpdateError) -> Self {
        ApplyError::Unchanged(e)
    }
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> UpdateError + 'a {
    move |e| UpdateError::io(what, path)(e)
}

/// What an install changed, in order, so it can be undone.
#[derive(Debug, Default)]
struct Undo {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    /// A file that was not there before.
    Added(PathBuf),
    /// A file that replaced another, now kept at `backup`.
    Replaced { path: PathBuf, backup: PathBuf },
    /// A file that replaced another, whose copy is at `from` (and stays there).
    CopyBack { path: PathBuf, from: PathBuf },
}

impl Undo {
    /// Puts everything back, newest change first. Goes on after a failed step and reports all.
    fn run(self) -> Result<(), String> {
        let mut failures = Vec::new();
        for step in self.steps.into_iter().rev() {
            let result = match &step {
                Step::Added(path) => match fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {}: {e}", path.display())),
                    _ => Ok(()),
                },
                Step::Replaced { path, backup } => fs::rename(backup, path)
                    .map_err(|e| format!("restoring {} from {}: {e}", path.display(), backup.display())),
                Step::CopyBack { path, from } => fs::read(from)
                    .and_then(|bytes| super::write_atomic(path, &bytes))
                    .map_err(|e| format!("restoring {} from {}: {e}", path.display(), from.display())),
            };
            if let Err(e) = result {
                failures.push(e);
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
    }

    /// Ends a failed install: undo, and say whether that worked.
    fn fail(self, why: String) -> ApplyError {
        match self.run() {
            Ok(()) => ApplyError::RolledBack { why },
            Err(restore) => ApplyError::RestoreFailed { why, restore },
        }
    }
}

/// Moves a verified staged file to `dest` (same file system: a rename; else a copy into a
/// temporary name beside `dest`, then a rename), then syncs the file under its new name and its
/// directory.
fn place(staged: StagedFile, dest: &Path) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir)?;
    match staged.persist(dest) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.error.raw_os_error() == Some(nix::libc::EXDEV) => {
            let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            let copied = fs::copy(e.file.path(), &tmp).and_then(|_| fs::File::open(&tmp)?.sync_all()).and_then(|()| fs::rename(&tmp, dest));
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            copied?;
            // Synced again under its new name: on FAT (the ESP) the new directory entry gets its
            // first cluster and size when the file's inode is written, not with the directory.
            // Without this a power cut a minute after the install left a zero-length UKI on the
            // ESP, which systemd-boot skipped (found by the qemu full-update scenario).
            fs::File::open(dest)?.sync_all()?;
        }
        Err(e) => return Err(e.error),
    }
    fs::File::open(dir)?.sync_all()
}

/// [`place`] for a file of the model store, readable by the engine. The engine reads the store
/// as its own user through the store directory's group (the appliance makes the store
/// `root:wardbox-engine 0750`: `data-permissions`), so what the install adds takes that group,
/// readable and never writable by it: files `0640`, the directories made for them `0750`. A
/// staged file alone is `0600`, which the engine could not read (found by the qemu full-update
/// scenario's models bundle).
fn place_in_store(staged: StagedFile, dest: &Path, store_root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    place(staged, dest)?;
    let gid = fs::metadata(store_root)?.gid();
    let share = |path: &Path, mode: u32| -> std::io::Result<()> {
        std::os::unix::fs::chown(path, None, Some(gid))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    };
    share(dest, 0o640)?;
    let mut dir = dest.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(store_root) && *d != store_root) {
        share(d, 0o750)?;
        dir = d.parent();
    }
    Ok(())
}

/// Whether `name` is a temporary copy [`place`] makes of a UKI on the ESP before renaming it
/// (`.wardbox-<version>+3.efi.<pid>.tmp`).
fn is_interrupted_copy(name: &str) -> bool {
    name.strip_prefix(".wardbox-")
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .and_then(|rest| rest.rsplit_once(".efi."))
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the copies of a UKI a power cut left on the ESP in the middle of [`place`]:
/// systemd-boot ignores them (not `.efi`), but each holds a UKI's worth of the ESP's small
/// space, and every cut would leave one more.
fn remove_interrupted_copies(esp_dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(esp_dir)? {
        let entry = entry?;
        if is_interrupted_copy(&entry.file_name().to_string_lossy()) {
            tracing::warn!(file = %entry.path().display(), "removing a copy of a UKI a power cut left on the ESP");
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Moves `path` into `backup` (creating its directory), replacing an older backup.
fn back_up(path: &Path, backup: &Path) -> std::io::Result<()> {
    if let Some(dir) = backup.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::rename(path, backup)
}

/// Stages several targets, reporting progress over all of them; checks the room for all first.
async fn stage_all(
    bundle: &VerifiedBundle,
    targets: &[&SignedTarget],
    staging: &Path,
    progress: Progress<'_>,
) -> Result<Vec<StagedFile>, UpdateError> {
    fs::create_dir_all(staging).map_err(io_error("creating staging directory", staging))?;
    let total: u64 = targets.iter().map(|t| t.length).sum();
    let free = free_bytes(staging)?;
    let needed = total.saturating_add(STAGING_RESERVE);
    if needed > free {
        return Err(UpdateError::NoSpace {
            what: format!("staging in {} ({} targets plus {STAGING_RESERVE} reserve)", staging.display(), targets.len()),
            needed,
            available: free,
        });
    }
    let mut staged = Vec::with_capacity(targets.len());
    let mut base = 0u64;
    for t in targets {
        let mut each = |phase: Phase, done: u64, _: u64| progress(phase, base + done, total);
        staged.push(stage_target(bundle, t, staging, 0, &mut each).await?);
        base += t.length;
    }
    Ok(staged)
}

// ---------------------------------------------------------------------------------------------
// Models

/// What a models install did.
#[derive(Debug, Clone)]
pub struct ModelsInstalled {
    pub models: Vec<String>,
    /// Blobs written into the store (the others were there already, with the right content).
    pub blobs_added: usize,
    pub bytes: u64,
    /// What the engine said, or why it was not asked.
    pub engine_check: String,
}

/// `manifests/<host>/<namespace>/<model>/<tag>` → the model's name.
fn model_name(path: &str) -> Result<ModelName, UpdateError> {
    let bad = |why: &str| UpdateError::Corrupt(format!("model manifest path {path:?}: {why}"));
    let rest = path.strip_prefix("manifests/").ok_or_else(|| bad("not under manifests/"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [host, namespace, model, tag] = parts.as_slice() else {
        return Err(bad("expected manifests/<host>/<namespace>/<model>/<tag>"));
    };
    format!("{host}/{namespace}/{model}:{tag}").parse().map_err(|e: wardbox_models_bundle::StoreError| bad(&e.to_string()))
}

/// Installs a models bundle into the store at `store_root`. `engine`: the endpoint of a running
/// engine to ask for an answer with each new model (none: the store check alone).
pub async fn install_models(
    bundle: &VerifiedBundle,
    store_root: &Path,
    paths: &UpdatePaths,
    engine: Option<&str>,
    progress: Progress<'_>,
) -> Result<ModelsInstalled, ApplyError> {
    let of_role = |role| bundle.targets.iter().filter(move |t| t.role == Some(role)).collect::<Vec<_>>();
    let manifests = of_role(ContentRole::ModelManifest);
    let blobs = of_role(ContentRole::ModelBlob);
    if manifests.is_empty() {
        return Err(UpdateError::NoSuchTarget(ContentRole::ModelManifest.to_string()).into());
    }
    // Names before bytes: a blob is stored under its hash, so its place must be the hash its
    // signed content has; a manifest's place must be a model name.
    for b in &blobs {
        let path = b.path.as_deref().unwrap_or_default();
        if path.strip_prefix("blobs/sha256-") != Some(b.sha256.as_str()) {
            return Err(UpdateError::Corrupt(format!(
                "model blob {} would be stored as {path:?}, but its signed content is sha256 {}",
                b.name, b.sha256
            ))
            .into());
        }
    }
    let names = manifests
        .iter()
        .map(|m| model_name(m.path.as_deref().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()?;

    // Stage every target: a corrupt stick stops here, before the store is touched.
    let targets: Vec<&SignedTarget> = manifests.iter().chain(&blobs).copied().collect();
    let mut staged = stage_all(bundle, &targets, &paths.staging(), progress).await?;
    let staged_blobs = staged.split_off(manifests.len());
    let staged_manifests = staged;

    // Every blob a manifest names comes with the bundle or is in the store already.
    let store = Store::new(store_root);
    let in_bundle: BTreeSet<&str> = blobs.iter().map(|b| b.sha256.as_str()).collect();
    for (m, file) in manifests.iter().zip(&staged_manifests) {
        let bytes = fs::read(file.path()).map_err(io_error("reading staged manifest", file.path()))?;
        let parsed: wardbox_models_bundle::Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| UpdateError::Corrupt(format!("model manifest {} does not parse: {e}", m.name)))?;
        for layer in std::iter::once(&parsed.config).chain(&parsed.layers) {
            let hex = layer.digest.hex();
            if !in_bundle.contains(hex) && !store.blob_path(&layer.digest).is_file() {
                return Err(UpdateError::Corrupt(format!(
                    "model manifest {} names blob sha256:{hex}, which neither the bundle nor the store holds",
                    m.name
                ))
                .into());
            }
        }
    }

    // From here on the store changes; every change is in `undo`.
    let previous = paths.previous().join("models");
    if previous.exists() {
        fs::remove_dir_all(&previous).map_err(io_error("clearing the previous models", &previous))?;
    }
    let total: u64 = targets.iter().map(|t| t.length).sum();
    let mut undo = Undo::default();
    let mut written = 0u64;
    let mut blobs_added = 0usize;
    // Blobs first: a manifest never names a blob that is not in place yet.
    for (b, file) in blobs.iter().zip(staged_blobs) {
        let digest = Digest::from_hex(&b.sha256).map_err(|e| UpdateError::Corrupt(e.to_string()))?;
        let dest = store.blob_path(&digest);
        if dest.is_file() {
            let intact = fs::File::open(&dest)
                .and_then(wardbox_models_bundle::hash_reader)
                .is_ok_and(|(d, _)| d == digest);
            if intact {
                written += b.length;
                progress(Phase::Writing, written, total);
                continue;
            }
            // A damaged blob in the store: the verified one replaces it (kept, for the undo).
            let backup = previous.join("blobs").join(digest.file_name());
            if let Err(e) = back_up(&dest, &backup) {
                return Err(undo.fail(format!("moving aside the damaged blob {}: {e}", dest.display())));
            }
            undo.steps.push(Step::Replaced { path: dest.clone(), backup });
        } else {
            undo.steps.push(Step::Added(dest.clone()));
        }
        if let Err(e) = place_in_store(file, &dest, store_root) {
            return Err(undo.fail(format!("writing {}: {e}", dest.display())));
        }
        blobs_added += 1;
        written += b.length;
        progress(Phase::Writing, written, total);
    }
    for (m, file) in manifests.iter().zip(staged_manifests) {
        let rel = m.path.as_deref().unwrap_or_default();
        let dest = store_root.join(rel);
        if dest.exists() {
            let backup = previous.join(rel);
            if let Err(e) = back_up(&dest, &backup) {
                return Err(undo.fail(format!("keeping the previous manifest {}: {e}", dest.display())));
            }
            undo.steps.push(Step::Replaced { path: dest.clone(), backup });
        } else {
            undo.steps.push(Step::Added(dest.clone()));
        }
        if let Err(e) = place_in_store(file, &dest, store_root) {
            return Err(undo.fail(format!("writing {}: {e}", dest.display())));
        }
        written += m.length;
        progress(Phase::Writing, written, total);
    }

    // Health: every new model resolves (each blob re-hashed, every layer understood) ...
    let mut models = Vec::new();
    let mut resolved = Vec::new();
    for name in &names {
        match store.resolve(name) {
            Ok(r) => resolved.push((name.to_string(), r.template.is_some())),
            Err(e) => return Err(undo.fail(format!("health check: model {name} does not resolve in the store: {e}"))),
        }
        models.push(name.to_string());
    }
    // ... and a running engine answers with it.
    let engine_check = match engine {
        None => "no running engine to ask; the engine re-hashes and loads each model on first use".to_owned(),
        Some(endpoint) => {
            for (name, chat) in &resolved {
                if let Err(e) = engine_answers(endpoint, name, *chat).await {
                    return Err(undo.fail(format!("health check: the engine at {endpoint} did not answer with {name}: {e}")));
                }
            }
            format!("the engine at {endpoint} answered with every new model")
        }
    };
    // Success: the previous manifests stay in `previous/`; nothing else to undo.
    drop(undo);
    Ok(ModelsInstalled { models, blobs_added, bytes: total, engine_check })
}

/// Asks the engine for one short answer (a chat model: a few tokens; an embedding model: one
/// embedding) with `model`, which makes it re-hash and load the model from the store.
async fn engine_answers(endpoint: &str, model: &str, chat: bool) -> Result<(), String> {
    use crate::stages::engine::{EngineConfig, spawn};
    let config = EngineConfig { endpoint: Some(endpoint.to_owned()), ..EngineConfig::default() };
    let handle = spawn(&config)?;
    handle.wait_ready(std::time::Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
    let result = if chat {
        let options = ollama_rs::models::ModelOptions::default().num_predict(4);
        let message = ollama_rs::generation::chat::ChatMessage::user("Reply with the word ready.".into());
        handle.chat(model, vec![message], Some(options)).await.map(drop)
    } else {
        handle.embed(model, vec!["ready".into()]).await.map(drop)
    };
    handle.shutdown().await;
    result.map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Firmware policy

/// The most a policy file may be (the shipped one is a few hundred bytes).
const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// What a policy install did.
#[derive(Debug, Clone)]
pub struct PolicyInstalled {
    pub path: PathBuf,
    pub previous: Option<PathBuf>,
    pub bytes: u64,
    /// What the new policy was checked against.
    pub checked: String,
}

/// Holds a policy against this box's firmware (Secure Boot state, pinned keys).
fn check_against_firmware(policy: &wardbox_firmware_policy::FirmwarePolicy, efivars: &Path) -> Result<(), String> {
    policy
        .check_secure_boot(wardbox_firmware_policy::read_secure_boot_state(efivars))
        .map_err(|e| e.to_string())?;
    if policy.secure_boot_keys.is_some() {
        let enrolled = wardbox_firmware_policy::read_enrolled_keys(efivars).map_err(|e| e.to_string())?;
        policy.check_secure_boot_keys(&enrolled).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Replaces the firmware policy at `policy_path`. `efivars`: the firmware's variables to hold
/// the new policy against (the appliance); none in the dev profile, which has no firmware
/// policy of its own.
pub async fn install_policy(
    bundle: &VerifiedBundle,
    policy_path: &Path,
    efivars: Option<&Path>,
    paths: &UpdatePaths,
    progress: Progress<'_>,
) -> Result<PolicyInstalled, ApplyError> {
    let target = bundle.target_for(ContentRole::FirmwarePolicy)?;
    let bytes = bundle.read_small(target, MAX_POLICY_BYTES).await?;
    progress(Phase::Verifying, target.length, target.length);
    // Validate before the switch: the agent must be able to read it, and it must not stop
    // this box's next boot.
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| ApplyError::PolicyRefused("the bundle's firmware policy is not UTF-8 text".into()))?;
    let policy = wardbox_firmware_policy::FirmwarePolicy::from_toml_str(&text, "the bundle's firmware policy")
        .map_err(|e| ApplyError::PolicyRefused(format!("the bundle's firmware policy does not validate: {e}")))?;
    let checked = match efivars {
        Some(efivars) => {
            check_against_firmware(&policy, efivars)
                .map_err(|e| ApplyError::PolicyRefused(format!("the bundle's firmware policy would stop this box's next boot: {e}")))?;
            format!("validated, and this box's firmware ({}) meets it", efivars.display())
        }
        None => "validated (no firmware to hold it against in this profile)".to_owned(),
    };

    let dir = policy_path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(UpdateError::io("the firmware policy's directory", dir)(std::io::Error::from(std::io::ErrorKind::NotFound)).into());
    }
    let previous = if policy_path.exists() {
        // Kept as a copy: the file the agent reads stays in place until the new one replaces
        // it in one rename.
        let backup = paths.previous().join("firmware-policy.toml");
        fs::create_dir_all(paths.previous()).map_err(io_error("creating", &paths.previous()))?;
        fs::copy(policy_path, &backup).map_err(io_error("keeping the previous firmware policy", policy_path))?;
        fs::File::open(&backup).and_then(|f| f.sync_all()).map_err(io_error("syncing", &backup))?;
        Some(backup)
    } else {
        None
    };
    if let Err(e) = super::write_atomic(policy_path, &bytes) {
        let why = if e.raw_os_error() == Some(nix::libc::EROFS) {
            format!("{} is on read-only storage (the system image): a policy there changes only with a full update", policy_path.display())
        } else {
            format!("writing {}: {e}", policy_path.display())
        };
        return Err(UpdateError::io("replacing the firmware policy", policy_path)(std::io::Error::other(why)).into());
    }
    // The switch happened: from here a failure puts the previous file back (a copy: the kept
    // previous version stays in `previous/`).
    let mut undo = Undo::default();
    undo.steps.push(match &previous {
        Some(backup) => Step::CopyBack { path: policy_path.to_owned(), from: backup.clone() },
        None => Step::Added(policy_path.to_owned()),
    });
    progress(Phase::Writing, target.length, target.length);
    // Re-apply: read it back from its place as the unlock stage will, and hold it to the
    // firmware again.
    let reloaded = wardbox_firmware_policy::FirmwarePolicy::load(policy_path).map_err(|e| e.to_string()).and_then(|p| {
        if p != policy {
            return Err("the file read back differs from the verified policy".to_owned());
        }
        match efivars {
            Some(efivars) => check_against_firmware(&p, efivars),
            None => Ok(()),
        }
    });
    if let Err(e) = reloaded {
        return Err(undo.fail(format!("health check: the installed firmware policy {}: {e}", policy_path.display())));
    }
    drop(undo);
    Ok(PolicyInstalled { path: policy_path.to_owned(), previous, bytes: target.length, checked })
}

// ---------------------------------------------------------------------------------------------
// Full (system image + UKI)

/// Boot tries systemd-boot gives a new entry before it falls back to the previous one.
pub const BOOT_TRIES: u32 = 3;

/// What a full install did.
#[derive(Debug, Clone)]
pub struct FullInstalled {
    pub slot: SlotName,
    pub slot_path: PathBuf,
    /// The UKI's file name on the ESP.
    pub boot_entry: String,
    pub bytes: u64,
    /// Older entries removed because their UKI boots the slot that was rewritten.
    pub removed: Vec<String>,
    /// What the UKI's PCR 11 signature check found.
    pub uki: UkiVerdict,
}

/// The UKI's name on the ESP: `wardbox-<version>+<tries>.efi`.
pub fn boot_entry_name(version: &wardbox_update::manifest::Version) -> String {
    format!("wardbox-{version}+{BOOT_TRIES}.efi")
}

/// Whether an ESP file name is an entry of `version` (`wardbox-<v>.efi`, `…+N.efi`, `…+N-M.efi`).
fn is_entry_of(name: &str, version: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("wardbox-{version}")).and_then(|r| r.strip_suffix(".efi")) else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix('+')
            .is_some_and(|c| !c.is_empty() && c.split('-').count() <= 2 && c.split('-').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// The bundle role of the UKI that boots `slot` (its signed command line names that slot's
/// root partition).
pub fn uki_role(slot: SlotName) -> ContentRole {
    match slot {
        SlotName::A => ContentRole::UkiA,
        SlotName::B => ContentRole::UkiB,
    }
}

/// Writes the system image to the slot that does not run, then that slot's UKI onto the ESP.
/// `running_verified`: the running system's root is verified (dm-verity), so the update's must
/// be too ([`super::verity`]).
pub async fn install_full(
    bundle: &VerifiedBundle,
    slots: &SlotsConfig,
    running: SlotName,
    running_verified: bool,
    paths: &UpdatePaths,
    seal: &SealTrust,
    progress: Progress<'_>,
) -> Result<FullInstalled, ApplyError> {
    let target_slot = running.other();
    let uki = bundle.target_for(uki_role(target_slot))?.clone();
    let image = bundle.target_for(ContentRole::SystemImage)?.clone();
    let staging = paths.staging();
    fs::create_dir_all(&staging).map_err(io_error("creating staging directory", &staging))?;
    if !slots.esp_dir.is_dir() {
        return Err(UpdateError::io("the ESP directory", &slots.esp_dir)(std::io::Error::from(std::io::ErrorKind::NotFound)).into());
    }
    let total = image.length + uki.length;
    // The UKI first (small): a corrupt one is refused before the slot is opened.
    let staged_uki = {
        let mut each = |phase: Phase, done: u64, _: u64| progress(phase, done, total);
        stage_target(bundle, &uki, &staging, STAGING_RESERVE, &mut each).await?
    };
    // Would it unlock the data volume? Checked on the verified copy that goes onto the ESP,
    // before anything on the ESP or the slot changes (docs/update.md).
    // And would it open the slot's root verified? Its command line's dm-verity arguments are
    // read now; the tree they name is checked once the slot is written.
    let uki_bytes = fs::read(staged_uki.path()).map_err(io_error("reading the staged UKI", staged_uki.path()))?;
    let verdict = match seal {
        SealTrust::NotApplicable(why) => UkiVerdict::NotApplicable(why.clone()),
        trust => uki::check_uki(&uki_bytes, &uki.name, trust).map_err(|why| ApplyError::UkiRefused(uki::would_not_unlock(target_slot, &why)))?,
    };
    let verity_args = match uki::PeImage::parse(&uki_bytes) {
        Ok(image) => verity::uki_args(&image, &uki.name, running_verified),
        Err(e) if running_verified => Err(format!("{} cannot be read as a UKI: {e}", uki.name)),
        // A box without a verified root and without a seal to check against (the dev profile,
        // whose slots are files): its UKI is not read.
        Err(_) => Ok(None),
    }
    .map_err(ApplyError::RootUnverified)?;
    drop(uki_bytes);
    let plan = SlotPlan {
        slot: slots.path(target_slot).to_owned(),
        running_slot: Some(slots.path(running).to_owned()),
        staging_dir: staging.clone(),
        staging_reserve: STAGING_RESERVE,
    };
    let mut each = |phase: Phase, done: u64, _: u64| progress(phase, uki.length + done, total);
    // The system image is verified into staging before anything on the ESP or the slot
    // changes: a truncated or corrupt image on the stick leaves the box exactly as it was,
    // the entries that boot the inactive slot (its fallback system) included.
    let staged_image = stage_for_slot(bundle, ContentRole::SystemImage, &plan, &mut each).await?;
    // Older entries whose UKI boots the slot about to be rewritten go before the slot is opened:
    // they would start the new system (or, after a power cut, a half-written one) under an old
    // version's name. The running slot's entries are never among them.
    let mut removed = Vec::new();
    if let Some(partuuid) = super::esp::slot_partuuid(slots.path(target_slot)) {
        for old in super::esp::entries_booting(&slots.esp_dir, &partuuid).map_err(io_error("reading the ESP directory", &slots.esp_dir))? {
            fs::remove_file(&old).map_err(io_error("removing an entry that boots the slot being rewritten", &old))?;
            removed.push(old.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
    }
    staged_image.write(&plan, &mut each)?;
    if let Some(args) = &verity_args {
        verity::check_slot(&plan.slot, image.length, args).map_err(ApplyError::RootUnverified)?;
    }
    // The slot holds the verified image and is not bootable yet: no entry names it. Now the
    // entry, with its boot counter. Entries of the same version a failed earlier try left are
    // removed first, so systemd-boot sees exactly one.
    let version = bundle.manifest.version.to_string();
    let entry = boot_entry_name(&bundle.manifest.version);
    let dest = slots.esp_dir.join(&entry);
    let stale: Vec<PathBuf> = fs::read_dir(&slots.esp_dir)
        .map_err(io_error("reading the ESP directory", &slots.esp_dir))?
        .filter_map(|e| e.ok())
        .filter(|e| is_entry_of(&e.file_name().to_string_lossy(), &version))
        .map(|e| e.path())
        .collect();
    for old in stale {
        fs::remove_file(&old).map_err(io_error("removing an earlier entry of this version", &old))?;
    }
    remove_interrupted_copies(&slots.esp_dir).map_err(io_error("removing a UKI copy a power cut left on the ESP", &slots.esp_dir))?;
    place(staged_uki, &dest).map_err(io_error("writing the UKI to the ESP", &dest))?;
    let read_back = wardbox_update::slot::hash_prefix(&dest, uki.length, &mut |_: u64| {})?;
    if read_back != uki.sha256 || fs::metadata(&dest).map(|m| m.len()).ok() != Some(uki.length) {
        let _ = fs::remove_file(&dest);
        return Err(UpdateError::WriteVerify { slot: dest, expected: uki.sha256.clone(), actual: read_back }.into());
    }
    progress(Phase::ReadingBack, total, total);
    Ok(FullInstalled { slot: target_slot, slot_path: plan.slot, boot_entry: entry, bytes: total, removed, uki: verdict })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_come_from_manifest_paths() {
        let n = model_name("manifests/registry.ollama.ai/library/gemma3/270m").expect("name");
        assert_eq!(n.to_string(), "gemma3:270m");
        for bad in ["blobs/x", "manifests/a/b/c", "manifests/a/b/c/d/e", "manifests/h/n/../t"] {
            assert!(model_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copies_a_power_cut_left_on_the_esp_are_told_from_entries() {
        for name in [".wardbox-1.2.0+3.efi.4242.tmp", ".wardbox-1.10.0+3.efi.1.tmp"] {
            assert!(is_interrupted_copy(name), "{name}");
        }
        for name in ["wardbox-1.2.0+3.efi", ".wardbox-1.2.0+3.efi.tmp", ".wardbox-1.2.0+3.efi.x1.tmp", ".other.efi.12.tmp", ".wardbox-1.2.0+3.efi.12.tmp.efi"] {
            assert!(!is_interrupted_copy(name), "{name}");
        }
    }

    #[test]
    fn esp_entries_of_a_version() {
        for name in ["wardbox-1.2.0.efi", "wardbox-1.2.0+3.efi", "wardbox-1.2.0+0-3.efi", "wardbox-1.2.0+2-1.efi"] {
            assert!(is_entry_of(name, "1.2.0"), "{name}");
        }
        for name in ["wardbox-1.2.01.efi", "wardbox-1.2.0+.efi", "wardbox-1.2.0+a.efi", "wardbox-1.2.0+1-2-3.efi", "wardbox-1.2.1+3.efi", "other.efi"] {
            assert!(!is_entry_of(name, "1.2.0"), "{name}");
        }
        assert_eq!(boot_entry_name(&"1.2.0".parse().expect("version")), "wardbox-1.2.0+3.efi");
    }

    #[test]
    fn an_undo_puts_back_what_it_replaced_and_removes_what_it_added() {
        let dir = std::env::temp_dir().join(format!("wardbox-undo-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let (kept, added, backup) = (dir.join("kept"), dir.join("added"), dir.join("backup"));
        fs::write(&kept, "old").expect("write");
        back_up(&kept, &backup).expect("back up");
        fs::write(&kept, "new").expect("write");
        fs::write(&added, "new").expect("write");
        let undo = Undo { steps: vec![Step::Replaced { path: kept.clone(), backup }, Step::Added(added.clone())] };
        assert!(matches!(undo.fail("why".into()), ApplyError::RolledBack { .. }));
        assert_eq!(fs::read_to_string(&kept).expect("read"), "old");
        assert!(!added.exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
