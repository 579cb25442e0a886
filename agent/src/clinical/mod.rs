//! The clinical back end: retrieval over the records in the store (`wardbox-rag`) and answers
//! from the supervised engine, behind the web layer's [`Clinical`] interface.
//!
//! Who sees what: a clinician or nurse sees every patient (`patient_access = "care_team"`) or
//! only the patients granted to them (`"grants"`, `wardbox records grant`); an emergency
//! (break-glass) session sees every patient, and is audited and alerted as such by the web
//! layer. Everyone sees the clinic library. A patient someone may not see is "not found" to
//! them, never "forbidden": the answer does not reveal that the record exists.
//!
//! Patient and document ids in URLs and audit records are the index's own integers, never a
//! record number or a name. Text leaves this module re-identified only for a viewer allowed to
//! see the patient; the model only ever sees de-identified sources.
//!
//! Every method may block on the store or the engine: the web layer calls them off the async
//! threads (`Ui::clinical`).

pub mod checking;
pub mod conversations;
pub mod demo;
mod engine;
pub mod task_models;
pub mod pool;

use std::sync::Arc;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use wardbox_rag::answer::{self, Answer, RetrievalConfig, SafetyPolicy, Task};
use wardbox_rag::check::CheckConfig;
use wardbox_rag::sections::{SectionClass, SectionFilter};
use wardbox_rag::deid::{self, StreamingReidentifier};
use wardbox_rag::index::{self, Access, LIBRARY, Scope};
use wardbox_rag::ingest::{self, ChunkConfig, IngestError, Outcome, Owner};

pub use engine::{EngineEmbedder, EngineGenerator};
use pool::StorePool;

use crate::settings::ConfigError;
use crate::stages::engine::EngineHandle;
use crate::web::Role;
use crate::web::clinical::{
    AnswerEvent, Citation, Clinical, ClinicalError, Conversation, ConversationSummary, ConversationTurn, Document, ModelInfo, PatientSummary,
    RecordIdentity, TaskKind, Uploaded, Viewer,
};
use wardbox_rag::answer::Turn;

/// `[clinical]`: models, who may see which patient, retrieval and the clinic's safety wording.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClinicalConfig {
    /// The chat model that writes answers (installed in the engine's model store).
    pub chat_model: String,
    /// The embedding model of the index. Changing it needs a re-index: the index refuses to
    /// mix vectors of two models.
    pub embed_model: String,
    pub patient_access: PatientAccess,
    /// Longest answer, in tokens.
    pub max_answer_tokens: i32,
    /// Sources retrieved per question.
    pub sources: usize,
    /// A passage counts as relevant below this cosine distance (0 = same meaning, 2 = opposite).
    pub max_distance: f64,
    /// Store connections for answers and uploads: at most this many run at once.
    pub connections: usize,
    /// The system prompt, the footer under every answer, and the "not found" answer.
    pub safety: SafetyPolicy,
    /// Index the built-in synthetic records (invented patients) into an empty index: the dev
    /// profile only, so there is something to ask about. Refused in the appliance profile.
    pub demo_records: bool,
    /// How answers are checked against their sources: the clinic's order of numeric dates.
    pub check: CheckConfig,
    /// Conversations not touched for this many days are deleted.
    pub conversation_retention_days: u32,
    /// Characters of earlier turns a follow-up question carries to the model (the oldest are
    /// left out first, and the page says how many): a share of the model's context, which must
    /// also hold the sources and the answer.
    pub conversation_context_chars: usize,
}

/// Which patients a clinician or nurse may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientAccess {
    /// Every patient (a small practice where everyone cares for everyone).
    CareTeam,
    /// Only the patients granted to the user (`wardbox records grant USER PATIENT`).
    Grants,
}

impl Default for ClinicalConfig {
    fn default() -> Self {
        Self {
            // The bundled instruction-tuned model; Gemma 3 270M as bundled is a base model that
            // continues text rather than following the documentation-assistant prompt.
            chat_model: "smollm2:135m".into(),
            embed_model: "all-minilm:l6-v2".into(),
            // Fail closed: nobody sees a patient until someone decided they may.
            patient_access: PatientAccess::Grants,
            max_answer_tokens: 512,
            sources: 5,
            max_distance: RetrievalConfig::default().max_distance,
            connections: 4,
            safety: SafetyPolicy::default(),
            demo_records: false,
            check: CheckConfig::default(),
            conversation_retention_days: 30,
            conversation_context_chars: 2000,
        }
    }
}

impl ClinicalConfig {
    /// The dev profile: every clinician sees every (synthetic) patient.
    pub fn dev() -> Self {
        Self { patient_access: PatientAccess::CareTeam, demo_records: true, ..Self::default() }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [("clinical.chat_model", &self.chat_model), ("clinical.embed_model", &self.embed_model)] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must name a model installed in the engine"));
            }
        }
        if !(16..=8192).contains(&self.max_answer_tokens) {
            return Err(ConfigError::invalid("clinical.max_answer_tokens", "must be between 16 and 8192"));
        }
        if !(1..=20).contains(&self.sources) {
            return Err(ConfigError::invalid("clinical.sources", "must be between 1 and 20"));
        }
        if !(self.max_distance > 0.0 && self.max_distance <= 2.0) {
            return Err(ConfigError::invalid("clinical.max_distance", "must be above 0 and at most 2"));
        }
        if !(1..=32).contains(&self.connections) {
            return Err(ConfigError::invalid("clinical.connections", "must be between 1 and 32"));
        }
        if !(1..=3650).contains(&self.conversation_retention_days) {
            return Err(ConfigError::invalid("clinical.conversation_retention_days", "must be between 1 and 3650"));
        }
        if self.conversation_context_chars > 32_000 {
            return Err(ConfigError::invalid("clinical.conversation_context_chars", "must be at most 32000"));
        }
        for (key, value) in [
            ("clinical.safety.system_prompt", &self.safety.system_prompt),
            ("clinical.safety.footer", &self.safety.footer),
            ("clinical.safety.not_found", &self.safety.not_found),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty: the clinic's safety wording is shown with every answer"));
            }
        }
        Ok(())
    }

    fn retrieval(&self) -> RetrievalConfig {
        RetrievalConfig { k: self.sources, max_distance: self.max_distance }
    }
}

/// Retrieval and answering over the store, with the engine.
#[derive(Debug)]
pub struct RagClinical {
    pool: Arc<StorePool>,
    embedder: EngineEmbedder,
    generator: EngineGenerator,
    config: ClinicalConfig,
    runtime: tokio::runtime::Handle,
}

/// Longest snippet of a source shown under an answer.
const SNIPPET_CHARS: usize = 280;
/// Most patients a search lists.
const MAX_LISTED: usize = 200;

impl RagClinical {
    /// `runtime` runs the engine calls; the methods themselves are called off its threads.
    pub fn new(pool: Arc<StorePool>, engine: EngineHandle, config: ClinicalConfig, runtime: tokio::runtime::Handle) -> Self {
        let embedder = EngineEmbedder { engine: engine.clone(), model: config.embed_model.clone() };
        let generator = EngineGenerator { engine, model: config.chat_model.clone(), max_tokens: config.max_answer_tokens };
        Self { pool, embedder, generator, config, runtime }
    }

    /// What `viewer` may see.
    fn access(&self, conn: &Connection, viewer: &Viewer) -> Result<Access, ClinicalError> {
        if viewer.break_glass {
            return Ok(Access::AllPatients);
        }
        match (viewer.role, self.config.patient_access) {
            (Role::Clinician | Role::Nurse, PatientAccess::CareTeam) => Ok(Access::AllPatients),
            (Role::Clinician | Role::Nurse, PatientAccess::Grants) => Access::from_grants(conn, &viewer.username).map_err(failed),
            // Administrators and auditors look after the box, not after patients.
            (Role::Admin | Role::Auditor, _) => Ok(Access::Patients(Default::default())),
        }
    }

    /// The patient behind a URL id, with what `viewer` may see, if that includes the patient;
    /// otherwise `UnknownPatient` or `NotGranted`, which the browser sees alike (404) and only
    /// the audit record tells apart.
    fn patient_in_reach(&self, conn: &Connection, viewer: &Viewer, id: &str) -> Result<(i64, Access), ClinicalError> {
        let access = self.access(conn, viewer)?;
        let owner = parse_id(id).ok_or(ClinicalError::UnknownPatient)?;
        if owner == LIBRARY || !index::patient_exists(conn, owner).map_err(failed)? {
            return Err(ClinicalError::UnknownPatient);
        }
        if !access.may_see(owner) {
            return Err(ClinicalError::NotGranted);
        }
        Ok((owner, access))
    }

    fn summary(conn: &Connection, owner: i64) -> Result<PatientSummary, ClinicalError> {
        let only = Access::Patients([owner].into_iter().collect());
        let entry = index::directory(conn, &only).map_err(failed)?.into_iter().next().ok_or(ClinicalError::UnknownPatient)?;
        Ok(PatientSummary { id: owner.to_string(), display: display_name(&entry) })
    }
}

fn parse_id(id: &str) -> Option<i64> {
    id.parse::<i64>().ok().filter(|n| *n >= 0)
}

fn failed(e: impl std::fmt::Display) -> ClinicalError {
    ClinicalError::Failed(e.to_string())
}

/// "Dolores Castellanos, born 1948-07-19 (00451234)": how the record names the patient, then
/// the record ids. Notes alone name no patient reliably (they name relatives and staff too),
/// so a patient known only from notes is listed by record id.
fn display_name(e: &index::DirectoryEntry) -> String {
    let ids = e.record_ids.join(", ");
    match (&e.label, ids.is_empty()) {
        (Some(label), false) => format!("{label} ({ids})"),
        (Some(label), true) => label.clone(),
        (None, false) => format!("Record {ids}"),
        (None, true) => format!("Patient {}", e.owner),
    }
}

/// How the record identifies the patient, for checking an image's DICOM header: the record
/// ids, and the name and birth date of the record's label ("Name, born YYYY-MM-DD").
fn record_identity(e: &index::DirectoryEntry) -> RecordIdentity {
    let (name, birth_date) = match e.label.as_deref().map(|l| l.rsplit_once(", born ")) {
        Some(Some((name, born))) => (Some(name.to_owned()), Some(born.to_owned())),
        Some(None) => (e.label.clone(), None),
        None => (None, None),
    };
    RecordIdentity { record_ids: e.record_ids.clone(), name, birth_date }
}

/// How the record identifies patient `owner`, for checking an image's DICOM header against it
/// where no viewer is involved (the console import); `None` when the patient is not in the index.
pub fn record_identity_of(conn: &Connection, owner: i64) -> Result<Option<RecordIdentity>, index::IndexError> {
    let only = Access::Patients([owner].into_iter().collect());
    Ok(index::directory(conn, &only)?.into_iter().next().map(|e| record_identity(&e)))
}

fn task_of(kind: TaskKind) -> Task {
    match kind {
        TaskKind::Ask => Task::Question,
        TaskKind::Soap => Task::SoapSummary,
        TaskKind::Discharge => Task::DischargeDraft,
        TaskKind::Medications => Task::MedicationList,
    }
}

fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().count() > SNIPPET_CHARS {
        s.push('…');
    }
    s
}

impl Clinical for RagClinical {
    fn patients(&self, viewer: &Viewer, query: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        let store = self.pool.get();
        let access = self.access(store.conn(), viewer)?;
        let q = query.trim().to_lowercase();
        let mut out = Vec::new();
        for entry in index::directory(store.conn(), &access).map_err(failed)? {
            let display = display_name(&entry);
            if q.is_empty() || display.to_lowercase().contains(&q) || entry.owner.to_string() == q {
                out.push(PatientSummary { id: entry.owner.to_string(), display });
            }
            if out.len() == MAX_LISTED {
                break;
            }
        }
        Ok(out)
    }

    fn patient(&self, viewer: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError> {
        let store = self.pool.get();
        let (owner, _) = self.patient_in_reach(store.conn(), viewer, id)?;
        Self::summary(store.conn(), owner)
    }

    fn document(&self, viewer: &Viewer, patient_id: &str, document_id: &str) -> Result<Document, ClinicalError> {
        let store = self.pool.get();
        let conn = store.conn();
        let (owner, access) = self.patient_in_reach(conn, viewer, patient_id)?;
        let doc_id = parse_id(document_id).ok_or(ClinicalError::UnknownDocument)?;
        let view = match index::document(conn, doc_id, &access) {
            Ok(Some(v)) if v.owner == owner || v.owner == LIBRARY => v,
            Ok(_) | Err(index::IndexError::AccessDenied(_)) => return Err(ClinicalError::UnknownDocument),
            Err(e) => return Err(failed(e)),
        };
        let pseudonyms = index::load_pseudonyms(conn, view.owner).map_err(failed)?;
        let text = view.chunks.iter().map(|(_, _, t)| deid::reidentify(t, &pseudonyms)).collect::<Vec<_>>().join("\n\n");
        Ok(Document { id: view.id.to_string(), title: deid::reidentify(&view.title, &pseudonyms), text })
    }

    fn run(&self, viewer: &Viewer, patient_id: &str, task: TaskKind, text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        let store = self.pool.get();
        let (owner, access) = self.patient_in_reach(store.conn(), viewer, patient_id)?;
        let job = self.job(store.conn(), viewer.role, task, text, owner, access)?;
        drop(store);
        Ok(self.start(job))
    }

    fn ask(&self, viewer: &Viewer, patient_id: &str, conversation: Option<&str>, text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        let store = self.pool.get();
        let conn = store.conn();
        let (owner, access) = self.patient_in_reach(conn, viewer, patient_id)?;
        self.purge_expired(conn)?;
        let (id, earlier) = match conversation.filter(|c| !c.is_empty()) {
            Some(id) => {
                let id = parse_id(id).ok_or(ClinicalError::UnknownConversation)?;
                let turns = conversations::turns(conn, &viewer.username, owner, id).map_err(failed)?.ok_or(ClinicalError::UnknownConversation)?;
                (id, turns)
            }
            None => (conversations::start(conn, &viewer.username, owner, now_secs()).map_err(failed)?, Vec::new()),
        };
        let mut job = self.job(conn, viewer.role, TaskKind::Ask, text, owner, access)?;
        drop(store);
        let (carried, dropped) = answer::fit_history(&earlier, self.config.conversation_context_chars);
        job.conversation = Some(ConversationTurnJob { id, turn: earlier.len() + 1, history: carried.to_vec(), dropped });
        Ok(self.start(job))
    }

    fn conversations(&self, viewer: &Viewer, patient_id: &str) -> Result<Vec<ConversationSummary>, ClinicalError> {
        let store = self.pool.get();
        let conn = store.conn();
        let (owner, _) = self.patient_in_reach(conn, viewer, patient_id)?;
        self.purge_expired(conn)?;
        let pseudonyms = index::load_pseudonyms(conn, owner).map_err(failed)?;
        Ok(conversations::list(conn, &viewer.username, owner)
            .map_err(failed)?
            .into_iter()
            .filter(|c| c.turns > 0)
            .map(|c| ConversationSummary {
                id: c.id.to_string(),
                started: minute(c.started_at),
                updated: minute(c.updated_at),
                turns: c.turns,
                first_question: deid::reidentify(&c.first_question, &pseudonyms),
            })
            .collect())
    }

    fn save_draft(&self, viewer: &Viewer, patient_id: &str, kind: TaskKind, text: &str, saved_at: &str) -> Result<Uploaded, ClinicalError> {
        let title = match kind {
            TaskKind::Soap => "SOAP note",
            TaskKind::Discharge => "Discharge instructions",
            TaskKind::Medications => "Medication list",
            TaskKind::Ask => return Err(ClinicalError::Rejected("only SOAP, discharge and medication drafts are saved to the record".into())),
        };
        let body = text.trim();
        if body.is_empty() {
            return Err(ClinicalError::Rejected("the draft is empty".into()));
        }
        // A Markdown note: its heading is the document's title, the marker its first line.
        let document = format!("# {title} (AI-assisted draft)\n\n{}\n\n{body}\n", crate::web::clinical::draft_marker(&viewer.username, saved_at));
        // The file name becomes the document's title in the record and under answers.
        let file_name = format!("{title} (AI assisted draft).md");
        self.upload(viewer, patient_id, &file_name, "text/markdown", document.into_bytes())
    }

    fn conversation(&self, viewer: &Viewer, patient_id: &str, id: &str) -> Result<Conversation, ClinicalError> {
        let store = self.pool.get();
        let conn = store.conn();
        let (owner, _) = self.patient_in_reach(conn, viewer, patient_id)?;
        self.purge_expired(conn)?;
        let id = parse_id(id).ok_or(ClinicalError::UnknownConversation)?;
        let turns = conversations::turns(conn, &viewer.username, owner, id).map_err(failed)?.ok_or(ClinicalError::UnknownConversation)?;
        let pseudonyms = index::load_pseudonyms(conn, owner).map_err(failed)?;
        Ok(Conversation {
            id: id.to_string(),
            turns: turns
                .into_iter()
                .map(|t| ConversationTurn { question: deid::reidentify(&t.question, &pseudonyms), answer: deid::reidentify(&t.answer, &pseudonyms) })
                .collect(),
        })
    }

    fn upload(&self, viewer: &Viewer, patient_id: &str, file_name: &str, _content_type: &str, bytes: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        let mut store = self.pool.get();
        let (owner, _) = self.patient_in_reach(store.conn(), viewer, patient_id)?;
        let ingested = self.runtime.block_on(ingest::ingest_bytes(
            store.conn_mut(),
            &self.embedder,
            file_name,
            &bytes,
            &Owner::Indexed(owner),
            ChunkConfig::default(),
        ));
        match ingested {
            Ok(Outcome::Ingested { document_id, replaced, .. }) => Ok(Uploaded {
                document_id: document_id.to_string(),
                already_in_record: false,
                identifiers_replaced: replaced_by_tag(&replaced),
            }),
            Ok(Outcome::Unchanged { document_id, .. }) => {
                Ok(Uploaded { document_id: document_id.to_string(), already_in_record: true, identifiers_replaced: Default::default() })
            }
            // The engine is down: say so, the clinician can retry.
            Err(IngestError::Embed { source, .. }) => Err(ClinicalError::Unavailable(format!("the document could not be indexed now: {source}"))),
            // Other documents for the patient kept arriving while this one was indexed (never
            // more than a few at once in a clinic): nothing was stored, the clinician can retry.
            Err(IngestError::Busy(_)) => Err(ClinicalError::Unavailable(
                "other documents for this patient were being added at the same moment; this one was not stored, try again".into(),
            )),
            // Never the file name in a message that may reach a log: it can carry a name.
            Err(IngestError::Index { source, .. }) => Err(ClinicalError::Failed(format!("the index could not store the document: {source}"))),
            Err(e) => Err(ClinicalError::Rejected(e.to_string())),
        }
    }

    fn patient_identity(&self, viewer: &Viewer, id: &str) -> Result<RecordIdentity, ClinicalError> {
        let store = self.pool.get();
        let (owner, _) = self.patient_in_reach(store.conn(), viewer, id)?;
        let only = Access::Patients([owner].into_iter().collect());
        let entry = index::directory(store.conn(), &only).map_err(failed)?.into_iter().next().ok_or(ClinicalError::UnknownPatient)?;
        Ok(record_identity(&entry))
    }

    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        let installed = self.runtime.block_on(self.generator.engine.models()).map_err(|e| ClinicalError::Unavailable(e.to_string()))?;
        let chosen = task_models::all(self.pool.get().conn()).map_err(failed)?;
        let serving = |task: TaskKind| chosen.iter().find(|(t, _)| t == task.as_str()).map_or(self.config.chat_model.as_str(), |(_, m)| m.as_str()).to_owned();
        let mut out = Vec::new();
        for m in installed {
            // Licence and context length are read per model; a model the engine cannot describe
            // is still listed.
            let shown = self.runtime.block_on(self.generator.engine.show(&m.name)).ok();
            let mut tasks: Vec<String> =
                TASKS.iter().filter(|t| serving(**t) == m.name).map(|t| t.as_str().to_owned()).collect();
            if m.name == self.config.embed_model {
                tasks.push("embeddings".into());
            }
            out.push(ModelInfo {
                loaded: !tasks.is_empty(),
                context_length: shown.as_ref().and_then(|s| task_models::context_length(&s.model_info)),
                licence: task_models::licence_summary(shown.as_ref().map_or("", |s| s.license.as_str())),
                tasks,
                name: m.name,
                size_bytes: m.size,
                digest: String::new(),
            });
        }
        Ok(out)
    }

    fn set_task_model(&self, admin: &str, task: TaskKind, model: &str) -> Result<(), ClinicalError> {
        if model == self.config.embed_model {
            return Err(ClinicalError::Rejected(format!("{model} is the embedding model; it does not write answers")));
        }
        let installed = self.runtime.block_on(self.generator.engine.models()).map_err(|e| ClinicalError::Unavailable(e.to_string()))?;
        if !installed.iter().any(|m| m.name == model) {
            return Err(ClinicalError::Rejected(format!("{model} is not installed in the engine")));
        }
        task_models::set(self.pool.get().conn(), task.as_str(), model, admin, now_secs()).map_err(failed)
    }
}

/// Minimum necessary: the sections of a record each role's task draws on (docs/rag.md has the
/// table). Text under no recognised heading is always allowed, so a filter narrows a task
/// without starving it.
pub fn minimum_necessary(role: Role, task: TaskKind) -> SectionFilter {
    use SectionClass::{Medications, Plan, Problems, Results};
    match (task, role) {
        // A clinician's question may be about anything in the record.
        (TaskKind::Ask, Role::Clinician) => SectionFilter::ALL,
        // A nurse's question: the care at hand, not the history (social, family, the
        // subjective account of the present illness).
        (TaskKind::Ask, _) => SectionFilter::only(&[Medications, Problems, Plan, Results]),
        // A SOAP summary (clinicians only) summarises the note the clinician pasted, with the
        // whole record as context.
        (TaskKind::Soap, _) => SectionFilter::ALL,
        // Discharge instructions: what is wrong, what to take, what happens next.
        (TaskKind::Discharge, _) => SectionFilter::only(&[Problems, Medications, Plan]),
        // A medication list: medications and what changed them.
        (TaskKind::Medications, _) => SectionFilter::only(&[Medications, Plan]),
    }
}

/// Every task a model can be chosen for.
const TASKS: [TaskKind; 4] = [TaskKind::Ask, TaskKind::Soap, TaskKind::Discharge, TaskKind::Medications];

/// How often the daemon deletes conversations past the retention period.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes the conversations past the clinic's retention period every hour, until `stop`, so a
/// conversation nobody opens again is not kept longer than the clinic said (reading or
/// continuing conversations purges too, but that alone would keep a forgotten one forever).
/// Runs with or without an engine: the conversations are in the store either way.
pub async fn purge_conversations_hourly(pool: Arc<StorePool>, retention_days: u32, mut stop: tokio::sync::watch::Receiver<bool>) {
    let retention = i64::from(retention_days) * 86_400;
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
        let pool = pool.clone();
        match tokio::task::spawn_blocking(move || conversations::purge_expired(pool.get().conn(), now_secs(), retention)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(deleted)) => tracing::info!(deleted, "conversations past the retention period deleted"),
            Ok(Err(e)) => tracing::error!("cannot delete conversations past the retention period: {e}"),
            Err(e) => tracing::error!("the conversation retention sweep failed: {e}"),
        }
    }
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// "2026-11-29 14:05 UTC".
fn minute(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
}

impl RagClinical {
    /// The job for a task, with the model the administrators chose for it (or the default).
    fn job(&self, conn: &Connection, role: Role, task: TaskKind, text: &str, owner: i64, access: Access) -> Result<AnswerJob, ClinicalError> {
        let mut generator = self.generator.clone();
        if let Some(model) = task_models::get(conn, task.as_str()).map_err(failed)? {
            generator.model = model;
        }
        Ok(AnswerJob {
            embedder: self.embedder.clone(),
            generator,
            task: task_of(task),
            question: text.to_owned(),
            owner,
            access,
            policy: self.config.safety.clone(),
            retrieval: self.config.retrieval(),
            check: self.config.check,
            conversation: None,
            sections: minimum_necessary(role, task),
        })
    }

    fn start(&self, job: AnswerJob) -> mpsc::Receiver<AnswerEvent> {
        let (tx, rx) = mpsc::channel(64);
        let (pool, runtime) = (self.pool.clone(), self.runtime.clone());
        // A blocking thread, because answering borrows one store connection across awaits
        // (SQLite connections are not `Sync`); `block_on` drives it there.
        self.runtime.spawn_blocking(move || {
            let store = pool.get();
            runtime.block_on(job.run(store.conn(), tx));
        });
        rx
    }

    /// Conversations are deleted once the clinic's retention period has passed since their
    /// last turn; checked whenever conversations are read or continued.
    fn purge_expired(&self, conn: &Connection) -> Result<(), ClinicalError> {
        let retention = i64::from(self.config.conversation_retention_days) * 86_400;
        let deleted = conversations::purge_expired(conn, now_secs(), retention).map_err(failed)?;
        if deleted > 0 {
            tracing::info!(deleted, "conversations past the retention period deleted");
        }
        Ok(())
    }
}

/// One question on its way through retrieval and the engine.
struct AnswerJob {
    embedder: EngineEmbedder,
    generator: EngineGenerator,
    task: Task,
    question: String,
    owner: i64,
    access: Access,
    policy: SafetyPolicy,
    retrieval: RetrievalConfig,
    check: CheckConfig,
    /// Set for a question asked in a conversation.
    conversation: Option<ConversationTurnJob>,
    /// The sections of the record this role's task may draw on.
    sections: SectionFilter,
}

/// A question's place in its conversation.
struct ConversationTurnJob {
    id: i64,
    /// This turn's number (1 for the first).
    turn: usize,
    /// The earlier turns the model is given (the newest that fit the budget).
    history: Vec<Turn>,
    /// Older turns left out to stay within the budget.
    dropped: usize,
}

impl AnswerJob {
    /// Stream the answer re-identified for the viewer (who may see this patient: checked
    /// before the job started), then the sources, the footer, what to audit, and `Done`.
    async fn run(self, conn: &Connection, tx: mpsc::Sender<AnswerEvent>) {
        let events = match self.answer(conn, &tx).await {
            Ok(events) => events,
            Err(message) => vec![AnswerEvent::Failed(message)],
        };
        for event in events {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }

    async fn answer(&self, conn: &Connection, tx: &mpsc::Sender<AnswerEvent>) -> Result<Vec<AnswerEvent>, String> {
        let pseudonyms = index::load_pseudonyms(conn, self.owner).map_err(|e| e.to_string())?;
        let scope = Scope { patient: Some(self.owner), include_library: true };
        if let Some(c) = &self.conversation {
            let event = AnswerEvent::Conversation { id: c.id.to_string(), turn: c.turn, carried: c.history.len(), dropped: c.dropped };
            if tx.send(event).await.is_err() {
                return Ok(Vec::new());
            }
        }
        let history = self.conversation.as_ref().map_or(&[][..], |c| c.history.as_slice());
        let (pieces_tx, mut pieces) = mpsc::unbounded_channel();
        let answering = answer::answer_followup_streaming(
            conn,
            &self.embedder,
            &self.generator,
            self.task,
            &self.question,
            history,
            self.sections,
            &scope,
            &self.access,
            &self.policy,
            self.retrieval,
            pieces_tx,
        );
        // The model writes over de-identified sources; the clinician reads the originals.
        // Returns the text exactly as the clinician was shown it, for the check.
        let relaying = async {
            let mut shown = StreamingReidentifier::new(&pseudonyms);
            let mut all = String::new();
            while let Some(piece) = pieces.recv().await {
                let text = shown.push(&piece);
                all.push_str(&text);
                if !text.is_empty() && tx.send(AnswerEvent::Token(text)).await.is_err() {
                    return all;
                }
            }
            let rest = shown.finish();
            all.push_str(&rest);
            if !rest.is_empty() {
                let _ = tx.send(AnswerEvent::Token(rest)).await;
            }
            all
        };
        let (answered, shown) = tokio::join!(answering, relaying);
        let answer = answered.map_err(|e| e.to_string())?;
        if let Some(c) = &self.conversation {
            // Kept de-identified, as the model saw it; shown re-identified to its owner.
            let question = answer::deidentified_question(conn, &self.question, &scope).map_err(|e| e.to_string())?;
            conversations::append(conn, c.id, &Turn { question, answer: answer.text.clone() }, now_secs()).map_err(|e| e.to_string())?;
        }
        let mut events = Vec::new();
        if answer.sources.is_empty() {
            // Nothing relevant: the policy's words, not the model's.
            events.push(AnswerEvent::Token(answer.text.clone()));
        }
        let mut passages = Vec::new();
        for source in &answer.sources {
            let (doc_owner, title) = index::document_meta(conn, source.document_id).map_err(|e| e.to_string())?.unwrap_or((self.owner, String::new()));
            let owner_scope =
                if doc_owner == self.owner { pseudonyms.clone() } else { index::load_pseudonyms(conn, doc_owner).map_err(|e| e.to_string())? };
            let passage = deid::reidentify(&source.text, &owner_scope);
            events.push(AnswerEvent::Citation(Citation {
                n: source.n as u32,
                document_id: source.document_id.to_string(),
                title: deid::reidentify(&title, &owner_scope),
                snippet: snippet(&passage),
            }));
            passages.push((source.n, passage));
        }
        // The answer as shown against the passages as shown: both re-identified the same way,
        // so names and dates compare as the clinician reads them.
        let mut check_counts = None;
        if !answer.sources.is_empty() && !answer.not_found {
            let (view, counts) = checking::check_answer(&shown, &passages, &self.check);
            events.insert(0, AnswerEvent::Checked(view));
            check_counts = Some(counts);
        }
        let mut footer = answer.footer.clone();
        if !answer.unresolved_citations.is_empty() {
            let list = answer.unresolved_citations.iter().map(|n| format!("[{n}]")).collect::<Vec<_>>().join(", ");
            footer = format!("The answer cites {list}, which is not among the sources: check it with care. {footer}");
        }
        events.push(AnswerEvent::Footer(footer));
        events.push(AnswerEvent::Audit(self.audit_detail(&answer, check_counts.as_ref())));
        events.push(AnswerEvent::Done { model: self.generator.model.clone() });
        Ok(events)
    }

    /// Ids, hashes and lengths of what was retrieved and answered, and the check's counts:
    /// never text.
    fn audit_detail(&self, answer: &Answer, check: Option<&wardbox_rag::check::Counts>) -> serde_json::Value {
        let (query, reply) = answer::audit_detail(self.task, &self.question, answer, Some(self.owner));
        json!({ "retrieval": query, "reply": reply, "embed_model": self.embedder.model, "check": check.map(checking::audit_counts) })
    }
}


/// De-identification counts keyed by the pseudonym tag (`NAME`, `DATE`, ...): the names the
/// uploader sees, the audit record keeps and the compliance report sums. Counts only.
pub fn replaced_by_tag(replaced: &wardbox_rag::ingest::ReplacedCounts) -> std::collections::BTreeMap<String, usize> {
    replaced.iter().filter(|(_, n)| **n > 0).map(|(category, n)| (category.tag().to_owned(), *n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_daemons_sweep_deletes_conversations_past_retention_and_stops_when_told() {
        use crate::store::{Store, StoreKey};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let key = StoreKey::random();
        let (mut store, _) = Store::open_or_create(&path, &key).expect("store");
        store.migrate().expect("migrate");
        let day = 86_400;
        let old = conversations::start(store.conn(), "dr.a", 7, now_secs() - 40 * day).expect("start");
        let recent = conversations::start(store.conn(), "dr.a", 7, now_secs() - day).expect("start");
        let pool = StorePool::open(&path, &key, 1).expect("pool");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sweep = tokio::spawn(purge_conversations_hourly(pool, 30, stop_rx));
        let listed = || conversations::list(store.conn(), "dr.a", 7).expect("list").iter().map(|l| l.id).collect::<Vec<_>>();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while listed() != vec![recent] {
            assert!(std::time::Instant::now() < deadline, "the sweep did not delete conversation {old}: {:?}", listed());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(std::time::Duration::from_secs(5), sweep).await.expect("the sweep stops when told").expect("join");
    }

    #[test]
    fn display_names_use_the_records_label_then_record_ids() {
        let entry = |label: Option<&str>, ids: &[&str]| index::DirectoryEntry {
            owner: 9,
            label: label.map(str::to_owned),
            record_ids: ids.iter().map(|s| s.to_string()).collect(),
            names: vec!["Rosalind".into()],
        };
        assert_eq!(display_name(&entry(Some("Dolores Castellanos, born 1948-07-19"), &["00451234"])), "Dolores Castellanos, born 1948-07-19 (00451234)");
        assert_eq!(display_name(&entry(None, &["00451234"])), "Record 00451234");
        assert_eq!(display_name(&entry(None, &[])), "Patient 9");
    }

    #[test]
    fn the_record_identity_for_images_comes_from_the_label_and_record_ids() {
        let entry = |label: Option<&str>| index::DirectoryEntry {
            owner: 9,
            label: label.map(str::to_owned),
            record_ids: vec!["00451234".into()],
            names: vec![],
        };
        let both = record_identity(&entry(Some("Dolores Castellanos, born 1948-07-19")));
        assert_eq!(both.record_ids, ["00451234"]);
        assert_eq!((both.name.as_deref(), both.birth_date.as_deref()), (Some("Dolores Castellanos"), Some("1948-07-19")));
        let name_only = record_identity(&entry(Some("Dolores Castellanos")));
        assert_eq!((name_only.name.as_deref(), name_only.birth_date), (Some("Dolores Castellanos"), None));
        let ids_only = record_identity(&entry(None));
        assert_eq!((ids_only.name, ids_only.birth_date, ids_only.record_ids.len()), (None, None, 1));
    }

    #[test]
    fn each_role_and_task_reaches_only_the_sections_it_needs() {
        use SectionClass::*;
        let reaches = |role, task| {
            let f = minimum_necessary(role, task);
            [Medications, Problems, Plan, Results, History].into_iter().filter(|c| f.allows(*c)).collect::<Vec<_>>()
        };
        assert_eq!(reaches(Role::Clinician, TaskKind::Ask), [Medications, Problems, Plan, Results, History]);
        assert_eq!(reaches(Role::Nurse, TaskKind::Ask), [Medications, Problems, Plan, Results]);
        assert_eq!(reaches(Role::Clinician, TaskKind::Discharge), [Medications, Problems, Plan]);
        assert_eq!(reaches(Role::Nurse, TaskKind::Discharge), [Medications, Problems, Plan]);
        assert_eq!(reaches(Role::Nurse, TaskKind::Medications), [Medications, Plan]);
        assert!(minimum_necessary(Role::Nurse, TaskKind::Medications).allows(Other), "unclassified text is never starved");
    }

    #[test]
    fn defaults_fail_closed_and_validate() {
        let c = ClinicalConfig::default();
        assert_eq!(c.patient_access, PatientAccess::Grants);
        c.validate().expect("defaults are valid");
        let bad = ClinicalConfig { sources: 0, ..ClinicalConfig::default() };
        assert!(bad.validate().expect_err("0 sources").to_string().contains("clinical.sources"));
        let mut empty = ClinicalConfig::default();
        empty.safety.footer = " ".into();
        assert!(empty.validate().expect_err("empty footer").to_string().contains("clinical.safety.footer"));
    }
}
