//! An uploaded PDF: text extraction (lopdf and our operator walker), then the same path as a
//! note. Must end in text or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_rag::deid::{KnownIdentifiers, Pseudonyms, deidentify};
use wardbox_rag::ingest::{ChunkConfig, chunk_sections, pdf_text, sections_of_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = pdf_text("upload.pdf", data) else { return };
    let mut scope = Pseudonyms::with_shift(17);
    let mut sections = sections_of_text(&text);
    for s in &mut sections {
        s.text = deidentify(&s.text, &KnownIdentifiers::default(), &mut scope).text;
    }
    let _ = chunk_sections(&sections, ChunkConfig::default());
});
