//! `wardbox volume …`. The volume subsystem fills these commands in.

use clap::Subcommand;

use super::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Show the volume subsystem's state.
    Status,
}

pub fn run(cmd: VolumeCommand) -> CliResult {
    match cmd {
        VolumeCommand::Status => Err(CliError::new("the volume commands are not available in this build yet")),
    }
}
