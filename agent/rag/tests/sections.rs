//! Minimum necessary through real retrieval: a patient's note with medication, history and
//! results sections in an encrypted index; a task narrowed to medications and plan gets only
//! passages of those sections as sources, an unnarrowed one may get any.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wardbox_rag::answer::{self, GenerateFuture, Generator, Prompt, RetrievalConfig, SafetyPolicy, Task};
use wardbox_rag::deid::KnownIdentifiers;
use wardbox_rag::embed::HashEmbedder;
use wardbox_rag::index::{self, Access, Scope};
use wardbox_rag::ingest::{self, ChunkConfig, Owner};
use wardbox_rag::sections::{SectionClass, SectionFilter, classify};

/// Answers with nothing; the test looks at the sources.
struct Silent;

impl Generator for Silent {
    fn model(&self) -> &str {
        "silent"
    }
    fn generate<'a>(&'a self, _prompt: &'a Prompt) -> GenerateFuture<'a> {
        Box::pin(async { Ok(String::new()) })
    }
}

const NOTE: &str = "\
# Social history
Lives alone, smokes ten cigarettes a day, drinks on weekends, works nights at the depot.

# Family history
Mother had breast cancer at fifty; father died of a stroke.

# Medications
Metformin 500 mg twice daily; lisinopril 10 mg daily; atorvastatin 20 mg at night.

# Laboratory results
A1c 7.4 percent, LDL 128, potassium 4.1, creatinine 1.0.

# Plan
Continue metformin, increase lisinopril to 20 mg, recheck A1c in three months.
";

#[test]
fn a_narrowed_task_sees_only_its_sections() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = index::open_encrypted(&dir.path().join("w.db"), &[7u8; 32]).unwrap();
    let emb = HashEmbedder::new(index::DIMS);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let owner = Owner::Patient { record_id: "MRN-1".into(), known: KnownIdentifiers::default() };
    // Small chunks: one section each.
    let chunks = ChunkConfig { max_words: 12, ..ChunkConfig::default() };
    rt.block_on(ingest::ingest_bytes(&mut conn, &emb, "note.md", NOTE.as_bytes(), &owner, chunks)).unwrap();
    let patient = index::find_patient(&conn, "MRN-1").unwrap().unwrap();
    let scope = Scope { patient: Some(patient), include_library: false };
    let cfg = RetrievalConfig { k: 5, max_distance: 2.0 };
    let ask = |sections: SectionFilter| {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        rt.block_on(answer::answer_followup_streaming(
            &conn, &emb, &Silent, Task::MedicationList, "What does the patient take, and does she smoke or drink?", &[], sections, &scope,
            &Access::AllPatients, &SafetyPolicy::default(), cfg, tx,
        ))
        .unwrap()
    };
    let everything = ask(SectionFilter::ALL);
    let classes = |a: &answer::Answer| a.sources.iter().map(|s| classify(&s.section)).collect::<Vec<_>>();
    assert!(classes(&everything).contains(&SectionClass::History), "without a filter the history is reachable: {:?}", classes(&everything));
    let narrowed = ask(SectionFilter::only(&[SectionClass::Medications, SectionClass::Plan]));
    assert!(!narrowed.sources.is_empty());
    for s in &narrowed.sources {
        assert!(matches!(classify(&s.section), SectionClass::Medications | SectionClass::Plan | SectionClass::Other), "{}: {}", s.section, s.text);
    }
    assert!(narrowed.sources.iter().all(|s| !s.text.contains("cigarettes") && !s.text.contains("breast cancer")), "{:?}", narrowed.sources);
    assert!(narrowed.sources.iter().any(|s| s.text.contains("Metformin 500 mg")), "{:?}", narrowed.sources);
    // Sources are numbered 1..n after filtering, as the answer cites them.
    assert_eq!(narrowed.sources.iter().map(|s| s.n).collect::<Vec<_>>(), (1..=narrowed.sources.len()).collect::<Vec<_>>());
}
