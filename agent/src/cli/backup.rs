//! `wardbox backup …`: back up now, list, check, restore, drill, show the key for escrow, and
//! rotate it.
//!
//! The destination is a directory (a mounted USB disk). Every command is audited with counts,
//! digests and the key's fingerprint, never file contents or the key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use wardbox_backup::{BackupRepository, Destination, RepositoryKey};

use super::{CliError, CliResult, DEFAULT_CONFIG, load_config};
use crate::backup;
use crate::backup::usb::{ConsoleWindow, DiskSession};
use crate::usb::control::Paths;
use crate::usb::window::Purpose;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up now: a consistent snapshot of the store (the agent keeps running), the
    /// configuration, certificates, trust roots and audit checkpoints; then apply retention.
    Now {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The repository directory (a mounted USB disk); created on first use. Default: the
        /// configured destination ([backup] usb_path or rest_url).
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// List the snapshots in a repository.
    List {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The repository directory; default: the configured destination.
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a repository's structure; with --read-data read and verify every pack (exit 3 on damage).
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The repository directory; default: the configured destination.
        #[arg(long)]
        repo: Option<PathBuf>,
        #[arg(long)]
        read_data: bool,
    },
    /// Restore the latest snapshot into an empty directory and check it against its manifest.
    /// The live store is not touched.
    Restore {
        /// The box's configuration, for the key kept in its store; not needed with --key-file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The repository directory; default: the configured destination.
        #[arg(long)]
        repo: Option<PathBuf>,
        #[arg(long)]
        target: PathBuf,
        /// A file holding the escrowed repository key (for a box that has lost its store).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Restore drill: restore the latest snapshot into a scratch area, open the store, verify
    /// the audit chain and the row counts, record the outcome (exit 3 if it fails).
    Drill {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The repository directory; default: the configured destination.
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Restore onto a replacement box: the latest snapshot, verified like a drill, becomes this
    /// box's store (re-encrypted under this box's key), audit checkpoints, certificates and
    /// update trust; what this box had is moved aside; the audit chain continues with a record
    /// linking the restored head. The agent must be stopped.
    RestoreBox {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The repository directory (the backup disk); default: the configured destination.
        #[arg(long)]
        repo: Option<PathBuf>,
        /// A file holding the escrowed repository key (spaces are ignored).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Print the repository key for the escrow sheet (made on first use). Audited.
    Key {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Rotate the repository key (when someone who saw the escrow sheet leaves, or the sheet is
    /// lost): add a new random key, verify it opens the repository, make it the box's key,
    /// remove every other key, and print the new escrow sheet. Audited by fingerprint.
    RotateKey {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The repository directory; default: the configured destination.
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// After a rotation: bring another backup disk of this box, still on the old key, onto the
    /// box's key (the old key, typed from the old sheet, is removed from it). Audited.
    AdoptKey {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The other repository's directory (the second backup disk).
        #[arg(long)]
        repo: PathBuf,
        /// A file holding the key that still opens it (the old escrow sheet's; spaces are ignored).
        #[arg(long)]
        old_key_file: PathBuf,
    },
}

/// `--repo DIR` when given, else the configured destination; on the appliance the configured
/// USB disk must be mounted (an empty mount point is the system disk). On a box with USB control
/// (`update.usb_window_helper` set) the configured USB disk is let in through a USB window for
/// `purpose` (read-write for a backup, read-only for reading it), opened here as root; the
/// returned session closes it when it is dropped, whatever the outcome (docs/backup.md, "The
/// USB disk on the appliance"). With `--repo` the caller opens a window by hand if one is needed
/// (`wardbox usb open --for backup`).
fn destination_of(config: &crate::config::Config, repo: Option<PathBuf>, purpose: Purpose) -> Result<(Destination, Option<DiskSession>), CliError> {
    if let Some(dir) = repo {
        return Ok((Destination::LocalDirectory(dir), None));
    }
    let destination = config.backup.destination().ok_or_else(|| {
        CliError::new("no backup destination: give --repo (the backup disk's directory) or configure [backup] usb_path or rest_url")
    })?;
    let mut disk = None;
    if let Destination::LocalDirectory(path) = &destination
        && config.profile == crate::settings::Profile::Appliance
    {
        if config.update.usb_window_helper.is_some() {
            let paths = Paths { window: config.update.usb_window_file.clone(), ..Paths::appliance() };
            let window = std::sync::Arc::new(ConsoleWindow { paths });
            disk = Some(backup::usb::open_disk(window, purpose, &super::cli_actor(), path, backup::usb::DISK_WAIT)?);
        }
        backup::schedule::ensure_mounted(path)?;
    }
    Ok((destination, disk))
}

fn read_key_file(path: &std::path::Path) -> Result<RepositoryKey, CliError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?);
    RepositoryKey::from_hex(&text).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

/// Restore onto this box (see [`BackupCommand::RestoreBox`]).
fn restore_box(config_path: &std::path::Path, repo: Option<PathBuf>, key_file: &std::path::Path) -> CliResult {
    let config = load_config(config_path)?;
    // The running agent holds the store open: replacing it under the agent would lose both.
    let status = crate::daemon::status_file(&config.state_dir);
    if let Some(pid) = std::fs::read_to_string(&status)
        .ok()
        .and_then(|t| serde_json::from_str::<crate::web::Health>(&t).ok())
        .map(|h| h.pid)
        .filter(|pid| super::agent_alive(*pid))
    {
        return Err(CliError::new(format!("the agent is running (process {pid}); stop it first (systemctl stop wardbox)")));
    }
    let key = read_key_file(key_file)?;
    let (destination, _disk) = destination_of(&config, repo, Purpose::Restore)?;
    let volume = crate::stages::unlock::unlocker(&config.volume, &config.state_dir).open_for_cli().map_err(CliError::new)?;
    let store_file = volume.data_dir.join(&config.store.file_name);
    let actor = super::cli_actor();
    let target = backup::replace::Replacement {
        data_dir: &volume.data_dir,
        store_file: &store_file,
        store_key: &volume.store_key,
        state_dir: &config.state_dir,
        actor: &actor,
    };
    let report = backup::replace::restore_onto(&target, &destination, &key)?;
    println!(
        "snapshot {} restored onto this box: {} files verified, {} rows, store re-encrypted under this box's key; audit chain continues at record {} after the restored head {}",
        report.snapshot_id, report.files, report.rows, report.restore_record_seq, report.restored_head_seq
    );
    for aside in &report.moved_aside {
        println!("moved aside: {aside}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Rotate the repository key and print the new escrow sheet (see [`BackupCommand::RotateKey`]).
fn rotate_key(config_path: &std::path::Path, repo: Option<PathBuf>) -> CliResult {
    let config = load_config(config_path)?;
    let (store, volume) = super::audit::open(&config)?;
    let (destination, _disk) = destination_of(&config, repo, Purpose::Backup)?;
    let outcome = backup::rotate::rotate_key(&store, &volume.data_dir, &destination);
    if let Err(e) = &outcome
        && e.is_busy()
    {
        return Err(CliError::new(e.to_string()));
    }
    // Audited before the sheet is printed: a key shown must be accounted for.
    super::audit::record(&store, &volume, backup::rotate::rotation_audit_detail("cli", &destination, &outcome))?;
    match outcome {
        Ok((key, rotation)) => {
            print_rotated_sheet(&key, &destination);
            println!(
                "The old key (fingerprint {}) no longer opens the repository: {} key file(s) removed, key file {} kept. Destroy the old escrow sheet.",
                rotation.old_fingerprint,
                rotation.removed_key_ids.len(),
                rotation.new_key_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if let Some(key) = e.key_in_use() {
                print_rotated_sheet(key, &destination);
            }
            Err(CliError::new(e.to_string()))
        }
    }
}

/// Bring another repository onto this box's key (see [`BackupCommand::AdoptKey`]).
fn adopt_key(config_path: &std::path::Path, repo: PathBuf, old_key_file: &std::path::Path) -> CliResult {
    let config = load_config(config_path)?;
    let (store, volume) = super::audit::open(&config)?;
    let old = read_key_file(old_key_file)?;
    let destination = Destination::LocalDirectory(repo);
    let outcome = backup::rotate::adopt_key(&store, &volume.data_dir, &destination, &old);
    if let Err(backup::rotate::AdoptError::Run(backup::RunError::Busy(e))) = &outcome {
        return Err(CliError::new(e.to_string()));
    }
    let detail = match &outcome {
        Ok(a) => json!({
            "action": "backup_key_adopted",
            "ok": true,
            "destination": a.destination,
            "old_key_fingerprint": a.old_fingerprint,
            "key_fingerprint": a.key_fingerprint,
            "repository_id": a.repository_id,
            "new_key_id": a.new_key_id,
            "removed_key_ids": a.removed_key_ids,
        }),
        Err(e) => json!({
            "action": "backup_key_adopted",
            "ok": false,
            "destination": destination.location(),
            "old_key_fingerprint": old.fingerprint(),
            "error": e.to_string(),
        }),
    };
    super::audit::record(&store, &volume, detail)?;
    let adopted = outcome.map_err(|e| CliError::new(format!("the other repository was not brought onto this box's key: {e}")))?;
    println!(
        "{} now opens with this box's key (fingerprint {}); the old key (fingerprint {}) no longer opens it: {} key file(s) removed",
        adopted.destination,
        adopted.key_fingerprint,
        adopted.old_fingerprint,
        adopted.removed_key_ids.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The new escrow sheet, laid out as provisioning prints the backup key (on the console only,
/// never logged or audited).
fn print_rotated_sheet(key: &RepositoryKey, destination: &Destination) {
    println!("NEW BACKUP KEY: write it down beside the recovery key and keep both locked away; it replaces the backup key on the old sheet.");
    println!("It opens this box's backups at {} to restore onto a replacement box after a disaster:", destination.location());
    println!("`wardbox backup restore-box --key-file FILE` with this key typed into FILE.");
    println!();
    println!("    {}", backup::escrow::grouped(key).as_str());
    println!();
    println!("Backup key fingerprint {} (backup records and the admin page name the key by it).", key.fingerprint());
}

fn stored_key(store: &crate::store::Store) -> Result<RepositoryKey, CliError> {
    backup::stored_key(store)?.ok_or_else(|| {
        CliError::new("this box has no backup key yet: run `wardbox backup now` (or `wardbox backup key`) first")
    })
}

pub fn run(cmd: BackupCommand) -> CliResult {
    match cmd {
        BackupCommand::Now { config: config_path, repo } => {
            let config = load_config(&config_path)?;
            let (store, volume) = super::audit::open(&config)?;
            let (key, created_key) = backup::key_or_create(&store)?;
            let (destination, _disk) = destination_of(&config, repo, Purpose::Backup)?;
            let started = jiff::Timestamp::now();
            let inputs = backup::BackupInputs {
                store: &store,
                store_key: &volume.store_key,
                data_dir: &volume.data_dir,
                state_dir: &config.state_dir,
                config_file: Some(&config_path),
            };
            let outcome = backup::run_backup(&inputs, &destination, &key, &["wardbox"]);
            if let Err(backup::RunError::Busy(e)) = &outcome {
                return Err(CliError::new(e.to_string()));
            }
            backup::record_backup(&store, &destination, started, &outcome)?;
            super::audit::record(&store, &volume, backup::backup_audit_detail("backup_now", &destination, &key, &outcome))?;
            if created_key {
                eprintln!(
                    "wardbox: a new backup key was made (fingerprint {}); print it with `wardbox backup key` and escrow it with the recovery key",
                    key.fingerprint()
                );
            }
            let done = outcome.map_err(|e| CliError::new(e.to_string()))?;
            println!(
                "snapshot {} of {} files, {} bytes; {} bytes new ({} after compression); {} snapshot(s) kept, {} forgotten",
                done.snapshot.id,
                done.snapshot.files,
                done.snapshot.bytes,
                done.snapshot.bytes_added,
                done.snapshot.bytes_added_packed,
                done.retention.kept,
                done.retention.forgotten
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::List { config, repo, json } => {
            let config = load_config(&config)?;
            let (store, volume) = super::audit::open(&config)?;
            let key = stored_key(&store)?;
            let (destination, _disk) = destination_of(&config, repo, Purpose::Restore)?;
            let snapshots = BackupRepository::open(&destination, &key)?.snapshots()?;
            super::audit::record(
                &store,
                &volume,
                json!({ "action": "backup_list", "destination": destination.location(), "snapshots": snapshots.len() }),
            )?;
            if json {
                let rows: Vec<_> = snapshots
                    .iter()
                    .map(|s| json!({ "id": s.id, "time": s.time.to_string(), "files": s.files, "bytes": s.bytes, "tags": s.tags }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| CliError::new(e.to_string()))?);
            } else {
                for s in &snapshots {
                    println!("{}  {}  {} files  {} bytes", &s.id[..8.min(s.id.len())], s.time, s.files, s.bytes);
                }
                println!("{} snapshot(s)", snapshots.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Check { config, repo, read_data } => {
            let config = load_config(&config)?;
            let (store, volume) = super::audit::open(&config)?;
            let key = stored_key(&store)?;
            let (destination, _disk) = destination_of(&config, repo, Purpose::Restore)?;
            let report = BackupRepository::open(&destination, &key)?.check(read_data)?;
            super::audit::record(
                &store,
                &volume,
                json!({
                    "action": "backup_check",
                    "destination": destination.location(),
                    "read_data": read_data,
                    "errors": report.errors.len(),
                    "warnings": report.warnings.len(),
                }),
            )?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if let Some(first) = report.errors.first() {
                for e in &report.errors {
                    eprintln!("error: {e}");
                }
                return Err(CliError::check_failed(format!(
                    "the repository at {} is damaged: {} problem(s); first: {first}",
                    destination.location(),
                    report.errors.len()
                )));
            }
            println!("repository {} is intact{}", destination.location(), if read_data { " (every pack read and verified)" } else { "" });
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Restore { config, repo, target, key_file } => {
            // Without --repo the configuration names the destination, even with --key-file.
            let (destination, _disk) = match repo {
                Some(dir) => (Destination::LocalDirectory(dir), None),
                None => destination_of(&load_config(&config)?, None, Purpose::Restore)?,
            };
            // With the escrowed key the box needs no store; without it the store's key is used
            // and the restore is audited there.
            // On a box with its store, the restore holds the backup lock (not while a backup or
            // drill runs); with only the escrowed key there is no box state to protect.
            let mut _lock = None;
            let (key, audit) = match key_file {
                Some(path) => (read_key_file(&path)?, None),
                None => {
                    let config = load_config(&config)?;
                    let (store, volume) = super::audit::open(&config)?;
                    _lock = Some(backup::RunLock::acquire(&volume.data_dir, "restore")?);
                    (stored_key(&store)?, Some((store, volume)))
                }
            };
            let restored = BackupRepository::open(&destination, &key)?.restore_latest(&target)?;
            let report = backup::drill::verify_restored(&target, &restored.snapshot.id)?;
            if let Some((store, volume)) = audit {
                super::audit::record(
                    &store,
                    &volume,
                    json!({
                        "action": "backup_restore",
                        "destination": destination.location(),
                        "snapshot": report.snapshot_id,
                        "files": report.files,
                        "rows": report.rows,
                        "audit_head_seq": report.audit_head_seq,
                    }),
                )?;
            }
            println!(
                "snapshot {} restored into {}: {} files match the manifest, store opens, audit chain intact to record {}, {} rows in {} tables",
                report.snapshot_id,
                target.display(),
                report.files,
                report.audit_head_seq,
                report.rows,
                report.tables
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Drill { config, repo } => {
            let config = load_config(&config)?;
            let (store, volume) = super::audit::open(&config)?;
            let key = stored_key(&store)?;
            let (destination, _disk) = destination_of(&config, repo, Purpose::Restore)?;
            let started = jiff::Timestamp::now();
            let outcome = backup::run_drill(&volume.data_dir, &destination, &key);
            // Refused by the lock: no drill ran, so none failed.
            if let Err(backup::RunError::Busy(e)) = &outcome {
                return Err(CliError::new(e.to_string()));
            }
            backup::record_drill(&store, &destination, started, &outcome)?;
            super::audit::record(&store, &volume, backup::drill_audit_detail(&destination, &outcome))?;
            match outcome {
                Ok(report) => {
                    println!(
                        "drill passed: snapshot {} restored, {} files match, store opens, audit chain intact ({} records, {} checkpoints), {} rows in {} tables match",
                        report.snapshot_id, report.files, report.audit_records, report.checkpoints_checked, report.rows, report.tables
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(CliError::check_failed(format!("drill failed: {e}"))),
            }
        }
        BackupCommand::RestoreBox { config, repo, key_file } => restore_box(&config, repo, &key_file),
        BackupCommand::RotateKey { config, repo } => rotate_key(&config, repo),
        BackupCommand::AdoptKey { config, repo, old_key_file } => adopt_key(&config, repo, &old_key_file),
        BackupCommand::Key { config } => {
            let config = load_config(&config)?;
            let (store, volume) = super::audit::open(&config)?;
            let (key, created) = backup::key_or_create(&store)?;
            super::audit::record(
                &store,
                &volume,
                json!({ "action": "backup_key_shown", "key_fingerprint": key.fingerprint(), "created": created }),
            )?;
            println!("{}", key.to_hex().as_str());
            eprintln!("fingerprint {}: write the key above on the escrow sheet beside the recovery key", key.fingerprint());
            Ok(ExitCode::SUCCESS)
        }
    }
}
