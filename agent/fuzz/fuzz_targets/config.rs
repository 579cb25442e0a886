//! The agent's configuration text (`wardbox.toml`): it arrives in a policy bundle on a stick or
//! from an administrator's edit, so any bytes. Parsing and validation must never panic; a
//! configuration they accept must serialise, and what it serialises to must be accepted again
//! (`wardbox config defaults` and the dev box write configurations this way).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wardbox::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    let written = toml::to_string_pretty(&config).expect("an accepted configuration serialises");
    if let Err(e) = Config::parse(&written, Path::new("written.toml")) {
        panic!("an accepted configuration, written out, is refused: {e}\n{written}");
    }
});
