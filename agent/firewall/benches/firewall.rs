//! How long the firewall's operations take, printed as a table (`cargo bench -p
//! wardbox-firewall`). Needs root: apply/verify run in a network namespace of their own.
//!
//! What matters: the boot stage's apply+verify (on the boot's critical path) and the
//! periodic verify (every 30 s by default, so it must be cheap).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use wardbox_firewall::{ApplyOutcome, Firewall, Nft, Policy, Ruleset};

fn policy(allow: usize) -> Policy {
    let mut text = String::from(
        "clinic_lan = [\"10.0.0.0/16\", \"fd00:1::/64\"]\ndns_resolvers = [\"10.0.0.2\"]\n",
    );
    for i in 0..allow {
        text.push_str(&format!(
            "[[allow_out]]\nname = \"dest{i}\"\ndest = \"10.9.{}.{}\"\nprotocol = \"tcp\"\nport = {}\n",
            i / 200,
            i % 200 + 1,
            1000 + i
        ));
    }
    toml::from_str(&text).expect("bench policy parses")
}

fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn main() {
    support::preflight();
    println!(
        "{:<44} {:>6} {:>12} {:>12}",
        "operation", "rules", "median", "max"
    );
    for allow in [3usize, 32] {
        let policy = policy(allow);
        let valid = policy.validate().expect("valid");
        let ruleset = Ruleset::build(&valid);
        let rules = ruleset.rules().len();
        let row = |what: &str, (median, max): (Duration, Duration)| {
            println!(
                "{what:<44} {rules:>6} {:>10.3}ms {:>10.3}ms",
                median.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        };
        row(
            "validate + build + render (pure)",
            time(200, || {
                Ruleset::build(&policy.validate().expect("valid")).render()
            }),
        );

        let ns = support::Netns::new("bench");
        let fw = Firewall::new(Nft::new(support::NFT).expect("nft"), ruleset);
        ns.run(|| {
            row(
                "apply on an empty ruleset (boot)",
                time(20, || {
                    let _ = fw.remove();
                    assert!(matches!(
                        fw.apply().expect("apply"),
                        ApplyOutcome::Applied { .. }
                    ));
                }),
            );
            row(
                "apply when unchanged (= periodic re-verify)",
                time(50, || fw.apply().expect("apply")),
            );
            row(
                "status (nft -j list ruleset + drift)",
                time(50, || fw.status().expect("status")),
            );
        });
    }
}
