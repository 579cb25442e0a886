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
use wardbox_update::{State, UpdateError, inspect};

use super::{CliError, CliResult, DEFAULT_CONFIG, cli_actor, load_config};
use crate::config::Config;
use crate::stages::unlock::unlocker;
use crate::update::service::bytes;
use crate::update::{UpdatePaths, box_facts, flow, tpm_floor};

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
    /// Adopt the TPM's anti-rollback counter again after the state directory lost its base
    /// (restored from a copy older than the counter), at a system floor IT states: not below the
    /// running version or the state directory's floor. Audited. Until then every full bundle is
    /// refused.
    TpmAdopt {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The system version this box is known to have installed and booted healthy.
        #[arg(long)]
        floor: String,
    },
    /// The root helper that installs a full bundle the admin Updates page confirmed: one JSON
    /// request on standard input, JSON events on standard output (systemd starts it for each
    /// connection to `wardbox-update-install.socket`). It finds and verifies the bundle itself.
    /// Not for people: docs/update.md, "Who writes the slots".
    #[command(hide = true)]
    InstallHelper {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check an install receipt on any machine: its bytes against its digest, and the TPM quote
    /// over that digest against the box's attestation key (`wardbox report export-ak`). Exit 0
    /// when it verifies, 3 when it is refused (unsigned, edited, another box's, altered).
    VerifyReceipt {
        /// The receipt file (`wardbox update receipt --out`, or the admin page's download).
        file: PathBuf,
        /// The box's attestation key, PEM.
        #[arg(long)]
        ak: PathBuf,
    },
}

pub fn run(cmd: UpdateCommand) -> CliResult {
    match cmd {
        UpdateCommand::Inspect { config, dir } => inspect_cmd(&load_config(&config)?, &dir),
        UpdateCommand::Apply { config, dir, yes } => apply_cmd(&load_config(&config)?, &dir, yes),
        UpdateCommand::Status { config, json } => status_cmd(&load_config(&config)?, json),
        UpdateCommand::Receipt { config, out, tcti } => receipt_cmd(&load_config(&config)?, &out, tcti),
        UpdateCommand::VerifyReceipt { file, ak } => verify_receipt_cmd(&file, &ak),
        UpdateCommand::TpmAdopt { config, floor } => tpm_adopt_cmd(&load_config(&config)?, &floor),
        UpdateCommand::InstallHelper { config } => install_helper_cmd(&config),
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

/// The installed version of a track (see `flow::installed`).
fn installed(state: &State, kind: BundleKind) -> Result<Option<Version>, CliError> {
    flow::installed(state, kind).map_err(|e| update_error(&e))
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
        // Would its UKI unlock this box's data (its PCR 11 signature against the volume's seal)?
        match runtime()?.block_on(crate::update::uki::inspect(config, &inspection.bundle)) {
            Ok(line) => println!("uki        {line}"),
            Err(refusal) => println!("uki        WOULD BE REFUSED: {refusal}"),
        }
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

fn apply_cmd(config: &Config, dir: &Path, yes: bool) -> CliResult {
    // The audit trail first: an update that cannot be audited is not applied.
    let (store, volume) = super::audit::open(config)?;
    let mut audit = |detail: serde_json::Value| super::audit::record(&store, &volume, detail).map_err(|e| e.message);
    let actor = cli_actor();
    let paths = UpdatePaths::new(&volume.data_dir);
    let rt = runtime()?;
    let refused = |r: flow::Refused| coded(r.message, r.exit_code);
    let checked = flow::verify(&rt, config, &paths, dir, &mut audit).map_err(refused)?;
    let bundle = &checked.bundle;
    let m = &bundle.manifest;
    println!("bundle     {} {} {} (sha256 of manifest {})", m.product, m.kind, m.version, bundle.manifest_sha256);
    println!("verified   signatures and thresholds against root version {}; not expired; for this box", bundle.root_version);
    println!("versions   {} {} -> {}", m.kind, show(checked.from), m.version);
    println!("contents   {} targets, {} bytes", bundle.targets.len(), checked.total);
    if let Some(tpm) = &checked.tpm {
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
    let mut line = ProgressLine::new();
    let mut progress = |phase: Phase, done: u64, total: u64| line.update(phase, done, total);
    let result = flow::install(&rt, config, &paths, &checked, &actor, &mut audit, &mut progress);
    line.end();
    let done = result.map_err(refused)?;
    for l in &done.lines {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// install helper

fn install_helper_cmd(config: &Path) -> CliResult {
    use crate::update::helper::{Event, EventWriter};
    let mut events = EventWriter::new(std::io::stdout());
    let result = load_config(config).map_err(|e| flow::Refused { message: e.message.clone(), exit_code: e.code }).and_then(|config| install_helper(&config, &mut events));
    let (event, code) = match result {
        Ok(event) => (event, 0),
        Err(r) => (Event::Refused { message: r.message, exit_code: r.exit_code }, r.exit_code),
    };
    events.send(&event).map_err(|e| CliError::new(format!("cannot answer the agent: {e}")))?;
    Ok(ExitCode::from(code))
}

/// One request from the agent: find the bundle on the sticks, verify it here, check the
/// confirmed digest, install it as the admin who confirmed, report progress.
fn install_helper(config: &Config, events: &mut crate::update::helper::EventWriter<std::io::Stdout>) -> Result<crate::update::helper::Event, flow::Refused> {
    use crate::update::helper::{Event, phase_name, read_request};
    let request = read_request(std::io::stdin().lock()).map_err(flow::Refused::operational)?;
    let found = crate::update::service::find_bundles(&config.update.usb_dir).map_err(flow::Refused::operational)?;
    let Some((_, dir)) = found.into_iter().find(|(id, _)| *id == request.bundle) else {
        return Err(flow::Refused::operational(format!("no bundle {:?} on an inserted stick (was it removed?); nothing was changed", request.bundle)));
    };
    let (store, volume) = super::audit::open(config).map_err(|e| flow::Refused { message: e.message.clone(), exit_code: e.code })?;
    let mut audit = |detail: serde_json::Value| super::audit::record_as(&store, &volume, &request.actor, detail).map_err(|e| e.message);
    let paths = UpdatePaths::new(&volume.data_dir);
    let rt = runtime().map_err(|e| flow::Refused::operational(e.message))?;
    let checked = flow::verify(&rt, config, &paths, &dir, &mut audit)?;
    let bundle = &checked.bundle;
    if !bundle.manifest_sha256.eq_ignore_ascii_case(&request.sha256) {
        let message = format!(
            "the bundle {} on the stick is not the one confirmed (manifest sha256 {} now, {} confirmed); nothing was changed",
            request.bundle, bundle.manifest_sha256, request.sha256
        );
        audit(json!({ "action": "update_refused", "bundle_sha256": bundle.manifest_sha256, "reason": message, "exit_code": 1 })).map_err(flow::Refused::operational)?;
        return Err(flow::Refused::operational(message));
    }
    let verified = Event::Verified { kind: bundle.manifest.kind.to_string(), version: bundle.manifest.version.to_string(), total: checked.total };
    events.send(&verified).map_err(|e| flow::Refused::operational(format!("cannot answer the agent: {e}; nothing was changed")))?;
    let mut progress = |phase: Phase, done: u64, total: u64| {
        // A progress line the agent does not read stops nothing: the install goes on.
        let _ = events.send(&Event::Progress { phase: phase_name(phase).to_owned(), done, total });
    };
    let done = flow::install(&rt, config, &paths, &checked, &request.actor, &mut audit, &mut progress)?;
    Ok(Event::Done { outcome: done.outcome.as_str().to_owned(), lines: done.lines })
}

// ---------------------------------------------------------------------------------------------
// status

fn status_cmd(config: &Config, as_json: bool) -> CliResult {
    let volume = unlocker(&config.volume, &config.state_dir).open_for_cli().map_err(CliError::new)?;
    let status = crate::update::status::read(config, &volume.data_dir).map_err(CliError::new)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status.json).map_err(|e| CliError::new(e.to_string()))?);
    } else {
        for (label, text) in &status.lines {
            println!("{label:<10} {text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// receipt

fn receipt_cmd(config: &Config, out: &Path, tcti: Option<String>) -> CliResult {
    let (store, volume) = super::audit::open(config)?;
    let tcti = tcti.or_else(|| crate::update::receipt::tcti(config));
    let receipt = crate::update::receipt::make(&volume.data_dir, &cli_actor(), tcti.as_deref()).map_err(CliError::new)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| CliError::new(format!("{}: {e} (a receipt never overwrites a file)", out.display())))?;
    file.write_all(&receipt.document).and_then(|()| file.sync_all()).map_err(|e| CliError::new(format!("{}: {e}", out.display())))?;
    let last = &receipt.install;
    super::audit::record(&store, &volume, json!({ "action": "update_receipt", "bundle_sha256": last.bundle_sha256, "signed": receipt.signed }))?;
    println!("receipt of {} {} -> {} ({}) written to {}", last.kind, show(last.from), last.to, last.outcome.as_str(), out.display());
    if !receipt.signed {
        println!("NOT SIGNED: this configuration has no TPM (dev profile); give one with --tcti to have the receipt quoted");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// verify-receipt

fn verify_receipt_cmd(file: &Path, ak: &Path) -> CliResult {
    let read = |p: &Path| std::fs::read(p).map_err(|e| CliError::new(format!("{}: {e}", p.display())));
    let ak_text = String::from_utf8(read(ak)?).map_err(|_| CliError::new(format!("{}: not a PEM text file", ak.display())))?;
    let v = crate::update::receipt::verify(&read(file)?, &ak_text).map_err(|e| CliError::check_failed(format!("REFUSED: {e}")))?;
    let i = &v.receipt["install"];
    let s = |v: &serde_json::Value| v.as_str().map_or_else(|| "none".to_owned(), str::to_owned);
    println!("VERIFIED   receipt {} quoted by this box's attestation key", v.digest);
    println!("install    {} {} -> {} {} at {} by {}", s(&i["kind"]), s(&i["from"]), s(&i["to"]), s(&i["outcome"]), s(&i["finished"]), s(&i["actor"]));
    println!("bundle     {}", s(&i["bundle_sha256"]));
    println!("exported   {} by {}", s(&v.receipt["exported"]), s(&v.receipt["exported_by"]));
    println!("tpm        reset count {}; boot PCRs {}", v.tpm_reset_count, v.pcrs.iter().map(|(i, _)| i.to_string()).collect::<Vec<_>>().join(","));
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// tpm-adopt

fn tpm_adopt_cmd(config: &Config, floor: &str) -> CliResult {
    let floor: Version = floor.parse().map_err(|e| coded(format!("--floor {floor:?}: {e}"), wardbox_update::error::exit::USAGE))?;
    let (store, volume) = super::audit::open(config)?;
    let paths = UpdatePaths::new(&volume.data_dir);
    let tcti = tpm_floor::tcti(config).ok_or_else(|| CliError::new("this box has no TPM for the anti-rollback counter (dev profile): nothing to adopt"))?;
    let (state, _throwaway) = paths.state_for_reading(&config.update).map_err(|e| update_error(&e))?;
    let lowest = installed(&state, BundleKind::Full)?.unwrap_or(floor);
    if floor < lowest {
        return Err(CliError::new(format!(
            "--floor {floor} is below what this box knows is installed ({lowest}: the running version or the state directory's floor); nothing was changed"
        )));
    }
    let adopted = tpm_floor::adopt(&tcti, &paths.state_dir(), floor).map_err(|e| CliError::new(format!("{e}; nothing was changed")))?;
    super::audit::record(&store, &volume, json!({ "action": "update_tpm_adopt", "to": floor }))?;
    println!("tpm floor  adopted at {floor} ({} increments); full bundles must now be above it", adopted.increments);
    Ok(ExitCode::SUCCESS)
}
