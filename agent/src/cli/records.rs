//! `wardbox records …`: the retrieval index from the console: import a clinic's documents,
//! grant and revoke who may see which patient, and counts.
//!
//! Import talks to the engine of the running agent (it embeds the chunks), through
//! `[engine] endpoint`. File names are printed here, on the operator's console; the audit
//! record of an import holds only counts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use wardbox_rag::embed::OllamaEmbedder;
use wardbox_rag::index;
use wardbox_rag::ingest::{self, ChunkConfig, Outcome, Owner};

use super::{CliError, CliResult, DEFAULT_CONFIG, load_config};
use crate::web::accounts;

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Import documents: FHIR R4 Bundles (each names its patient), notes (.txt, .md) and PDFs
    /// of one patient (--patient), or clinic library documents (--library). A directory means
    /// the files in it. A bad file is reported and skipped; a file already imported is left as
    /// it is. Needs the agent running: its engine embeds the text.
    Import {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The patient's record id (MRN, or FHIR Patient.id) for notes and PDFs.
        #[arg(long, conflicts_with = "library")]
        patient: Option<String>,
        /// Documents of the clinic (policies, leaflets), visible to every user.
        #[arg(long)]
        library: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Let a user see a patient (with `clinical.patient_access = "grants"`).
    Grant {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        /// The patient's record id (MRN, or FHIR Patient.id).
        #[arg(long)]
        patient: String,
    },
    /// Withdraw a grant.
    Revoke {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        username: String,
        #[arg(long)]
        patient: String,
    },
    /// Patients, documents and chunks in the index.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// The files named: files as they are, directories as the files directly in them, sorted.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| CliError::new(format!("{}: cannot read the directory: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(CliError::new(format!("{}: no such file or directory; nothing was imported", p.display())));
        }
    }
    Ok(out)
}

fn patient_by_record(conn: &rusqlite::Connection, record_id: &str) -> Result<i64, CliError> {
    index::find_patient(conn, record_id)
        .map_err(|e| CliError::new(e.to_string()))?
        .ok_or_else(|| CliError::new(format!("there is no patient with the record id {record_id:?} in the index")))
}

fn user_exists(conn: &rusqlite::Connection, username: &str) -> Result<(), CliError> {
    if accounts::list_users(conn)?.iter().any(|u| u.username == username) {
        Ok(())
    } else {
        Err(CliError::new(format!("there is no account {username:?} (wardbox users list)")))
    }
}

pub fn run(cmd: RecordsCommand) -> CliResult {
    match cmd {
        RecordsCommand::Import { config, patient, library, paths } => {
            let config = load_config(&config)?;
            let files = expand(&paths)?;
            let endpoint = config.engine.endpoint.clone().ok_or_else(|| {
                CliError::new("no engine is configured ([engine] endpoint): importing needs the engine to embed the text")
            })?;
            let embedder = OllamaEmbedder::new(&endpoint, &config.clinical.embed_model, index::DIMS).map_err(|e| CliError::new(e.to_string()))?;
            let owner = match (patient, library) {
                (_, true) => Owner::Library,
                (Some(record_id), false) => Owner::Patient { record_id, known: Default::default() },
                (None, false) => Owner::FromDocument,
            };
            let (mut store, volume) = super::audit::open(&config)?;
            let runtime = super::runtime()?;
            let (mut ingested, mut unchanged, mut failed, mut chunks) = (0, 0, 0, 0);
            for (i, file) in files.iter().enumerate() {
                let name = file.display();
                let result = runtime.block_on(ingest::ingest_file(store.conn_mut(), &embedder, file, &owner, ChunkConfig::default()));
                match result {
                    Ok(Outcome::Ingested { chunks: n, .. }) => {
                        ingested += 1;
                        chunks += n;
                        println!("[{}/{}] imported {name} ({n} passages)", i + 1, files.len());
                    }
                    Ok(Outcome::Unchanged { .. }) => {
                        unchanged += 1;
                        println!("[{}/{}] already imported {name}", i + 1, files.len());
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("[{}/{}] SKIPPED {}", i + 1, files.len(), in_path(&e.to_string(), file));
                    }
                }
            }
            super::audit::record(
                &store,
                &volume,
                json!({ "action": "records_import", "imported": ingested, "unchanged": unchanged, "failed": failed, "passages": chunks }),
            )?;
            println!("{ingested} imported ({chunks} passages), {unchanged} already there, {failed} skipped");
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        RecordsCommand::Grant { config, username, patient } => {
            let config = load_config(&config)?;
            let (store, volume) = super::audit::open(&config)?;
            user_exists(store.conn(), &username)?;
            let owner = patient_by_record(store.conn(), &patient)?;
            index::grant(store.conn(), &username, owner).map_err(|e| CliError::new(e.to_string()))?;
            super::audit::record(&store, &volume, json!({ "action": "records_grant", "target": username, "patient": owner }))?;
            println!("{username} may now see patient {owner}");
            Ok(ExitCode::SUCCESS)
        }
        RecordsCommand::Revoke { config, username, patient } => {
            let config = load_config(&config)?;
            let (store, volume) = super::audit::open(&config)?;
            let owner = patient_by_record(store.conn(), &patient)?;
            if !index::revoke(store.conn(), &username, owner).map_err(|e| CliError::new(e.to_string()))? {
                return Err(CliError::new(format!("{username} had no grant for patient {owner}; nothing was changed")));
            }
            super::audit::record(&store, &volume, json!({ "action": "records_revoke", "target": username, "patient": owner }))?;
            println!("{username} may no longer see patient {owner}");
            Ok(ExitCode::SUCCESS)
        }
        RecordsCommand::Status { config } => {
            let config = load_config(&config)?;
            let (store, _) = super::audit::open(&config)?;
            let s = index::stats(store.conn()).map_err(|e| CliError::new(e.to_string()))?;
            println!("{} patients, {} documents, {} passages", s.patients, s.documents, s.chunks);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Errors of a file name it by the bare name; the console shows the path the operator gave.
fn in_path(message: &str, file: &Path) -> String {
    match file.file_name().map(|n| n.to_string_lossy().into_owned()) {
        Some(n) if message.starts_with(&n) => format!("{}{}", file.display(), &message[n.len()..]),
        _ => format!("{}: {message}", file.display()),
    }
}
