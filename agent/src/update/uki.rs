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
//!    past the raw data); then each word of a boot phase (`sysinit`, `ready`);
//! 3. for every phase the unlock may run in ([`UNLOCK_PHASES`]), computes the TPM2_PolicyPCR
//!    digest over that value and requires a `.pcrsig` entry with that `pol` whose key fingerprint
//!    is a sealed key's and whose RSA PKCS#1 v1.5 SHA-256 signature verifies with that key (what
//!    the TPM's VerifySignature will do at the unlock).
//!
//! Which keys the seal trusts ([`SealTrust`]) comes from the volume's LUKS2 header
//! ([`seal_trust`], read only, no TPM): every TPM token's sealed policy. [`check_uki`] is pure.

use std::path::Path;

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use sha2::{Digest as _, Sha256};
use wardbox_update::verify::Bundle;
use wardbox_volume::PcrBank;
use wardbox_volume::pcrsig::{PcrSignatures, PcrSigningKey, SIGNED_PCR, policy_pcr_digest};

use super::SlotName;
use crate::config::Config;
use crate::stages::unlock::VolumeConfig;

/// Exit code when a full bundle's UKI would not unlock this box's data (docs/update.md).
pub const EXIT_UKI_WOULD_NOT_UNLOCK: u8 = 19;

/// The sections systemd-stub 252 measures into PCR 11, in the order it measures them (systemd's
/// `unified_sections` list, without `.pcrsig`, which is not measured: it cannot sign itself).
/// systemd-measure 252 predicts in the same order; the tests compare with its output.
pub const MEASURED_SECTIONS: [&str; 7] = [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"];

/// The boot phases the data volume may be unlocked in, as systemd-measure names them: right
/// after the stub (`:` in systemd-measure's syntax, an initrd without systemd), after
/// `systemd-pcrphase-sysinit` and after `systemd-pcrphase` (`sysinit:ready`). The unlock is not
/// ordered against the two pcrphase units (docs/image.md), so a UKI must be signed for all three,
/// as `image/uefi.sh` signs them.
pub const UNLOCK_PHASES: [&str; 3] = ["", "sysinit", "sysinit:ready"];

/// The largest UKI read into memory for the check (the appliance's is about 44 MiB).
pub const MAX_UKI_BYTES: u64 = 512 * 1024 * 1024;

/// The PE/COFF limit on sections (the loader refuses more).
const MAX_SECTIONS: usize = 96;

/// One section of a PE image, as the loader maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeSection<'a> {
    /// The name up to its first NUL (8 bytes at most; long names are `/<offset>` and never one
    /// systemd-stub looks for).
    pub name: &'a [u8],
    /// Bytes the loader maps (`VirtualSize`); past the raw data they are zeros.
    pub virtual_size: u32,
    /// The raw data that is mapped: `min(VirtualSize, SizeOfRawData)` bytes of the file.
    pub raw: &'a [u8],
}

impl PeSection<'_> {
    /// SHA-256 of the section as loaded: the raw bytes, then zeros up to `VirtualSize`.
    fn loaded_sha256(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.raw);
        let mut zeros = (self.virtual_size as usize).saturating_sub(self.raw.len());
        let block = [0u8; 4096];
        while zeros > 0 {
            let n = zeros.min(block.len());
            h.update(&block[..n]);
            zeros -= n;
        }
        h.finalize().into()
    }

    /// The section's whole contents from the file, when the file holds all of it.
    fn contents(&self) -> Option<&[u8]> {
        (self.raw.len() == self.virtual_size as usize).then_some(self.raw)
    }
}

/// The section table of a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeImage<'a> {
    pub sections: Vec<PeSection<'a>>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at.checked_add(2)?).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> PeImage<'a> {
    /// Reads the DOS header, the PE signature, the COFF header and the section table, and the
    /// raw data range of each section, all bounds-checked against `bytes`. Nothing else of the
    /// image is interpreted.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.get(..2) != Some(b"MZ") {
            return Err("not a PE image (no \"MZ\" header)".into());
        }
        let pe = u32_at(bytes, 0x3c).ok_or("the DOS header ends early")? as usize;
        if pe.checked_add(4).and_then(|end| bytes.get(pe..end)) != Some(b"PE\0\0") {
            return Err("not a PE image (no \"PE\" signature where the DOS header points)".into());
        }
        let coff = pe + 4;
        let count = usize::from(u16_at(bytes, coff + 2).ok_or("the COFF header ends early")?);
        let optional = usize::from(u16_at(bytes, coff + 16).ok_or("the COFF header ends early")?);
        if count > MAX_SECTIONS {
            return Err(format!("{count} sections, more than the {MAX_SECTIONS} a PE image may have"));
        }
        let table = coff + 20 + optional;
        let table_end = table + count * 40;
        if table_end > bytes.len() {
            return Err("the section table runs past the end of the file".into());
        }
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let at = table + i * 40;
            let name_field = &bytes[at..at + 8];
            let name = &name_field[..name_field.iter().position(|b| *b == 0).unwrap_or(8)];
            let field = |offset: usize| u32_at(bytes, at + offset).ok_or("the section table ends early");
            let virtual_size = field(8)?;
            let raw_size = field(16)?;
            let raw_at = field(20)? as usize;
            if u64::from(virtual_size) > MAX_UKI_BYTES {
                return Err(format!("section {} maps {virtual_size} bytes, more than a UKI may", String::from_utf8_lossy(name)));
            }
            let mapped = raw_size.min(virtual_size) as usize;
            let raw = if mapped == 0 {
                &[][..]
            } else {
                raw_at.checked_add(mapped).and_then(|end| bytes.get(raw_at..end)).ok_or_else(|| {
                    format!("section {} claims data past the end of the file", String::from_utf8_lossy(name))
                })?
            };
            sections.push(PeSection { name, virtual_size, raw });
        }
        Ok(PeImage { sections })
    }

    /// The one section called `name`; a name that appears twice is refused (which one a loader
    /// takes is not something to guess about).
    pub fn section(&self, name: &str) -> Result<Option<&PeSection<'a>>, String> {
        let mut it = self.sections.iter().filter(|s| s.name == name.as_bytes());
        match (it.next(), it.next()) {
            (first, None) => Ok(first),
            _ => Err(format!("the image has more than one {name} section")),
        }
    }
}

fn extend(pcr: &mut [u8; 32], digest: &[u8]) {
    let mut h = Sha256::new();
    h.update(*pcr);
    h.update(digest);
    *pcr = h.finalize().into();
}

/// PCR 11 (sha256 bank, starting from zeros) after systemd-stub measured this UKI and then the
/// words of `phase` (`"sysinit:ready"`: `sysinit`, then `ready`; `""`: right after the stub).
pub fn predict_pcr11(image: &PeImage<'_>, phase: &str) -> Result<[u8; 32], String> {
    Ok(after_phase(measure_sections(image)?, phase))
}

/// PCR 11 right after the stub: each measured section's name (with its NUL), then its data.
fn measure_sections(image: &PeImage<'_>) -> Result<[u8; 32], String> {
    let mut pcr = [0u8; 32];
    for name in MEASURED_SECTIONS {
        let Some(section) = image.section(name)? else { continue };
        // The stub skips empty sections (and systemd-measure empty files).
        if section.virtual_size == 0 {
            continue;
        }
        let mut with_nul = name.as_bytes().to_vec();
        with_nul.push(0);
        extend(&mut pcr, &Sha256::digest(&with_nul));
        extend(&mut pcr, &section.loaded_sha256());
    }
    Ok(pcr)
}

/// `pcr` after systemd-pcrphase measured each word of `phase`.
fn after_phase(mut pcr: [u8; 32], phase: &str) -> [u8; 32] {
    for word in phase.split(':').filter(|w| !w.is_empty()) {
        extend(&mut pcr, &Sha256::digest(word.as_bytes()));
    }
    pcr
}

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
    fn sections_are_read_with_their_loaded_size() {
        let bytes = pe(&[(".osrel", 3, b"ID=x"), (".pcrpkey", 8, b"12345678"), (".linux", 6, b"ab")]);
        let image = PeImage::parse(&bytes).expect("parses");
        let names: Vec<&[u8]> = image.sections.iter().map(|s| s.name).collect();
        assert_eq!(names, [&b".osrel"[..], b".pcrpkey", b".linux"]);
        // VirtualSize below the raw size: only VirtualSize bytes are mapped.
        assert_eq!(image.sections[0].raw, b"ID=");
        assert_eq!(image.sections[1].contents(), Some(&b"12345678"[..]));
        // VirtualSize above the raw size: the loader fills zeros, and so does the hash.
        let linux = image.section(".linux").expect("one").expect("there");
        assert_eq!(linux.contents(), None);
        assert_eq!(linux.loaded_sha256(), <[u8; 32]>::from(Sha256::digest(b"ab\0\0\0\0")));
    }

    #[test]
    fn pcr11_follows_the_stubs_order_not_the_files() {
        // The same sections in another file order measure the same; a changed byte does not.
        let a = pe(&[(".cmdline", 2, b"ro"), (".linux", 3, b"abc"), (".text", 1, b"x")]);
        let b = pe(&[(".linux", 3, b"abc"), (".cmdline", 2, b"ro")]);
        let c = pe(&[(".linux", 3, b"abc"), (".cmdline", 2, b"rw")]);
        let pcr = |bytes: &[u8], phase| predict_pcr11(&PeImage::parse(bytes).expect("parses"), phase).expect("predicts");
        assert_eq!(pcr(&a, ""), pcr(&b, ""));
        assert_ne!(pcr(&b, ""), pcr(&c, ""));
        // By hand: .linux first, then .cmdline, then the phase words.
        let mut want = [0u8; 32];
        for (name, data) in [(&b".linux\0"[..], &b"abc"[..]), (b".cmdline\0", b"ro")] {
            extend(&mut want, &Sha256::digest(name));
            extend(&mut want, &Sha256::digest(data));
        }
        assert_eq!(pcr(&a, ""), want);
        extend(&mut want, &Sha256::digest(b"sysinit"));
        assert_eq!(pcr(&a, "sysinit"), want);
        extend(&mut want, &Sha256::digest(b"ready"));
        assert_eq!(pcr(&a, "sysinit:ready"), want);
        // An empty section is skipped, as the stub skips it.
        let d = pe(&[(".linux", 3, b"abc"), (".cmdline", 2, b"ro"), (".splash", 0, b"")]);
        assert_eq!(pcr(&d, ""), pcr(&b, ""));
        // Two sections of one measured name: refused, not guessed.
        let twice = pe(&[(".linux", 3, b"abc"), (".linux", 3, b"def")]);
        let err = predict_pcr11(&PeImage::parse(&twice).expect("parses"), "").expect_err("two .linux");
        assert!(err.contains("more than one .linux"), "{err}");
    }

    #[test]
    fn garbage_and_truncated_images_are_refused_without_panicking() {
        let good = pe(&[(".linux", 4, b"abcd"), (".pcrsig", 2, b"{}")]);
        assert!(PeImage::parse(&good).is_ok());
        for (bytes, needle) in [
            (Vec::new(), "no \"MZ\""),
            (b"MZ".to_vec(), "ends early"),
            (b"XX".to_vec(), "no \"MZ\""),
            ({ let mut b = good.clone(); b[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes()); b }, "no \"PE\""),
            ({ let mut b = good.clone(); b[0x40] = b'X'; b }, "no \"PE\""),
            ({ let mut b = good.clone(); b[0x46..0x48].copy_from_slice(&97u16.to_le_bytes()); b }, "more than the 96"),
            ({ let mut b = good.clone(); b[0x46..0x48].copy_from_slice(&90u16.to_le_bytes()); b }, "past the end"),
            ({ let mut b = good.clone(); b[0x54..0x56].copy_from_slice(&u16::MAX.to_le_bytes()); b }, "past the end"),
            // The first section's raw data pointer past the end, and a size that overflows.
            ({ let mut b = good.clone(); b[0x58 + 20..0x58 + 24].copy_from_slice(&u32::MAX.to_le_bytes()); b }, "past the end of the file"),
            ({ let mut b = good.clone(); b[0x58 + 16..0x58 + 20].copy_from_slice(&u32::MAX.to_le_bytes()); b[0x58 + 8..0x58 + 12].copy_from_slice(&(1u32 << 20).to_le_bytes()); b }, "past the end of the file"),
            ({ let mut b = good.clone(); b[0x58 + 8..0x58 + 12].copy_from_slice(&u32::MAX.to_le_bytes()); b }, "more than a UKI may"),
            (good[..good.len() - 1].to_vec(), "past the end of the file"),
        ] {
            let err = PeImage::parse(&bytes).expect_err("refused");
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // Every prefix and every single-byte change of a valid image: an answer, never a panic.
        for len in 0..good.len() {
            let _ = PeImage::parse(&good[..len]);
        }
        for at in 0..good.len() {
            for value in [0u8, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = value;
                // (A changed size byte can map up to 512 MiB of zeros: hashed correctly, but slowly.)
                if let Ok(image) = PeImage::parse(&b).map_err(drop).and_then(|i| if i.sections.iter().all(|s| s.virtual_size < 1 << 20) { Ok(i) } else { Err(()) }) {
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
