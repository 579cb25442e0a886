//! Would a full bundle's UKI unlock this box's data? Checked before the slot is touched.
//!
//! On the appliance the data volume's key is sealed to a signed PCR 11 policy
//! (`wardbox_volume::pcrsig`, docs/volume.md): the TPM releases it only when PCR 11 holds a
//! value the PCR-signing key signed. systemd-stub measures the UKI it boots into PCR 11, and the
//! UKI carries the signatures for the values it will produce (`.pcrsig`, systemd-measure's JSON)
//! and the public key (`.pcrpkey`). A UKI without a signature by the sealed key for the value it
//! really measures boots into the recovery prompt. So before a full bundle is installed the box:
//!
//! 1. reads the UKI's PE section table ([`PeImage::parse`]: bounds-checked, nothing else of the
//!    image is interpreted);
//! 2. predicts PCR 11 as systemd-stub 252 leaves it ([`predict_pcr11`]): for each of
//!    [`MEASURED_SECTIONS`] the UKI has (in that order, not the file's), extend SHA-256 of the
//!    name with its NUL, then SHA-256 of the section's `VirtualSize` bytes as loaded (zero-filled
//!    past the raw data); then each word of a boot phase (`sysinit`, `ready`). Steps 1 and 2 are
//!    pure and live in `wardbox_update::uki` (fuzzed there without the agent);
//! 3. for every phase the unlock may run in ([`UNLOCK_PHASES`]), computes the TPM2_PolicyPCR
//!    digest over that value and requires a `.pcrsig` entry with that `pol` whose key fingerprint
//!    is a sealed key's and whose RSA PKCS#1 v1.5 SHA-256 signature verifies with that key (what
//!    the TPM's VerifySignature will do at the unlock).
//!
//! Which keys the seal trusts ([`SealTrust`]) comes from the volume's LUKS2 header
//! ([`seal_trust`], read only, no TPM): every TPM token's sealed policy. [`check_uki`] is pure.

use std::path::Path;

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use wardbox_update::uki::{after_phase, measure_sections};
pub use wardbox_update::uki::{MAX_UKI_BYTES, MEASURED_SECTIONS, PeImage, PeSection, predict_pcr11};
use wardbox_update::verify::Bundle;
use wardbox_volume::PcrBank;
use wardbox_volume::pcrsig::{PcrSignatures, PcrSigningKey, SIGNED_PCR, policy_pcr_digest};

use super::SlotName;
use crate::config::Config;
use crate::stages::unlock::VolumeConfig;

/// Exit code when a full bundle's UKI would not unlock this box's data (docs/update.md).
pub const EXIT_UKI_WOULD_NOT_UNLOCK: u8 = 19;

/// The boot phases the data volume may be unlocked in, as systemd-measure names them: right
/// after the stub (`:` in systemd-measure's syntax, an initrd without systemd), after
/// `systemd-pcrphase-sysinit` and after `systemd-pcrphase` (`sysinit:ready`). The unlock is not
/// ordered against the two pcrphase units (docs/image.md), so a UKI must be signed for all three,
/// as `image/uefi.sh` signs them.
pub const UNLOCK_PHASES: [&str; 3] = ["", "sysinit", "sysinit:ready"];

/// Which PCR-signing keys the data volume's TPM seal trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealTrust {
    /// A TPM token is sealed to a signed PCR 11 policy by these keys: the UKI must carry a
    /// signature by one of them.
    Keys(Vec<PcrSigningKey>),
    /// A TPM token binds PCR 11's literal value: any other UKI changes it and needs the
    /// recovery key. Every new UKI is refused until the seal is signed (`wardbox volume reseal`
    /// with `[signed_pcr11]` in the firmware policy).
    LiteralPcr11,
    /// The UKI does not decide whether the box unlocks (why, for people): a plain-directory
    /// volume (dev profile), no TPM token, or a seal that does not bind PCR 11.
    NotApplicable(String),
}

/// What the check found for a UKI that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UkiVerdict {
    /// Signed by the sealed key `key` (fingerprint) for PCR 11 in every unlock phase.
    Signed { key: String },
    /// The check does not apply on this box (why).
    NotApplicable(String),
}

impl UkiVerdict {
    /// One line for inspect and apply.
    pub fn describe(&self) -> String {
        match self {
            UkiVerdict::Signed { key } => format!(
                "signed for PCR 11 by the key the data volume's seal trusts ({}), in every unlock phase: the TPM will release the key",
                &key[..16.min(key.len())]
            ),
            UkiVerdict::NotApplicable(why) => format!("not checked: {why}"),
        }
    }
}

/// Would this UKI unlock a box whose seal trusts `trust`? `name` names the UKI in messages.
/// Pure. `Err` is the reason it would not (the box would stop at the recovery prompt).
pub fn check_uki(bytes: &[u8], name: &str, trust: &SealTrust) -> Result<UkiVerdict, String> {
    let keys = match trust {
        SealTrust::NotApplicable(why) => return Ok(UkiVerdict::NotApplicable(why.clone())),
        SealTrust::LiteralPcr11 => {
            return Err("the data volume's key is sealed to PCR 11's literal value, so any other UKI needs the recovery key; \
                        reseal it to the signed PCR 11 policy ([signed_pcr11] in the firmware policy, `wardbox volume reseal`) first"
                .into());
        }
        SealTrust::Keys(keys) => keys,
    };
    let image = PeImage::parse(bytes).map_err(|e| format!("{name} cannot be read as a UKI: {e}"))?;
    let pcrsig = image
        .section(".pcrsig")?
        .ok_or_else(|| format!("{name} carries no PCR 11 signature (no .pcrsig section): it was not signed with systemd-measure"))?;
    let pcrsig = pcrsig.contents().ok_or_else(|| format!("{name}'s .pcrsig section is larger in memory than in the file"))?;
    let pcrpkey = image
        .section(".pcrpkey")?
        .and_then(PeSection::contents)
        .ok_or_else(|| format!("{name} carries no PCR-signing public key (.pcrpkey section)"))?;
    // The key in the UKI is measured (it is part of the predicted value) and must be a key
    // systemd can use; which key the TPM trusts is the seal's, not this one.
    PcrSigningKey::from_pem(&String::from_utf8_lossy(pcrpkey), &format!("{name}'s .pcrpkey"))
        .map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(pcrsig).map_err(|_| format!("{name}'s .pcrsig is not text"))?;
    let label = format!("{name} (.pcrsig)");
    let signatures = PcrSignatures::parse(text, Path::new(&label)).map_err(|e| e.to_string())?;
    let measured = measure_sections(&image)?;
    let mut misses = Vec::new();
    'keys: for key in keys {
        for phase in UNLOCK_PHASES {
            let pcr11 = after_phase(measured, phase);
            let policy = policy_pcr_digest(&[SIGNED_PCR], &[&pcr11]);
            let shown = if phase.is_empty() { "right after the stub" } else { phase };
            let signature = match signatures.find(PcrBank::Sha256, &[SIGNED_PCR], key, &policy) {
                Ok(s) => s,
                Err(miss) => {
                    misses.push(format!("phase {shown}: {miss}"));
                    continue 'keys;
                }
            };
            if !rsa_pkcs1_sha256_verifies(key, &policy, signature) {
                misses.push(format!(
                    "phase {shown}: the signature by key {} for this PCR 11 value does not verify (forged or damaged)",
                    key.fingerprint_hex()
                ));
                continue 'keys;
            }
        }
        return Ok(UkiVerdict::Signed { key: key.fingerprint_hex() });
    }
    Err(format!(
        "{name} has no valid PCR 11 signature by the key the data volume's seal trusts ({}) for the PCR 11 value it will \
         measure: {}",
        keys.iter().map(PcrSigningKey::fingerprint_hex).collect::<Vec<_>>().join(", "),
        misses.join("; ")
    ))
}

/// RSASSA-PKCS1-v1_5 with SHA-256 over `message`, as the TPM's VerifySignature checks
/// systemd-measure's signature over SHA-256(`pol`).
fn rsa_pkcs1_sha256_verifies(key: &PcrSigningKey, message: &[u8], signature: &[u8]) -> bool {
    let e = key.exponent().to_be_bytes();
    let e = &e[e.iter().position(|b| *b != 0).unwrap_or(e.len() - 1)..];
    RsaPublicKeyComponents { n: key.modulus(), e }.verify(&RSA_PKCS1_2048_8192_SHA256, message, signature).is_ok()
}

/// The keys the data volume's TPM seal trusts, read from its LUKS2 header (no TPM needed).
/// `Err` when the header cannot be read: the caller refuses (it cannot know).
pub fn seal_trust(config: &Config) -> Result<SealTrust, String> {
    let device = match &config.volume {
        VolumeConfig::PlainDirectory { .. } => {
            return Ok(SealTrust::NotApplicable(
                "the data volume is a plain directory (dev profile): no TPM seal depends on the UKI".into(),
            ));
        }
        VolumeConfig::Luks2Tpm(c) => &c.device,
    };
    let status = wardbox_volume::ops::status(device, None)
        .map_err(|e| format!("cannot read which PCR-signing key the data volume's seal trusts ({}): {e}", device.display()))?;
    let mut keys: Vec<PcrSigningKey> = Vec::new();
    let mut literal_pcr11 = false;
    let mut unreadable = Vec::new();
    for binding in &status.tpm_bindings {
        match &binding.policy {
            Some(policy) => match &policy.signed_pcr11 {
                Some(key) if !keys.contains(key) => keys.push(key.clone()),
                Some(_) => {}
                None => literal_pcr11 |= policy.binding.pcrs().contains(&SIGNED_PCR),
            },
            None => unreadable.push(binding.token.to_string()),
        }
    }
    seal_trust_from(keys, literal_pcr11, &unreadable, status.tpm_bindings.len())
}

/// The decision of [`seal_trust`], pure: signed keys win (a token the UKI can unlock); a
/// damaged token with nothing signed beside it is an error rather than a guess.
fn seal_trust_from(keys: Vec<PcrSigningKey>, literal_pcr11: bool, unreadable: &[String], tokens: usize) -> Result<SealTrust, String> {
    if !keys.is_empty() {
        return Ok(SealTrust::Keys(keys));
    }
    if !unreadable.is_empty() {
        return Err(format!("the data volume's TPM token(s) {} cannot be read, so which UKI unlocks it is unknown", unreadable.join(", ")));
    }
    if literal_pcr11 {
        return Ok(SealTrust::LiteralPcr11);
    }
    Ok(SealTrust::NotApplicable(if tokens == 0 {
        "the data volume has no TPM seal (it opens with the recovery key only)".into()
    } else {
        "the data volume's TPM seal does not bind PCR 11 (literal PCRs only): the UKI does not decide whether it unlocks".into()
    }))
}

/// Reads the UKI a full bundle installs into `slot` through tough's size and hash checks.
pub async fn read_bundle_uki(bundle: &Bundle, slot: SlotName) -> Result<(String, Vec<u8>), wardbox_update::UpdateError> {
    let target = bundle.target_for(super::apply::uki_role(slot))?;
    Ok((target.name.clone(), bundle.read_small(target, MAX_UKI_BYTES).await?))
}

/// The whole check for a full bundle on this box: the seal's keys, then the UKI for `slot`.
/// `Err((message, exit code))`.
pub async fn check_bundle(config: &Config, bundle: &Bundle, slot: SlotName) -> Result<UkiVerdict, (String, u8)> {
    let trust = seal_trust(config).map_err(|e| (e, wardbox_update::error::exit::OPERATIONAL))?;
    check_bundle_with(&trust, bundle, slot).await
}

/// [`check_bundle`] with the seal's keys already read.
async fn check_bundle_with(trust: &SealTrust, bundle: &Bundle, slot: SlotName) -> Result<UkiVerdict, (String, u8)> {
    if let SealTrust::NotApplicable(why) = trust {
        return Ok(UkiVerdict::NotApplicable(why.clone()));
    }
    let (name, bytes) = read_bundle_uki(bundle, slot).await.map_err(|e| (e.to_string(), e.exit_code()))?;
    check_uki(&bytes, &name, trust).map_err(|why| (would_not_unlock(slot, &why), EXIT_UKI_WOULD_NOT_UNLOCK))
}

/// For `inspect` (reads only): `Ok` with what the check found, or that it cannot be made here
/// (no known running slot, a volume header this user cannot read); `Err` when the install
/// would refuse the bundle for its UKI.
pub async fn inspect(config: &Config, bundle: &Bundle) -> Result<String, String> {
    let slot = match super::running_slot(&config.update.slots) {
        Ok(running) => running.other(),
        Err(e) => return Ok(format!("not checked here: which slot runs is unknown ({e})")),
    };
    let trust = match seal_trust(config) {
        Ok(trust) => trust,
        Err(e) => return Ok(format!("not checked here ({e}); the install checks it")),
    };
    match check_bundle_with(&trust, bundle, slot).await {
        Ok(UkiVerdict::NotApplicable(why)) => Ok(format!("not checked: {why}")),
        Ok(verdict) => Ok(format!("slot {slot}'s UKI is {}", verdict.describe())),
        Err((message, code)) => Err(format!("{message} (exit code {code})")),
    }
}

/// The refusal's message.
pub fn would_not_unlock(slot: SlotName, why: &str) -> String {
    format!("the UKI for slot {slot} would not unlock this box's data (the box would stop at the recovery prompt): {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE image: DOS header pointing at "PE\0\0", a COFF header with no optional
    /// header, and the given sections (name, virtual size, raw size, raw data).
    fn pe(sections: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let pe_at = 0x40usize;
        let table = pe_at + 4 + 20;
        let data_at = table + sections.len() * 40;
        let mut out = vec![0u8; data_at];
        out[..2].copy_from_slice(b"MZ");
        out[0x3c..0x40].copy_from_slice(&(pe_at as u32).to_le_bytes());
        out[pe_at..pe_at + 4].copy_from_slice(b"PE\0\0");
        out[pe_at + 6..pe_at + 8].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        for (i, (name, virtual_size, raw)) in sections.iter().enumerate() {
            let at = table + i * 40;
            out[at..at + name.len()].copy_from_slice(name.as_bytes());
            out[at + 8..at + 12].copy_from_slice(&virtual_size.to_le_bytes());
            out[at + 16..at + 20].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            let raw_at = out.len() as u32;
            out[at + 20..at + 24].copy_from_slice(&raw_at.to_le_bytes());
            out.extend_from_slice(raw);
        }
        out
    }

    #[test]
    fn changed_images_get_an_answer_never_a_panic() {
        // (PeImage::parse's refusals are tested in wardbox_update::uki and fuzzed there.)
        let good = pe(&[(".linux", 4, b"abcd"), (".pcrsig", 2, b"{}"), (".pcrpkey", 2, b"xx")]);
        for len in 0..good.len() {
            assert!(check_uki(&good[..len], "x.efi", &SealTrust::Keys(Vec::new())).is_err());
        }
        for at in 0..good.len() {
            for value in [0u8, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = value;
                // (A changed size byte can map up to 512 MiB of zeros: hashed correctly, but slowly.)
                if let Ok(image) = PeImage::parse(&b)
                    && image.sections.iter().all(|s| s.virtual_size < 1 << 20)
                {
                    let _ = predict_pcr11(&image, "sysinit:ready");
                    let _ = check_uki(&b, "x.efi", &SealTrust::Keys(Vec::new()));
                }
            }
        }
    }

    #[test]
    fn a_uki_without_a_signature_or_key_section_is_refused_and_no_seal_means_not_applicable() {
        let trust = SealTrust::Keys(Vec::new());
        let unsigned = pe(&[(".linux", 3, b"abc"), (".pcrpkey", 2, b"xx")]);
        let err = check_uki(&unsigned, "wardbox-b.efi", &trust).expect_err("no .pcrsig");
        assert!(err.contains("wardbox-b.efi carries no PCR 11 signature"), "{err}");
        let no_key = pe(&[(".linux", 3, b"abc"), (".pcrsig", 2, b"{}")]);
        let err = check_uki(&no_key, "wardbox-b.efi", &trust).expect_err("no .pcrpkey");
        assert!(err.contains("no PCR-signing public key"), "{err}");
        assert!(check_uki(b"not a PE", "u.efi", &trust).expect_err("garbage").contains("cannot be read as a UKI"));
        // Nothing to check on a box whose seal does not depend on the UKI; everything refused
        // on one sealed to PCR 11's literal value.
        let na = SealTrust::NotApplicable("dev".into());
        assert_eq!(check_uki(b"anything", "u.efi", &na), Ok(UkiVerdict::NotApplicable("dev".into())));
        assert!(check_uki(&unsigned, "u.efi", &SealTrust::LiteralPcr11).expect_err("literal").contains("literal value"));
    }

    #[test]
    fn the_seal_decides_what_is_checked() {
        assert!(matches!(seal_trust_from(Vec::new(), false, &[], 0), Ok(SealTrust::NotApplicable(w)) if w.contains("no TPM seal")));
        assert!(matches!(seal_trust_from(Vec::new(), false, &[], 1), Ok(SealTrust::NotApplicable(w)) if w.contains("does not bind PCR 11")));
        assert_eq!(seal_trust_from(Vec::new(), true, &[], 1), Ok(SealTrust::LiteralPcr11));
        assert!(seal_trust_from(Vec::new(), false, &["1".into()], 2).expect_err("damaged token").contains("token(s) 1"));
    }
}
