//! The health data: boot stages and their outcomes, what the box runs without, live alerts.

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::boot::{BootLog, Outcome, StageRecord};
use crate::settings::Profile;

/// Overall state, derived from the stage records and the alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Every stage ok, no open alert.
    Serving,
    /// Serving, but some stage is degraded, some protection is missing, or an alert is open.
    Degraded,
    /// A stage failed: the box does not serve PHI.
    Failed,
}

/// A problem found after boot by a periodic re-check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    /// The subsystem that raised it: `firewall`, `gpu`, `engine`, `audit`, `disk`.
    pub source: String,
    pub message: String,
    pub raised_at: String,
}

/// Everything the health endpoint and `wardbox status` show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub profile: Profile,
    pub state: HealthState,
    /// Process id of the agent, so `wardbox status` can tell a stale file from a live agent.
    pub pid: u32,
    pub started_at: String,
    pub stages: Vec<StageRecordView>,
    /// Protections the box is running without, in words (dev profile only).
    pub running_without: Vec<String>,
    pub alerts: Vec<Alert>,
    /// The data volume's free space at the last check (`None` before the first; absent from
    /// a status file of an older agent), so that low space shows before it runs out.
    #[serde(default)]
    pub data_volume: Option<DataVolume>,
}

/// The data volume's free space as the disk watch last read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataVolume {
    /// The store's directory, whose filesystem was read.
    pub path: String,
    pub total_bytes: u64,
    /// What the agent may still write.
    pub free_bytes: u64,
    pub free_percent: f64,
    /// In words: `4.1 GiB free of 51.0 GiB (8.0 %)`.
    pub summary: String,
    /// `ok`, `low` (below the warning threshold) or `critical`.
    pub level: String,
    pub checked_at: String,
}

/// A stage record as shown (owned strings so the file round-trips).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecordView {
    pub stage: String,
    pub outcome: String,
    pub reason: String,
    pub started_at: Option<String>,
    pub duration_ms: u64,
}

impl From<&StageRecord> for StageRecordView {
    fn from(r: &StageRecord) -> Self {
        let outcome = serde_json::to_value(r.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        StageRecordView {
            stage: r.stage.as_str().to_string(),
            outcome,
            reason: r.reason.clone(),
            started_at: r.started_at.clone(),
            duration_ms: r.duration_ms,
        }
    }
}

pub type SharedHealth = Arc<RwLock<Health>>;

impl Health {
    pub fn from_boot(profile: Profile, log: &BootLog, started_at: String) -> Self {
        let mut health = Health {
            profile,
            state: HealthState::Serving,
            pid: std::process::id(),
            started_at,
            stages: log.records().iter().map(StageRecordView::from).collect(),
            running_without: log.missing_protections().iter().map(|p| p.describe().to_string()).collect(),
            alerts: Vec::new(),
            data_volume: None,
        };
        health.state = health.derive_state(log.records());
        health
    }

    fn derive_state(&self, records: &[StageRecord]) -> HealthState {
        if records.iter().any(|r| matches!(r.outcome, Outcome::Failed | Outcome::NotRun)) {
            HealthState::Failed
        } else if records.iter().any(|r| r.outcome == Outcome::Degraded)
            || !self.running_without.is_empty()
            || !self.alerts.is_empty()
        {
            HealthState::Degraded
        } else {
            HealthState::Serving
        }
    }

    /// Clear the alerts `source` raised, its problem being over (a backup succeeded after a
    /// failure). Serving again when nothing else keeps the box degraded.
    pub fn clear(&mut self, source: &str) {
        self.alerts.retain(|a| a.source != source);
        let degraded_stage = self.stages.iter().any(|s| s.outcome == "degraded");
        if self.state == HealthState::Degraded && self.alerts.is_empty() && self.running_without.is_empty() && !degraded_stage {
            self.state = HealthState::Serving;
        }
    }

    /// Show the data volume's free space as just read.
    pub fn set_data_volume(&mut self, path: &str, total_bytes: u64, free_bytes: u64, free_percent: f64, summary: String, level: &str) {
        self.data_volume = Some(DataVolume {
            path: path.to_string(),
            total_bytes,
            free_bytes,
            free_percent,
            summary,
            level: level.to_string(),
            checked_at: jiff::Timestamp::now().to_string(),
        });
    }

    /// Raise an alert; the state becomes at least degraded.
    pub fn raise(&mut self, source: &str, message: impl Into<String>) {
        self.alerts.push(Alert {
            source: source.to_string(),
            message: message.into(),
            raised_at: jiff::Timestamp::now().to_string(),
        });
        if self.state == HealthState::Serving {
            self.state = HealthState::Degraded;
        }
    }
}

pub(super) async fn get_health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = state.health.read().map(|h| h.clone()).unwrap_or_else(|p| p.into_inner().clone());
    // Load balancers and monitoring read the status code: 503 when the box is not serving.
    let code = if health.state == HealthState::Failed { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(health))
}
