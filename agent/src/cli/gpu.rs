//! `wardbox gpu …`. The gpu subsystem fills these commands in.

use clap::Subcommand;

use super::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Show the gpu subsystem's state.
    Status,
}

pub fn run(cmd: GpuCommand) -> CliResult {
    match cmd {
        GpuCommand::Status => Err(CliError::new("the gpu commands are not available in this build yet")),
    }
}
