//! The secrets this crate handles, each in a type that redacts its `Debug` and zeroes its memory
//! on drop (`secrecy::SecretBox`), and the derivation of the store key.
//!
//! Three keys, three roles:
//! - [`TpmSecret`]: 32 random bytes sealed in the TPM. It is the passphrase of the "TPM" LUKS2
//!   keyslot, never the data key itself, so it can be rotated without re-encrypting the disk.
//! - [`VolumeKey`]: the LUKS2 volume (master) key, 64 bytes for AES-256-XTS. The same whichever
//!   keyslot opened it (TPM or recovery), and unchanged by keyslot rotation.
//! - the store key: derived from the volume key with HKDF-SHA256, so the SQLCipher store is
//!   locked by the TPM too, opens on the recovery path as well, and survives TPM key rotation.

use hkdf::Hkdf;
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use sha2::Sha256;

/// Size of the TPM-sealed keyslot secret.
pub const TPM_SECRET_BYTES: usize = 32;
/// Size of the LUKS2 volume key: AES-256 in XTS mode uses two 256-bit keys.
pub const VOLUME_KEY_BYTES: usize = 64;
/// The HKDF `info` string for the store key. Changing it changes every store key: it carries a
/// version so that a future second derivation can exist beside it.
pub const STORE_KEY_INFO: &[u8] = b"wardbox sqlcipher store key v1";

/// Errors making or reading key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random number generator failed; no key was made.
    #[error("the operating system random number generator failed: {0}")]
    Random(String),
    /// Bytes of the wrong length were given where a key was expected.
    #[error("a {what} must be {expected} bytes, got {got}")]
    Length { what: &'static str, expected: usize, got: usize },
}

/// Fill a buffer from the OS RNG, failing closed.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), KeyError> {
    OsRng.try_fill_bytes(buf).map_err(|e| KeyError::Random(e.to_string()))
}

/// The 32-byte secret sealed in the TPM; the passphrase of the TPM keyslot.
#[derive(Debug)]
pub struct TpmSecret(SecretBox<[u8; TPM_SECRET_BYTES]>);

impl TpmSecret {
    /// A fresh random secret.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = SecretBox::new(Box::new([0u8; TPM_SECRET_BYTES]));
        fill_random(secret.expose_secret_mut())?;
        Ok(TpmSecret(secret))
    }

    /// Wrap bytes that came out of the TPM. The caller should zero its own copy.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; TPM_SECRET_BYTES] = bytes.try_into().map_err(|_| KeyError::Length {
            what: "TPM-sealed secret",
            expected: TPM_SECRET_BYTES,
            got: bytes.len(),
        })?;
        Ok(TpmSecret(SecretBox::new(Box::new(array))))
    }

    /// The secret's bytes, for the TPM and libcryptsetup calls only.
    pub fn expose(&self) -> &[u8; TPM_SECRET_BYTES] {
        self.0.expose_secret()
    }
}

/// The LUKS2 volume key.
#[derive(Debug)]
pub struct VolumeKey(SecretBox<[u8; VOLUME_KEY_BYTES]>);

impl VolumeKey {
    /// A zeroed key for libcryptsetup to fill.
    pub(crate) fn zeroed() -> Self {
        VolumeKey(SecretBox::new(Box::new([0u8; VOLUME_KEY_BYTES])))
    }

    pub(crate) fn expose_mut(&mut self) -> &mut [u8; VOLUME_KEY_BYTES] {
        self.0.expose_secret_mut()
    }

    /// The key's bytes, for activation through libcryptsetup only.
    pub fn expose(&self) -> &[u8; VOLUME_KEY_BYTES] {
        self.0.expose_secret()
    }
}

/// Derive the SQLCipher store key from the volume key: HKDF-SHA256, no salt (the input is a
/// uniformly random 512-bit key, so extraction needs none), info [`STORE_KEY_INFO`].
pub fn derive_store_key(volume_key: &VolumeKey) -> SecretBox<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, volume_key.expose());
    let mut out = SecretBox::new(Box::new([0u8; 32]));
    // 32 bytes is far below HKDF-SHA256's 255*32 byte limit, so expand cannot fail.
    #[allow(clippy::expect_used)]
    hk.expand(STORE_KEY_INFO, out.expose_secret_mut()).expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn store_key_is_deterministic_and_depends_on_the_volume_key() {
        let mut a = VolumeKey::zeroed();
        a.expose_mut()[0] = 1;
        let mut b = VolumeKey::zeroed();
        b.expose_mut()[0] = 1;
        let mut c = VolumeKey::zeroed();
        c.expose_mut()[0] = 2;
        let ka = derive_store_key(&a);
        assert_eq!(ka.expose_secret(), derive_store_key(&b).expose_secret());
        assert_ne!(ka.expose_secret(), derive_store_key(&c).expose_secret());
        assert_ne!(&ka.expose_secret()[..], &a.expose()[..32], "the store key must not be the volume key");
    }

    #[test]
    fn store_key_matches_an_independent_hkdf_computation() {
        // RFC 5869 HKDF with SHA-256, computed by hand with HMAC: PRK = HMAC(zeros32, ikm),
        // OKM = HMAC(PRK, info || 0x01). Guards against a silent change of the derivation.
        use hmac_reference::hmac_sha256;
        let mut vk = VolumeKey::zeroed();
        for (i, b) in vk.expose_mut().iter_mut().enumerate() {
            *b = i as u8;
        }
        let prk = hmac_sha256(&[0u8; 32], vk.expose());
        let mut msg = STORE_KEY_INFO.to_vec();
        msg.push(1);
        let okm = hmac_sha256(&prk, &msg);
        assert_eq!(derive_store_key(&vk).expose_secret(), &okm);
    }

    /// A plain HMAC-SHA256 from the sha2 primitive, used only to cross-check hkdf.
    mod hmac_reference {
        use sha2::{Digest, Sha256};
        pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
            let mut k = [0u8; 64];
            k[..key.len()].copy_from_slice(key);
            let mut inner = Sha256::new();
            inner.update(k.map(|b| b ^ 0x36));
            inner.update(msg);
            let mut outer = Sha256::new();
            outer.update(k.map(|b| b ^ 0x5c));
            outer.update(inner.finalize());
            outer.finalize().into()
        }
    }

    #[test]
    fn secrets_do_not_print_their_bytes() {
        let s = TpmSecret::from_slice(&[0xAB; 32]).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.to_lowercase().contains("ab, ") && !shown.contains("171"), "{shown}");
        assert!(TpmSecret::from_slice(&[1; 31]).is_err());
        let a = TpmSecret::generate().unwrap();
        let b = TpmSecret::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
    }
}
