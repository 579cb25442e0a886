//! Compare the live ruleset (`nft -j list ruleset`) with the intended [`Ruleset`], and name
//! every difference as a typed [`Drift`].
//!
//! Pure code over JSON: the live side is read as `serde_json::Value` rather than the crate's
//! typed schema, because the typed schema cannot hold every object another program may have
//! added (and holds counter values in u32), and a verifier that fails to parse a rogue table
//! would be blind exactly when it matters.

use std::collections::BTreeMap;

use nftables::types::NfFamily;
use serde::Serialize;
use serde_json::Value;

use crate::foreign::{self, Effect};
use crate::ruleset::{
    CHAINS, COUNTER_FORWARD, COUNTER_IN, COUNTER_OUT, Count, Counters, Ruleset, TABLE,
};

/// Why the live ruleset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// nft printed something that is not the JSON ruleset document.
    #[error(
        "`nft -j list ruleset` printed unreadable JSON ({reason}); is nft 0.9.3 or newer installed?"
    )]
    Unreadable { reason: String },
}

/// One way the live ruleset differs from the intended one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "drift", rename_all = "snake_case")]
pub enum Drift {
    /// The `inet wardbox` table is gone: nothing of the egress policy is enforced.
    #[error("table inet wardbox is missing")]
    TableMissing,
    /// The table is there but holds no rules (`nft flush table`): the chains still drop
    /// everything, so the web UI and the allow-list are cut off.
    #[error("table inet wardbox was flushed: its chains hold no rules")]
    TableFlushed,
    /// A base chain is gone.
    #[error("chain {chain} is missing")]
    ChainMissing { chain: String },
    /// A base chain's type, hook, priority or policy changed (e.g. `policy accept`).
    #[error("chain {chain} is `{found}`, expected `{expected}`")]
    ChainChanged {
        chain: String,
        expected: String,
        found: String,
    },
    /// An intended rule is gone.
    #[error("rule `{rule}` is missing from chain {chain}")]
    RuleMissing { chain: String, rule: String },
    /// An intended rule is present (by its comment) but matches something else.
    #[error("rule `{rule}` in chain {chain} was changed")]
    RuleChanged { chain: String, rule: String },
    /// A rule nobody intended, e.g. an inserted `accept`.
    #[error("unexpected rule (handle {handle}{}) in chain {chain}", comment_suffix(.comment))]
    RuleUnexpected {
        chain: String,
        handle: u64,
        comment: Option<String>,
    },
    /// All intended rules are present but not in the intended order.
    #[error("the rules of chain {chain} are out of order")]
    RulesReordered { chain: String },
    /// A named drop counter is gone.
    #[error("counter {name} is missing")]
    CounterMissing { name: String },
    /// Something else inside our table: an extra chain, set, map...
    #[error("unexpected {kind} `{name}` in table inet wardbox")]
    UnexpectedObject { kind: String, name: String },
    /// A drop counter is lower than the last reading taken in this boot: someone reset it
    /// (`nft reset counters`) or replaced the table, wiping the evidence of blocked attempts.
    /// Repair writes back the last reading plus what was counted since.
    #[error(
        "counter {name} went down from {} packets ({} bytes) to {} packets ({} bytes): it was reset",
        .last.packets, .last.bytes, .now.packets, .now.bytes
    )]
    CounterReset {
        name: String,
        last: Count,
        now: Count,
    },
    /// Another table, of any family, has a base chain on any hook with an accept policy. Our
    /// drop still wins where it looks (a drop in any base chain is final), but on the
    /// appliance nothing else may own packet filtering, so this is tampering or a stray
    /// program, and repair removes the table.
    #[error("table {family} {table} has chain {chain} hooked on {hook} with policy accept")]
    ForeignAcceptChain {
        family: String,
        table: String,
        chain: String,
        hook: String,
    },
    /// A rule in another table that can accept, rewrite, duplicate or forward packets (see
    /// `foreign`): e.g. a `netdev` ingress rule that sends loopback traffic out of a device,
    /// past our chains. Repair removes its table.
    #[error(
        "table {family} {table}: rule (handle {handle}) in chain {chain} {effect} (`{statement}`)"
    )]
    ForeignRule {
        family: String,
        table: String,
        chain: String,
        handle: u64,
        effect: Effect,
        /// The nft statement, as `nft -j` names it (`fwd`, `mangle`, `masquerade`...).
        statement: String,
    },
    /// An object in another table that can move traffic without a rule (a flowtable), or
    /// of a kind the verifier does not know. Repair removes its table.
    #[error(
        "table {family} {table} holds {kind} `{name}`, which the verifier does not allow outside table inet wardbox"
    )]
    ForeignObject {
        family: String,
        table: String,
        kind: String,
        name: String,
    },
}

impl Drift {
    /// The foreign table this drift is about, if any: what repair deletes.
    fn foreign_table(&self) -> Option<(&str, &str)> {
        match self {
            Drift::ForeignAcceptChain { family, table, .. }
            | Drift::ForeignRule { family, table, .. }
            | Drift::ForeignObject { family, table, .. } => Some((family, table)),
            _ => None,
        }
    }
}

fn comment_suffix(comment: &Option<String>) -> String {
    match comment {
        Some(c) => format!(", comment `{c}`"),
        None => String::new(),
    }
}

/// The live ruleset as nft printed it.
#[derive(Debug, Clone)]
pub struct LiveRuleset {
    objects: Vec<Value>,
}

/// The kind and body of one object of the `nftables` array (`{"rule": {...}}`).
pub(crate) fn kind_of(object: &Value) -> Option<(&str, &Value)> {
    object
        .as_object()?
        .iter()
        .next()
        .map(|(k, v)| (k.as_str(), v))
}

pub(crate) fn str_field<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str)
}

/// Whether a listed object belongs to `inet wardbox`.
pub(crate) fn ours(body: &Value) -> bool {
    let table_field = if body.get("table").is_some() {
        "table"
    } else {
        "name"
    };
    str_field(body, "family") == Some("inet") && str_field(body, table_field) == Some(TABLE)
}

fn chain_shape(body: &Value) -> String {
    let field = |f: &str| match body.get(f) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "none".to_owned(),
    };
    format!(
        "type {} hook {} priority {} policy {}",
        field("type"),
        field("hook"),
        field("prio"),
        field("policy")
    )
}

impl LiveRuleset {
    /// Parse the output of `nft -j list ruleset`.
    pub fn parse(json: &str) -> Result<LiveRuleset, VerifyError> {
        let document: Value = serde_json::from_str(json).map_err(|e| VerifyError::Unreadable {
            reason: e.to_string(),
        })?;
        let objects = document
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| VerifyError::Unreadable {
                reason: "no top-level `nftables` array".to_owned(),
            })?;
        Ok(LiveRuleset {
            objects: objects.clone(),
        })
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter_map(move |o| kind_of(o).filter(|(k, _)| *k == kind).map(|(_, body)| body))
    }

    /// Whether the `inet wardbox` table exists.
    pub fn has_table(&self) -> bool {
        self.of_kind("table").any(ours)
    }

    /// The drop counters of our table; a missing counter reads as zero.
    pub fn counters(&self) -> Counters {
        let mut counters = Counters::default();
        for body in self.of_kind("counter").filter(|b| ours(b)) {
            let Some(name) = str_field(body, "name") else {
                continue;
            };
            let number = |f: &str| body.get(f).and_then(Value::as_u64).unwrap_or(0);
            counters.set(
                name,
                Count {
                    packets: number("packets"),
                    bytes: number("bytes"),
                },
            );
        }
        counters
    }

    /// Whether our table holds this named counter.
    pub fn has_counter(&self, name: &str) -> bool {
        self.of_kind("counter")
            .filter(|b| ours(b))
            .any(|b| str_field(b, "name") == Some(name))
    }

    /// Everything outside our table that can let traffic out around it (see `foreign`).
    pub fn foreign_findings(&self) -> Vec<Drift> {
        foreign::findings(&self.objects)
    }

    /// The drift since `last`, the previous reading of our counters in this boot: every
    /// difference from the intent, and every counter of ours that went down.
    pub fn drift_since(&self, intent: &Ruleset, last: Option<&Counters>) -> Vec<Drift> {
        let mut drift = self.drift(intent);
        // A missing table or counter reads as zero; it is reported as missing, not reset.
        if let Some(last) = last
            && self.has_table()
        {
            let resets = counter_resets(last, &self.counters()).into_iter().filter(
                |d| matches!(d, Drift::CounterReset { name, .. } if self.has_counter(name)),
            );
            drift.extend(resets);
        }
        drift
    }

    /// Every difference between this live ruleset and the intended one. Empty means the
    /// kernel enforces exactly the intended policy.
    pub fn drift(&self, intent: &Ruleset) -> Vec<Drift> {
        let mut drift = Vec::new();
        if !self.has_table() {
            drift.push(Drift::TableMissing);
            drift.extend(self.foreign_findings());
            return drift;
        }

        // Counters.
        let live_counters: Vec<&str> = self
            .of_kind("counter")
            .filter(|b| ours(b))
            .filter_map(|b| str_field(b, "name"))
            .collect();
        for counter in intent.counters() {
            if !live_counters.contains(&counter.name.as_ref()) {
                drift.push(Drift::CounterMissing {
                    name: counter.name.to_string(),
                });
            }
        }
        for name in &live_counters {
            if ![COUNTER_IN, COUNTER_OUT, COUNTER_FORWARD].contains(name) {
                drift.push(Drift::UnexpectedObject {
                    kind: "counter".into(),
                    name: (*name).to_owned(),
                });
            }
        }

        // Chains.
        let live_chains: BTreeMap<&str, &Value> = self
            .of_kind("chain")
            .filter(|b| ours(b))
            .filter_map(|b| str_field(b, "name").map(|n| (n, b)))
            .collect();
        for chain in intent.chains() {
            let expected = serde_json::to_value(chain).unwrap_or(Value::Null);
            match live_chains.get(chain.name.as_ref()) {
                None => drift.push(Drift::ChainMissing {
                    chain: chain.name.to_string(),
                }),
                Some(live) => {
                    let (want, found) = (chain_shape(&expected), chain_shape(live));
                    if want != found {
                        drift.push(Drift::ChainChanged {
                            chain: chain.name.to_string(),
                            expected: want,
                            found,
                        });
                    }
                }
            }
        }
        for name in live_chains.keys() {
            if !intent.chains().iter().any(|c| c.name == *name) {
                drift.push(Drift::UnexpectedObject {
                    kind: "chain".into(),
                    name: (*name).to_owned(),
                });
            }
        }

        // Any other object kind in our table (sets, maps, quotas, flowtables...).
        for object in &self.objects {
            let Some((kind, body)) = kind_of(object) else {
                continue;
            };
            if !matches!(kind, "table" | "chain" | "rule" | "counter" | "metainfo") && ours(body) {
                drift.push(Drift::UnexpectedObject {
                    kind: kind.to_owned(),
                    name: str_field(body, "name").unwrap_or("?").to_owned(),
                });
            }
        }

        // Rules, chain by chain, in listing order (nft lists a chain's rules in order).
        let live_rules: Vec<&Value> = self.of_kind("rule").filter(|b| ours(b)).collect();
        if live_rules.is_empty() && !intent.rules().is_empty() {
            drift.push(Drift::TableFlushed);
        } else {
            for chain in intent.chains() {
                let chain = chain.name.as_ref();
                let want: Vec<Value> = intent
                    .rules()
                    .iter()
                    .filter(|r| r.chain == chain)
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                    .collect();
                let have: Vec<&Value> = live_rules
                    .iter()
                    .copied()
                    .filter(|r| str_field(r, "chain") == Some(chain))
                    .collect();
                compare_chain_rules(chain, &want, &have, &mut drift);
            }
            for rule in &live_rules {
                let chain = str_field(rule, "chain").unwrap_or_default();
                if !intent.chains().iter().any(|c| c.name == chain) {
                    drift.push(unexpected_rule(chain, rule));
                }
            }
        }

        drift.extend(self.foreign_findings());
        drift
    }

    /// The tables that repair deletes: every foreign table with a finding.
    pub fn foreign_tables(&self) -> Vec<(NfFamily, String)> {
        let mut tables: Vec<(NfFamily, String)> = Vec::new();
        for drift in self.foreign_findings() {
            let Some((family, table)) = drift.foreign_table() else {
                continue;
            };
            // A family nft lists but this code cannot name cannot be deleted: apply then
            // reads it back, still drifted, and fails closed.
            let Some(family) = family_of(family) else {
                continue;
            };
            if !tables.iter().any(|(f, t)| *f == family && t == table) {
                tables.push((family, table.to_owned()));
            }
        }
        tables
    }
}

fn family_of(name: &str) -> Option<NfFamily> {
    Some(match name {
        "ip" => NfFamily::IP,
        "ip6" => NfFamily::IP6,
        "inet" => NfFamily::INet,
        "arp" => NfFamily::ARP,
        "bridge" => NfFamily::Bridge,
        "netdev" => NfFamily::NetDev,
        _ => return None,
    })
}

/// Whether `now` is lower than `last` in packets or bytes. Counters only ever grow within a
/// boot, so a lower reading means a reset.
fn went_down(last: Count, now: Count) -> bool {
    now.packets < last.packets || now.bytes < last.bytes
}

/// Each drop counter lower than its last reading, as [`Drift::CounterReset`].
pub fn counter_resets(last: &Counters, now: &Counters) -> Vec<Drift> {
    CHAINS
        .iter()
        .filter_map(|(_, _, name)| {
            let (last, now) = (last.get(name)?, now.get(name)?);
            went_down(last, now).then(|| Drift::CounterReset {
                name: (*name).to_owned(),
                last,
                now,
            })
        })
        .collect()
}

/// The counter values a repair writes: for a counter that went down, the last reading plus
/// what was counted since the reset (the evidence comes back); otherwise the live value.
pub fn restored(last: &Counters, now: &Counters) -> Counters {
    let mut out = *now;
    for (_, _, name) in CHAINS {
        if let (Some(l), Some(n)) = (last.get(name), now.get(name))
            && went_down(l, n)
        {
            out.set(
                name,
                Count {
                    packets: l.packets.saturating_add(n.packets),
                    bytes: l.bytes.saturating_add(n.bytes),
                },
            );
        }
    }
    out
}

/// What to keep as the last reading: per counter, the live value unless it went down (then
/// the last reading stays, so the reset is reported until a repair restores it).
pub fn highest(last: Option<&Counters>, now: &Counters) -> Counters {
    let Some(last) = last else {
        return *now;
    };
    let mut out = *now;
    for (_, _, name) in CHAINS {
        if let (Some(l), Some(n)) = (last.get(name), now.get(name))
            && went_down(l, n)
        {
            out.set(name, l);
        }
    }
    out
}

fn unexpected_rule(chain: &str, rule: &Value) -> Drift {
    Drift::RuleUnexpected {
        chain: chain.to_owned(),
        handle: rule.get("handle").and_then(Value::as_u64).unwrap_or(0),
        comment: str_field(rule, "comment").map(str::to_owned),
    }
}

/// Match live rules to intended ones by comment, then compare their expressions and order.
fn compare_chain_rules(chain: &str, want: &[Value], have: &[&Value], drift: &mut Vec<Drift>) {
    let mut matched_order: Vec<usize> = Vec::new();
    let mut used = vec![false; have.len()];
    for rule in want {
        let comment = str_field(rule, "comment").unwrap_or_default();
        let found = have
            .iter()
            .enumerate()
            .find(|(i, live)| !used[*i] && str_field(live, "comment") == Some(comment));
        match found {
            None => drift.push(Drift::RuleMissing {
                chain: chain.to_owned(),
                rule: comment.to_owned(),
            }),
            Some((i, live)) => {
                used[i] = true;
                if live.get("expr") != rule.get("expr") {
                    drift.push(Drift::RuleChanged {
                        chain: chain.to_owned(),
                        rule: comment.to_owned(),
                    });
                }
                matched_order.push(i);
            }
        }
    }
    let mut unexpected = false;
    for (i, live) in have.iter().enumerate() {
        if !used[i] {
            unexpected = true;
            drift.push(unexpected_rule(chain, live));
        }
    }
    // Order matters: an accept moved above a drop changes the verdict. Only worth reporting
    // on its own when nothing else explains the difference.
    if !unexpected && matched_order.windows(2).any(|w| w[0] > w[1]) {
        drift.push(Drift::RulesReordered {
            chain: chain.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::Policy;

    fn intent() -> Ruleset {
        let policy: Policy = toml::from_str(
            r#"
            clinic_lan = ["192.0.2.0/24"]
            [[allow_out]]
            name = "siem"
            dest = "203.0.113.2"
            protocol = "tcp"
            port = 6514
            "#,
        )
        .expect("parses");
        Ruleset::build(&policy.validate().expect("valid"))
    }

    /// What nft would list for the intended ruleset: the render output plus handles and
    /// counter values, wrapped as `nft -j list ruleset` does.
    fn listed(intent: &Ruleset) -> Vec<Value> {
        let mut objects = vec![json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}})];
        for (handle, line) in intent.render().lines().enumerate() {
            let mut object: Value = serde_json::from_str(line).expect("render is JSON");
            if let Some(body) = object.as_object_mut().and_then(|o| o.values_mut().next()) {
                body["handle"] = json!(handle + 1);
            }
            objects.push(object);
        }
        objects
    }

    fn live(objects: Vec<Value>) -> LiveRuleset {
        LiveRuleset::parse(&json!({ "nftables": objects }).to_string()).expect("parses")
    }

    fn kinds(drift: &[Drift]) -> Vec<String> {
        drift.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn identical_ruleset_has_no_drift() {
        let intent = intent();
        assert_eq!(live(listed(&intent)).drift(&intent), vec![]);
    }

    #[test]
    fn missing_table_is_reported_alone() {
        let intent = intent();
        let drift = live(vec![]).drift(&intent);
        assert_eq!(kinds(&drift), vec!["table inet wardbox is missing"]);
    }

    #[test]
    fn flushed_table_is_reported() {
        let intent = intent();
        let objects = listed(&intent)
            .into_iter()
            .filter(|o| o.get("rule").is_none())
            .collect();
        assert_eq!(
            kinds(&live(objects).drift(&intent)),
            vec!["table inet wardbox was flushed: its chains hold no rules"]
        );
    }

    #[test]
    fn deleted_changed_inserted_and_reordered_rules_are_named() {
        let intent = intent();
        let mut objects = listed(&intent);
        // Delete the SIEM allow rule.
        objects.retain(|o| o.pointer("/rule/comment") != Some(&json!("wardbox:output:allow siem")));
        // Change the UI rule's port.
        for o in &mut objects {
            if o.pointer("/rule/comment") == Some(&json!("wardbox:input:ui 192.0.2.0/24")) {
                o["rule"]["expr"][1]["match"]["right"] = json!(8443);
            }
        }
        // Insert an accept-all at the top of output.
        let at = objects
            .iter()
            .position(|o| o.pointer("/rule/chain") == Some(&json!("output")))
            .expect("output rules");
        objects.insert(at, json!({"rule": {"family": "inet", "table": "wardbox", "chain": "output", "handle": 99, "expr": [{"accept": null}]}}));
        // Swap the two first forward... forward has one rule; swap input loopback and established.
        let a = objects
            .iter()
            .position(|o| o.pointer("/rule/comment") == Some(&json!("wardbox:input:loopback")))
            .expect("rule");
        objects.swap(a, a + 1);
        expect_test::expect![[r#"
            [
                "rule `wardbox:input:ui 192.0.2.0/24` in chain input was changed",
                "the rules of chain input are out of order",
                "rule `wardbox:output:allow siem` is missing from chain output",
                "unexpected rule (handle 99) in chain output",
            ]
        "#]]
        .assert_debug_eq(&kinds(&live(objects).drift(&intent)));
    }

    #[test]
    fn chain_policy_counter_and_foreign_chains_are_named() {
        let intent = intent();
        let mut objects = listed(&intent);
        for o in &mut objects {
            if o.pointer("/chain/name") == Some(&json!("output")) {
                o["chain"]["policy"] = json!("accept");
            }
        }
        objects.retain(|o| o.pointer("/counter/name") != Some(&json!("blocked_in")));
        objects.push(json!({"table": {"family": "ip", "name": "filter", "handle": 50}}));
        objects.push(json!({"chain": {"family": "ip", "table": "filter", "name": "OUTPUT", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}));
        objects.push(json!({"chain": {"family": "ip", "table": "filter", "name": "quiet", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}));
        objects.push(json!({"set": {"family": "inet", "table": "wardbox", "name": "exfil", "handle": 77, "type": "ipv4_addr"}}));
        let live = live(objects);
        expect_test::expect![[r#"
            [
                "counter blocked_in is missing",
                "chain output is `type filter hook output priority 0 policy accept`, expected `type filter hook output priority 0 policy drop`",
                "unexpected set `exfil` in table inet wardbox",
                "table ip filter has chain OUTPUT hooked on output with policy accept",
            ]
        "#]].assert_debug_eq(&kinds(&live.drift(&intent)));
        assert_eq!(
            live.foreign_tables(),
            vec![(NfFamily::IP, "filter".to_owned())]
        );
    }

    #[test]
    fn counters_are_read_as_u64() {
        let intent = intent();
        let mut objects = listed(&intent);
        for o in &mut objects {
            if o.pointer("/counter/name") == Some(&json!("blocked_out")) {
                o["counter"]["packets"] = json!(12);
                o["counter"]["bytes"] = json!(7_000_000_000u64);
            }
        }
        let counters = live(objects).counters();
        assert_eq!(
            counters.blocked_out,
            Count {
                packets: 12,
                bytes: 7_000_000_000
            }
        );
        assert_eq!(counters.blocked_in, Count::default());
    }

    fn with_out_counter(mut objects: Vec<Value>, packets: u64, bytes: u64) -> Vec<Value> {
        for o in &mut objects {
            if o.pointer("/counter/name") == Some(&json!("blocked_out")) {
                o["counter"]["packets"] = json!(packets);
                o["counter"]["bytes"] = json!(bytes);
            }
        }
        objects
    }

    #[test]
    fn a_counter_that_went_down_is_drift_and_repair_restores_it() {
        let intent = intent();
        let last = Counters {
            blocked_in: Count {
                packets: 3,
                bytes: 180,
            },
            blocked_out: Count {
                packets: 12,
                bytes: 900,
            },
            blocked_forward: Count::default(),
        };
        // Reset (`nft reset counters`), then two more drops counted.
        let reset = live(with_out_counter(listed(&intent), 2, 120));
        expect_test::expect![[r#"
            [
                "counter blocked_in went down from 3 packets (180 bytes) to 0 packets (0 bytes): it was reset",
                "counter blocked_out went down from 12 packets (900 bytes) to 2 packets (120 bytes): it was reset",
            ]
        "#]]
        .assert_debug_eq(&kinds(&reset.drift_since(&intent, Some(&last))));
        assert_eq!(
            reset.drift_since(&intent, None),
            vec![],
            "no history, nothing to compare"
        );
        assert_eq!(
            restored(&last, &reset.counters()),
            Counters {
                blocked_in: Count {
                    packets: 3,
                    bytes: 180
                },
                blocked_out: Count {
                    packets: 14,
                    bytes: 1020
                },
                blocked_forward: Count::default(),
            }
        );
        // The history keeps the higher reading until a repair restores the counter.
        assert_eq!(highest(Some(&last), &reset.counters()), last);
        // Counters that grew are no drift, and become the new reading.
        let grown = live(with_out_counter(listed(&intent), 20, 1500));
        let before = Counters {
            blocked_out: Count {
                packets: 12,
                bytes: 900,
            },
            ..Counters::default()
        };
        assert_eq!(grown.drift_since(&intent, Some(&before)), vec![]);
        assert_eq!(highest(Some(&before), &grown.counters()), grown.counters());
        // Bytes alone going down is a reset too.
        let fewer_bytes = live(with_out_counter(listed(&intent), 12, 10));
        assert_eq!(
            kinds(&fewer_bytes.drift_since(&intent, Some(&before))).len(),
            1
        );
    }

    #[test]
    fn a_missing_table_or_counter_is_not_also_a_reset() {
        let intent = intent();
        let last = Counters {
            blocked_out: Count {
                packets: 12,
                bytes: 900,
            },
            ..Counters::default()
        };
        assert_eq!(
            kinds(&live(vec![]).drift_since(&intent, Some(&last))),
            vec!["table inet wardbox is missing"]
        );
        let mut objects = listed(&intent);
        objects.retain(|o| o.pointer("/counter/name") != Some(&json!("blocked_out")));
        assert_eq!(
            kinds(&live(objects).drift_since(&intent, Some(&last))),
            vec!["counter blocked_out is missing"]
        );
    }

    #[test]
    fn every_foreign_table_with_a_finding_is_deleted_by_repair() {
        let intent = intent();
        let mut objects = listed(&intent);
        objects.push(json!({"chain": {"family": "netdev", "table": "exfil", "name": "in", "handle": 1, "type": "filter", "hook": "ingress", "prio": 0, "policy": "drop"}}));
        objects.push(json!({"rule": {"family": "netdev", "table": "exfil", "chain": "in", "handle": 2, "expr": [{"fwd": {"dev": "ext0"}}]}}));
        objects.push(json!({"rule": {"family": "netdev", "table": "exfil", "chain": "in", "handle": 3, "expr": [{"dup": {"dev": "ext0"}}]}}));
        objects.push(json!({"chain": {"family": "bridge", "table": "br", "name": "f", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}));
        objects.push(json!({"chain": {"family": "arp", "table": "quiet", "name": "o", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}));
        assert_eq!(
            live(objects).foreign_tables(),
            vec![
                (NfFamily::NetDev, "exfil".to_owned()),
                (NfFamily::Bridge, "br".to_owned())
            ],
            "the drop-only arp table is left alone"
        );
    }

    #[test]
    fn garbage_is_unreadable() {
        assert!(LiveRuleset::parse("not json").is_err());
        assert!(LiveRuleset::parse("{}").is_err());
    }
}
