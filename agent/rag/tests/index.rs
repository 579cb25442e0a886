//! The index against a real SQLCipher file with sqlite-vec and FTS5, fed by the synthetic
//! corpus. These tests use the hashing embedder (no model): they test ingestion, storage,
//! filtering and de-identification of what is stored, not retrieval quality (the `model_`
//! tests do that with the real model through the engine).

use std::collections::BTreeSet;
use std::path::PathBuf;

use jiff::civil::Date;
use rusqlite::{Connection, OptionalExtension};
use wardbox_rag::answer::{self, Generator, GenerateFuture, Prompt, RetrievalConfig, SafetyPolicy, Task};
use wardbox_rag::embed::HashEmbedder;
use wardbox_rag::index::{self, Access, IndexError, LIBRARY, Scope};
use wardbox_rag::ingest::{self, ChunkConfig, IngestError, Outcome, Owner};
use wardbox_rag::synth::{Corpus, corpus, make_pdf};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A fresh encrypted store with the corpus ingested; returns the connection and the file path.
fn ingested(dir: &std::path::Path, key: &[u8; 32]) -> (Connection, PathBuf, Corpus) {
    let path = dir.join("wardbox.db");
    let mut conn = index::open_encrypted(&path, key).expect("open");
    let c = corpus();
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    for d in &c.docs {
        let out = rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &d.name, &d.bytes, &d.owner(), ChunkConfig::default()));
        assert!(matches!(out, Ok(Outcome::Ingested { .. })), "{}: {out:?}", d.name);
    }
    (conn, path, c)
}

/// The calendar dates among the corpus's identifiers, whichever way they are written there.
fn corpus_dates(c: &Corpus) -> BTreeSet<Date> {
    let dates: BTreeSet<Date> = c
        .identifiers
        .iter()
        .filter_map(|id| id.parse::<Date>().ok().or_else(|| ["%m/%d/%Y", "%B %d, %Y"].into_iter().find_map(|f| Date::strptime(f, id).ok())))
        .collect();
    // Every way of writing a date that the corpus uses is understood here.
    for written in ["2024-03-14", "03/14/2024", "March 2, 2024"] {
        assert!(c.identifiers.iter().any(|id| id == written), "{written} is no longer in the corpus");
    }
    for date in [date(2024, 3, 14), date(2024, 3, 2)] {
        assert!(dates.contains(&date), "{date} not read from the corpus: {dates:?}");
    }
    dates
}

/// Every corpus date moved by every date shift the store holds (each patient's and the
/// library's), written as the de-identifier writes a shifted full date.
fn shifted_corpus_dates(conn: &Connection, c: &Corpus) -> BTreeSet<String> {
    let mut shifts: Vec<i32> =
        conn.prepare("SELECT shift_days FROM rag_patients").expect("p").query_map([], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("shifts");
    let library: Option<String> = conn.query_row("SELECT value FROM rag_meta WHERE key = 'library_shift'", [], |r| r.get(0)).optional().expect("library shift");
    shifts.extend(library.map(|s| s.parse::<i32>().expect("library shift is a number")));
    let dates = corpus_dates(c);
    shifts.iter().flat_map(|&s| dates.iter().map(move |d| d.checked_add(jiff::Span::new().days(s)).expect("shifted date").to_string())).collect()
}

/// A value made by the store itself from random bytes or the clock, never from a document: a
/// salted SHA-256 digest (64 lowercase hex digits) or a timestamp. Its digits can spell a ZIP
/// code or a record number by chance ("...c0970242168..." holds 97024) without holding one.
fn made_by_the_store(value: &str) -> bool {
    let digest = value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    digest || value.parse::<jiff::Timestamp>().is_ok()
}

/// Every place in the decrypted index tables (every table and shadow table except the
/// pseudonym map) where a corpus identifier appears, as "identifier in table.column: text",
/// and how many values were read. A full date the de-identifier wrote is the shifted form of
/// a real one, and may by chance equal another real date of the corpus (Lindqvist's discharge,
/// 01/11/2024, moved by 63 days is 2024-03-14, the day of Mrs. Castellanos' visit): such a
/// date is found only when no shift in the store explains it.
fn identifiers_in_tables(conn: &Connection, c: &Corpus) -> (Vec<String>, usize) {
    let shifted = shifted_corpus_dates(conn, c);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'rag_%' AND name != 'rag_pseudonyms'")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    assert!(tables.contains(&"rag_chunks".to_owned()) && tables.iter().any(|t| t.starts_with("rag_fts")) && tables.iter().any(|t| t.starts_with("rag_vec")), "{tables:?}");
    let mut found = Vec::new();
    let mut scanned = 0usize;
    for t in &tables {
        let cols: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .expect("cols")
            .query_map([], |r| r.get(0))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("c");
        for col in cols {
            let mut stmt = conn.prepare(&format!("SELECT CAST(\"{col}\" AS BLOB) FROM \"{t}\"")).expect("select");
            let values: Vec<Option<Vec<u8>>> = stmt.query_map([], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("v");
            for v in values.into_iter().flatten() {
                scanned += 1;
                let raw = String::from_utf8_lossy(&v);
                if made_by_the_store(&raw) {
                    continue;
                }
                let text = raw.to_lowercase();
                for id in &c.identifiers {
                    let id = id.to_lowercase();
                    if text.contains(&id) && !shifted.contains(&id) {
                        found.push(format!("{id:?} in {t}.{col}: {text:.200}"));
                    }
                }
            }
        }
    }
    (found, scanned)
}

fn date(y: i16, m: i8, d: i8) -> Date {
    Date::new(y, m, d).expect("date")
}

#[test]
fn the_database_file_and_its_index_tables_hold_no_identifier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = [7u8; 32];
    let (conn, path, c) = ingested(dir.path(), &key);
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").expect("checkpoint");
    drop(conn);
    // The file: encrypted, so neither the SQLite header nor any identifier is in it.
    let bytes = std::fs::read(&path).expect("read db");
    assert!(!bytes.starts_with(b"SQLite format 3"), "the store is not encrypted");
    let lower = String::from_utf8_lossy(&bytes).to_lowercase();
    for id in &c.identifiers {
        assert!(!lower.contains(&id.to_lowercase()), "{id:?} appears in the database file");
    }
    // The decrypted tables.
    let conn = index::open_encrypted(&path, &key).expect("reopen");
    let (found, scanned) = identifiers_in_tables(&conn, &c);
    assert!(found.is_empty(), "identifiers in the index tables: {found:#?}");
    assert!(scanned > 100, "only {scanned} values scanned");
    // And the pseudonym map is where they are, so an allowed user's answer can be re-identified.
    let originals: Vec<String> =
        conn.prepare("SELECT original FROM rag_pseudonyms").expect("p").query_map([], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("o");
    for must in ["Castellanos", "00451234", "(503) 555-0142"] {
        assert!(originals.iter().any(|o| o == must), "{must} not in the pseudonym map: {originals:?}");
    }
}

/// The two chance matches that once failed the test above, made on purpose: Mrs. Castellanos'
/// shift set to 41 days moves her nutrition consult (2024-02-02) onto the day of her office
/// visit (2024-03-14), and a document's digest is one a store really made whose hex holds the
/// ZIP code 97024. Neither is an identifier; an unshifted birth date and a ZIP code in a
/// chunk's text still are.
#[test]
fn a_shifted_date_on_a_real_date_or_a_digest_holding_a_zips_digits_is_no_identifier_but_a_real_one_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = index::open_encrypted(&dir.path().join("wardbox.db"), &[4u8; 32]).expect("open");
    let (castellanos, made) = index::patient_owner(&conn, "00451234").expect("patient");
    assert!(made);
    conn.execute("UPDATE rag_patients SET shift_days = 41 WHERE id = ?1", [castellanos]).expect("set the shift");
    let c = corpus();
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    for d in &c.docs {
        let out = rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &d.name, &d.bytes, &d.owner(), ChunkConfig::default()));
        assert!(matches!(out, Ok(Outcome::Ingested { .. })), "{}: {out:?}", d.name);
    }
    assert_eq!(index::find_patient(&conn, "00451234").expect("find"), Some(castellanos));
    let on_visit_day: i64 = conn
        .query_row("SELECT count(*) FROM rag_chunks WHERE owner = ?1 AND text LIKE '%2024-03-14%'", [castellanos], |r| r.get(0))
        .expect("count");
    assert!(on_visit_day > 0, "the consult date was not moved onto the visit day");
    conn.execute("UPDATE rag_documents SET content_hash = 'afe131c09702421687a1f11d2edacd35d7d65f17c3bdb269d1391fc38cf9ece4' WHERE id = (SELECT min(id) FROM rag_documents)", [])
        .expect("digest");
    let (found, _) = identifiers_in_tables(&conn, &c);
    assert!(found.is_empty(), "{found:#?}");

    conn.execute("UPDATE rag_chunks SET text = text || ' Born 1948-07-19, OR 97024.' WHERE id = (SELECT min(id) FROM rag_chunks WHERE owner = ?1)", [castellanos])
        .expect("leak");
    let (found, _) = identifiers_in_tables(&conn, &c);
    for leaked in ["\"1948-07-19\" in rag_chunks.text", "\"97024\" in rag_chunks.text"] {
        assert!(found.iter().any(|f| f.starts_with(leaked)), "{leaked} not found: {found:#?}");
    }
}

#[test]
fn a_user_without_access_to_a_patient_never_retrieves_their_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (conn, _, c) = ingested(dir.path(), &[9u8; 32]);
    let a = index::find_patient(&conn, "00451234").expect("find").expect("patient A exists");
    let b = index::find_patient(&conn, "00982210").expect("find").expect("patient B exists");
    // The FHIR Bundle (keyed by its MRN identifier) and the notes filed by MRN are one patient.
    let owners: BTreeSet<i64> = conn.prepare("SELECT DISTINCT owner FROM rag_documents").expect("p").query_map([], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("o");
    assert_eq!(owners.len(), 4, "three patients and the library: {owners:?}");
    let only_b = Access::Patients(BTreeSet::from([b]));
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    let everywhere = Scope { patient: None, include_library: true };
    for f in &c.facts {
        let hits = rt.block_on(answer::retrieve(&conn, &emb, f.question, &everywhere, &only_b, RetrievalConfig { k: 50, max_distance: 2.0 })).expect("search");
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h.owner == b || h.owner == LIBRARY), "{:?}", hits.iter().map(|h| h.owner).collect::<Vec<_>>());
    }
    // Asking for patient A directly is refused, not answered with nothing.
    let err = rt.block_on(answer::retrieve(&conn, &emb, "diabetes", &Scope { patient: Some(a), include_library: false }, &only_b, RetrievalConfig::default()));
    assert!(matches!(err, Err(answer::AnswerError::Index(IndexError::AccessDenied(p))) if p == a), "{err:?}");
    // A citation link to one of A's chunks is refused too.
    let a_chunk: i64 = conn.query_row("SELECT id FROM rag_chunks WHERE owner = ?1 LIMIT 1", [a], |r| r.get(0)).expect("a chunk");
    assert!(matches!(index::chunk(&conn, a_chunk, &only_b), Err(IndexError::AccessDenied(_))));
    assert!(index::chunk(&conn, a_chunk, &Access::AllPatients).expect("ok").is_some());
    // The document view and the patient directory follow the same rule.
    let a_doc: i64 = conn.query_row("SELECT id FROM rag_documents WHERE owner = ?1 LIMIT 1", [a], |r| r.get(0)).expect("a doc");
    assert!(matches!(index::document(&conn, a_doc, &only_b), Err(IndexError::AccessDenied(_))));
    let view = index::document(&conn, a_doc, &Access::AllPatients).expect("view").expect("exists");
    assert!(!view.chunks.is_empty() && view.owner == a);
    let dir_b = index::directory(&conn, &only_b).expect("directory");
    assert_eq!(dir_b.len(), 1);
    assert!(dir_b[0].record_ids.contains(&"00982210".to_owned()) && dir_b[0].names.contains(&"Lindqvist".to_owned()), "{dir_b:?}");
    assert_eq!(index::directory(&conn, &Access::AllPatients).expect("all").len(), 3);
    // Grants in the table work the same way.
    index::grant(&conn, "nurse.kim", b).expect("grant");
    assert_eq!(Access::from_grants(&conn, "nurse.kim").expect("grants"), only_b);
    assert_eq!(Access::from_grants(&conn, "nobody").expect("grants"), Access::Patients(BTreeSet::new()));
}

#[test]
fn reingest_is_a_no_op_and_a_bad_file_is_skipped_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files_dir = dir.path().join("in");
    std::fs::create_dir(&files_dir).expect("mkdir");
    let c = corpus();
    let mut files = Vec::new();
    for d in &c.docs {
        let p = files_dir.join(&d.name);
        std::fs::write(&p, &d.bytes).expect("write");
        files.push((p, d.owner()));
    }
    let bad_pdf = files_dir.join("scan.pdf");
    std::fs::write(&bad_pdf, b"%PDF-1.7\n this is not a pdf").expect("write");
    let empty_pdf = files_dir.join("image-only.pdf");
    std::fs::write(&empty_pdf, make_pdf(&[vec![]])).expect("write");
    let bad_json = files_dir.join("broken.json");
    std::fs::write(&bad_json, br#"{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition"}}]}"#).expect("write");
    files.insert(2, (bad_pdf.clone(), Owner::Library));
    files.insert(4, (bad_json.clone(), Owner::FromDocument));
    files.push((empty_pdf.clone(), Owner::Library));
    files.push((files_dir.join("missing.txt"), Owner::Library));

    let mut conn = index::open_encrypted(&dir.path().join("w.db"), &[3u8; 32]).expect("open");
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    let mut seen = Vec::new();
    let first = rt.block_on(ingest::ingest_many(&mut conn, &emb, &files, ChunkConfig::default(), |done, total| seen.push((done, total))));
    assert_eq!(first.ingested, c.docs.len());
    assert_eq!(seen.last(), Some(&(files.len(), files.len())), "progress reaches the end");
    let failed: Vec<String> = first.failed.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(matches!(first.failed[0].1, IngestError::Pdf { .. }) && failed[0].contains("scan.pdf"), "{failed:?}");
    assert!(matches!(first.failed[1].1, IngestError::FhirNoPatient(_)) && failed[1].contains("whose record"), "{failed:?}");
    assert!(matches!(first.failed[2].1, IngestError::PdfNoText(_)) && failed[2].contains("OCR"), "{failed:?}");
    assert!(matches!(first.failed[3].1, IngestError::Read { .. }), "{failed:?}");
    let before = index::stats(&conn).expect("stats");
    assert_eq!(before.documents as usize, c.docs.len());
    assert_eq!(before.patients, 3);

    let second = rt.block_on(ingest::ingest_many(&mut conn, &emb, &files, ChunkConfig::default(), |_, _| {}));
    assert_eq!((second.ingested, second.unchanged, second.chunks), (0, c.docs.len(), 0));
    assert_eq!(index::stats(&conn).expect("stats"), before, "re-ingest changed the index");
}

#[test]
fn the_pdf_text_layer_and_fhir_resources_become_sectioned_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (conn, _, _) = ingested(dir.path(), &[5u8; 32]);
    let texts: Vec<(String, String, String)> = conn
        .prepare("SELECT d.kind, c.section, c.text FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id")
        .expect("p")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("rows");
    let pdf: Vec<&(String, String, String)> = texts.iter().filter(|t| t.0 == "pdf").collect();
    assert!(pdf.iter().any(|t| t.2.contains("hemiarthroplasty")), "{pdf:?}");
    assert!(pdf.iter().any(|t| t.2.contains("90+-year-old")), "age over 89 not generalised: {pdf:?}");
    // One chunk per FHIR resource; the inline note's sections packed together.
    let fhir_sections: BTreeSet<&str> = texts.iter().filter(|t| t.0 == "fhir").map(|t| t.1.as_str()).collect();
    for s in ["Patient", "Encounter", "Condition", "MedicationStatement", "Observation", "DocumentReference"] {
        assert!(fhir_sections.contains(s), "no {s} section: {fhir_sections:?}");
    }
    assert!(fhir_sections.iter().any(|s| s.contains("Document: Assessment / Document: Plan")), "{fhir_sections:?}");
    let a1c = texts.iter().filter(|t| t.0 == "fhir" && t.2.contains("Hemoglobin A1c")).collect::<Vec<_>>();
    assert_eq!(a1c.len(), 1, "{a1c:?}");
    assert!(a1c[0].2.starts_with("Observation: Observation: Hemoglobin A1c; Value: 9.1 %"), "{a1c:?}");
    // SOAP headings survive inside the note's chunk text.
    let soap = texts.iter().find(|t| t.0 == "text" && t.2.contains("polyuria")).expect("A's note");
    for h in ["Subjective:", "Objective:", "Assessment:", "Plan:"] {
        assert!(soap.2.contains(h), "{h} missing: {}", soap.2);
    }
    // Names became pseudonyms, consistently: the note's "Mrs. Castellanos" and the FHIR name
    // share the same pseudonym within one owner.
    let a_note: String = texts.iter().find(|t| t.0 == "text" && t.2.contains("polyuria")).map(|t| t.2.clone()).expect("A's note");
    assert!(a_note.contains("Mrs. [NAME-"), "{a_note}");
}

/// The LLM's stand-in for the plumbing test: it answers with the first source, cited. The
/// real model is exercised in the model_ tests.
struct QuoteFirstSource;

impl Generator for QuoteFirstSource {
    fn model(&self) -> &str {
        "quote-first-source"
    }
    fn generate<'a>(&'a self, prompt: &'a Prompt) -> GenerateFuture<'a> {
        Box::pin(async move {
            let first = prompt.user.lines().find(|l| l.starts_with("[1]")).unwrap_or("");
            Ok(format!("{} [1] [9]", first.trim_start_matches("[1]").trim()))
        })
    }
}

#[test]
fn answers_cite_resolvable_sources_reidentify_only_when_allowed_and_audit_without_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (conn, _, _) = ingested(dir.path(), &[1u8; 32]);
    let a = index::find_patient(&conn, "00451234").expect("f").expect("A by MRN");
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    let scope = Scope { patient: Some(a), include_library: false };
    let cfg = RetrievalConfig { k: 5, max_distance: 0.95 };
    let ans = rt
        .block_on(answer::answer(&conn, &emb, &QuoteFirstSource, Task::Question, "Who drives Mrs. Castellanos to visits?", &scope, &Access::AllPatients, &SafetyPolicy::default(), cfg, true))
        .expect("answer");
    assert!(!ans.not_found && !ans.sources.is_empty());
    assert_eq!(ans.cited.len(), 1);
    assert_eq!(ans.unresolved_citations, vec![9]);
    let linked = index::chunk(&conn, ans.cited[0].chunk_id, &Access::AllPatients).expect("resolve").expect("exists");
    assert_eq!(linked.text, ans.sources[0].text);
    assert!(ans.text.contains("[NAME-"), "{}", ans.text);
    let re = ans.text_reidentified.clone().expect("re-identified for an allowed user");
    assert!(!re.contains("[NAME-") && re.contains("Castellanos"), "{re}");
    let (q, r) = answer::audit_detail(Task::Question, "Who drives Mrs. Castellanos to visits?", &ans, Some(a));
    let audit = format!("{q}{r}");
    assert!(!audit.contains("Castellanos") && !audit.contains("drives"), "{audit}");
    // Without the right to re-identify, the pseudonyms stay.
    let ans2 = rt
        .block_on(answer::answer(&conn, &emb, &QuoteFirstSource, Task::Question, "Who drives her to visits?", &scope, &Access::AllPatients, &SafetyPolicy::default(), cfg, false))
        .expect("answer");
    assert!(ans2.text_reidentified.is_none());
    // Nothing relevant: the configured "not found" text, and the model is not asked.
    let strict = RetrievalConfig { k: 5, max_distance: 0.0 };
    let nf = rt
        .block_on(answer::answer(&conn, &emb, &QuoteFirstSource, Task::Question, "quantum chromodynamics lattice gauge", &scope, &Access::AllPatients, &SafetyPolicy::default(), strict, true))
        .expect("answer");
    assert!(nf.not_found && nf.text == "Not found in the record." && nf.sources.is_empty());
}

/// The store as released before the vectors were partitioned: the first migration only.
fn old_schema_store(path: &std::path::Path, key: &[u8; 32]) -> Connection {
    index::register_sqlite_vec();
    let conn = Connection::open(path).expect("open");
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key))).expect("key");
    conn.execute_batch(&format!("BEGIN; {} COMMIT;", index::MIGRATION_SQL)).expect("first migration");
    conn
}

/// What a search found, comparable across search methods: every hit's distance (rounded), and
/// the chunk ids of the hits that share a word with the question. Chunks at cosine distance 1
/// (orthogonal to the question: no shared word under the hashing embedder) tie, and ties may
/// come back in any order.
fn found(hits: &[index::Hit]) -> (Vec<i64>, Vec<i64>) {
    let d = |h: &index::Hit| h.distance.map_or(-1, |d| (d * 1e5).round() as i64);
    let mut distances: Vec<i64> = hits.iter().map(d).collect();
    distances.sort_unstable();
    (distances, hits.iter().filter(|h| d(h) != 100_000).map(|h| h.chunk_id).collect())
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).expect("count")
}

#[test]
fn a_store_from_before_the_partitioned_vectors_is_migrated_and_finds_the_same_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    let key = [9u8; 32];
    let c = corpus();
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    let questions = ["metformin dose", "warfarin after the fall", "chest pain on exertion", "allergy to penicillin", "hypertension guideline"];
    let scopes = [Scope { patient: None, include_library: true }, Scope { patient: None, include_library: false }];
    let mut before = Vec::new();
    let vectors;
    {
        let mut conn = old_schema_store(&path, &key);
        for d in &c.docs {
            rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &d.name, &d.bytes, &d.owner(), ChunkConfig::default())).expect("ingest");
        }
        let partitioned: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'rag_vec_by_owner'", [], |r| r.get(0)).expect("q");
        assert_eq!(partitioned, 0, "the old schema has no partitioned table");
        for q in questions {
            for s in &scopes {
                let hits = index::search(&conn, q, &emb.embed_one(q), s, &Access::AllPatients, 5).expect("search on the old schema");
                before.push(found(&hits));
            }
        }
        vectors = count(&conn, "rag_vec");
    }
    // Opening it applies the second migration: every stored vector moves to the partitioned table.
    let mut conn = index::open_encrypted(&path, &key).expect("reopen migrates");
    assert!(vectors > 20, "{vectors}");
    assert_eq!(count(&conn, "rag_vec_by_owner"), vectors, "every vector moved in the upgrade");
    let old: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE 'rag_vec\\_%' ESCAPE '\\' AND name NOT LIKE 'rag_vec_by_owner%'", [], |r| r.get(0)).expect("q");
    assert_eq!(old, 0, "the first migration's vector table is gone");
    let mut after = Vec::new();
    for q in questions {
        for s in &scopes {
            let hits = index::search(&conn, q, &emb.embed_one(q), s, &Access::AllPatients, 5).expect("search after the upgrade");
            assert!(s.include_library || hits.iter().all(|h| h.owner != LIBRARY), "library chunk outside the scope");
            after.push(found(&hits));
        }
    }
    assert_eq!(before, after, "the upgrade changed which chunks a search finds");
    // New chunks go to the partitioned table.
    let extra = c.docs.iter().find(|d| d.name.ends_with(".txt") || d.name.ends_with(".md")).expect("a text document");
    let mut bytes = extra.bytes.clone();
    bytes.extend_from_slice(b"\nAddendum: reviewed again.");
    rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &extra.name, &bytes, &extra.owner(), ChunkConfig::default())).expect("ingest after");
    assert!(count(&conn, "rag_vec_by_owner") > vectors);
    index::warm_cache(&conn).expect("warm the cache");
}

/// A FHIR Patient's contacts (next of kin) are kept per patient as pseudonyms only, and read
/// back re-identified for the alert rules; a later record adds its contacts to the patient's.
#[test]
fn a_records_contacts_are_stored_as_pseudonyms_and_read_back_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = index::open_encrypted(&dir.path().join("c.db"), &[3u8; 32]).expect("open");
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    let bundle = |contacts: serde_json::Value, gender: &str| {
        serde_json::json!({ "resourceType": "Bundle", "entry": [{ "resource": {
            "resourceType": "Patient", "id": "p1", "gender": gender,
            "identifier": [{ "type": { "text": "Medical record number" }, "value": "MRN-7731" }],
            "name": [{ "given": ["Lena"], "family": "Quist" }], "contact": contacts } }] })
        .to_string()
    };
    let first = bundle(
        serde_json::json!([
            { "relationship": [{ "coding": [{ "code": "N" }] }], "name": { "given": ["Ann"], "family": "Quist" } },
            { "relationship": [{ "coding": [{ "code": "SPS" }] }], "name": { "text": "García-López, Ana" } }
        ]),
        "female",
    );
    let out = rt.block_on(ingest::ingest_bytes(&mut conn, &emb, "p1.json", first.as_bytes(), &Owner::FromDocument, ChunkConfig::default()));
    let Ok(Outcome::Ingested { owner, .. }) = out else { panic!("{out:?}") };
    let stored: Vec<String> =
        conn.prepare("SELECT name FROM rag_contacts ORDER BY name").expect("p").query_map([], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("rows");
    assert_eq!(stored.len(), 2, "{stored:?}");
    for s in &stored {
        assert!(s.starts_with("[NAME-") && !s.contains("Quist") && !s.contains("Ana"), "a name in clear: {s}");
    }
    let mut read = index::contacts(&conn).expect("contacts");
    read.sort();
    assert_eq!(read, vec![(owner, "Ann Quist".to_string()), (owner, "García-López, Ana".to_string())]);
    // A later record of the same patient adds its contact; the ones before stay.
    let second = bundle(serde_json::json!([{ "name": { "given": ["Tom"], "family": "Berg" } }]), "unknown");
    rt.block_on(ingest::ingest_bytes(&mut conn, &emb, "p1b.json", second.as_bytes(), &Owner::FromDocument, ChunkConfig::default())).expect("ingest");
    let names: Vec<String> = index::contacts(&conn).expect("contacts").into_iter().map(|(_, n)| n).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"Tom Berg".to_string()), "{names:?}");
}
