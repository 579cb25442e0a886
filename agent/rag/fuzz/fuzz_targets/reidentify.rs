//! Re-identification of a streamed answer (model output: text nobody controls): pseudonyms and
//! dates may be split anywhere between pieces. Input: pieces separated by NUL. Property: the
//! streamed result equals re-identifying the whole answer at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_rag::deid::{KnownIdentifiers, Pseudonyms, StreamingReidentifier, deidentify, reidentify};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A scope with pseudonyms in it: de-identify the answer's own text first.
    let mut scope = Pseudonyms::with_shift(11);
    let whole: String = text.split('\0').collect();
    let _ = deidentify(&whole, &KnownIdentifiers::default(), &mut scope);
    let mut stream = StreamingReidentifier::new(&scope);
    let mut streamed = String::new();
    for piece in text.split('\0') {
        streamed.push_str(&stream.push(piece));
    }
    streamed.push_str(&stream.finish());
    assert_eq!(streamed, reidentify(&whole, &scope));
});
