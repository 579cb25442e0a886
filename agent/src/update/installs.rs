//! The install log: one record per install that got past verification, newest last, kept on
//! the data volume (`<data_dir>/update/installs.json`, written atomically). `wardbox update
//! status` and the install receipt read it; a pending system update is its last full record
//! with the outcome `pending-reboot`. Refusals before verification are in the audit trail only
//! (they have no verified bundle to name).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use wardbox_update::manifest::{BundleKind, Version};

/// How many records the log keeps (the audit trail keeps every one).
const KEEP: usize = 200;

/// How an install ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Installed and healthy (models, policy; a system update after its healthy boot).
    Installed,
    /// A system image is in the inactive slot and its UKI on the ESP: the next boot tries it.
    PendingReboot,
    /// Installed, the health check failed, and the previous version is back.
    RolledBack,
    /// Failed part-way; what was changed is said in `reason`.
    Failed,
    /// The new system did not boot healthy: systemd-boot went back to the previous entry.
    FellBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::PendingReboot => "pending-reboot",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::FellBack => "fell-back",
        }
    }
}

/// One install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    /// sha256 of the bundle's signed manifest: the bundle's identity.
    pub bundle_sha256: String,
    pub kind: BundleKind,
    /// The installed version of the track before (none: nothing of it was ever installed).
    pub from: Option<Version>,
    pub to: Version,
    /// Who applied it (`cli:<OS user>`).
    pub actor: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes installed (targets written).
    pub bytes: u64,
    /// Full: the slot written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Full: the UKI's file name on the ESP (`wardbox-<version>+3.efi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_entry: Option<String>,
    /// Full: the boot the install ran in (a later boot that still runs the old version fell back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    installs: Vec<InstallRecord>,
}

/// The install log file.
#[derive(Debug, Clone)]
pub struct InstallLog {
    path: PathBuf,
}

impl InstallLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        InstallLog { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record, oldest first; none when the box never installed anything.
    pub fn read(&self) -> Result<Vec<InstallRecord>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<LogFile>(&bytes)
                .map(|f| f.installs)
                .map_err(|e| format!("the install log {} is unreadable: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot read the install log {}: {e}", self.path.display())),
        }
    }

    pub fn last(&self) -> Result<Option<InstallRecord>, String> {
        Ok(self.read()?.pop())
    }

    /// The system update waiting for its first healthy boot, if any: the newest full install,
    /// when it is pending.
    pub fn pending(&self) -> Result<Option<InstallRecord>, String> {
        Ok(self.read()?.into_iter().rev().find(|r| r.kind == BundleKind::Full).filter(|r| r.outcome == Outcome::PendingReboot))
    }

    pub fn append(&self, record: InstallRecord) -> Result<(), String> {
        let mut installs = self.read()?;
        installs.push(record);
        self.write(installs)
    }

    /// Replaces the newest record of a bundle (a pending system update settled at boot).
    pub fn settle(&self, bundle_sha256: &str, outcome: Outcome, reason: Option<String>) -> Result<(), String> {
        let mut installs = self.read()?;
        let record = installs
            .iter_mut()
            .rev()
            .find(|r| r.bundle_sha256 == bundle_sha256)
            .ok_or_else(|| format!("the install log holds no install of bundle {bundle_sha256}"))?;
        record.outcome = outcome;
        record.reason = reason;
        record.finished = Timestamp::now();
        self.write(installs)
    }

    fn write(&self, mut installs: Vec<InstallRecord>) -> Result<(), String> {
        if installs.len() > KEEP {
            installs.drain(..installs.len() - KEEP);
        }
        let mut bytes = serde_json::to_vec_pretty(&LogFile { installs }).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        super::write_atomic(&self.path, &bytes).map_err(|e| format!("cannot write the install log {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: BundleKind, to: &str, outcome: Outcome) -> InstallRecord {
        InstallRecord {
            bundle_sha256: format!("{kind}-{to}"),
            kind,
            from: None,
            to: to.parse().expect("version"),
            actor: "cli:root".into(),
            started: Timestamp::UNIX_EPOCH,
            finished: Timestamp::UNIX_EPOCH,
            outcome,
            reason: None,
            bytes: 1,
            slot: None,
            boot_entry: None,
            boot_id: None,
        }
    }

    #[test]
    fn the_pending_update_is_the_newest_full_install_when_it_waits() {
        let dir = std::env::temp_dir().join(format!("wardbox-installs-{}", std::process::id()));
        let log = InstallLog::new(dir.join("installs.json"));
        assert_eq!(log.pending(), Ok(None));
        log.append(record(BundleKind::Full, "0.2.0", Outcome::PendingReboot)).expect("append");
        log.append(record(BundleKind::ModelsOnly, "1.0.0", Outcome::Installed)).expect("append");
        assert_eq!(log.pending().expect("read").map(|r| r.to.to_string()), Some("0.2.0".into()));
        assert_eq!(log.last().expect("read").map(|r| r.kind), Some(BundleKind::ModelsOnly));
        log.settle("full-0.2.0", Outcome::FellBack, Some("why".into())).expect("settle");
        assert_eq!(log.pending(), Ok(None));
        assert!(log.settle("nosuch", Outcome::Installed, None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
