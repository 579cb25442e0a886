//! Air-gapped updates from a USB stick: one TUF repository per bundle, built on an offline
//! workstation (`wardbox-bundle build`) and verified on the box before anything is written.
//!
//! - [`manifest`]: the signed bundle manifest and its pure checks (the fuzz entry point).
//! - [`decide`]: pure decisions: right product, compatible starting version, no downgrade,
//!   expiry at a time the box can trust.
//! - [`verify`]: TUF through tough, the stick's file list, the manifest, the decision.
//! - [`slot`]: stream-verify a target to staging, then write the slot and read it back.
//! - [`state`]: the trusted root and floors in the state directory.
//! - [`build`]: keys, root metadata with rotation, bundles (workstation side).
//! - [`inspect`]: what a bundle holds, in words.
//! - [`uki`]: a bundle's kernel image read as data: its PE sections and the PCR 11 value it
//!   will measure (pure; a fuzz entry point).
//!
//! See `docs/update.md`.

pub mod build;
pub mod decide;
pub mod error;
pub mod inspect;
pub mod manifest;
pub mod slot;
pub mod state;
pub mod transport;
pub mod uki;
pub mod verify;

pub use decide::{BoxFacts, Floors, Refusal, TrustedTime};
pub use error::UpdateError;
pub use manifest::{BundleKind, BundleManifest, ContentRole, Version, parse_manifest};
pub use slot::{Phase, SlotPlan, SlotReceipt, StagedSlotImage, stage_for_slot, write_to_slot};
pub use state::State;
pub use verify::{VerifiedBundle, verify_bundle, verify_bundle_via};
