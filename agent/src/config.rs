//! Configuration: one TOML file, validated at load, with errors that name the key and the problem.
//!
//! Each subsystem owns the type of its own section (`stages::*::…Config`); this module only puts
//! them together, parses, and runs every section's validation so that a bad file is refused
//! before anything is touched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stages;

/// The profile and the error type live in `settings`, the leaf every section's owner uses;
/// re-exported here because the rest of the agent thinks of them as configuration.
pub use crate::settings::{ConfigError, Profile};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub profile: Profile,
    /// Where the agent keeps state that must survive a reboot and is not PHI (checkpoint log,
    /// sealed-key blobs). On the box this is on the unencrypted state partition.
    pub state_dir: PathBuf,
    #[serde(default)]
    pub web: WebConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub volume: stages::unlock::VolumeConfig,
    #[serde(default)]
    pub firewall: stages::firewall::FirewallConfig,
    #[serde(default)]
    pub gpu: stages::gpu::GpuConfig,
    #[serde(default)]
    pub engine: stages::engine::EngineConfig,
    /// Updates from a USB stick (`crate::update`).
    #[serde(default)]
    pub update: crate::update::UpdateConfig,
    #[serde(default)]
    pub clinical: crate::clinical::ClinicalConfig,
    /// The alert detector's thresholds (`wardbox-alerts`).
    #[serde(default)]
    pub alerts: wardbox_alerts::AlertsConfig,
    /// Where alerts are delivered besides the admin page; each destination opens one firewall rule.
    #[serde(default)]
    pub alert_delivery: crate::alerting::DeliveryConfig,
    /// Where and when the box backs up (`crate::backup`).
    #[serde(default)]
    pub backup: crate::backup::schedule::BackupConfig,
    /// When free space on the data volume is low (`crate::disk`).
    #[serde(default)]
    pub disk: crate::disk::DiskConfig,
    /// The file this configuration was loaded from (backups copy it as it is); `None` for a
    /// configuration built in code.
    #[serde(skip)]
    pub source_file: Option<PathBuf>,
}

/// `[web]` is owned by the web module (listen address, TLS, sessions, lockout, LDAP).
pub use crate::web::WebConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// File name of the SQLCipher database inside the unlocked data directory.
    pub file_name: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { file_name: "wardbox.db".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// How often the chain head is checkpointed to the journal and the checkpoint log.
    pub checkpoint_interval_secs: u64,
    /// Records older than this many years may leave the box only through export; nothing
    /// inside the window is ever deleted (HIPAA: 6 years).
    pub retention_years: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { checkpoint_interval_secs: 24 * 3600, retention_years: 6 }
    }
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Self::parse(&text, path)?;
        config.source_file = Some(path.to_owned());
        Ok(config)
    }

    /// Parse and validate configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let mut config = config;
        // Each alert destination is one outbound rule, derived here so that the ruleset, its
        // verification and drift repair all know it; nothing to open while the firewall is off.
        if config.firewall.enabled {
            config.firewall.policy.allow_out.extend(config.alert_delivery.egress());
            config.firewall.policy.allow_out.extend(config.backup.egress());
        }
        config.validate()?;
        Ok(config)
    }

    /// The built-in dev configuration: everything under one directory, no root needed.
    pub fn dev_defaults(base: &Path) -> Config {
        Config {
            profile: Profile::Dev,
            state_dir: base.join("state"),
            web: WebConfig::dev(),
            store: StoreConfig::default(),
            audit: AuditConfig::default(),
            volume: stages::unlock::VolumeConfig::dev(base),
            firewall: stages::firewall::FirewallConfig::default(),
            gpu: stages::gpu::GpuConfig::default(),
            engine: stages::engine::EngineConfig::default(),
            update: crate::update::UpdateConfig::default(),
            clinical: crate::clinical::ClinicalConfig::dev(),
            alerts: wardbox_alerts::AlertsConfig::default(),
            alert_delivery: crate::alerting::DeliveryConfig::default(),
            backup: crate::backup::schedule::BackupConfig::default(),
            disk: crate::disk::DiskConfig::default(),
            source_file: None,
        }
    }

    /// Every cross-field and semantic check; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.state_dir.is_absolute() {
            return Err(ConfigError::invalid("state_dir", "must be an absolute path"));
        }
        let name = &self.store.file_name;
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(ConfigError::invalid(
                "store.file_name",
                "must be a plain file name (no '/', not empty, not hidden)",
            ));
        }
        if self.audit.checkpoint_interval_secs < 60 {
            return Err(ConfigError::invalid(
                "audit.checkpoint_interval_secs",
                "must be at least 60 seconds",
            ));
        }
        if self.audit.retention_years < 6 {
            return Err(ConfigError::invalid(
                "audit.retention_years",
                "HIPAA requires at least 6 years of retention",
            ));
        }
        if self.profile == Profile::Appliance && self.web.listen.ip().is_loopback() {
            // Not an error of safety, but an appliance nobody can reach is a misconfiguration.
            tracing::warn!("web.listen is a loopback address: clinic workstations cannot reach the box");
        }
        self.web.validate(self.profile)?;
        self.volume.validate(self.profile)?;
        // Before the firewall: a bad destination is named by its own key, not by the rule it implies.
        self.alert_delivery.validate(self.firewall.enabled)?;
        self.backup.validate(self.firewall.enabled)?;
        self.firewall.validate(self.profile)?;
        self.gpu.validate()?;
        self.engine.validate()?;
        self.update.validate(self.profile)?;
        self.clinical.validate()?;
        self.disk.validate()?;
        self.alerts.validate().map_err(|e| ConfigError::invalid(format!("alerts.{}", e.key), e.problem))?;
        if self.clinical.demo_records && self.profile == Profile::Appliance {
            return Err(ConfigError::invalid("clinical.demo_records", "invented demo patients are for the dev profile only"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    const MINIMAL: &str = "profile = \"dev\"\nstate_dir = \"/tmp/wb/state\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"/tmp/wb/data\"\n";

    #[test]
    fn minimal_dev_config_loads() {
        let c = parse(MINIMAL).expect("minimal config");
        assert_eq!(c.profile, Profile::Dev);
        assert_eq!(c.store.file_name, "wardbox.db");
    }

    /// Each kind of bad config gives its own clear error that names the key.
    #[test]
    fn bad_configs_name_the_key_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("profile = \"prod\"\nstate_dir = \"/x\"", "unknown variant `prod`"),
            ("state_dir = \"/x\"", "missing field `profile`"),
            ("profile = \"dev\"\nstate_dir = \"relative\"", "`state_dir`: must be an absolute path"),
            ("profile = \"dev\"\nstate_dir = \"/x\"\ncolour = 1", "unknown field `colour`"),
            ("profile = \"dev\"\nstate_dir = \"/x\"\n[web]\nlisten = \"not an address\"", "invalid socket address"),
            ("profile = \"dev\"\nstate_dir = \"/x\"\n[store]\nfile_name = \"../x.db\"", "`store.file_name`"),
            ("profile = \"dev\"\nstate_dir = \"/x\"\n[audit]\ncheckpoint_interval_secs = 1\nretention_years = 6", "`audit.checkpoint_interval_secs`"),
            ("profile = \"dev\"\nstate_dir = \"/x\"\n[audit]\ncheckpoint_interval_secs = 3600\nretention_years = 2", "at least 6 years"),
            ("profile = \"dev\"\nstate_dir = \"/x\"\n[web]\nlisten = 5", "invalid type"),
            ("profile = \"dev\"\nstate_dir = \"/x\"\n[disk]\nwarn_free_percent = 5\ncritical_free_percent = 5", "`disk.critical_free_percent`"),
            ("profile = = ", "not valid"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "config {text:?}\n gave {err:?}\n wanted {expected:?}");
        }
    }
}
