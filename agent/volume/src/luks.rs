//! The LUKS2 header of the data volume, through libcryptsetup (`libcryptsetup-rs`).
//!
//! Everything here works on a regular file as well as on a block device: format, keyslots,
//! tokens, and the key test ("does this passphrase open a keyslot", libcryptsetup's activation
//! with no device-mapper name). Only [`LuksVolume::activate`] needs device-mapper; it runs on the
//! appliance and in the qemu guest, never on the build host.
//!
//! The volume describes itself: a `wardbox-tpm2` token holds the sealed TPM blob and the PCRs it
//! is bound to, and a `wardbox-recovery` token marks the recovery keyslot, so `status` can name
//! every keyslot without any file outside the volume.

use std::path::{Path, PathBuf};

use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptParamsLuks2, CryptParamsLuks2Ref, CryptPbkdfType, LibcryptErr, TokenInput,
    consts::{
        flags::{CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey},
        vals::{CryptKdf, EncryptionFormat, KeyslotInfo},
    },
};
use serde_json::Value;

use crate::keys::{VOLUME_KEY_BYTES, VolumeKey};

/// LUKS2 has 32 keyslots and 32 token slots.
pub const LUKS2_SLOTS: u32 = 32;
/// The data cipher: AES-256 in XTS mode, the LUKS2 default.
const CIPHER: (&str, &str) = ("aes", "xts-plain64");

/// Errors on the LUKS2 header.
#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    /// The volume file or device does not exist.
    #[error("the volume {path} does not exist")]
    Missing { path: PathBuf },
    /// The file or device has no LUKS2 header.
    #[error(
        "{path} is not a LUKS2 volume ({detail}); check the `device` setting, or run \
         `wardbox volume provision` if this is a new disk"
    )]
    NotLuks2 { path: PathBuf, detail: String },
    /// Provisioning was asked on a volume that already has a LUKS header.
    #[error(
        "{path} already holds a LUKS volume; provisioning would destroy its data. To unlock it use \
         `wardbox volume unlock`; to start over, wipe it deliberately first (`wipefs -a {path}`)"
    )]
    AlreadyLuks { path: PathBuf },
    /// The key or passphrase does not open any (or the named) keyslot.
    #[error("the key does not open {what} of {path}")]
    WrongKey { path: PathBuf, what: String },
    /// The argon2id parameters are out of range.
    #[error("the argon2id setting {field} = {value} is out of range: {reason}")]
    Kdf { field: &'static str, value: u32, reason: &'static str },
    /// A token's JSON could not be stored or read.
    #[error("the LUKS2 token {token} of {path} cannot be used: {detail}")]
    Token { path: PathBuf, token: u32, detail: String },
    /// Another libcryptsetup call failed.
    #[error("cryptsetup could not {op} on {path}: {source}")]
    Cryptsetup { op: &'static str, path: PathBuf, source: LibcryptErr },
}

/// argon2id cost parameters for new keyslots. Stored per keyslot in the header, so changing
/// them affects keyslots added afterwards only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Passes over memory (argon2 "t"). libcryptsetup requires at least 4.
    pub iterations: u32,
    /// Memory in KiB (argon2 "m"). 32 KiB minimum; 4 GiB maximum in libcryptsetup.
    pub memory_kib: u32,
    /// Lanes (argon2 "p").
    pub parallel_threads: u32,
}

impl KdfParams {
    /// For the appliance: 1 GiB, 4 lanes, 4 passes (about a second on the box's CPU). The TPM
    /// keyslot's secret is random, so the cost matters most for the recovery passphrase.
    pub const APPLIANCE: KdfParams = KdfParams { iterations: 4, memory_kib: 1024 * 1024, parallel_threads: 4 };
    /// The smallest libcryptsetup accepts; for tests only, where the volume holds nothing.
    pub const TEST_ONLY_MINIMAL: KdfParams = KdfParams { iterations: 4, memory_kib: 32, parallel_threads: 1 };

    /// Check against libcryptsetup's limits, so a bad config is refused before any write.
    pub fn validate(&self) -> Result<(), LuksError> {
        if self.iterations < 4 {
            return Err(LuksError::Kdf { field: "iterations", value: self.iterations, reason: "at least 4" });
        }
        if !(32..=4 * 1024 * 1024).contains(&self.memory_kib) {
            return Err(LuksError::Kdf { field: "memory_kib", value: self.memory_kib, reason: "32 to 4194304 KiB" });
        }
        if !(1..=16).contains(&self.parallel_threads) {
            return Err(LuksError::Kdf { field: "parallel_threads", value: self.parallel_threads, reason: "1 to 16" });
        }
        Ok(())
    }

    fn to_crypt(self) -> CryptPbkdfType {
        CryptPbkdfType {
            type_: CryptKdf::Argon2Id,
            hash: Some("sha256".to_string()),
            time_ms: 0,
            iterations: self.iterations,
            max_memory_kb: self.memory_kib,
            parallel_threads: self.parallel_threads,
            // Use exactly these costs instead of benchmarking the machine at format time.
            flags: CryptPbkdf::NO_BENCHMARK,
        }
    }
}

/// State of one keyslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Active,
    /// Active, and the only active one: removing it would lose the data.
    ActiveLast,
    /// Holds a key not bound to the data segment (not used by Wardbox).
    Unbound,
}

/// An open LUKS2 header.
pub struct LuksVolume {
    device: CryptDevice,
    path: PathBuf,
    /// Whether argon2id parameters were given. Without them libcryptsetup would benchmark and
    /// pick its own (up to 1 GiB per keyslot), so adding a keyslot is refused instead.
    kdf_set: bool,
}

impl std::fmt::Debug for LuksVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuksVolume").field("path", &self.path).finish_non_exhaustive()
    }
}

fn init(path: &Path) -> Result<CryptDevice, LuksError> {
    if !path.exists() {
        return Err(LuksError::Missing { path: path.to_path_buf() });
    }
    CryptInit::init(path).map_err(|source| LuksError::Cryptsetup { op: "open the device", path: path.to_path_buf(), source })
}

/// Does the file or device carry a LUKS header (version 1 or 2)? Read only.
pub fn has_luks_header(path: &Path) -> Result<bool, LuksError> {
    let mut device = init(path)?;
    Ok(device.context_handle().load::<()>(None, None).is_ok()
        && matches!(device.format_handle().get_type(), Ok(EncryptionFormat::Luks1 | EncryptionFormat::Luks2)))
}

impl LuksVolume {
    /// Open an existing LUKS2 header. Keyslots added later use `kdf`; pass `None` when no
    /// keyslot will be added (unlock, status), and adding one is then refused.
    pub fn open(path: &Path, kdf: Option<&KdfParams>) -> Result<Self, LuksError> {
        if let Some(kdf) = kdf {
            kdf.validate()?;
        }
        let mut device = init(path)?;
        device
            .context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .map_err(|e| LuksError::NotLuks2 { path: path.to_path_buf(), detail: describe(&e) })?;
        if let Some(kdf) = kdf {
            device.settings_handle().set_pbkdf_type(&kdf.to_crypt()).map_err(|source| LuksError::Cryptsetup {
                op: "set the argon2id parameters",
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(LuksVolume { device, path: path.to_path_buf(), kdf_set: kdf.is_some() })
    }

    /// Write a new LUKS2 header with a fresh random volume key. Refuses a volume that already
    /// has a LUKS header. The returned volume still holds the new volume key in memory, so the
    /// first keyslots are added with [`LuksVolume::add_keyslot_after_format`].
    pub fn format(path: &Path, kdf: &KdfParams) -> Result<Self, LuksError> {
        kdf.validate()?;
        if has_luks_header(path)? {
            return Err(LuksError::AlreadyLuks { path: path.to_path_buf() });
        }
        let mut device = init(path)?;
        let op_err = |op: &'static str| move |source| LuksError::Cryptsetup { op, path: path.to_path_buf(), source };
        device.settings_handle().set_pbkdf_type(&kdf.to_crypt()).map_err(op_err("set the argon2id parameters"))?;
        let params = CryptParamsLuks2 {
            pbkdf: Some(kdf.to_crypt()),
            integrity: None,
            integrity_params: None,
            data_alignment: 0,
            data_device: None,
            sector_size: 512,
            label: Some("wardbox-data".to_string()),
            subsystem: None,
        };
        let mut params_ref: CryptParamsLuks2Ref<'_> = (&params).try_into().map_err(op_err("prepare the LUKS2 parameters"))?;
        device
            .context_handle()
            .format::<CryptParamsLuks2Ref<'_>>(
                EncryptionFormat::Luks2,
                CIPHER,
                None,
                libcryptsetup_rs::Either::Right(VOLUME_KEY_BYTES),
                Some(&mut params_ref),
            )
            .map_err(op_err("write a LUKS2 header"))?;
        Ok(LuksVolume { device, path: path.to_path_buf(), kdf_set: true })
    }

    /// Keyslots added from now on use these argon2id costs (for passphrases a person types).
    pub fn use_kdf(&mut self, kdf: &KdfParams) -> Result<(), LuksError> {
        kdf.validate()?;
        let path = self.path.clone();
        self.device
            .settings_handle()
            .set_pbkdf_type(&kdf.to_crypt())
            .map_err(|source| LuksError::Cryptsetup { op: "set the argon2id parameters", path, source })?;
        self.kdf_set = true;
        Ok(())
    }

    /// Keyslots added from now on use PBKDF2-SHA256 at libcryptsetup's minimum (1000
    /// iterations). Only for 256-bit random secrets (the TPM-sealed one): stretching a key that
    /// cannot be guessed adds boot time and no security (systemd-cryptenroll does the same
    /// for its TPM2 keyslots). Measured here: argon2id at 1 GiB costs ~19 s per open on this
    /// 2-core machine; PBKDF2 at 1000 iterations a few ms.
    pub fn use_kdf_for_random_secret(&mut self) -> Result<(), LuksError> {
        let path = self.path.clone();
        let pbkdf2 = CryptPbkdfType {
            type_: CryptKdf::Pbkdf2,
            hash: Some("sha256".to_string()),
            time_ms: 0,
            iterations: 1000,
            max_memory_kb: 0,
            parallel_threads: 0,
            flags: CryptPbkdf::NO_BENCHMARK,
        };
        self.device
            .settings_handle()
            .set_pbkdf_type(&pbkdf2)
            .map_err(|source| LuksError::Cryptsetup { op: "set the PBKDF2 parameters", path, source })?;
        self.kdf_set = true;
        Ok(())
    }

    /// The key-derivation function of a keyslot ("argon2id", "pbkdf2"), for status and tests.
    pub fn keyslot_kdf(&mut self, keyslot: u32) -> Result<String, LuksError> {
        let path = self.path.clone();
        let kdf = self
            .device
            .keyslot_handle()
            .get_pbkdf(keyslot)
            .map_err(|source| LuksError::Cryptsetup { op: "read a keyslot's KDF", path, source })?;
        Ok(match kdf.type_ {
            CryptKdf::Pbkdf2 => "pbkdf2",
            CryptKdf::Argon2I => "argon2i",
            CryptKdf::Argon2Id => "argon2id",
        }
        .to_string())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Add a keyslot with the volume key still in memory from [`LuksVolume::format`].
    pub fn add_keyslot_after_format(&mut self, passphrase: &[u8]) -> Result<u32, LuksError> {
        let path = self.path.clone();
        self.device
            .keyslot_handle()
            .add_by_key(None, None, passphrase, CryptVolumeKey::empty())
            .map_err(|source| LuksError::Cryptsetup { op: "add a keyslot", path, source })
    }

    /// Add a keyslot for `new_passphrase`, authorised by a passphrase that opens another one.
    pub fn add_keyslot(&mut self, existing: &[u8], new_passphrase: &[u8]) -> Result<u32, LuksError> {
        let path = self.path.clone();
        if !self.kdf_set {
            return Err(LuksError::Cryptsetup {
                op: "add a keyslot",
                path,
                source: LibcryptErr::Other("no argon2id parameters were given (internal error)".into()),
            });
        }
        self.device.keyslot_handle().add_by_passphrase(None, existing, new_passphrase).map_err(|e| match errno(&e) {
            Some(EPERM) => LuksError::WrongKey { path: path.clone(), what: "any keyslot".to_string() },
            _ => LuksError::Cryptsetup { op: "add a keyslot", path: path.clone(), source: e },
        })
    }

    /// Recover the volume key with a passphrase; returns the keyslot it opened.
    pub fn volume_key(&mut self, keyslot: Option<u32>, passphrase: &[u8]) -> Result<(u32, VolumeKey), LuksError> {
        let mut key = VolumeKey::zeroed();
        let path = self.path.clone();
        let (slot, size) =
            self.device.volume_key_handle().get(keyslot, key.expose_mut(), Some(passphrase)).map_err(|e| match errno(&e) {
                Some(code) if code == EPERM || code == ENOENT => LuksError::WrongKey { path: path.clone(), what: slot_name(keyslot) },
                _ => LuksError::Cryptsetup { op: "read the volume key", path: path.clone(), source: e },
            })?;
        if size != VOLUME_KEY_BYTES {
            return Err(LuksError::Cryptsetup {
                op: "read the volume key",
                path,
                source: LibcryptErr::Other(format!("the volume key is {size} bytes; Wardbox volumes use {VOLUME_KEY_BYTES}")),
            });
        }
        Ok((slot as u32, key))
    }

    /// The "test passphrase" path: does the passphrase open the keyslot? Nothing is activated.
    pub fn test_passphrase(&mut self, keyslot: Option<u32>, passphrase: &[u8]) -> Result<u32, LuksError> {
        let path = self.path.clone();
        self.device.activate_handle().activate_by_passphrase(None, keyslot, passphrase, CryptActivate::empty()).map_err(
            |e| match errno(&e) {
                Some(code) if code == EPERM || code == ENOENT => LuksError::WrongKey { path: path.clone(), what: slot_name(keyslot) },
                _ => LuksError::Cryptsetup { op: "test a passphrase", path: path.clone(), source: e },
            },
        )
    }

    /// Remove a keyslot. libcryptsetup refuses nothing here, so callers check roles first.
    pub fn destroy_keyslot(&mut self, keyslot: u32) -> Result<(), LuksError> {
        let path = self.path.clone();
        self.device
            .keyslot_handle()
            .destroy(keyslot)
            .map_err(|source| LuksError::Cryptsetup { op: "remove a keyslot", path, source })
    }

    /// Keyslots in use, with their state.
    pub fn keyslots(&mut self) -> Result<Vec<(u32, SlotState)>, LuksError> {
        let mut out = Vec::new();
        for slot in 0..LUKS2_SLOTS {
            let path = self.path.clone();
            let state = self
                .device
                .keyslot_handle()
                .status(slot)
                .map_err(|source| LuksError::Cryptsetup { op: "read keyslot status", path, source })?;
            match state {
                KeyslotInfo::Active => out.push((slot, SlotState::Active)),
                KeyslotInfo::ActiveLast => out.push((slot, SlotState::ActiveLast)),
                KeyslotInfo::Unbound => out.push((slot, SlotState::Unbound)),
                KeyslotInfo::Inactive | KeyslotInfo::Invalid => {}
            }
        }
        Ok(out)
    }

    /// All tokens in the header, as (token id, JSON).
    pub fn tokens(&mut self) -> Result<Vec<(u32, Value)>, LuksError> {
        let mut out = Vec::new();
        for id in 0..LUKS2_SLOTS {
            let path = self.path.clone();
            match self.device.token_handle().json_get(id) {
                Ok(json) => out.push((id, json)),
                // ENOENT / EINVAL: no token in that slot.
                Err(e) if matches!(errno(&e), Some(code) if code == ENOENT || code == EINVAL) => {}
                Err(e) => return Err(LuksError::Token { path, token: id, detail: describe(&e) }),
            }
        }
        Ok(out)
    }

    /// Store a new token; returns its id. libcryptsetup checks that the keyslots it names exist.
    pub fn add_token(&mut self, json: &Value) -> Result<u32, LuksError> {
        let path = self.path.clone();
        self.device
            .token_handle()
            .json_set(TokenInput::AddToken(json))
            .map_err(|e| LuksError::Token { path, token: LUKS2_SLOTS, detail: describe(&e) })
    }

    pub fn remove_token(&mut self, id: u32) -> Result<(), LuksError> {
        let path = self.path.clone();
        self.device
            .token_handle()
            .json_set(TokenInput::RemoveToken(id))
            .map(|_| ())
            .map_err(|e| LuksError::Token { path, token: id, detail: describe(&e) })
    }

    /// The volume's UUID (from the header).
    pub fn uuid(&mut self) -> Result<String, LuksError> {
        let path = self.path.clone();
        let uuid = self.device.status_handle().get_uuid();
        uuid.map(|u| u.to_string()).map_err(|source| LuksError::Cryptsetup { op: "read the UUID", path, source })
    }

    /// Map the volume through dm-crypt as /dev/mapper/`name`. Needs root and device-mapper:
    /// the appliance and the qemu guest, never the build host.
    pub fn activate(&mut self, name: &str, key: &VolumeKey) -> Result<PathBuf, LuksError> {
        let path = self.path.clone();
        self.device
            .activate_handle()
            .activate_by_volume_key(Some(name), Some(key.expose()), CryptActivate::empty())
            .map_err(|source| LuksError::Cryptsetup { op: "open the volume through device-mapper", path, source })?;
        Ok(PathBuf::from("/dev/mapper").join(name))
    }

    /// Remove the device-mapper mapping.
    pub fn deactivate(&mut self, name: &str) -> Result<(), LuksError> {
        let path = self.path.clone();
        self.device
            .activate_handle()
            .deactivate(name, CryptDeactivate::empty())
            .map_err(|source| LuksError::Cryptsetup { op: "close the device-mapper mapping", path, source })
    }
}

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;

fn errno(e: &LibcryptErr) -> Option<i32> {
    match e {
        LibcryptErr::IOError(io) => io.raw_os_error(),
        _ => None,
    }
}

fn describe(e: &LibcryptErr) -> String {
    match errno(e) {
        Some(EINVAL) => "no valid LUKS2 header found".to_string(),
        _ => e.to_string(),
    }
}

fn slot_name(keyslot: Option<u32>) -> String {
    keyslot.map_or_else(|| "any keyslot".to_string(), |k| format!("keyslot {k}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_limits_are_checked() {
        assert!(KdfParams::APPLIANCE.validate().is_ok());
        assert!(KdfParams::TEST_ONLY_MINIMAL.validate().is_ok());
        let bad = [
            KdfParams { iterations: 3, ..KdfParams::APPLIANCE },
            KdfParams { memory_kib: 16, ..KdfParams::APPLIANCE },
            KdfParams { memory_kib: 5 * 1024 * 1024, ..KdfParams::APPLIANCE },
            KdfParams { parallel_threads: 0, ..KdfParams::APPLIANCE },
        ];
        for k in bad {
            assert!(matches!(k.validate(), Err(LuksError::Kdf { .. })), "{k:?}");
        }
    }
}
