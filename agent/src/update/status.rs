//! What `wardbox update status` and the admin Updates page show: the running version and slot,
//! the floors (state directory and TPM), a pending system update, the newest failed one and why,
//! the last install and the last bundle applied.

use std::path::Path;

use serde_json::json;
use wardbox_update::manifest::{BundleKind, Version};

use super::installs::{InstallLog, Outcome};
use super::{UpdatePaths, running_slot, running_version, tpm_floor};
use crate::config::Config;

/// The status, as labelled lines (for people) and as JSON (for scripts).
#[derive(Debug, Clone)]
pub struct UpdateStatus {
    /// (label, text), in order; a label in capitals is a problem (`FAILED`).
    pub lines: Vec<(String, String)>,
    pub json: serde_json::Value,
    /// Whether the box has an install to receipt.
    pub any_install: bool,
}

fn show(v: Option<Version>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// Reads the status of the box whose data volume is at `data_dir`. Changes nothing.
pub fn read(config: &Config, data_dir: &Path) -> Result<UpdateStatus, String> {
    let paths = UpdatePaths::new(data_dir);
    let (state, throwaway) = paths.state_for_reading(&config.update).map_err(|e| e.to_string())?;
    let floors = state.floors().map_err(|e| e.to_string())?;
    let running = running_version().map_err(|e| e.to_string())?;
    let slot = running_slot(&config.update.slots);
    let installs = InstallLog::new(paths.installs()).read()?;
    let pending = installs.iter().rev().find(|r| r.kind == BundleKind::Full).filter(|r| r.outcome == Outcome::PendingReboot);
    let last = installs.last();
    // The newest failure, unless the same track installed something after it.
    let failed = installs
        .iter()
        .enumerate()
        .rev()
        .find(|(_, r)| matches!(r.outcome, Outcome::RolledBack | Outcome::Failed | Outcome::FellBack))
        .filter(|(i, f)| !installs[i + 1..].iter().any(|r| r.kind == f.kind && matches!(r.outcome, Outcome::Installed | Outcome::PendingReboot)))
        .map(|(_, r)| r);
    let last_accepted = installs.iter().rev().find(|r| matches!(r.outcome, Outcome::Installed | Outcome::PendingReboot));
    let tpm = tpm_floor::read(tpm_floor::tcti(config).as_deref(), &paths.state_dir());
    let json = json!({
        "system": {
            "running": running,
            "floor": floors.system,
            "tpm_floor": tpm.version(),
            "tpm_floor_state": tpm.describe(),
            "slot": slot.as_ref().ok().map(|s| s.as_str()),
            "slot_error": slot.as_ref().err(),
        },
        "models": floors.models,
        "policy": floors.policy,
        "time_floor": floors.time,
        "trust_provisioned": throwaway.is_none(),
        "pending": pending,
        "failed": failed,
        "last": last,
        "last_applied_bundle_sha256": last_accepted.map(|r| &r.bundle_sha256),
    });

    let mut lines = Vec::new();
    let mut line = |label: &str, text: String| lines.push((label.to_owned(), text));
    let slot_text = match &slot {
        Ok(s) => format!("slot {s}"),
        Err(e) => format!("slot unknown: {e}"),
    };
    line("system", format!("{running} running from {slot_text}; floor {}", show(floors.system)));
    line("tpm floor", tpm.describe());
    line("models", show(floors.models));
    line("policy", show(floors.policy));
    if throwaway.is_some() {
        line("trust", format!("not provisioned yet: the image's root ({}) is trusted until the first update", config.update.image_root.display()));
    }
    match pending {
        Some(p) => line(
            "pending",
            format!(
                "system {} in slot {} ({}), installed {}: waiting for a reboot",
                p.to,
                p.slot.as_deref().unwrap_or("?"),
                p.boot_entry.as_deref().unwrap_or("?"),
                p.finished
            ),
        ),
        None => line("pending", "none".into()),
    }
    if let Some(f) = failed {
        line("FAILED", format!("{} {} -> {} at {}: {}", f.kind, show(f.from), f.to, f.finished, f.reason.as_deref().unwrap_or(f.outcome.as_str())));
    }
    match last {
        Some(r) => line(
            "last",
            format!("{} {} -> {} {} at {} by {} (bundle {})", r.kind, show(r.from), r.to, r.outcome.as_str(), r.finished, r.actor, r.bundle_sha256),
        ),
        None => line("last", "no update was ever applied".into()),
    }
    if let Some(r) = last_accepted {
        line("applied", format!("last bundle applied: {}", r.bundle_sha256));
    }
    Ok(UpdateStatus { lines, json, any_install: last.is_some() })
}
