//! GPU health through NVML: monitor, health state machine, placement, metrics.
//!
//! * [`reading`]: what one look at the GPUs returns, as plain serde data; "not supported" is
//!   its own value, never zero.
//! * [`monitor`]: the only module that talks to the driver (`nvml-wrapper`, which loads
//!   `libnvidia-ml.so.1` at run time). No driver gives [`GpuError::NoDriver`], never a panic.
//! * [`health`]: pure per-GPU state machine, healthy / degraded / failed, with hysteresis and a
//!   reason on every transition.
//! * [`placement`]: pure; how many layers go to which healthy GPU, CPU fallback only when the
//!   clinic allows it, and never silently.
//! * [`metrics`]: Prometheus text exposition.
//! * [`status`]: the combined report `wardbox gpu status` prints and `/metrics` exports.
//!
//! This crate knows nothing about the agent: the agent owns the loop (read every few seconds,
//! feed the [`HealthBook`], re-plan, restart the engine, audit the transitions).

pub mod health;
pub mod metrics;
pub mod monitor;
pub mod placement;
pub mod reading;
pub mod status;

pub use health::{HealthBook, HealthPolicy, HealthState, Transition};
pub use monitor::{GpuError, NvmlMonitor};
pub use placement::{ModelSpec, PlacementError, PlacementPolicy, Plan};
pub use reading::{Field, GpuReading, Snapshot};
pub use status::{PlacementOutcome, StatusReport, status_once, watch};
