//! Anomalous-access detection over the audit stream.
//!
//! [`Detector`] reads audit records one at a time, in sequence order, and returns the alerts
//! each one raises: explainable rules with thresholds from the `[alerts]` configuration
//! section ([`AlertsConfig`]), and per-user baselines (median and MAD of the user's own
//! history). Pure code: no clock, no I/O, no storage; the same records give the same alerts,
//! live or replayed. Delivery, the outbox and the pages live in the agent (docs/alerts.md).
//!
//! [`synth`] generates synthetic audit streams with injected incidents and scores the rules
//! on them (the evaluation tests and the throughput bench).

pub mod config;
pub mod detector;
pub mod record;
pub mod relations;
pub mod review;
mod stats;
pub mod synth;
mod time;

pub use config::{AlertsConfig, ConfigError};
pub use detector::{Alert, Detector, MAX_SEQS, Rule};
pub use record::{Record, RecordError};
pub use relations::{Relation, Relations};
