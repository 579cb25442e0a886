//! `wardbox audit …`: verify the chain, export a month, checkpoint the head.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{CliError, CliResult, DEFAULT_CONFIG, cli_actor, load_config};
use crate::audit::{self, AuditEvent, AuditLog, EventKind};
use crate::config::Config;
use crate::stages::unlock::{UnlockedVolume, unlocker};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the whole chain and the checkpoints; name the first broken record (exit 3).
    Verify {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Export one month to audit-YYYY-MM.jsonl.gz with a .sha256 file beside it.
    Export {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The month, YYYY-MM (UTC).
        #[arg(long)]
        month: String,
        /// Directory to write into (e.g. a mounted retention drive).
        #[arg(long)]
        out: PathBuf,
    },
    /// Record a checkpoint of the chain head now (the agent also does this daily).
    Checkpoint {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

pub fn run(cmd: AuditCommand) -> CliResult {
    match cmd {
        AuditCommand::Verify { config, json } => {
            let config = load_config(&config)?;
            let (store, _) = open(&config)?;
            let checkpoints = crate::daemon::checkpoint_log(&config.state_dir).read_all()?;
            let started = std::time::Instant::now();
            let report = audit::verify_chain(&store, &checkpoints)?;
            let secs = started.elapsed().as_secs_f64();
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(|e| CliError::new(e.to_string()))?);
            } else {
                println!(
                    "{} records, head {} ({}), {} checkpoints checked, {secs:.2}s",
                    report.records,
                    report.head_seq,
                    short(&report.head_hash),
                    report.checkpoints_checked
                );
            }
            match &report.first_break {
                None => {
                    // A full walk found it intact: the compliance report's incremental check
                    // starts from here, and cites this walk for the records before it.
                    let now = jiff::Timestamp::now();
                    let head = audit::VerifiedHead {
                        seq: report.head_seq,
                        hash: report.head_hash.clone(),
                        verified_at: now,
                        full_walk_at: Some(now),
                        full_walk_seq: report.head_seq,
                    };
                    let file = audit::VerifiedHeadFile::in_state_dir(&config.state_dir);
                    if let Err(e) = file.write(&head) {
                        eprintln!("note: the verified head could not be kept in {}: {e}", file.path().display());
                    }
                    if !json {
                        println!("audit chain intact");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(b) => Err(CliError::check_failed(format!("AUDIT CHAIN BROKEN: {b}"))),
            }
        }
        AuditCommand::Export { config, month, out } => {
            let config = load_config(&config)?;
            let (store, volume) = open(&config)?;
            let summary = audit::export_month(&store, &month, &out).map_err(CliError::new)?;
            record(&store, &volume, json!({ "action": "audit_export", "month": month, "records": summary.records, "sha256": summary.sha256 }))?;
            println!(
                "exported {} records ({}..{}) to {}\nchecksum in {}",
                summary.records,
                summary.first_seq.map(|s| s.to_string()).unwrap_or_default(),
                summary.last_seq.map(|s| s.to_string()).unwrap_or_default(),
                summary.file.display(),
                summary.checksum_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint { config } => {
            let config = load_config(&config)?;
            let (store, _) = open(&config)?;
            let (seq, hash) = audit::read_head(&store)?;
            let c = crate::daemon::checkpoint_log(&config.state_dir).record(seq, &hash)?;
            println!("checkpoint: record {} {}", c.seq, c.hash);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Open the store of an agent that has booted at least once with this configuration.
pub(super) fn open(config: &Config) -> Result<(Store, UnlockedVolume), CliError> {
    let volume = unlocker(&config.volume, &config.state_dir).open_for_cli().map_err(CliError::new)?;
    let path = volume.data_dir.join(&config.store.file_name);
    let store = Store::open_existing(&path, &volume.store_key)?;
    Ok((store, volume))
}

/// Audit an operator action from the CLI.
pub(super) fn record(store: &Store, volume: &UnlockedVolume, detail: serde_json::Value) -> Result<(), CliError> {
    record_as(store, volume, &cli_actor(), detail)
}

/// Audit an action as `actor` (the install helper acts for the admin who confirmed on the page).
pub(super) fn record_as(store: &Store, volume: &UnlockedVolume, actor: &str, detail: serde_json::Value) -> Result<(), CliError> {
    let (log, writer) = AuditLog::start(store.path(), &volume.store_key)?;
    log.append_blocking(AuditEvent::new(EventKind::AdminAction, actor, detail))?;
    drop(log);
    writer.join();
    Ok(())
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}
