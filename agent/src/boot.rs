//! The boot spine: the ordered stages of the supervisor and the record each one leaves.
//!
//! This module decides; it performs no side effects itself. Each stage's work lives behind the
//! narrow interface in `crate::stages::*`, and the spine only runs them in order, times them,
//! judges their results against the profile and stops at the first failed security stage, so
//! that nothing after a failed security stage can serve PHI.

use std::time::Instant;

use serde::Serialize;

use crate::settings::Profile;

/// The stages, in the only order the box runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    /// Load configuration and firmware policy; check Secure Boot / TPM presence.
    Config,
    /// Unseal the volume key and open the data volume.
    Unlock,
    /// Apply and verify the egress-deny ruleset.
    Firewall,
    /// Open the SQLCipher store and run migrations.
    Store,
    /// Probe GPUs and decide placement.
    Gpu,
    /// Start the inference engine and wait for it to answer.
    Engine,
    /// Start the HTTPS server and report readiness.
    Serve,
}

impl StageName {
    pub const ALL: [StageName; 7] = [
        StageName::Config,
        StageName::Unlock,
        StageName::Firewall,
        StageName::Store,
        StageName::Gpu,
        StageName::Engine,
        StageName::Serve,
    ];

    /// Security stages fail closed: when one fails, no later stage runs.
    pub fn is_security_stage(self) -> bool {
        matches!(
            self,
            StageName::Config | StageName::Unlock | StageName::Firewall | StageName::Store
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Config => "config",
            StageName::Unlock => "unlock",
            StageName::Firewall => "firewall",
            StageName::Store => "store",
            StageName::Gpu => "gpu",
            StageName::Engine => "engine",
            StageName::Serve => "serve",
        }
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protection the appliance profile requires and the dev profile may run without.
///
/// A stage that runs without one says so in its report; the spine turns that into a failure
/// in the appliance profile and into a loud "degraded" in the dev profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// The data lives on a LUKS2 volume rather than a plain directory.
    VolumeEncryption,
    /// The volume key is sealed to the TPM under the firmware policy's PCRs.
    TpmBinding,
    /// Secure Boot is on, as the firmware policy demands.
    SecureBoot,
    /// The egress-deny ruleset is applied and verified.
    EgressFirewall,
    /// The store key is not kept in a plain file next to the data.
    StoreKeyProtected,
    /// The web UI is served over TLS only.
    Tls,
}

impl Protection {
    pub fn describe(self) -> &'static str {
        match self {
            Protection::VolumeEncryption => "data volume encryption (LUKS2)",
            Protection::TpmBinding => "TPM binding of the volume key",
            Protection::SecureBoot => "Secure Boot",
            Protection::EgressFirewall => "egress-deny firewall",
            Protection::StoreKeyProtected => "store key protected by the TPM",
            Protection::Tls => "TLS for the web UI",
        }
    }
}

/// What a stage's implementation reports when it returns without error.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    /// One line for IT: what was done, or what is missing.
    pub detail: String,
    /// Protections this stage ran without (dev profile only; the appliance refuses them).
    pub missing: Vec<Protection>,
    /// The stage worked but not fully (e.g. GPU degraded, CPU fallback in use).
    pub degraded: bool,
}

impl StageReport {
    pub fn ok(detail: impl Into<String>) -> Self {
        Self { detail: detail.into(), ..Self::default() }
    }

    pub fn degraded(detail: impl Into<String>) -> Self {
        Self { detail: detail.into(), degraded: true, ..Self::default() }
    }

    pub fn without(detail: impl Into<String>, missing: Vec<Protection>) -> Self {
        Self { detail: detail.into(), missing, degraded: false }
    }
}

/// The judged outcome of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Degraded,
    Failed,
    /// Not run because an earlier security stage failed.
    NotRun,
}

/// The record of one stage, read by the health endpoint, the audit log and the report.
#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    pub stage: StageName,
    pub outcome: Outcome,
    pub reason: String,
    pub missing_protections: Vec<Protection>,
    /// RFC 3339 time the stage started, absent for stages that did not run.
    pub started_at: Option<String>,
    pub duration_ms: u64,
}

/// Judge a stage's result against the profile. Pure: the heart of "fail closed".
pub fn judge(profile: Profile, result: &Result<StageReport, String>) -> (Outcome, String) {
    match result {
        Err(reason) => (Outcome::Failed, reason.clone()),
        Ok(report) if !report.missing.is_empty() => {
            let names: Vec<&str> = report.missing.iter().map(|p| p.describe()).collect();
            match profile {
                Profile::Appliance => (
                    Outcome::Failed,
                    format!(
                        "the appliance profile refuses to run without {}: {}",
                        names.join(", "),
                        report.detail
                    ),
                ),
                Profile::Dev => (
                    Outcome::Degraded,
                    format!("DEV PROFILE: running WITHOUT {}: {}", names.join(", "), report.detail),
                ),
            }
        }
        Ok(report) if report.degraded => (Outcome::Degraded, report.detail.clone()),
        Ok(report) => (Outcome::Ok, report.detail.clone()),
    }
}

/// Accumulates stage records in order and decides whether the next stage may run.
#[derive(Debug)]
pub struct BootLog {
    profile: Profile,
    records: Vec<StageRecord>,
    halted_by: Option<StageName>,
}

impl BootLog {
    pub fn new(profile: Profile) -> Self {
        Self { profile, records: Vec::new(), halted_by: None }
    }

    /// Whether a security stage has failed; then nothing else may run.
    pub fn halted(&self) -> Option<StageName> {
        self.halted_by
    }

    /// Run one stage unless the boot has halted, time it, judge it and record it.
    ///
    /// Returns the stage's value when it ran and was not judged failed.
    pub fn run<T>(
        &mut self,
        stage: StageName,
        f: impl FnOnce() -> Result<(T, StageReport), String>,
    ) -> Option<T> {
        if self.halted_by.is_some() {
            self.push_not_run(stage);
            return None;
        }
        let started_at = jiff::Timestamp::now().to_string();
        let start = Instant::now();
        let result = f();
        let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (value, report) = match result {
            Ok((v, r)) => (Some(v), Ok(r)),
            Err(e) => (None, Err(e)),
        };
        let (outcome, reason) = judge(self.profile, &report);
        let missing = report.as_ref().map(|r| r.missing.clone()).unwrap_or_default();
        self.log(stage, outcome, &reason);
        self.records.push(StageRecord {
            stage,
            outcome,
            reason,
            missing_protections: missing,
            started_at: Some(started_at),
            duration_ms,
        });
        if outcome == Outcome::Failed {
            if stage.is_security_stage() || self.profile == Profile::Appliance {
                self.halted_by = Some(stage);
            }
            return None;
        }
        value
    }

    /// Async flavour of [`BootLog::run`] for stages that wait on the network or a child.
    pub async fn run_async<T, F>(&mut self, stage: StageName, f: F) -> Option<T>
    where
        F: std::future::Future<Output = Result<(T, StageReport), String>>,
    {
        if self.halted_by.is_some() {
            self.push_not_run(stage);
            return None;
        }
        let start = Instant::now();
        let result = f.await;
        let elapsed = start.elapsed();
        // Re-use the synchronous path for judging and recording, with the measured duration.
        let mut out = None;
        let recorded = self.run(stage, || result.map(|(v, r)| {
            out = Some(v);
            ((), r)
        }));
        if let Some(last) = self.records.last_mut() {
            last.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        }
        recorded.and(out)
    }

    fn push_not_run(&mut self, stage: StageName) {
        let reason = format!(
            "not run: the {} stage failed and the box fails closed",
            self.halted_by.map(|s| s.as_str()).unwrap_or("earlier")
        );
        self.records.push(StageRecord {
            stage,
            outcome: Outcome::NotRun,
            reason,
            missing_protections: Vec::new(),
            started_at: None,
            duration_ms: 0,
        });
    }

    fn log(&self, stage: StageName, outcome: Outcome, reason: &str) {
        match outcome {
            Outcome::Ok => tracing::info!(stage = %stage, "stage ok: {reason}"),
            Outcome::Degraded => tracing::warn!(stage = %stage, "stage DEGRADED: {reason}"),
            Outcome::Failed => tracing::error!(stage = %stage, "stage FAILED: {reason}"),
            Outcome::NotRun => {}
        }
    }

    pub fn records(&self) -> &[StageRecord] {
        &self.records
    }

    /// Every protection some stage ran without, deduplicated, for the health data.
    pub fn missing_protections(&self) -> Vec<Protection> {
        let mut all: Vec<Protection> =
            self.records.iter().flat_map(|r| r.missing_protections.iter().copied()).collect();
        all.sort();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appliance_refuses_a_missing_protection() {
        let report = Ok(StageReport::without("plain directory", vec![Protection::VolumeEncryption]));
        let (outcome, reason) = judge(Profile::Appliance, &report);
        assert_eq!(outcome, Outcome::Failed);
        assert!(reason.contains("refuses"), "{reason}");
        assert!(reason.contains("data volume encryption"), "{reason}");
    }

    #[test]
    fn dev_runs_without_a_protection_but_says_so() {
        let report = Ok(StageReport::without("no firewall", vec![Protection::EgressFirewall]));
        let (outcome, reason) = judge(Profile::Dev, &report);
        assert_eq!(outcome, Outcome::Degraded);
        assert!(reason.contains("WITHOUT egress-deny firewall"), "{reason}");
    }

    #[test]
    fn a_failed_security_stage_stops_every_later_stage() {
        let mut log = BootLog::new(Profile::Dev);
        assert_eq!(log.run(StageName::Config, || Ok((1, StageReport::ok("loaded")))), Some(1));
        assert_eq!(log.run::<()>(StageName::Unlock, || Err("TPM refused".into())), None);
        let mut ran_later = false;
        log.run(StageName::Firewall, || {
            ran_later = true;
            Ok(((), StageReport::ok("x")))
        });
        assert!(!ran_later, "a stage ran after a failed security stage");
        assert_eq!(log.halted(), Some(StageName::Unlock));
        let outcomes: Vec<Outcome> = log.records().iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, vec![Outcome::Ok, Outcome::Failed, Outcome::NotRun]);
    }

    #[test]
    fn a_failed_non_security_stage_in_dev_lets_the_box_serve() {
        let mut log = BootLog::new(Profile::Dev);
        log.run::<()>(StageName::Engine, || Err("engine did not answer".into()));
        assert_eq!(log.halted(), None);
        let mut log = BootLog::new(Profile::Appliance);
        log.run::<()>(StageName::Engine, || Err("engine did not answer".into()));
        assert_eq!(log.halted(), Some(StageName::Engine));
    }
}
