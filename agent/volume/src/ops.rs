//! The volume's life cycle, built from the TPM and LUKS2 pieces: provision, unlock (TPM or
//! recovery key), reseal with the recovery key, rotate the TPM keyslot, status.
//!
//! Every operation checks everything it can before its first write (the TPM answers, the file
//! is LUKS2, the recovery key opens it, the new seal unseals), so a refused operation leaves the
//! volume exactly as it was. Where a change takes several writes, the new keyslot and token are
//! added before the old ones are removed: an interruption leaves two working TPM keyslots,
//! never none.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretBox;
use serde_json::{Value, json};
use wardbox_firmware_policy::{PcrBank, PcrBinding};

use crate::keys::{KeyError, TpmSecret, VolumeKey, derive_store_key};
use crate::luks::{KdfParams, LuksError, LuksVolume, SlotState};
use crate::recovery::{RecoveryError, RecoveryKey};
use crate::tpm::{PcrPolicy, SealedBlob, Tpm, TpmError, UnsealCheck};

/// LUKS2 token type holding the sealed TPM key.
pub const TPM_TOKEN_TYPE: &str = "wardbox-tpm2";
/// LUKS2 token type marking the recovery keyslot (holds no secret).
pub const RECOVERY_TOKEN_TYPE: &str = "wardbox-recovery";
const TOKEN_VERSION: u64 = 1;

/// Errors of the volume life cycle. Each names what to do next.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error(transparent)]
    Luks(#[from] LuksError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The volume has no TPM token: it was never sealed, or the token was removed.
    #[error(
        "{path} has no TPM-sealed key (no {TPM_TOKEN_TYPE} token): unlock it with \
         `wardbox volume recover`, then run `wardbox volume reseal`"
    )]
    NoTpmToken { path: PathBuf },
    /// A Wardbox token in the header is malformed.
    #[error("the LUKS2 token {token} of {path} is damaged: {reason}; use the recovery key, then `wardbox volume reseal`")]
    BadToken { path: PathBuf, token: u32, reason: String },
    /// The recovery key is well formed but does not open the volume.
    #[error(
        "the recovery key does not open {path}. Check it against the copy made at provisioning; \
         it belongs to one volume only"
    )]
    WrongRecoveryKey { path: PathBuf },
    /// The unsealed TPM secret does not open the keyslot its token names.
    #[error("the TPM released a key, but it does not open keyslot {keyslot} of {path}; use the recovery key, then `wardbox volume reseal`")]
    TpmKeyRejected { path: PathBuf, keyslot: u32 },
    /// A fresh seal did not unseal: the TPM or its PCRs changed during the operation.
    #[error("the new TPM seal could not be verified ({0}); nothing was written to the volume")]
    SealNotVerified(String),
}

/// A parsed `wardbox-tpm2` token.
#[derive(Debug, Clone)]
pub struct TpmToken {
    pub token: u32,
    pub keyslot: u32,
    pub blob: SealedBlob,
}

/// The token JSON for a sealed blob and its keyslot. With a signed PCR 11 policy it also
/// shows the signed PCRs and the PCR-signing key's fingerprint (systemd's `pkfp`).
pub fn tpm_token_json(keyslot: u32, blob: &SealedBlob) -> Value {
    let mut token = json!({
        "type": TPM_TOKEN_TYPE,
        "keyslots": [keyslot.to_string()],
        "wardbox_version": TOKEN_VERSION,
        "pcr_bank": blob.binding.bank().as_str(),
        "pcrs": blob.binding.pcrs(),
        "sealed_key": hex::encode(blob.to_bytes()),
    });
    if let (Some(key), Some(map)) = (&blob.signed_pcr11, token.as_object_mut()) {
        map.insert("signed_pcrs".into(), json!([crate::pcrsig::SIGNED_PCR]));
        map.insert("pcr_signing_key".into(), json!(key.fingerprint_hex()));
    }
    token
}

fn recovery_token_json(keyslot: u32) -> Value {
    json!({ "type": RECOVERY_TOKEN_TYPE, "keyslots": [keyslot.to_string()], "wardbox_version": TOKEN_VERSION })
}

fn token_type(json: &Value) -> Option<&str> {
    json.get("type").and_then(Value::as_str)
}

/// The keyslots a token names (LUKS2 writes them as decimal strings).
fn token_keyslots(json: &Value) -> Vec<u32> {
    json.get("keyslots")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|k| k.as_str().and_then(|s| s.parse().ok())).collect())
        .unwrap_or_default()
}

/// Parse a `wardbox-tpm2` token. Pure; the checks name what is wrong.
pub fn parse_tpm_token(path: &Path, token: u32, json: &Value) -> Result<TpmToken, VolumeError> {
    let bad = |reason: String| VolumeError::BadToken { path: path.to_path_buf(), token, reason };
    if token_type(json) != Some(TPM_TOKEN_TYPE) {
        return Err(bad(format!("it is not a {TPM_TOKEN_TYPE} token")));
    }
    if json.get("wardbox_version").and_then(Value::as_u64) != Some(TOKEN_VERSION) {
        return Err(bad("its wardbox_version is missing or not 1".into()));
    }
    let keyslots = token_keyslots(json);
    let [keyslot] = keyslots.as_slice() else {
        return Err(bad(format!("it must name exactly one keyslot, it names {keyslots:?}")));
    };
    let hex_blob = json.get("sealed_key").and_then(Value::as_str).ok_or_else(|| bad("it has no sealed_key".into()))?;
    let bytes = hex::decode(hex_blob).map_err(|e| bad(format!("sealed_key is not hex: {e}")))?;
    let blob = SealedBlob::from_bytes(&bytes)?;
    // The bank and PCRs in the JSON are for people and tools reading the header; they must
    // agree with the blob, which is what the TPM enforces.
    let bank = json.get("pcr_bank").and_then(Value::as_str).and_then(PcrBank::from_name);
    let pcrs: Option<Vec<u8>> = json
        .get("pcrs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|p| p.as_u64().and_then(|p| u8::try_from(p).ok())).collect());
    let shown = bank.zip(pcrs).and_then(|(b, p)| PcrBinding::new(b, &p).ok());
    if shown.as_ref() != Some(&blob.binding) {
        return Err(bad(format!(
            "its pcr_bank/pcrs fields do not match the sealed key (sealed against {}); the header was edited",
            blob.binding
        )));
    }
    let shown_key = json.get("pcr_signing_key").and_then(Value::as_str);
    let shown_signed = json.get("signed_pcrs").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect::<Vec<_>>());
    let sealed_key = blob.signed_pcr11.as_ref().map(|k| k.fingerprint_hex());
    let sealed_signed = blob.signed_pcr11.as_ref().map(|_| vec![u64::from(crate::pcrsig::SIGNED_PCR)]);
    if shown_key != sealed_key.as_deref() || shown_signed != sealed_signed {
        return Err(bad(format!(
            "its signed_pcrs/pcr_signing_key fields do not match the sealed key (sealed to {}); the header was edited",
            blob.policy()
        )));
    }
    Ok(TpmToken { token, keyslot: *keyslot, blob })
}

/// What provisioning made. The recovery key is in here once: show it to IT, then drop it.
#[derive(Debug)]
pub struct Provisioned {
    pub recovery_key: RecoveryKey,
    pub tpm_keyslot: u32,
    pub recovery_keyslot: u32,
    pub tpm_token: u32,
    pub uuid: String,
    pub policy: PcrPolicy,
}

/// How the volume was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockPath {
    Tpm { token: u32, keyslot: u32 },
    RecoveryKey { keyslot: u32 },
}

/// An opened volume key.
#[derive(Debug)]
pub struct Unlocked {
    pub volume_key: VolumeKey,
    pub via: UnlockPath,
}

impl Unlocked {
    /// The SQLCipher key for the store on this volume.
    pub fn store_key(&self) -> SecretBox<[u8; 32]> {
        derive_store_key(&self.volume_key)
    }
}

/// Seal a fresh secret and prove it unseals before anything is written. With a signed PCR 11
/// policy that needs a signature for this boot's PCR 11 value: a box booted through a kernel
/// image its key never signed cannot seal to that key (it would not unlock either).
fn seal_verified(tpm: &mut Tpm, policy: &PcrPolicy) -> Result<(TpmSecret, SealedBlob), VolumeError> {
    let secret = TpmSecret::generate()?;
    let blob = tpm.seal(&secret, policy)?;
    let back = tpm.unseal(&blob).map_err(|e| VolumeError::SealNotVerified(e.to_string()))?;
    if back.expose() != secret.expose() {
        return Err(VolumeError::SealNotVerified("the TPM returned different bytes".into()));
    }
    Ok((secret, blob))
}

/// Format `path` as a new LUKS2 volume with a TPM keyslot and a recovery keyslot. Refuses a
/// volume that already has a LUKS header. The TPM is asked first, so a missing TPM leaves the
/// disk untouched.
pub fn provision(
    tpm: &mut Tpm,
    path: &Path,
    policy: impl Into<PcrPolicy>,
    kdf: &KdfParams,
) -> Result<Provisioned, VolumeError> {
    let policy: PcrPolicy = policy.into();
    kdf.validate()?;
    if crate::luks::has_luks_header(path)? {
        return Err(LuksError::AlreadyLuks { path: path.to_path_buf() }.into());
    }
    let (secret, blob) = seal_verified(tpm, &policy)?;
    let recovery_key = RecoveryKey::generate()?;

    let mut luks = LuksVolume::format(path, kdf)?;
    luks.use_kdf_for_random_secret()?;
    let tpm_keyslot = luks.add_keyslot_after_format(secret.expose())?;
    luks.use_kdf(kdf)?;
    let recovery_keyslot = luks.add_keyslot_after_format(recovery_key.passphrase())?;
    let tpm_token = luks.add_token(&tpm_token_json(tpm_keyslot, &blob))?;
    luks.add_token(&recovery_token_json(recovery_keyslot))?;
    let uuid = luks.uuid()?;
    Ok(Provisioned { recovery_key, tpm_keyslot, recovery_keyslot, tpm_token, uuid, policy })
}

/// The TPM tokens of a volume. Damaged ones are returned as errors beside the good ones.
fn tpm_tokens(luks: &mut LuksVolume) -> Result<Vec<Result<TpmToken, VolumeError>>, VolumeError> {
    let path = luks.path().to_path_buf();
    Ok(luks
        .tokens()?
        .into_iter()
        .filter(|(_, json)| token_type(json) == Some(TPM_TOKEN_TYPE))
        .map(|(id, json)| parse_tpm_token(&path, id, &json))
        .collect())
}

/// Unseal and open with the TPM. With several TPM tokens (an interrupted rotation), the first
/// that works wins; if none does, the first error is returned.
fn unseal_any(tpm: &mut Tpm, luks: &mut LuksVolume) -> Result<(TpmToken, TpmSecret, Unlocked), VolumeError> {
    let path = luks.path().to_path_buf();
    let tokens = tpm_tokens(luks)?;
    if tokens.is_empty() {
        return Err(VolumeError::NoTpmToken { path });
    }
    let mut first_error = None;
    for token in tokens {
        let attempt = token.and_then(|t| {
            let secret = tpm.unseal(&t.blob)?;
            let (_, volume_key) = luks.volume_key(Some(t.keyslot), secret.expose()).map_err(|e| match e {
                LuksError::WrongKey { .. } => VolumeError::TpmKeyRejected { path: path.clone(), keyslot: t.keyslot },
                other => other.into(),
            })?;
            let via = UnlockPath::Tpm { token: t.token, keyslot: t.keyslot };
            Ok((t, secret, Unlocked { volume_key, via }))
        });
        match attempt {
            Ok(done) => return Ok(done),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(VolumeError::NoTpmToken { path }))
}

/// The boot path: unseal the TPM secret and recover the volume key. Read only.
pub fn unlock_with_tpm(tpm: &mut Tpm, path: &Path) -> Result<Unlocked, VolumeError> {
    let mut luks = LuksVolume::open(path, None)?;
    unseal_any(tpm, &mut luks).map(|(_, _, unlocked)| unlocked)
}

fn open_with_recovery(luks: &mut LuksVolume, recovery: &RecoveryKey) -> Result<Unlocked, VolumeError> {
    let path = luks.path().to_path_buf();
    let (keyslot, volume_key) = luks.volume_key(None, recovery.passphrase()).map_err(|e| match e {
        LuksError::WrongKey { .. } => VolumeError::WrongRecoveryKey { path },
        other => other.into(),
    })?;
    Ok(Unlocked { volume_key, via: UnlockPath::RecoveryKey { keyslot } })
}

/// The recovery path: open with the recovery key. Read only.
pub fn unlock_with_recovery(path: &Path, recovery: &RecoveryKey) -> Result<Unlocked, VolumeError> {
    let mut luks = LuksVolume::open(path, None)?;
    open_with_recovery(&mut luks, recovery)
}

/// What a reseal or rotation changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebound {
    pub new_keyslot: u32,
    pub new_token: u32,
    pub removed_keyslots: Vec<u32>,
    pub removed_tokens: Vec<u32>,
    pub policy: PcrPolicy,
}

/// Replace every TPM keyslot and token by one sealed now, authorised by `existing` (a
/// passphrase that opens keyslot `keep`, which is never removed).
fn rebind(
    tpm: &mut Tpm,
    luks: &mut LuksVolume,
    existing: &[u8],
    keep: u32,
    policy: PcrPolicy,
) -> Result<Rebound, VolumeError> {
    // Old TPM tokens, read before any write. A damaged token still names its keyslot when the
    // JSON is readable; that keyslot goes too, since nothing can unseal it.
    let old: Vec<(u32, Vec<u32>)> = luks
        .tokens()?
        .into_iter()
        .filter(|(_, json)| token_type(json) == Some(TPM_TOKEN_TYPE))
        .map(|(id, json)| (id, token_keyslots(&json)))
        .collect();
    let protected = recovery_keyslots(luks)?;

    let (secret, blob) = seal_verified(tpm, &policy)?;
    luks.use_kdf_for_random_secret()?;
    let new_keyslot = luks.add_keyslot(existing, secret.expose())?;
    let new_token = luks.add_token(&tpm_token_json(new_keyslot, &blob))?;

    let mut removed_tokens = Vec::new();
    let mut removed_keyslots = Vec::new();
    for (token, keyslots) in old {
        luks.remove_token(token)?;
        removed_tokens.push(token);
        for slot in keyslots {
            if slot != keep && slot != new_keyslot && !protected.contains(&slot) && !removed_keyslots.contains(&slot) {
                luks.destroy_keyslot(slot)?;
                removed_keyslots.push(slot);
            }
        }
    }
    Ok(Rebound { new_keyslot, new_token, removed_keyslots, removed_tokens, policy })
}

fn recovery_keyslots(luks: &mut LuksVolume) -> Result<Vec<u32>, VolumeError> {
    Ok(luks
        .tokens()?
        .into_iter()
        .filter(|(_, json)| token_type(json) == Some(RECOVERY_TOKEN_TYPE))
        .flat_map(|(_, json)| token_keyslots(&json))
        .collect())
}

/// After a legitimate boot-chain change (firmware update, policy change): prove the recovery
/// key, seal a new TPM secret under the PCRs as they are now, enroll it, and remove the old TPM
/// keyslots. A wrong recovery key or an absent TPM changes nothing.
pub fn reseal_with_recovery(
    tpm: &mut Tpm,
    path: &Path,
    recovery: &RecoveryKey,
    policy: impl Into<PcrPolicy>,
    kdf: &KdfParams,
) -> Result<Rebound, VolumeError> {
    let mut luks = LuksVolume::open(path, Some(kdf))?;
    let opened = open_with_recovery(&mut luks, recovery)?;
    let UnlockPath::RecoveryKey { keyslot } = opened.via else {
        return Err(VolumeError::WrongRecoveryKey { path: path.to_path_buf() });
    };
    rebind(tpm, &mut luks, recovery.passphrase(), keyslot, policy.into())
}

/// Key rotation while the TPM still unseals: add a keyslot for a new TPM secret (authorised by
/// the current one), then remove the old keyslot. `binding` may differ from the old seal's,
/// which is how a firmware-policy change is applied without the recovery key.
pub fn rotate_tpm_key(
    tpm: &mut Tpm,
    path: &Path,
    policy: impl Into<PcrPolicy>,
    kdf: &KdfParams,
) -> Result<Rebound, VolumeError> {
    let mut luks = LuksVolume::open(path, Some(kdf))?;
    let (_, secret, _) = unseal_any(tpm, &mut luks)?;
    // No keyslot is kept back: the old TPM keyslot authorises the new one, then goes.
    rebind(tpm, &mut luks, secret.expose(), u32::MAX, policy.into())
}

/// What a keyslot is for, from the tokens that name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRole {
    Tpm,
    Recovery,
    /// No Wardbox token names it (added by hand with cryptsetup, or left by an interruption).
    Unknown,
}

/// Whether a TPM binding would unseal now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmCheck {
    WouldUnseal,
    PcrsChanged,
    /// The literal PCRs match, but PCR 11 has no valid signature by the sealed key; says why.
    Pcr11NotSigned(String),
    /// The check could not be made (no TPM given, or the TPM refused the blob); says why.
    NotChecked(String),
}

#[derive(Debug, Clone)]
pub struct KeyslotStatus {
    pub keyslot: u32,
    pub state: SlotState,
    pub role: SlotRole,
}

#[derive(Debug, Clone)]
pub struct TpmBindingStatus {
    pub token: u32,
    pub keyslot: Option<u32>,
    pub binding: Option<PcrBinding>,
    /// The whole policy (literal PCRs, and the PCR-signing key when PCR 11 is signed).
    pub policy: Option<PcrPolicy>,
    pub check: TpmCheck,
}

/// `wardbox volume status`: keyslots, tokens, and whether the TPM would unseal now.
#[derive(Debug, Clone)]
pub struct VolumeStatus {
    pub path: PathBuf,
    pub uuid: String,
    pub keyslots: Vec<KeyslotStatus>,
    pub tpm_bindings: Vec<TpmBindingStatus>,
    /// Tokens that are not Wardbox's (type, id).
    pub other_tokens: Vec<(u32, String)>,
}

/// Read the volume's header and, when a TPM is given, check each TPM binding. Read only.
pub fn status(path: &Path, mut tpm: Option<&mut Tpm>) -> Result<VolumeStatus, VolumeError> {
    let mut luks = LuksVolume::open(path, None)?;
    let uuid = luks.uuid()?;
    let tokens = luks.tokens()?;
    let mut roles: Vec<(u32, SlotRole)> = Vec::new();
    let mut tpm_bindings = Vec::new();
    let mut other_tokens = Vec::new();
    for (id, json) in &tokens {
        match token_type(json) {
            Some(TPM_TOKEN_TYPE) => {
                let slots = token_keyslots(json);
                roles.extend(slots.iter().map(|s| (*s, SlotRole::Tpm)));
                let (policy, check) = match parse_tpm_token(path, *id, json) {
                    Ok(t) => {
                        let check = match tpm.as_deref_mut() {
                            None => TpmCheck::NotChecked("no TPM connection was given".into()),
                            Some(tpm) => match tpm.check_unseal(&t.blob) {
                                Ok(UnsealCheck::WouldUnseal) => TpmCheck::WouldUnseal,
                                Ok(UnsealCheck::PcrsChanged) => TpmCheck::PcrsChanged,
                                Ok(UnsealCheck::Pcr11NotSigned(why)) => TpmCheck::Pcr11NotSigned(why),
                                Err(e) => TpmCheck::NotChecked(e.to_string()),
                            },
                        };
                        (Some(t.blob.policy()), check)
                    }
                    Err(e) => (None, TpmCheck::NotChecked(e.to_string())),
                };
                let binding = policy.as_ref().map(|p| p.binding.clone());
                tpm_bindings.push(TpmBindingStatus { token: *id, keyslot: slots.first().copied(), binding, policy, check });
            }
            Some(RECOVERY_TOKEN_TYPE) => roles.extend(token_keyslots(json).into_iter().map(|s| (s, SlotRole::Recovery))),
            other => other_tokens.push((*id, other.unwrap_or("(no type)").to_string())),
        }
    }
    let keyslots = luks
        .keyslots()?
        .into_iter()
        .map(|(keyslot, state)| {
            let role = roles.iter().find(|(s, _)| *s == keyslot).map_or(SlotRole::Unknown, |(_, r)| *r);
            KeyslotStatus { keyslot, state, role }
        })
        .collect();
    Ok(VolumeStatus { path: path.to_path_buf(), uuid, keyslots, tpm_bindings, other_tokens })
}

impl VolumeStatus {
    /// True when the box would unlock unattended at the next boot.
    pub fn tpm_would_unseal(&self) -> bool {
        self.tpm_bindings.iter().any(|b| b.check == TpmCheck::WouldUnseal)
    }
}

impl fmt::Display for VolumeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Volume {} (LUKS2, UUID {})", self.path.display(), self.uuid)?;
        writeln!(f, "Keyslots:")?;
        for k in &self.keyslots {
            let role = match k.role {
                SlotRole::Tpm => "TPM-sealed key",
                SlotRole::Recovery => "recovery key",
                SlotRole::Unknown => "not made by Wardbox (check with `cryptsetup luksDump`)",
            };
            let last = if k.state == SlotState::ActiveLast { " (the only keyslot left)" } else { "" };
            writeln!(f, "  {:>2}: {role}{last}", k.keyslot)?;
        }
        if !self.keyslots.iter().any(|k| k.role == SlotRole::Recovery) {
            writeln!(f, "  WARNING: no recovery keyslot is marked; if the TPM refuses, the data cannot be opened")?;
        }
        writeln!(f, "TPM bindings:")?;
        if self.tpm_bindings.is_empty() {
            writeln!(f, "  none: the box cannot unlock unattended; run `wardbox volume reseal`")?;
        }
        for b in &self.tpm_bindings {
            let binding = b.policy.as_ref().map_or_else(|| "unreadable".to_string(), ToString::to_string);
            let slot = b.keyslot.map_or_else(|| "?".to_string(), |k| k.to_string());
            let check = match &b.check {
                TpmCheck::WouldUnseal => "the TPM would release the key now".to_string(),
                TpmCheck::PcrsChanged => {
                    "the TPM would REFUSE the key now: the boot chain changed since sealing; \
                     the next boot needs the recovery key unless you run `wardbox volume reseal`"
                        .to_string()
                }
                TpmCheck::Pcr11NotSigned(why) => format!(
                    "the TPM would REFUSE the key now: {why}; the next boot needs the recovery key unless it \
                     boots a kernel image the key signed"
                ),
                TpmCheck::NotChecked(why) => format!("not checked: {why}"),
            };
            writeln!(f, "  token {} -> keyslot {slot}, sealed to {binding}: {check}", b.token)?;
        }
        for (id, kind) in &self.other_tokens {
            writeln!(f, "  other token {id}: type {kind}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_checks_name_the_problem() {
        let path = Path::new("/v");
        let cases = [
            (json!({"type": "systemd-tpm2", "keyslots": ["0"]}), "not a wardbox-tpm2"),
            (json!({"type": TPM_TOKEN_TYPE, "keyslots": ["0"]}), "wardbox_version"),
            (json!({"type": TPM_TOKEN_TYPE, "wardbox_version": 1, "keyslots": []}), "exactly one keyslot"),
            (json!({"type": TPM_TOKEN_TYPE, "wardbox_version": 1, "keyslots": ["0"]}), "no sealed_key"),
            (json!({"type": TPM_TOKEN_TYPE, "wardbox_version": 1, "keyslots": ["0"], "sealed_key": "zz"}), "not hex"),
            (json!({"type": TPM_TOKEN_TYPE, "wardbox_version": 1, "keyslots": ["0"], "sealed_key": "00ff"}), "header"),
        ];
        for (json, needle) in cases {
            let err = parse_tpm_token(path, 3, &json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn keyslot_lists_read_luks2_string_form() {
        assert_eq!(token_keyslots(&json!({"keyslots": ["1", "12", "x"]})), vec![1, 12]);
        assert!(token_keyslots(&json!({})).is_empty());
    }
}
