//! Two uploads to one owner at the same moment, on two connections to one encrypted store: both
//! look, both de-identify and embed, and the other one's rows appear in between. The same file
//! twice must come back as the same document ("unchanged"), not as a store error (a 500 to the
//! user); two different files must each keep their own identifiers.

use std::sync::Mutex;

use rusqlite::Connection;
use wardbox_rag::deid;
use wardbox_rag::embed::{EmbedFuture, Embedder, HashEmbedder};
use wardbox_rag::index::{self, Access};
use wardbox_rag::ingest::{self, ChunkConfig, IngestError, Outcome, Owner};

const NOTE: &[u8] = b"Visit note\nS: cough for three days, no fever.\nA: viral bronchitis.\nP: fluids, review in a week.";

/// The upload that runs on its own connection while the first one is embedding.
struct OtherUpload {
    conn: Connection,
    name: &'static str,
    bytes: &'static [u8],
    owner: Owner,
}

/// Embeds like the hashing embedder, but the first time it is asked it first lets the other
/// upload run to the end: the race, made to happen every time.
struct RacingEmbedder {
    inner: HashEmbedder,
    other: Mutex<Option<OtherUpload>>,
    other_outcome: Mutex<Option<Result<Outcome, IngestError>>>,
}

impl RacingEmbedder {
    fn new(other: OtherUpload) -> Self {
        Self { inner: HashEmbedder::new(index::DIMS), other: Mutex::new(Some(other)), other_outcome: Mutex::new(None) }
    }

    /// What the other upload got; fails the test when it never ran (the test would prove nothing).
    fn other_outcome(&self) -> Result<Outcome, IngestError> {
        self.other_outcome.lock().expect("lock").take().expect("the other upload did not run: the test proves nothing")
    }
}

impl Embedder for RacingEmbedder {
    fn model(&self) -> &str {
        self.inner.model()
    }

    fn dims(&self) -> usize {
        self.inner.dims()
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let other = self.other.lock().expect("lock").take();
            if let Some(mut o) = other {
                let out = ingest::ingest_bytes(&mut o.conn, &self.inner, o.name, o.bytes, &o.owner, ChunkConfig::default()).await;
                *self.other_outcome.lock().expect("lock") = Some(out);
            }
            self.inner.embed(texts).await
        })
    }
}

struct Race {
    _dir: tempfile::TempDir,
    first: Connection,
    second: Option<Connection>,
    rt: tokio::runtime::Runtime,
}

impl Race {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wardbox.db");
        let key = [9u8; 32];
        let first = index::open_encrypted(&path, &key).expect("open");
        let second = index::open_encrypted(&path, &key).expect("open a second connection");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Self { _dir: dir, first, second: Some(second), rt }
    }

    /// Upload `mine` on the first connection while `theirs` runs on the second; both outcomes.
    fn run(
        &mut self,
        mine: (&'static str, &'static [u8]),
        theirs: (&'static str, &'static [u8]),
        owner: Owner,
    ) -> (Result<Outcome, IngestError>, Result<Outcome, IngestError>) {
        let conn = self.second.take().expect("one race per store");
        let embedder = RacingEmbedder::new(OtherUpload { conn, name: theirs.0, bytes: theirs.1, owner: owner.clone() });
        let out = self.rt.block_on(ingest::ingest_bytes(&mut self.first, &embedder, mine.0, mine.1, &owner, ChunkConfig::default()));
        (out, embedder.other_outcome())
    }

    fn documents(&self) -> i64 {
        self.first.query_row("SELECT count(*) FROM rag_documents", [], |r| r.get(0)).expect("count")
    }

    /// A patient in the index, as the records import makes one; its owner id.
    fn patient(&self, record_id: &str) -> i64 {
        index::patient_owner(&self.first, record_id).expect("patient").0
    }

    /// A document's text as a clinician allowed to see the patient reads it.
    fn reidentified(&self, document_id: i64, owner: i64) -> String {
        let view = index::document(&self.first, document_id, &Access::AllPatients).expect("read").expect("the document");
        let scope = index::load_pseudonyms(&self.first, owner).expect("pseudonyms");
        view.chunks.iter().map(|(_, _, text)| deid::reidentify(text, &scope)).collect::<Vec<_>>().join("\n")
    }
}

fn document_id(out: &Result<Outcome, IngestError>) -> i64 {
    match out {
        Ok(Outcome::Ingested { document_id, .. } | Outcome::Unchanged { document_id, .. }) => *document_id,
        Err(e) => panic!("the upload failed: {e}"),
    }
}

#[test]
fn the_same_file_uploaded_twice_at_once_is_one_document() {
    let mut race = Race::new();
    let (out, other) = race.run(("note.txt", NOTE), ("note.txt", NOTE), Owner::Library);
    assert!(matches!(other, Ok(Outcome::Ingested { .. })), "the other upload: {other:?}");
    match out {
        Ok(Outcome::Unchanged { .. }) => {}
        other => panic!("the second of two simultaneous uploads must be the same document, got {other:?}"),
    }
    assert_eq!(race.documents(), 1);
}

/// The upload from a patient's page (the web's path): the same note twice at once is one
/// document, and both uploaders are told which (the second as "already in the record").
#[test]
fn the_same_note_uploaded_twice_at_once_to_a_patient_is_one_document() {
    let mut race = Race::new();
    let patient = race.patient("MRN-RACE-1");
    let (out, other) = race.run(("note.txt", NOTE), ("note.txt", NOTE), Owner::Indexed(patient));
    assert!(matches!(other, Ok(Outcome::Ingested { .. })), "the other upload: {other:?}");
    assert!(matches!(out, Ok(Outcome::Unchanged { .. })), "the second upload: {out:?}");
    assert_eq!(document_id(&out), document_id(&other));
    assert_eq!(race.documents(), 1);
}

const NOTE_OKONKWO: &[u8] =
    b"Visit note\nS: came with her brother Mr. Bartholomew Okonkwo, who drives her to appointments.\nA: stable.\nP: review in a month.";
const NOTE_HALVORSEN: &[u8] =
    b"Phone note\nS: her neighbour Mrs. Henrietta Halvorsen called: the patient fell at home yesterday.\nA: no injury reported.\nP: home visit.";

/// Two different notes to one patient at once, each naming a person the record has not named
/// before: each must read back with its own name (both uploads number their new names from
/// the same saved state, and one's numbers must not stand for the other's names).
#[test]
fn two_different_notes_uploaded_at_once_to_a_patient_keep_their_own_names() {
    let mut race = Race::new();
    let patient = race.patient("MRN-RACE-2");
    let (out, other) = race.run(("visit.txt", NOTE_OKONKWO), ("phone.txt", NOTE_HALVORSEN), Owner::Indexed(patient));
    assert!(matches!(other, Ok(Outcome::Ingested { .. })), "the other upload: {other:?}");
    assert!(matches!(out, Ok(Outcome::Ingested { .. })), "this upload: {out:?}");
    assert_eq!(race.documents(), 2);
    let visit = race.reidentified(document_id(&out), patient);
    let phone = race.reidentified(document_id(&other), patient);
    assert!(visit.contains("Okonkwo") && !visit.contains("Halvorsen"), "the visit note reads back as: {visit}");
    assert!(phone.contains("Halvorsen") && !phone.contains("Okonkwo"), "the phone note reads back as: {phone}");
}

/// Stores a new pseudonym for the owner on another connection every time it is asked to embed:
/// a patient whose record never stops changing while a document is embedded.
struct EverChangingOwner {
    inner: HashEmbedder,
    other: Mutex<Connection>,
    owner: i64,
    calls: Mutex<u32>,
}

impl Embedder for EverChangingOwner {
    fn model(&self) -> &str {
        self.inner.model()
    }

    fn dims(&self) -> usize {
        self.inner.dims()
    }

    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let n = {
                let mut calls = self.calls.lock().expect("lock");
                *calls += 1;
                *calls
            };
            {
                let other = self.other.lock().expect("lock");
                let mut scope = index::load_pseudonyms(&other, self.owner).expect("pseudonyms");
                let person = format!("Visit note\nS: seen with Mr. Perpetuus Changeling{n}.");
                let _ = deid::deidentify(&person, &deid::KnownIdentifiers::default(), &mut scope);
                index::save_pseudonyms(&other, self.owner, &mut scope).expect("save");
            }
            self.inner.embed(texts).await
        })
    }
}

/// When the patient's pseudonyms change during every attempt, the upload gives up after a few
/// and says so; nothing of it is stored.
#[test]
fn an_upload_that_never_finds_the_pseudonyms_unchanged_is_refused_and_stores_nothing() {
    let mut race = Race::new();
    let patient = race.patient("MRN-RACE-3");
    let other = race.second.take().expect("the second connection");
    let embedder = EverChangingOwner { inner: HashEmbedder::new(index::DIMS), other: Mutex::new(other), owner: patient, calls: Mutex::new(0) };
    let out = race.rt.block_on(ingest::ingest_bytes(&mut race.first, &embedder, "visit.txt", NOTE_OKONKWO, &Owner::Indexed(patient), ChunkConfig::default()));
    assert!(matches!(out, Err(IngestError::Busy(_))), "{out:?}");
    assert_eq!(*embedder.calls.lock().expect("lock"), 5, "de-identified and embedded again each time, five times in all");
    assert_eq!(race.documents(), 0);
    let names = index::load_pseudonyms(&race.first, patient).expect("pseudonyms");
    assert!(!deid::reidentify("[NAME-1] [NAME-2] [NAME-3] [NAME-4] [NAME-5] [NAME-6]", &names).contains("Okonkwo"), "a pseudonym of the refused note was stored");
}
