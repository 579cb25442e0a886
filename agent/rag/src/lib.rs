//! Retrieval over clinic records: de-identified, encrypted, hybrid, cited.
//!
//! Pipeline: a document ([`ingest`]) is parsed to text, de-identified ([`deid`]) with the
//! patient's pseudonyms, chunked along its sections, embedded ([`embed`]) and written to the
//! index ([`index`]) inside the SQLCipher store: chunks, FTS5 (BM25) and sqlite-vec vectors.
//! A question is answered ([`answer`]) from the top chunks of a fused (RRF) search limited to
//! what the user may see, with numbered, resolvable citations.
//!
//! Architecture invariant: nothing of a document's text reaches the index, the embedder or a
//! log before de-identification; the only table holding identifiers is the pseudonym map.

pub mod deid;
pub mod synth;
pub mod embed;
pub mod index;
pub mod ingest;
pub mod answer;
pub mod check;
pub mod sections;
