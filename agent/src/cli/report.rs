//! `wardbox report generate|verify|export-ak`: the compliance checklist report
//! (`wardbox-report`, see docs/report.md).
//!
//! This file is the report's side effects: it gathers [`Facts`] from the real components (the
//! status file, the volume, the TPM, the store and its audit chain, the firewall read-back, live
//! TLS and engine probes, sysfs), hands them to the pure `evaluate`, and writes the three files
//! quoted by the TPM. Whatever it cannot gather is a `Probe::Unavailable` naming why, which the
//! checklist reports as a failure to measure, never as a pass.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Subcommand;
use jiff::Timestamp;
use serde_json::json;
use wardbox_report::facts::*;
use wardbox_report::json::{self as report_json, PcrValue};
use wardbox_report::{AkPublic, Quoter, Status, evaluate};

use super::{CliError, CliResult, DEFAULT_CONFIG, load_config};
use crate::config::Config;
use crate::stages::unlock::VolumeConfig;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Measure the box live, evaluate the checklist, and write the report (JSON, HTML, OSCAL)
    /// quoted by the TPM. Exit 3 when an item fails.
    Generate {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Directory to write into; the newest earlier report there is the one compared with.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Directory holding the monthly audit exports (`wardbox audit export --out`), for the
        /// six-year retention item. Default: the box's own, `audit-exports` on the data volume.
        #[arg(long)]
        exports: Option<PathBuf>,
        /// The TPM to quote with, instead of the configuration's (`swtpm:…` for a dev box).
        #[arg(long)]
        tcti: Option<String>,
        /// Recompute every audit record (a full walk of the chain) instead of only those after
        /// the last verified head. Done anyway when the last full walk is older than 28 days.
        #[arg(long)]
        full_chain: bool,
    },
    /// Check a report on any machine: not edited since it was quoted, quoted by the TPM whose
    /// attestation key is given. Exit 3 when refused or when PCRs differ from the expected.
    Verify {
        /// The report's JSON file.
        file: PathBuf,
        /// The attestation key's public part (PEM), from the box's provisioning record.
        #[arg(long)]
        ak: PathBuf,
        /// PCR values expected for the box: a JSON list of {"index": N, "value": "hex"}.
        #[arg(long)]
        pcrs: Option<PathBuf>,
        /// HTML or OSCAL files that must be renderings this report lists.
        #[arg(long)]
        rendering: Vec<PathBuf>,
    },
    /// Record that a named person vouches for an administrative or physical item (e.g.
    /// `admin-training`), on the strength of a document, until a date.
    Attest {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The checklist item id.
        item: String,
        /// The document it rests on, e.g. "Security training log 2026, binder B".
        #[arg(long)]
        document: String,
        /// Valid until: YYYY-MM-DD (end of that day, UTC) or an RFC 3339 time. The report caps
        /// it at a quarter or a year, by item.
        #[arg(long)]
        valid_until: String,
        /// Who vouches for it (default: the console user).
        #[arg(long)]
        by: Option<String>,
    },
    /// Record an accepted exception to a waivable item (e.g. `physical-usb-storage`).
    Waive {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The checklist item id.
        item: String,
        /// Who approved the exception.
        #[arg(long)]
        approver: String,
        /// Why it is accepted.
        #[arg(long)]
        justification: String,
        /// Until when: YYYY-MM-DD (end of that day, UTC) or an RFC 3339 time.
        #[arg(long)]
        expires: String,
    },
    /// Write the TPM attestation key's public part (PEM), at provisioning, and print its
    /// fingerprint and the current boot PCRs for the provisioning record.
    ExportAk {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Where to write the PEM.
        #[arg(long)]
        out: PathBuf,
        /// The TPM to use, instead of the configuration's.
        #[arg(long)]
        tcti: Option<String>,
    },
}

pub fn run(cmd: ReportCommand) -> CliResult {
    match cmd {
        ReportCommand::Generate { config, out, exports, tcti, full_chain } => {
            generate(&load_config(&config)?, &out, exports.as_deref(), tcti, full_chain)
        }
        ReportCommand::Verify { file, ak, pcrs, rendering } => verify(&file, &ak, pcrs.as_deref(), &rendering),
        ReportCommand::Attest { config, item, document, valid_until, by } => {
            let config = load_config(&config)?;
            let until = crate::compliance::parse_until(&valid_until).map_err(CliError::new)?;
            let (store, volume) = super::audit::open(&config)?;
            let by = by.unwrap_or_else(super::cli_actor);
            let a = crate::compliance::attest(store.conn(), &item, &by, &document, until, Timestamp::now())
                .map_err(|e| CliError::new(format!("not recorded: {e}")))?;
            super::audit::record(
                &store,
                &volume,
                json!({ "action": "report_attestation", "item": a.item, "attested_by": a.attested_by, "valid_until": a.valid_until, "document": crate::audit::TextDigest::of(&a.document) }),
            )?;
            println!("attestation recorded: {} by {}, valid until {}", a.item, a.attested_by, a.valid_until);
            Ok(ExitCode::SUCCESS)
        }
        ReportCommand::Waive { config, item, approver, justification, expires } => {
            let config = load_config(&config)?;
            let until = crate::compliance::parse_until(&expires).map_err(CliError::new)?;
            let (store, volume) = super::audit::open(&config)?;
            let w = crate::compliance::waive(store.conn(), &item, &approver, &justification, until, Timestamp::now())
                .map_err(|e| CliError::new(format!("not recorded: {e}")))?;
            super::audit::record(
                &store,
                &volume,
                json!({ "action": "report_waiver", "item": w.item, "approver": w.approver, "expires_at": w.expires_at, "justification": crate::audit::TextDigest::of(&w.justification) }),
            )?;
            println!("waiver recorded: {} approved by {}, expires {}", w.item, w.approver, w.expires_at);
            Ok(ExitCode::SUCCESS)
        }
        ReportCommand::ExportAk { config, out, tcti } => {
            let config = load_config(&config)?;
            let tcti = tcti.or_else(|| config_tcti(&config)).ok_or_else(|| {
                CliError::new("this configuration has no TPM (dev profile); give one with --tcti")
            })?;
            let mut quoter = Quoter::connect(&tcti)?;
            let ak = quoter.ak_public()?;
            let pcrs = quoter.read_pcrs(&wardbox_report::quote::BOOT_PCRS)?;
            write_new(&out, ak.to_pem().as_bytes())?;
            println!("attestation key written to {}", out.display());
            println!("fingerprint (SHA-256 of the public key): {}", ak.fingerprint());
            println!("boot PCRs now (record them as the expected values):");
            println!("{}", serde_json::to_string_pretty(&pcrs)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config_tcti(config: &Config) -> Option<String> {
    match &config.volume {
        VolumeConfig::Luks2Tpm(c) => Some(c.tcti.clone()),
        VolumeConfig::PlainDirectory { .. } => None,
    }
}

/// Write a file that must not exist yet (a report or a key is never overwritten). Reports name
/// staff accounts and the box's addresses: readable by the owner and the group only.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

const FILE_PREFIX: &str = "wardbox-report-";

/// The newest `wardbox-report-*.json` in `dir` (names sort by time).
fn newest_report(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(FILE_PREFIX) && name.ends_with(".json") && !name.ends_with(".oscal.json")
        })
        .collect();
    found.sort();
    found.pop()
}

fn generate(config: &Config, out: &Path, exports: Option<&Path>, tcti: Option<String>, full_chain: bool) -> CliResult {
    let generated = generate_report(config, out, exports, tcti, full_chain, &super::cli_actor())?;
    let s = &generated.report.summary;
    println!("report {}", generated.digest);
    println!("written: {}, .html, .oscal.json", generated.json_path.display());
    println!(
        "{} pass, {} fail, {} needs attention, {} attested, {} not applicable",
        s.pass, s.fail, s.needs_attention, s.attested, s.not_applicable
    );
    for item in generated.report.items.iter().filter(|i| i.status == Status::Fail) {
        println!("FAIL {}: {}", item.id, item.reason);
    }
    Ok(if s.fail > 0 { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// What one generation wrote.
#[derive(Debug)]
pub struct Generated {
    pub report: wardbox_report::Report,
    /// `wardbox-report-<time>.json`; the `.html` and `.oscal.json` beside it.
    pub json_path: PathBuf,
    /// `sha256:` + the digest of the signed part.
    pub digest: String,
    /// Quoted by the TPM (false for a dev box without one).
    pub signed: bool,
}

/// Gather, evaluate, compare with the newest report in `out`, quote, write the three files
/// (never overwriting) and append the digest to the audit chain as `actor`'s action.
pub fn generate_report(
    config: &Config,
    out: &Path,
    exports: Option<&Path>,
    tcti: Option<String>,
    full_chain: bool,
    actor: &str,
) -> Result<Generated, CliError> {
    std::fs::create_dir_all(out)?;
    let now = Timestamp::now();
    let tcti = tcti.or_else(|| config_tcti(config));
    let boot_pcrs = read_boot_pcrs(tcti.as_deref());
    let facts = gather(config, exports, now, full_chain, boot_pcrs);
    let mut report = evaluate(&facts, now);
    if let Some(previous) = newest_report(out) {
        match std::fs::read(&previous).map_err(|e| e.to_string()).and_then(|b| report_json::read(&b).map_err(|e| e.to_string())) {
            Ok(doc) => {
                let digest = doc.integrity.as_ref().map(|i| i.digest.clone());
                report.compare_with(&doc.report, digest);
            }
            Err(e) => eprintln!("note: the previous report {} is not compared with: {e}", previous.display()),
        }
    }
    let outputs = match &tcti {
        Some(tcti) => {
            let mut quoter = Quoter::connect(tcti)?;
            wardbox_report::quote::sign_report(&mut quoter, &report)?
        }
        None => {
            eprintln!("wardbox: UNSIGNED REPORT: this configuration has no TPM (dev profile); `report verify` will refuse it");
            report_json::assemble::<report_json::DocumentError>(&report, |_| Ok(None))?
        }
    };
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let base = out.join(format!("{FILE_PREFIX}{stamp}"));
    let json_path = base.with_extension("json");
    write_new(&json_path, &outputs.json)?;
    write_new(&base.with_extension("html"), &outputs.html)?;
    write_new(&base.with_extension("oscal.json"), &outputs.oscal)?;
    let digest = format!("sha256:{}", hex::encode(outputs.digest));
    // Each report's digest goes into the audit chain, so a report cannot be generated quietly.
    let audited = super::audit::open(config).and_then(|(store, volume)| {
        let (log, writer) = crate::audit::AuditLog::start(store.path(), &volume.store_key)?;
        let detail = json!({ "action": "report_generated", "digest": digest, "signed": tcti.is_some() });
        log.append_blocking(crate::audit::AuditEvent::new(crate::audit::EventKind::AdminAction, actor, detail))?;
        drop(log);
        writer.join();
        Ok(())
    });
    if let Err(e) = audited {
        eprintln!("note: this report's digest is not in the audit trail (the store cannot be opened: {e})");
    }
    Ok(Generated { report, json_path, digest, signed: tcti.is_some() })
}

/// Reports for the web UI's Reports page: generated with this configuration into a directory
/// of the state partition, and read back from there.
#[derive(Debug)]
pub struct ConfiguredReports {
    pub config: Config,
    pub dir: PathBuf,
}

impl ConfiguredReports {
    /// `state_dir/reports`.
    pub fn new(config: Config) -> Self {
        let dir = config.state_dir.join("reports");
        Self { config, dir }
    }
}

impl ConfiguredReports {
    /// Whether this month's report is still to be made: none in the directory was generated in
    /// the current month (UTC). A box that was off on the 1st makes it when it is next up.
    pub fn monthly_due(&self, now: Timestamp) -> bool {
        let names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        monthly_due(now, &names)
    }
}

/// Pure part of [`ConfiguredReports::monthly_due`]: no `wardbox-report-YYYYMM…json` of `now`'s
/// month among `names`.
fn monthly_due(now: Timestamp, names: &[String]) -> bool {
    let month = now.strftime("%Y%m").to_string();
    !names.iter().any(|n| {
        n.strip_prefix(FILE_PREFIX).is_some_and(|rest| rest.starts_with(&month)) && n.ends_with(".json") && !n.ends_with(".oscal.json")
    })
}

impl crate::web::reports::ReportService for ConfiguredReports {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn generate(&self, actor: &str, full_chain: bool) -> Result<crate::web::reports::GeneratedSummary, String> {
        // The six-year retention item reads the box's monthly exports: bring them up to date.
        if let Err(e) = export_missing(&self.config, actor) {
            eprintln!("note: the monthly audit exports could not be brought up to date: {e}");
        }
        let g = generate_report(&self.config, &self.dir, None, None, full_chain, actor).map_err(|e| e.to_string())?;
        let s = &g.report.summary;
        Ok(crate::web::reports::GeneratedSummary {
            file: g.json_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            digest: g.digest,
            signed: g.signed,
            counts: format!(
                "{} pass, {} fail, {} needs attention, {} attested, {} not applicable",
                s.pass, s.fail, s.needs_attention, s.attested, s.not_applicable
            ),
        })
    }
}

/// [`export_missing_months`] on the configured box, each export audited as `actor`'s
/// `audit_export` (month, record count, digest), as `wardbox audit export` audits its own.
fn export_missing(config: &Config, actor: &str) -> Result<(), CliError> {
    let (store, volume) = super::audit::open(config)?;
    let written = export_missing_months(&store, Timestamp::now()).map_err(CliError::new)?;
    if written.is_empty() {
        return Ok(());
    }
    let (log, writer) = crate::audit::AuditLog::start(store.path(), &volume.store_key)?;
    for (month, w) in &written {
        let detail = json!({ "action": "audit_export", "month": month, "records": w.records, "sha256": w.sha256 });
        log.append_blocking(crate::audit::AuditEvent::new(crate::audit::EventKind::AdminAction, actor, detail))?;
    }
    drop(log);
    writer.join();
    Ok(())
}

fn verify(file: &Path, ak: &Path, pcrs: Option<&Path>, renderings: &[PathBuf]) -> CliResult {
    let read = |p: &Path| std::fs::read(p).map_err(|e| CliError::new(format!("cannot read {}: {e}", p.display())));
    let ak = AkPublic::from_pem(&String::from_utf8_lossy(&read(ak)?)).map_err(|e| CliError::check_failed(e.to_string()))?;
    let verified = wardbox_report::verify(&read(file)?, &ak).map_err(|e| CliError::check_failed(format!("REFUSED: {e}")))?;
    println!("verified: {}", file.display());
    println!("  box {} · generated {} · digest {}", verified.report.box_name, verified.report.generated_at, verified.digest);
    println!("  quoted by the TPM whose attestation key has fingerprint {}", ak.fingerprint());
    println!("  TPM firmware {:#x}, reset count {}", verified.tpm_firmware_version, verified.tpm_reset_count);
    for p in &verified.pcrs {
        println!("  PCR {:>2} {}", p.index, p.value);
    }
    let mut problems = Vec::new();
    if let Some(path) = pcrs {
        let expected: Vec<PcrValue> = serde_json::from_slice(&read(path)?)
            .map_err(|e| CliError::new(format!("{} is not a list of {{\"index\", \"value\"}}: {e}", path.display())))?;
        for d in verified.pcr_differences(&expected) {
            problems.push(format!(
                "PCR {} is {}, expected {}: the box booted a different firmware, boot loader or Secure Boot policy",
                d.index,
                d.quoted.as_deref().unwrap_or("not quoted"),
                d.expected
            ));
        }
    }
    for r in renderings {
        if !verified.rendering_matches(&read(r)?) {
            problems.push(format!("{} is not a rendering of this report (edited, or of another report)", r.display()));
        }
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::check_failed(problems.join("\n")))
    }
}

// --- Gathering the facts ---------------------------------------------------------------------

fn unavailable<T>(reason: impl std::fmt::Display) -> Probe<T> {
    Probe::unavailable(reason.to_string())
}

/// The file-system root the host probes read `/sys`, `/proc` and `/etc` under: `/` on the box,
/// a temporary tree in tests (kernel paths are parameters).
#[derive(Debug, Clone)]
struct HostRoot(PathBuf);

impl HostRoot {
    fn system() -> Self {
        HostRoot(PathBuf::from("/"))
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }

    /// A small text file's contents, trimmed; empty when it cannot be read.
    fn read(&self, absolute: &str) -> String {
        std::fs::read_to_string(self.path(absolute)).map(|s| s.trim().to_string()).unwrap_or_default()
    }
}

fn gather(config: &Config, exports: Option<&Path>, now: Timestamp, full_chain: bool, boot_pcrs: Probe<BootPcrs>) -> Facts {
    // First: the agent repairs a drifted ruleset within its verify interval (30 s), so the
    // read-back is taken before the slower probes, as close to "now" as possible.
    let firewall = firewall_facts(config);
    let host = HostRoot::system();
    let store = super::audit::open(config);
    let store_error = store.as_ref().err().map(|e| format!("the store cannot be opened: {e}"));
    let store = store.ok().map(|(s, _)| s);
    let tls = tls_probe(config);
    let (volume, tpm) = volume_and_tpm(config);
    Facts {
        box_name: Some(host.read("/proc/sys/kernel/hostname")).filter(|h| !h.is_empty()).unwrap_or_else(|| "unknown".into()),
        profile: config.profile.to_string(),
        boot: boot_stages(config),
        volume,
        tpm,
        store: match &store {
            Some(s) => store_facts(s),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        firewall,
        tls,
        engine_reach: engine_reach(config),
        audit: match &store {
            Some(s) => audit_facts(config, s, now, full_chain),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        request_audit: request_counters(config),
        data_space: match &store {
            Some(s) => data_space(config, s.path()),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        retention: match &store {
            Some(s) => retention_facts(config, s, exports),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        accounts: match &store {
            Some(s) => accounts(s, now),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        sessions: SessionPolicy {
            idle_timeout_secs: config.web.idle_timeout_secs,
            absolute_timeout_secs: config.web.absolute_timeout_secs,
            break_glass_enabled: store.as_ref().is_some_and(break_glass_enabled),
            break_glass_timeout_secs: config.web.break_glass_timeout_secs,
            signin_free_failures: config.web.signin_free_failures,
            signin_block_after: config.web.signin_block_after,
            signin_block_secs: config.web.signin_block_secs,
            lockout_threshold: config.web.lockout_threshold,
            lockout_addresses: config.web.lockout_addresses,
            lockout_window_secs: config.web.lockout_window_secs,
            lockout_secs: config.web.lockout_secs,
            password_min_length: crate::web::accounts::MIN_PASSWORD_CHARS as u32,
        },
        sign_ins: match &store {
            Some(s) => sign_ins(s, now),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        ldap: ldap_facts(config, store.as_ref(), now),
        backups: store.as_ref().map(backup_facts).unwrap_or(BackupFacts {
            configured: false,
            last_backup: None,
            encrypted: false,
            last_tested_restore: None,
        }),
        activity_review: match &store {
            Some(s) => activity_review_facts(s),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        access_review: match &store {
            Some(s) => access_review_facts(s),
            None => unavailable(store_error.clone().unwrap_or_default()),
        },
        usb: usb_facts(&host),
        measured_boot: measured_boot(config, &host, boot_pcrs),
        network: network_facts(config),
        inventory: inventory(config, &host),
        // Entered with `wardbox report attest|waive`. Unreadable: none, so every attestation item
        // needs attention (never a pass).
        attestations: store.as_ref().and_then(|s| crate::compliance::attestations(s.conn()).ok()).unwrap_or_default(),
        waivers: store.as_ref().and_then(|s| crate::compliance::waivers(s.conn()).ok()).unwrap_or_default(),
    }
}

/// Free space on the store's filesystem now, judged against `[disk]` as the daemon's disk watch
/// judges it (a level just reached, without the margin it needs to be left).
fn data_space(config: &Config, store_path: &Path) -> Probe<DataSpace> {
    let dir = store_path.parent().unwrap_or(store_path);
    match crate::disk::watch::read(dir) {
        Ok(space) => Probe::observed(DataSpace {
            path: dir.display().to_string(),
            total_bytes: space.total_bytes,
            free_bytes: space.free_bytes,
            summary: space.describe(),
            level: crate::disk::level(space, &config.disk, crate::disk::Level::Ok).as_str().into(),
            thresholds: config.disk.thresholds_in_words(),
        }),
        Err(e) => unavailable(e),
    }
}

/// Backups as `wardbox backup` recorded them in the store: configured once a repository key
/// exists; restic repositories are always encrypted (with that key); the last good backup and
/// the last good restore drill. An unreadable record counts as never.
fn backup_facts(store: &Store) -> BackupFacts {
    use crate::backup::{self, RunKind};
    let configured = matches!(backup::stored_key(store), Ok(Some(_)));
    BackupFacts {
        configured,
        last_backup: backup::last_success(store, RunKind::Backup).ok().flatten(),
        encrypted: configured,
        last_tested_restore: backup::last_success(store, RunKind::Drill).ok().flatten(),
    }
}

/// The newest weekly review recorded on the Activity review page (`alerting::review`).
fn activity_review_facts(store: &Store) -> Probe<Option<ActivityReview>> {
    match crate::alerting::review::last_review(store.conn()) {
        Ok(None) => Probe::observed(None),
        Ok(Some((week, reviewed_by, at))) => match at.parse::<Timestamp>() {
            Ok(reviewed_at) => Probe::observed(Some(ActivityReview { week, reviewed_by, reviewed_at })),
            Err(e) => unavailable(format!("the review of the week of {week} has an unreadable time {at:?}: {e}")),
        },
        Err(e) => unavailable(format!("the activity reviews cannot be read: {e}")),
    }
}

/// The newest decision recorded on the Access page (`web::access`, table `access_reviews`),
/// and the enabled clinicians and nurses its quarter has not decided on (the users the page
/// lists for the review).
fn access_review_facts(store: &Store) -> Probe<Option<AccessReview>> {
    use rusqlite::OptionalExtension;
    use crate::web::accounts::{Role, list_users};
    let conn = store.conn();
    let last = conn
        .query_row("SELECT quarter, reviewed_by, reviewed_at FROM access_reviews ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .optional();
    let (quarter, reviewed_by, at) = match last {
        Ok(Some(last)) => last,
        Ok(None) => return Probe::observed(None),
        Err(e) => return unavailable(format!("the access reviews cannot be read: {e}")),
    };
    let reviewed_at = match at.parse::<Timestamp>() {
        Ok(t) => t,
        Err(e) => return unavailable(format!("the access review of {quarter} has an unreadable time {at:?}: {e}")),
    };
    let decided: Result<Vec<String>, _> = conn
        .prepare("SELECT DISTINCT username FROM access_reviews WHERE quarter = ?1 ORDER BY username")
        .and_then(|mut stmt| stmt.query_map([&quarter], |r| r.get(0))?.collect());
    let decided = match decided {
        Ok(d) => d,
        Err(e) => return unavailable(format!("the access reviews cannot be read: {e}")),
    };
    let users = match list_users(conn) {
        Ok(u) => u,
        Err(e) => return unavailable(format!("the accounts cannot be read: {e}")),
    };
    let not_decided = users
        .into_iter()
        .filter(|u| !u.disabled && matches!(u.role, Role::Clinician | Role::Nurse) && !decided.contains(&u.username))
        .map(|u| u.username)
        .collect();
    Probe::observed(Some(AccessReview { quarter, reviewed_by, reviewed_at, users_decided: decided.len() as u64, not_decided }))
}

fn boot_stages(config: &Config) -> Vec<StageFact> {
    let path = crate::daemon::status_file(&config.state_dir);
    let Ok(text) = std::fs::read_to_string(&path) else { return vec![] };
    let Ok(health) = serde_json::from_str::<crate::web::Health>(&text) else { return vec![] };
    health
        .stages
        .iter()
        .map(|s| StageFact { stage: s.stage.clone(), outcome: s.outcome.clone(), reason: s.reason.clone(), missing_protections: vec![] })
        .collect()
}

fn volume_and_tpm(config: &Config) -> (Probe<VolumeFacts>, Probe<TpmFacts>) {
    let c = match &config.volume {
        VolumeConfig::PlainDirectory { data_dir } => {
            let v = VolumeFacts {
                plain_directory: true,
                active: false,
                luks_version: 0,
                cipher: String::new(),
                key_bits: 0,
                device: data_dir.display().to_string(),
                unlocked_by: "none (plain directory)".into(),
            };
            return (Probe::observed(v), unavailable("the dev profile has no TPM"));
        }
        VolumeConfig::Luks2Tpm(c) => c,
    };
    let volume = (|| -> Result<VolumeFacts, String> {
        use libcryptsetup_rs::CryptInit;
        use libcryptsetup_rs::consts::vals::{CryptStatusInfo, EncryptionFormat};
        let mut device = CryptInit::init_by_name_and_header(&c.mapper_name, None)
            .map_err(|e| format!("the mapping {} is not open: {e}", c.mapper_name))?;
        let active = matches!(
            libcryptsetup_rs::status(Some(&mut device), &c.mapper_name),
            Ok(CryptStatusInfo::Active | CryptStatusInfo::Busy)
        );
        let luks_version = match device.format_handle().get_type() {
            Ok(EncryptionFormat::Luks2) => 2,
            Ok(EncryptionFormat::Luks1) => 1,
            _ => 0,
        };
        let mut status = device.status_handle();
        let cipher = format!(
            "{}-{}",
            status.get_cipher().unwrap_or_default(),
            status.get_cipher_mode().unwrap_or_default()
        );
        let key_bits = u32::try_from(status.get_volume_key_size()).unwrap_or(0) * 8;
        Ok(VolumeFacts {
            plain_directory: false,
            active,
            luks_version,
            cipher,
            key_bits,
            device: c.device.display().to_string(),
            unlocked_by: unlocked_by(config),
        })
    })();
    let tpm = (|| -> Result<TpmFacts, String> {
        let mut tpm = wardbox_volume::Tpm::connect(&c.tcti).map_err(|e| e.to_string())?;
        let status = wardbox_volume::ops::status(&c.device, Some(&mut tpm)).map_err(|e| e.to_string())?;
        let binding = status.tpm_bindings.first().ok_or("the volume has no TPM keyslot")?;
        let pcrs = binding.binding.as_ref().map(|b| b.pcrs().to_vec()).unwrap_or_default();
        let signed_pcr11_key = binding.policy.as_ref().and_then(|p| p.signed_pcr11.as_ref()).map(|k| k.fingerprint_hex());
        let (pcr11_signed, seal_check) = seal_check(&binding.check, signed_pcr11_key.is_some());
        Ok(TpmFacts {
            manufacturer: String::new(),
            firmware_version: String::new(),
            pcr_bank: binding.binding.as_ref().map(|b| format!("{:?}", b.bank()).to_lowercase()).unwrap_or_default(),
            sealed_pcrs: pcrs,
            seal_matches_current_pcrs: matches!(binding.check, wardbox_volume::ops::TpmCheck::WouldUnseal),
            signed_pcr11_key,
            pcr11_signed,
            seal_check,
        })
    })();
    (
        volume.map(Probe::observed).unwrap_or_else(unavailable),
        tpm.map(Probe::observed).unwrap_or_else(unavailable),
    )
}

/// What the TPM's seal check says about this boot's PCR 11: signed by the seal's PCR-signing key
/// (`Some(true)`), not (`Some(false)`), or not known (`None`), and in words. A seal that would
/// unseal now passed PolicyAuthorize with the booted image's signature; one refused at the
/// literal PCRs never reached the signature.
fn seal_check(check: &wardbox_volume::ops::TpmCheck, signed_pcr11: bool) -> (Option<bool>, String) {
    use wardbox_volume::ops::TpmCheck;
    match check {
        TpmCheck::WouldUnseal => (signed_pcr11.then_some(true), "would unseal with the PCRs as they are now".into()),
        TpmCheck::Pcr11NotSigned(why) => (Some(false), why.clone()),
        TpmCheck::PcrsChanged => (None, "the literal PCRs changed since the key was sealed, so PCR 11's signature was not reached".into()),
        TpmCheck::NotChecked(why) => (None, why.clone()),
    }
}

/// PCR 7 and 11 from the TPM that quotes the report (the same connection code and PCR read as
/// the quote, [`Quoter::read_pcrs`]); the connection is closed again before the other probes.
fn read_boot_pcrs(tcti: Option<&str>) -> Probe<BootPcrs> {
    let Some(tcti) = tcti else {
        return unavailable("this configuration has no TPM (dev profile) and none was given with --tcti");
    };
    let read = Quoter::connect(tcti).and_then(|mut q| q.read_pcrs(&[7, wardbox_firmware_policy::UKI_PCR]));
    match read.map(|values| values.into_iter().map(|v| (v.index, v.value)).collect::<std::collections::BTreeMap<_, _>>()) {
        Ok(mut values) => match (values.remove(&7), values.remove(&wardbox_firmware_policy::UKI_PCR)) {
            (Some(pcr7), Some(pcr11)) => Probe::observed(BootPcrs { pcr7, pcr11 }),
            _ => unavailable("the TPM did not return PCR 7 and 11"),
        },
        Err(e) => unavailable(e),
    }
}

/// The measured boot: the firmware's variables (the configured efivars directory, the host's
/// for a plain-directory volume, as `wardbox status` reads them), the PCRs read above, and the
/// firmware policy with the config stage's key check.
fn measured_boot(config: &Config, host: &HostRoot, pcrs: Probe<BootPcrs>) -> MeasuredBootFacts {
    let efivars = match &config.volume {
        VolumeConfig::Luks2Tpm(c) => c.efivars_dir.clone(),
        VolumeConfig::PlainDirectory { .. } => host.path(wardbox_firmware_policy::DEFAULT_EFIVARS_DIR),
    };
    let firmware = match wardbox_firmware_policy::BootVariables::read(&efivars) {
        Ok(v) => Probe::observed(FirmwareBoot {
            secure_boot: v.secure_boot,
            setup_mode: v.setup_mode,
            audit_mode: v.audit_mode,
            deployed_mode: v.deployed_mode,
            boot_entry: v.loader_entry_selected,
            boot_count_path: v.loader_boot_count_path,
            stub_info: v.stub_info,
        }),
        Err(e) => unavailable(e),
    };
    let policy = match &config.volume {
        VolumeConfig::PlainDirectory { .. } => unavailable("the volume is a plain directory (dev profile), which has no firmware policy"),
        VolumeConfig::Luks2Tpm(c) => match wardbox_firmware_policy::FirmwarePolicy::load(&c.firmware_policy) {
            Ok(p) => Probe::observed(boot_policy(&p, &c.firmware_policy, &c.efivars_dir)),
            Err(e) => unavailable(e),
        },
    };
    MeasuredBootFacts { firmware, pcrs, policy, root: root_file_system(host) }
}

/// The root file system: the dm-verity arguments on the kernel command line (parsed as the
/// update install parses a UKI's, `VerityArgs::from_cmdline`), the device `/` is mounted from,
/// and that device's device-mapper name and UUID, found through its device number
/// (`/sys/dev/block/MAJOR:MINOR/dm`), so the mount table's name for it does not matter.
fn root_file_system(host: &HostRoot) -> Probe<RootFileSystem> {
    use crate::update::verity::VerityArgs;
    let cmdline = match std::fs::read_to_string(host.path("/proc/cmdline")) {
        Ok(c) => c,
        Err(e) => return unavailable(format!("/proc/cmdline cannot be read: {e}")),
    };
    let (args, arguments_refused) = match VerityArgs::from_cmdline(cmdline.trim()) {
        Ok(args) => (args, None),
        Err(why) => (None, Some(why)),
    };
    let mountinfo = match std::fs::read_to_string(host.path("/proc/self/mountinfo")) {
        Ok(m) => m,
        Err(e) => return unavailable(format!("/proc/self/mountinfo cannot be read: {e}")),
    };
    let Some((device_number, device)) = root_mount(&mountinfo) else {
        return unavailable("/proc/self/mountinfo names no file system mounted on /");
    };
    if !host.path("/sys/dev/block").is_dir() {
        return unavailable("/sys/dev/block cannot be read");
    }
    // No entry under /sys/dev/block: / is not on a block device (tmpfs, overlay, NFS), so
    // not on a device-mapper one either.
    let dm = host.path(&format!("/sys/dev/block/{device_number}/dm"));
    let (dm_name, dm_verity) = if dm.is_dir() {
        let read = |file: &str| std::fs::read_to_string(dm.join(file)).map(|v| v.trim().to_string());
        match (read("name"), read("uuid")) {
            (Ok(name), Ok(uuid)) => (Some(name), uuid.starts_with("CRYPT-VERITY-")),
            (Err(e), _) | (_, Err(e)) => {
                return unavailable(format!("the device-mapper name or UUID of {device} ({device_number}) cannot be read: {e}"));
            }
        }
    } else {
        (None, false)
    };
    Probe::observed(RootFileSystem {
        root_hash: args.as_ref().map(|a| hex::encode(a.root_hash)),
        hash_offset: args.as_ref().map(|a| a.hash_offset),
        arguments_refused,
        device,
        device_number,
        dm_name,
        dm_verity,
    })
}

/// The device number (`major:minor`) and source of the file system mounted on `/` in a
/// `/proc/self/mountinfo` (the last such line: a later mount on / hides the ones before it).
fn root_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().rev().find_map(|line| {
        // ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER-OPTIONS
        let (mount, fs) = line.split_once(" - ")?;
        let fields: Vec<&str> = mount.split(' ').collect();
        if fields.get(4) != Some(&"/") {
            return None;
        }
        let source = fs.split(' ').nth(1)?;
        Some((fields.get(2)?.to_string(), unescape_mount_field(source)))
    })
}

/// The kernel writes a space, tab, newline or backslash in a mount table field as `\ooo`
/// (octal).
fn unescape_mount_field(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The policy's pinned keys beside the enrolled ones, and the config stage's decision on them
/// (`FirmwarePolicy::check_secure_boot_keys`, as `stages::unlock::check_secure_boot_keys`
/// runs it at boot).
fn boot_policy(policy: &wardbox_firmware_policy::FirmwarePolicy, file: &Path, efivars: &Path) -> BootPolicy {
    use wardbox_firmware_policy::{KeyVariable, SignatureEntry};
    let pinned_keys = policy
        .secure_boot_keys
        .as_ref()
        .map(|keys| {
            KeyVariable::ALL
                .iter()
                .map(|v| KeyList { variable: v.name().into(), entries: keys.allowed(*v).iter().map(ToString::to_string).collect() })
                .collect()
        })
        .unwrap_or_default();
    let enrolled = wardbox_firmware_policy::read_enrolled_keys(efivars);
    let keys_refused = match (&enrolled, &policy.secure_boot_keys) {
        (Ok(keys), Some(_)) => policy.check_secure_boot_keys(keys).err().map(|e| e.to_string()),
        _ => None,
    };
    let enrolled_keys = match enrolled {
        Ok(keys) => Probe::observed(
            KeyVariable::ALL
                .iter()
                .map(|v| KeyList {
                    variable: v.name().into(),
                    entries: keys
                        .entries(*v)
                        .iter()
                        .map(|e| match e {
                            SignatureEntry::X509(fp) => fp.to_string(),
                            SignatureEntry::Other { signature_type } => format!("an entry of type {signature_type}"),
                        })
                        .collect(),
                })
                .collect(),
        ),
        Err(e) => unavailable(e),
    };
    BootPolicy {
        file: file.display().to_string(),
        secure_boot_required: policy.secure_boot == wardbox_firmware_policy::SecureBootRequirement::Required,
        pcrs: policy.binding.pcrs().to_vec(),
        signed_pcr11: policy.signed_pcr11.is_some(),
        pinned_keys,
        enrolled_keys,
        keys_refused,
    }
}

/// How this boot unlocked the volume, from the unlock stage's record (its detail names the
/// TPM-sealed key when the TPM opened it).
fn unlocked_by(config: &Config) -> String {
    match boot_stages(config).into_iter().find(|s| s.stage == "unlock") {
        Some(s) if s.reason.contains("opened with the TPM-sealed key") => "tpm".into(),
        Some(s) if s.reason.to_lowercase().contains("recovery") => "recovery".into(),
        Some(s) => format!("unknown (unlock stage {}: {})", s.outcome, s.reason),
        None => "unknown (no unlock stage record)".into(),
    }
}

fn store_facts(store: &Store) -> Probe<StoreFacts> {
    let conn = store.conn();
    let text = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap_or_default();
    let result = (|| -> rusqlite::Result<StoreFacts> {
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let mut stmt = conn.prepare("PRAGMA cipher_integrity_check")?;
        let errors = stmt.query_map([], |_| Ok(()))?.count() as u64;
        Ok(StoreFacts {
            cipher_version: format!("SQLCipher {}", text("PRAGMA cipher_version")),
            hmac_algorithm: text("PRAGMA cipher_hmac_algorithm"),
            integrity_errors: errors,
            pages_checked: u64::try_from(pages).unwrap_or(0),
        })
    })();
    result.map(Probe::observed).unwrap_or_else(|e| unavailable(format!("the store's integrity check failed to run: {e}")))
}

/// A full walk is due when none is on record or the last is older than this; the checklist
/// asks for attention at 35 days, so a monthly report always walks in full in time.
const FULL_WALK_DUE_DAYS: i64 = 28;

fn audit_facts(config: &Config, store: &Store, now: Timestamp, full_chain: bool) -> Probe<AuditFacts> {
    let checkpoints = match crate::daemon::checkpoint_log(&config.state_dir).read_all() {
        Ok(c) => c,
        Err(e) => return unavailable(format!("the checkpoint log cannot be read: {e}")),
    };
    let file = crate::audit::VerifiedHeadFile::in_state_dir(&config.state_dir);
    let due = match file.read() {
        Ok(Some(head)) => head
            .full_walk_at
            .is_none_or(|at| now.duration_since(at) > jiff::SignedDuration::from_hours(24 * FULL_WALK_DUE_DAYS)),
        Ok(None) => true,
        Err(e) => return unavailable(format!("the last verified head cannot be read: {e}")),
    };
    match crate::audit::check_chain(store, &checkpoints, &file, full_chain || due, now) {
        Ok(c) => {
            let r = &c.report;
            Probe::observed(AuditFacts {
                records: r.records,
                verified_from_seq: c.walked_from,
                head_seq: r.head_seq,
                first_break: r.first_break.as_ref().map(|b| b.to_string()),
                checkpoints_checked: r.checkpoints_checked as u64,
                checkpoints_mismatched: u64::from(matches!(r.first_break, Some(crate::audit::ChainBreak::CheckpointMismatch { .. }))),
                full_walk: c.full_walk,
                last_full_walk: c.last_full_walk.map(|(at, head_seq)| FullWalk { at, head_seq }),
            })
        }
        Err(e) => unavailable(format!("the audit chain could not be verified: {e}")),
    }
}

/// The first record at or after `since`, found by bisecting on sequence numbers (records are
/// written in time order), so a window of the chain is read without a pass over all of it.
/// A day of slack covers a clock that stepped back. `None`: no record that recent.
fn first_seq_since(store: &Store, since: Timestamp) -> rusqlite::Result<Option<u64>> {
    let since = since.checked_sub(jiff::SignedDuration::from_hours(24)).unwrap_or(since);
    let conn = store.conn();
    let mut at_or_after = conn.prepare_cached("SELECT seq, ts FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let mut record = |seq: u64| -> rusqlite::Result<Option<(u64, Timestamp)>> {
        let mut rows = at_or_after.query([seq as i64])?;
        Ok(match rows.next()? {
            Some(row) => {
                let ts: String = row.get(1)?;
                Some((row.get::<_, i64>(0)? as u64, ts.parse().unwrap_or(Timestamp::MIN)))
            }
            None => None,
        })
    };
    let (head, _) = crate::audit::read_head(store)?;
    let (mut lo, mut hi) = (1u64, head + 1);
    // Invariant: records before `lo` are older than `since`; the record at or after `hi` is not.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match record(mid)? {
            Some((seq, ts)) if ts < since => lo = seq + 1,
            _ => hi = mid,
        }
    }
    Ok(if lo > head { None } else { Some(lo) })
}

/// The box's own monthly audit exports: on the encrypted data volume, beside the store.
/// Reports made by the agent (the Reports page, the monthly report) bring them up to date first
/// ([`export_missing_months`]); `generate` reads them unless `--exports` names another directory.
pub const EXPORTS_DIR: &str = "audit-exports";

fn box_exports_dir(store: &Store) -> Option<PathBuf> {
    store.path().parent().map(|data_dir| data_dir.join(EXPORTS_DIR))
}

fn first_record_month(store: &Store) -> Option<String> {
    let first: Option<String> = store.conn().query_row("SELECT ts FROM audit ORDER BY seq LIMIT 1", [], |r| r.get::<_, String>(0)).ok();
    first.and_then(|ts| ts.get(..7).map(str::to_string))
}

/// Export every complete month since the first record that has no export in the box's export
/// directory yet (`wardbox audit export`'s files, never overwriting one). Returns the months
/// written, with what was written.
pub fn export_missing_months(store: &Store, now: Timestamp) -> Result<Vec<(String, crate::audit::ExportSummary)>, String> {
    let dir = box_exports_dir(store).ok_or("the store has no data directory")?;
    let Some(first) = first_record_month(store) else { return Ok(Vec::new()) };
    let mut written = Vec::new();
    for month in wardbox_report::checklist::complete_months_since(&first, now) {
        if dir.join(format!("audit-{month}.jsonl.gz")).exists() {
            continue;
        }
        let summary = crate::audit::export_month(store, &month, &dir)?;
        written.push((month, summary));
    }
    Ok(written)
}

fn retention_facts(config: &Config, store: &Store, exports: Option<&Path>) -> Probe<RetentionFacts> {
    let own = box_exports_dir(store);
    let Some(dir) = exports.or(own.as_deref()) else {
        return unavailable("no export directory: the store has no data directory and none was given (`--exports DIR`)");
    };
    let mut months = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // The box's own directory before its first export: no export yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && exports.is_none() => {
            return Probe::observed(RetentionFacts {
                retention_years: config.audit.retention_years,
                first_record_month: first_record_month(store),
                exports: Vec::new(),
            });
        }
        Err(e) => return unavailable(format!("the export directory {} cannot be read: {e}", dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(month) = name.strip_prefix("audit-").and_then(|n| n.strip_suffix(".jsonl.gz")) else { continue };
        let sum_file = dir.join(format!("{name}.sha256"));
        let expected = std::fs::read_to_string(&sum_file).unwrap_or_default();
        let actual = std::fs::read(entry.path()).map(|b| report_json::sha256_hex(&b)).unwrap_or_default();
        let checksum_ok = !actual.is_empty() && expected.split_whitespace().next() == Some(actual.as_str());
        months.push(MonthExport { month: month.to_string(), checksum_ok });
    }
    months.sort_by(|a, b| a.month.cmp(&b.month));
    Probe::observed(RetentionFacts {
        retention_years: config.audit.retention_years,
        first_record_month: first_record_month(store),
        exports: months,
    })
}

/// How far back the last sign-in of each account is looked for (the termination check asks
/// about 90 days).
const LAST_SIGN_IN_DAYS: i64 = 120;

fn accounts(store: &Store, now: Timestamp) -> Probe<Vec<Account>> {
    let conn = store.conn();
    let users = match crate::web::accounts::list_users(conn) {
        Ok(u) => u,
        Err(e) => return unavailable(format!("the accounts table cannot be read: {e}")),
    };
    let parse = |t: Option<String>| t.and_then(|t| t.parse::<Timestamp>().ok());
    // Each user's last sign-in in one pass over the window (not one pass per user, and not
    // over the whole chain: it holds millions of records).
    let searched_since = now.checked_sub(jiff::SignedDuration::from_hours(24 * LAST_SIGN_IN_DAYS)).unwrap_or(now);
    let last_sign_ins = (|| -> rusqlite::Result<std::collections::HashMap<String, String>> {
        let Some(from) = first_seq_since(store, searched_since)? else { return Ok(Default::default()) };
        let mut stmt = conn.prepare("SELECT actor, max(ts) FROM audit WHERE seq >= ?1 AND kind = 'login' GROUP BY actor")?;
        let rows = stmt.query_map([from as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.collect()
    })();
    let last_sign_ins = match last_sign_ins {
        Ok(m) => m,
        Err(e) => return unavailable(format!("the sign-ins in the audit chain cannot be read: {e}")),
    };
    Probe::observed(
        users
            .into_iter()
            .map(|u| {
                let created: Option<String> =
                    conn.query_row("SELECT created_at FROM users WHERE id = ?1", [u.id], |r| r.get(0)).ok();
                let last = last_sign_ins.get(&u.username).cloned();
                let local = u.source == crate::web::accounts::Source::Local;
                Account {
                    user_id: u.username,
                    role: u.role.as_str().to_string(),
                    source: if local { "local".into() } else { "directory".into() },
                    disabled: u.disabled,
                    created_at: parse(created),
                    last_sign_in: parse(last),
                    password_scheme: match &u.password_hash {
                        Some(h) if h.starts_with("$argon2id$") => "argon2id".into(),
                        Some(_) => "other".into(),
                        None => String::new(),
                    },
                    // The agent does not track initial passwords yet.
                    must_change_password: false,
                    sign_ins_searched_since: Some(searched_since),
                }
            })
            .collect(),
    )
}

fn break_glass_enabled(store: &Store) -> bool {
    crate::web::accounts::list_users(store.conn()).is_ok_and(|users| users.iter().any(|u| u.break_glass && !u.disabled))
}

fn sign_ins(store: &Store, now: Timestamp) -> Probe<SignInActivity> {
    let since = now.checked_sub(jiff::SignedDuration::from_hours(24 * 30)).unwrap_or(now).to_string();
    let conn = store.conn();
    let result = (|| -> Result<SignInActivity, String> {
        // Both counts in one pass over the window.
        let from = first_seq_since(store, now.checked_sub(jiff::SignedDuration::from_hours(24 * 30)).unwrap_or(now)).map_err(|e| e.to_string())?;
        let (successful, failed): (i64, i64) = match from {
            None => (0, 0),
            Some(from) => conn
                .query_row(
                    "SELECT coalesce(sum(kind = 'login'), 0), coalesce(sum(kind = 'login_failed'), 0) FROM audit WHERE seq >= ?1 AND ts >= ?2",
                    rusqlite::params![from as i64, since.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| e.to_string())?,
        };
        let (successful, failed) = (u64::try_from(successful).unwrap_or(0), u64::try_from(failed).unwrap_or(0));
        let now_s = now.as_second();
        let users = crate::web::accounts::list_users(conn).map_err(|e| e.to_string())?;
        let since_s = now_s - 30 * 86400;
        let break_glass = crate::web::accounts::recent_break_glass(conn, 10_000).map_err(|e| e.to_string())?;
        Ok(SignInActivity {
            successful,
            failed,
            accounts_locked_now: users.iter().filter(|u| u.is_locked(now_s)).count() as u64,
            break_glass_uses: break_glass.iter().filter(|b| b.at >= since_s).count() as u64,
            // The web layer writes a `login_failed` record for every refused sign-in.
            failures_audited: true,
        })
    })();
    result.map(Probe::observed).unwrap_or_else(|e| unavailable(format!("sign-ins could not be counted: {e}")))
}

fn ldap_facts(config: &Config, store: Option<&Store>, now: Timestamp) -> LdapFacts {
    let Some(ldap) = &config.web.ldap else { return LdapFacts::NotConfigured };
    let tls = ldap.url.starts_with("ldaps://") || ldap.starttls;
    // There is no service account: the live part is a TLS connection to the directory; a
    // working sign-in is shown by directory sign-ins in the last 30 days.
    let connected = runtime_block(async {
        let settings = ldap3::LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5)).set_starttls(ldap.starttls);
        match ldap3::LdapConnAsync::with_settings(settings, &ldap.url).await {
            Ok((conn, mut handle)) => {
                ldap3::drive!(conn);
                let _ = handle.unbind().await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    });
    let since = now.checked_sub(jiff::SignedDuration::from_hours(24 * 30)).unwrap_or(now).to_string();
    let window_start = now.checked_sub(jiff::SignedDuration::from_hours(24 * 30)).unwrap_or(now);
    let recent: Option<i64> = store.and_then(|s| {
        let Ok(from) = first_seq_since(s, window_start) else { return None };
        let Some(from) = from else { return Some(0) };
        s.conn()
            .query_row(
                "SELECT count(*) FROM audit WHERE seq >= ?1 AND kind = 'login' AND ts >= ?2 AND json_extract(detail, '$.source') = 'ldap'",
                rusqlite::params![from as i64, since.as_str()],
                |r| r.get(0),
            )
            .ok()
    });
    let bind = match (connected, recent) {
        (Err(e), _) => Probe::observed(LdapBind { tls, bind_ok: false, detail: format!("no connection: {e}") }),
        (Ok(()), None) => unavailable("the directory answered, but directory sign-ins could not be counted (store closed)"),
        (Ok(()), Some(n)) => Probe::observed(LdapBind {
            tls,
            bind_ok: n > 0,
            detail: format!("the directory answered; {n} directory sign-ins in 30 days"),
        }),
    };
    LdapFacts::Configured { url: ldap.url.clone(), bind }
}

/// Run a future to completion on a small runtime of its own (the CLI is synchronous).
fn runtime_block<T>(future: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(future)
}

fn firewall_facts(config: &Config) -> Probe<FirewallFacts> {
    let allowed = config
        .firewall
        .policy
        .allow_out
        .iter()
        .map(|a| OutboundRule {
            destination: a.dest.clone(),
            port: u16::try_from(a.port).unwrap_or(0),
            protocol: format!("{:?}", a.protocol).to_lowercase(),
            purpose: a.name.clone(),
        })
        .collect();
    if !config.firewall.enabled {
        return Probe::observed(FirewallFacts {
            drift: vec!["firewall.enabled is false: no egress ruleset is applied (dev profile)".into()],
            output_policy: "accept (no ruleset)".into(),
            blocked_outbound_packets: 0,
            blocked_inbound_packets: 0,
            allowed_outbound: allowed,
        });
    }
    let firewall = match crate::stages::firewall::NftFirewall::open(&config.firewall) {
        Ok(f) => f,
        Err(e) => return unavailable(format!("the firewall cannot be read: {e}")),
    };
    match firewall.status() {
        Ok(status) => Probe::observed(FirewallFacts {
            drift: status.drift.iter().map(|d| d.to_string()).collect(),
            // The read-back compares every base chain, its policy included, with the policy.
            output_policy: if status.is_enforced() { "drop".into() } else { "not verified (drift)".into() },
            blocked_outbound_packets: status.counters.blocked_out.packets,
            blocked_inbound_packets: status.counters.blocked_in.packets,
            allowed_outbound: allowed,
        }),
        Err(e) => unavailable(format!("the ruleset could not be read back: {e}")),
    }
}

/// The address to probe for a listener bound to `bind` (an unspecified address is reached
/// on loopback).
fn probe_address(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(a) if a.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], bind.port())),
        IpAddr::V6(a) if a.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bind.port())),
        _ => bind,
    }
}

/// Accepts any certificate, keeping the one it saw: the probe measures protocol versions and
/// the certificate's expiry, not whether this machine trusts the box's CA.
#[derive(Debug)]
struct RecordingVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.to_vec());
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// One handshake offering only `version`: the outcome, and the certificate seen.
fn handshake(target: SocketAddr, version: &'static rustls::SupportedProtocolVersion) -> (Handshake, Option<Vec<u8>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RecordingVerifier { provider: provider.clone(), seen: Mutex::new(None) });
    let config = match rustls::ClientConfig::builder_with_provider(provider).with_protocol_versions(&[version]) {
        Ok(b) => b.dangerous().with_custom_certificate_verifier(verifier.clone()).with_no_client_auth(),
        Err(e) => return (Handshake { accepted: false, detail: format!("client setup: {e}") }, None),
    };
    let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
    let result = (|| -> Result<String, String> {
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
        let mut sock = TcpStream::connect_timeout(&target, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        sock.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
        }
        Ok(conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_else(|| "unknown suite".into()))
    })();
    let seen = verifier.seen.lock().ok().and_then(|s| s.clone());
    match result {
        Ok(suite) => (Handshake { accepted: true, detail: suite }, seen),
        Err(e) => (Handshake { accepted: false, detail: e }, seen),
    }
}

/// `GET path` from the running agent's own listener (`HTTP/1.0`, so the answer ends with the
/// connection): the status code and the body. Over TLS the certificate is not judged (the
/// TLS probe does that); the agent answers `/metrics` only to its own box (loopback).
fn fetch_from_agent(config: &Config, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read as _, Write as _};
    let target = probe_address(config.web.listen);
    let request = format!("GET {path} HTTP/1.0\r\nHost: {target}\r\n\r\n");
    let mut sock = TcpStream::connect_timeout(&target, Duration::from_secs(3)).map_err(|e| format!("cannot connect to {target}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if config.web.tls == crate::web::TlsMode::PlainHttpDev {
        sock.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        sock.read_to_end(&mut raw).map_err(|e| format!("reading the answer from {target}: {e}"))?;
    } else {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(RecordingVerifier { provider: provider.clone(), seen: Mutex::new(None) });
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
        let conn = rustls::ClientConnection::new(Arc::new(tls), name).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        stream.write_all(request.as_bytes()).map_err(|e| format!("TLS to {target}: {e}"))?;
        // A server that closes without close_notify still delivered what it sent.
        if let Err(e) = stream.read_to_end(&mut raw)
            && e.kind() != std::io::ErrorKind::UnexpectedEof
        {
            return Err(format!("reading the answer from {target}: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{target} gave no HTTP answer"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{target} gave no HTTP status"))?;
    Ok((code, body.to_string()))
}

/// The running agent's request counters, scraped from its `/metrics` on this box.
fn request_counters(config: &Config) -> Probe<RequestAudit> {
    let scraped = fetch_from_agent(config, "/metrics").and_then(|(code, body)| {
        if code != 200 {
            return Err(format!(
                "the agent answered /metrics with HTTP {code} (it hands its counters only to its own box: is web.listen an address of this box?)"
            ));
        }
        crate::web::requests::parse_scrape(&body)
    });
    match scraped {
        Ok((since, classes)) => Probe::observed(RequestAudit {
            since: since.to_string(),
            classes: classes
                .into_iter()
                .map(|c| RouteClassCount {
                    class: c.class,
                    audit_required: c.audit_required,
                    served: c.served,
                    audited: c.audited,
                    audit_failures: c.audit_failures,
                })
                .collect(),
        }),
        Err(e) => unavailable(format!("the running agent's request counters could not be read: {e}")),
    }
}

/// Whether a plain-HTTP request to `target` got an HTTP answer.
fn plain_http_answered(target: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut sock) = TcpStream::connect_timeout(&target, Duration::from_secs(3)) else { return false };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(3)));
    if sock.write_all(b"GET / HTTP/1.0\r\nHost: wardbox\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    sock.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

fn tls_probe(config: &Config) -> Probe<TlsProbe> {
    let target = probe_address(config.web.listen);
    if config.web.tls == crate::web::TlsMode::PlainHttpDev {
        let refused = Handshake { accepted: false, detail: "the listener is plain HTTP (dev profile)".into() };
        return Probe::observed(TlsProbe {
            target: target.to_string(),
            tls13: refused.clone(),
            tls12: refused,
            plain_http_refused: !plain_http_answered(target),
            certificate_not_after: Timestamp::UNIX_EPOCH,
            certificate_subject: "none".into(),
        });
    }
    let (tls13, cert13) = handshake(target, &rustls::version::TLS13);
    let (tls12, cert12) = handshake(target, &rustls::version::TLS12);
    let Some(cert) = cert13.or(cert12) else {
        return unavailable(format!("no certificate was presented at {target}: {}", tls13.detail));
    };
    let (not_after, subject) = match x509_parser::parse_x509_certificate(&cert) {
        Ok((_, c)) => (
            Timestamp::from_second(c.validity().not_after.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH),
            c.subject().to_string(),
        ),
        Err(e) => return unavailable(format!("the certificate at {target} does not parse: {e}")),
    };
    Probe::observed(TlsProbe {
        target: target.to_string(),
        tls13,
        tls12,
        plain_http_refused: !plain_http_answered(target),
        certificate_not_after: not_after,
        certificate_subject: subject,
    })
}

/// The box's own addresses, every interface (loopback included: a local process counts).
fn addresses() -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| a.address)
                .filter_map(|a| {
                    a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())).or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                })
                .collect()
        })
        .unwrap_or_default();
    // Link-local IPv6 needs a scope to connect to; the other addresses cover those interfaces.
    found.retain(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80));
    found.sort();
    found.dedup();
    found
}

/// The engine's TCP port: the configured endpoint's, or Ollama's default when it is reached
/// over a Unix socket (what a misconfigured engine would listen on).
fn engine_port(config: &Config) -> u16 {
    config
        .engine
        .endpoint
        .as_deref()
        .and_then(|e| e.split("://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|hostport| hostport.to_socket_addrs().ok())
        .and_then(|mut a| a.next())
        .map(|a| a.port())
        .unwrap_or(11434)
}

fn engine_reach(config: &Config) -> Probe<EngineReachProbe> {
    let port = engine_port(config);
    let attempts = addresses()
        .into_iter()
        .map(|ip| {
            let target = SocketAddr::new(ip, port);
            let result = match TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
                Ok(_) => "connected",
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => "timed_out",
                Err(_) => "unreachable",
            };
            ConnectAttempt { target: target.to_string(), result: result.into() }
        })
        .collect();
    Probe::observed(EngineReachProbe { attempts })
}

/// Whether the modprobe rules keep USB mass storage from loading. `blacklist` alone only stops
/// loading by device alias, and `uas` pulls in `usb-storage` as a dependency, so either an
/// `install usb-storage /bin/false` (or `/bin/true`) rule, or `blacklist` lines for both
/// `usb-storage` and `uas`, are required.
fn modprobe_blocks_usb_storage(rules: &str) -> bool {
    let lines: Vec<Vec<&str>> = rules
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").split_whitespace().collect())
        .collect();
    let named = |words: &[&str], module: &str| words.get(1).is_some_and(|m| m.replace('_', "-") == module);
    let install_blocked = lines.iter().any(|w| {
        w.first() == Some(&"install") && named(w, "usb-storage") && matches!(w.get(2), Some(&"/bin/false" | &"/bin/true"))
    });
    let blacklisted = |module: &str| lines.iter().any(|w| w.first() == Some(&"blacklist") && named(w, module));
    install_blocked || (blacklisted("usb-storage") && blacklisted("uas"))
}

fn usb_facts(host: &HostRoot) -> Probe<UsbFacts> {
    let loaded: Vec<&str> = ["usb_storage", "uas"].into_iter().filter(|m| host.path("/sys/module").join(m).exists()).collect();
    let mut blocking_files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(host.path("/etc/modprobe.d")) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        let all: String = paths.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default() + "\n").collect();
        if modprobe_blocks_usb_storage(&all) {
            blocking_files = paths
                .iter()
                .filter(|p| std::fs::read_to_string(p).unwrap_or_default().contains("usb"))
                .map(|p| p.file_name().map(|n| format!("/etc/modprobe.d/{}", n.to_string_lossy())).unwrap_or_default())
                .collect();
        }
    }
    let mut devices: Vec<String> = std::fs::read_dir(host.path("/sys/block"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| std::fs::read_link(e.path()).map(|l| l.to_string_lossy().contains("/usb")).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    devices.sort();
    let loaded_text = if loaded.is_empty() { "none".to_string() } else { loaded.join(", ") };
    // The live value when the USB core is loaded; before that (no USB controller has appeared
    // yet), the kernel command line, which is what it will be loaded with.
    let live = std::fs::read_to_string(host.path("/sys/module/usbcore/parameters/authorized_default"))
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok());
    let from_cmdline = || {
        std::fs::read_to_string(host.path("/proc/cmdline"))
            .ok()?
            .split_whitespace()
            .rev()
            .find_map(|w| w.strip_prefix("usbcore.authorized_default="))
            .and_then(|v| v.parse::<i32>().ok())
    };
    let (authorized_default, policy_source) = match live {
        Some(v) => (Some(v), "the USB core's setting"),
        None => (from_cmdline(), "the kernel command line (the USB core is not loaded)"),
    };
    // The window the USB policy reads (crate::usb): an unreadable one counts as closed there,
    // and is said here.
    let now = jiff::Timestamp::now().as_second();
    let open_window = match crate::usb::window::read(&host.path("/run/wardbox-usb/window.json")) {
        Ok(Some(w)) if w.is_open_at(now) => Some(format!(
            "for {} by {} until {}",
            w.purpose,
            w.opened_by,
            jiff::Timestamp::from_second(w.until).map(|t| t.to_string()).unwrap_or_default()
        )),
        Ok(_) => None,
        Err(e) => Some(format!("unreadable ({e})")),
    };
    Probe::observed(UsbFacts {
        storage_driver_blocked: loaded.is_empty() && !blocking_files.is_empty(),
        authorized_default,
        open_window,
        usb_block_devices: devices,
        method: if blocking_files.is_empty() {
            format!("no modprobe rule keeps usb-storage from loading; storage drivers loaded: {loaded_text}")
        } else {
            format!("modprobe rules in {}; storage drivers loaded: {loaded_text}; USB device policy read from {policy_source}", blocking_files.join(", "))
        },
    })
}

fn network_facts(config: &Config) -> NetworkFacts {
    let mut listeners = vec![Listener {
        bind: config.web.listen.to_string(),
        protocol: if config.web.tls == crate::web::TlsMode::PlainHttpDev { "http".into() } else { "https".into() },
        service: "web UI".into(),
        audience: "clinic LAN (staff browsers)".into(),
    }];
    if let Some(redirect) = config.web.redirect_listen {
        listeners.push(Listener {
            bind: redirect.to_string(),
            protocol: "http".into(),
            service: "redirect to HTTPS".into(),
            audience: "clinic LAN (staff browsers)".into(),
        });
    }
    NetworkFacts {
        addresses: addresses().into_iter().map(|a| a.to_string()).collect(),
        listeners,
        engine_channel: config.engine.endpoint.clone().unwrap_or_else(|| "no engine configured".into()),
    }
}

fn os_release(host: &HostRoot, key: &str) -> String {
    host.read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default()
}

fn inventory(config: &Config, host: &HostRoot) -> Inventory {
    let cpuinfo = host.read("/proc/cpuinfo");
    let cpu_model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let memory_mib = host.read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next().and_then(|k| k.parse::<u64>().ok()))
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    // The SecureBoot variable: 4 attribute bytes, then 1 for enabled.
    let secure_boot = std::fs::read(host.path("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"))
        .ok()
        .and_then(|b| b.get(4).map(|v| *v == 1));
    Inventory {
        hardware_vendor: host.read("/sys/class/dmi/id/sys_vendor"),
        hardware_model: host.read("/sys/class/dmi/id/product_name"),
        serial: host.read("/sys/class/dmi/id/product_serial"),
        cpu: format!("{} × {}", cores, cpu_model.unwrap_or_else(|| "unknown CPU".into())),
        memory_mib,
        gpus: gpus(config),
        os: os_release(host, "PRETTY_NAME"),
        kernel: host.read("/proc/sys/kernel/osrelease"),
        image_version: os_release(host, "IMAGE_VERSION"),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        secure_boot,
        models: models(config),
    }
}

fn gpus(config: &Config) -> Vec<Gpu> {
    let Ok(book) = wardbox_gpu::health::HealthBook::new(config.gpu.health.clone()) else { return vec![] };
    let report = wardbox_gpu::watch(
        config.gpu.nvml_library.as_deref(),
        book,
        1,
        Duration::ZERO,
        None,
        &config.gpu.placement_policy(),
        |_, _| {},
    );
    let driver = report.system.as_ref().and_then(|s| s.driver_version.ok().cloned()).unwrap_or_default();
    report
        .gpus
        .iter()
        .map(|g| Gpu {
            name: g.reading.name.ok().cloned().unwrap_or_else(|| format!("GPU {}", g.reading.index)),
            memory_mib: g.reading.memory.ok().map(|m| m.total_bytes / (1024 * 1024)).unwrap_or(0),
            driver: driver.clone(),
            health: format!("{:?}", g.state).to_lowercase(),
        })
        .collect()
}

/// Models in the engine's store: each manifest's model layer and its digest. Whether the
/// engine re-verified it at load is not known from here (reported as not verified).
fn models(config: &Config) -> Vec<Model> {
    let Some(store) = config.engine.supervise.as_ref().map(|s| s.store.clone()) else { return vec![] };
    let root = store.join("manifests");
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap_or_default()) else { continue };
            let name = path.strip_prefix(&root).map(|p| p.display().to_string()).unwrap_or_default();
            for layer in manifest["layers"].as_array().into_iter().flatten() {
                if layer["mediaType"] == "application/vnd.ollama.image.model" {
                    let digest = layer["digest"].as_str().unwrap_or_default();
                    found.push(Model {
                        name: name.clone(),
                        role: if name.contains("minilm") || name.contains("embed") { "embedding".into() } else { "chat".into() },
                        file: format!("blobs/{}", digest.replace(':', "-")),
                        bytes: layer["size"].as_u64().unwrap_or(0),
                        sha256: digest.trim_start_matches("sha256:").to_string(),
                        digest_verified: false,
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_storage_is_blocked_only_by_rules_that_hold() {
        assert!(modprobe_blocks_usb_storage("install usb-storage /bin/false\n"));
        assert!(modprobe_blocks_usb_storage("install usb_storage /bin/true # no USB drives\n"));
        assert!(modprobe_blocks_usb_storage("blacklist usb-storage\nblacklist uas\n"));
        // A blacklist alone: uas still loads usb-storage as a dependency.
        assert!(!modprobe_blocks_usb_storage("blacklist usb-storage\n"));
        assert!(!modprobe_blocks_usb_storage("# install usb-storage /bin/false\n"));
        assert!(!modprobe_blocks_usb_storage("install usb-storage /sbin/modprobe --ignore-install usb-storage\n"));
        assert!(!modprobe_blocks_usb_storage(""));
    }

    #[test]
    fn backup_facts_come_from_the_runs_the_store_recorded() {
        use crate::backup::{self, RunKind, RunRecord};
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open_or_create(&dir.path().join("store.db"), &crate::store::StoreKey::random()).expect("store");
        // Before the backup tables exist (an old store): not configured, never.
        let none = backup_facts(&store);
        assert!(!none.configured && none.last_backup.is_none());
        store.migrate().expect("migrate");
        let none = backup_facts(&store);
        assert!(!none.configured && !none.encrypted && none.last_backup.is_none() && none.last_tested_restore.is_none());

        backup::key_or_create(&store).expect("key");
        let at = |s: &str| s.parse::<Timestamp>().expect("time");
        let run = |kind, finished: &str, ok| RunRecord {
            kind,
            destination: "/media/backup".into(),
            started_at: at(finished),
            finished_at: at(finished),
            ok,
            snapshot_id: ok.then(|| "abc".into()),
            detail: json!({}),
        };
        backup::record_run(&store, &run(RunKind::Backup, "2026-11-27T02:00:00Z", true)).expect("record");
        backup::record_run(&store, &run(RunKind::Drill, "2026-11-01T03:00:00Z", true)).expect("record");
        // Failed runs after the good ones do not erase them (their failures raise alerts).
        backup::record_run(&store, &run(RunKind::Backup, "2026-11-28T02:00:00Z", false)).expect("record");
        backup::record_run(&store, &run(RunKind::Drill, "2026-11-28T03:00:00Z", false)).expect("record");
        let facts = backup_facts(&store);
        assert!(facts.configured && facts.encrypted);
        assert_eq!(facts.last_backup, Some(at("2026-11-27T02:00:00Z")));
        assert_eq!(facts.last_tested_restore, Some(at("2026-11-01T03:00:00Z")));
    }

    fn tree() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = HostRoot(dir.path().to_path_buf());
        (dir, root)
    }

    fn observed<T>(p: Probe<T>) -> T {
        match p {
            Probe::Observed { value } => value,
            Probe::Unavailable { reason } => panic!("unavailable: {reason}"),
        }
    }

    #[test]
    fn usb_probe_reads_rules_loaded_drivers_and_usb_disks() {
        let (_dir, host) = tree();
        std::fs::create_dir_all(host.path("/etc/modprobe.d")).expect("mkdir");
        std::fs::create_dir_all(host.path("/sys/module")).expect("mkdir");
        std::fs::create_dir_all(host.path("/sys/block")).expect("mkdir");
        let none = observed(usb_facts(&host));
        assert!(!none.storage_driver_blocked);
        assert!(none.method.contains("no modprobe rule"), "{}", none.method);

        std::fs::write(host.path("/etc/modprobe.d/wardbox-usb.conf"), "install usb-storage /bin/false\n").expect("write");
        let blocked = observed(usb_facts(&host));
        assert!(blocked.storage_driver_blocked, "{}", blocked.method);
        assert!(blocked.method.contains("/etc/modprobe.d/wardbox-usb.conf"), "{}", blocked.method);

        // A driver already loaded defeats the rule (it was loaded before, or by hand).
        std::fs::create_dir_all(host.path("/sys/module/usb_storage")).expect("mkdir");
        let loaded = observed(usb_facts(&host));
        assert!(!loaded.storage_driver_blocked);
        assert!(loaded.method.contains("usb_storage"), "{}", loaded.method);

        std::os::unix::fs::symlink("../devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/block/sdb", host.path("/sys/block/sdb"))
            .expect("symlink");
        std::os::unix::fs::symlink("../devices/pci0000:00/0000:00:17.0/ata1/host0/block/sda", host.path("/sys/block/sda"))
            .expect("symlink");
        assert_eq!(observed(usb_facts(&host)).usb_block_devices, vec!["sdb".to_string()]);
    }

    #[test]
    fn usb_probe_reads_the_device_policy_live_or_from_the_command_line_and_the_window() {
        let (_dir, host) = tree();
        std::fs::create_dir_all(host.path("/proc")).expect("mkdir");
        assert_eq!(observed(usb_facts(&host)).authorized_default, None, "nothing to read");
        // The USB core not loaded yet (no controller): what the command line will load it with.
        std::fs::write(host.path("/proc/cmdline"), "root=PARTUUID=x ro usbcore.authorized_default=0 quiet\n").expect("write");
        assert_eq!(observed(usb_facts(&host)).authorized_default, Some(0));
        // Loaded: its live setting wins.
        std::fs::create_dir_all(host.path("/sys/module/usbcore/parameters")).expect("mkdir");
        std::fs::write(host.path("/sys/module/usbcore/parameters/authorized_default"), "-1\n").expect("write");
        assert_eq!(observed(usb_facts(&host)).authorized_default, Some(-1));
        // An administrator's window, open now.
        assert_eq!(observed(usb_facts(&host)).open_window, None);
        let now = jiff::Timestamp::now().as_second();
        let w = crate::usb::window::Window::new(crate::usb::window::Purpose::Update, "admin:jo", now, 10).expect("window");
        crate::usb::window::write(&host.path("/run/wardbox-usb/window.json"), &w).expect("write");
        let open = observed(usb_facts(&host)).open_window.expect("open");
        assert!(open.starts_with("for update by admin:jo until "), "{open}");
    }

    #[test]
    fn os_release_values_are_unquoted() {
        let (_dir, host) = tree();
        std::fs::create_dir_all(host.path("/etc")).expect("mkdir");
        std::fs::write(host.path("/etc/os-release"), "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nIMAGE_VERSION=0.1.0\n").expect("write");
        assert_eq!(os_release(&host, "PRETTY_NAME"), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os_release(&host, "IMAGE_VERSION"), "0.1.0");
        assert_eq!(os_release(&host, "VERSION_ID"), "");
    }

    #[test]
    fn listeners_on_any_address_are_probed_on_loopback() {
        assert_eq!(probe_address("0.0.0.0:443".parse().expect("addr")), "127.0.0.1:443".parse::<SocketAddr>().expect("addr"));
        assert_eq!(probe_address("[::]:443".parse().expect("addr")), "[::1]:443".parse::<SocketAddr>().expect("addr"));
        assert_eq!(probe_address("192.168.10.5:443".parse().expect("addr")), "192.168.10.5:443".parse::<SocketAddr>().expect("addr"));
    }

    #[test]
    fn the_unlock_path_is_read_from_the_unlock_stage_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::dev_defaults(dir.path());
        std::fs::create_dir_all(&config.state_dir).expect("mkdir");
        assert_eq!(unlocked_by(&config), "unknown (no unlock stage record)");
        let write = |outcome: &str, reason: &str| {
            let health = json!({
                "profile": "appliance", "state": "serving", "pid": 1, "started_at": "2026-11-29T10:00:00Z",
                "stages": [{ "stage": "unlock", "outcome": outcome, "reason": reason, "started_at": null, "duration_ms": 5 }],
                "running_without": [], "alerts": [],
            });
            std::fs::write(crate::daemon::status_file(&config.state_dir), health.to_string()).expect("write");
        };
        write("ok", "LUKS2 volume /dev/vda3 opened with the TPM-sealed key (sha256:0,2,4,7; policy /etc/wardbox/firmware-policy.toml), mounted at /var/lib/wardbox/data");
        assert_eq!(unlocked_by(&config), "tpm");
        write("failed", "the TPM refuses; run `wardbox volume recover` (recovery key)");
        assert_eq!(unlocked_by(&config), "recovery");
        write("ok", "opened");
        assert_eq!(unlocked_by(&config), "unknown (unlock stage ok: opened)");
    }

    #[test]
    fn accounts_and_sign_ins_are_read_from_a_real_store() {
        use crate::audit::{AuditEvent, AuditLog, EventKind};
        use crate::web::accounts::{NewUser, Role, add_user, set_disabled};
        let dir = tempfile::tempdir().expect("tempdir");
        let key = crate::store::StoreKey::random();
        let path = dir.path().join("store.db");
        let (mut store, _) = Store::open_or_create(&path, &key).expect("store");
        store.migrate().expect("migrate");
        for (name, role, break_glass) in [("dr.smith", Role::Clinician, true), ("pm.jones", Role::Admin, false), ("old.user", Role::Clinician, false)] {
            let new = NewUser { username: name, display_name: name, role, password: "a long enough password", break_glass };
            add_user(store.conn(), &new, "2026-01-05T09:00:00Z").expect("add user");
        }
        set_disabled(store.conn(), "old.user", true).expect("disable");
        let (log, writer) = AuditLog::start(&path, &key).expect("audit log");
        for (kind, actor) in [(EventKind::Login, "dr.smith"), (EventKind::Login, "dr.smith"), (EventKind::LoginFailed, "pm.jones"), (EventKind::Login, "pm.jones")] {
            log.append_blocking(AuditEvent::new(kind, actor, json!({ "source": "local" }))).expect("append");
        }
        drop(log);
        writer.join();

        let now = Timestamp::now();
        let accounts = observed(accounts(&store, now));
        assert_eq!(accounts.len(), 3);
        let smith = accounts.iter().find(|a| a.user_id == "dr.smith").expect("dr.smith");
        assert_eq!(smith.password_scheme, "argon2id");
        assert_eq!(smith.created_at, Some("2026-01-05T09:00:00Z".parse().expect("time")));
        let last = smith.last_sign_in.expect("a last sign-in");
        assert!(now.duration_since(last) < jiff::SignedDuration::from_mins(5), "{last}");
        assert!(accounts.iter().find(|a| a.user_id == "old.user").expect("old.user").last_sign_in.is_none());
        assert!(accounts.iter().find(|a| a.user_id == "old.user").expect("old.user").disabled);

        let activity = observed(sign_ins(&store, now));
        assert_eq!(first_seq_since(&store, now.checked_sub(jiff::SignedDuration::from_hours(48)).expect("time")).expect("bisect"), Some(1));
        assert_eq!(first_seq_since(&store, now.checked_add(jiff::SignedDuration::from_hours(48)).expect("time")).expect("bisect"), None);
        assert_eq!((activity.successful, activity.failed), (3, 1));
        assert!(break_glass_enabled(&store));
    }

    #[test]
    fn the_reviews_the_box_records_are_read_from_a_real_store() {
        use crate::web::accounts::{NewUser, Role, add_user, set_disabled};
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open_or_create(&dir.path().join("store.db"), &crate::store::StoreKey::random()).expect("store");
        store.migrate().expect("migrate");
        assert_eq!(activity_review_facts(&store), Probe::observed(None));
        assert_eq!(access_review_facts(&store), Probe::observed(None));
        for (name, role) in [("dr.smith", Role::Clinician), ("nurse.lee", Role::Nurse), ("old.user", Role::Clinician), ("it.admin", Role::Admin)] {
            let new = NewUser { username: name, display_name: name, role, password: "a long enough password", break_glass: false };
            add_user(store.conn(), &new, "2026-01-05T09:00:00Z").expect("add user");
        }
        set_disabled(store.conn(), "old.user", true).expect("disable");

        let monday = |d: &str| d.parse::<jiff::civil::Date>().expect("date");
        crate::alerting::review::record_review(store.conn(), monday("2026-11-09"), "pm.jones", "2026-11-17T08:00:00Z", "looked at the week").expect("review");
        crate::alerting::review::record_review(store.conn(), monday("2026-11-16"), "auditor.kim", "2026-11-24T08:30:00.5Z", "quiet week").expect("review");
        let review = |quarter: &str, user: &str, by: &str, at: &str| {
            store
                .conn()
                .execute(
                    "INSERT INTO access_reviews (quarter, username, decision, grants, reviewed_by, reviewed_at) VALUES (?1, ?2, 'confirmed', 3, ?3, ?4)",
                    rusqlite::params![quarter, user, by, at],
                )
                .expect("access review");
        };
        review("2026-Q3", "nurse.lee", "it.admin", "2026-09-20T10:00:00Z");
        review("2026-Q4", "dr.smith", "it.admin", "2026-10-05T10:00:00Z");

        let activity = activity_review_facts(&store);
        let Probe::Observed { value: Some(a) } = &activity else { panic!("{activity:?}") };
        assert_eq!((a.week.as_str(), a.reviewed_by.as_str(), a.reviewed_at.to_string().as_str()), ("2026-11-16", "auditor.kim", "2026-11-24T08:30:00.5Z"));
        let access = access_review_facts(&store);
        let Probe::Observed { value: Some(r) } = &access else { panic!("{access:?}") };
        assert_eq!((r.quarter.as_str(), r.reviewed_by.as_str(), r.users_decided), ("2026-Q4", "it.admin", 1));
        assert_eq!(r.not_decided, vec!["nurse.lee".to_string()], "a disabled clinician and an admin are not reviewed");

        // Into the checklist: the week reviewed 5 days before passes; the quarter's review
        // still lacks nurse.lee, and the report says so.
        let now: Timestamp = "2026-11-29T10:00:00Z".parse().expect("time");
        let facts = Facts { activity_review: activity, access_review: access, ..wardbox_report::sample::healthy(now) };
        let report = wardbox_report::evaluate(&facts, now);
        let item = |id| report.item(id).expect("item");
        assert_eq!(item(wardbox_report::ids::ACTIVITY_REVIEW).status, Status::Pass, "{}", item(wardbox_report::ids::ACTIVITY_REVIEW).reason);
        let access_item = item(wardbox_report::ids::ACCESS_REVIEW);
        assert_eq!(access_item.status, Status::NeedsAttention);
        assert!(access_item.reason.contains("2026-Q4") && access_item.reason.contains("nurse.lee"), "{}", access_item.reason);

        review("2026-Q4", "nurse.lee", "it.admin", "2026-11-02T10:00:00Z");
        let Probe::Observed { value: Some(r) } = access_review_facts(&store) else { panic!("access review") };
        assert!(r.not_decided.is_empty() && r.users_decided == 2, "{r:?}");
    }

    #[test]
    fn the_box_exports_each_complete_month_once_and_the_retention_item_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("mkdir");
        let (mut store, _) = Store::open_or_create(&data_dir.join("store.db"), &crate::store::StoreKey::random()).expect("store");
        store.migrate().expect("migrate");
        for (seq, ts) in [(1i64, "2026-09-03T08:00:00Z"), (2, "2026-10-14T09:00:00Z"), (3, "2026-10-20T09:00:00Z"), (4, "2026-11-02T10:00:00Z")] {
            store
                .conn()
                .execute("INSERT INTO audit (seq, ts, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, 'login', 'a', '{}', '', '')", rusqlite::params![seq, ts])
                .expect("insert");
        }
        let now: Timestamp = "2026-11-29T10:00:00Z".parse().expect("time");
        let config = Config::dev_defaults(dir.path());
        // Before any export: observed, every complete month missing (not "could not measure").
        let before = observed(retention_facts(&config, &store, None));
        assert_eq!((before.first_record_month.as_deref(), before.exports.len()), (Some("2026-09"), 0));

        let written = export_missing_months(&store, now).expect("export");
        let months: Vec<(&str, u64)> = written.iter().map(|(m, s)| (m.as_str(), s.records)).collect();
        assert_eq!(months, vec![("2026-09", 1), ("2026-10", 2)], "complete months only, each with its records");
        assert!(export_missing_months(&store, now).expect("again").is_empty(), "an export is never redone");
        let after = observed(retention_facts(&config, &store, None));
        assert_eq!(after.exports, vec![MonthExport { month: "2026-09".into(), checksum_ok: true }, MonthExport { month: "2026-10".into(), checksum_ok: true }]);
        let report = wardbox_report::evaluate(&Facts { retention: Probe::observed(after), ..wardbox_report::sample::healthy(now) }, now);
        assert_eq!(report.item(wardbox_report::ids::RETENTION).map(|i| i.status), Some(Status::Pass));

        // A damaged export is seen as such.
        let file = data_dir.join(EXPORTS_DIR).join("audit-2026-10.jsonl.gz");
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[12] ^= 0x20;
        std::fs::write(&file, bytes).expect("write");
        let damaged = observed(retention_facts(&config, &store, None));
        assert_eq!(damaged.exports[1], MonthExport { month: "2026-10".into(), checksum_ok: false });
    }

    #[test]
    fn the_window_start_is_found_by_bisecting_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open_or_create(&dir.path().join("store.db"), &crate::store::StoreKey::random()).expect("store");
        store.migrate().expect("migrate");
        let base: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let day = |d: i64| base.checked_add(jiff::SignedDuration::from_hours(24 * d)).expect("time");
        for seq in 1..=100i64 {
            store
                .conn()
                .execute(
                    "INSERT INTO audit (seq, ts, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, 'login', 'a', '{}', '', '')",
                    rusqlite::params![seq, day(seq).to_string()],
                )
                .expect("insert");
        }
        // A day of slack before the window's start.
        assert_eq!(first_seq_since(&store, day(50)).expect("bisect"), Some(49));
        assert_eq!(first_seq_since(&store, day(-5)).expect("bisect"), Some(1));
        assert_eq!(first_seq_since(&store, day(101)).expect("bisect"), Some(100));
        assert_eq!(first_seq_since(&store, day(200)).expect("bisect"), None);
    }

    /// An `EFI_SIGNATURE_LIST` of X.509 certificates, as the firmware stores PK, KEK and db
    /// (behind efivarfs' 4 attribute bytes).
    fn x509_list(certs: &[&[u8]]) -> Vec<u8> {
        const X509: [u8; 16] = [0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72];
        let entry = 16 + certs[0].len();
        let mut out = vec![0x27, 0, 0, 0];
        out.extend(X509);
        out.extend(u32::try_from(28 + entry * certs.len()).expect("size").to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(u32::try_from(entry).expect("size").to_le_bytes());
        for cert in certs {
            out.extend([0x5a; 16]);
            out.extend(*cert);
        }
        out
    }

    fn utf16_var(text: &str) -> Vec<u8> {
        let mut bytes = vec![6, 0, 0, 0];
        bytes.extend(text.encode_utf16().chain([0]).flat_map(u16::to_le_bytes));
        bytes
    }

    /// What a box that booted a signed UKI shows: the dm-verity arguments on the command line,
    /// / mounted from /dev/mapper/wardbox-root (254:0), and sysfs's dm-0 with the name and the
    /// UUID veritysetup gives it (/sys/dev/block/254:0 links to it, as in sysfs).
    fn verified_root(host: &HostRoot, root_hash: &str) {
        for d in ["/proc/self", "/sys/block/dm-0/dm", "/sys/block/vda/vda2", "/sys/dev/block"] {
            std::fs::create_dir_all(host.path(d)).expect("mkdir");
        }
        std::fs::write(
            host.path("/proc/cmdline"),
            format!("root=PARTUUID=6e1c0b1a-5f3e-4a8e-9d55-0a2c3f1e9b01 wardbox.verity_root_hash={root_hash} wardbox.verity_hash_offset=1610612736 ro panic=30 quiet\n"),
        )
        .expect("write");
        std::fs::write(
            host.path("/proc/self/mountinfo"),
            "23 1 254:0 / / ro,relatime shared:1 - ext4 /dev/mapper/wardbox-root ro\n\
             24 23 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n\
             25 23 0:5 / /dev rw,nosuid,relatime shared:3 - devtmpfs udev rw,size=4041180k\n\
             40 23 254:1 / /var/lib/wardbox/data rw,relatime shared:20 - ext4 /dev/mapper/wardbox-data rw\n",
        )
        .expect("write");
        std::fs::write(host.path("/sys/block/dm-0/dm/name"), "wardbox-root\n").expect("write");
        std::fs::write(host.path("/sys/block/dm-0/dm/uuid"), "CRYPT-VERITY-5d1e2a0c9b7f4e3aa1c8d6e4f2b0a9c7-wardbox-root\n").expect("write");
        for (number, target) in [("254:0", "../../block/dm-0"), ("252:2", "../../block/vda/vda2")] {
            let link = host.path(&format!("/sys/dev/block/{number}"));
            if !link.exists() {
                std::os::unix::fs::symlink(target, link).expect("symlink");
            }
        }
    }

    #[test]
    fn the_root_file_system_is_read_from_the_command_line_the_mount_table_and_sysfs() {
        let (_dir, host) = tree();
        assert!(
            matches!(root_file_system(&host), Probe::Unavailable { reason } if reason.contains("/proc/cmdline cannot be read")),
            "nothing to read"
        );
        let hash = "3f9c".repeat(16);
        verified_root(&host, &hash);
        let root = observed(root_file_system(&host));
        assert_eq!(root.root_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(root.hash_offset, Some(1_610_612_736));
        assert_eq!(root.arguments_refused, None);
        assert_eq!((root.device.as_str(), root.device_number.as_str()), ("/dev/mapper/wardbox-root", "254:0"));
        assert_eq!(root.dm_name.as_deref(), Some("wardbox-root"));
        assert!(root.dm_verity);

        // The device number decides, not the mount table's name for it (the kernel's /dev/root,
        // a /dev/dm-0 path).
        let mountinfo = host.path("/proc/self/mountinfo");
        std::fs::write(&mountinfo, "23 1 254:0 / / ro,relatime shared:1 - ext4 /dev/root ro\n").expect("write");
        let root = observed(root_file_system(&host));
        assert!(root.dm_verity && root.dm_name.as_deref() == Some("wardbox-root"), "{root:?}");

        // A dm device that veritysetup did not make (a plain mapping of the slot).
        std::fs::write(host.path("/sys/block/dm-0/dm/uuid"), "\n").expect("write");
        assert!(!observed(root_file_system(&host)).dm_verity);

        // / on the plain slot partition, booted without the arguments: observed, not verified.
        std::fs::write(&mountinfo, "23 1 252:2 / / ro,relatime shared:1 - ext4 /dev/vda2 ro\n").expect("write");
        std::fs::write(host.path("/proc/cmdline"), "root=PARTUUID=6e1c0b1a-5f3e-4a8e-9d55-0a2c3f1e9b01 ro\n").expect("write");
        let root = observed(root_file_system(&host));
        assert_eq!((root.root_hash, root.hash_offset, root.arguments_refused), (None, None, None));
        assert_eq!((root.device.as_str(), root.dm_name, root.dm_verity), ("/dev/vda2", None, false));

        // A container's overlay root (no block device behind it): not a dm device either; the
        // last mount on / is the one in use.
        std::fs::write(
            &mountinfo,
            "1 0 0:2 / / rw - rootfs rootfs rw\n500 1 0:51 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/x\n",
        )
        .expect("write");
        let root = observed(root_file_system(&host));
        assert_eq!((root.device.as_str(), root.device_number.as_str(), root.dm_name), ("overlay", "0:51", None));

        // Malformed arguments are said, with the parse's reason (the update install's parser).
        std::fs::write(host.path("/proc/cmdline"), "root=PARTUUID=x wardbox.verity_root_hash=xyz wardbox.verity_hash_offset=4096\n").expect("write");
        let root = observed(root_file_system(&host));
        assert!(root.root_hash.is_none() && root.arguments_refused.as_deref().is_some_and(|r| r.contains("not a SHA-256")), "{root:?}");

        // What cannot be read is unavailable, naming it.
        std::fs::remove_file(&mountinfo).expect("rm");
        assert!(matches!(root_file_system(&host), Probe::Unavailable { reason } if reason.contains("/proc/self/mountinfo cannot be read")));
        std::fs::write(&mountinfo, "24 23 0:22 / /sys rw - sysfs sysfs rw\n").expect("write");
        assert!(matches!(root_file_system(&host), Probe::Unavailable { reason } if reason.contains("no file system mounted on /")));
        std::fs::write(&mountinfo, "23 1 254:0 / / ro - ext4 /dev/mapper/wardbox-root ro\n").expect("write");
        std::fs::remove_file(host.path("/sys/block/dm-0/dm/name")).expect("rm");
        assert!(matches!(root_file_system(&host), Probe::Unavailable { reason } if reason.contains("device-mapper name or UUID")));
        std::fs::remove_dir_all(host.path("/sys")).expect("rm");
        assert!(matches!(root_file_system(&host), Probe::Unavailable { reason } if reason.contains("/sys/dev/block cannot be read")));
    }

    #[test]
    fn mount_table_fields_are_unescaped() {
        assert_eq!(unescape_mount_field(r"/dev/disk/by-label/my\040root"), "/dev/disk/by-label/my root");
        assert_eq!(unescape_mount_field(r"a\134b"), r"a\b");
        assert_eq!(unescape_mount_field(r"trailing\"), r"trailing\");
        assert_eq!(root_mount("7 1 8:1 / /mnt\\040x rw - ext4 /dev/sda1 rw\n"), None);
    }

    #[test]
    fn the_measured_boot_is_read_from_efivars_and_the_firmware_policy_and_judged() {
        use wardbox_firmware_policy::{CertFingerprint, LOADER_GUID};
        let (dir, host) = tree();
        let efivars = dir.path().join("efivars");
        std::fs::create_dir_all(&efivars).expect("mkdir");
        let global = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
        let put = |name: String, bytes: &[u8]| std::fs::write(efivars.join(name), bytes).expect("write");
        put(format!("SecureBoot-{global}"), &[6, 0, 0, 0, 1]);
        put(format!("SetupMode-{global}"), &[6, 0, 0, 0, 0]);
        put(format!("LoaderEntrySelected-{LOADER_GUID}"), &utf16_var("wardbox-0.4.0.efi"));
        put(format!("StubInfo-{LOADER_GUID}"), &utf16_var("systemd-stub 252.39-1~deb12u2"));
        put(format!("PK-{global}"), &x509_list(&[b"pk cert"]));
        put(format!("KEK-{global}"), &x509_list(&[b"kek cert"]));
        put("db-d719b2cb-3d3a-4596-a3bc-dad00e67656f".into(), &x509_list(&[b"db cert"]));
        let fp = |der: &[u8]| CertFingerprint::of_der(der).to_string();
        let policy_file = dir.path().join("firmware-policy.toml");
        std::fs::write(
            &policy_file,
            format!(
                "policy_version = 1\npcr_bank = \"sha256\"\npcrs = [7]\nsecure_boot = \"required\"\non_tpm_refusal = \"recovery-only\"\n\
                 [secure_boot_keys]\npk = [\"{}\"]\nkek = [\"{}\"]\ndb = [\"{}\"]\n[signed_pcr11]\npublic_key = \"/usr/share/wardbox/pcr-sign.pub.pem\"\n",
                fp(b"pk cert"),
                fp(b"kek cert"),
                fp(b"db cert")
            ),
        )
        .expect("write policy");
        let mut config = Config::dev_defaults(dir.path());
        config.volume = VolumeConfig::Luks2Tpm(crate::stages::unlock::Luks2TpmConfig {
            device: "/dev/vda3".into(),
            mapper_name: "wardbox-data".into(),
            mount_point: "/var/lib/wardbox/data".into(),
            tcti: "device:/dev/tpmrm0".into(),
            firmware_policy: policy_file.clone(),
            efivars_dir: efivars.clone(),
            argon2: wardbox_volume::luks::KdfParams::APPLIANCE,
            mkfs: "/usr/sbin/mkfs.ext4".into(),
        });
        let pcrs = || Probe::observed(BootPcrs { pcr7: "7a".repeat(32), pcr11: "b1".repeat(32) });
        verified_root(&host, &"3f9c".repeat(16));
        let facts = measured_boot(&config, &host, pcrs());
        assert!(observed(facts.root.clone()).dm_verity, "{:?}", facts.root);
        let firmware = observed(facts.firmware.clone());
        assert_eq!((firmware.secure_boot, firmware.setup_mode, firmware.audit_mode), (Some(true), Some(false), None));
        assert_eq!(firmware.boot_entry.as_deref(), Some("wardbox-0.4.0.efi"));
        let policy = observed(facts.policy.clone());
        assert!(policy.signed_pcr11 && policy.secure_boot_required, "{policy:?}");
        assert_eq!(policy.pinned_keys.iter().map(|k| k.variable.as_str()).collect::<Vec<_>>(), ["PK", "KEK", "db"]);
        assert_eq!(observed(policy.enrolled_keys.clone())[2].entries, vec![fp(b"db cert")]);
        assert_eq!(policy.keys_refused, None);

        // Judged with a healthy box's other facts: the read facts pass; a foreign db
        // certificate (the config stage's refusal) and Secure Boot off fail, naming why.
        let now = Timestamp::now();
        let judge = |measured_boot: MeasuredBootFacts| {
            let mut f = wardbox_report::sample::healthy(now);
            f.measured_boot = measured_boot;
            evaluate(&f, now).item(wardbox_report::ids::MEASURED_BOOT).cloned().expect("item")
        };
        let item = judge(facts);
        assert_eq!(item.status, Status::Pass, "{}", item.reason);
        put("db-d719b2cb-3d3a-4596-a3bc-dad00e67656f".into(), &x509_list(&[b"someone else's cert"]));
        let item = judge(measured_boot(&config, &host, pcrs()));
        assert_eq!(item.status, Status::Fail, "{}", item.reason);
        assert!(item.reason.contains("Secure Boot db") && item.reason.contains(&fp(b"someone else's cert")), "{}", item.reason);
        put(format!("SecureBoot-{global}"), &[6, 0, 0, 0, 0]);
        let item = judge(measured_boot(&config, &host, pcrs()));
        assert!(item.status == Status::Fail && item.reason.contains("Secure Boot is off"), "{}", item.reason);

        // A dev box (plain directory) on a host without UEFI variables: nothing to measure.
        let dev = Config::dev_defaults(dir.path());
        let facts = measured_boot(&dev, &host, read_boot_pcrs(None));
        assert!(matches!(&facts.firmware, Probe::Unavailable { reason } if reason.contains("not booted through UEFI")), "{:?}", facts.firmware);
        assert!(matches!(&facts.pcrs, Probe::Unavailable { reason } if reason.contains("no TPM")), "{:?}", facts.pcrs);
        assert!(matches!(&facts.policy, Probe::Unavailable { reason } if reason.contains("plain directory")), "{:?}", facts.policy);
        let item = judge(facts);
        assert_eq!(item.status, Status::NeedsAttention, "{}", item.reason);
    }

    #[test]
    fn the_seal_check_says_whether_this_boots_pcr_11_is_signed() {
        use wardbox_volume::ops::TpmCheck;
        assert_eq!(seal_check(&TpmCheck::WouldUnseal, true).0, Some(true));
        assert_eq!(seal_check(&TpmCheck::WouldUnseal, false).0, None, "a literal-PCR seal says nothing about PCR 11");
        assert_eq!(seal_check(&TpmCheck::Pcr11NotSigned("no matching signature".into()), true), (Some(false), "no matching signature".into()));
        assert_eq!(seal_check(&TpmCheck::PcrsChanged, true).0, None);
    }

    #[test]
    fn a_monthly_report_is_due_until_one_of_this_month_exists() {
        let now: Timestamp = "2026-12-01T03:00:00Z".parse().expect("time");
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(monthly_due(now, &[]));
        assert!(monthly_due(now, &names(&["wardbox-report-20261101T030000Z.json", "wardbox-report-20261201T030000Z.html"])));
        assert!(!monthly_due(now, &names(&["wardbox-report-20261201T030000Z.json"])));
        let later: Timestamp = "2026-12-17T09:00:00Z".parse().expect("time");
        assert!(!monthly_due(later, &names(&["wardbox-report-20261201T030000Z.json"])));
        let next_month: Timestamp = "2027-01-01T00:00:01Z".parse().expect("time");
        assert!(monthly_due(next_month, &names(&["wardbox-report-20261201T030000Z.json"])));
    }

    #[test]
    fn the_newest_report_is_the_one_compared_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(newest_report(dir.path()), None);
        for name in [
            "wardbox-report-20261001T000000Z.json",
            "wardbox-report-20261101T000000Z.json",
            "wardbox-report-20261101T000000Z.oscal.json",
            "wardbox-report-20261101T000000Z.html",
            "notes.json",
        ] {
            std::fs::write(dir.path().join(name), "{}").expect("write");
        }
        assert_eq!(newest_report(dir.path()), Some(dir.path().join("wardbox-report-20261101T000000Z.json")));
    }
}
