//! The `[firewall]` policy as TOML: parse, validate, build and render the ruleset. Properties:
//! no panic; a policy that validates yields a ruleset that renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_firewall::{Policy, Ruleset};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = toml::from_str::<Policy>(text) else { return };
    let Ok(valid) = policy.validate() else { return };
    let ruleset = Ruleset::build(&valid);
    assert!(!ruleset.render().is_empty());
});
