//! Ingestion: a file becomes sections of text (plain text and Markdown notes, the text layer of
//! a PDF, the resources of a FHIR R4 Bundle), the sections are de-identified with the owner's
//! pseudonyms, cut into overlapping chunks along section boundaries, embedded and indexed.
//!
//! A bad file is an error for that file only ([`ingest_many`] records it and goes on);
//! re-ingesting the same bytes for the same owner is a no-op (salted content hash).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;
use rusqlite::Connection;
use serde_json::Value;

use crate::deid::{self, Category, KnownIdentifiers};
use crate::embed::{EmbedError, Embedder};
use crate::index::{self, IndexError, LIBRARY, NewChunk, Stored};

/// A problem with one document, worded for the person running the import.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: cannot read the file: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}: the file type is not supported (expected .txt, .md, .pdf or a FHIR .json Bundle)")]
    UnsupportedType(String),
    #[error("{0}: the file is not UTF-8 text")]
    NotUtf8(String),
    #[error("{name}: not a readable PDF: {detail}")]
    Pdf { name: String, detail: String },
    #[error("{0}: the PDF has no text layer (scanned image?); run it through OCR first")]
    PdfNoText(String),
    #[error("{name}: not valid JSON: {detail}")]
    Json { name: String, detail: String },
    #[error("{name}: not a FHIR R4 Bundle ({detail})")]
    NotFhir { name: String, detail: String },
    #[error("{0}: the Bundle has no Patient resource, so it is not clear whose record it is; nothing was imported")]
    FhirNoPatient(String),
    #[error("{0}: the Bundle holds more than one Patient; import one patient per Bundle")]
    FhirManyPatients(String),
    #[error("{0}: a patient document needs the patient's record id")]
    NoPatient(String),
    #[error("{0}: the Bundle is about another patient than the record it was added to; nothing was imported")]
    OtherPatient(String),
    #[error("{name}: there is no patient {owner} in the index; nothing was imported")]
    UnknownOwner { name: String, owner: i64 },
    #[error("{0}: the document has no text")]
    Empty(String),
    #[error("{0}: de-identification changed the document's section structure; nothing was imported (a bug: please report it)")]
    DeidStructure(String),
    #[error("{name}: embedding failed: {source}")]
    Embed { name: String, source: EmbedError },
    #[error("{name}: {source}")]
    Index { name: String, source: IndexError },
    #[error("{0}: other documents for this record were being added at the same moment; nothing was imported, try again")]
    Busy(String),
}

/// Whose document this is.
#[derive(Debug, Clone)]
pub enum Owner {
    /// The clinic library (policies, formularies, leaflets): every user may see it.
    Library,
    /// A patient, by the record's own id (MRN or FHIR Patient.id), with the identifiers the
    /// registry knows for them. A FHIR Bundle brings its own Patient and ignores this.
    Patient { record_id: String, known: KnownIdentifiers },
    /// Take the patient from the document (FHIR Bundles only).
    FromDocument,
    /// A patient (or the library, [`LIBRARY`]) already in the index, by owner id: an upload
    /// from the patient's page. A FHIR Bundle must then be about this same patient.
    Indexed(i64),
}

/// Kinds of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Markdown,
    Pdf,
    Fhir,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Markdown => "markdown",
            Kind::Pdf => "pdf",
            Kind::Fhir => "fhir",
        }
    }

    pub fn of(name: &str, bytes: &[u8]) -> Option<Kind> {
        let lower = name.to_lowercase();
        if bytes.starts_with(b"%PDF") || lower.ends_with(".pdf") {
            Some(Kind::Pdf)
        } else if lower.ends_with(".json") {
            Some(Kind::Fhir)
        } else if lower.ends_with(".md") || lower.ends_with(".markdown") {
            Some(Kind::Markdown)
        } else if lower.ends_with(".txt") || lower.ends_with(".note") || lower.ends_with(".text") {
            Some(Kind::Text)
        } else {
            None
        }
    }
}

/// A section of a document: a heading (SOAP part, Markdown heading, FHIR resource) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub heading: String,
    pub text: String,
    /// Whether a short section may share a chunk with its neighbours (note sections: yes, so
    /// a one-line "Plan:" keeps its "Assessment:" for context; FHIR resources: no, each is one
    /// citable fact).
    pub pack: bool,
}

/// A parsed document, before de-identification.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub sections: Vec<Section>,
    /// Identifiers the document itself states in structured form (FHIR Patient).
    pub known: KnownIdentifiers,
    /// The patient the document names (FHIR Patient.id or its first identifier).
    pub patient_record_id: Option<String>,
    /// How the record names its patient ("Dolores Castellanos, born 1948-07-19"), for the
    /// clinician's patient list; stored de-identified like everything else.
    pub patient_label: Option<String>,
    /// The names of the contacts the record gives (FHIR `Patient.contact`: next of kin,
    /// emergency contact), for the alert rule that notices a staff member opening a record
    /// that names them; stored de-identified like the label.
    pub contacts: Vec<String>,
}

static HEADING: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(
        r"(?im)^[ \t]*(?:#{1,6}[ \t]+(?P<md>[^\n]+?)[ \t]*#*[ \t]*$|(?P<soap>S|O|A|P|subjective|objective|assessment|plan|assessment and plan|a/p|hpi|history of present illness|chief complaint|cc|ros|review of systems|pmh|past medical history|psh|past surgical history|medications|current medications|meds|allergies|physical exam|exam|examination|vitals|vital signs|labs|laboratory|results|imaging|impression|diagnosis|diagnoses|discharge instructions|discharge diagnosis|follow-up|follow up|social history|family history|procedures|hospital course|problem list|history|instructions)[ \t]*:[ \t]*(?P<rest>[^\n]*)$)",
    )
    .expect("static regex")
});

/// Split a note into sections at Markdown headings and SOAP-style "Heading:" lines.
pub fn sections_of_text(text: &str) -> Vec<Section> {
    let mut out = Vec::new();
    let mut heading = String::from("Note");
    let mut body = String::new();
    let mut at = 0;
    for caps in HEADING.captures_iter(text) {
        let Some(m) = caps.get(0) else { continue };
        body.push_str(&text[at..m.start()]);
        if !body.trim().is_empty() {
            out.push(Section { heading: heading.clone(), text: body.trim().to_owned(), pack: true });
        }
        body.clear();
        heading = caps.name("md").or_else(|| caps.name("soap")).map_or("Note", |h| h.as_str()).trim().to_owned();
        heading = expand_soap(&heading);
        if let Some(rest) = caps.name("rest") {
            body.push_str(rest.as_str());
            body.push('\n');
        }
        at = m.end();
    }
    body.push_str(&text[at..]);
    if !body.trim().is_empty() {
        out.push(Section { heading, text: body.trim().to_owned(), pack: true });
    }
    out
}

fn expand_soap(h: &str) -> String {
    match h.to_lowercase().as_str() {
        "s" => "Subjective".into(),
        "o" => "Objective".into(),
        "a" => "Assessment".into(),
        "p" => "Plan".into(),
        "a/p" => "Assessment and Plan".into(),
        _ => h.to_owned(),
    }
}

/// The text layer of a PDF, page by page.
///
/// lopdf's own `extract_text` ignores the line-positioning operators, so "DOB: 02/03/1931" on
/// one line and "Admitted" on the next come out glued ("1931Admitted"), which hides the date
/// from the de-identification rules. This walker breaks lines at `Td`, `TD`, `T*`, `Tm`, `'`,
/// `"` and `ET`, and puts a space at large `TJ` kerning gaps.
pub fn pdf_text(name: &str, bytes: &[u8]) -> Result<String, IngestError> {
    let err = |detail: String| IngestError::Pdf { name: name.to_owned(), detail };
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| err(e.to_string()))?;
    if doc.is_encrypted() {
        return Err(err("the PDF is encrypted".into()));
    }
    let mut text = String::new();
    for (number, page_id) in doc.get_pages() {
        let fonts = doc.get_page_fonts(page_id).map_err(|e| err(format!("page {number}: {e}")))?;
        let encodings: std::collections::BTreeMap<Vec<u8>, lopdf::Encoding<'_>> =
            fonts.into_iter().filter_map(|(n, f)| f.get_font_encoding(&doc).ok().map(|e| (n, e))).collect();
        let content = doc.get_and_decode_page_content(page_id).map_err(|e| err(format!("page {number}: {e}")))?;
        let mut encoding = None;
        let newline = |t: &mut String| {
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
        };
        for op in &content.operations {
            match op.operator.as_str() {
                "Tf" => encoding = op.operands.first().and_then(|o| o.as_name().ok()).and_then(|n| encodings.get(n)),
                "Td" | "TD" | "T*" | "Tm" | "ET" => newline(&mut text),
                "Tj" | "TJ" | "'" | "\"" => {
                    if matches!(op.operator.as_str(), "'" | "\"") {
                        newline(&mut text);
                    }
                    let Some(enc) = encoding else { continue };
                    for operand in &op.operands {
                        let items: Vec<&lopdf::Object> = match operand {
                            lopdf::Object::Array(a) => a.iter().collect(),
                            o => vec![o],
                        };
                        for item in items {
                            match item {
                                lopdf::Object::String(b, _) => {
                                    let piece = lopdf::Document::decode_text(enc, b).map_err(|e| err(format!("page {number}: {e}")))?;
                                    text.push_str(&piece);
                                }
                                lopdf::Object::Integer(i) if *i < -200 => text.push(' '),
                                lopdf::Object::Real(r) if *r < -200.0 => text.push(' '),
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        newline(&mut text);
    }
    if text.trim().is_empty() {
        return Err(IngestError::PdfNoText(name.to_owned()));
    }
    Ok(text)
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = match cur {
            Value::Array(a) => a.first()?.get(p)?,
            _ => cur.get(p)?,
        };
    }
    match cur {
        Value::String(x) => Some(x.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The human text of a CodeableConcept: its text, else its first coding's display.
fn concept(v: Option<&Value>) -> Option<String> {
    let v = v?;
    s(v, &["text"]).or_else(|| s(v, &["coding", "display"])).or_else(|| s(v, &["coding", "code"]))
}

fn line(parts: &[(&str, Option<String>)]) -> String {
    parts.iter().filter_map(|(label, v)| v.as_ref().filter(|x| !x.is_empty()).map(|x| format!("{label}: {x}"))).collect::<Vec<_>>().join("; ")
}

/// A FHIR R4 Bundle: the Patient's identifiers become known identifiers (removed wherever they
/// occur), every supported resource becomes a section, inline document text is split further.
pub fn parse_fhir(name: &str, bytes: &[u8]) -> Result<Parsed, IngestError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| IngestError::Json { name: name.to_owned(), detail: e.to_string() })?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        let found = v.get("resourceType").and_then(Value::as_str).unwrap_or("no resourceType");
        return Err(IngestError::NotFhir { name: name.to_owned(), detail: format!("resourceType is {found:?}") });
    }
    let entries = v.get("entry").and_then(Value::as_array).ok_or_else(|| IngestError::NotFhir { name: name.to_owned(), detail: "no entry array".into() })?;
    let resources: Vec<&Value> = entries.iter().filter_map(|e| e.get("resource")).collect();
    let patients: Vec<&&Value> = resources.iter().filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient")).collect();
    let patient = match patients.as_slice() {
        [] => return Err(IngestError::FhirNoPatient(name.to_owned())),
        [p] => *p,
        _ => return Err(IngestError::FhirManyPatients(name.to_owned())),
    };
    let mut known = KnownIdentifiers::default();
    // The patient key is the medical record number when the Bundle has one, so notes filed
    // by MRN and the FHIR record land on the same patient; else the first identifier, else the
    // resource id.
    let idents: Vec<&Value> = patient.get("identifier").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let is_mrn = |i: &&&Value| {
        let t = concept(i.get("type")).unwrap_or_default().to_lowercase();
        t.contains("medical record") || t == "mr" || t.contains("mrn")
    };
    let record_id = idents
        .iter()
        .find(is_mrn)
        .and_then(|i| s(i, &["value"]))
        .or_else(|| idents.first().and_then(|i| s(i, &["value"])))
        .or_else(|| s(patient, &["id"]));
    if let Some(id) = s(patient, &["id"]) {
        known.push(Category::OtherId, id);
    }
    for ident in patient.get("identifier").and_then(Value::as_array).into_iter().flatten() {
        if let Some(val) = s(ident, &["value"]) {
            let code = concept(ident.get("type")).unwrap_or_default().to_lowercase();
            let cat = if code.contains("medical record") || code == "mr" || code.contains("mrn") {
                Category::Mrn
            } else if code.contains("social") || code == "ss" {
                Category::Ssn
            } else if code.contains("driver") || code == "dl" {
                Category::License
            } else if code.contains("member") || code.contains("plan") || code.contains("insur") {
                Category::HealthPlan
            } else {
                Category::Mrn
            };
            known.push(cat, val);
        }
    }
    for n in patient.get("name").and_then(Value::as_array).into_iter().flatten() {
        let mut full = Vec::new();
        for g in n.get("given").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            full.push(g.to_owned());
        }
        if let Some(f) = s(n, &["family"]) {
            full.push(f);
        }
        if !full.is_empty() {
            known.push(Category::Name, full.join(" "));
        }
        if let Some(t) = s(n, &["text"]) {
            known.push(Category::Name, t);
        }
    }
    for t in patient.get("telecom").and_then(Value::as_array).into_iter().flatten() {
        let cat = match s(t, &["system"]).as_deref() {
            Some("fax") => Category::Fax,
            Some("email") => Category::Email,
            Some("url") => Category::Url,
            _ => Category::Phone,
        };
        if let Some(val) = s(t, &["value"]) {
            known.push(cat, val);
        }
    }
    for a in patient.get("address").and_then(Value::as_array).into_iter().flatten() {
        for l in a.get("line").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            known.push(Category::Address, l);
        }
        if let Some(c) = s(a, &["city"]) {
            known.push(Category::Location, c);
        }
        if let Some(d) = s(a, &["district"]) {
            known.push(Category::Location, d);
        }
        if let Some(z) = s(a, &["postalCode"]) {
            known.push(Category::Zip, z);
        }
    }
    let mut contacts = Vec::new();
    for c in patient.get("contact").and_then(Value::as_array).into_iter().flatten() {
        if let Some(n) = c.get("name") {
            let mut full: Vec<String> = n.get("given").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
            if let Some(f) = s(n, &["family"]) {
                full.push(f);
            }
            let text = s(n, &["text"]);
            if let Some(t) = &text {
                known.push(Category::Name, t.clone());
            }
            let full = full.join(" ");
            known.push(Category::Name, full.clone());
            // The parts when the record gives them, else the text ("Family, Given").
            let name = if full.trim().is_empty() { text.unwrap_or_default() } else { full };
            if !name.trim().is_empty() {
                contacts.push(name.trim().to_owned());
            }
        }
        for t in c.get("telecom").and_then(Value::as_array).into_iter().flatten() {
            if let Some(val) = s(t, &["value"]) {
                known.push(Category::Phone, val);
            }
        }
    }

    let mut sections = Vec::new();
    for r in &resources {
        let kind = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
        let text = match kind {
            // The Patient section keeps what is clinically useful; the identifiers are in `known`
            // and the birth date is shifted like every date.
            "Patient" => line(&[("Gender", s(r, &["gender"])), ("Born", s(r, &["birthDate"])), ("Deceased", s(r, &["deceasedDateTime"]))]),
            "Encounter" => line(&[
                ("Class", s(r, &["class", "display"]).or_else(|| s(r, &["class", "code"]))),
                ("Type", concept(r.get("type").and_then(|t| t.get(0)))),
                ("Status", s(r, &["status"])),
                ("Start", s(r, &["period", "start"])),
                ("End", s(r, &["period", "end"])),
                ("Reason", concept(r.get("reasonCode").and_then(|t| t.get(0)))),
            ]),
            "Condition" => line(&[
                ("Condition", concept(r.get("code"))),
                ("Clinical status", concept(r.get("clinicalStatus"))),
                ("Onset", s(r, &["onsetDateTime"])),
                ("Recorded", s(r, &["recordedDate"])),
                ("Note", s(r, &["note", "text"])),
            ]),
            "MedicationStatement" => line(&[
                ("Medication", concept(r.get("medicationCodeableConcept"))),
                ("Status", s(r, &["status"])),
                ("Dosage", s(r, &["dosage", "text"])),
                ("Since", s(r, &["effectivePeriod", "start"]).or_else(|| s(r, &["effectiveDateTime"]))),
                ("Until", s(r, &["effectivePeriod", "end"])),
                ("Reason", concept(r.get("reasonCode").and_then(|t| t.get(0)))),
            ]),
            "Observation" => {
                let value = r
                    .get("valueQuantity")
                    .map(|q| format!("{} {}", s(q, &["value"]).unwrap_or_default(), s(q, &["unit"]).unwrap_or_default()).trim().to_owned())
                    .or_else(|| s(r, &["valueString"]))
                    .or_else(|| concept(r.get("valueCodeableConcept")));
                line(&[
                    ("Observation", concept(r.get("code"))),
                    ("Value", value),
                    ("Interpretation", concept(r.get("interpretation").and_then(|t| t.get(0)))),
                    ("Date", s(r, &["effectiveDateTime"])),
                    ("Note", s(r, &["note", "text"])),
                ])
            }
            "DocumentReference" => {
                let body = line(&[("Document", concept(r.get("type")).or_else(|| s(r, &["description"]))), ("Date", s(r, &["date"]))]);
                for c in r.get("content").and_then(Value::as_array).into_iter().flatten() {
                    let att = c.get("attachment");
                    let ct = att.and_then(|a| s(a, &["contentType"])).unwrap_or_default();
                    let Some(data) = att.and_then(|a| s(a, &["data"])) else { continue };
                    if !(ct.starts_with("text/") || ct.is_empty()) {
                        continue;
                    }
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(data.as_bytes())
                        .map_err(|e| IngestError::NotFhir { name: name.to_owned(), detail: format!("DocumentReference attachment is not base64: {e}") })?;
                    let t = String::from_utf8(decoded).map_err(|_| IngestError::NotUtf8(name.to_owned()))?;
                    // The inline note keeps its own sections.
                    for sec in sections_of_text(&t) {
                        sections.push(Section { heading: format!("Document: {}", sec.heading), text: sec.text, pack: true });
                    }
                }
                body
            }
            _ => continue, // other resource types carry nothing this index uses yet
        };
        if !text.is_empty() {
            sections.push(Section { heading: kind.to_owned(), text, pack: false });
        }
    }
    let name = patient.get("name").and_then(Value::as_array).and_then(|names| names.first()).map(|n| {
        let mut parts: Vec<String> = n.get("given").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
        parts.extend(s(n, &["family"]));
        if parts.is_empty() { s(n, &["text"]).unwrap_or_default() } else { parts.join(" ") }
    });
    let patient_label = match (name.filter(|n| !n.trim().is_empty()), s(patient, &["birthDate"])) {
        (Some(n), Some(born)) => Some(format!("{n}, born {born}")),
        (Some(n), None) => Some(n),
        (None, _) => None,
    };
    Ok(Parsed { sections, known, patient_record_id: record_id, patient_label, contacts })
}

/// Parse any supported file.
pub fn parse(name: &str, bytes: &[u8]) -> Result<(Kind, Parsed), IngestError> {
    let kind = Kind::of(name, bytes).ok_or_else(|| IngestError::UnsupportedType(name.to_owned()))?;
    let parsed = match kind {
        Kind::Fhir => parse_fhir(name, bytes)?,
        Kind::Pdf => Parsed { sections: sections_of_text(&pdf_text(name, bytes)?), known: KnownIdentifiers::default(), patient_record_id: None, patient_label: None, contacts: Vec::new() },
        Kind::Text | Kind::Markdown => {
            let text = std::str::from_utf8(bytes).map_err(|_| IngestError::NotUtf8(name.to_owned()))?;
            Parsed { sections: sections_of_text(text), known: KnownIdentifiers::default(), patient_record_id: None, patient_label: None, contacts: Vec::new() }
        }
    };
    if parsed.sections.iter().all(|s| s.text.trim().is_empty()) {
        return Err(IngestError::Empty(name.to_owned()));
    }
    Ok((kind, parsed))
}

/// How chunks are cut.
#[derive(Debug, Clone, Copy)]
pub struct ChunkConfig {
    /// Words per chunk at most. MiniLM reads 256 word pieces; 160 words stay under that.
    pub max_words: usize,
    /// Words repeated from the end of one chunk at the start of the next, within a section.
    pub overlap_words: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self { max_words: 160, overlap_words: 30 }
    }
}

/// Cut sections into chunks. A section longer than `max_words` is cut into overlapping
/// windows of its own; short packable sections that follow each other share a chunk up to
/// `max_words` (each keeps its heading inside the text); a chunk never holds part of a section
/// and part of another. Returns (section label, chunk text).
pub fn chunk_sections(sections: &[Section], cfg: ChunkConfig) -> Vec<(String, String)> {
    let step = cfg.max_words.saturating_sub(cfg.overlap_words).max(1);
    let mut out = Vec::new();
    // The chunk being packed: labels, text, words.
    let mut pack: Option<(Vec<String>, String, usize)> = None;
    let flush = |pack: &mut Option<(Vec<String>, String, usize)>, out: &mut Vec<(String, String)>| {
        if let Some((labels, text, _)) = pack.take() {
            out.push((labels.join(" / "), text));
        }
    };
    for sec in sections {
        let words: Vec<&str> = sec.text.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let piece = format!("{}: {}", sec.heading, words.join(" "));
        if sec.pack && words.len() < cfg.max_words {
            match &mut pack {
                Some((labels, text, n)) if *n + words.len() <= cfg.max_words => {
                    labels.push(sec.heading.clone());
                    text.push('\n');
                    text.push_str(&piece);
                    *n += words.len();
                }
                _ => {
                    flush(&mut pack, &mut out);
                    pack = Some((vec![sec.heading.clone()], piece, words.len()));
                }
            }
            continue;
        }
        flush(&mut pack, &mut out);
        let mut start = 0;
        loop {
            let end = (start + cfg.max_words).min(words.len());
            out.push((sec.heading.clone(), format!("{}: {}", sec.heading, words[start..end].join(" "))));
            if end == words.len() {
                break;
            }
            start += step;
        }
    }
    flush(&mut pack, &mut out);
    out
}

/// How many identifiers of each category de-identification replaced in one document (or a
/// batch): counts only, never the values, so the uploader and the compliance report can show
/// what was taken out.
pub type ReplacedCounts = BTreeMap<Category, usize>;

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ingested { document_id: i64, owner: i64, chunks: usize, replaced: ReplacedCounts },
    /// The same bytes were already indexed for this owner.
    Unchanged { document_id: i64, owner: i64 },
}

/// Ingest one document: parse, de-identify with the owner's pseudonyms, chunk, embed, index.
pub async fn ingest_bytes(
    conn: &mut Connection,
    embedder: &dyn Embedder,
    name: &str,
    bytes: &[u8],
    owner: &Owner,
    cfg: ChunkConfig,
) -> Result<Outcome, IngestError> {
    let ix = |source| IngestError::Index { name: name.to_owned(), source };
    index::check_model(conn, embedder.model()).map_err(ix)?;
    let (kind, parsed) = parse(name, bytes)?;
    let (owner_id, known) = match (owner, &parsed.patient_record_id) {
        (Owner::Indexed(id), record) => {
            if *id != LIBRARY && !index::patient_exists(conn, *id).map_err(ix)? {
                return Err(IngestError::UnknownOwner { name: name.to_owned(), owner: *id });
            }
            if let Some(record) = record.as_ref().filter(|_| kind == Kind::Fhir)
                && index::find_patient(conn, record).map_err(ix)? != Some(*id)
            {
                return Err(IngestError::OtherPatient(name.to_owned()));
            }
            (*id, parsed.known.clone())
        }
        (_, Some(record)) if kind == Kind::Fhir => (index::patient_owner(conn, record).map_err(ix)?.0, parsed.known.clone()),
        (Owner::Patient { record_id, known }, _) => {
            let mut k = known.clone();
            k.extend(&parsed.known);
            // The record id itself is an identifier wherever it appears in the text.
            k.push(Category::Mrn, record_id.clone());
            (index::patient_owner(conn, record_id).map_err(ix)?.0, k)
        }
        (Owner::Library, _) => (LIBRARY, parsed.known.clone()),
        (Owner::FromDocument, _) => return Err(IngestError::NoPatient(name.to_owned())),
    };
    let content_hash = index::salted_hash(conn, "document", bytes).map_err(ix)?;
    if let Some(document_id) = index::find_document(conn, owner_id, &content_hash).map_err(ix)? {
        return Ok(Outcome::Unchanged { document_id, owner: owner_id });
    }
    // Another document for this owner (an upload at the same moment, an import) can store
    // pseudonyms while this one is embedded: the numbers given here could then stand for its
    // identifiers. The document is stored only if the owner's pseudonyms are still the ones it
    // was de-identified with; otherwise it is de-identified and embedded again.
    for _ in 0..STORE_ATTEMPTS {
        let (mut scope, loaded) = index::load_pseudonyms_counted(conn, owner_id).map_err(ix)?;
        let prepared = deidentify_and_embed(embedder, name, &parsed, known.clone(), owner_id, &mut scope, cfg).await?;
        let document = index::NewDocument {
            owner: owner_id,
            content_hash: &content_hash,
            kind: kind.as_str(),
            title: &prepared.title,
            chunks: &prepared.chunks,
            label: prepared.label.as_deref(),
            contacts: &prepared.contacts,
        };
        match index::store_document(conn, &document, &mut scope, loaded).map_err(ix)? {
            Stored::Inserted(document_id) => {
                return Ok(Outcome::Ingested { document_id, owner: owner_id, chunks: prepared.chunks.len(), replaced: prepared.replaced });
            }
            // The same file uploaded twice at once: the other one got in first. It is one
            // document, as if this upload had come after it.
            Stored::AlreadyThere(document_id) => return Ok(Outcome::Unchanged { document_id, owner: owner_id }),
            Stored::PseudonymsChanged => {}
        }
    }
    Err(IngestError::Busy(name.to_owned()))
}

/// How many times a document is de-identified and embedded again when other documents for
/// its owner keep storing pseudonyms in the meantime.
const STORE_ATTEMPTS: usize = 5;

/// A document de-identified and embedded, ready for [`index::store_document`].
struct Prepared {
    title: String,
    /// The patient's label from the document (FHIR), de-identified.
    label: Option<String>,
    /// The contacts' names the document gives, de-identified (those that are pseudonyms only).
    contacts: Vec<String>,
    chunks: Vec<NewChunk>,
    replaced: ReplacedCounts,
}

/// De-identify a parsed document with the owner's pseudonyms (`scope`, which gains the new
/// ones), cut it into chunks and embed them.
async fn deidentify_and_embed(
    embedder: &dyn Embedder,
    name: &str,
    parsed: &Parsed,
    mut known: KnownIdentifiers,
    owner_id: i64,
    scope: &mut deid::Pseudonyms,
    cfg: ChunkConfig,
) -> Result<Prepared, IngestError> {
    // Every identifier a patient's earlier documents revealed is known for this one too. The
    // library is not one person: its documents are de-identified each on its own, so a word
    // taken as a name in one guideline never changes another (the library scope only numbers
    // the pseudonyms).
    if owner_id != LIBRARY {
        for (category, original) in scope_known(scope) {
            known.push(category, original);
        }
    }
    // One pass over the whole document: names found in one section are removed in all of them,
    // and the known-identifier patterns are built once. Sections are joined with the ASCII
    // record separator, which no rule matches, and split back after.
    const RS: &str = "\n\u{1e}\n";
    let joined = parsed.sections.iter().map(|s| format!("{}{RS}{}", s.heading, s.text)).collect::<Vec<_>>().join(RS);
    let deidentified = deid::deidentify(&joined, &known, scope);
    let mut replaced: ReplacedCounts = deidentified.counts.into_iter().collect();
    let clean = deidentified.text;
    let parts: Vec<&str> = clean.split(RS).collect();
    if parts.len() != parsed.sections.len() * 2 {
        // A rule matched across a separator: never expected; refuse rather than misfile text.
        return Err(IngestError::DeidStructure(name.to_owned()));
    }
    let sections: Vec<Section> = parsed
        .sections
        .iter()
        .zip(parts.chunks(2))
        .map(|(sec, p)| Section { heading: p[0].to_owned(), text: p[1].to_owned(), pack: sec.pack })
        .collect();
    // Structured identifiers get their pseudonyms even when the text never mentions them, so
    // an answer that names the patient can be re-identified.
    for (category, value) in &known.items {
        let _ = deid::deidentify(value, &KnownIdentifiers { items: vec![(*category, value.clone())] }, scope);
    }
    // File names are labels: read as words ("castellanos-visit.txt" -> "castellanos visit txt")
    // so the name rules see the parts.
    let label: String = name.chars().map(|c| if matches!(c, '-' | '_' | '.') { ' ' } else { c }).collect();
    let title = deid::deidentify(&label, &known, scope);
    for (category, n) in title.counts {
        *replaced.entry(category).or_default() += n;
    }
    let title = title.text;
    let label = match (&parsed.patient_label, owner_id != LIBRARY) {
        (Some(label), true) => Some(deid::deidentify(label, &known, scope).text),
        _ => None,
    };
    // A contact's name is kept only when de-identification left nothing of it but
    // pseudonyms, so that no name is ever stored outside the pseudonym map.
    let contacts = if owner_id == LIBRARY {
        Vec::new()
    } else {
        parsed.contacts.iter().map(|c| deid::deidentify(c, &known, scope).text).filter(|c| only_pseudonyms(c)).collect()
    };
    let pieces = chunk_sections(&sections, cfg);
    if pieces.is_empty() {
        return Err(IngestError::Empty(name.to_owned()));
    }
    let texts: Vec<String> = pieces.iter().map(|(_, t)| t.clone()).collect();
    let vectors = embedder.embed(&texts).await.map_err(|source| IngestError::Embed { name: name.to_owned(), source })?;
    let chunks: Vec<NewChunk> =
        pieces.into_iter().zip(vectors).map(|((section, text), embedding)| NewChunk { section, text, embedding }).collect();
    Ok(Prepared { title, label, contacts, chunks, replaced })
}

/// Whether a de-identified name holds pseudonyms and nothing else but spaces and punctuation
/// (`[NAME-4] [NAME-5]`, `[NAME-5], [NAME-4]`).
fn only_pseudonyms(text: &str) -> bool {
    let mut rest = String::new();
    let mut tags = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '[' {
            let tag: String = chars.by_ref().take_while(|&c| c != ']').collect();
            let ok = tag.strip_prefix("NAME-").is_some_and(|n| !n.is_empty() && n.chars().all(|d| d.is_ascii_digit()));
            if !ok {
                return false;
            }
            tags += 1;
        } else {
            rest.push(c);
        }
    }
    tags > 0 && !rest.chars().any(char::is_alphanumeric)
}

/// The originals of a scope worth matching verbatim in later documents (not dates: those are
/// found by rule and shifted; not one- or two-letter fragments).
fn scope_known(scope: &deid::Pseudonyms) -> Vec<(Category, String)> {
    let mut out = Vec::new();
    for c in Category::ALL {
        if c == Category::Date || c == Category::Age {
            continue;
        }
        let mut i = 1;
        while let Some(o) = scope.original(c, i) {
            if o.chars().filter(|ch| ch.is_alphanumeric()).count() >= 3 {
                out.push((c, o.to_owned()));
            }
            i += 1;
        }
    }
    out
}

/// Ingest a file from disk.
pub async fn ingest_file(conn: &mut Connection, embedder: &dyn Embedder, path: &Path, owner: &Owner, cfg: ChunkConfig) -> Result<Outcome, IngestError> {
    let bytes = std::fs::read(path).map_err(|source| IngestError::Read { path: path.to_owned(), source })?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    ingest_bytes(conn, embedder, &name, &bytes, owner, cfg).await
}

/// The result of a batch: what went in, what was already there, what failed and why.
#[derive(Debug, Default)]
pub struct Report {
    pub ingested: usize,
    pub unchanged: usize,
    pub chunks: usize,
    /// Identifiers replaced across the batch, by category (counts only).
    pub replaced: ReplacedCounts,
    pub failed: Vec<(PathBuf, IngestError)>,
}

/// Ingest many files; a bad one is reported and skipped. `progress(done, total)` is called
/// after each file, for long imports.
pub async fn ingest_many(
    conn: &mut Connection,
    embedder: &dyn Embedder,
    files: &[(PathBuf, Owner)],
    cfg: ChunkConfig,
    mut progress: impl FnMut(usize, usize),
) -> Report {
    let mut report = Report::default();
    for (i, (path, owner)) in files.iter().enumerate() {
        match ingest_file(conn, embedder, path, owner, cfg).await {
            Ok(Outcome::Ingested { chunks, replaced, .. }) => {
                report.ingested += 1;
                report.chunks += chunks;
                for (category, n) in replaced {
                    *report.replaced.entry(category).or_default() += n;
                }
            }
            Ok(Outcome::Unchanged { .. }) => report.unchanged += 1,
            Err(e) => {
                // The error names the file and the problem; it never quotes the file's text.
                tracing::warn!(error = %e, "document skipped");
                report.failed.push((path.clone(), e));
            }
        }
        progress(i + 1, files.len());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fhir_patients_contacts_are_read_by_name_and_are_known_identifiers() {
        let bundle = serde_json::json!({ "resourceType": "Bundle", "entry": [{ "resource": {
            "resourceType": "Patient", "id": "p1", "gender": "female",
            "name": [{ "given": ["Lena"], "family": "Quist" }],
            "contact": [
                { "relationship": [{ "coding": [{ "code": "N" }] }], "name": { "given": ["Ann"], "family": "Quist" }, "telecom": [{ "value": "555-0100" }] },
                { "relationship": [{ "coding": [{ "code": "SPS" }] }], "name": { "text": "García-López, Ana" } },
                { "relationship": [{ "coding": [{ "code": "C" }] }], "telecom": [{ "value": "555-0101" }] }
            ] } }] });
        let p = parse_fhir("b.json", bundle.to_string().as_bytes()).expect("parsed");
        assert_eq!(p.contacts, vec!["Ann Quist".to_string(), "García-López, Ana".to_string()], "a contact without a name names no one");
        for name in ["Ann Quist", "García-López, Ana"] {
            assert!(p.known.items.iter().any(|(c, v)| *c == Category::Name && v == name), "{name} is a known identifier");
        }
    }

    #[test]
    fn a_stored_contact_is_pseudonyms_only() {
        assert!(only_pseudonyms("[NAME-4] [NAME-5]"));
        assert!(only_pseudonyms("[NAME-5], [NAME-4]"));
        assert!(!only_pseudonyms("[NAME-4] Quist"), "a part left in clear");
        assert!(!only_pseudonyms("[PHONE-1]"));
        assert!(!only_pseudonyms("[NAME-]"));
        assert!(!only_pseudonyms(", "));
    }

    #[test]
    fn soap_and_markdown_sections() {
        let s = sections_of_text("Visit note\nS: cough for 3 days\nO: T 38.1\n\n## Assessment\nbronchitis\nPlan:\nfluids");
        let heads: Vec<&str> = s.iter().map(|x| x.heading.as_str()).collect();
        assert_eq!(heads, vec!["Note", "Subjective", "Objective", "Assessment", "Plan"]);
        assert_eq!(s[1].text, "cough for 3 days");
    }

    #[test]
    fn chunks_overlap_within_a_section_and_never_cross_one() {
        let long = (0..400).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let sec = |h: &str, t: &str, pack| Section { heading: h.into(), text: t.into(), pack };
        let secs = vec![
            sec("Assessment", "diabetes poorly controlled", true),
            sec("Plan", "start empagliflozin", true),
            sec("Plan", &long, true),
            sec("Exam", "normal", true),
            sec("Observation", "A1c 9.1 %", false),
            sec("Observation", "BP 140/90", false),
        ];
        let c = chunk_sections(&secs, ChunkConfig { max_words: 160, overlap_words: 30 });
        assert_eq!(c[0], ("Assessment / Plan".into(), "Assessment: diabetes poorly controlled\nPlan: start empagliflozin".into()));
        assert!(c[1].1.starts_with("Plan: w0 ") && c[1].1.ends_with(" w159"));
        assert!(c[2].1.starts_with("Plan: w130 "), "{}", &c[2].1[..20]);
        assert_eq!(c.len(), 7, "{c:?}");
        assert_eq!(c[4], ("Exam".into(), "Exam: normal".into()));
        assert_eq!(c[5].1, "Observation: A1c 9.1 %");
    }

    #[test]
    fn bad_inputs_get_clear_errors() {
        assert!(matches!(parse("x.exe", b"MZ"), Err(IngestError::UnsupportedType(_))));
        assert!(matches!(parse("x.pdf", b"%PDF-1.4 garbage"), Err(IngestError::Pdf { .. })));
        assert!(matches!(parse("x.json", b"{"), Err(IngestError::Json { .. })));
        assert!(matches!(parse("x.json", br#"{"resourceType":"Patient"}"#), Err(IngestError::NotFhir { .. })));
        assert!(matches!(parse("x.json", br#"{"resourceType":"Bundle","entry":[]}"#), Err(IngestError::FhirNoPatient(_))));
        assert!(matches!(parse("x.txt", &[0xff, 0xfe, 0x00]), Err(IngestError::NotUtf8(_))));
        assert!(matches!(parse("x.txt", b"  \n "), Err(IngestError::Empty(_))));
    }
}
