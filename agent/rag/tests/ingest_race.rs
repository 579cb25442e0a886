//! Two uploads of the same file at the same moment, on two connections to one encrypted store:
//! both find no such document, both embed it, and one insert finds the other's row. The second
//! must come back as the same document ("unchanged"), not as a store error (a 500 to the user).

use std::sync::Mutex;

use rusqlite::Connection;
use wardbox_rag::embed::{EmbedFuture, Embedder, HashEmbedder};
use wardbox_rag::index;
use wardbox_rag::ingest::{self, ChunkConfig, Outcome, Owner};

const NOTE: &[u8] = b"Visit note\nS: cough for three days, no fever.\nA: viral bronchitis.\nP: fluids, review in a week.";

/// Embeds like the hashing embedder, but the first time it is asked it first lets the other
/// upload (on its own connection) run to the end: the race, made to happen every time.
struct RacingEmbedder {
    inner: HashEmbedder,
    other: Mutex<Option<Connection>>,
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
            if let Some(mut conn) = other {
                let out = ingest::ingest_bytes(&mut conn, &self.inner, "note.txt", NOTE, &Owner::Library, ChunkConfig::default()).await;
                assert!(matches!(out, Ok(Outcome::Ingested { .. })), "the other upload: {out:?}");
            }
            self.inner.embed(texts).await
        })
    }
}

#[test]
fn the_same_file_uploaded_twice_at_once_is_one_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wardbox.db");
    let key = [9u8; 32];
    let mut first = index::open_encrypted(&path, &key).expect("open");
    let second = index::open_encrypted(&path, &key).expect("open a second connection");
    let embedder = RacingEmbedder { inner: HashEmbedder::new(index::DIMS), other: Mutex::new(Some(second)) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let out = rt.block_on(ingest::ingest_bytes(&mut first, &embedder, "note.txt", NOTE, &Owner::Library, ChunkConfig::default()));
    assert!(embedder.other.lock().expect("lock").is_none(), "the other upload did not run: the test proves nothing");
    match out {
        Ok(Outcome::Unchanged { .. }) => {}
        other => panic!("the second of two simultaneous uploads must be the same document, got {other:?}"),
    }
    let documents: i64 = first.query_row("SELECT count(*) FROM rag_documents", [], |r| r.get(0)).expect("count");
    assert_eq!(documents, 1);
}
