//! `wardbox update inspect|apply|status|receipt`: updates from a USB stick.
//!
//! The bundle is verified by `wardbox-update` (TUF through tough, the stick's file list, the
//! manifest, the decision for this box) before anything else; `crate::update` installs it.
//! Exit codes are stable and documented in `docs/update.md` (10–17 for a bundle that is refused,
//! 18 for an install whose health check failed and was undone). Every apply is audited: who (the
//! OS user), the bundle's manifest digest, kind, versions and outcome; never a file's content.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use jiff::Timestamp;
use serde_json::json;
use wardbox_update::manifest::{BundleKind, Version};
use wardbox_update::slot::Phase;
use wardbox_update::{State, UpdateError, VerifiedBundle, inspect, verify_bundle};

use super::{CliError, CliResult, DEFAULT_CONFIG, agent_alive, cli_actor, load_config};
use crate::config::Config;
use crate::stages::unlock::{VolumeConfig, unlocker};
use crate::update::apply::{self, ApplyError};
use crate::update::installs::{InstallLog, InstallRecord, Outcome};
use crate::update::{UpdatePaths, box_facts, running_slot, running_version, tpm_floor};

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// What a bundle holds: signers, versions (bundle and installed), kind, contents with
    /// sizes, release notes, and whether this box would apply it. Changes nothing.
    Inspect {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The bundle directory on the stick.
        dir: PathBuf,
    },
    /// Verify a bundle, confirm, and install it (models and policy at once, with a health check
    /// and an automatic return to the previous version; a system image into the inactive slot,
    /// started by the next reboot).
    Apply {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        dir: PathBuf,
        /// Do not ask for confirmation (scripts; the person running it has read `inspect`).
        #[arg(long)]
        yes: bool,
    },
    /// Installed versions per track, the running slot, a pending or failed update and why, and
    /// the last bundle applied.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Export a receipt of the last install (JSON) for the clinic's records, quoted by the TPM
    /// when the box has one.
    Receipt {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The TPM to quote with, instead of the configuration's (`swtpm:…` for a dev box).
        #[arg(long)]
        tcti: Option<String>,
    },
}

pub fn run(cmd: UpdateCommand) -> CliResult {
    match cmd {
        UpdateCommand::Inspect { config, dir } => inspect_cmd(&load_config(&config)?, &dir),
        UpdateCommand::Apply { config, dir, yes } => apply_cmd(&load_config(&config)?, &dir, yes),
        UpdateCommand::Status { config, json } => status_cmd(&load_config(&config)?, json),
        UpdateCommand::Receipt { config, out, tcti } => receipt_cmd(&load_config(&config)?, &out, tcti),
    }
}

/// A refusal or failure with its documented exit code.
fn coded(message: impl Into<String>, code: u8) -> CliError {
    CliError { message: message.into(), code }
}

fn update_error(e: &UpdateError) -> CliError {
    coded(e.to_string(), e.exit_code())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))
}

fn show(v: Option<Version>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// The installed version of a track: for the system, the running version or the floor,
/// whichever is higher (as the downgrade decision counts it).
fn installed(state: &State, kind: BundleKind) -> Result<Option<Version>, CliError> {
    let floors = state.floors().map_err(|e| update_error(&e))?;
    Ok(match kind {
        BundleKind::Full => {
            let running = running_version().map_err(|e| update_error(&e))?;
            Some(floors.system.map_or(running, |f| f.max(running)))
        }
        kind => floors.of(kind),
    })
}

// ---------------------------------------------------------------------------------------------
// inspect

fn inspect_cmd(config: &Config, dir: &Path) -> CliResult {
    let volume = unlocker(&config.volume, &config.state_dir).open_for_cli().map_err(CliError::new)?;
    let paths = UpdatePaths::new(&volume.data_dir);
    // Reading only: an unprovisioned box is inspected against a throw-away copy of its root.
    let (state, _throwaway) = paths.state_for_reading(&config.update).map_err(|e| update_error(&e))?;
    let facts = box_facts().map_err(|e| update_error(&e))?;
    let inspection = runtime()?
        .block_on(inspect::inspect_for_box(dir, &state, &facts, Some(Timestamp::now())))
        .map_err(|e| update_error(&e))?;
    print!("{}", inspect::render(&inspection));
    let m = &inspection.bundle.manifest;
    println!(
        "versions   bundle {} {}; installed on this box: {}",
        m.kind,
        m.version,
        show(installed(&state, m.kind)?)
    );
    println!("this box   runs system {} ({})", facts.system_version, facts.architecture);
    if m.kind == BundleKind::Full {
        let tpm = tpm_floor::read(tpm_floor::tcti(config).as_deref(), &paths.state_dir());
        let verdict = match tpm_floor::check_system_bundle(&tpm, m.version, state.floors().ok().and_then(|f| f.system)) {
            Ok(()) => "passes it".to_owned(),
            Err(r) => format!("WOULD BE REFUSED: {}", r.message),
        };
        println!("tpm floor  {}; this bundle {verdict}", tpm.describe());
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// apply

/// Progress on standard error: phase, bytes, rate and time left; at most a few lines a second
/// at a terminal, one every few seconds otherwise.
struct ProgressLine {
    started: Instant,
    last: Option<Instant>,
    phase: Option<Phase>,
    terminal: bool,
}

impl ProgressLine {
    fn new() -> Self {
        ProgressLine { started: Instant::now(), last: None, phase: None, terminal: std::io::stderr().is_terminal() }
    }

    fn update(&mut self, phase: Phase, done: u64, total: u64) {
        let now = Instant::now();
        let every = if self.terminal { Duration::from_millis(200) } else { Duration::from_secs(5) };
        let new_phase = self.phase != Some(phase);
        if new_phase {
            if self.phase.is_some() && self.terminal {
                eprintln!();
            }
            self.phase = Some(phase);
            self.started = now;
        }
        let finished = done >= total;
        if !new_phase && !finished && self.last.is_some_and(|l| now - l < every) {
            return;
        }
        self.last = Some(now);
        let secs = (now - self.started).as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let left = if finished {
            format!("done in {secs:.1} s")
        } else if rate > 0.0 {
            format!("{:.0} s left", total.saturating_sub(done) as f64 / rate)
        } else {
            "time left unknown".into()
        };
        let name = match phase {
            Phase::Verifying => "verifying",
            Phase::Writing => "writing",
            Phase::ReadingBack => "reading back",
        };
        let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let line = format!("{name:<12} {:>10} / {} {pct:>3}%  {}/s  {left}", bytes(done), bytes(total), bytes(rate as u64));
        if self.terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    fn end(&self) {
        if self.terminal && self.phase.is_some() {
            eprintln!();
        }
    }
}

/// A byte count for people: bytes, KiB, MiB or GiB.
fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f >= K * K * K {
        format!("{:.2} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.1} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{n} B")
    }
}

/// Asks the person at the console; refuses without a terminal (a script passes --yes).
fn confirm(question: &str) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(coded(
            "not applied: apply asks for confirmation, and standard input is not a terminal; run it at the console or pass --yes",
            wardbox_update::error::exit::USAGE,
        ));
    }
    eprint!("{question} Type yes to apply: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).map_err(|e| CliError::new(format!("reading the answer: {e}")))?;
    if answer.trim() != "yes" {
        return Err(CliError::new("not applied: not confirmed"));
    }
    Ok(())
}

/// Where a models bundle goes: `update.models_store`, else the supervised engine's store.
fn models_store(config: &Config) -> Result<PathBuf, CliError> {
    config
        .update
        .models_store
        .clone()
        .or_else(|| config.engine.supervise.as_ref().map(|s| s.store.clone()))
        .ok_or_else(|| CliError::new("this configuration names no model store (update.models_store or engine.supervise.store)"))
}

/// The firmware policy file a policy bundle replaces, and the firmware to hold it against.
fn policy_target(config: &Config) -> Result<(PathBuf, Option<PathBuf>), CliError> {
    let efivars = match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Some(c.efivars_dir.clone()),
        VolumeConfig::PlainDirectory { .. } => None,
    };
    let path = config.update.firmware_policy.clone().or_else(|| match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Some(c.firmware_policy.clone()),
        VolumeConfig::PlainDirectory { .. } => None,
    });
    let path = path.ok_or_else(|| {
        CliError::new("this configuration has no firmware policy file (plain-directory volume): set update.firmware_policy")
    })?;
    Ok((path, efivars))
}

/// A running engine to ask during the models health check: the configured or published
/// endpoint, when something answers there. None when the agent (and so its engine) is down.
fn running_engine(config: &Config) -> Option<String> {
    let endpoint = config.engine.endpoint.clone().or_else(|| {
        let text = std::fs::read_to_string(crate::daemon::engine_file(&config.state_dir)).ok()?;
        let published: crate::daemon::PublishedEngine = serde_json::from_str(&text).ok()?;
        agent_alive(published.pid).then_some(published.endpoint)
    })?;
    crate::stages::engine::EngineConfig { endpoint: Some(endpoint.clone()), ..Default::default() }.validate().ok()?;
    let url = endpoint.trim_end_matches('/').trim_start_matches("http://");
    let addr: std::net::SocketAddr = url.parse().ok()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    Some(endpoint)
}

/// Only one apply at a time (two would write the same slot or store).
fn lock(paths: &UpdatePaths) -> Result<nix::fcntl::Flock<std::fs::File>, CliError> {
    std::fs::create_dir_all(&paths.dir).map_err(|e| CliError::new(format!("cannot create {}: {e}", paths.dir.display())))?;
    let path = paths.dir.join("apply.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| CliError::new(format!("cannot open {}: {e}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| CliError::new("another update is being applied on this box; wait for it to finish"))
}

fn apply_cmd(config: &Config, dir: &Path, yes: bool) -> CliResult {
    // The audit trail first: an update that cannot be audited is not applied.
    let (store, volume) = super::audit::open(config)?;
    let audit = |detail: serde_json::Value| super::audit::record(&store, &volume, detail);
    let actor = cli_actor();
    let paths = UpdatePaths::new(&volume.data_dir);
    let _lock = lock(&paths)?;
    // No install runs now (we hold the lock): what a power cut left staged goes.
    if paths.staging().is_dir() {
        wardbox_update::slot::clean_stale_staging(&paths.staging()).map_err(|e| update_error(&e))?;
    }
    let state = paths.open_or_provision_state(&config.update).map_err(|e| update_error(&e))?;
    let facts = box_facts().map_err(|e| update_error(&e))?;
    let rt = runtime()?;

    let bundle = match rt.block_on(verify_bundle(dir, &state, &facts, Some(Timestamp::now()))) {
        Ok(b) => b,
        Err(e) => {
            audit(json!({ "action": "update_refused", "reason": e.to_string(), "exit_code": e.exit_code() }))?;
            return Err(coded(format!("{e}; nothing was changed"), e.exit_code()));
        }
    };
    let m = &bundle.manifest;
    // A full bundle must also pass the TPM's floor, which a restored state directory cannot
    // lower (docs/update.md, anti-rollback).
    let tpm = (m.kind == BundleKind::Full).then(|| tpm_floor::read(tpm_floor::tcti(config).as_deref(), &paths.state_dir()));
    if let Some(tpm) = &tpm {
        let state_floor = state.floors().map_err(|e| update_error(&e))?.system;
        if let Err(refusal) = tpm_floor::check_system_bundle(tpm, m.version, state_floor) {
            audit(json!({
                "action": "update_refused",
                "bundle_sha256": bundle.manifest_sha256,
                "kind": m.kind,
                "to": m.version,
                "reason": refusal.message,
                "exit_code": refusal.exit_code,
            }))?;
            return Err(coded(format!("{}; nothing was changed", refusal.message), refusal.exit_code));
        }
    }
    let from = installed(&state, m.kind)?;
    let total: u64 = bundle.targets.iter().map(|t| t.length).sum();
    println!("bundle     {} {} {} (sha256 of manifest {})", m.product, m.kind, m.version, bundle.manifest_sha256);
    println!("verified   signatures and thresholds against root version {}; not expired; for this box", bundle.root_version);
    println!("versions   {} {} -> {}", m.kind, show(from), m.version);
    println!("contents   {} targets, {total} bytes", bundle.targets.len());
    if let Some(tpm) = &tpm {
        println!("tpm floor  {}", tpm.describe());
    }
    if !yes {
        let what = match m.kind {
            BundleKind::Full => "It writes the system image to the slot that does not run and boots it at the next reboot.",
            BundleKind::ModelsOnly => "It installs the models into the engine's store now.",
            BundleKind::PolicyOnly => "It replaces the firmware policy now.",
        };
        confirm(what)?;
    }

    let base = json!({
        "action": "update_apply",
        "bundle_sha256": bundle.manifest_sha256,
        "kind": m.kind,
        "from": from,
        "to": m.version,
    });
    let with = |extra: serde_json::Value| {
        let mut v = base.clone();
        if let (Some(o), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(extra.clone());
        }
        v
    };
    audit(with(json!({ "phase": "started" })))?;
    let started = Timestamp::now();
    let record = |outcome: Outcome, reason: Option<String>, bytes: u64| InstallRecord {
        bundle_sha256: bundle.manifest_sha256.clone(),
        kind: m.kind,
        from,
        to: m.version,
        actor: actor.clone(),
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

    let mut line = ProgressLine::new();
    let mut progress = |phase: Phase, done: u64, total: u64| line.update(phase, done, total);
    let result = rt.block_on(install(config, &bundle, &paths, &mut progress));
    line.end();
    match result {
        Ok(done) => {
            for l in &done.lines {
                println!("{l}");
            }
            let mut rec = record(done.outcome, None, done.bytes);
            if done.outcome == Outcome::PendingReboot {
                rec.slot = done.slot.clone();
                rec.boot_entry = done.boot_entry.clone();
                rec.boot_id = crate::update::boot_id();
            }
            // The install is done whatever follows; the log and the audit trail say so first.
            let logged = log.append(rec);
            audit(with(json!({ "phase": "finished", "outcome": done.outcome.as_str(), "slot": done.slot, "boot_entry": done.boot_entry })))?;
            logged.map_err(|e| CliError::new(format!("installed, but {e}")))?;
            // The trust moves forward only after a successful install; the version floor of
            // models and policy now (a system's after its healthy boot).
            bundle
                .accept(&state)
                .and_then(|()| if done.outcome == Outcome::Installed { state.record_installed(m) } else { Ok(()) })
                .map_err(|e| CliError::new(format!("installed, but the update state was not moved forward: {e}")))?;
            Ok(ExitCode::SUCCESS)
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
            audit(with(json!({ "phase": "finished", "outcome": outcome.as_str(), "reason": message, "exit_code": e.exit_code() })))?;
            logged.map_err(CliError::new)?;
            Err(coded(message, e.exit_code()))
        }
    }
}

/// What a successful install did, for the log and the console.
struct Done {
    outcome: Outcome,
    bytes: u64,
    slot: Option<String>,
    boot_entry: Option<String>,
    lines: Vec<String>,
}

async fn install(
    config: &Config,
    bundle: &VerifiedBundle,
    paths: &UpdatePaths,
    progress: apply::Progress<'_>,
) -> Result<Done, ApplyError> {
    let not_ready = |e: CliError| ApplyError::NotReady(e.to_string());
    match bundle.manifest.kind {
        BundleKind::ModelsOnly => {
            let store = models_store(config).map_err(not_ready)?;
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
            let (path, efivars) = policy_target(config).map_err(not_ready)?;
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
            let running = running_slot(&config.update.slots).map_err(|e| not_ready(CliError::new(e)))?;
            let r = apply::install_full(bundle, &config.update.slots, running, paths, progress).await?;
            let mut lines = vec![
                format!("written    system image to slot {} ({}), read back and verified", r.slot, r.slot_path.display()),
                format!("boot entry {} on {} ({} tries, then systemd-boot returns to the current system)", r.boot_entry, config.update.slots.esp_dir.display(), apply::BOOT_TRIES),
                format!("running    slot {running} was not touched"),
                format!("next       reboot to start version {}; the system floor is raised after its first healthy boot", bundle.manifest.version),
            ];
            let extra: Vec<&str> = bundle
                .targets
                .iter()
                .filter_map(|t| t.role)
                .filter(|r| matches!(r, wardbox_update::ContentRole::ModelManifest | wardbox_update::ContentRole::FirmwarePolicy))
                .map(|r| r.as_str())
                .collect();
            if !extra.is_empty() {
                lines.push("NOTE       this full bundle also carries models or a firmware policy; they are not installed by a full apply yet (apply a models-only or policy-only bundle)".into());
            }
            Ok(Done { outcome: Outcome::PendingReboot, bytes: r.bytes, slot: Some(r.slot.to_string()), boot_entry: Some(r.boot_entry), lines })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// status

fn status_cmd(config: &Config, as_json: bool) -> CliResult {
    let volume = unlocker(&config.volume, &config.state_dir).open_for_cli().map_err(CliError::new)?;
    let paths = UpdatePaths::new(&volume.data_dir);
    let (state, throwaway) = paths.state_for_reading(&config.update).map_err(|e| update_error(&e))?;
    let floors = state.floors().map_err(|e| update_error(&e))?;
    let running = running_version().map_err(|e| update_error(&e))?;
    let slot = running_slot(&config.update.slots);
    let installs = InstallLog::new(paths.installs()).read().map_err(CliError::new)?;
    let pending = installs.iter().rev().find(|r| r.kind == BundleKind::Full).filter(|r| r.outcome == Outcome::PendingReboot);
    let last = installs.last();
    // The newest failure, unless the same track installed something after it.
    let failed = installs.iter().enumerate().rev().find(|(_, r)| matches!(r.outcome, Outcome::RolledBack | Outcome::Failed | Outcome::FellBack)).filter(
        |(i, f)| !installs[i + 1..].iter().any(|r| r.kind == f.kind && matches!(r.outcome, Outcome::Installed | Outcome::PendingReboot)),
    );
    let last_accepted = installs.iter().rev().find(|r| matches!(r.outcome, Outcome::Installed | Outcome::PendingReboot));
    let tpm = tpm_floor::read(tpm_floor::tcti(config).as_deref(), &paths.state_dir());
    if as_json {
        let out = json!({
            "system": {
                "running": running,
                "floor": floors.system,
                "tpm_floor": tpm.version(),
                "tpm_floor_state": tpm.describe(),
                "slot": slot.as_ref().ok().map(|s| s.as_str()),
                "slot_error": slot.as_ref().err(),
            },
            "models": floors.models,
            "policy": floors.policy,
            "time_floor": floors.time,
            "trust_provisioned": throwaway.is_none(),
            "pending": pending,
            "failed": failed.map(|(_, r)| r),
            "last": last,
            "last_applied_bundle_sha256": last_accepted.map(|r| &r.bundle_sha256),
        });
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| CliError::new(e.to_string()))?);
        return Ok(ExitCode::SUCCESS);
    }
    let slot_text = match &slot {
        Ok(s) => format!("slot {s}"),
        Err(e) => format!("slot unknown: {e}"),
    };
    println!("system     {running} running from {slot_text}; floor {}", show(floors.system));
    println!("tpm floor  {}", tpm.describe());
    println!("models     {}", show(floors.models));
    println!("policy     {}", show(floors.policy));
    if throwaway.is_some() {
        println!("trust      not provisioned yet: the image's root ({}) is trusted until the first update", config.update.image_root.display());
    }
    match pending {
        Some(p) => println!(
            "pending    system {} in slot {} ({}), installed {}: waiting for a reboot",
            p.to,
            p.slot.as_deref().unwrap_or("?"),
            p.boot_entry.as_deref().unwrap_or("?"),
            p.finished
        ),
        None => println!("pending    none"),
    }
    if let Some((_, f)) = failed {
        println!("FAILED     {} {} -> {} at {}: {}", f.kind, show(f.from), f.to, f.finished, f.reason.as_deref().unwrap_or(f.outcome.as_str()));
    }
    match last {
        Some(r) => println!("last       {} {} -> {} {} at {} by {} (bundle {})", r.kind, show(r.from), r.to, r.outcome.as_str(), r.finished, r.actor, r.bundle_sha256),
        None => println!("last       no update was ever applied"),
    }
    if let Some(r) = last_accepted {
        println!("applied    last bundle applied: {}", r.bundle_sha256);
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// receipt

fn receipt_cmd(config: &Config, out: &Path, tcti: Option<String>) -> CliResult {
    let (store, volume) = super::audit::open(config)?;
    let paths = UpdatePaths::new(&volume.data_dir);
    let last = InstallLog::new(paths.installs())
        .last()
        .map_err(CliError::new)?
        .ok_or_else(|| CliError::new("no update was ever applied on this box: there is nothing to receipt"))?;
    let receipt = json!({
        "product": crate::update::PRODUCT,
        "architecture": std::env::consts::ARCH,
        "system_version": running_version().map_err(|e| update_error(&e))?,
        "install": last,
        "exported": Timestamp::now(),
        "exported_by": cli_actor(),
    });
    // The quote covers the receipt's bytes exactly as they are written below.
    let receipt_bytes = serde_json::to_vec(&receipt).map_err(|e| CliError::new(e.to_string()))?;
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&receipt_bytes).into();
    let tcti = tcti.or_else(|| match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Some(c.tcti.clone()),
        VolumeConfig::PlainDirectory { .. } => None,
    });
    let quote = match &tcti {
        Some(tcti) => {
            let mut quoter = wardbox_report::Quoter::connect(tcti)?;
            Some(quoter.quote(&digest, &wardbox_report::quote::BOOT_PCRS)?)
        }
        None => None,
    };
    let receipt_text = String::from_utf8(receipt_bytes).map_err(|e| CliError::new(e.to_string()))?;
    let doc = json!({
        "receipt": receipt_text,
        "digest": format!("sha256:{}", hex::encode(digest)),
        "quote": quote,
        "signed": quote.is_some(),
    });
    let mut text = serde_json::to_vec_pretty(&doc).map_err(|e| CliError::new(e.to_string()))?;
    text.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| CliError::new(format!("{}: {e} (a receipt never overwrites a file)", out.display())))?;
    file.write_all(&text).and_then(|()| file.sync_all()).map_err(|e| CliError::new(format!("{}: {e}", out.display())))?;
    super::audit::record(&store, &volume, json!({ "action": "update_receipt", "bundle_sha256": last.bundle_sha256, "signed": quote.is_some() }))?;
    println!("receipt of {} {} -> {} ({}) written to {}", last.kind, show(last.from), last.to, last.outcome.as_str(), out.display());
    if quote.is_none() {
        println!("NOT SIGNED: this configuration has no TPM (dev profile); give one with --tcti to have the receipt quoted");
    }
    Ok(ExitCode::SUCCESS)
}
