//! Everything in the live ruleset that is not `inet wardbox`, classified by what it can do to a
//! packet. Pure code over the JSON of `nft -j list ruleset`.
//!
//! Our table drops every packet it does not allow, and a drop in any base chain is final, so
//! the only way around it is to act on packets where it does not look, or after it has looked:
//! a `netdev` ingress/egress chain that forwards (`fwd`) or duplicates (`dup`) a frame straight
//! out of a device, a `bridge` or `arp` chain, a NAT or `mangle` rewrite after our output chain,
//! a flowtable that offloads connections past the forward hook. Every family (ip, ip6, inet,
//! arp, bridge, netdev) and every hook is read, and anything foreign that can accept, rewrite,
//! duplicate or forward traffic is drift.
//!
//! What is benign (left alone, and why), see also docs/firewall.md:
//! - a foreign table that only observes or drops: base chains with `policy drop`, rules made
//!   of matches, counters, logs, limits, quotas, `drop`/`reject` and jumps between its own
//!   chains. It cannot make a packet leave; at worst it cuts the UI off, which users see.
//! - named sets, maps, counters, quotas and limits: they act only through a rule, and rules
//!   are classified.
//!
//! Everything else is drift, including statements and object kinds this module does not know:
//! a verifier that passes what it cannot read would be blind exactly when it matters.

use serde::Serialize;
use serde_json::Value;

use crate::verify::{Drift, kind_of, ours, str_field};

/// What a foreign rule can do to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// `accept`: ends this chain's say over the packet.
    Accepts,
    /// NAT (`snat`, `dnat`, `masquerade`, `redirect`, `tproxy`) or `mangle` (payload, meta or
    /// ct set): the packet is no longer the one our chains judged.
    Rewrites,
    /// `dup`: a copy leaves through another address or device.
    Duplicates,
    /// `fwd`: the frame leaves through a device without passing the IP stack's hooks.
    Forwards,
    /// A statement not known to be harmless (`queue`, `vmap`, `notrack`, `flow`, iptables'
    /// `xt`, set updates, anything newer than this code).
    Unknown,
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Effect::Accepts => "accepts packets",
            Effect::Rewrites => "rewrites packets",
            Effect::Duplicates => "duplicates packets",
            Effect::Forwards => "forwards packets out of a device",
            Effect::Unknown => "does something not known to be harmless",
        })
    }
}

/// Rule statements that only observe, match or drop. Jumps stay inside the foreign table,
/// whose every chain is classified; `return` in a base chain applies its policy.
const BENIGN_STATEMENTS: &[&str] = &[
    "match", "counter", "log", "limit", "quota", "drop", "reject", "jump", "goto", "return",
    "continue",
];

/// Named objects that act only through a rule.
const BENIGN_OBJECTS: &[&str] = &[
    "table", "set", "map", "element", "counter", "quota", "limit",
];

/// What one rule statement (`{"fwd": {...}}`) can do; `None` when it is benign.
fn effect_of(statement: &str) -> Option<Effect> {
    match statement {
        s if BENIGN_STATEMENTS.contains(&s) => None,
        "accept" => Some(Effect::Accepts),
        "mangle" | "snat" | "dnat" | "masquerade" | "redirect" | "tproxy" => Some(Effect::Rewrites),
        "dup" => Some(Effect::Duplicates),
        "fwd" => Some(Effect::Forwards),
        _ => Some(Effect::Unknown),
    }
}

fn owned(body: &Value, field: &str) -> String {
    str_field(body, field).unwrap_or("?").to_owned()
}

/// Every foreign object that can let traffic out around our table, in listing order.
pub fn findings(objects: &[Value]) -> Vec<Drift> {
    let mut drift = Vec::new();
    for object in objects {
        let Some((kind, body)) = kind_of(object) else {
            continue;
        };
        if kind == "metainfo" || ours(body) {
            continue;
        }
        match kind {
            "chain" => {
                // A base chain without a printed policy is treated as accept, the kernel's
                // default.
                let hook = str_field(body, "hook");
                let policy = str_field(body, "policy").unwrap_or("accept");
                if let Some(hook) = hook
                    && policy != "drop"
                {
                    drift.push(Drift::ForeignAcceptChain {
                        family: owned(body, "family"),
                        table: owned(body, "table"),
                        chain: owned(body, "name"),
                        hook: hook.to_owned(),
                    });
                }
            }
            "rule" => {
                let mut seen: Vec<&str> = Vec::new();
                let statements = body.get("expr").and_then(Value::as_array);
                for statement in statements.into_iter().flatten() {
                    let Some((name, _)) = kind_of(statement) else {
                        continue;
                    };
                    let Some(effect) = effect_of(name) else {
                        continue;
                    };
                    if seen.contains(&name) {
                        continue;
                    }
                    seen.push(name);
                    drift.push(Drift::ForeignRule {
                        family: owned(body, "family"),
                        table: owned(body, "table"),
                        chain: owned(body, "chain"),
                        handle: body.get("handle").and_then(Value::as_u64).unwrap_or(0),
                        effect,
                        statement: name.to_owned(),
                    });
                }
            }
            other if BENIGN_OBJECTS.contains(&other) => {}
            other => drift.push(Drift::ForeignObject {
                family: owned(body, "family"),
                table: owned(body, "table"),
                kind: other.to_owned(),
                name: owned(body, "name"),
            }),
        }
    }
    drift
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::json;

    use super::*;

    /// Classify a listing given as nft prints it (one JSON object a line) and compare the
    /// findings, one a line, with the expectation.
    fn check(listing: &str, expected: Expect) {
        let objects: Vec<Value> = listing
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("test listing is JSON"))
            .collect();
        let found: Vec<String> = findings(&objects).iter().map(ToString::to_string).collect();
        expected.assert_eq(&found.join("\n"));
    }

    #[test]
    fn the_netdev_exfiltration_of_the_review_is_named() {
        // `nft -j list ruleset` (nft 1.0.6) after the attack: an ingress chain on `lo`
        // rewrites loopback datagrams and forwards them out of the internet link.
        check(
            r#"
            {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
            {"table": {"family": "netdev", "name": "exfil", "handle": 1}}
            {"chain": {"family": "netdev", "table": "exfil", "name": "lo_in", "handle": 1, "type": "filter", "hook": "ingress", "prio": 0, "policy": "accept"}}
            {"rule": {"family": "netdev", "table": "exfil", "chain": "lo_in", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 9999}}, {"mangle": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "value": "198.51.100.1"}}, {"mangle": {"key": {"payload": {"protocol": "ip", "field": "daddr"}}, "value": "198.51.100.2"}}, {"fwd": {"dev": "ext0", "family": "ip", "addr": "198.51.100.2"}}]}}
            "#,
            expect![[r#"
                table netdev exfil has chain lo_in hooked on ingress with policy accept
                table netdev exfil: rule (handle 2) in chain lo_in rewrites packets (`mangle`)
                table netdev exfil: rule (handle 2) in chain lo_in forwards packets out of a device (`fwd`)"#]],
        );
    }

    #[test]
    fn every_family_and_hook_is_read() {
        check(
            r#"
            {"table": {"family": "ip", "name": "nat", "handle": 7}}
            {"chain": {"family": "ip", "table": "nat", "name": "post", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}
            {"chain": {"family": "ip", "table": "nat", "name": "pre", "handle": 2, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}
            {"rule": {"family": "ip", "table": "nat", "chain": "post", "handle": 3, "expr": [{"masquerade": null}]}}
            {"rule": {"family": "ip", "table": "nat", "chain": "pre", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"dnat": {"addr": "198.51.100.2", "port": 80}}]}}
            {"table": {"family": "ip6", "name": "t", "handle": 3}}
            {"chain": {"family": "ip6", "table": "t", "name": "c", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}
            {"rule": {"family": "ip6", "table": "t", "chain": "c", "handle": 2, "expr": [{"dup": {"addr": "2001:db8:2::2"}}]}}
            {"table": {"family": "bridge", "name": "br", "handle": 8}}
            {"chain": {"family": "bridge", "table": "br", "name": "f", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}
            {"table": {"family": "arp", "name": "a", "handle": 9}}
            {"chain": {"family": "arp", "table": "a", "name": "o", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}
            {"table": {"family": "netdev", "name": "n", "handle": 6}}
            {"chain": {"family": "netdev", "table": "n", "name": "eg", "handle": 2, "type": "filter", "hook": "egress", "prio": 0, "policy": "drop"}}
            {"rule": {"family": "netdev", "table": "n", "chain": "eg", "handle": 5, "expr": [{"dup": {"dev": "v1"}}, {"dup": {"dev": "v2"}}]}}
            {"table": {"family": "inet", "name": "hi", "handle": 10}}
            {"chain": {"family": "inet", "table": "hi", "name": "o", "handle": 1, "type": "filter", "hook": "output", "prio": -200, "policy": "drop"}}
            {"chain": {"family": "inet", "table": "hi", "name": "r", "handle": 2, "type": "route", "hook": "output", "prio": -150, "policy": "drop"}}
            {"chain": {"family": "inet", "table": "hi", "name": "reg", "handle": 4}}
            {"rule": {"family": "inet", "table": "hi", "chain": "o", "handle": 8, "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}, {"accept": null}]}}
            {"rule": {"family": "inet", "table": "hi", "chain": "r", "handle": 9, "expr": [{"mangle": {"key": {"payload": {"protocol": "ip", "field": "daddr"}}, "value": "1.2.3.4"}}]}}
            {"rule": {"family": "inet", "table": "hi", "chain": "reg", "handle": 11, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "1.2.3.4"}}, {"accept": null}]}}
            {"rule": {"family": "inet", "table": "hi", "chain": "reg", "handle": 12, "expr": [{"queue": {"num": 1}}]}}
            {"rule": {"family": "inet", "table": "hi", "chain": "reg", "handle": 13, "expr": [{"vmap": {"key": {"meta": {"key": "l4proto"}}, "data": {"set": [["tcp", {"accept": null}]]}}}]}}
            {"flowtable": {"family": "inet", "name": "ft", "table": "hi", "handle": 14, "hook": "ingress", "prio": 0, "dev": ["v0", "v1"]}}
            {"ct helper": {"family": "inet", "name": "ftp", "table": "hi", "handle": 15, "type": "ftp", "protocol": "tcp", "l3proto": "inet"}}
            "#,
            expect![[r#"
                table ip nat has chain post hooked on postrouting with policy accept
                table ip nat has chain pre hooked on prerouting with policy accept
                table ip nat: rule (handle 3) in chain post rewrites packets (`masquerade`)
                table ip nat: rule (handle 4) in chain pre rewrites packets (`dnat`)
                table ip6 t: rule (handle 2) in chain c duplicates packets (`dup`)
                table bridge br has chain f hooked on forward with policy accept
                table arp a has chain o hooked on output with policy accept
                table netdev n: rule (handle 5) in chain eg duplicates packets (`dup`)
                table inet hi: rule (handle 8) in chain o rewrites packets (`mangle`)
                table inet hi: rule (handle 8) in chain o accepts packets (`accept`)
                table inet hi: rule (handle 9) in chain r rewrites packets (`mangle`)
                table inet hi: rule (handle 11) in chain reg accepts packets (`accept`)
                table inet hi: rule (handle 12) in chain reg does something not known to be harmless (`queue`)
                table inet hi: rule (handle 13) in chain reg does something not known to be harmless (`vmap`)
                table inet hi holds flowtable `ft`, which the verifier does not allow outside table inet wardbox
                table inet hi holds ct helper `ftp`, which the verifier does not allow outside table inet wardbox"#]],
        );
    }

    #[test]
    fn tables_that_only_observe_or_drop_are_benign() {
        check(
            r#"
            {"table": {"family": "inet", "name": "watch", "handle": 3}}
            {"counter": {"family": "inet", "name": "c", "table": "watch", "handle": 6, "packets": 4, "bytes": 400}}
            {"set": {"family": "inet", "name": "bad", "table": "watch", "type": "ipv4_addr", "handle": 7, "elem": ["198.51.100.2"]}}
            {"chain": {"family": "inet", "table": "watch", "name": "out", "handle": 1, "type": "filter", "hook": "output", "prio": -10, "policy": "drop"}}
            {"chain": {"family": "inet", "table": "watch", "name": "deny", "handle": 2}}
            {"rule": {"family": "inet", "table": "watch", "chain": "out", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@bad"}}, {"jump": {"target": "deny"}}]}}
            {"rule": {"family": "inet", "table": "watch", "chain": "out", "handle": 9, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"log": {"prefix": "out "}}, {"limit": {"rate": 10, "per": "second"}}, {"drop": null}]}}
            {"rule": {"family": "inet", "table": "watch", "chain": "deny", "handle": 10, "expr": [{"counter": "c"}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]}}
            {"rule": {"family": "inet", "table": "watch", "chain": "deny", "handle": 11, "expr": [{"return": null}]}}
            {"table": {"family": "netdev", "name": "quiet", "handle": 4}}
            {"chain": {"family": "netdev", "table": "quiet", "name": "in", "handle": 1, "type": "filter", "hook": "ingress", "prio": 0, "policy": "drop"}}
            {"table": {"family": "bridge", "name": "empty", "handle": 5}}
            "#,
            expect![[""]],
        );
    }

    #[test]
    fn our_own_objects_are_not_foreign() {
        let ours = [
            json!({"table": {"family": "inet", "name": "wardbox", "handle": 1}}),
            json!({"chain": {"family": "inet", "table": "wardbox", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}),
            json!({"rule": {"family": "inet", "table": "wardbox", "chain": "output", "handle": 3, "expr": [{"accept": null}]}}),
        ];
        // Changes to our own table are the intent comparison's business, not this one's.
        assert_eq!(findings(&ours), vec![]);
        // The same names in another family are foreign.
        let twin = [
            json!({"chain": {"family": "ip", "table": "wardbox", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}),
        ];
        assert_eq!(findings(&twin).len(), 1);
    }

    #[test]
    fn a_base_chain_without_a_policy_counts_as_accept() {
        check(
            r#"{"chain": {"family": "ip", "table": "t", "name": "c", "handle": 1, "type": "filter", "hook": "output", "prio": 0}}"#,
            expect!["table ip t has chain c hooked on output with policy accept"],
        );
    }
}
