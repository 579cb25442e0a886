//! Firewall stage: apply the egress-deny ruleset before any network service starts, and keep
//! it in place afterwards.
//!
//! The policy, the ruleset, verification and repair live in `wardbox-firewall`; this file
//! only owns the `[firewall]` section, picks the implementation (nft, or none in dev) and
//! turns outcomes into stage reports, alerts and audit records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use wardbox_firewall::{AllowOut, ApplyOutcome, CounterHistory, Drift, Firewall, Nft, Policy, Ruleset, Status};

use crate::audit::{AuditEvent, AuditLog, EventKind};
use crate::boot::{Protection, StageReport};
use crate::settings::{ConfigError, Profile};

/// Where Debian installs nft. An absolute path, so `PATH` cannot choose the program.
pub const DEFAULT_NFT: &str = "/usr/sbin/nft";
/// How often the live ruleset is re-verified after boot.
pub const DEFAULT_VERIFY_INTERVAL_SECS: u64 = 30;

/// `[firewall]`: whether the egress-deny ruleset is applied, and its policy.
///
/// The policy keys (`clinic_lan`, `admin_ssh`, `dns_resolvers`, `[[firewall.allow_out]]`)
/// sit directly in the section; see docs/firewall.md.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "RawFirewallConfig", into = "RawFirewallConfig")]
pub struct FirewallConfig {
    /// Off only in the dev profile, where the box runs on a laptop that needs its network.
    pub enabled: bool,
    /// The nft program, by absolute path.
    pub nft_path: PathBuf,
    /// Seconds between re-verifications of the live ruleset (5 to 3600).
    pub verify_interval_secs: u64,
    /// Who may reach the box and where the box may go.
    pub policy: Policy,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            nft_path: PathBuf::from(DEFAULT_NFT),
            verify_interval_secs: DEFAULT_VERIFY_INTERVAL_SECS,
            policy: Policy::default(),
        }
    }
}

/// The section as written: every key flat, unknown keys refused. (`serde(flatten)` cannot be
/// combined with `deny_unknown_fields`, hence this twin.)
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawFirewallConfig {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_nft")]
    nft_path: PathBuf,
    #[serde(default = "default_interval")]
    verify_interval_secs: u64,
    #[serde(default)]
    clinic_lan: Vec<String>,
    #[serde(default)]
    admin_ssh: Vec<String>,
    #[serde(default)]
    dns_resolvers: Vec<String>,
    #[serde(default)]
    allow_out: Vec<AllowOut>,
}

fn default_nft() -> PathBuf {
    PathBuf::from(DEFAULT_NFT)
}

fn default_interval() -> u64 {
    DEFAULT_VERIFY_INTERVAL_SECS
}

impl From<RawFirewallConfig> for FirewallConfig {
    fn from(raw: RawFirewallConfig) -> Self {
        FirewallConfig {
            enabled: raw.enabled,
            nft_path: raw.nft_path,
            verify_interval_secs: raw.verify_interval_secs,
            policy: Policy {
                clinic_lan: raw.clinic_lan,
                admin_ssh: raw.admin_ssh,
                dns_resolvers: raw.dns_resolvers,
                allow_out: raw.allow_out,
            },
        }
    }
}

impl From<FirewallConfig> for RawFirewallConfig {
    fn from(config: FirewallConfig) -> Self {
        RawFirewallConfig {
            enabled: config.enabled,
            nft_path: config.nft_path,
            verify_interval_secs: config.verify_interval_secs,
            clinic_lan: config.policy.clinic_lan,
            admin_ssh: config.policy.admin_ssh,
            dns_resolvers: config.policy.dns_resolvers,
            allow_out: config.policy.allow_out,
        }
    }
}

impl FirewallConfig {
    pub fn validate(&self, profile: Profile) -> Result<(), ConfigError> {
        if profile == Profile::Appliance && !self.enabled {
            return Err(ConfigError::invalid(
                "firewall.enabled",
                "the appliance profile requires the egress-deny firewall",
            ));
        }
        if !self.nft_path.is_absolute() {
            return Err(ConfigError::invalid(
                "firewall.nft_path",
                format!("`{}` must be an absolute path, e.g. {DEFAULT_NFT}", self.nft_path.display()),
            ));
        }
        if !(5..=3600).contains(&self.verify_interval_secs) {
            return Err(ConfigError::invalid(
                "firewall.verify_interval_secs",
                "must be between 5 and 3600 seconds",
            ));
        }
        // A policy written down is checked even while the firewall is off (dev), so that it
        // is known good before it is enabled.
        if self.enabled || self.policy != Policy::default() {
            self.ruleset()?;
        }
        Ok(())
    }

    /// The ruleset this section describes. Errors name the first bad key and list the others.
    pub fn ruleset(&self) -> Result<Ruleset, ConfigError> {
        match self.policy.validate() {
            Ok(valid) => Ok(Ruleset::build(&valid)),
            Err(errors) => {
                let mut all = errors.0.iter();
                let Some(first) = all.next() else {
                    return Err(ConfigError::invalid("firewall", "invalid policy"));
                };
                let mut problem = first.problem.to_string();
                for other in all {
                    problem.push_str(&format!("; also {other}"));
                }
                Err(ConfigError::invalid(first.key.clone(), problem))
            }
        }
    }
}

/// What a re-check after boot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// The firewall is off (dev profile).
    Disabled,
    /// The kernel enforces exactly the intended ruleset.
    Enforced,
    /// Drift was found and repaired.
    Repaired(Vec<Drift>),
    /// The ruleset could not be read, applied or verified: egress is not known to be closed.
    Failed(String),
}

/// The firewall stage's interface.
pub trait EgressFirewall: Send + Sync + std::fmt::Debug {
    /// Apply the ruleset atomically, read it back and check it matches.
    fn apply(&self) -> Result<StageReport, String>;

    /// Verify the live ruleset and repair any drift.
    fn recheck(&self) -> Recheck;
}

/// `state_dir` holds the last readings of the drop counters (see [`counter_history`]).
pub fn firewall(config: &FirewallConfig, state_dir: &Path) -> Box<dyn EgressFirewall> {
    if config.enabled {
        Box::new(NftFirewall { config: config.clone(), history: counter_history(state_dir) })
    } else {
        Box::new(NoFirewall)
    }
}

/// The last readings of the drop counters: a counter lower than its last reading in the same
/// boot was reset, which is drift. Shared by the agent and the `wardbox firewall` commands, so
/// a reset is noticed across agent restarts and by a check from a shell alike.
pub fn counter_history(state_dir: &Path) -> CounterHistory {
    CounterHistory::new(state_dir.join("firewall-counters.json"))
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

    fn recheck(&self) -> Recheck {
        Recheck::Disabled
    }
}

/// The real firewall: the `inet wardbox` nftables table, applied and verified with nft.
#[derive(Debug)]
pub struct NftFirewall {
    config: FirewallConfig,
    history: CounterHistory,
}

impl NftFirewall {
    /// Build the library's [`Firewall`]: checks the policy (again: the config may have been
    /// built in code) and that nft exists at its path.
    pub fn open(config: &FirewallConfig) -> Result<Firewall, String> {
        let ruleset = config.ruleset().map_err(|e| e.to_string())?;
        let nft = Nft::new(&config.nft_path).map_err(|e| e.to_string())?;
        Ok(Firewall::new(nft, ruleset))
    }
}

/// One line for IT about an enforced ruleset.
pub fn describe(firewall: &Firewall, status: &Status) -> String {
    format!(
        "table inet wardbox enforced ({} rules); blocked so far: {} packets in, {} out",
        firewall.ruleset().rules().len(),
        status.counters.blocked_in.packets,
        status.counters.blocked_out.packets
    )
}

/// The drift list in one line.
pub fn drift_list(drift: &[Drift]) -> String {
    let parts: Vec<String> = drift.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl EgressFirewall for NftFirewall {
    fn apply(&self) -> Result<StageReport, String> {
        let firewall = Self::open(&self.config)?;
        let outcome = firewall.apply_recorded(&self.history).map_err(|e| format!("egress firewall not applied: {e}"))?;
        let status = firewall.status().map_err(|e| format!("egress firewall applied but not verifiable: {e}"))?;
        if !status.is_enforced() {
            return Err(format!("egress firewall drifted right after applying: {}", drift_list(&status.drift)));
        }
        let what = match &outcome {
            ApplyOutcome::Unchanged => "already in place".to_owned(),
            ApplyOutcome::Applied { repaired } if repaired == &[Drift::TableMissing] => "applied".to_owned(),
            ApplyOutcome::Applied { repaired } => format!("applied, replacing a drifted ruleset ({})", drift_list(repaired)),
        };
        Ok(StageReport::ok(format!("{what}: {}", describe(&firewall, &status))))
    }

    fn recheck(&self) -> Recheck {
        let firewall = match Self::open(&self.config) {
            Ok(f) => f,
            Err(e) => return Recheck::Failed(e),
        };
        match firewall.apply_recorded(&self.history) {
            Ok(ApplyOutcome::Unchanged) => Recheck::Enforced,
            Ok(ApplyOutcome::Applied { repaired }) => Recheck::Repaired(repaired),
            Err(e) => Recheck::Failed(e.to_string()),
        }
    }
}

/// Re-verify the firewall every `config.verify_interval_secs` until `stop`: drift is repaired,
/// then reported through `alert` (the admin page and the journal) and an audit record. A
/// failure to verify is reported once per distinct message, not on every tick. Returns
/// `None` when the firewall is disabled.
///
/// The daemon starts it after boot, next to its other background checks:
/// `stages::firewall::spawn_watch(&config.firewall, &config.state_dir, audit.clone(), move |m| raise(&state, &status_path, "firewall", m), stop_rx.clone())`.
pub fn spawn_watch(
    config: &FirewallConfig,
    state_dir: &Path,
    audit: AuditLog,
    alert: impl Fn(String) + Send + 'static,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.enabled {
        return None;
    }
    let firewall: Arc<dyn EgressFirewall> = Arc::from(firewall(config, state_dir));
    let every = Duration::from_secs(config.verify_interval_secs);
    Some(tokio::spawn(watch_loop(firewall, every, audit, alert, stop)))
}

async fn watch_loop(
    firewall: Arc<dyn EgressFirewall>,
    every: Duration,
    audit: AuditLog,
    alert: impl Fn(String) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    // The boot stage has just verified; the first tick fires at once, skip it.
    tick.tick().await;
    let mut last_failure: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let fw = firewall.clone();
        let result = tokio::task::spawn_blocking(move || fw.recheck())
            .await
            .unwrap_or_else(|e| Recheck::Failed(format!("the firewall check task failed: {e}")));
        if let Some(event) = report(&result, &mut last_failure) {
            alert(event.message.clone());
            if let Err(e) = audit.append(event.audit).await {
                tracing::error!("cannot audit a firewall finding: {e}");
            }
        }
    }
}

/// What to tell IT about one re-check.
#[derive(Debug)]
struct Finding {
    message: String,
    audit: AuditEvent,
}

/// Decide whether a re-check result is news. Pure.
fn report(result: &Recheck, last_failure: &mut Option<String>) -> Option<Finding> {
    match result {
        Recheck::Disabled | Recheck::Enforced => {
            if last_failure.take().is_some() {
                tracing::info!("firewall verified again after a failure");
            }
            None
        }
        Recheck::Repaired(drift) => {
            *last_failure = None;
            Some(Finding {
                message: format!("firewall drift found and repaired: {}", drift_list(drift)),
                audit: AuditEvent::new(
                    EventKind::SecurityAlert,
                    "system",
                    json!({ "source": "firewall", "event": "drift_repaired", "drift": drift }),
                ),
            })
        }
        Recheck::Failed(reason) => {
            if last_failure.as_deref() == Some(reason.as_str()) {
                return None;
            }
            *last_failure = Some(reason.clone());
            Some(Finding {
                message: format!("firewall could not be verified or repaired, outbound traffic may NOT be blocked: {reason}"),
                audit: AuditEvent::new(
                    EventKind::SecurityAlert,
                    "system",
                    json!({ "source": "firewall", "event": "verify_failed", "reason": reason }),
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FirewallConfig, String> {
        let config: FirewallConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate(Profile::Appliance).map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn flat_section_parses_and_round_trips() {
        let text = r#"
            enabled = true
            clinic_lan = ["192.168.10.0/24"]
            [[allow_out]]
            name = "siem"
            dest = "192.168.10.20"
            protocol = "tcp"
            port = 6514
        "#;
        let config = parse(text).expect("valid");
        assert_eq!(config.nft_path, PathBuf::from(DEFAULT_NFT));
        assert_eq!(config.policy.allow_out.len(), 1);
        let again: FirewallConfig = toml::from_str(&toml::to_string(&config).expect("serialises")).expect("parses");
        assert_eq!(again, config);
    }

    #[test]
    fn bad_sections_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("enabled = false", "`firewall.enabled`: the appliance profile requires"),
            ("enabled = true\nclinic_lan = [\"10.0.0.0/8\"]\nnft_path = \"nft\"", "`firewall.nft_path`"),
            ("enabled = true\nclinic_lan = [\"10.0.0.0/8\"]\nverify_interval_secs = 1", "`firewall.verify_interval_secs`"),
            ("enabled = true\nclinic_lan = [\"0.0.0.0/0\"]", "`firewall.clinic_lan[0]`: `0.0.0.0/0` matches every address"),
            ("enabled = true\nclinic_lan = [\"10.0.0.0/8\", \"10.1.0.0/16\", \"::/0\"]", "overlaps `10.0.0.0/8`"),
            ("enabled = true\nclinic_lan = [\"10.0.0.0/8\", \"10.1.0.0/16\", \"::/0\"]", "also firewall.clinic_lan[2]"),
            ("enabled = true\nclinic_lan = [\"10.0.0.0/8\"]\n[[allow_out]]\nname = \"x\"\ndest = \"8.8.8.8\"\nprotocol = \"udp\"\nport = 53", "`firewall.allow_out[0].dest`: `8.8.8.8` is not an internal network"),
            ("enabled = true\nclinic_lan = [\"10.0.0.0/8\"]\n[[allow_out]]\nname = \"x\"\ndest = \"10.0.0.1\"\nprotocol = \"tcp\"\nport = 65536", "`firewall.allow_out[0].port`: port 65536 is out of range"),
            ("enabled = true\nclinic_lan = [\"10.0.0.0/8\"]\nopen = true", "unknown field `open`"),
            ("enabled = true", "`firewall.clinic_lan`: no clinic LAN subnet"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(expected), "section {text:?}\n gave {err:?}\n wanted {expected:?}");
        }
    }

    #[test]
    fn dev_default_is_off_and_valid() {
        let config = FirewallConfig::default();
        config.validate(Profile::Dev).expect("dev default valid");
        let state = Path::new("/nonexistent/state");
        assert_eq!(firewall(&config, state).recheck(), Recheck::Disabled);
        let report = firewall(&config, state).apply().expect("dev apply reports");
        assert_eq!(report.missing, vec![Protection::EgressFirewall]);
    }

    #[test]
    fn a_missing_nft_fails_the_stage() {
        let config = FirewallConfig {
            enabled: true,
            nft_path: PathBuf::from("/nonexistent/nft"),
            policy: Policy { clinic_lan: vec!["10.0.0.0/8".into()], ..Policy::default() },
            ..FirewallConfig::default()
        };
        let state = Path::new("/nonexistent/state");
        let err = firewall(&config, state).apply().expect_err("fails closed");
        assert!(err.contains("install the Debian package `nftables`"), "{err}");
        assert!(matches!(firewall(&config, state).recheck(), Recheck::Failed(_)));
    }

    /// A firewall whose re-checks return a script: the loop's plumbing (alert, audit record,
    /// stop) is tested here; the repairs themselves are tested against nft in a namespace.
    #[derive(Debug)]
    struct Scripted(std::sync::Mutex<std::collections::VecDeque<Recheck>>);

    impl EgressFirewall for Scripted {
        fn apply(&self) -> Result<StageReport, String> {
            Ok(StageReport::ok("scripted"))
        }
        fn recheck(&self) -> Recheck {
            self.0.lock().map(|mut q| q.pop_front()).ok().flatten().unwrap_or(Recheck::Enforced)
        }
    }

    #[tokio::test]
    async fn the_watch_alerts_and_audits_each_finding_then_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let key = crate::store::StoreKey::random();
        let (mut store, _) = crate::store::Store::open_or_create(&path, &key).expect("store");
        store.migrate().expect("migrate");
        let (audit, writer) = AuditLog::start(&path, &key).expect("audit");

        let script = [
            Recheck::Enforced,
            Recheck::Repaired(vec![Drift::TableFlushed]),
            Recheck::Failed("nft: Operation not permitted".into()),
            Recheck::Failed("nft: Operation not permitted".into()),
            Recheck::Enforced,
        ];
        let firewall: Arc<dyn EgressFirewall> = Arc::new(Scripted(std::sync::Mutex::new(script.into())));
        let (alerts_tx, mut alerts_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watch_loop(
            firewall,
            Duration::from_millis(20),
            audit.clone(),
            move |m| {
                let _ = alerts_tx.send(m);
            },
            stop_rx,
        ));
        let first = alerts_rx.recv().await.expect("an alert");
        assert_eq!(first, "firewall drift found and repaired: table inet wardbox was flushed: its chains hold no rules");
        let second = alerts_rx.recv().await.expect("an alert");
        assert!(second.starts_with("firewall could not be verified or repaired"), "{second}");
        // Let the rest of the script run: the repeated failure must not alert again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the watch stops").expect("no panic");
        assert!(alerts_rx.try_recv().is_err(), "one alert per finding");

        drop(audit);
        writer.join();
        let details: Vec<String> = store
            .conn()
            .prepare("SELECT kind, detail FROM audit ORDER BY seq")
            .and_then(|mut st| {
                st.query_map([], |r| Ok(format!("{} {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("read audit");
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(details[0].starts_with("security_alert "), "{details:?}");
        assert!(details[0].contains(r#""event":"drift_repaired""#) && details[0].contains(r#""drift":"table_flushed""#), "{details:?}");
        assert!(details[1].contains(r#""event":"verify_failed""#), "{details:?}");
    }

    #[test]
    fn findings_are_reported_once() {
        let mut last = None;
        assert!(report(&Recheck::Enforced, &mut last).is_none());
        let repaired = report(&Recheck::Repaired(vec![Drift::TableMissing]), &mut last).expect("news");
        assert_eq!(repaired.message, "firewall drift found and repaired: table inet wardbox is missing");
        assert_eq!(repaired.audit.detail["drift"][0]["drift"], "table_missing");
        let failed = Recheck::Failed("nft: permission denied".into());
        assert!(report(&failed, &mut last).is_some());
        assert!(report(&failed, &mut last).is_none(), "the same failure is not repeated");
        assert!(report(&Recheck::Enforced, &mut last).is_none());
        assert!(report(&failed, &mut last).is_some(), "a failure after recovery is news again");
    }
}
