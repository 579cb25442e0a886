//! An uploaded FHIR R4 Bundle: parsing, de-identification with the identifiers the Bundle itself
//! states, and chunking. Must end in sections or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_rag::deid::{Pseudonyms, deidentify};
use wardbox_rag::ingest::{ChunkConfig, chunk_sections, parse_fhir};

fuzz_target!(|data: &[u8]| {
    let Ok(mut parsed) = parse_fhir("bundle.json", data) else { return };
    let mut scope = Pseudonyms::with_shift(-40);
    for s in &mut parsed.sections {
        s.text = deidentify(&s.text, &parsed.known, &mut scope).text;
    }
    if let Some(label) = &parsed.patient_label {
        let _ = deidentify(label, &parsed.known, &mut scope);
    }
    let _ = chunk_sections(&parsed.sections, ChunkConfig::default());
});
