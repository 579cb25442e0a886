//! `wardbox records …`: the retrieval index from the console: import a clinic's documents,
//! grant and revoke who may see which patient, and counts.
//!
//! Import talks to the engine of the running agent (it embeds the chunks): `[engine] endpoint`
//! when the configuration names one, else the endpoint the running agent published in its
//! state directory (`wardbox dev` chooses its engine's port at run time). File names are
//! printed here, on the operator's console; the audit record of an import holds only counts.

mod images;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use wardbox_rag::embed::OllamaEmbedder;
use wardbox_rag::index;
use wardbox_rag::ingest::{self, ChunkConfig, Outcome, Owner};

use super::{CliError, CliResult, DEFAULT_CONFIG, agent_alive, load_config};
use crate::config::Config;
use crate::daemon::{PublishedEngine, engine_file};
use crate::stages::engine::EngineConfig;
use crate::web::accounts;

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Import documents: FHIR R4 Bundles (each names its patient), notes (.txt, .md) and PDFs
    /// of one patient (--patient), or clinic library documents (--library). A directory means
    /// the files in it. A bad file is reported and skipped; a file already imported is left as
    /// it is. Needs the agent running: its engine embeds the text. A --patient not yet in the
    /// index is refused (a typo would make a new patient) unless --new-patient says so or a
    /// FHIR Bundle among the files names that patient.
    Import {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The patient's record id (MRN, or FHIR Patient.id) for notes and PDFs.
        #[arg(long, conflicts_with = "library")]
        patient: Option<String>,
        /// The --patient record id is a patient new to the index: create them.
        #[arg(long, requires = "patient")]
        new_patient: bool,
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
        RecordsCommand::Import { config, patient, library, new_patient, paths } => {
            let config = load_config(&config)?;
            let files = expand(&paths)?;
            // Images (DICOM, PNG, JPEG) go through the image checks, the rest to the index;
            // documents first, so a FHIR Bundle among the files can introduce the patient the
            // images' headers are checked against.
            let (image_files, documents): (Vec<PathBuf>, Vec<PathBuf>) = files.iter().cloned().partition(|f| is_image_file(f));
            let (mut store, volume) = super::audit::open(&config)?;
            // Before anything is embedded or stored: a record id that is not in the index is a
            // typo until the operator or the files say it is a new patient.
            if let Some(record_id) = &patient {
                let in_index = index::find_patient(store.conn(), record_id).map_err(index_error)?.is_some();
                check_patient_known(record_id, in_index, fhir_names_patient(&documents, record_id), new_patient)?;
            }
            // The engine embeds documents; images need none.
            let embedder = if documents.is_empty() {
                None
            } else {
                let endpoint = engine_endpoint(&config)?;
                Some(OllamaEmbedder::new(&endpoint, &config.clinical.embed_model, index::DIMS).map_err(|e| CliError::new(e.to_string()))?)
            };
            let image_patient = if library { None } else { patient.clone() };
            let owner = match (patient, library) {
                (_, true) => Owner::Library,
                (Some(record_id), false) => Owner::Patient { record_id, known: Default::default() },
                (None, false) => Owner::FromDocument,
            };
            // On record before the first file is stored: an import that dies part-way (killed,
            // power lost) leaves this without its summary below, never documents without a trace.
            super::audit::record(&store, &volume, json!({ "action": "records_import_started", "files": files.len() }))?;
            let total = files.len();
            let (mut ingested, mut unchanged, mut failed, mut chunks) = (0, 0, 0, 0);
            // What de-identification replaced, summed over the import (counts only): on the
            // console per file, in the audit record for the compliance report.
            let mut replaced_total = std::collections::BTreeMap::<String, usize>::new();
            if let Some(embedder) = &embedder {
                let runtime = super::runtime()?;
                for (i, file) in documents.iter().enumerate() {
                    let name = file.display();
                    let result = runtime.block_on(ingest::ingest_file(store.conn_mut(), embedder, file, &owner, ChunkConfig::default()));
                    match result {
                        Ok(Outcome::Ingested { chunks: n, replaced, .. }) => {
                            ingested += 1;
                            chunks += n;
                            let replaced = crate::clinical::replaced_by_tag(&replaced);
                            for (tag, count) in &replaced {
                                *replaced_total.entry(tag.clone()).or_default() += count;
                            }
                            println!("[{}/{total}] imported {name} ({n} passages; {})", i + 1, replaced_summary(&replaced));
                        }
                        Ok(Outcome::Unchanged { .. }) => {
                            unchanged += 1;
                            println!("[{}/{total}] already imported {name}", i + 1);
                        }
                        Err(e) => {
                            failed += 1;
                            eprintln!("[{}/{total}] SKIPPED {}", i + 1, in_path(&e.to_string(), file));
                        }
                    }
                }
            }
            let record = &mut |detail| super::audit::record(&store, &volume, detail);
            let filed_images = images::import(&store, record, &image_files, image_patient.as_deref(), documents.len(), total)?;
            super::audit::record(
                &store,
                &volume,
                json!({ "action": "records_import", "imported": ingested, "unchanged": unchanged, "failed": failed, "passages": chunks,
                        "identifiers_replaced": replaced_total, "images": filed_images.audit() }),
            )?;
            println!("{ingested} imported ({chunks} passages), {unchanged} already there, {failed} skipped");
            if filed_images.any() {
                println!("{}", filed_images.summary());
            }
            Ok(if failed == 0 && filed_images.refused == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
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

fn is_volume_full(e: &index::IndexError) -> bool {
    matches!(e, index::IndexError::Sqlite(e) if crate::store::is_volume_full(e))
}

/// An index error for the console; a full data volume is named as such, with what to do.
fn index_error(e: index::IndexError) -> CliError {
    if is_volume_full(&e) {
        CliError::new("the data volume is full, so nothing was imported; free space on the data volume and run the import again")
    } else {
        CliError::new(e.to_string())
    }
}

/// "replaced 3 name, 2 date" for the console; counts only.
fn replaced_summary(replaced: &std::collections::BTreeMap<String, usize>) -> String {
    if replaced.is_empty() {
        return "no identifiers found to replace".to_owned();
    }
    let parts: Vec<String> = replaced.iter().map(|(tag, n)| format!("{n} {}", tag.to_lowercase())).collect();
    format!("replaced {}", parts.join(", "))
}

/// Whether a file goes through the image checks: its first bytes say DICOM, PNG or JPEG, or its
/// name ends in .dcm, .dicom, .png, .jpg or .jpeg (a file so named that is none of these is
/// then refused by the image checks, with their reason, rather than read as a document).
fn is_image_file(file: &Path) -> bool {
    let named = file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if matches!(named.as_deref(), Some("dcm" | "dicom" | "png" | "jpg" | "jpeg")) {
        return true;
    }
    let mut head = Vec::with_capacity(132);
    let Ok(f) = std::fs::File::open(file) else { return false };
    // Unreadable: left to the document import, which names the problem.
    if std::io::Read::read_to_end(&mut std::io::Read::take(f, 132), &mut head).is_err() {
        return false;
    }
    crate::web::images::looks_like_image(&head)
}

/// Whether an import may file documents under `record_id`: a patient already in the index, one
/// that a FHIR Bundle among the files names, or one the operator declares new. Anything else is
/// refused before anything is stored: a mistyped record id would otherwise make a new patient
/// silently (pure).
fn check_patient_known(record_id: &str, in_index: bool, named_by_files: bool, new_patient: bool) -> Result<(), CliError> {
    if in_index || named_by_files || new_patient {
        return Ok(());
    }
    Err(CliError::new(format!(
        "there is no patient with the record id {record_id:?} in the index; nothing was imported. Check the record id, or, if this is a patient new to the box, add --new-patient (a FHIR Bundle naming the patient also introduces them)"
    )))
}

/// Whether a FHIR Bundle among `files` names the patient `record_id` (as the import would file
/// it). Unreadable files are left to the import, which names them.
fn fhir_names_patient(files: &[PathBuf], record_id: &str) -> bool {
    files.iter().any(|file| {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Ok(bytes) = std::fs::read(file) else { return false };
        if ingest::Kind::of(&name, &bytes) != Some(ingest::Kind::Fhir) {
            return false;
        }
        ingest::parse_fhir(&name, &bytes).is_ok_and(|p| p.patient_record_id.as_deref().map(str::trim) == Some(record_id.trim()))
    })
}

/// The engine the import embeds through: `[engine] endpoint` when the configuration names one
/// (the appliance), else the endpoint the running agent published (`wardbox dev`, which picks a
/// free port at start).
fn engine_endpoint(config: &Config) -> Result<String, CliError> {
    let path = engine_file(&config.state_dir);
    let published = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            serde_json::from_str::<PublishedEngine>(&text)
                .map_err(|e| CliError::new(format!("{} is unreadable: {e}", path.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CliError::new(format!("cannot read {}: {e}", path.display()))),
    };
    resolve_engine_endpoint(config.engine.endpoint.as_deref(), published, agent_alive, &path).map_err(CliError::new)
}

/// The decision of [`engine_endpoint`] (pure; `alive` says whether an agent pid runs).
fn resolve_engine_endpoint(
    configured: Option<&str>,
    published: Option<PublishedEngine>,
    alive: impl Fn(u32) -> bool,
    path: &Path,
) -> Result<String, String> {
    if let Some(endpoint) = configured {
        return Ok(endpoint.to_owned());
    }
    let Some(published) = published else {
        return Err(format!(
            "no engine is configured ([engine] endpoint) and no running agent published one in {}: importing needs the agent running with its engine, which embeds the text (start it: wardbox serve, or wardbox dev for a dev box)",
            path.display()
        ));
    };
    if !alive(published.pid) {
        return Err(format!(
            "the agent that published its engine in {} (pid {}) is not running; start the agent, which embeds the text",
            path.display(),
            published.pid
        ));
    }
    // Only a loopback engine is ever used, whoever wrote the file.
    EngineConfig { endpoint: Some(published.endpoint.clone()), ..EngineConfig::default() }
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(published.endpoint)
}

/// Errors of a file name it by the bare name; the console shows the path the operator gave.
fn in_path(message: &str, file: &Path) -> String {
    match file.file_name().map(|n| n.to_string_lossy().into_owned()) {
        Some(n) if message.starts_with(&n) => format!("{}{}", file.display(), &message[n.len()..]),
        _ => format!("{}: {message}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_patient_needs_the_flag_or_a_bundle_naming_them() {
        let err = check_patient_known("NOSUCH", false, false, false).expect_err("a typo").to_string();
        assert!(err.contains("\"NOSUCH\"") && err.contains("--new-patient") && err.contains("nothing was imported"), "{err}");
        assert!(check_patient_known("00451234", true, false, false).is_ok(), "in the index");
        assert!(check_patient_known("00451234", false, true, false).is_ok(), "a FHIR Patient in the files");
        assert!(check_patient_known("00451234", false, false, true).is_ok(), "declared new");
    }

    #[test]
    fn a_fhir_bundle_among_the_files_introduces_its_patient() {
        let dir = tempfile::tempdir().expect("dir");
        let corpus = wardbox_rag::synth::corpus();
        let bundle = corpus.docs.iter().find(|d| d.name == "castellanos-record.json").expect("bundle");
        let (json, note) = (dir.path().join("record.json"), dir.path().join("note.txt"));
        std::fs::write(&json, &bundle.bytes).expect("write");
        std::fs::write(&note, b"00451234 called").expect("write");
        assert!(fhir_names_patient(&[note.clone(), json.clone()], "00451234"));
        assert!(!fhir_names_patient(&[note.clone(), json], "00451235"));
        assert!(!fhir_names_patient(&[note], "00451234"), "a note names no patient");
    }

    #[test]
    fn the_engine_is_the_configured_one_else_the_running_agents() {
        let path = Path::new("/var/lib/wardbox/engine.json");
        let published = |endpoint: &str| Some(PublishedEngine { pid: 4242, endpoint: endpoint.into() });
        let alive = |pid: u32| pid == 4242;
        let dead = |_: u32| false;
        // The appliance: the configuration names it.
        assert_eq!(resolve_engine_endpoint(Some("http://127.0.0.1:11435"), None, dead, path), Ok("http://127.0.0.1:11435".into()));
        // A dev box: the running agent published the port it chose.
        assert_eq!(
            resolve_engine_endpoint(None, published("http://127.0.0.1:40123/"), alive, path),
            Ok("http://127.0.0.1:40123/".into())
        );
        let none = resolve_engine_endpoint(None, None, alive, path).expect_err("nothing published");
        assert!(none.contains("no engine is configured") && none.contains("engine.json") && none.contains("wardbox dev"), "{none}");
        let stale = resolve_engine_endpoint(None, published("http://127.0.0.1:40123/"), dead, path).expect_err("agent gone");
        assert!(stale.contains("pid 4242") && stale.contains("not running"), "{stale}");
        let remote = resolve_engine_endpoint(None, published("http://10.0.0.9:11434/"), alive, path).expect_err("not loopback");
        assert!(remote.contains("engine.endpoint"), "{remote}");
    }
}
