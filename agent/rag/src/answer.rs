//! Answering: a prompt template per task, the retrieved chunks as numbered sources, citations
//! [1], [2] checked against them, "not found in the record" when nothing relevant came back,
//! the clinic's safety text, and the audit detail (hashes, ids and lengths, never text).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use ollama_rs::Ollama;
use ollama_rs::generation::completion::request::GenerationRequest;
use ollama_rs::models::ModelOptions;
use regex::Regex;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::deid::{self, KnownIdentifiers};
use crate::embed::{EmbedError, Embedder};
use crate::index::{self, Access, Hit, IndexError, Scope};
use crate::sections::SectionFilter;

/// What the clinician asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Question,
    SoapSummary,
    DischargeDraft,
    MedicationList,
}

impl Task {
    fn instruction(self) -> &'static str {
        match self {
            Task::Question => "Answer the clinician's question using only the numbered sources below.",
            Task::SoapSummary => "Summarise the note in the sources as a SOAP note with the headings Subjective, Objective, Assessment and Plan, using only the sources.",
            Task::DischargeDraft => "Draft discharge instructions in plain language for the patient, using only the diagnoses, medications and follow-up plans stated in the sources.",
            Task::MedicationList => "List every medication in the sources as one line each: name, dose, route, frequency, status. Use only the sources.",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Question => "question",
            Task::SoapSummary => "soap_summary",
            Task::DischargeDraft => "discharge_draft",
            Task::MedicationList => "medication_list",
        }
    }
}

/// The clinic's safety wording: the system prompt and the footer under every answer. The
/// defaults say what the box is (a documentation assistant) and is not (a diagnostician).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyPolicy {
    pub system_prompt: String,
    pub footer: String,
    /// The answer when retrieval finds nothing relevant.
    pub not_found: String,
}

impl Default for SafetyPolicy {
    fn default() -> Self {
        Self {
            system_prompt: "You are a clinical documentation assistant in a medical clinic. You are not a diagnostician and you do not give medical advice, diagnoses or treatment decisions. Use only the numbered sources you are given. Cite every statement with the number of its source in square brackets, like [1] or [2]. If the sources do not contain the answer, reply exactly: Not found in the record. Never invent facts, names, doses or dates.".into(),
            footer: "Documentation assistant output, not a diagnosis or medical advice. Verify against the cited sources before use.".into(),
            not_found: "Not found in the record.".into(),
        }
    }
}

/// A numbered source as shown to the model and to the clinician.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub n: usize,
    pub chunk_id: i64,
    pub document_id: i64,
    pub section: String,
    pub text: String,
}

/// A prompt ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub system: String,
    pub user: String,
}

/// An earlier turn of a conversation, de-identified, as the model saw and wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub question: String,
    pub answer: String,
}

impl Turn {
    fn chars(&self) -> usize {
        self.question.chars().count() + self.answer.chars().count()
    }
}

/// The most recent turns that fit in `budget_chars` together, oldest left out first, and how
/// many were left out. A small model's context holds the sources, the request and the answer
/// too, so earlier turns get a fixed share of it.
pub fn fit_history(turns: &[Turn], budget_chars: usize) -> (&[Turn], usize) {
    let mut used = 0;
    let mut keep = 0;
    for t in turns.iter().rev() {
        if used + t.chars() > budget_chars {
            break;
        }
        used += t.chars();
        keep += 1;
    }
    (&turns[turns.len() - keep..], turns.len() - keep)
}

/// Build the prompt for a task over numbered sources.
pub fn build_prompt(task: Task, request: &str, sources: &[Source], policy: &SafetyPolicy) -> Prompt {
    build_prompt_with_history(task, request, &[], sources, policy)
}

/// [`build_prompt`] for a follow-up question: the earlier turns (already fitted to the
/// budget) come before the sources, marked as context only, so citations still point at the
/// numbered sources.
pub fn build_prompt_with_history(task: Task, request: &str, history: &[Turn], sources: &[Source], policy: &SafetyPolicy) -> Prompt {
    let mut user = String::new();
    user.push_str(task.instruction());
    if !history.is_empty() {
        user.push_str("\n\nEarlier in this conversation (context only; cite only the numbered sources):\n");
        for t in history {
            user.push_str(&format!("Q: {}\nA: {}\n", t.question.trim(), t.answer.trim()));
        }
    }
    user.push_str("\n\nSources:\n");
    for s in sources {
        user.push_str(&format!("[{}] ({}) {}\n", s.n, s.section, s.text));
    }
    user.push_str("\nRequest: ");
    user.push_str(request);
    user.push_str("\nAnswer (cite sources as [n]):");
    Prompt { system: policy.system_prompt.clone(), user }
}

static CITATION: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]").expect("static regex")
});

/// The citations in an answer: those that resolve to a source, and those that do not (a
/// model citing [7] of five sources is shown as unresolved, never silently dropped).
pub fn citations(answer: &str, sources: &[Source]) -> (Vec<Source>, Vec<usize>) {
    let mut cited = BTreeSet::new();
    for c in CITATION.captures_iter(answer) {
        for n in c[1].split(',').filter_map(|x| x.trim().parse::<usize>().ok()) {
            cited.insert(n);
        }
    }
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for n in cited {
        match sources.iter().find(|s| s.n == n) {
            Some(s) => ok.push(s.clone()),
            None => bad.push(n),
        }
    }
    (ok, bad)
}

/// A problem answering, worded for the clinician's screen and the log.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("the engine did not answer: {0}")]
    Engine(String),
}

pub type GenerateFuture<'a> = Pin<Box<dyn Future<Output = Result<String, AnswerError>> + Send + 'a>>;

/// A text generator: the engine's `/api/generate` in production.
pub trait Generator: Send + Sync {
    fn model(&self) -> &str;
    fn generate<'a>(&'a self, prompt: &'a Prompt) -> GenerateFuture<'a>;
    /// Generate, sending pieces of the text to `tokens` as they come; resolves to the whole
    /// text. The default sends the whole answer as one piece.
    fn stream<'a>(&'a self, prompt: &'a Prompt, tokens: tokio::sync::mpsc::UnboundedSender<String>) -> GenerateFuture<'a> {
        Box::pin(async move {
            let text = self.generate(prompt).await?;
            let _ = tokens.send(text.clone());
            Ok(text)
        })
    }
}

/// Generation through `ollama-rs`, deterministic (temperature 0) so answers are reproducible.
#[derive(Debug, Clone)]
pub struct OllamaGenerator {
    client: Ollama,
    model: String,
    max_tokens: i32,
}

impl OllamaGenerator {
    pub fn new(url: &str, model: &str, max_tokens: i32) -> Result<Self, AnswerError> {
        let mut base = url.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = Ollama::try_new(base.as_str()).map_err(|_| AnswerError::Engine(format!("{url:?} is not a valid URL")))?;
        Ok(Self { client, model: model.to_owned(), max_tokens })
    }
}

impl OllamaGenerator {
    fn request<'a>(&self, prompt: &'a Prompt) -> GenerationRequest<'a> {
        GenerationRequest::new(self.model.clone(), prompt.user.as_str())
            .system(prompt.system.as_str())
            .options(ModelOptions::default().temperature(0.0).seed(7).num_predict(self.max_tokens))
    }
}

impl Generator for OllamaGenerator {
    fn model(&self) -> &str {
        &self.model
    }

    fn generate<'a>(&'a self, prompt: &'a Prompt) -> GenerateFuture<'a> {
        Box::pin(async move {
            let res = self.client.generate(self.request(prompt)).await.map_err(|e| AnswerError::Engine(format!("{e:?}")))?;
            Ok(res.response)
        })
    }

    fn stream<'a>(&'a self, prompt: &'a Prompt, tokens: tokio::sync::mpsc::UnboundedSender<String>) -> GenerateFuture<'a> {
        Box::pin(async move {
            use tokio_stream::StreamExt;
            let mut stream = self.client.generate_stream(self.request(prompt)).await.map_err(|e| AnswerError::Engine(format!("{e:?}")))?;
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                // ollama-rs reports a broken stream item as an error without detail.
                let chunk = chunk.map_err(|e| AnswerError::Engine(format!("the answer stream broke: {e:?}")))?;
                for piece in chunk {
                    text.push_str(&piece.response);
                    let _ = tokens.send(piece.response);
                }
            }
            Ok(text)
        })
    }
}

/// Retrieval settings.
#[derive(Debug, Clone, Copy)]
pub struct RetrievalConfig {
    pub k: usize,
    /// A vector hit counts as relevant below this cosine distance (1 - cosine similarity).
    pub max_distance: f64,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self { k: 5, max_distance: 0.75 }
    }
}

/// An answer with everything the UI and the audit log need.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The answer as the model wrote it, over de-identified sources.
    pub text: String,
    /// The same, re-identified for a user allowed to see the patient (when one was in scope).
    pub text_reidentified: Option<String>,
    pub sources: Vec<Source>,
    pub cited: Vec<Source>,
    pub unresolved_citations: Vec<usize>,
    pub not_found: bool,
    pub footer: String,
}

fn digest(text: &str) -> serde_json::Value {
    json!({ "sha256": hex::encode(Sha256::digest(text.as_bytes())), "chars": text.chars().count() })
}

/// The detail of the audit records for a question and its answer: hashes, ids, lengths.
/// Shape matches the agent's `TextDigest` ({sha256, chars}).
pub fn audit_detail(task: Task, question: &str, answer: &Answer, patient: Option<i64>) -> (serde_json::Value, serde_json::Value) {
    let query = json!({
        "task": task.as_str(),
        "patient": patient,
        "question": digest(question),
        "sources": answer.sources.iter().map(|s| json!({"n": s.n, "chunk": s.chunk_id, "document": s.document_id})).collect::<Vec<_>>(),
    });
    let reply = json!({
        "task": task.as_str(),
        "answer": digest(&answer.text),
        "cited_chunks": answer.cited.iter().map(|s| s.chunk_id).collect::<Vec<_>>(),
        "unresolved_citations": answer.unresolved_citations,
        "not_found": answer.not_found,
    });
    (query, reply)
}

/// Retrieve and answer. The question is de-identified with the patient's pseudonyms before it
/// is embedded or searched (so "Maria's A1c" finds "[NAME-1]'s A1c"); the answer is
/// re-identified only when `reidentify` is true (the caller checked the user's right).
#[allow(clippy::too_many_arguments)]
pub async fn answer(
    conn: &Connection,
    embedder: &dyn Embedder,
    generator: &dyn Generator,
    task: Task,
    question: &str,
    scope: &Scope,
    access: &Access,
    policy: &SafetyPolicy,
    cfg: RetrievalConfig,
    reidentify: bool,
) -> Result<Answer, AnswerError> {
    answer_inner(conn, embedder, generator, task, question, &[], SectionFilter::ALL, scope, access, policy, cfg, reidentify, None).await
}

/// [`answer`], sending the answer's text to `tokens` piece by piece as the engine writes it (the
/// pieces are de-identified text; the final [`Answer`] carries the re-identified version and the
/// resolved citations).
#[allow(clippy::too_many_arguments)]
pub async fn answer_streaming(
    conn: &Connection,
    embedder: &dyn Embedder,
    generator: &dyn Generator,
    task: Task,
    question: &str,
    scope: &Scope,
    access: &Access,
    policy: &SafetyPolicy,
    cfg: RetrievalConfig,
    reidentify: bool,
    tokens: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<Answer, AnswerError> {
    answer_inner(conn, embedder, generator, task, question, &[], SectionFilter::ALL, scope, access, policy, cfg, reidentify, Some(tokens)).await
}

/// [`answer_streaming`] for a follow-up question in a conversation: `history` (earlier turns,
/// de-identified, already fitted with [`fit_history`]) goes into the prompt, and retrieval
/// searches with the previous question too, so "and since when?" finds what the conversation
/// is about. Only passages of the sections `sections` allows are sources (minimum necessary).
#[allow(clippy::too_many_arguments)]
pub async fn answer_followup_streaming(
    conn: &Connection,
    embedder: &dyn Embedder,
    generator: &dyn Generator,
    task: Task,
    question: &str,
    history: &[Turn],
    sections: SectionFilter,
    scope: &Scope,
    access: &Access,
    policy: &SafetyPolicy,
    cfg: RetrievalConfig,
    tokens: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<Answer, AnswerError> {
    answer_inner(conn, embedder, generator, task, question, history, sections, scope, access, policy, cfg, false, Some(tokens)).await
}

#[allow(clippy::too_many_arguments)]
async fn answer_inner(
    conn: &Connection,
    embedder: &dyn Embedder,
    generator: &dyn Generator,
    task: Task,
    question: &str,
    history: &[Turn],
    sections: SectionFilter,
    scope: &Scope,
    access: &Access,
    policy: &SafetyPolicy,
    cfg: RetrievalConfig,
    reidentify: bool,
    tokens: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<Answer, AnswerError> {
    let search_for = match history.last() {
        Some(previous) => format!("{} {question}", previous.question),
        None => question.to_owned(),
    };
    // A narrowed task searches deeper, so that k sources of its sections remain.
    let depth = if sections.is_all() { cfg } else { RetrievalConfig { k: cfg.k * 3, ..cfg } };
    let hits = retrieve(conn, embedder, &search_for, scope, access, depth).await?;
    // Relevance is semantic: a chunk that only shares a word with the question (BM25) but is far
    // from it in meaning is not a source. BM25 still helps rank the relevant ones.
    let relevant: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.distance.is_some_and(|d| d <= cfg.max_distance) && sections.allows_label(&h.section))
        .take(cfg.k)
        .collect();
    let sources: Vec<Source> = relevant
        .iter()
        .enumerate()
        .map(|(i, h)| Source { n: i + 1, chunk_id: h.chunk_id, document_id: h.document_id, section: h.section.clone(), text: h.text.clone() })
        .collect();
    if sources.is_empty() {
        return Ok(Answer {
            text: policy.not_found.clone(),
            text_reidentified: None,
            sources,
            cited: Vec::new(),
            unresolved_citations: Vec::new(),
            not_found: true,
            footer: policy.footer.clone(),
        });
    }
    let prompt = build_prompt_with_history(task, &deidentified_question(conn, question, scope)?, history, &sources, policy);
    let text = match tokens {
        Some(tx) => generator.stream(&prompt, tx).await?,
        None => generator.generate(&prompt).await?,
    };
    let (cited, unresolved) = citations(&text, &sources);
    let not_found = text.trim_start().starts_with(policy.not_found.trim_end_matches('.'));
    let text_reidentified = match (reidentify, scope.patient) {
        (true, Some(p)) => Some(deid::reidentify(&text, &index::load_pseudonyms(conn, p)?)),
        _ => None,
    };
    Ok(Answer { text, text_reidentified, sources, cited, unresolved_citations: unresolved, not_found, footer: policy.footer.clone() })
}

/// The question as the model sees it: de-identified with the scope's pseudonyms (what a
/// conversation keeps of each turn).
pub fn deidentified_question(conn: &Connection, question: &str, scope: &Scope) -> Result<String, IndexError> {
    let owner = scope.patient.unwrap_or(index::LIBRARY);
    // A copy of the scope: pseudonyms made for words of the question are not stored.
    let mut pseudonyms = index::load_pseudonyms(conn, owner)?;
    Ok(deid::deidentify(question, &KnownIdentifiers::default(), &mut pseudonyms).text)
}

/// The hybrid search for a question, de-identified first.
pub async fn retrieve(
    conn: &Connection,
    embedder: &dyn Embedder,
    question: &str,
    scope: &Scope,
    access: &Access,
    cfg: RetrievalConfig,
) -> Result<Vec<Hit>, AnswerError> {
    // Refuse before any work when the patient is out of bounds.
    if let Some(p) = scope.patient
        && (!access.may_see(p) || p == index::LIBRARY) {
            return Err(IndexError::AccessDenied(p).into());
        }
    let q = deidentified_question(conn, question, scope)?;
    let v = embedder.embed(std::slice::from_ref(&q)).await?;
    let qv = v.into_iter().next().unwrap_or_default();
    Ok(index::search(conn, &q, &qv, scope, access, cfg.k)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(n: usize) -> Source {
        Source { n, chunk_id: 100 + n as i64, document_id: 7, section: "Plan".into(), text: format!("text {n}") }
    }

    #[test]
    fn citations_resolve_and_bad_ones_are_reported() {
        let sources = vec![src(1), src(2), src(3)];
        let (ok, bad) = citations("Metformin 500 mg [1]. A1c 7.4% [2, 3]. Invented [7].", &sources);
        assert_eq!(ok.iter().map(|s| s.chunk_id).collect::<Vec<_>>(), vec![101, 102, 103]);
        assert_eq!(bad, vec![7]);
    }

    #[test]
    fn prompt_numbers_sources_and_carries_the_safety_text() {
        let p = build_prompt(Task::MedicationList, "list meds", &[src(1), src(2)], &SafetyPolicy::default());
        assert!(p.system.contains("not a diagnostician"));
        assert!(p.user.contains("[1] (Plan) text 1\n[2] (Plan) text 2"));
        assert!(p.user.starts_with("List every medication"));
    }

    #[test]
    fn history_keeps_the_newest_turns_that_fit_and_counts_the_rest() {
        let t = |q: &str, a: &str| Turn { question: q.into(), answer: a.into() };
        let turns = vec![t("first question", "first answer"), t("second q", "second a"), t("third q", "third a")];
        let (kept, dropped) = fit_history(&turns, 32);
        assert_eq!((kept.len(), dropped), (2, 1));
        assert_eq!(kept[0].question, "second q");
        assert_eq!(fit_history(&turns, 0), (&turns[3..], 3));
        assert_eq!(fit_history(&turns, 10_000).1, 0);
        let p = build_prompt_with_history(Task::Question, "and the dose?", kept, &[src(1)], &SafetyPolicy::default());
        assert!(p.user.contains("Q: second q\nA: second a\nQ: third q\nA: third a\n"), "{}", p.user);
        assert!(p.user.find("Earlier in this conversation") < p.user.find("Sources:"));
        assert!(!build_prompt(Task::Question, "q", &[src(1)], &SafetyPolicy::default()).user.contains("Earlier"));
    }

    #[test]
    fn audit_detail_has_no_text() {
        let a = Answer {
            text: "Maria takes metformin [1].".into(),
            text_reidentified: None,
            sources: vec![src(1)],
            cited: vec![src(1)],
            unresolved_citations: vec![],
            not_found: false,
            footer: String::new(),
        };
        let (q, r) = audit_detail(Task::Question, "What does Maria take?", &a, Some(3));
        let all = format!("{q}{r}");
        assert!(!all.contains("Maria") && !all.contains("metformin") && !all.contains("text 1"), "{all}");
        assert_eq!(q["question"]["chars"], 21);
        assert_eq!(r["cited_chunks"][0], 101);
    }
}
