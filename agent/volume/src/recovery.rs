//! The recovery key: what IT types when the TPM refuses to release the volume key.
//!
//! Form: 8 groups of 5 characters, `XXXXX-XXXXX-...`, from the Crockford base-32 alphabet (no
//! I, L, O or U, so nothing reads as another character). The first 7 groups are 175 random bits;
//! the last group is a check value (25 bits of SHA-256 of the first 35 characters), so a typo is
//! caught before the volume is even asked, and reported as a typo rather than a wrong key.
//! Parsing forgives case, spaces and dashes, and reads O as 0 and I or L as 1.
//!
//! The LUKS2 passphrase is the canonical text (upper case, dashes between groups).

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::keys::{KeyError, fill_random};

/// The 32 characters used, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GROUPS: usize = 8;
const GROUP_LEN: usize = 5;
const DATA_CHARS: usize = (GROUPS - 1) * GROUP_LEN;
const TOTAL_CHARS: usize = GROUPS * GROUP_LEN;

/// Errors reading a recovery key typed by a person.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Too few or too many characters.
    #[error(
        "a recovery key has {TOTAL_CHARS} characters (8 groups of 5); {got} were typed \
         (spaces and dashes do not count)"
    )]
    Length { got: usize },
    /// A character outside the alphabet.
    #[error("character {position} ('{character}') cannot appear in a recovery key; check that group")]
    Character { position: usize, character: char },
    /// The check group does not match: almost certainly a typo.
    #[error("the recovery key has a typo: its last group does not match the others; please type it again")]
    Check,
    /// Making a new key failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A recovery key. Its `Debug` is redacted and its memory zeroed on drop.
#[derive(Debug)]
pub struct RecoveryKey(SecretString);

impl RecoveryKey {
    /// A fresh random recovery key.
    pub fn generate() -> Result<Self, RecoveryError> {
        let mut random = [0u8; DATA_CHARS];
        fill_random(&mut random)?;
        // 32 divides 256, so the low 5 bits of a uniform byte are uniform over the alphabet.
        let mut chars: Vec<u8> = random.iter().map(|b| ALPHABET[usize::from(b & 31)]).collect();
        zeroize::Zeroize::zeroize(&mut random);
        let check = check_group(&chars);
        chars.extend_from_slice(&check);
        let key = canonical(&chars);
        zeroize::Zeroize::zeroize(&mut chars);
        Ok(key)
    }

    /// Read a key as typed: case, spaces and dashes do not matter; O reads as 0, I and L as 1.
    pub fn parse(typed: &str) -> Result<Self, RecoveryError> {
        let mut chars = Vec::with_capacity(TOTAL_CHARS);
        for c in typed.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let up = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                other => other,
            };
            if !up.is_ascii() || !ALPHABET.contains(&(up as u8)) {
                let position = chars.len() + 1;
                zeroize::Zeroize::zeroize(&mut chars);
                return Err(RecoveryError::Character { position, character: c });
            }
            chars.push(up as u8);
        }
        if chars.len() != TOTAL_CHARS {
            let got = chars.len();
            zeroize::Zeroize::zeroize(&mut chars);
            return Err(RecoveryError::Length { got });
        }
        let ok = check_group(&chars[..DATA_CHARS]) == chars[DATA_CHARS..];
        let key = canonical(&chars);
        zeroize::Zeroize::zeroize(&mut chars);
        if ok { Ok(key) } else { Err(RecoveryError::Check) }
    }

    /// The key as IT should write it down: `XXXXX-XXXXX-...`. Show it once.
    pub fn display(&self) -> &str {
        self.0.expose_secret()
    }

    /// The bytes given to LUKS as the recovery keyslot's passphrase.
    pub fn passphrase(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

/// The check group: the first 25 bits of SHA-256 over the data characters, as 5 characters.
fn check_group(data: &[u8]) -> [u8; GROUP_LEN] {
    let digest = Sha256::digest(data);
    let bits = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 7;
    let mut out = [0u8; GROUP_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (GROUP_LEN - 1 - i);
        *slot = ALPHABET[((bits >> shift) & 31) as usize];
    }
    out
}

fn canonical(chars: &[u8]) -> RecoveryKey {
    let mut text = String::with_capacity(TOTAL_CHARS + GROUPS);
    for (i, group) in chars.chunks(GROUP_LEN).enumerate() {
        if i > 0 {
            text.push('-');
        }
        text.extend(group.iter().map(|b| char::from(*b)));
    }
    RecoveryKey(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_form_and_parse_back() {
        let k = RecoveryKey::generate().unwrap();
        let text = k.display();
        assert_eq!(text.len(), 47, "{text}");
        assert_eq!(text.split('-').count(), 8);
        assert!(text.split('-').all(|g| g.len() == 5 && g.bytes().all(|b| ALPHABET.contains(&b))));
        let back = RecoveryKey::parse(text).unwrap();
        assert_eq!(back.display(), text);
        assert_ne!(RecoveryKey::generate().unwrap().display(), text);
    }

    #[test]
    fn parsing_forgives_case_spaces_dashes_and_lookalikes() {
        let k = RecoveryKey::generate().unwrap();
        let sloppy = k.display().to_lowercase().replace('-', " ").replace('0', "o").replace('1', "l");
        assert_eq!(RecoveryKey::parse(&format!("  {sloppy} ")).unwrap().display(), k.display());
        let squashed = k.display().replace('-', "");
        assert_eq!(RecoveryKey::parse(&squashed).unwrap().display(), k.display());
    }

    #[test]
    fn typos_and_junk_are_refused_with_a_clear_reason() {
        let k = RecoveryKey::generate().unwrap();
        let text = k.display().to_string();
        // Change one data character to another valid one: the check group catches it.
        let mut typo: Vec<char> = text.chars().collect();
        typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert!(matches!(RecoveryKey::parse(&typo).unwrap_err(), RecoveryError::Check));
        assert!(matches!(RecoveryKey::parse(&text[..40]).unwrap_err(), RecoveryError::Length { .. }));
        let with_u = format!("U{}", &text[1..]);
        assert!(matches!(
            RecoveryKey::parse(&with_u).unwrap_err(),
            RecoveryError::Character { position: 1, character: 'U' }
        ));
        assert!(RecoveryKey::parse("").is_err());
        assert!(RecoveryKey::parse(&format!("{text}-AAAAA")).is_err());
    }

    #[test]
    fn check_group_is_stable() {
        // Pin the check function: a change would make every issued recovery key "a typo".
        let data = b"00000000000000000000000000000000000";
        let text = canonical(&[&data[..], &check_group(data)[..]].concat());
        assert_eq!(RecoveryKey::parse(text.display()).unwrap().display(), text.display());
        expect_check(data, &check_group(data));
    }

    fn expect_check(data: &[u8], got: &[u8; 5]) {
        let digest = Sha256::digest(data);
        let first25 = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 7;
        let decoded = got.iter().fold(0u32, |acc, c| {
            (acc << 5) | ALPHABET.iter().position(|a| a == c).unwrap() as u32
        });
        assert_eq!(decoded, first25);
    }
}
