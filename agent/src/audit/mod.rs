//! The audit log: append-only, hash-chained records in the store.
//!
//! Each record carries the previous record's sha256, so that editing, deleting or reordering
//! any record breaks the chain at that record, and checkpoints of the chain head kept outside
//! the database (journal and checkpoint log) catch a truncated tail.
//!
//! Architecture invariant: records carry hashes, ids and lengths of prompts and answers, never
//! their text. [`TextDigest`] is the only way free text enters a record.

mod checkpoint;
mod export;
mod incremental;
#[cfg(test)]
mod testing;
mod verify;
mod walk;
mod writer;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use checkpoint::{Checkpoint, CheckpointLog};
pub use export::{ExportSummary, export_month};
pub use incremental::{ChainCheck, VerifiedHead, VerifiedHeadFile, check_chain, verify_chain_from};
pub use verify::{ChainBreak, VerifyReport, verify_chain};
pub use writer::{AuditError, AuditLog, WriterThread, read_head};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A boot stage finished (ok, degraded or failed).
    BootStage,
    /// The agent started serving or stopped.
    Lifecycle,
    Login,
    LoginFailed,
    Logout,
    /// A record or page with patient data was viewed.
    Access,
    /// A clinician's question to the model.
    Query,
    /// The model's answer to a query.
    Answer,
    /// An administrator changed something.
    AdminAction,
    /// A security check found a problem (firewall drift, GPU failure, failed verification).
    SecurityAlert,
    /// The store key or a volume key was rotated.
    KeyRotation,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BootStage => "boot_stage",
            EventKind::Lifecycle => "lifecycle",
            EventKind::Login => "login",
            EventKind::LoginFailed => "login_failed",
            EventKind::Logout => "logout",
            EventKind::Access => "access",
            EventKind::Query => "query",
            EventKind::Answer => "answer",
            EventKind::AdminAction => "admin_action",
            EventKind::SecurityAlert => "security_alert",
            EventKind::KeyRotation => "key_rotation",
        }
    }
}

/// An event to append: who did what, with structured detail.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub kind: EventKind,
    /// A user id, `system`, or `cli:<unix user>`.
    pub actor: String,
    /// Structured detail: ids, outcomes, [`TextDigest`]s. Never free text of PHI.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(kind: EventKind, actor: impl Into<String>, detail: serde_json::Value) -> Self {
        Self { kind, actor: actor.into(), detail }
    }
}

/// A prompt or answer as it may appear in an audit record: its sha256 and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextDigest {
    pub sha256: String,
    pub chars: usize,
}

impl TextDigest {
    pub fn of(text: &str) -> Self {
        Self { sha256: hex::encode(Sha256::digest(text.as_bytes())), chars: text.chars().count() }
    }
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub ts: String,
    pub kind: String,
    pub actor: String,
    /// The detail JSON exactly as stored (the hash covers these bytes).
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The hash a record must carry, over every field but the hash itself. Fields are joined
    /// with the ASCII unit separator and the free-form ones length-prefixed, so no choice of
    /// field contents can make two different records hash the same input.
    pub fn compute_hash(seq: u64, ts: &str, kind: &str, actor: &str, detail: &str, prev_hash: &str) -> String {
        hex::encode(Self::digest(seq, ts, kind, actor, detail, prev_hash))
    }

    /// The SHA-256 behind [`Self::compute_hash`], before hex encoding. Numbers are written
    /// into a buffer on the stack rather than allocated: a verification hashes every record.
    fn digest(seq: u64, ts: &str, kind: &str, actor: &str, detail: &str, prev_hash: &str) -> [u8; 32] {
        let mut number = [0u8; 20];
        let mut h = Sha256::new();
        h.update(b"wardbox-audit-v1\x1f");
        h.update(decimal(seq, &mut number));
        for field in [ts, kind, actor, detail, prev_hash] {
            h.update(b"\x1f");
            h.update(decimal(field.len() as u64, &mut number));
            h.update(b":");
            h.update(field.as_bytes());
        }
        h.finalize().into()
    }

    pub fn expected_hash(&self) -> String {
        Self::compute_hash(self.seq, &self.ts, &self.kind, &self.actor, &self.detail, &self.prev_hash)
    }

    /// Whether the record's contents give its stored hash: `expected_hash() == hash`, without
    /// building a string, since a verification asks it of every record.
    pub fn hash_is_intact(&self) -> bool {
        Self::hash_matches(self.seq, &self.ts, &self.kind, &self.actor, &self.detail, &self.prev_hash, &self.hash)
    }

    /// Whether `stored` is exactly [`Self::compute_hash`] of these fields (lowercase hex).
    pub(crate) fn hash_matches(
        seq: u64,
        ts: &str,
        kind: &str,
        actor: &str,
        detail: &str,
        prev_hash: &str,
        stored: &str,
    ) -> bool {
        is_lower_hex_of(&Self::digest(seq, ts, kind, actor, detail, prev_hash), stored)
    }

    /// Read a record from a row selected in the column order of the `audit` table.
    pub fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(AuditRecord {
            seq: row.get::<_, i64>(0)? as u64,
            ts: row.get(1)?,
            kind: row.get(2)?,
            actor: row.get(3)?,
            detail: row.get(4)?,
            prev_hash: row.get(5)?,
            hash: row.get(6)?,
        })
    }
}

/// Whether `text` is exactly `bytes` in lowercase hex, as `hex::encode` writes it: compared digit
/// by digit rather than encoded into a string first.
fn is_lower_hex_of(bytes: &[u8; 32], text: &str) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let text = text.as_bytes();
    text.len() == 2 * bytes.len()
        && bytes.iter().zip(text.chunks_exact(2)).all(|(byte, pair)| {
            pair[0] == DIGITS[usize::from(byte >> 4)] && pair[1] == DIGITS[usize::from(byte & 0x0f)]
        })
}

/// `n` in decimal, as `n.to_string()` writes it, in `buf` (20 digits hold any `u64`).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

pub(crate) const SELECT_RECORDS: &str =
    "SELECT seq, ts, kind, actor, detail, prev_hash, hash FROM audit";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_carries_no_text() {
        let d = TextDigest::of("Patient John Doe has chest pain");
        let json = serde_json::to_string(&d).expect("json");
        assert!(!json.contains("John"));
        assert_eq!(d.chars, 31);
        assert_eq!(d.sha256.len(), 64);
    }

    #[test]
    fn hash_is_intact_is_the_stored_hash_compared_with_the_expected_one() {
        let hash = AuditRecord::compute_hash(3, "t", "login", "u", "{}", GENESIS_HASH);
        let record = AuditRecord {
            seq: 3,
            ts: "t".into(),
            kind: "login".into(),
            actor: "u".into(),
            detail: "{}".into(),
            prev_hash: GENESIS_HASH.into(),
            hash: hash.clone(),
        };
        assert!(record.hash_is_intact());
        // Stored hashes that are not exactly the expected lowercase hex, as a string compare finds.
        for stored in [hash.to_uppercase(), hash[..63].to_string(), format!("{hash}0"), String::new()] {
            let r = AuditRecord { hash: stored, ..record.clone() };
            assert_eq!(r.hash_is_intact(), r.expected_hash() == r.hash);
            assert!(!r.hash_is_intact(), "{}", r.hash);
        }
        assert!(!AuditRecord { actor: "v".into(), ..record.clone() }.hash_is_intact());
        assert!(!AuditRecord { seq: 4, ..record }.hash_is_intact());
    }

    /// The hash format is what every stored chain was written with: these values were
    /// computed outside this code (Python's hashlib over the documented layout), so a change to
    /// how the hash is computed cannot pass by changing writer and verifier together.
    #[test]
    fn the_hash_format_is_pinned() {
        let hash = AuditRecord::compute_hash(
            1_234_567,
            "2026-11-29T10:00:00.123456789Z",
            "query",
            "dr.ümlaut",
            r#"{"patient":42}"#,
            GENESIS_HASH,
        );
        assert_eq!(hash, "19326cd16c65b60bd18a8dc3b1a25d101ef17b1e2b0028115da89827b212ea6a");
        let hash = AuditRecord::compute_hash(u64::MAX, "", "", "", "", "");
        assert_eq!(hash, "7c3de4d1661d4a1c81a780395cedc97163f03eb91749be153e56f45e55884d35");
    }

    #[test]
    fn a_hash_is_compared_as_its_lowercase_hex_string() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
        let hex = hex::encode(bytes);
        assert!(is_lower_hex_of(&bytes, &hex));
        let mut one_digit_off = hex.clone().into_bytes();
        for i in 0..64 {
            one_digit_off[i] = if one_digit_off[i] == b'0' { b'1' } else { b'0' };
            assert!(!is_lower_hex_of(&bytes, std::str::from_utf8(&one_digit_off).expect("ascii")), "digit {i}");
            one_digit_off[i] = hex.as_bytes()[i];
        }
        for other in [hex.to_uppercase(), hex[..62].to_string(), format!("{hex}00"), String::new()] {
            assert!(!is_lower_hex_of(&bytes, &other), "{other}");
        }
    }

    #[test]
    fn numbers_are_written_as_to_string_writes_them() {
        let mut buf = [0u8; 20];
        for n in [0, 1, 9, 10, 11, 99, 100, 255, 1_000_000, 1_234_567_890, u64::MAX / 10, u64::MAX - 1, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn field_boundaries_matter_to_the_hash() {
        let a = AuditRecord::compute_hash(1, "t", "ab", "c", "{}", GENESIS_HASH);
        let b = AuditRecord::compute_hash(1, "t", "a", "bc", "{}", GENESIS_HASH);
        assert_ne!(a, b);
    }
}
