//! The compliance checklist report.
//!
//! One evaluation, three outputs, one signature:
//! - [`facts`]: the plain snapshot of what the box knows (gathered by the agent);
//! - [`checklist`]: [`evaluate`] turns facts into a [`Report`], pure and deterministic;
//! - [`report`]: the report as data, and "what changed since the previous report";
//! - [`html`], [`json`], [`oscal`]: the three renderings of one report;
//! - [`quote`]: the attestation key, the TPM quote over the report's digest, and [`verify`];
//! - [`sample`]: a complete, healthy set of facts for tests, the benchmark and the docs.
//!
//! Nothing here touches the agent; the agent gathers [`Facts`] and writes the files.

pub mod checklist;
pub mod facts;
pub mod html;
pub mod json;
pub mod oscal;
pub mod quote;
pub mod report;
pub mod sample;

pub use checklist::{evaluate, ids};
pub use facts::{Facts, Probe};
pub use quote::{AkPublic, Quoter, Verified, VerifyError, verify};
pub use report::{Item, Method, Report, Status};
