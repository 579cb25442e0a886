//! The blocked-egress counters for the admin page, read from the live nftables table.

use std::sync::Arc;

use wardbox_firewall::Firewall;

use super::clinical::{EgressCounters, NoEgressCounters};
use crate::stages::firewall::{FirewallConfig, NftFirewall};

/// Reads the drop counters of the `inet wardbox` table each time the page is viewed, so the
/// figures are the kernel's, not a copy.
#[derive(Debug)]
pub struct NftEgressCounters(Firewall);

impl EgressCounters for NftEgressCounters {
    fn blocked(&self) -> Result<Vec<(String, u64, u64)>, String> {
        let status = self.0.status().map_err(|e| format!("the firewall's counters cannot be read: {e}"))?;
        let c = status.counters;
        let mut rows = vec![
            ("outgoing (dropped by the egress policy)".to_string(), c.blocked_out.packets, c.blocked_out.bytes),
            ("incoming (dropped)".to_string(), c.blocked_in.packets, c.blocked_in.bytes),
            ("forwarded (dropped)".to_string(), c.blocked_forward.packets, c.blocked_forward.bytes),
        ];
        if !status.drift.is_empty() {
            // Counters of a drifted table are not evidence of anything; say so on the page.
            rows.push((format!("WARNING: the live ruleset has drifted ({} findings)", status.drift.len()), 0, 0));
        }
        Ok(rows)
    }
}

/// The counters for this configuration: the real table, or a plain statement why there are none.
pub fn for_firewall(config: &FirewallConfig) -> Arc<dyn EgressCounters> {
    if !config.enabled {
        return Arc::new(NoEgressCounters(
            "the egress firewall is disabled in this configuration (dev profile): nothing is blocked".into(),
        ));
    }
    match NftFirewall::open(config) {
        Ok(fw) => Arc::new(NftEgressCounters(fw)),
        Err(e) => Arc::new(NoEgressCounters(format!("the firewall's counters cannot be read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_firewall_says_plainly_that_nothing_is_blocked() {
        let counters = for_firewall(&FirewallConfig::default());
        let why = counters.blocked().expect_err("no counters without a firewall");
        assert!(why.contains("disabled") && why.contains("nothing is blocked"), "{why}");
    }
}
