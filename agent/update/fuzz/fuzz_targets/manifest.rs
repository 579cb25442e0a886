//! Manifest bytes from a stick: parsing must give a value or an error, never panic; what parses
//! must serialise and parse back to the same value and agree with its own target list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_update::manifest::{check_contents, parse_manifest, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = parse_manifest(data) else {
        return;
    };
    validate(&m).expect("a parsed manifest is valid");
    let again = parse_manifest(&serde_json::to_vec(&m).expect("serialises")).expect("round trip");
    assert_eq!(again, m);
    let names: Vec<&str> = m.contents.iter().map(|e| e.target.as_str()).collect();
    check_contents(&m, names.iter().copied().chain(["bundle.json"])).expect("own targets match");
    assert!(check_contents(&m, names.iter().copied().chain(["unlisted-target"])).is_err());
});
