//! The side effects of each boot stage, each behind a narrow interface with a real
//! implementation and a dev one. The spine (`crate::boot`) decides; these do.
//!
//! One file per stage. Each file owns its stage's configuration section, its interface, and
//! its implementations, so that a subsystem can change without touching the others.

pub mod engine;
pub mod firewall;
pub mod gpu;
pub mod unlock;
