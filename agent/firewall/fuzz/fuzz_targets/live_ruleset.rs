//! `nft -j list ruleset` output, compared with the ruleset a fixed policy asks for. Properties:
//! no panic; reading never fails on well-formed JSON with an `nftables` array.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wardbox_firewall::{LiveRuleset, Policy, Ruleset};

fn intent() -> &'static Ruleset {
    static R: OnceLock<Ruleset> = OnceLock::new();
    R.get_or_init(|| {
        let policy: Policy = toml::from_str(
            "clinic_lan = [\"192.168.10.0/24\"]\nadmin_ssh = [\"192.168.10.5/32\"]\ndns_resolvers = [\"192.168.10.1\"]\n\
             [[allow_out]]\nname = \"siem\"\ndest = \"192.168.10.20/32\"\nprotocol = \"tcp\"\nport = 6514\n",
        )
        .expect("fixed policy parses");
        Ruleset::build(&policy.validate().expect("fixed policy is valid"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(live) = LiveRuleset::parse(text) else { return };
    let _ = live.has_table();
    let _ = live.counters();
    let _ = live.foreign_findings();
    let _ = live.drift(intent());
});
