//! `wardbox-models`: import GGUF models into an Ollama-layout store, list, verify, remove.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wardbox_models_bundle::{ImportOutcome, ImportRequest, ModelName, RemoveOutcome, Store, StoreError};

#[derive(Debug, Parser)]
#[command(name = "wardbox-models", about = "Manage a Wardbox model store (Ollama layout)")]
struct Cli {
    /// The store directory (holds manifests/ and blobs/).
    #[arg(long, env = "WARDBOX_MODEL_STORE")]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import a GGUF as a model, as `ollama create` would.
    Import {
        /// Model name, e.g. gemma3:270m.
        name: String,
        /// The GGUF weights.
        #[arg(long)]
        gguf: PathBuf,
        /// Chat template: a file with an Ollama template, or a llama.cpp built-in name (e.g. gemma).
        #[arg(long, conflicts_with = "template_file")]
        template: Option<String>,
        #[arg(long)]
        template_file: Option<PathBuf>,
        /// Default options as a JSON object file ({"stop": ["<end_of_turn>"], "temperature": 1}).
        #[arg(long)]
        params: Option<PathBuf>,
        /// Licence text files (repeatable).
        #[arg(long)]
        license: Vec<PathBuf>,
        /// Default system prompt file.
        #[arg(long)]
        system: Option<PathBuf>,
    },
    /// List models.
    List,
    /// Re-hash every blob of a model and check its manifest.
    Verify { name: String },
    /// Remove a model and the blobs nothing else uses.
    Remove { name: String },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: must contain a JSON object: {1}")]
    Params(PathBuf, String),
}

fn read(p: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(p).map_err(|e| CliError::Read(p.clone(), e))
}

fn run(cli: Cli) -> Result<(), CliError> {
    let store = Store::new(cli.store);
    match cli.command {
        Command::Import { name, gguf, template, template_file, params, license, system } => {
            let name: ModelName = name.parse()?;
            let template = match template_file {
                Some(p) => Some(read(&p)?),
                None => template,
            };
            let params = match params {
                Some(p) => match serde_json::from_str::<serde_json::Value>(&read(&p)?) {
                    Ok(serde_json::Value::Object(m)) => Some(m),
                    Ok(_) => return Err(CliError::Params(p, "not an object".into())),
                    Err(e) => return Err(CliError::Params(p, e.to_string())),
                },
                None => None,
            };
            let licenses = license.iter().map(read).collect::<Result<Vec<_>, _>>()?;
            let system = system.as_ref().map(read).transpose()?;
            let req = ImportRequest { name: name.clone(), gguf, template, params, licenses, system };
            match store.import(&req)? {
                ImportOutcome::Created { manifest_digest } => println!("imported {name} ({manifest_digest})"),
                ImportOutcome::Replaced { manifest_digest } => println!("replaced {name} ({manifest_digest})"),
                ImportOutcome::Unchanged { manifest_digest } => println!("{name} unchanged ({manifest_digest})"),
            }
        }
        Command::List => {
            println!("{:<40} {:<16} {:>12}  DETAILS", "NAME", "ID", "SIZE");
            for e in store.list()? {
                let details = e
                    .config
                    .map(|c| format!("{} {} {}", c.model_family, c.model_type, c.file_type))
                    .unwrap_or_else(|| "(config unreadable)".into());
                println!(
                    "{:<40} {:<16} {:>12}  {}",
                    e.name.to_string(),
                    &e.manifest_digest.hex()[..12],
                    e.manifest.total_size(),
                    details
                );
            }
        }
        Command::Verify { name } => {
            let r = store.resolve(&name.parse()?)?;
            println!("{} ok: {} blobs verified", r.entry.name, r.entry.manifest.layers.len() + 1);
        }
        Command::Remove { name } => match store.remove(&name.parse()?)? {
            RemoveOutcome::Removed { blobs_deleted } => println!("removed {name} ({blobs_deleted} blobs deleted)"),
            RemoveOutcome::NotPresent => println!("{name} was not in the store"),
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardbox-models: {e}");
            ExitCode::FAILURE
        }
    }
}
