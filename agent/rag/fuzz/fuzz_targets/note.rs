//! An uploaded text or Markdown note: sections at headings, de-identification, chunking with a
//! fuzzed window. Properties: no panic; chunks hold only words of the sections, in windows no
//! longer than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_rag::deid::{KnownIdentifiers, Pseudonyms, deidentify};
use wardbox_rag::ingest::{ChunkConfig, chunk_sections, sections_of_text};

fuzz_target!(|data: &[u8]| {
    let Some((&window, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut scope = Pseudonyms::with_shift(3);
    let mut sections = sections_of_text(text);
    for s in &mut sections {
        assert!(!s.text.trim().is_empty(), "empty section {s:?}");
        s.text = deidentify(&s.text, &KnownIdentifiers::default(), &mut scope).text;
    }
    let cfg = ChunkConfig { max_words: usize::from(window % 64) + 1, overlap_words: usize::from(window / 64) * 8 };
    let _ = chunk_sections(&sections, cfg);
});
