//! `wardbox firewall …`. The firewall subsystem fills these commands in.

use clap::Subcommand;

use super::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Show the firewall subsystem's state.
    Status,
}

pub fn run(cmd: FirewallCommand) -> CliResult {
    match cmd {
        FirewallCommand::Status => Err(CliError::new("the firewall commands are not available in this build yet")),
    }
}
