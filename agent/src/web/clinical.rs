//! The clinical back end as the web layer sees it: patients, streamed answers with citations,
//! uploads, installed models.
//!
//! `crate::clinical::RagClinical` (retrieval over the store, answers from the engine)
//! implements [`Clinical`]; while no engine runs, the agent uses [`Unavailable`], and every
//! clinical page says plainly that the model is not available (HTTP 503). Nothing here ever
//! makes up an answer.

use serde::Serialize;
use tokio::sync::mpsc;

/// A patient as listed for the clinician to pick.
#[derive(Debug, Clone, Serialize)]
pub struct PatientSummary {
    /// The record system's id; appears in URLs and audit records (an id, not PHI text).
    pub id: String,
    /// Name and date of birth as the clinician needs to recognise the patient.
    pub display: String,
}

/// A source the answer rests on. `href` is a path on this box (a document view), never an
/// outside address.
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    /// The number the answer text refers to, e.g. `[1]`.
    pub n: u32,
    pub document_id: String,
    pub title: String,
    pub snippet: String,
}

/// The answer checked against its sources: its text cut into pieces that cover it exactly,
/// the items found in no source and the sentences citing none marked, with counts. Shown to
/// the viewer in place of the streamed text; only the counts reach the audit record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnswerCheck {
    pub segments: Vec<CheckedText>,
    /// Load-bearing items checked (medications, doses, lab values, numbers, dates, sides).
    pub items: usize,
    /// Items found in no retrieved source: the banner counts these.
    pub unsupported: usize,
    /// Sentences that state something without citing a source.
    pub not_cited: usize,
    /// How long the check took, in microseconds.
    pub micros: u64,
}

/// A piece of a checked answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckedText {
    pub text: String,
    /// Why this piece (an item) is unsupported; shown on the mark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_cited: bool,
}

/// A conversation as listed on the patient's page, for the user who had it.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationSummary {
    pub id: String,
    /// When it started and when its last turn was, UTC, to the minute.
    pub started: String,
    pub updated: String,
    pub turns: usize,
    /// The first question, re-identified for its owner.
    pub first_question: String,
}

/// A conversation's turns, oldest first, re-identified for the user who had it.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: String,
    pub turns: Vec<ConversationTurn>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConversationTurn {
    pub question: String,
    pub answer: String,
}

/// One step of a streamed answer.
#[derive(Debug, Clone)]
pub enum AnswerEvent {
    /// The conversation this question belongs to (sent first): its id, this turn's number, how
    /// many earlier turns the model was given, and how many older ones were left out to stay
    /// within the context budget.
    Conversation { id: String, turn: usize, carried: usize, dropped: usize },
    Token(String),
    /// The whole answer, checked against its sources (after the last token).
    Checked(AnswerCheck),
    Citation(Citation),
    /// The clinic's safety wording under the answer (and any warning about the answer).
    Footer(String),
    /// What the answer rests on, for the audit record only (ids, hashes, lengths; never
    /// text); not sent to the browser.
    Audit(serde_json::Value),
    /// The model finished; `model` names the model that answered, for the audit record.
    Done { model: String },
    /// The answer stopped part-way; shown to the clinician as such.
    Failed(String),
}

/// What the clinician asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Ask,
    Soap,
    Discharge,
    Medications,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Ask => "ask",
            TaskKind::Soap => "soap",
            TaskKind::Discharge => "discharge",
            TaskKind::Medications => "medications",
        }
    }
}

/// A document of a patient's record, for the citation links.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub text: String,
}

/// An installed model, for the administrators' page.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub size_bytes: u64,
    /// Empty when the engine does not say.
    pub digest: String,
    /// One of the models this box is configured to use.
    pub loaded: bool,
    /// The context length its metadata states, in tokens.
    pub context_length: Option<u64>,
    /// The first line of its licence ("not stated" when it ships none).
    pub licence: String,
    /// The tasks it serves (`TaskKind::as_str`).
    pub tasks: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClinicalError {
    /// The engine or the index is not running; the page says so (503).
    #[error("{0}")]
    Unavailable(String),
    #[error("there is no patient with this id")]
    UnknownPatient,
    /// The patient exists but is not in this user's reach (no grant, not their care team).
    /// The browser is told the same as for an unknown patient, so ids cannot be probed for
    /// existence; the audit record tells the two apart for the reviewers.
    #[error("there is no patient with this id")]
    NotGranted,
    #[error("there is no such document in this patient's record")]
    UnknownDocument,
    /// Not a conversation of this user about this patient (or it expired).
    #[error("there is no such conversation")]
    UnknownConversation,
    /// The request itself is not acceptable (empty question, unsupported file type).
    #[error("{0}")]
    Rejected(String),
    #[error("the clinical back end failed: {0}")]
    Failed(String),
}

/// A document added to a record. `identifiers_replaced` counts, per Safe Harbor category (the
/// pseudonym tag: `NAME`, `DATE`, ...), the identifiers de-identification replaced in what the
/// index keeps: counts only, never values, so the uploader can see it and the audit record can
/// keep it for the compliance report. Empty when the file was already in the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Uploaded {
    pub document_id: String,
    pub already_in_record: bool,
    pub identifiers_replaced: std::collections::BTreeMap<String, usize>,
}

/// How the record identifies a patient, to compare with the identity in a DICOM header
/// before an image is filed under the patient. Shown to nobody; never audited.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RecordIdentity {
    /// The record system's ids of the patient (MRNs), as a DICOM Patient ID would carry them.
    pub record_ids: Vec<String>,
    /// The name as the record has it, in any order ("Jane Doe", "Doe, Jane").
    pub name: Option<String>,
    /// YYYY-MM-DD or YYYYMMDD.
    pub birth_date: Option<String>,
}

impl std::fmt::Debug for RecordIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordIdentity")
            .field("record_ids", &self.record_ids.len())
            .field("name", &self.name.as_ref().map(|_| "redacted"))
            .field("birth_date", &self.birth_date.as_ref().map(|_| "redacted"))
            .finish()
    }
}

/// Who is asking: back ends decide per person which patients they may see (retrieval keeps
/// per-user grants), and may open everything to an emergency (break-glass) session, audited.
#[derive(Debug, Clone, Serialize)]
pub struct Viewer {
    pub username: String,
    pub role: super::accounts::Role,
    pub break_glass: bool,
}

/// What the web layer needs from the engine and the index. Methods may block on the store or
/// the engine (the web layer calls them off the async threads, through `Ui::clinical`); long
/// work (generation) runs in the back end's own tasks and streams through the channel.
pub trait Clinical: Send + Sync + std::fmt::Debug {
    /// Patients matching a search (name or id); an empty query lists recent patients.
    fn patients(&self, viewer: &Viewer, query: &str) -> Result<Vec<PatientSummary>, ClinicalError>;
    fn patient(&self, viewer: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError>;
    fn document(&self, viewer: &Viewer, patient_id: &str, document_id: &str) -> Result<Document, ClinicalError>;
    /// Start a task for a patient; tokens and citations arrive on the receiver, ending with
    /// `Done` or `Failed`.
    fn run(&self, viewer: &Viewer, patient_id: &str, task: TaskKind, text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError>;
    /// Add a document to a patient's record; returns its document id (the same id again when
    /// the same file was added before) and what de-identification replaced.
    fn upload(&self, viewer: &Viewer, patient_id: &str, file_name: &str, content_type: &str, bytes: Vec<u8>) -> Result<Uploaded, ClinicalError>;
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError>;
    /// Ask a question in a conversation of this viewer about this patient (`None`: start
    /// one); the answer streams as from [`Clinical::run`], after an `AnswerEvent::Conversation`.
    /// Back ends that keep no conversations answer it as a one-off question.
    fn ask(&self, viewer: &Viewer, patient_id: &str, conversation: Option<&str>, text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        let _ = conversation;
        self.run(viewer, patient_id, TaskKind::Ask, text)
    }
    /// This viewer's conversations about this patient, most recent first.
    fn conversations(&self, _viewer: &Viewer, _patient_id: &str) -> Result<Vec<ConversationSummary>, ClinicalError> {
        Ok(Vec::new())
    }
    /// One of this viewer's conversations about this patient.
    fn conversation(&self, _viewer: &Viewer, _patient_id: &str, _id: &str) -> Result<Conversation, ClinicalError> {
        Err(ClinicalError::UnknownConversation)
    }
    /// Save a draft the viewer reviewed and edited as a new document of the patient, marked as
    /// an AI-assisted draft reviewed and saved by them at `saved_at`; indexed (and
    /// de-identified) like any other document.
    fn save_draft(&self, _viewer: &Viewer, _patient_id: &str, _kind: TaskKind, _text: &str, _saved_at: &str) -> Result<Uploaded, ClinicalError> {
        Err(ClinicalError::Unavailable("saving drafts is not available on this box".into()))
    }
    /// How the record identifies a patient this viewer may see (for checking an uploaded
    /// image's header against it); `UnknownPatient`/`NotGranted` like [`Clinical::patient`].
    fn patient_identity(&self, _viewer: &Viewer, _patient_id: &str) -> Result<RecordIdentity, ClinicalError> {
        Err(ClinicalError::Unavailable("images cannot be checked against this record system".into()))
    }
    /// Choose the installed model that serves `task` (an administrator's decision).
    fn set_task_model(&self, _admin: &str, _task: TaskKind, _model: &str) -> Result<(), ClinicalError> {
        Err(ClinicalError::Unavailable("choosing models is not available on this box".into()))
    }
}

/// The line that opens a saved draft in the record.
pub fn draft_marker(username: &str, saved_at: &str) -> String {
    format!("AI-assisted draft, reviewed and saved by {username} at {saved_at}")
}

/// The back end when no engine or index is wired in: everything is unavailable, said plainly.
#[derive(Debug, Clone)]
pub struct Unavailable {
    reason: String,
}

impl Unavailable {
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

impl Default for Unavailable {
    fn default() -> Self {
        Self::new("the model is not available: no inference engine is running on this box")
    }
}

impl Clinical for Unavailable {
    fn patients(&self, _v: &Viewer, _query: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Err(ClinicalError::Unavailable(format!("the patient index is not available ({})", self.reason)))
    }
    fn patient(&self, _v: &Viewer, _id: &str) -> Result<PatientSummary, ClinicalError> {
        Err(ClinicalError::Unavailable(format!("the patient index is not available ({})", self.reason)))
    }
    fn document(&self, _v: &Viewer, _p: &str, _d: &str) -> Result<Document, ClinicalError> {
        Err(ClinicalError::Unavailable(format!("the patient index is not available ({})", self.reason)))
    }
    fn run(&self, _v: &Viewer, _p: &str, _t: TaskKind, _text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        Err(ClinicalError::Unavailable(self.reason.clone()))
    }
    fn upload(&self, _v: &Viewer, _p: &str, _f: &str, _c: &str, _b: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        Err(ClinicalError::Unavailable(format!("uploads are not available ({})", self.reason)))
    }
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        Err(ClinicalError::Unavailable(self.reason.clone()))
    }
}

/// Blocked-egress counters from the firewall, for the administrators' page.
pub trait EgressCounters: Send + Sync + std::fmt::Debug {
    /// (rule or destination class, packets dropped, bytes dropped).
    fn blocked(&self) -> Result<Vec<(String, u64, u64)>, String>;
}

/// When no firewall is applied (dev profile) or the counters cannot be read.
#[derive(Debug, Clone)]
pub struct NoEgressCounters(pub String);

impl EgressCounters for NoEgressCounters {
    fn blocked(&self) -> Result<Vec<(String, u64, u64)>, String> {
        Err(self.0.clone())
    }
}
