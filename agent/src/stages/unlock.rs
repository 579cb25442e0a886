//! Unlock stage: turn the box's sealed state into an open data directory and the store key.
//!
//! The dev implementation is a plain directory and a key file, stated loudly as running without
//! volume encryption and TPM binding; the appliance profile refuses it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::{Protection, StageReport};
use crate::config::{ConfigError, Profile};
use crate::store::StoreKey;

/// `[volume]`: where the data lives and how it is unlocked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum VolumeConfig {
    /// Dev only: a plain directory and a key file in `state_dir`. No encryption at rest beyond
    /// SQLCipher, and the SQLCipher key sits beside the data.
    PlainDirectory {
        /// Directory that stands in for the mounted data volume.
        data_dir: PathBuf,
    },
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig::PlainDirectory { data_dir: PathBuf::from("/var/lib/wardbox/data") }
    }
}

impl VolumeConfig {
    pub fn dev(base: &Path) -> Self {
        VolumeConfig::PlainDirectory { data_dir: base.join("data") }
    }

    pub fn validate(&self, profile: Profile) -> Result<(), ConfigError> {
        match self {
            VolumeConfig::PlainDirectory { data_dir } => {
                if profile == Profile::Appliance {
                    return Err(ConfigError::invalid(
                        "volume.mode",
                        "plain-directory keeps patient data unencrypted on disk; the appliance profile requires an encrypted volume",
                    ));
                }
                if !data_dir.is_absolute() {
                    return Err(ConfigError::invalid("volume.data_dir", "must be an absolute path"));
                }
                Ok(())
            }
        }
    }
}

/// The open data volume: where the data lives and the key for the store on it.
#[derive(Debug)]
pub struct UnlockedVolume {
    pub data_dir: PathBuf,
    pub store_key: StoreKey,
}

/// The unlock stage's interface.
pub trait VolumeUnlocker: Send + Sync + std::fmt::Debug {
    /// Boot: make the data directory available and produce the store key.
    fn unlock(&self) -> Result<(UnlockedVolume, StageReport), String>;

    /// Operator commands (`wardbox audit verify`, `wardbox store rekey`): the store key and the
    /// data directory of a volume the running agent already opened; creates and mounts nothing.
    fn open_for_cli(&self) -> Result<UnlockedVolume, String>;
}

/// Build the unlocker the configuration asks for.
pub fn unlocker(volume: &VolumeConfig, state_dir: &Path) -> Box<dyn VolumeUnlocker> {
    match volume {
        VolumeConfig::PlainDirectory { data_dir } => Box::new(DevPlainDirectory {
            data_dir: data_dir.clone(),
            key_file: state_dir.join("dev-store.key"),
        }),
    }
}

/// Dev unlocker: a plain directory and a random store key kept in a 0600 file.
#[derive(Debug)]
pub struct DevPlainDirectory {
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
}

impl VolumeUnlocker for DevPlainDirectory {
    fn unlock(&self) -> Result<(UnlockedVolume, StageReport), String> {
        make_private_dir(&self.data_dir)?;
        if let Some(parent) = self.key_file.parent() {
            make_private_dir(parent)?;
        }
        let store_key = load_or_create_key_file(&self.key_file)?;
        let report = StageReport::without(
            format!(
                "data in the plain directory {} with the store key in {}",
                self.data_dir.display(),
                self.key_file.display()
            ),
            vec![Protection::VolumeEncryption, Protection::TpmBinding, Protection::StoreKeyProtected],
        );
        Ok((UnlockedVolume { data_dir: self.data_dir.clone(), store_key }, report))
    }

    fn open_for_cli(&self) -> Result<UnlockedVolume, String> {
        if !self.key_file.exists() {
            return Err(format!(
                "no store key at {}: has the agent ever run with this configuration?",
                self.key_file.display()
            ));
        }
        let store_key = load_or_create_key_file(&self.key_file)?;
        Ok(UnlockedVolume { data_dir: self.data_dir.clone(), store_key })
    }
}

impl DevPlainDirectory {
    /// Store key rotation for the dev key file: the new key is written beside the old one
    /// first, the store re-encrypted, and only then the new key moved into place, so a crash
    /// at any point leaves a key that opens the store (the old one, or `.new`).
    pub fn rotate_key_file(&self, rekey: impl FnOnce(&StoreKey) -> Result<(), String>) -> Result<(), String> {
        let staged = self.key_file.with_extension("key.new");
        let _ = std::fs::remove_file(&staged);
        let new_key = load_or_create_key_file(&staged)?;
        rekey(&new_key)?;
        std::fs::rename(&staged, &self.key_file)
            .map_err(|e| format!("the store was re-keyed but the key file could not be replaced: {e}; the new key is in {}", staged.display()))
    }
}

fn make_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))
}

/// Read the dev key file, or create it with a fresh random key (mode 0600) when absent.
pub fn load_or_create_key_file(path: &Path) -> Result<StoreKey, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o077).unwrap_or(0);
            if mode != 0 {
                return Err(format!(
                    "the key file {} is readable by other users (mode {:o}); run `chmod 600` on it",
                    path.display(),
                    mode
                ));
            }
            StoreKey::from_hex(text.trim())
                .map_err(|e| format!("the key file {} is not a store key: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = StoreKey::random();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create the key file {}: {e}", path.display()))?;
            file.write_all(key.to_hex().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write the key file {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read the key file {}: {e}", path.display())),
    }
}
