//! Egress-deny nftables ruleset: policy, builder, apply and verify.
//!
//! - [`policy`]: the `[firewall]` configuration section and its validation (pure).
//! - [`ruleset`]: the `inet wardbox` table as typed `nftables` data (pure).
//! - [`verify`]: the live ruleset compared with the intent, differences as [`Drift`] (pure).
//! - [`foreign`]: everything outside our table that can let traffic out around it (pure).
//! - [`history`]: the last drop-counter readings, kept in a file, so a reset is noticed.
//! - [`apply`]: running `nft` to commit, read back, verify and repair (side effects).
//!
//! The agent builds a [`Firewall`] from a [`ValidPolicy`] and an absolute nft path, calls
//! [`Firewall::apply`] as a boot stage (fail closed on error), and re-runs it periodically:
//! an [`ApplyOutcome::Applied`] after boot means drift was found and repaired.

pub mod apply;
pub mod foreign;
pub mod history;
pub mod policy;
pub mod ruleset;
pub mod verify;

pub use apply::{ApplyOutcome, Firewall, FirewallError, Nft, Status};
pub use foreign::Effect;
pub use history::{CounterHistory, HistoryError};
pub use policy::{AllowOut, Policy, PolicyError, PolicyErrors, Protocol, ValidPolicy};
pub use ruleset::{Count, Counters, Ruleset};
pub use verify::{Drift, LiveRuleset};
