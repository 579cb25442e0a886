//! The store key: 32 random bytes, redacted in Debug and zeroed on drop.

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

/// The SQLCipher key. Only the unlock stage makes one and only the store reads it.
pub struct StoreKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([REDACTED])")
    }
}

impl StoreKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut bytes = Zeroizing::new(bytes);
        StoreKey(SecretBox::new(Box::new(std::mem::take(&mut *bytes))))
    }

    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::fill(&mut *bytes);
        Self::from_bytes(*bytes)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let decoded = Zeroizing::new(hex::decode(text).map_err(|e| format!("not hex: {e}"))?);
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected 32 bytes, found {}", decoded.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.expose_secret()))
    }

    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }

    /// `PRAGMA key = "x'…'"` (or rekey) with the raw key, so SQLCipher skips its own KDF: the
    /// key is already 256 bits of randomness.
    pub(super) fn pragma(&self, name: &str) -> Zeroizing<String> {
        Zeroizing::new(format!("PRAGMA {name} = \"x'{}'\";", self.to_hex().as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = StoreKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn hex_round_trip_and_bad_hex() {
        let key = StoreKey::random();
        let again = StoreKey::from_hex(&key.to_hex()).expect("round trip");
        assert_eq!(key.expose(), again.expose());
        assert!(StoreKey::from_hex("zz").is_err());
        assert!(StoreKey::from_hex("abcd").expect_err("short").contains("expected 32 bytes"));
    }
}
