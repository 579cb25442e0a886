//! `wardbox`: the daemon (`wardbox serve`) and the operator CLI in one binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = wardbox::cli::Cli::parse();
    wardbox::logging::init(cli.verbose);
    match wardbox::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wardbox: {e}");
            e.exit_code()
        }
    }
}
