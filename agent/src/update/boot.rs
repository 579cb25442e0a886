//! After a healthy boot: settle a pending system update.
//!
//! A full install leaves the new system in the inactive slot with its UKI on the ESP as
//! `wardbox-<version>+3.efi` and records the update as pending. The agent calls
//! [`after_healthy_boot`] once every boot stage passed:
//!
//! - running the pending version: the update worked. The system floor is raised to it (only now:
//!   a version that never booted healthy must stay installable again). The boot is blessed by
//!   the image's `systemd-bless-boot.service` (`systemd-bless-boot good`, which stops
//!   systemd-boot's countdown) once `boot-complete.target` is reached, which
//!   `wardbox-boot-healthy.service` holds until the agent is healthy. Not by the agent: its
//!   sandbox cannot write the ESP, and must not.
//! - running an older version in a later boot than the install's: the new system did not reach
//!   a healthy boot in its tries and systemd-boot went back to the previous entry. The update is
//!   recorded as fallen back; the caller raises an alert and audits it.
//! - same boot as the install: nothing yet (the agent was restarted before the reboot).

use std::path::Path;

use wardbox_update::manifest::{BundleKind, Version};

use super::installs::{InstallLog, InstallRecord, Outcome};
use super::{UpdatePaths, apply::BOOT_TRIES};
use crate::settings::Profile;

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

/// Who blesses this boot, in words: on the appliance, `systemd-bless-boot.service` once
/// `boot-complete.target` is reached (after `wardbox-boot-healthy.service`); a dev box never
/// blesses its host's boot.
fn bless(profile: Profile) -> String {
    if profile != Profile::Appliance {
        return "not blessed: dev profile".into();
    }
    "blessing left to systemd-bless-boot.service at boot-complete.target (after wardbox-boot-healthy.service)".into()
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

    /// A state directory provisioned with a real (unsigned) root, as `State::provision` takes it.
    fn provisioned(data_dir: &Path) -> wardbox_update::State {
        use wardbox_update::build::{RootSpec, generate_key, new_root};
        let key = generate_key(&data_dir.join("k.pk8")).expect("key");
        let spec = RootSpec {
            version: 1,
            expires: "2100-01-01T00:00:00Z".parse().expect("time"),
            root_keys: vec![key.clone()],
            root_threshold: 1,
            targets_keys: vec![key.clone()],
            snapshot_keys: vec![key.clone()],
            timestamp_keys: vec![key],
        };
        let root = serde_json::to_vec(&new_root(&spec).expect("root")).expect("json");
        wardbox_update::State::provision(UpdatePaths::new(data_dir).state_dir(), &root).expect("provision")
    }

    #[test]
    fn the_system_floor_rises_only_when_the_new_version_booted_and_a_fallback_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = provisioned(dir.path());
        let log = InstallLog::new(UpdatePaths::new(dir.path()).installs());
        let v = |s: &str| s.parse::<Version>().expect("v");
        assert_eq!(after_healthy_boot(dir.path(), Profile::Dev, v("0.1.0"), Some("b1")), Ok(Settled::NothingPending));

        // Installed in boot b1; the agent restarts in the same boot: nothing changes yet.
        log.append(pending("0.2.0", "b1")).expect("append");
        assert_eq!(after_healthy_boot(dir.path(), Profile::Dev, v("0.1.0"), Some("b1")), Ok(Settled::NotRebooted { to: v("0.2.0") }));
        assert_eq!(state.floors().expect("floors").system, None);

        // The next boot runs 0.2.0 and every stage passed: the floor rises, the log says so.
        let settled = after_healthy_boot(dir.path(), Profile::Dev, v("0.2.0"), Some("b2")).expect("settle");
        let Settled::Installed { record, blessed } = settled else { panic!("not installed: {settled:?}") };
        assert_eq!((record.to, record.outcome), (v("0.2.0"), Outcome::Installed));
        assert_eq!(blessed, "not blessed: dev profile");
        assert_eq!(state.floors().expect("floors").system, Some(v("0.2.0")));
        assert_eq!(log.pending(), Ok(None));

        // A later update that never booted healthy: the box is back on 0.2.0 in a later boot.
        let mut next = pending("0.3.0", "b3");
        next.bundle_sha256 = "cd".into();
        log.append(next).expect("append");
        let settled = after_healthy_boot(dir.path(), Profile::Dev, v("0.2.0"), Some("b4")).expect("settle");
        let Settled::FellBack { record, reason } = settled else { panic!("not a fallback: {settled:?}") };
        assert_eq!(record.outcome, Outcome::FellBack);
        assert!(reason.contains("booted version 0.2.0, not 0.3.0") && reason.contains("3 tries"), "{reason}");
        assert_eq!(state.floors().expect("floors").system, Some(v("0.2.0")), "a failed version must not raise the floor");
        assert_eq!(log.last().expect("log").map(|r| r.reason.is_some()), Some(true));
        assert_eq!(after_healthy_boot(dir.path(), Profile::Dev, v("0.2.0"), Some("b5")), Ok(Settled::NothingPending));
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
