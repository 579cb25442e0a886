//! A GGUF header from an untrusted file: the reader must return a value or an error, never
//! panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_models_bundle::gguf::Metadata;

fuzz_target!(|data: &[u8]| {
    let Ok(md) = Metadata::read(&mut &data[..]) else { return };
    // Everything the importer and `/api/show` derive from a header.
    let _ = (md.architecture(), md.chat_template(), md.quantization(), md.context_length(), md.embedding_length());
    for v in md.kv.values() {
        let _ = (v.as_str(), v.as_u64());
    }
});
