//! `wardbox firewall render|apply|verify|status`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use wardbox_firewall::{ApplyOutcome, Firewall};

use super::{CliError, CliResult, DEFAULT_CONFIG, load_config};
use crate::config::Config;
use crate::stages::firewall::{NftFirewall, counter_history, describe, drift_list};

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Print the nftables ruleset the configuration produces (nft JSON, one object a line).
    Render {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Apply the ruleset now (atomically), then verify it; repairs any drift. Needs root.
    Apply {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Compare the live ruleset with the configuration; exit 3 and list the drift if any.
    Verify {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Whether the ruleset is enforced, and the blocked-attempt counters.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: FirewallCommand) -> CliResult {
    match cmd {
        FirewallCommand::Render { config } => {
            let config = load_config(&config)?;
            if !config.firewall.enabled {
                eprintln!("note: firewall.enabled is false in this configuration; this is what enabling it would apply");
            }
            print!("{}", config.firewall.ruleset()?.render());
            Ok(ExitCode::SUCCESS)
        }
        FirewallCommand::Apply { config } => {
            let config = load_config(&config)?;
            let firewall = enabled_firewall(&config)?;
            // wardbox-firewall.service applies before the state partition is writable (or
            // mounted): a history that cannot be read or kept must not stop the ruleset from
            // being applied, only be said.
            let history = counter_history(&config.state_dir);
            let last = history.last().unwrap_or_else(|e| {
                eprintln!("note: {e}; counter resets are not checked by this apply");
                None
            });
            let outcome = firewall.apply_since(last.as_ref())?;
            let status = firewall.status()?;
            if let Err(e) = history.record(last.as_ref(), &status.counters) {
                eprintln!("note: {e}");
            }
            match &outcome {
                ApplyOutcome::Unchanged => println!("unchanged: {}", describe(&firewall, &status)),
                ApplyOutcome::Applied { repaired } => {
                    println!("applied: {}", describe(&firewall, &status));
                    for drift in repaired {
                        println!("  repaired: {drift}");
                    }
                }
            }
            audit(&config, json!({ "action": "firewall_apply", "outcome": outcome }));
            Ok(ExitCode::SUCCESS)
        }
        FirewallCommand::Verify { config } => {
            let config = load_config(&config)?;
            let firewall = enabled_firewall(&config)?;
            let status = firewall.status_recorded(&counter_history(&config.state_dir))?;
            if status.is_enforced() {
                println!("enforced: {}", describe(&firewall, &status));
                Ok(ExitCode::SUCCESS)
            } else {
                for drift in &status.drift {
                    println!("DRIFT: {drift}");
                }
                Err(CliError::check_failed(format!(
                    "the live ruleset differs from the configuration ({}); `wardbox firewall apply` repairs it",
                    drift_list(&status.drift)
                )))
            }
        }
        FirewallCommand::Status { config, json } => {
            let config = load_config(&config)?;
            if !config.firewall.enabled {
                if json {
                    println!("{}", json!({ "enabled": false }));
                } else {
                    println!("DISABLED: firewall.enabled is false; outbound traffic is NOT blocked (dev profile only)");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let firewall = enabled_firewall(&config)?;
            let status = firewall.status_recorded(&counter_history(&config.state_dir))?;
            if json {
                println!(
                    "{}",
                    json!({ "enabled": true, "enforced": status.is_enforced(), "drift": status.drift, "counters": status.counters })
                );
            } else {
                println!("enforced: {}", if status.is_enforced() { "yes" } else { "NO" });
                for drift in &status.drift {
                    println!("DRIFT: {drift}");
                }
                let c = status.counters;
                println!("blocked in:      {} packets, {} bytes", c.blocked_in.packets, c.blocked_in.bytes);
                println!("blocked out:     {} packets, {} bytes", c.blocked_out.packets, c.blocked_out.bytes);
                println!("blocked forward: {} packets, {} bytes", c.blocked_forward.packets, c.blocked_forward.bytes);
            }
            Ok(if status.is_enforced() { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
    }
}

fn enabled_firewall(config: &Config) -> Result<Firewall, CliError> {
    if !config.firewall.enabled {
        return Err(CliError::new(
            "firewall.enabled is false in this configuration: nothing to apply or verify (dev profile)",
        ));
    }
    NftFirewall::open(&config.firewall).map_err(CliError::new)
}

/// Record the operator's action in the audit trail when the store can be opened. Applying the
/// firewall only ever closes the box further, so it is not refused when the store is sealed;
/// the missing record is said on stderr.
fn audit(config: &Config, detail: serde_json::Value) {
    let result = super::audit::open(config).and_then(|(store, volume)| super::audit::record(&store, &volume, detail));
    if let Err(e) = result {
        // Expected in wardbox-firewall.service, before the volume is open: the agent's own
        // firewall stage is audited once the store is.
        eprintln!("note: this apply is not in the audit trail (the store cannot be opened: {e})");
    }
}
