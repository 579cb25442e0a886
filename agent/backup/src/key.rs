//! The repository key: 32 random bytes. restic and rustic open a repository with a password
//! (scrypt-stretched into the key that unwraps the repository's master key); ours is the hex
//! form of these bytes, so it is as strong as the bytes and can be typed from the escrow sheet.

use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

/// Length of the key in bytes.
pub const KEY_BYTES: usize = 32;

/// The secret that opens the backup repository. Redacted in `Debug`, zeroed on drop.
pub struct RepositoryKey(SecretBox<[u8; KEY_BYTES]>);

impl std::fmt::Debug for RepositoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepositoryKey([redacted])")
    }
}

/// Errors making or reading a repository key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random number generator failed; no key was made.
    #[error("the operating system random number generator failed: {0}")]
    Random(String),
    /// The text is not 64 hexadecimal digits.
    #[error("a backup repository key is 64 hexadecimal digits ({KEY_BYTES} bytes); the text given is not")]
    Malformed,
}

impl RepositoryKey {
    /// A fresh key from the operating system's generator; fails closed.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        OsRng.try_fill_bytes(bytes.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(SecretBox::new(Box::new(*bytes))))
    }

    /// Parse the hex form (what the escrow sheet and the store hold). Whitespace around it and
    /// inside it (the sheet prints groups) is ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let compact: Zeroizing<String> = Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        hex::decode_to_slice(compact.as_bytes(), bytes.as_mut()).map_err(|_| KeyError::Malformed)?;
        Ok(Self(SecretBox::new(Box::new(*bytes))))
    }

    /// The hex form: the repository password, and what the escrow sheet shows.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.expose_secret()))
    }

    /// A short fingerprint that names the key without revealing it (first 8 bytes of
    /// SHA-256 over a label and the key), for audit records and the escrow sheet.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"wardbox backup key fingerprint v1\0");
        hasher.update(self.0.expose_secret());
        hex::encode(&hasher.finalize()[..8])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = RepositoryKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "RepositoryKey([redacted])");
        assert!(!shown.contains(&key.to_hex()[..8]));
    }

    #[test]
    fn hex_round_trips_and_ignores_grouping() {
        let key = RepositoryKey::generate().unwrap();
        let hex = key.to_hex();
        let grouped: String = hex.as_bytes().chunks(8).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ");
        let back = RepositoryKey::from_hex(&format!("  {grouped}\n")).unwrap();
        assert_eq!(*back.to_hex(), *hex);
        assert_eq!(back.fingerprint(), key.fingerprint());
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(62), &"a".repeat(66)] {
            assert!(matches!(RepositoryKey::from_hex(bad), Err(KeyError::Malformed)), "{bad:?}");
        }
    }

    #[test]
    fn two_keys_differ() {
        let a = RepositoryKey::generate().unwrap();
        let b = RepositoryKey::generate().unwrap();
        assert_ne!(*a.to_hex(), *b.to_hex());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
