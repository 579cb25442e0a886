//! After a healthy boot: settle a pending system update.
//!
//! A full install leaves the new system in the inactive slot with its UKI on the ESP as
//! `wardbox-<version>+3.efi` and records the update as pending. The agent calls
//! [`after_healthy_boot`] once every boot stage passed:
//!
//! - running the pending version: the update worked. The system floor is raised to it (only now:
//!   a version that never booted healthy must stay installable again), and the boot is blessed
//!   (`systemd-bless-boot good`, appliance only), which stops systemd-boot's countdown.
//! - running an older version in a later boot than the install's: the new system did not reach
//!   a healthy boot in its tries and systemd-boot went back to the previous entry. The update is
//!   recorded as fallen back; the caller raises an alert and audits it.
//! - same boot as the install: nothing yet (the agent was restarted before the reboot).

use std::path::Path;

use wardbox_update::manifest::{BundleKind, Version};

use super::installs::{InstallLog, InstallRecord, Outcome};
use super::{UpdatePaths, apply::BOOT_TRIES};
use crate::settings::Profile;

/// Where systemd's boot blessing lives (Debian's systemd-boot package).
pub const BLESS_BOOT: &str = "/usr/lib/systemd/systemd-bless-boot";

/// What a pending system update means at this boot (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingVerdict {
    /// The new version runs and the boot is healthy.
    Healthy,
    /// Still the boot the install ran in: not rebooted yet.
    NotRebooted,
    /// A later boot runs another version: the box fell back.
    FellBack { running: Version },
}

pub fn judge(pending: &InstallRecord, running: Version, boot_id: Option<&str>) -> PendingVerdict {
    if running == pending.to {
        PendingVerdict::Healthy
    } else if boot_id.is_some() && pending.boot_id.as_deref() == boot_id {
        PendingVerdict::NotRebooted
    } else {
        PendingVerdict::FellBack { running }
    }
}

/// What [`after_healthy_boot`] did, for the daemon's log, audit and alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// No system update was pending.
    NothingPending,
    NotRebooted { to: Version },
    /// The update booted healthy; the floor is raised.
    Installed { record: InstallRecord, blessed: String },
    /// The box fell back; `reason` says so in words.
    FellBack { record: InstallRecord, reason: String },
}

/// Settles a pending system update (see the module documentation). `running`: the version of
/// the system that just booted healthy.
pub fn after_healthy_boot(data_dir: &Path, profile: Profile, running: Version, boot_id: Option<&str>) -> Result<Settled, String> {
    let paths = UpdatePaths::new(data_dir);
    let log = InstallLog::new(paths.installs());
    let Some(pending) = log.pending()? else {
        return Ok(Settled::NothingPending);
    };
    match judge(&pending, running, boot_id) {
        PendingVerdict::NotRebooted => Ok(Settled::NotRebooted { to: pending.to }),
        PendingVerdict::Healthy => {
            let state = wardbox_update::State::open(paths.state_dir()).map_err(|e| e.to_string())?;
            let mut floors = state.floors().map_err(|e| e.to_string())?;
            floors.raise(BundleKind::Full, pending.to);
            state.save_floors(&floors).map_err(|e| e.to_string())?;
            log.settle(&pending.bundle_sha256, Outcome::Installed, None)?;
            let blessed = bless(profile);
            let record = log.last()?.unwrap_or(pending);
            Ok(Settled::Installed { record, blessed })
        }
        PendingVerdict::FellBack { running } => {
            let reason = format!(
                "the box booted version {running}, not {}: the new system did not reach a healthy boot in {BOOT_TRIES} tries and systemd-boot returned to the previous entry",
                pending.to
            );
            log.settle(&pending.bundle_sha256, Outcome::FellBack, Some(reason.clone()))?;
            let record = log.read()?.into_iter().rev().find(|r| r.bundle_sha256 == pending.bundle_sha256).unwrap_or(pending);
            Ok(Settled::FellBack { record, reason })
        }
    }
}

/// Blesses this boot (`systemd-bless-boot good`): on the appliance only (a dev box must never
/// bless its host's boot). Returns what happened, in words.
fn bless(profile: Profile) -> String {
    if profile != Profile::Appliance {
        return "not blessed: dev profile".into();
    }
    if !Path::new(BLESS_BOOT).exists() {
        return format!("NOT BLESSED: {BLESS_BOOT} is missing from the image; systemd-boot will count this entry down");
    }
    match std::process::Command::new(BLESS_BOOT).arg("good").output() {
        Ok(o) if o.status.success() => "blessed (systemd-bless-boot good)".into(),
        Ok(o) => format!("NOT BLESSED: systemd-bless-boot good: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("NOT BLESSED: {BLESS_BOOT}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(to: &str, boot: &str) -> InstallRecord {
        InstallRecord {
            bundle_sha256: "ab".into(),
            kind: BundleKind::Full,
            from: Some("0.1.0".parse().expect("v")),
            to: to.parse().expect("v"),
            actor: "cli:root".into(),
            started: jiff::Timestamp::UNIX_EPOCH,
            finished: jiff::Timestamp::UNIX_EPOCH,
            outcome: Outcome::PendingReboot,
            reason: None,
            bytes: 1,
            slot: Some("b".into()),
            boot_entry: Some("wardbox-0.2.0+3.efi".into()),
            boot_id: Some(boot.into()),
        }
    }

    #[test]
    fn a_pending_update_is_healthy_only_when_its_version_runs() {
        let p = pending("0.2.0", "b1");
        let v = |s: &str| s.parse::<Version>().expect("v");
        assert_eq!(judge(&p, v("0.2.0"), Some("b2")), PendingVerdict::Healthy);
        assert_eq!(judge(&p, v("0.1.0"), Some("b1")), PendingVerdict::NotRebooted);
        assert_eq!(judge(&p, v("0.1.0"), Some("b2")), PendingVerdict::FellBack { running: v("0.1.0") });
        // No boot id to compare: an older version running is taken as a fallback, never as
        // "not rebooted yet" (which would leave a failed update unreported).
        assert_eq!(judge(&p, v("0.1.0"), None), PendingVerdict::FellBack { running: v("0.1.0") });
    }
}
