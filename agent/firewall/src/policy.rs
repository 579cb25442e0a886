//! The firewall policy as IT writes it in the `[firewall]` configuration section, and its
//! validation.
//!
//! [`Policy`] is what serde reads: addresses are plain strings so that a malformed one is
//! reported by [`Policy::validate`] with the exact configuration key, not by a generic
//! deserialisation error. Only a [`ValidPolicy`] can be turned into a ruleset, so an
//! unvalidated policy cannot reach the kernel.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The configuration section the policy lives in; error keys start with it.
pub const SECTION: &str = "firewall";

/// TCP port of the web UI, the only port clinic LAN hosts may reach.
pub const UI_PORT: u16 = 443;

/// TCP port of SSH, reachable only from `admin_ssh` subnets (none by default).
pub const SSH_PORT: u16 = 22;

/// The allow-list is meant to be read at a glance by a compliance officer; a long one is a
/// sign that the box is being used as a general-purpose host.
pub const MAX_ALLOW_OUT: usize = 32;

/// Longest allow-list entry name. Names end up in nftables rule comments (128 bytes max) and
/// in drift reports.
pub const MAX_NAME_LEN: usize = 32;

/// `[firewall]` policy: who may reach the box, and the few internal places the box may reach.
/// Everything else is dropped, in and out, IPv4 and IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Clinic LAN subnets whose hosts may open the web UI (TCP 443). Private (RFC 1918),
    /// unique-local (fc00::/7) or documentation ranges only: the UI must never face the
    /// internet, because replies to an allowed client carry PHI.
    #[serde(default)]
    pub clinic_lan: Vec<String>,
    /// Admin subnets allowed to reach SSH (TCP 22). Empty by default: SSH is closed.
    #[serde(default)]
    pub admin_ssh: Vec<String>,
    /// Internal DNS resolvers the box may query (UDP and TCP 53). Empty by default: the box
    /// needs no name resolution to serve the clinic, and DNS is a classic exfiltration path.
    #[serde(default)]
    pub dns_resolvers: Vec<String>,
    /// The short, explicit list of internal destinations the box may open connections to
    /// (SIEM/syslog, NTP, LDAP...). Each names one protocol and one port.
    #[serde(default)]
    pub allow_out: Vec<AllowOut>,
}

/// One internal destination the box may reach.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowOut {
    /// Short name shown in rule comments, drift reports and the admin page, e.g. `siem`.
    pub name: String,
    /// An internal address or subnet, e.g. `10.0.5.20` or `10.0.5.0/28`.
    pub dest: String,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Destination port, 1-65535. Kept wider than `u16` so that an out-of-range value is
    /// reported by [`Policy::validate`] with its key rather than as a type error.
    pub port: u32,
}

/// Transport protocol of an allow-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The nftables payload protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy that passed [`Policy::validate`]: parsed, canonical, internal-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPolicy {
    clinic_lan: Vec<IpNet>,
    admin_ssh: Vec<IpNet>,
    dns_resolvers: Vec<IpAddr>,
    allow_out: Vec<ValidAllow>,
}

/// A validated allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAllow {
    pub name: String,
    pub dest: IpNet,
    pub protocol: Protocol,
    pub port: u16,
}

impl ValidPolicy {
    pub fn clinic_lan(&self) -> &[IpNet] {
        &self.clinic_lan
    }
    pub fn admin_ssh(&self) -> &[IpNet] {
        &self.admin_ssh
    }
    pub fn dns_resolvers(&self) -> &[IpAddr] {
        &self.dns_resolvers
    }
    pub fn allow_out(&self) -> &[ValidAllow] {
        &self.allow_out
    }
}

/// What is wrong with one configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The value is not an address or subnet.
    #[error("`{value}` is not an IP address or subnet (expected e.g. 10.0.5.0/24 or fd00:1::/64)")]
    Malformed { value: String },
    /// The value is not a single address (DNS resolvers are hosts, not subnets).
    #[error("`{value}` is not a single IP address (a resolver is one host, e.g. 10.0.5.2)")]
    NotAnAddress { value: String },
    /// Host bits are set: `10.0.5.7/24` is ambiguous, say `10.0.5.0/24` or `10.0.5.7/32`.
    #[error(
        "`{value}` has host bits set; write the network `{network}` or the single host `{host}`"
    )]
    HostBitsSet {
        value: String,
        network: String,
        host: String,
    },
    /// Covers every address: it would open the box to or from the internet.
    #[error("`{value}` matches every address and would open the box to the internet")]
    OpensInternet { value: String },
    /// Not inside a private, unique-local or documentation range.
    #[error(
        "`{value}` is not an internal network (allowed: 10.0.0.0/8, 172.16.0.0/12, \
         192.168.0.0/16, fc00::/7, and the never-routed documentation ranges 192.0.2.0/24, \
         198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); a public address would let data leave \
         the clinic"
    )]
    NotInternal { value: String },
    /// Overlaps another entry of the same list, so one of them is redundant or a typo.
    #[error("`{value}` overlaps `{other}` at {other_key}")]
    Overlaps {
        value: String,
        other: String,
        other_key: String,
    },
    /// The port is 0 or above 65535.
    #[error("port {port} is out of range (1-65535)")]
    PortOutOfRange { port: u32 },
    /// The name is empty, too long or uses characters other than a-z, 0-9, `-`, `_`.
    #[error(
        "name `{name}` must be 1-{MAX_NAME_LEN} characters of a-z, 0-9, `-` or `_` (it appears \
         in firewall rule comments)"
    )]
    BadName { name: String },
    /// Two allow-list entries share a name.
    #[error("name `{name}` is already used at {other_key}")]
    DuplicateName { name: String, other_key: String },
    /// The allow-list is longer than [`MAX_ALLOW_OUT`].
    #[error("{count} entries; at most {MAX_ALLOW_OUT} internal destinations are allowed")]
    TooMany { count: usize },
    /// No clinic LAN subnet: nobody could reach the web UI.
    #[error("no clinic LAN subnet is listed, so no one could reach the web UI on port 443")]
    NoClinicLan,
}

/// One invalid configuration value, named by its key (`firewall.allow_out[2].port`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct PolicyError {
    pub key: String,
    pub problem: Problem,
}

/// Every problem found in a policy, so that IT can fix them in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid firewall policy:\n{}", list(.0))]
pub struct PolicyErrors(pub Vec<PolicyError>);

fn list(errors: &[PolicyError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  - {e}")).collect();
    lines.join("\n")
}

/// Networks a destination or source may live in. Private and unique-local ranges are the
/// clinic's own; the documentation ranges (RFC 5737, RFC 3849) are never routed on the
/// internet, so allowing them opens nothing, and the traffic tests use them.
fn internal_ranges() -> [IpNet; 8] {
    // The literals are constants; a parse failure would be a typo caught by the unit tests.
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "fc00::/7",
        "2001:db8::/32",
    ]
    .map(|s| {
        s.parse()
            .unwrap_or_else(|_| unreachable!("constant range {s}"))
    })
}

fn is_internal(net: &IpNet) -> bool {
    internal_ranges().iter().any(|range| range.contains(net))
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Parse an address or subnet strictly: a bare address is a single host, host bits must be
/// clear, and the result must be internal and not cover everything.
fn parse_net(value: &str) -> Result<IpNet, Problem> {
    let net: IpNet = match value.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match value.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err(Problem::Malformed {
                    value: value.to_owned(),
                });
            }
        },
    };
    if net.prefix_len() == 0 {
        return Err(Problem::OpensInternet {
            value: value.to_owned(),
        });
    }
    if net.trunc() != net {
        return Err(Problem::HostBitsSet {
            value: value.to_owned(),
            network: net.trunc().to_string(),
            host: IpNet::from(net.addr()).to_string(),
        });
    }
    if !is_internal(&net) {
        return Err(Problem::NotInternal {
            value: value.to_owned(),
        });
    }
    Ok(net)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Collects errors while walking the policy.
struct Check {
    errors: Vec<PolicyError>,
}

impl Check {
    fn fail(&mut self, key: String, problem: Problem) {
        self.errors.push(PolicyError { key, problem });
    }

    /// Parse a list of subnets, refusing overlaps inside the list.
    fn subnets(&mut self, field: &str, values: &[String]) -> Vec<IpNet> {
        let mut ok: Vec<(usize, IpNet)> = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let key = format!("{SECTION}.{field}[{i}]");
            match parse_net(value) {
                Ok(net) => {
                    if let Some((j, _)) = ok.iter().find(|(_, other)| overlaps(&net, other)) {
                        self.fail(
                            key,
                            Problem::Overlaps {
                                value: value.clone(),
                                other: values[*j].clone(),
                                other_key: format!("{SECTION}.{field}[{j}]"),
                            },
                        );
                    } else {
                        ok.push((i, net));
                    }
                }
                Err(problem) => self.fail(key, problem),
            }
        }
        ok.into_iter().map(|(_, net)| net).collect()
    }
}

impl Policy {
    /// Check every value; on success the policy can be built into a ruleset. All problems are
    /// reported at once, each with its configuration key.
    pub fn validate(&self) -> Result<ValidPolicy, PolicyErrors> {
        let mut check = Check { errors: Vec::new() };

        if self.clinic_lan.is_empty() {
            check.fail(format!("{SECTION}.clinic_lan"), Problem::NoClinicLan);
        }
        let clinic_lan = check.subnets("clinic_lan", &self.clinic_lan);
        let admin_ssh = check.subnets("admin_ssh", &self.admin_ssh);

        let mut dns_resolvers: Vec<(usize, IpAddr)> = Vec::new();
        for (i, value) in self.dns_resolvers.iter().enumerate() {
            let key = format!("{SECTION}.dns_resolvers[{i}]");
            let Ok(addr) = value.parse::<IpAddr>() else {
                let problem = if value.parse::<IpNet>().is_ok() {
                    Problem::NotAnAddress {
                        value: value.clone(),
                    }
                } else {
                    Problem::Malformed {
                        value: value.clone(),
                    }
                };
                check.fail(key, problem);
                continue;
            };
            if let Err(problem) = parse_net(value) {
                check.fail(key, problem);
            } else if let Some((j, _)) = dns_resolvers.iter().find(|(_, other)| *other == addr) {
                check.fail(
                    key,
                    Problem::Overlaps {
                        value: value.clone(),
                        other: self.dns_resolvers[*j].clone(),
                        other_key: format!("{SECTION}.dns_resolvers[{j}]"),
                    },
                );
            } else {
                dns_resolvers.push((i, addr));
            }
        }

        if self.allow_out.len() > MAX_ALLOW_OUT {
            check.fail(
                format!("{SECTION}.allow_out"),
                Problem::TooMany {
                    count: self.allow_out.len(),
                },
            );
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut allow_out: Vec<(usize, ValidAllow)> = Vec::new();
        for (i, entry) in self.allow_out.iter().enumerate() {
            let key = |field: &str| format!("{SECTION}.allow_out[{i}].{field}");
            let mut entry_ok = true;
            if !valid_name(&entry.name) {
                check.fail(
                    key("name"),
                    Problem::BadName {
                        name: entry.name.clone(),
                    },
                );
                entry_ok = false;
            } else if let Some(j) = names.get(entry.name.as_str()) {
                check.fail(
                    key("name"),
                    Problem::DuplicateName {
                        name: entry.name.clone(),
                        other_key: format!("{SECTION}.allow_out[{j}].name"),
                    },
                );
                entry_ok = false;
            } else {
                names.insert(&entry.name, i);
            }
            let port = match u16::try_from(entry.port) {
                Ok(port) if port != 0 => Some(port),
                _ => {
                    check.fail(key("port"), Problem::PortOutOfRange { port: entry.port });
                    None
                }
            };
            let dest = match parse_net(&entry.dest) {
                Ok(dest) => Some(dest),
                Err(problem) => {
                    check.fail(key("dest"), problem);
                    None
                }
            };
            let (Some(port), Some(dest), true) = (port, dest, entry_ok) else {
                continue;
            };
            // Overlap matters only for the same protocol and port: the same server may well
            // be listed once for syslog and once for NTP.
            if let Some((j, _)) = allow_out.iter().find(|(_, other)| {
                other.protocol == entry.protocol
                    && other.port == port
                    && overlaps(&other.dest, &dest)
            }) {
                check.fail(
                    key("dest"),
                    Problem::Overlaps {
                        value: entry.dest.clone(),
                        other: self.allow_out[*j].dest.clone(),
                        other_key: format!("{SECTION}.allow_out[{j}].dest"),
                    },
                );
                continue;
            }
            allow_out.push((
                i,
                ValidAllow {
                    name: entry.name.clone(),
                    dest,
                    protocol: entry.protocol,
                    port,
                },
            ));
        }

        if check.errors.is_empty() {
            Ok(ValidPolicy {
                clinic_lan,
                admin_ssh,
                dns_resolvers: dns_resolvers.into_iter().map(|(_, a)| a).collect(),
                allow_out: allow_out.into_iter().map(|(_, a)| a).collect(),
            })
        } else {
            Err(PolicyErrors(check.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(toml_text: &str, expected: Expect) {
        let policy: Policy = toml::from_str(toml_text).expect("test TOML parses");
        let actual = match policy.validate() {
            Ok(valid) => format!("ok: {valid:?}"),
            Err(errors) => errors.to_string(),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn constant_ranges_parse() {
        assert_eq!(internal_ranges().len(), 8);
    }

    #[test]
    fn minimal_policy_is_valid() {
        check(
            r#"clinic_lan = ["192.168.10.0/24", "fd00:10::/64"]"#,
            expect![[
                r#"ok: ValidPolicy { clinic_lan: [192.168.10.0/24, fd00:10::/64], admin_ssh: [], dns_resolvers: [], allow_out: [] }"#
            ]],
        );
    }

    #[test]
    fn full_policy_is_valid() {
        check(
            r#"
            clinic_lan = ["10.1.0.0/16"]
            admin_ssh = ["10.1.99.0/24"]
            dns_resolvers = ["10.1.0.2", "fd00::53"]
            [[allow_out]]
            name = "siem"
            dest = "10.1.5.20"
            protocol = "tcp"
            port = 6514
            [[allow_out]]
            name = "ntp"
            dest = "10.1.5.20/32"
            protocol = "udp"
            port = 123
            "#,
            expect![[
                r#"ok: ValidPolicy { clinic_lan: [10.1.0.0/16], admin_ssh: [10.1.99.0/24], dns_resolvers: [10.1.0.2, fd00::53], allow_out: [ValidAllow { name: "siem", dest: 10.1.5.20/32, protocol: Tcp, port: 6514 }, ValidAllow { name: "ntp", dest: 10.1.5.20/32, protocol: Udp, port: 123 }] }"#
            ]],
        );
    }

    #[test]
    fn internet_wide_entries_are_refused() {
        check(
            r#"
            clinic_lan = ["0.0.0.0/0", "::/0"]
            [[allow_out]]
            name = "anything"
            dest = "0.0.0.0/0"
            protocol = "tcp"
            port = 443
            "#,
            expect![[r#"
                invalid firewall policy:
                  - firewall.clinic_lan[0]: `0.0.0.0/0` matches every address and would open the box to the internet
                  - firewall.clinic_lan[1]: `::/0` matches every address and would open the box to the internet
                  - firewall.allow_out[0].dest: `0.0.0.0/0` matches every address and would open the box to the internet"#]],
        );
    }

    #[test]
    fn public_and_special_destinations_are_refused() {
        check(
            r#"
            clinic_lan = ["192.168.1.0/24"]
            dns_resolvers = ["8.8.8.8", "2001:4860:4860::8888", "127.0.0.53"]
            [[allow_out]]
            name = "cloud"
            dest = "52.1.2.0/24"
            protocol = "tcp"
            port = 443
            [[allow_out]]
            name = "big"
            dest = "0.0.0.0/1"
            protocol = "udp"
            port = 53
            [[allow_out]]
            name = "mcast"
            dest = "ff02::1"
            protocol = "udp"
            port = 5353
            "#,
            expect![[r#"
                invalid firewall policy:
                  - firewall.dns_resolvers[0]: `8.8.8.8` is not an internal network (allowed: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, and the never-routed documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); a public address would let data leave the clinic
                  - firewall.dns_resolvers[1]: `2001:4860:4860::8888` is not an internal network (allowed: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, and the never-routed documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); a public address would let data leave the clinic
                  - firewall.dns_resolvers[2]: `127.0.0.53` is not an internal network (allowed: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, and the never-routed documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); a public address would let data leave the clinic
                  - firewall.allow_out[0].dest: `52.1.2.0/24` is not an internal network (allowed: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, and the never-routed documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); a public address would let data leave the clinic
                  - firewall.allow_out[1].dest: `0.0.0.0/1` is not an internal network (allowed: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, and the never-routed documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); a public address would let data leave the clinic
                  - firewall.allow_out[2].dest: `ff02::1` is not an internal network (allowed: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, and the never-routed documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); a public address would let data leave the clinic"#]],
        );
    }

    #[test]
    fn malformed_overlapping_and_out_of_range_values_are_named() {
        check(
            r#"
            clinic_lan = ["192.168.1.0/24", "192.168.1.128/25", "192.168.300.0/24", "10.0.0.7/8"]
            admin_ssh = ["fd00::/8", "fd00:1::/64"]
            dns_resolvers = ["10.0.0.0/24", "dns.local", "10.0.0.2", "10.0.0.2"]
            [[allow_out]]
            name = "siem"
            dest = "10.0.5.0/24"
            protocol = "tcp"
            port = 70000
            [[allow_out]]
            name = "Syslog!"
            dest = "10.0.5.1"
            protocol = "udp"
            port = 0
            [[allow_out]]
            name = "siem"
            dest = "10.0.5.9"
            protocol = "tcp"
            port = 6514
            [[allow_out]]
            name = "siem2"
            dest = "10.0.4.0/23"
            protocol = "tcp"
            port = 6514
            [[allow_out]]
            name = "siem3"
            dest = "10.0.5.9"
            protocol = "tcp"
            port = 6514
            "#,
            expect![[r#"
                invalid firewall policy:
                  - firewall.clinic_lan[1]: `192.168.1.128/25` overlaps `192.168.1.0/24` at firewall.clinic_lan[0]
                  - firewall.clinic_lan[2]: `192.168.300.0/24` is not an IP address or subnet (expected e.g. 10.0.5.0/24 or fd00:1::/64)
                  - firewall.clinic_lan[3]: `10.0.0.7/8` has host bits set; write the network `10.0.0.0/8` or the single host `10.0.0.7/32`
                  - firewall.admin_ssh[1]: `fd00:1::/64` overlaps `fd00::/8` at firewall.admin_ssh[0]
                  - firewall.dns_resolvers[0]: `10.0.0.0/24` is not a single IP address (a resolver is one host, e.g. 10.0.5.2)
                  - firewall.dns_resolvers[1]: `dns.local` is not an IP address or subnet (expected e.g. 10.0.5.0/24 or fd00:1::/64)
                  - firewall.dns_resolvers[3]: `10.0.0.2` overlaps `10.0.0.2` at firewall.dns_resolvers[2]
                  - firewall.allow_out[0].port: port 70000 is out of range (1-65535)
                  - firewall.allow_out[1].name: name `Syslog!` must be 1-32 characters of a-z, 0-9, `-` or `_` (it appears in firewall rule comments)
                  - firewall.allow_out[1].port: port 0 is out of range (1-65535)
                  - firewall.allow_out[2].name: name `siem` is already used at firewall.allow_out[0].name
                  - firewall.allow_out[4].dest: `10.0.5.9` overlaps `10.0.4.0/23` at firewall.allow_out[3].dest"#]],
        );
    }

    #[test]
    fn empty_clinic_lan_is_refused() {
        check(
            "",
            expect![[r#"
                invalid firewall policy:
                  - firewall.clinic_lan: no clinic LAN subnet is listed, so no one could reach the web UI on port 443"#]],
        );
    }

    #[test]
    fn unknown_keys_and_protocols_are_refused_by_serde() {
        let err = toml::from_str::<Policy>("clinic_lan = []\nallow_all = true")
            .expect_err("unknown key refused");
        assert!(
            err.to_string().contains("unknown field `allow_all`"),
            "{err}"
        );
        let err = toml::from_str::<Policy>(
            "[[allow_out]]\nname = \"x\"\ndest = \"10.0.0.1\"\nprotocol = \"icmp\"\nport = 1",
        )
        .expect_err("icmp refused");
        assert!(err.to_string().contains("unknown variant `icmp`"), "{err}");
    }

    #[test]
    fn too_many_allow_out_entries_are_refused() {
        let policy = Policy {
            clinic_lan: vec!["10.0.0.0/24".into()],
            allow_out: (0..=MAX_ALLOW_OUT)
                .map(|i| AllowOut {
                    name: format!("d{i}"),
                    dest: format!("10.9.0.{i}"),
                    protocol: Protocol::Tcp,
                    port: 514,
                })
                .collect(),
            ..Policy::default()
        };
        let errors = policy.validate().expect_err("33 entries refused");
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].key, "firewall.allow_out");
    }
}
