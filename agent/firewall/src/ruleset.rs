//! The ruleset as data: one nftables table that Wardbox owns, built from a [`ValidPolicy`].
//!
//! Pure code: nothing here talks to the kernel. The same [`Ruleset`] is what `apply` commits
//! and what `verify` compares the live ruleset against, so intent and check cannot disagree.
//!
//! Shape (`inet wardbox`, all base chains `policy drop`):
//! - `input`: loopback, established/related, IPv6 neighbour discovery, TCP 443 from each
//!   clinic LAN subnet, TCP 22 from each admin subnet, then `counter blocked_in drop`.
//! - `output`: loopback, established/related, IPv6 neighbour discovery, DNS to each resolver
//!   (UDP and TCP), each allow-list entry, then `counter blocked_out drop`.
//! - `forward`: `counter blocked_forward drop` (the box routes nothing).
//!
//! Every rule carries a comment `wardbox:<chain>:<what>` that names it in drift reports.
//! Rules are written in the exact form `nft -j list ruleset` prints them back (single hosts
//! as plain addresses, no redundant `meta l4proto`), so the comparison in `verify` is plain
//! JSON equality; the traffic tests would fail if a kernel or nft version printed otherwise.

use std::borrow::Cow;

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem,
};
use nftables::schema::{self, NfListObject, Nftables};
use nftables::stmt::{self, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::policy::{SSH_PORT, UI_PORT, ValidPolicy};

/// The table Wardbox owns. Nothing else of the live ruleset is touched, except foreign tables
/// that can let traffic out around it, which repair removes (see `foreign`).
pub const TABLE: &str = "wardbox";
/// `inet` covers IPv4 and IPv6 with one set of chains.
pub const FAMILY: NfFamily = NfFamily::INet;

/// Named counters on the drop rules, read by the admin page.
pub const COUNTER_IN: &str = "blocked_in";
pub const COUNTER_OUT: &str = "blocked_out";
pub const COUNTER_FORWARD: &str = "blocked_forward";

/// The base chains: name, hook, and the counter on their final drop rule.
pub const CHAINS: [(&str, NfHook, &str); 3] = [
    ("input", NfHook::Input, COUNTER_IN),
    ("output", NfHook::Output, COUNTER_OUT),
    ("forward", NfHook::Forward, COUNTER_FORWARD),
];

/// Filter priority 0: the standard slot. Order between tables does not matter for our
/// purpose, since a drop in any base chain is final.
pub const PRIORITY: i32 = 0;

/// The whole intended ruleset of the `inet wardbox` table, in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    counters: Vec<schema::Counter<'static>>,
    chains: Vec<schema::Chain<'static>>,
    rules: Vec<schema::Rule<'static>>,
}

/// Initial values for the named counters, so a repair does not wipe the evidence of
/// blocked attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// The drop counters of the three chains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub blocked_in: Count,
    pub blocked_out: Count,
    pub blocked_forward: Count,
}

impl Counters {
    pub(crate) fn get(&self, name: &str) -> Option<Count> {
        match name {
            COUNTER_IN => Some(self.blocked_in),
            COUNTER_OUT => Some(self.blocked_out),
            COUNTER_FORWARD => Some(self.blocked_forward),
            _ => None,
        }
    }

    pub(crate) fn set(&mut self, name: &str, count: Count) {
        match name {
            COUNTER_IN => self.blocked_in = count,
            COUNTER_OUT => self.blocked_out = count,
            COUNTER_FORWARD => self.blocked_forward = count,
            _ => {}
        }
    }
}

fn s(text: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(text.into())
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// `ip daddr 10.0.0.0/8` / `ip6 saddr fd00::1`. A single host is written as a plain address
/// because that is how nft lists it back.
fn addr_match(net: &IpNet, field: &'static str) -> Statement<'static> {
    let protocol = match net {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    };
    let right = if net.prefix_len() == net.max_prefix_len() {
        Expression::String(s(net.addr().to_string()))
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(s(net.network().to_string()))),
            len: u32::from(net.prefix_len()),
        }))
    };
    eq(payload(protocol, field), right)
}

fn port_match(protocol: &'static str, port: u16) -> Statement<'static> {
    eq(
        payload(protocol, "dport"),
        Expression::Number(u32::from(port)),
    )
}

fn meta_eq(key: MetaKey, value: &'static str) -> Statement<'static> {
    eq(
        Expression::Named(NamedExpression::Meta(Meta { key })),
        Expression::String(Cow::Borrowed(value)),
    )
}

fn established() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: Cow::Borrowed("state"),
            family: None,
            dir: None,
        })),
        right: Expression::List(vec![
            Expression::String(Cow::Borrowed("established")),
            Expression::String(Cow::Borrowed("related")),
        ]),
        op: Operator::IN,
    })
}

/// IPv6 neighbour solicitation/advertisement: IPv6's ARP. Without it no IPv6 peer, allowed
/// or not, can be reached at all. Hop limit 255 proves the packet was not routed: these
/// messages cannot reach beyond the local link.
fn neighbour_discovery() -> [Statement<'static>; 2] {
    [
        eq(payload("ip6", "hoplimit"), Expression::Number(255)),
        eq(
            payload("icmpv6", "type"),
            Expression::Named(NamedExpression::Set(vec![
                SetItem::Element(Expression::String(Cow::Borrowed("nd-neighbor-solicit"))),
                SetItem::Element(Expression::String(Cow::Borrowed("nd-neighbor-advert"))),
            ])),
        ),
    ]
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn rule(
    chain: &str,
    what: String,
    mut expr: Vec<Statement<'static>>,
    verdict: Statement<'static>,
) -> schema::Rule<'static> {
    expr.push(verdict);
    schema::Rule {
        family: FAMILY,
        table: Cow::Borrowed(TABLE),
        chain: s(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(s(format!("wardbox:{chain}:{what}"))),
    }
}

fn drop_counted(chain: &str, counter: &'static str) -> schema::Rule<'static> {
    rule(
        chain,
        "drop".to_owned(),
        vec![Statement::Counter(stmt::Counter::Named(Cow::Borrowed(
            counter,
        )))],
        Statement::Drop(None),
    )
}

impl Ruleset {
    /// Build the ruleset for a validated policy. Deterministic: the same policy always gives
    /// the same objects in the same order (the policy's own order).
    pub fn build(policy: &ValidPolicy) -> Ruleset {
        let counters = CHAINS
            .iter()
            .map(|(_, _, counter)| schema::Counter {
                family: FAMILY,
                table: Cow::Borrowed(TABLE),
                name: Cow::Borrowed(counter),
                handle: None,
                packets: Some(0),
                bytes: Some(0),
            })
            .collect();
        let chains = CHAINS
            .iter()
            .map(|(name, hook, _)| schema::Chain {
                family: FAMILY,
                table: Cow::Borrowed(TABLE),
                name: Cow::Borrowed(name),
                newname: None,
                handle: None,
                _type: Some(NfChainType::Filter),
                hook: Some(*hook),
                prio: Some(PRIORITY),
                dev: None,
                policy: Some(NfChainPolicy::Drop),
            })
            .collect();

        let mut rules = Vec::new();
        let input = "input";
        rules.push(rule(
            input,
            "loopback".into(),
            vec![meta_eq(MetaKey::Iif, "lo")],
            accept(),
        ));
        rules.push(rule(
            input,
            "established".into(),
            vec![established()],
            accept(),
        ));
        rules.push(rule(
            input,
            "ipv6-nd".into(),
            neighbour_discovery().into(),
            accept(),
        ));
        for net in policy.clinic_lan() {
            rules.push(rule(
                input,
                format!("ui {net}"),
                vec![addr_match(net, "saddr"), port_match("tcp", UI_PORT)],
                accept(),
            ));
        }
        for net in policy.admin_ssh() {
            rules.push(rule(
                input,
                format!("ssh {net}"),
                vec![addr_match(net, "saddr"), port_match("tcp", SSH_PORT)],
                accept(),
            ));
        }
        rules.push(drop_counted(input, COUNTER_IN));

        let output = "output";
        rules.push(rule(
            output,
            "loopback".into(),
            vec![meta_eq(MetaKey::Oif, "lo")],
            accept(),
        ));
        rules.push(rule(
            output,
            "established".into(),
            vec![established()],
            accept(),
        ));
        rules.push(rule(
            output,
            "ipv6-nd".into(),
            neighbour_discovery().into(),
            accept(),
        ));
        for resolver in policy.dns_resolvers() {
            let net = IpNet::from(*resolver);
            for protocol in ["udp", "tcp"] {
                rules.push(rule(
                    output,
                    format!("dns {resolver} {protocol}"),
                    vec![addr_match(&net, "daddr"), port_match(protocol, 53)],
                    accept(),
                ));
            }
        }
        for allow in policy.allow_out() {
            rules.push(rule(
                output,
                format!("allow {}", allow.name),
                vec![
                    addr_match(&allow.dest, "daddr"),
                    port_match(allow.protocol.as_str(), allow.port),
                ],
                accept(),
            ));
        }
        rules.push(drop_counted(output, COUNTER_OUT));

        rules.push(drop_counted("forward", COUNTER_FORWARD));

        Ruleset {
            counters,
            chains,
            rules,
        }
    }

    pub fn counters(&self) -> &[schema::Counter<'static>] {
        &self.counters
    }

    pub fn chains(&self) -> &[schema::Chain<'static>] {
        &self.chains
    }

    pub fn rules(&self) -> &[schema::Rule<'static>] {
        &self.rules
    }

    fn table() -> schema::Table<'static> {
        schema::Table {
            family: FAMILY,
            name: Cow::Borrowed(TABLE),
            handle: None,
        }
    }

    /// The one batch that replaces the table atomically: `add table` (so that the delete
    /// cannot fail when the table is absent), `delete table`, then the whole table again.
    /// nft commits a batch as one kernel transaction: there is no instant at which the table
    /// is half-built or absent. `foreign` names tables to delete in the same transaction
    /// (those `foreign` found drift in). `counters` carries the drop counts over the
    /// replacement.
    pub fn commit_batch(
        &self,
        counters: &Counters,
        foreign: &[(NfFamily, String)],
    ) -> serde_json::Value {
        let mut batch = Batch::new();
        batch.add(NfListObject::Table(Self::table()));
        batch.delete(NfListObject::Table(Self::table()));
        for (family, name) in foreign {
            batch.delete(NfListObject::Table(schema::Table {
                family: *family,
                name: s(name.clone()),
                handle: None,
            }));
        }
        self.add_table_to(&mut batch);
        with_counter_values(batch.to_nftables(), counters)
    }

    fn add_table_to(&self, batch: &mut Batch<'static>) {
        batch.add(NfListObject::Table(Self::table()));
        // The crate types counter values as u32, too small for a byte count: the carried-over
        // values are written into the JSON by `with_counter_values`.
        for counter in &self.counters {
            batch.add(NfListObject::Counter(counter.clone()));
        }
        for chain in &self.chains {
            batch.add(NfListObject::Chain(chain.clone()));
        }
        for rule in &self.rules {
            batch.add(NfListObject::Rule(rule.clone()));
        }
    }

    /// The ruleset as one JSON object per line (the descriptive form `nft -j list ruleset`
    /// uses, without handles): what `wardbox firewall render` prints and what the snapshot
    /// tests pin.
    pub fn render(&self) -> String {
        let mut batch = Batch::new();
        batch.add_obj(NfListObject::Table(Self::table()));
        for counter in &self.counters {
            batch.add_obj(NfListObject::Counter(counter.clone()));
        }
        for chain in &self.chains {
            batch.add_obj(NfListObject::Chain(chain.clone()));
        }
        for rule in &self.rules {
            batch.add_obj(NfListObject::Rule(rule.clone()));
        }
        let mut out = String::new();
        for object in batch.to_nftables().objects.iter() {
            // Serialising plain data structures to JSON cannot fail.
            out.push_str(&serde_json::to_string(object).unwrap_or_default());
            out.push('\n');
        }
        out
    }
}

/// Serialise a commit batch, writing the carried-over counter values (u64) into the counter
/// objects. The crate's counter type holds u32, too small for a byte count.
fn with_counter_values(batch: Nftables<'_>, counters: &Counters) -> serde_json::Value {
    // Serialising plain data structures to JSON cannot fail.
    let mut value = serde_json::to_value(batch).unwrap_or(serde_json::Value::Null);
    if let Some(objects) = value.get_mut("nftables").and_then(|v| v.as_array_mut()) {
        for object in objects {
            let Some(fields) = object
                .pointer_mut("/add/counter")
                .and_then(|c| c.as_object_mut())
            else {
                continue;
            };
            let count = fields
                .get("name")
                .and_then(|n| n.as_str())
                .and_then(|n| counters.get(n))
                .unwrap_or_default();
            fields.insert("packets".into(), count.packets.into());
            fields.insert("bytes".into(), count.bytes.into());
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::policy::Policy;

    fn check(toml_text: &str, expected: Expect) {
        let policy: Policy = toml::from_str(toml_text).expect("test TOML parses");
        let valid = policy.validate().expect("test policy is valid");
        let ruleset = Ruleset::build(&valid);
        // Determinism: building twice gives the same text.
        assert_eq!(ruleset.render(), Ruleset::build(&valid).render());
        expected.assert_eq(&ruleset.render());
    }

    #[test]
    fn minimal_policy() {
        check(
            r#"clinic_lan = ["192.168.10.0/24"]"#,
            expect![[r#"
                {"table":{"family":"inet","name":"wardbox"}}
                {"counter":{"family":"inet","table":"wardbox","name":"blocked_in","packets":0,"bytes":0}}
                {"counter":{"family":"inet","table":"wardbox","name":"blocked_out","packets":0,"bytes":0}}
                {"counter":{"family":"inet","table":"wardbox","name":"blocked_forward","packets":0,"bytes":0}}
                {"chain":{"family":"inet","table":"wardbox","name":"input","type":"filter","hook":"input","prio":0,"policy":"drop"}}
                {"chain":{"family":"inet","table":"wardbox","name":"output","type":"filter","hook":"output","prio":0,"policy":"drop"}}
                {"chain":{"family":"inet","table":"wardbox","name":"forward","type":"filter","hook":"forward","prio":0,"policy":"drop"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iif"}},"right":"lo","op":"=="}},{"accept":null}],"comment":"wardbox:input:loopback"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}],"comment":"wardbox:input:established"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"ip6","field":"hoplimit"}},"right":255,"op":"=="}},{"match":{"left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":{"set":["nd-neighbor-solicit","nd-neighbor-advert"]},"op":"=="}},{"accept":null}],"comment":"wardbox:input:ipv6-nd"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"192.168.10.0","len":24}},"op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":443,"op":"=="}},{"accept":null}],"comment":"wardbox:input:ui 192.168.10.0/24"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"counter":"blocked_in"},{"drop":null}],"comment":"wardbox:input:drop"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"meta":{"key":"oif"}},"right":"lo","op":"=="}},{"accept":null}],"comment":"wardbox:output:loopback"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}],"comment":"wardbox:output:established"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"payload":{"protocol":"ip6","field":"hoplimit"}},"right":255,"op":"=="}},{"match":{"left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":{"set":["nd-neighbor-solicit","nd-neighbor-advert"]},"op":"=="}},{"accept":null}],"comment":"wardbox:output:ipv6-nd"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"counter":"blocked_out"},{"drop":null}],"comment":"wardbox:output:drop"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"forward","expr":[{"counter":"blocked_forward"},{"drop":null}],"comment":"wardbox:forward:drop"}}
            "#]],
        );
    }

    #[test]
    fn dual_stack_with_ssh_dns_and_allow_list() {
        check(
            r#"
            clinic_lan = ["10.1.0.0/16", "fd00:1::/64"]
            admin_ssh = ["10.1.99.7"]
            dns_resolvers = ["10.1.0.2"]
            [[allow_out]]
            name = "siem"
            dest = "10.1.5.20"
            protocol = "tcp"
            port = 6514
            [[allow_out]]
            name = "ntp"
            dest = "fd00:5::/120"
            protocol = "udp"
            port = 123
            "#,
            expect![[r#"
                {"table":{"family":"inet","name":"wardbox"}}
                {"counter":{"family":"inet","table":"wardbox","name":"blocked_in","packets":0,"bytes":0}}
                {"counter":{"family":"inet","table":"wardbox","name":"blocked_out","packets":0,"bytes":0}}
                {"counter":{"family":"inet","table":"wardbox","name":"blocked_forward","packets":0,"bytes":0}}
                {"chain":{"family":"inet","table":"wardbox","name":"input","type":"filter","hook":"input","prio":0,"policy":"drop"}}
                {"chain":{"family":"inet","table":"wardbox","name":"output","type":"filter","hook":"output","prio":0,"policy":"drop"}}
                {"chain":{"family":"inet","table":"wardbox","name":"forward","type":"filter","hook":"forward","prio":0,"policy":"drop"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iif"}},"right":"lo","op":"=="}},{"accept":null}],"comment":"wardbox:input:loopback"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}],"comment":"wardbox:input:established"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"ip6","field":"hoplimit"}},"right":255,"op":"=="}},{"match":{"left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":{"set":["nd-neighbor-solicit","nd-neighbor-advert"]},"op":"=="}},{"accept":null}],"comment":"wardbox:input:ipv6-nd"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"10.1.0.0","len":16}},"op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":443,"op":"=="}},{"accept":null}],"comment":"wardbox:input:ui 10.1.0.0/16"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"ip6","field":"saddr"}},"right":{"prefix":{"addr":"fd00:1::","len":64}},"op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":443,"op":"=="}},{"accept":null}],"comment":"wardbox:input:ui fd00:1::/64"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"10.1.99.7","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22,"op":"=="}},{"accept":null}],"comment":"wardbox:input:ssh 10.1.99.7/32"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"input","expr":[{"counter":"blocked_in"},{"drop":null}],"comment":"wardbox:input:drop"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"meta":{"key":"oif"}},"right":"lo","op":"=="}},{"accept":null}],"comment":"wardbox:output:loopback"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}],"comment":"wardbox:output:established"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"payload":{"protocol":"ip6","field":"hoplimit"}},"right":255,"op":"=="}},{"match":{"left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":{"set":["nd-neighbor-solicit","nd-neighbor-advert"]},"op":"=="}},{"accept":null}],"comment":"wardbox:output:ipv6-nd"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"10.1.0.2","op":"=="}},{"match":{"left":{"payload":{"protocol":"udp","field":"dport"}},"right":53,"op":"=="}},{"accept":null}],"comment":"wardbox:output:dns 10.1.0.2 udp"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"10.1.0.2","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":53,"op":"=="}},{"accept":null}],"comment":"wardbox:output:dns 10.1.0.2 tcp"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"10.1.5.20","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":6514,"op":"=="}},{"accept":null}],"comment":"wardbox:output:allow siem"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"match":{"left":{"payload":{"protocol":"ip6","field":"daddr"}},"right":{"prefix":{"addr":"fd00:5::","len":120}},"op":"=="}},{"match":{"left":{"payload":{"protocol":"udp","field":"dport"}},"right":123,"op":"=="}},{"accept":null}],"comment":"wardbox:output:allow ntp"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"output","expr":[{"counter":"blocked_out"},{"drop":null}],"comment":"wardbox:output:drop"}}
                {"rule":{"family":"inet","table":"wardbox","chain":"forward","expr":[{"counter":"blocked_forward"},{"drop":null}],"comment":"wardbox:forward:drop"}}
            "#]],
        );
    }

    /// The JSON with object keys in sorted order: the order of a `serde_json::Value` map
    /// depends on whether another crate in the build enables serde_json's `preserve_order`.
    fn sorted_keys(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: std::collections::BTreeMap<_, _> =
                    map.iter().map(|(k, v)| (k.clone(), sorted_keys(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted_keys).collect()),
            other => other.clone(),
        }
    }

    #[test]
    fn commit_batch_replaces_the_table_in_one_transaction() {
        let policy: Policy = toml::from_str(r#"clinic_lan = ["192.168.10.0/24"]"#).expect("parses");
        let ruleset = Ruleset::build(&policy.validate().expect("valid"));
        let counters = Counters {
            blocked_out: Count {
                packets: 7,
                bytes: 5_000_000_000,
            },
            ..Counters::default()
        };
        let value = ruleset.commit_batch(&counters, &[(NfFamily::IP, "rogue".to_owned())]);
        let objects = value["nftables"].as_array().expect("array");
        let head: Vec<String> = objects.iter().take(7).map(|o| sorted_keys(o).to_string()).collect();
        expect![[r#"
            {"add":{"table":{"family":"inet","name":"wardbox"}}}
            {"delete":{"table":{"family":"inet","name":"wardbox"}}}
            {"delete":{"table":{"family":"ip","name":"rogue"}}}
            {"add":{"table":{"family":"inet","name":"wardbox"}}}
            {"add":{"counter":{"bytes":0,"family":"inet","name":"blocked_in","packets":0,"table":"wardbox"}}}
            {"add":{"counter":{"bytes":5000000000,"family":"inet","name":"blocked_out","packets":7,"table":"wardbox"}}}
            {"add":{"counter":{"bytes":0,"family":"inet","name":"blocked_forward","packets":0,"table":"wardbox"}}}"#]]
        .assert_eq(&head.join("\n"));
        assert_eq!(objects.len(), 3 + 1 + 3 + 3 + ruleset.rules().len());
    }
}
