//! One apply, from the stick to the install log, shared by `wardbox update apply` and the admin
//! Updates page so both refuse, install, log and audit the same way:
//!
//! 1. [`verify`]: one apply at a time (a lock), staging files a power cut left are removed, the
//!    bundle is verified (`wardbox_update::verify_bundle`) and, for a full bundle, held to the
//!    TPM floor and its UKI to the data volume's seal (`super::uki`: the PCR 11 signature). A
//!    refusal is audited (`update_refused`) and changes nothing.
//! 2. The caller shows what it is and gets a confirmation (console or admin page).
//! 3. [`install`]: audited as started, installed by kind (`super::apply`), recorded in the install
//!    log, audited as finished; the trust moves forward only after a successful install.
//!
//! The steps are blocking functions that run the async parts on the runtime they are given, so
//! the audit callback (which may block on the audit writer) never runs inside async code.
//! Audit records go through a callback, so the console records them as the OS user and the page
//! as the signed-in admin; they hold versions, digests and outcomes, never file content.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use tokio::runtime::Runtime;
use serde_json::json;
use wardbox_update::manifest::{BundleKind, Version};
use wardbox_update::{State, UpdateError, VerifiedBundle, verify_bundle};

use super::apply::{self, ApplyError};
use super::installs::{InstallLog, InstallRecord, Outcome};
use super::tpm_floor::{self, TpmFloor};
use super::uki::{self, UkiVerdict};
use super::{UpdatePaths, box_facts, running_slot, running_version};
use crate::config::Config;
use crate::stages::unlock::VolumeConfig;

/// A refusal or failure with its documented exit code (docs/update.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub message: String,
    pub exit_code: u8,
}

impl Refused {
    pub fn operational(message: impl Into<String>) -> Self {
        Refused { message: message.into(), exit_code: wardbox_update::error::exit::OPERATIONAL }
    }
    fn update(e: &UpdateError) -> Self {
        Refused { message: e.to_string(), exit_code: e.exit_code() }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Records one audit detail (an `admin_action`) as whoever applies.
pub type Audit<'a> = &'a mut dyn FnMut(serde_json::Value) -> Result<(), String>;

/// A verified bundle, ready to install once confirmed. Holds the apply lock.
pub struct Checked {
    pub bundle: VerifiedBundle,
    pub state: State,
    /// The installed version of the bundle's track.
    pub from: Option<Version>,
    /// A full bundle's TPM floor (passed).
    pub tpm: Option<TpmFloor>,
    /// A full bundle's UKI check (passed, or not applicable on this box).
    pub uki: Option<UkiVerdict>,
    /// Bytes of all targets.
    pub total: u64,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("bundle", &self.bundle.manifest_sha256)
            .field("from", &self.from)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// The installed version of a track: for the system, the running version or the floor,
/// whichever is higher (as the downgrade decision counts it).
pub fn installed(state: &State, kind: BundleKind) -> Result<Option<Version>, UpdateError> {
    let floors = state.floors()?;
    Ok(match kind {
        BundleKind::Full => {
            let running = running_version()?;
            Some(floors.system.map_or(running, |f| f.max(running)))
        }
        kind => floors.of(kind),
    })
}

/// Only one apply at a time (two would write the same slot or store).
fn lock(paths: &UpdatePaths) -> Result<nix::fcntl::Flock<std::fs::File>, Refused> {
    std::fs::create_dir_all(&paths.dir).map_err(|e| Refused::operational(format!("cannot create {}: {e}", paths.dir.display())))?;
    let path = paths.dir.join("apply.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Refused::operational(format!("cannot open {}: {e}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| Refused::operational("another update is being applied on this box; wait for it to finish"))
}

/// Step 1: lock, clean stale staging, verify, hold a full bundle to the TPM floor. Refusals
/// are audited and change nothing.
pub fn verify(rt: &Runtime, config: &Config, paths: &UpdatePaths, dir: &Path, audit: Audit<'_>) -> Result<Checked, Refused> {
    let lock = lock(paths)?;
    // No install runs now (we hold the lock): what a power cut left staged goes.
    if paths.staging().is_dir() {
        wardbox_update::slot::clean_stale_staging(&paths.staging()).map_err(|e| Refused::update(&e))?;
    }
    let state = paths.open_or_provision_state(&config.update).map_err(|e| Refused::update(&e))?;
    let facts = box_facts().map_err(|e| Refused::update(&e))?;
    let bundle = match rt.block_on(verify_bundle(dir, &state, &facts, Some(Timestamp::now()))) {
        Ok(b) => b,
        Err(e) => {
            audit(json!({ "action": "update_refused", "reason": e.to_string(), "exit_code": e.exit_code() })).map_err(Refused::operational)?;
            return Err(Refused { message: format!("{e}; nothing was changed"), exit_code: e.exit_code() });
        }
    };
    let m = &bundle.manifest;
    // A full bundle must also pass the TPM's floor, which a restored state directory cannot
    // lower (docs/update.md, anti-rollback).
    let tpm = (m.kind == BundleKind::Full).then(|| tpm_floor::read(tpm_floor::tcti(config).as_deref(), &paths.state_dir()));
    if let Some(tpm) = &tpm {
        let state_floor = state.floors().map_err(|e| Refused::update(&e))?.system;
        if let Err(refusal) = tpm_floor::check_system_bundle(tpm, m.version, state_floor) {
            audit(json!({
                "action": "update_refused",
                "bundle_sha256": bundle.manifest_sha256,
                "kind": m.kind,
                "to": m.version,
                "reason": refusal.message,
                "exit_code": refusal.exit_code,
            }))
            .map_err(Refused::operational)?;
            return Err(Refused { message: format!("{}; nothing was changed", refusal.message), exit_code: refusal.exit_code });
        }
    }
    // A full bundle's UKI must unlock the data volume, or the update ends at the recovery
    // prompt. (Without a known running slot the install refuses anyway, before any write.)
    let mut uki_verdict = None;
    if m.kind == BundleKind::Full
        && let Ok(running) = running_slot(&config.update.slots)
    {
        match rt.block_on(uki::check_bundle(config, &bundle, running.other())) {
            Ok(verdict) => uki_verdict = Some(verdict),
            Err((message, exit_code)) => {
                audit(json!({
                    "action": "update_refused",
                    "bundle_sha256": bundle.manifest_sha256,
                    "kind": m.kind,
                    "to": m.version,
                    "reason": message,
                    "exit_code": exit_code,
                }))
                .map_err(Refused::operational)?;
                return Err(Refused { message: format!("{message}; nothing was changed"), exit_code });
            }
        }
    }
    let from = installed(&state, m.kind).map_err(|e| Refused::update(&e))?;
    let total = bundle.targets.iter().map(|t| t.length).sum();
    Ok(Checked { bundle, state, from, tpm, uki: uki_verdict, total, _lock: lock })
}

/// What a successful install did, for the console, the page and the log.
#[derive(Debug, Clone)]
pub struct Done {
    pub outcome: Outcome,
    pub bytes: u64,
    pub slot: Option<String>,
    pub boot_entry: Option<String>,
    /// What happened, in lines for people.
    pub lines: Vec<String>,
}

/// Step 3: install a confirmed bundle as `actor`, log it, audit it, move the trust forward.
pub fn install(
    rt: &Runtime,
    config: &Config,
    paths: &UpdatePaths,
    checked: &Checked,
    actor: &str,
    audit: Audit<'_>,
    progress: apply::Progress<'_>,
) -> Result<Done, Refused> {
    let bundle = &checked.bundle;
    let m = &bundle.manifest;
    let base = json!({
        "action": "update_apply",
        "bundle_sha256": bundle.manifest_sha256,
        "kind": m.kind,
        "from": checked.from,
        "to": m.version,
    });
    let with = |extra: serde_json::Value| {
        let mut v = base.clone();
        if let (Some(o), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(extra.clone());
        }
        v
    };
    audit(with(json!({ "phase": "started" }))).map_err(Refused::operational)?;
    let started = Timestamp::now();
    let record = |outcome: Outcome, reason: Option<String>, bytes: u64| InstallRecord {
        bundle_sha256: bundle.manifest_sha256.clone(),
        kind: m.kind,
        from: checked.from,
        to: m.version,
        actor: actor.to_owned(),
        started,
        finished: Timestamp::now(),
        outcome,
        reason,
        bytes,
        slot: None,
        boot_entry: None,
        boot_id: None,
    };
    let log = InstallLog::new(paths.installs());
    match rt.block_on(install_kind(config, bundle, paths, progress)) {
        Ok(done) => {
            let mut rec = record(done.outcome, None, done.bytes);
            if done.outcome == Outcome::PendingReboot {
                rec.slot = done.slot.clone();
                rec.boot_entry = done.boot_entry.clone();
                rec.boot_id = super::boot_id();
            }
            // The install is done whatever follows; the log and the audit trail say so first.
            let logged = log.append(rec);
            audit(with(json!({ "phase": "finished", "outcome": done.outcome.as_str(), "slot": done.slot, "boot_entry": done.boot_entry })))
                .map_err(Refused::operational)?;
            logged.map_err(|e| Refused::operational(format!("installed, but {e}")))?;
            // The trust moves forward only after a successful install; the version floor of
            // models and policy now (a system's after its healthy boot).
            bundle
                .accept(&checked.state)
                .and_then(|()| if done.outcome == Outcome::Installed { checked.state.record_installed(m) } else { Ok(()) })
                .map_err(|e| Refused::operational(format!("installed, but the update state was not moved forward: {e}")))?;
            Ok(done)
        }
        Err(e) => {
            let outcome = match &e {
                ApplyError::RolledBack { .. } => Outcome::RolledBack,
                _ => Outcome::Failed,
            };
            let message = e.to_string();
            // The log and the audit trail both say what happened; a failure to write either is
            // said too, after the install's own message.
            let logged = log.append(record(outcome, Some(message.clone()), 0));
            audit(with(json!({ "phase": "finished", "outcome": outcome.as_str(), "reason": message, "exit_code": e.exit_code() })))
                .map_err(Refused::operational)?;
            logged.map_err(Refused::operational)?;
            Err(Refused { message, exit_code: e.exit_code() })
        }
    }
}

/// Where a models bundle goes: `update.models_store`, else the supervised engine's store.
fn models_store(config: &Config) -> Result<PathBuf, String> {
    config
        .update
        .models_store
        .clone()
        .or_else(|| config.engine.supervise.as_ref().map(|s| s.store.clone()))
        .ok_or_else(|| "this configuration names no model store (update.models_store or engine.supervise.store)".to_owned())
}

/// The firmware policy file a policy bundle replaces, and the firmware to hold it against.
fn policy_target(config: &Config) -> Result<(PathBuf, Option<PathBuf>), String> {
    let efivars = match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Some(c.efivars_dir.clone()),
        VolumeConfig::PlainDirectory { .. } => None,
    };
    let path = config.update.firmware_policy.clone().or_else(|| match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Some(c.firmware_policy.clone()),
        VolumeConfig::PlainDirectory { .. } => None,
    });
    let path = path.ok_or("this configuration has no firmware policy file (plain-directory volume): set update.firmware_policy")?;
    Ok((path, efivars))
}

/// A running engine to ask during the models health check: the configured or published
/// endpoint, when something answers there. None when the agent (and so its engine) is down.
fn running_engine(config: &Config) -> Option<String> {
    let endpoint = config.engine.endpoint.clone().or_else(|| {
        let text = std::fs::read_to_string(crate::daemon::engine_file(&config.state_dir)).ok()?;
        let published: crate::daemon::PublishedEngine = serde_json::from_str(&text).ok()?;
        crate::cli::agent_alive(published.pid).then_some(published.endpoint)
    })?;
    crate::stages::engine::EngineConfig { endpoint: Some(endpoint.clone()), ..Default::default() }.validate().ok()?;
    let url = endpoint.trim_end_matches('/').trim_start_matches("http://");
    let addr: std::net::SocketAddr = url.parse().ok()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    Some(endpoint)
}

async fn install_kind(config: &Config, bundle: &VerifiedBundle, paths: &UpdatePaths, progress: apply::Progress<'_>) -> Result<Done, ApplyError> {
    match bundle.manifest.kind {
        BundleKind::ModelsOnly => {
            let store = models_store(config).map_err(ApplyError::NotReady)?;
            let engine = running_engine(config);
            let r = apply::install_models(bundle, &store, paths, engine.as_deref(), progress).await?;
            Ok(Done {
                outcome: Outcome::Installed,
                bytes: r.bytes,
                slot: None,
                boot_entry: None,
                lines: vec![
                    format!("installed  models {} into {} ({} new blobs, {} bytes)", r.models.join(", "), store.display(), r.blobs_added, r.bytes),
                    format!("health     every model resolves in the store; {}", r.engine_check),
                    format!("previous   the manifests it replaced are kept in {}", paths.previous().join("models").display()),
                ],
            })
        }
        BundleKind::PolicyOnly => {
            let (path, efivars) = policy_target(config).map_err(ApplyError::NotReady)?;
            let r = apply::install_policy(bundle, &path, efivars.as_deref(), paths, progress).await?;
            Ok(Done {
                outcome: Outcome::Installed,
                bytes: r.bytes,
                slot: None,
                boot_entry: None,
                lines: vec![
                    format!("installed  firmware policy {} ({} bytes)", r.path.display(), r.bytes),
                    format!("health     {}", r.checked),
                    format!("previous   {}", r.previous.map_or_else(|| "none (there was no policy file)".to_owned(), |p| format!("kept in {}", p.display()))),
                    "next boot  the unlock stage holds the box to the new policy".to_owned(),
                ],
            })
        }
        BundleKind::Full => {
            let running = running_slot(&config.update.slots).map_err(ApplyError::NotReady)?;
            let seal = uki::seal_trust(config).map_err(ApplyError::NotReady)?;
            // The dev profile names its running slot and has no verified root of its own.
            let running_verified = config.update.slots.running.is_none() && super::verity::running_system_verified();
            let r = apply::install_full(bundle, &config.update.slots, running, running_verified, paths, &seal, progress).await?;
            let mut lines = vec![
                format!("written    system image to slot {} ({}), read back and verified", r.slot, r.slot_path.display()),
                format!("boot entry {} on {} ({} tries, then systemd-boot returns to the current system)", r.boot_entry, config.update.slots.esp_dir.display(), apply::BOOT_TRIES),
                format!("uki        {}", r.uki.describe()),
                format!("running    slot {running} was not touched"),
                if r.removed.is_empty() {
                    format!("old entries none on the ESP booted slot {}", r.slot)
                } else {
                    format!("old entries removed (they booted slot {}): {}", r.slot, r.removed.join(", "))
                },
                format!("next       reboot to start version {}; the system floor is raised after its first healthy boot", bundle.manifest.version),
            ];
            let extra = bundle
                .targets
                .iter()
                .filter_map(|t| t.role)
                .any(|r| matches!(r, wardbox_update::ContentRole::ModelManifest | wardbox_update::ContentRole::FirmwarePolicy));
            if extra {
                lines.push("NOTE       this full bundle also carries models or a firmware policy; they are not installed by a full apply yet (apply a models-only or policy-only bundle)".into());
            }
            Ok(Done { outcome: Outcome::PendingReboot, bytes: r.bytes, slot: Some(r.slot.to_string()), boot_entry: Some(r.boot_entry), lines })
        }
    }
}
