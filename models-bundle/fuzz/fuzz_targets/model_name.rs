//! Model names and digests as clients and manifests send them: parsing never panics, a parsed
//! name prints back to a string that parses to the same name, and a digest never names a path
//! outside `blobs/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_models_bundle::{Digest, ModelName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(name) = text.parse::<ModelName>() {
        let shown = name.to_string();
        let again: ModelName = shown.parse().unwrap_or_else(|e| panic!("{shown:?} (from {text:?}) does not parse: {e}"));
        assert_eq!(again, name, "{text:?} -> {shown:?}");
        for part in [&name.host, &name.namespace, &name.model, &name.tag] {
            assert!(!part.contains('/') && part != ".." && part != ".", "{text:?} gives path part {part:?}");
        }
    }
    if let Ok(d) = text.parse::<Digest>() {
        let file = d.file_name();
        assert!(!file.contains('/') && !file.contains(".."), "{text:?} -> {file:?}");
        assert_eq!(d.to_string().parse::<Digest>().expect("round trip"), d);
    }
});
