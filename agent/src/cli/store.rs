//! `wardbox store …`: rotate the store key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{CliError, CliResult, DEFAULT_CONFIG, agent_alive, load_config};
use crate::stages::unlock::{DevPlainDirectory, VolumeConfig};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Re-encrypt the store under a new key (PRAGMA rekey). Stop the agent first.
    Rekey {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

pub fn run(cmd: StoreCommand) -> CliResult {
    match cmd {
        StoreCommand::Rekey { config } => {
            let config = load_config(&config)?;
            // A running agent holds connections keyed with the old key; re-keying under it
            // would break its next read.
            let status = crate::daemon::status_file(&config.state_dir);
            if let Ok(text) = std::fs::read_to_string(&status)
                && let Ok(health) = serde_json::from_str::<crate::web::Health>(&text)
                && agent_alive(health.pid)
            {
                return Err(CliError::new(format!(
                    "the agent is running (pid {}); stop the wardbox service before re-keying the store",
                    health.pid
                )));
            }
            let (store, volume) = super::audit::open(&config)?;
            match &config.volume {
                VolumeConfig::PlainDirectory { data_dir } => {
                    let dev = DevPlainDirectory {
                        data_dir: data_dir.clone(),
                        key_file: config.state_dir.join("dev-store.key"),
                    };
                    dev.rotate_key_file(|new_key| store.rekey(new_key).map_err(|e| e.to_string()))
                        .map_err(CliError::new)?;
                }
                // The store key is derived from the TPM-sealed volume key: it changes only
                // together with that key, which the volume commands rotate.
                VolumeConfig::Luks2Tpm { .. } => {
                    return Err(CliError::new(
                        "in luks2-tpm mode the store key is derived from the TPM-sealed volume key; rotate it with the `wardbox volume` commands",
                    ));
                }
            }
            drop(volume);
            let path = store.path().to_owned();
            drop(store);
            let (store, volume) = super::audit::open(&config)?;
            super::audit::record(&store, &volume, json!({ "action": "store_rekey" }))?;
            println!("store {} re-encrypted under a new key", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
