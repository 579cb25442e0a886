//! Unlock stage: turn the box's sealed state into an open data directory and the store key.
//!
//! The dev implementation is a plain directory and a key file, stated loudly as running without
//! volume encryption and TPM binding; the appliance profile refuses it.
//!
//! The appliance implementation ([`TpmLuksUnlocker`], `mode = "luks2-tpm"`) checks Secure Boot
//! against the firmware policy, unseals the LUKS2 keyslot secret from the TPM, opens the volume
//! through dm-crypt, mounts it, and derives the store key from the volume key. When the TPM
//! refuses, the stage fails and the box stays locked until IT uses the recovery key
//! (`wardbox volume recover` / `reseal`): there is no path to an unencrypted volume.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use wardbox_volume::luks::{KdfParams, LuksVolume};
use wardbox_volume::{FirmwarePolicy, Tpm, ops};

use crate::boot::{Protection, StageReport};
use crate::settings::{ConfigError, Profile};
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
    /// The appliance: a LUKS2 volume whose key is sealed to the TPM under the firmware policy.
    Luks2Tpm(Luks2TpmConfig),
}

/// `[volume]` with `mode = "luks2-tpm"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Luks2TpmConfig {
    /// The block device holding the LUKS2 volume.
    pub device: PathBuf,
    /// The device-mapper name; the opened volume appears as /dev/mapper/<name>.
    #[serde(default = "default_mapper_name")]
    pub mapper_name: String,
    /// Where the opened volume is mounted; the data directory of the agent.
    pub mount_point: PathBuf,
    /// Which TPM: `device:/dev/tpmrm0` on the box; `swtpm:host=…,port=…` in tests.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// The firmware policy file (PCRs, Secure Boot requirement).
    #[serde(default = "default_firmware_policy")]
    pub firmware_policy: PathBuf,
    /// Where the firmware exposes UEFI variables (a parameter so tests can point it elsewhere).
    #[serde(default = "default_efivars_dir")]
    pub efivars_dir: PathBuf,
    /// argon2id cost of new keyslots (provision, reseal).
    #[serde(default = "default_argon2")]
    pub argon2: KdfParams,
    /// The mkfs used once, at provisioning.
    #[serde(default = "default_mkfs")]
    pub mkfs: PathBuf,
}

fn default_mapper_name() -> String {
    "wardbox-data".into()
}
fn default_tcti() -> String {
    "device:/dev/tpmrm0".into()
}
fn default_firmware_policy() -> PathBuf {
    PathBuf::from("/usr/share/wardbox/firmware-policy.toml")
}
fn default_efivars_dir() -> PathBuf {
    PathBuf::from(wardbox_firmware_policy::DEFAULT_EFIVARS_DIR)
}
fn default_argon2() -> KdfParams {
    KdfParams::APPLIANCE
}
fn default_mkfs() -> PathBuf {
    PathBuf::from("/usr/sbin/mkfs.ext4")
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
            VolumeConfig::Luks2Tpm(Luks2TpmConfig {
                device,
                mapper_name,
                mount_point,
                tcti,
                firmware_policy,
                efivars_dir,
                argon2,
                mkfs,
            }) => {
                for (key, path) in [
                    ("volume.device", device),
                    ("volume.mount_point", mount_point),
                    ("volume.firmware_policy", firmware_policy),
                    ("volume.efivars_dir", efivars_dir),
                    ("volume.mkfs", mkfs),
                ] {
                    if !path.is_absolute() {
                        return Err(ConfigError::invalid(key, "must be an absolute path"));
                    }
                }
                if mapper_name.is_empty()
                    || mapper_name.len() > 64
                    || !mapper_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(ConfigError::invalid(
                        "volume.mapper_name",
                        "must be 1 to 64 letters, digits, '-' or '_'",
                    ));
                }
                let spec = wardbox_volume::tpm::parse_tcti(tcti)
                    .map_err(|e| ConfigError::invalid("volume.tcti", e.to_string()))?;
                if profile == Profile::Appliance && !matches!(spec, wardbox_volume::tpm::TctiSpec::Device(_)) {
                    return Err(ConfigError::invalid(
                        "volume.tcti",
                        "the appliance profile needs the hardware TPM (device:/dev/tpmrm0); a software TPM protects nothing",
                    ));
                }
                argon2.validate().map_err(|e| ConfigError::invalid("volume.argon2", e.to_string()))?;
                if profile == Profile::Appliance && argon2.memory_kib < 64 * 1024 {
                    return Err(ConfigError::invalid(
                        "volume.argon2.memory_kib",
                        "the appliance profile needs at least 65536 KiB so the recovery passphrase resists guessing",
                    ));
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
        VolumeConfig::Luks2Tpm(config) => Box::new(TpmLuksUnlocker::new(config.clone())),
    }
}

/// The appliance unlocker: TPM unseal, LUKS2 open, mount, store key from the volume key.
#[derive(Debug, Clone)]
pub struct TpmLuksUnlocker {
    pub config: Luks2TpmConfig,
    /// /proc/self/mounts, a parameter so tests can use a fixture.
    pub proc_mounts: PathBuf,
}

/// The config stage's firmware check: when the firmware policy pins Secure Boot keys
/// (`[secure_boot_keys]`), PK, KEK and db in the firmware must hold those certificates and no
/// others. Only the TPM-bound volume has a firmware policy. Returns the stage's detail line.
pub fn check_secure_boot_keys(config: &VolumeConfig) -> Result<String, String> {
    let VolumeConfig::Luks2Tpm(config) = config else {
        return Ok("no firmware policy (plain-directory volume)".into());
    };
    let policy = FirmwarePolicy::load(&config.firmware_policy).map_err(|e| e.to_string())?;
    if policy.secure_boot_keys.is_none() {
        return Ok("the firmware policy pins no Secure Boot keys".into());
    }
    let enrolled = wardbox_firmware_policy::read_enrolled_keys(&config.efivars_dir).map_err(|e| e.to_string())?;
    policy.check_secure_boot_keys(&enrolled).map_err(|e| e.to_string())?;
    Ok("Secure Boot PK, KEK and db are the keys the firmware policy pins".into())
}

impl TpmLuksUnlocker {
    pub fn new(config: Luks2TpmConfig) -> Self {
        TpmLuksUnlocker { config, proc_mounts: PathBuf::from("/proc/self/mounts") }
    }

    /// Read the firmware policy and hold the boot to it: Secure Boot first, before the TPM is
    /// asked for anything. Returns the policy and whether Secure Boot is on.
    pub fn check_firmware(&self) -> Result<(FirmwarePolicy, bool), String> {
        let policy = FirmwarePolicy::load(&self.config.firmware_policy).map_err(|e| e.to_string())?;
        let state = wardbox_firmware_policy::read_secure_boot_state(&self.config.efivars_dir);
        policy.check_secure_boot(state.clone()).map_err(|e| e.to_string())?;
        Ok((policy, state == wardbox_firmware_policy::SecureBootState::Enabled))
    }

    /// Connect to the configured TPM.
    pub fn connect(&self) -> Result<Tpm, String> {
        Tpm::connect(&self.config.tcti).map_err(|e| e.to_string())
    }

    /// The device-mapper node of the opened volume.
    pub fn mapped_device(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.config.mapper_name)
    }

    /// Is the opened volume mounted where the configuration says?
    pub fn is_mounted(&self) -> bool {
        std::fs::read_to_string(&self.proc_mounts)
            .ok()
            .and_then(|t| wardbox_volume::mount::mounted_at(&t, &self.config.mount_point))
            .is_some()
    }

    /// Open through dm-crypt (unless already open) and mount (unless already mounted).
    pub fn open_and_mount(&self, unlocked: &ops::Unlocked) -> Result<(), String> {
        if !self.mapped_device().exists() {
            let mut luks = LuksVolume::open(&self.config.device, None).map_err(|e| e.to_string())?;
            luks.activate(&self.config.mapper_name, &unlocked.volume_key).map_err(|e| e.to_string())?;
        }
        if !self.is_mounted() {
            wardbox_volume::mount::mount_volume(&self.mapped_device(), &self.config.mount_point).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn store_key_of(unlocked: &ops::Unlocked) -> StoreKey {
    use secrecy::ExposeSecret;
    StoreKey::from_bytes(*unlocked.store_key().expose_secret())
}

/// What IT reads when the TPM path fails at boot.
fn refused(e: impl std::fmt::Display) -> String {
    format!(
        "{e}. The data volume stays locked and the box will not serve; at the console run \
         `wardbox volume recover` (recovery key) and then `wardbox volume reseal`"
    )
}

impl VolumeUnlocker for TpmLuksUnlocker {
    fn unlock(&self) -> Result<(UnlockedVolume, StageReport), String> {
        let (policy, secure_boot_on) = self.check_firmware().map_err(refused)?;
        let mut tpm = self.connect().map_err(refused)?;
        let unlocked = ops::unlock_with_tpm(&mut tpm, &self.config.device).map_err(refused)?;
        self.open_and_mount(&unlocked)?;
        let store_key = store_key_of(&unlocked);
        let sealed_to = match &unlocked.via {
            ops::UnlockPath::Tpm { token, .. } => ops::status(&self.config.device, None)
                .ok()
                .and_then(|s| s.tpm_bindings.into_iter().find(|b| b.token == *token))
                .and_then(|b| b.policy),
            ops::UnlockPath::RecoveryKey { .. } => None,
        };
        let mut detail = format!(
            "LUKS2 volume {} opened with the TPM-sealed key ({}; policy {}), mounted at {}",
            self.config.device.display(),
            sealed_to.as_ref().map_or_else(|| policy.binding.to_string(), ToString::to_string),
            self.config.firmware_policy.display(),
            self.config.mount_point.display()
        );
        let mut missing = Vec::new();
        if !secure_boot_on {
            // Only reachable with secure_boot = "not-required" (lab machines).
            missing.push(Protection::SecureBoot);
        }
        // The mode counts too: a policy that adds [signed_pcr11] to a key sealed to PCR 7 alone
        // (or drops it) needs a reseal. Which PCR-signing key is compared by `wardbox volume status`.
        let stale = sealed_to
            .as_ref()
            .is_some_and(|s| s.binding != policy.binding || s.signed_pcr11.is_some() != policy.signed_pcr11.is_some());
        if stale {
            let wanted = if policy.signed_pcr11.is_some() {
                format!("{} + signed PCR 11", policy.binding)
            } else {
                policy.binding.to_string()
            };
            detail.push_str(&format!(
                "; the key is sealed to {} but the policy asks for {wanted}: run `wardbox volume reseal`",
                sealed_to.as_ref().map_or_else(String::new, ToString::to_string),
            ));
        }
        let report = if stale {
            StageReport { detail, missing, degraded: true }
        } else {
            StageReport::without(detail, missing)
        };
        Ok((UnlockedVolume { data_dir: self.config.mount_point.clone(), store_key }, report))
    }

    fn open_for_cli(&self) -> Result<UnlockedVolume, String> {
        if !self.is_mounted() {
            return Err(format!(
                "the data volume is not mounted at {}: is the agent running? (`wardbox volume status` says more)",
                self.config.mount_point.display()
            ));
        }
        let mut tpm = self.connect()?;
        let unlocked = ops::unlock_with_tpm(&mut tpm, &self.config.device).map_err(|e| e.to_string())?;
        Ok(UnlockedVolume { data_dir: self.config.mount_point.clone(), store_key: store_key_of(&unlocked) })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<VolumeConfig, String> {
        #[derive(Deserialize)]
        struct Wrap {
            volume: VolumeConfig,
        }
        toml::from_str::<Wrap>(text).map(|w| w.volume).map_err(|e| e.to_string())
    }

    const APPLIANCE: &str = r#"
[volume]
mode = "luks2-tpm"
device = "/dev/disk/by-partlabel/wardbox-data"
mount_point = "/var/lib/wardbox/data"
"#;

    #[test]
    fn luks2_tpm_section_parses_with_appliance_defaults() {
        let v = parse(APPLIANCE).unwrap();
        v.validate(Profile::Appliance).unwrap();
        let VolumeConfig::Luks2Tpm(c) = &v else { panic!("wrong mode: {v:?}") };
        assert_eq!(c.tcti, "device:/dev/tpmrm0");
        assert_eq!(c.mapper_name, "wardbox-data");
        assert_eq!(c.argon2, KdfParams::APPLIANCE);
        let u = TpmLuksUnlocker::new(c.clone());
        assert_eq!(u.mapped_device(), PathBuf::from("/dev/mapper/wardbox-data"));
    }

    #[test]
    fn luks2_tpm_section_takes_argon2_and_refuses_bad_values() {
        let with_kdf = format!("{APPLIANCE}[volume.argon2]\niterations = 5\nmemory_kib = 131072\nparallel_threads = 2\n");
        let v = parse(&with_kdf).unwrap();
        v.validate(Profile::Appliance).unwrap();
        let VolumeConfig::Luks2Tpm(c) = &v else { panic!("wrong mode: {v:?}") };
        assert_eq!(c.argon2.iterations, 5);

        let cases: Vec<(String, Profile, &str)> = vec![
            (APPLIANCE.replace("/dev/disk", "dev/disk"), Profile::Appliance, "volume.device"),
            (format!("{APPLIANCE}tcti = \"swtpm:port=2321\"\n"), Profile::Appliance, "software TPM"),
            (format!("{APPLIANCE}tcti = \"tpm0\"\n"), Profile::Dev, "volume.tcti"),
            (format!("{APPLIANCE}mapper_name = \"a/b\"\n"), Profile::Dev, "volume.mapper_name"),
            (
                format!("{APPLIANCE}[volume.argon2]\niterations = 4\nmemory_kib = 32\nparallel_threads = 1\n"),
                Profile::Appliance,
                "65536",
            ),
            (
                format!("{APPLIANCE}[volume.argon2]\niterations = 1\nmemory_kib = 65536\nparallel_threads = 1\n"),
                Profile::Dev,
                "iterations",
            ),
        ];
        for (text, profile, needle) in cases {
            let err = match parse(&text) {
                Ok(v) => v.validate(profile).unwrap_err().to_string(),
                Err(e) => e,
            };
            assert!(err.contains(needle), "{text}: {err}");
        }
        // A swtpm TCTI is fine in the dev profile.
        let dev = parse(&format!("{APPLIANCE}tcti = \"swtpm:host=127.0.0.1,port=2321\"\n")).unwrap();
        dev.validate(Profile::Dev).unwrap();
        // Unknown keys are refused.
        assert!(parse(&format!("{APPLIANCE}fallback = \"plain\"\n")).is_err());
    }

    #[test]
    fn secure_boot_off_stops_the_unlock_before_the_tpm_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, wardbox_firmware_policy::DEFAULT_POLICY_TOML).unwrap();
        let efivars = dir.path().join("efivars");
        std::fs::create_dir(&efivars).unwrap();
        std::fs::write(efivars.join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"), [6, 0, 0, 0, 0]).unwrap();
        let u = TpmLuksUnlocker::new(Luks2TpmConfig {
            device: dir.path().join("absent.img"),
            mapper_name: "x".into(),
            mount_point: dir.path().join("mnt"),
            // Nothing listens here; the error must be about Secure Boot, not the TPM.
            tcti: "swtpm:host=127.0.0.1,port=1".into(),
            firmware_policy: policy,
            efivars_dir: efivars,
            argon2: KdfParams::TEST_ONLY_MINIMAL,
            mkfs: PathBuf::from("/usr/sbin/mkfs.ext4"),
        });
        let err = u.unlock().unwrap_err();
        assert!(err.contains("requires Secure Boot"), "{err}");
        assert!(err.contains("wardbox volume recover"), "{err}");
        assert!(!dir.path().join("mnt").exists(), "nothing may be created when the firmware check fails");
    }

    #[test]
    fn the_config_stage_refuses_secure_boot_keys_the_policy_does_not_pin() {
        use wardbox_firmware_policy::{CertFingerprint, KeyVariable};
        // One EFI_SIGNATURE_LIST of X.509 type (GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072)
        // holding `cert`, after efivarfs' 4 attribute bytes.
        fn key_variable(cert: &[u8]) -> Vec<u8> {
            let mut out = vec![0x27, 0, 0, 0];
            out.extend([0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72]);
            out.extend(u32::try_from(28 + 16 + cert.len()).unwrap().to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(u32::try_from(16 + cert.len()).unwrap().to_le_bytes());
            out.extend([0u8; 16]);
            out.extend(cert);
            out
        }
        let dir = tempfile::tempdir().unwrap();
        let efivars = dir.path().join("efivars");
        std::fs::create_dir(&efivars).unwrap();
        let fp = |der: &[u8]| CertFingerprint::of_der(der).to_string();
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "{}\n[secure_boot_keys]\npk = [\"{}\"]\nkek = [\"{}\"]\ndb = [\"{}\"]\n",
                wardbox_firmware_policy::DEFAULT_POLICY_TOML,
                fp(b"pk"),
                fp(b"kek"),
                fp(b"db")
            ),
        )
        .unwrap();
        let config = VolumeConfig::Luks2Tpm(Luks2TpmConfig {
            device: dir.path().join("absent.img"),
            mapper_name: "x".into(),
            mount_point: dir.path().join("mnt"),
            tcti: "swtpm:host=127.0.0.1,port=1".into(),
            firmware_policy: policy.clone(),
            efivars_dir: efivars.clone(),
            argon2: KdfParams::TEST_ONLY_MINIMAL,
            mkfs: PathBuf::from("/usr/sbin/mkfs.ext4"),
        });
        let write = |variable: KeyVariable, cert: &[u8]| {
            std::fs::write(efivars.join(variable.file_name()), key_variable(cert)).unwrap();
        };
        write(KeyVariable::Pk, b"pk");
        write(KeyVariable::Kek, b"kek");
        write(KeyVariable::Db, b"db");
        let ok = check_secure_boot_keys(&config).unwrap();
        assert!(ok.contains("the keys the firmware policy pins"), "{ok}");
        // Another db certificate (say, after someone enrolled their own key in the setup).
        write(KeyVariable::Db, b"someone else's db");
        let err = check_secure_boot_keys(&config).unwrap_err();
        assert!(err.contains("Secure Boot db") && err.contains(&fp(b"someone else's db")), "{err}");
        // The shipped policy pins nothing: the same firmware passes, and says so.
        std::fs::write(&policy, wardbox_firmware_policy::DEFAULT_POLICY_TOML).unwrap();
        assert!(check_secure_boot_keys(&config).unwrap().contains("pins no Secure Boot keys"));
    }

    #[test]
    fn swtpm_unlock_stage_fails_closed_when_the_tpm_refuses() {
        use wardbox_volume::PcrBank;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("tpm");
        std::fs::create_dir(&state).unwrap();
        let sw = wardbox_volume::swtpm::SoftwareTpm::start(&state)
            .unwrap_or_else(|e| panic!("swtpm_ tests need a software TPM: {e}"));
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, wardbox_firmware_policy::DEFAULT_POLICY_TOML).unwrap();
        let efivars = dir.path().join("efivars");
        std::fs::create_dir(&efivars).unwrap();
        std::fs::write(efivars.join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"), [6, 0, 0, 0, 1]).unwrap();
        let device = dir.path().join("data.img");
        std::fs::File::create(&device).unwrap().set_len(32 * 1024 * 1024).unwrap();
        let u = TpmLuksUnlocker::new(Luks2TpmConfig {
            device: device.clone(),
            mapper_name: "wardbox-unit-test".into(),
            mount_point: dir.path().join("mnt"),
            tcti: sw.tcti(),
            firmware_policy: policy,
            efivars_dir: efivars,
            argon2: KdfParams::TEST_ONLY_MINIMAL,
            mkfs: PathBuf::from("/usr/sbin/mkfs.ext4"),
        });
        let (fw, on) = u.check_firmware().unwrap();
        assert!(on);
        let mut tpm = u.connect().unwrap();
        ops::provision(&mut tpm, &device, &fw.binding, &KdfParams::TEST_ONLY_MINIMAL).unwrap();
        tpm.extend_pcr(PcrBank::Sha256, 7, b"another boot chain").unwrap();
        drop(tpm);

        let err = u.unlock().unwrap_err();
        assert!(err.contains("the boot chain changed since the key was sealed"), "{err}");
        assert!(err.contains("wardbox volume recover"), "{err}");
        assert!(!dir.path().join("mnt").exists(), "a refused unlock must not create or mount anything");
        let err = u.open_for_cli().unwrap_err();
        assert!(err.contains("not mounted"), "{err}");
    }
}
