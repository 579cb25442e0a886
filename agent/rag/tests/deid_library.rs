//! De-identification as ingestion applies it. The clinic library is not patient data:
//! ingesting many library documents must leave every document's ordinary words alone, whatever
//! another document made a name of (built from the damage an outside evaluation found: "Both",
//! "WHO", "Health", "Survey", "HIV", "brain" and "group: 3.3" replaced in medical abstracts).
//! And every ingest reports how many identifiers of each kind it replaced.

use rusqlite::Connection;
use wardbox_rag::deid::{Category, KnownIdentifiers};
use wardbox_rag::embed::HashEmbedder;
use wardbox_rag::index;
use wardbox_rag::ingest::{self, ChunkConfig, Outcome, Owner};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn chunk_text(conn: &Connection, document_id: i64) -> String {
    let mut stmt = conn.prepare("SELECT text FROM rag_chunks WHERE document_id = ?1 ORDER BY ordinal").expect("prepare");
    let rows: Vec<String> = stmt.query_map([document_id], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows");
    rows.join("\n")
}

#[test]
fn library_documents_never_take_pseudonyms_from_other_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = index::open_encrypted(&dir.path().join("lib.db"), &[3u8; 32]).expect("open");
    let emb = HashEmbedder::new(index::DIMS);
    let rt = rt();
    // A letter whose titles make names of ordinary words (a misfiled letter is de-identified).
    let letter = "Correspondence\n\nSigned by Dr. Both, Dr. Health and Dr. Survey; Mr. Brain was copied. \
                  Endorsed by WHO. Support for people living with HIV.";
    let out = rt.block_on(ingest::ingest_bytes(&mut conn, &emb, "letter.txt", letter.as_bytes(), &Owner::Library, ChunkConfig::default()));
    let Ok(Outcome::Ingested { document_id, .. }) = out else { panic!("letter: {out:?}") };
    let letter_text = chunk_text(&conn, document_id);
    assert!(letter_text.contains("living with HIV") && letter_text.contains("by WHO"), "a cue word made a name of an acronym: {letter_text}");
    // Many abstracts after it: each must be stored with these words as written.
    let words = ["Both", "WHO", "Health", "Survey", "HIV", "brain", "group: 3.3"];
    for i in 0..40 {
        let abs = format!(
            "Abstract {i}\n\nBackground: Both arms of the National Health Survey enrolled adults living with HIV. \
             Methods: WHO staging and brain MRI were recorded; group: 3.3 versus 2.9 months (n = {n}). \
             Results: both cohorts and the survey health index were stable.",
            n = 100 + i
        );
        let out = rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &format!("abstract-{i}.txt"), abs.as_bytes(), &Owner::Library, ChunkConfig::default()));
        let Ok(Outcome::Ingested { document_id, .. }) = out else { panic!("abstract {i}: {out:?}") };
        let text = chunk_text(&conn, document_id);
        for w in words {
            assert!(text.contains(w), "abstract {i}: {w:?} was replaced: {text}");
        }
        assert!(text.contains("both cohorts and the survey health index"), "abstract {i}: {text}");
        assert!(!text.contains('['), "abstract {i} received a pseudonym: {text}");
    }
}

#[test]
fn ingest_reports_how_many_identifiers_of_each_kind_it_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = index::open_encrypted(&dir.path().join("counts.db"), &[4u8; 32]).expect("open");
    let emb = HashEmbedder::new(index::DIMS);
    let note = "Visit note\n\nMrs. Ilse Wójcik was seen on 03/14/2024. Call 555-201-3344 or +49 30 12345678. \
                Lives at Hauptstraße 12, 10115 Berlin. Card 4111 1111 1111 1111. Metformin 500 mg.";
    let owner = Owner::Patient { record_id: "MRN-COUNTS-1".into(), known: KnownIdentifiers::default() };
    let out = rt().block_on(ingest::ingest_bytes(&mut conn, &emb, "visit.txt", note.as_bytes(), &owner, ChunkConfig::default()));
    let Ok(Outcome::Ingested { replaced, .. }) = out else { panic!("{out:?}") };
    assert_eq!(replaced.get(&Category::Name), Some(&2), "{replaced:?}");
    assert_eq!(replaced.get(&Category::Date), Some(&1), "{replaced:?}");
    assert_eq!(replaced.get(&Category::Phone), Some(&2), "{replaced:?}");
    assert_eq!(replaced.get(&Category::Account), Some(&1), "{replaced:?}");
    assert!(replaced.get(&Category::Address).is_some_and(|n| *n >= 1), "{replaced:?}");
    // Counts only: the outcome's debug form holds no identifier.
    let shown = format!("{replaced:?}");
    for value in ["Wójcik", "Ilse", "3344", "Hauptstraße", "4111"] {
        assert!(!shown.contains(value), "{value} in {shown}");
    }
}
