//! Signed PCR 11 policies: the fleet's PCR-signing public key and the signature file that
//! `systemd-measure sign` writes for each unified kernel image (UKI).
//!
//! The image build predicts the value PCR 11 will hold after systemd-stub has measured the UKI
//! (per boot phase), computes the TPM2_PolicyPCR digest over that value, and signs the digest
//! with the fleet's PCR-signing key. The UKI carries the signature (`.pcrsig`) and the public key
//! (`.pcrpkey`); systemd-stub hands both to the initrd as `/.extra/tpm2-pcr-signature.json` and
//! `/.extra/tpm2-pcr-public-key.pem`, and systemd's tmpfiles (`/usr/lib/tmpfiles.d/systemd.conf`
//! in systemd 252) copies them to `/run/systemd/` when it runs in the initrd.
//!
//! The format is systemd's, matched exactly (checked against systemd 252's `systemd-measure`
//! in the swtpm tests):
//!
//! ```json
//! {"sha256":[{"pcrs":[11],"pkfp":"<hex>","pol":"<hex>","sig":"<base64>"}, ...]}
//! ```
//!
//! - `pkfp`: SHA-256 of the public key as a DER PKCS#1 `RSAPublicKey` (OpenSSL's
//!   `i2d_PublicKey`), not of the SubjectPublicKeyInfo the PEM file holds;
//! - `pol`: the policy digest of TPM2_PolicyPCR over `pcrs` with the predicted values, in a
//!   SHA-256 session starting from zero ([`policy_pcr_digest`]);
//! - `sig`: RSASSA-PKCS1-v1_5 with SHA-256 over `pol` (so the TPM verifies it against
//!   SHA-256(`pol`)).
//!
//! Everything here is pure except [`PcrSigningKey::load`] and [`PcrSignatures::load`], which
//! read one file each.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use crate::PcrBank;

/// Where the running system finds the booted UKI's PCR signature: systemd's copy in /run first,
/// then systemd-stub's original (only present while in the initrd).
pub const DEFAULT_SIGNATURE_PATHS: [&str; 2] =
    ["/run/systemd/tpm2-pcr-signature.json", "/.extra/tpm2-pcr-signature.json"];

/// The PCR a signed policy covers: systemd-stub measures the UKI there.
pub const SIGNED_PCR: u8 = crate::UKI_PCR;

/// TPM_CC_PolicyPCR, the command code hashed into a PolicyPCR digest.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
/// TPM_ALG_SHA256.
const TPM_ALG_SHA256: u16 = 0x000B;

/// Errors reading the PCR-signing key or a signature file.
#[derive(Debug, thiserror::Error)]
pub enum PcrSigError {
    /// The public key file could not be read.
    #[error("cannot read the PCR-signing public key {path}: {source}")]
    KeyRead { path: PathBuf, source: std::io::Error },
    /// The public key is not an RSA public key in PEM (SubjectPublicKeyInfo) form.
    #[error(
        "{origin} is not an RSA public key in PEM form (\"BEGIN PUBLIC KEY\", as \
         `openssl pkey -pubout` writes it): {reason}"
    )]
    KeyFormat { origin: String, reason: String },
    /// A signature file exists but is not systemd-measure's JSON.
    #[error("the PCR signature file {path} is damaged: {reason}")]
    SignatureFormat { path: PathBuf, reason: String },
    /// A signature file exists but cannot be read.
    #[error("cannot read the PCR signature file {path}: {source}")]
    SignatureRead { path: PathBuf, source: std::io::Error },
}

/// The fleet's PCR-signing public key (RSA). Kept as the DER PKCS#1 `RSAPublicKey`, the form
/// systemd fingerprints and the form the sealed blob stores.
#[derive(Clone, PartialEq, Eq)]
pub struct PcrSigningKey {
    pkcs1_der: Vec<u8>,
    modulus: Vec<u8>,
    exponent: u32,
}

impl std::fmt::Debug for PcrSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcrSigningKey").field("fingerprint", &self.fingerprint_hex()).finish()
    }
}

impl PcrSigningKey {
    /// Read a PEM public key file.
    pub fn load(path: &Path) -> Result<Self, PcrSigError> {
        let text = std::fs::read_to_string(path).map_err(|source| PcrSigError::KeyRead { path: path.to_path_buf(), source })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// Parse "-----BEGIN PUBLIC KEY-----" PEM holding an RSA SubjectPublicKeyInfo.
    pub fn from_pem(text: &str, origin: &str) -> Result<Self, PcrSigError> {
        let bad = |reason: &str| PcrSigError::KeyFormat { origin: origin.to_string(), reason: reason.to_string() };
        let begin = "-----BEGIN PUBLIC KEY-----";
        let end = "-----END PUBLIC KEY-----";
        let start = text.find(begin).ok_or_else(|| bad("no \"-----BEGIN PUBLIC KEY-----\" line"))? + begin.len();
        let stop = text[start..].find(end).ok_or_else(|| bad("no \"-----END PUBLIC KEY-----\" line"))? + start;
        let body: String = text[start..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| bad(&format!("the base64 does not decode: {e}")))?;
        Self::from_spki_der(&der).map_err(|reason| bad(&reason))
    }

    /// Parse a DER SubjectPublicKeyInfo with an rsaEncryption key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        /// 1.2.840.113549.1.1.1 (rsaEncryption), DER-encoded.
        const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        let (spki, rest) = der_take(der, 0x30)?;
        if !rest.is_empty() {
            return Err("trailing bytes after the key".into());
        }
        let (algorithm, rest) = der_take(spki, 0x30)?;
        let (oid, _) = der_take(algorithm, 0x06)?;
        if oid != RSA_ENCRYPTION {
            return Err("the key is not an RSA key (systemd signs PCR policies with RSA only)".into());
        }
        let (bits, rest) = der_take(rest, 0x03)?;
        if !rest.is_empty() {
            return Err("trailing bytes in the key structure".into());
        }
        let (&unused, pkcs1) = bits.split_first().ok_or("empty key bit string")?;
        if unused != 0 {
            return Err("the key bit string has unused bits".into());
        }
        Self::from_pkcs1_der(pkcs1)
    }

    /// Parse a DER PKCS#1 `RSAPublicKey` (the form stored in sealed blobs).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, String> {
        let (seq, rest) = der_take(der, 0x30)?;
        if !rest.is_empty() {
            return Err("trailing bytes after the RSA key".into());
        }
        let (n, rest) = der_take(seq, 0x02)?;
        let (e, rest) = der_take(rest, 0x02)?;
        if !rest.is_empty() {
            return Err("the RSA key has more than a modulus and an exponent".into());
        }
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        if !matches!(n.len(), 256 | 384 | 512) {
            return Err(format!("a {}-bit modulus; use RSA 2048, 3072 or 4096", n.len() * 8));
        }
        if e.is_empty() || e.len() > 4 {
            return Err("the public exponent does not fit a TPM (at most 32 bits)".into());
        }
        let exponent = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        Ok(PcrSigningKey { pkcs1_der: der.to_vec(), modulus: n.to_vec(), exponent })
    }

    /// The DER PKCS#1 encoding.
    pub fn pkcs1_der(&self) -> &[u8] {
        &self.pkcs1_der
    }

    /// The big-endian modulus without leading zeros.
    pub fn modulus(&self) -> &[u8] {
        &self.modulus
    }

    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// systemd's `pkfp`: SHA-256 of the DER PKCS#1 public key.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.pkcs1_der).into()
    }

    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint())
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Take one DER element with the expected tag; returns its contents and what follows it.
fn der_take(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let (&found, rest) = input.split_first().ok_or("the key ends early")?;
    if found != tag {
        return Err(format!("expected DER tag 0x{tag:02x}, found 0x{found:02x}"));
    }
    let (&first, mut rest) = rest.split_first().ok_or("the key ends early")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err("a DER length is malformed".into());
        }
        let (digits, tail) = rest.split_at(count);
        rest = tail;
        digits.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err("the key ends early".into());
    }
    Ok(rest.split_at(len))
}

/// The TPM2_PolicyPCR policy digest a SHA-256 policy session holds after PolicyPCR over
/// `pcrs` (sha256 bank) with these values, starting from the all-zero digest:
/// `SHA256(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || SHA256(values...))`.
/// This is systemd-measure's `pol`. Pure; the TPM computes the same (tested against swtpm).
pub fn policy_pcr_digest(pcrs: &[u8], values: &[&[u8]]) -> [u8; 32] {
    let mut select = [0u8; 3];
    for pcr in pcrs {
        select[usize::from(pcr / 8)] |= 1 << (pcr % 8);
    }
    let mut selection = Vec::with_capacity(10);
    selection.extend_from_slice(&1u32.to_be_bytes()); // one bank
    selection.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    selection.push(3); // sizeofSelect: 24 PCRs
    selection.extend_from_slice(&select);
    let mut pcr_digest = Sha256::new();
    for v in values {
        pcr_digest.update(v);
    }
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(TPM_CC_POLICY_PCR.to_be_bytes());
    h.update(&selection);
    h.update(pcr_digest.finalize());
    h.finalize().into()
}

/// One entry of a signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignatureEntry {
    bank: PcrBank,
    pcrs: Vec<u8>,
    key_fingerprint: Vec<u8>,
    policy: Vec<u8>,
    signature: Vec<u8>,
}

/// The signatures the booted UKI shipped (one file, or several candidate files merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrSignatures {
    /// The files the entries came from, for messages.
    sources: Vec<PathBuf>,
    entries: Vec<SignatureEntry>,
}

/// Why no signature was found for a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureMiss {
    /// No signature file exists at any of the places looked at.
    NoFile { looked_at: Vec<PathBuf> },
    /// Files exist, but nothing in them is signed by this key: another fleet's kernel image, or
    /// a key rotation the seal does not know yet.
    NotByThisKey { files: Vec<PathBuf>, other_keys: Vec<String> },
    /// The key signed other PCR values, not this one: a kernel image this key never signed, or a
    /// boot phase the image build did not sign.
    NotThisValue { files: Vec<PathBuf> },
}

impl std::fmt::Display for SignatureMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |paths: &[PathBuf]| paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        match self {
            SignatureMiss::NoFile { looked_at } => write!(
                f,
                "there is no PCR signature file (looked at {}): the box was not booted through a signed \
                 kernel image, or the image does not hand the signature on to the running system",
                list(looked_at)
            ),
            SignatureMiss::NotByThisKey { files, other_keys } => write!(
                f,
                "{} holds no signature by the sealed PCR-signing key (it holds signatures by key(s) {}): \
                 the booted kernel image was signed by another key",
                list(files),
                if other_keys.is_empty() { "none".to_string() } else { other_keys.join(", ") }
            ),
            SignatureMiss::NotThisValue { files } => write!(
                f,
                "{} has signatures by the sealed PCR-signing key, but none for the PCR 11 value this \
                 boot measured: the booted kernel image is not one the key signed",
                list(files)
            ),
        }
    }
}

impl PcrSignatures {
    /// Parse systemd-measure's JSON. `path` names the file in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PcrSigError> {
        let bad = |reason: String| PcrSigError::SignatureFormat { path: path.to_path_buf(), reason };
        let json: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let banks = json.as_object().ok_or_else(|| bad("the top level is not a JSON object".into()))?;
        let mut entries = Vec::new();
        for (bank_name, list) in banks {
            // Banks this agent cannot use are skipped, as systemd does; only a known bank is read.
            let Some(bank) = PcrBank::from_name(bank_name) else { continue };
            let list = list.as_array().ok_or_else(|| bad(format!("\"{bank_name}\" is not an array")))?;
            for (i, item) in list.iter().enumerate() {
                let at = |what: &str| bad(format!("entry {i} of \"{bank_name}\": {what}"));
                let pcrs = item
                    .get("pcrs")
                    .and_then(Value::as_array)
                    .ok_or_else(|| at("no \"pcrs\" array"))?
                    .iter()
                    .map(|p| p.as_u64().and_then(|p| u8::try_from(p).ok()).filter(|p| *p <= crate::MAX_PCR))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| at("\"pcrs\" holds something that is not a PCR number"))?;
                let hex_field = |name: &str| -> Result<Vec<u8>, PcrSigError> {
                    let text = item.get(name).and_then(Value::as_str).ok_or_else(|| at(&format!("no \"{name}\" string")))?;
                    hex::decode(text).map_err(|e| at(&format!("\"{name}\" is not hex: {e}")))
                };
                let key_fingerprint = hex_field("pkfp")?;
                let policy = hex_field("pol")?;
                let sig_text = item.get("sig").and_then(Value::as_str).ok_or_else(|| at("no \"sig\" string"))?;
                let signature = base64::engine::general_purpose::STANDARD
                    .decode(sig_text)
                    .map_err(|e| at(&format!("\"sig\" is not base64: {e}")))?;
                let mut pcrs = pcrs;
                pcrs.sort_unstable();
                entries.push(SignatureEntry { bank, pcrs, key_fingerprint, policy, signature });
            }
        }
        Ok(PcrSignatures { sources: vec![path.to_path_buf()], entries })
    }

    /// Read every file of `paths` that exists and merge their entries. `Ok(None)` when none
    /// exists; a file that exists but is unreadable or damaged is an error naming it.
    pub fn load_existing(paths: &[PathBuf]) -> Result<Option<Self>, PcrSigError> {
        let mut merged: Option<PcrSignatures> = None;
        for path in paths {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PcrSigError::SignatureRead { path: path.clone(), source }),
            };
            let parsed = Self::parse(&text, path)?;
            let all = merged.get_or_insert_with(PcrSignatures::default);
            all.sources.extend(parsed.sources);
            all.entries.extend(parsed.entries);
        }
        Ok(merged)
    }

    /// The signature for `policy` (a PolicyPCR digest over `pcrs` in `bank`) by `key`, matched
    /// as systemd matches it: bank, PCR set, key fingerprint, policy digest.
    pub fn find(&self, bank: PcrBank, pcrs: &[u8], key: &PcrSigningKey, policy: &[u8]) -> Result<&[u8], SignatureMiss> {
        let fingerprint = key.fingerprint();
        let for_pcrs: Vec<&SignatureEntry> = self.entries.iter().filter(|e| e.bank == bank && e.pcrs == pcrs).collect();
        let by_key: Vec<&&SignatureEntry> = for_pcrs.iter().filter(|e| e.key_fingerprint == fingerprint).collect();
        if by_key.is_empty() {
            let mut other_keys: Vec<String> = for_pcrs.iter().map(|e| hex::encode(&e.key_fingerprint)).collect();
            other_keys.sort();
            other_keys.dedup();
            return Err(SignatureMiss::NotByThisKey { files: self.sources.clone(), other_keys });
        }
        by_key
            .iter()
            .find(|e| e.policy == policy)
            .map(|e| e.signature.as_slice())
            .ok_or_else(|| SignatureMiss::NotThisValue { files: self.sources.clone() })
    }

    /// The files the entries came from.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A 2048-bit RSA test public key (`openssl genpkey` + `openssl pkey -pubout`), and what
    /// `systemd-measure sign` (systemd 252) wrote with it for a small test UKI, phases `:` and
    /// `sysinit`: recorded from one run, so these tests need no tools.
    const PUB_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0CzSpRMpGxH8L25HlDAR
8ygWdN21t5pJE+IHUDByIUEDzsxRmj24CmOLEdPtEZSqy4Bs6hMI04Pu/rU2gmK4
3FZHw3DmLjapzuw+KlMG8Oa1dgZ1MSlLiotbZip0+bG8EUq52OW4uE+EXSxyD93n
VSVCWDIHFV2y4syd24EDreMosRhrc+iHJz+0maC2leHwOZYnquSupjUqJCqVtmI3
P4qRYg2vPzuhraQFiGuUJsiC6ezrzHtT7gYDSEXumZIT/XSUhnHmi+BXEAwo8kcz
WeH+77u6Equ2TUruEMitajDHfw8r0xh9WCIfOHfIZT4xHhqrd7BvAgLQ/H8gKXH/
TwIDAQAB
-----END PUBLIC KEY-----
";
    const PKFP: &str = "a31ee9832f4095aa6420d17c0dd4866f06b82829c7d5170314f7e0873b710aa7";
    const POL_BOOT: &str = "d35896e8aac4de2b0388a709bc0808eb7b37c769200b9439e5ab2eadfafcb310";
    const SIG_JSON: &str = r#"{"sha256":[{"pcrs":[11],"pkfp":"a31ee9832f4095aa6420d17c0dd4866f06b82829c7d5170314f7e0873b710aa7","pol":"d35896e8aac4de2b0388a709bc0808eb7b37c769200b9439e5ab2eadfafcb310","sig":"FKSaQk+84tQGCLGWrQT976EFVXibA2vFVOL2/yUFIntYshzjMz9MeBRINYwbJ1vp3e5hqEQtLpX8+tzQQODm4INTCehRHaBgx3Wm6K+YkGCAKeGUOS6/MFuPv7LSZbXBKjYwEWqEamkvYVI8WDUtVhgXesByjDvFTSeJTAqEO6EWEISDSZfvat+ccdzA1xcS9SGTVKfSbdGNTKZ6A7Dw0cKEul+42H7m3Ry9TWv9T48d/qMX7FWCfULT1OFUAQpII1ylq2WYRhhDNsMSq5xM+6z86e3nHgixLM9j7cIgg9Haxsa8A7oTeojjZvOIxFuDpms+z6B92+EP3yjrfiIA5Q=="},{"pcrs":[11],"pkfp":"a31ee9832f4095aa6420d17c0dd4866f06b82829c7d5170314f7e0873b710aa7","pol":"344fdd119f222687065ddac54fcf0bb2fe74755738a4c4bba66560da66f003c7","sig":"mF78pGFIzEk79s7JwlyyL/XTa140RBMVHwffyCG6C7ZxsM5KVL9YfhR56ZY7Dp1s9tG+oaYT5xMSAr7irWvP7toXIpVADATSsQLjplcOMmQnRj8RVsR+wPFSbKtxw3Xt5+R58kaKpxGonGLi8BXuSvwwYw+DYRLD364MUFBWjaxqClNtX8eCoY0sbMTaEk/hjUTVDsZRBcSNQyzPSY3MoEcbqF/kVQbzcHqweP2WDejwm9r/HHOwwWIY6fCzsvElABqbUd4p2xZgsv/csxQ/a9m84jRLV8MKybDdvKErS8uYgqNihnJmORagCTMShLLh/efq7Fr8X6uFY7OIFyDVEg=="}]}"#;
    const EC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEHCgp4MN+fzygSuVVTX3LrY2xD1Tk
Pxb8mLrs1Z4wDMenlIKHhF7dMGtx4DLD6f0tMtDKzGys0rv0tgqqOgEmaA==
-----END PUBLIC KEY-----
";

    #[test]
    fn key_fingerprint_is_systemds_pkfp() {
        let key = PcrSigningKey::from_pem(PUB_PEM, "test").unwrap();
        assert_eq!(key.fingerprint_hex(), PKFP);
        assert_eq!(key.exponent(), 65537);
        assert_eq!(key.modulus().len(), 256);
        // The stored form parses back to the same key.
        assert_eq!(PcrSigningKey::from_pkcs1_der(key.pkcs1_der()).unwrap(), key);
        let err = PcrSigningKey::from_pem(EC_PEM, "ec.pem").unwrap_err().to_string();
        assert!(err.contains("not an RSA key") && err.contains("ec.pem"), "{err}");
    }

    #[test]
    fn signatures_are_matched_by_key_and_policy_as_systemd_does() {
        let key = PcrSigningKey::from_pem(PUB_PEM, "test").unwrap();
        let sigs = PcrSignatures::parse(SIG_JSON, Path::new("/run/sig.json")).unwrap();
        let pol = hex::decode(POL_BOOT).unwrap();
        let sig = sigs.find(PcrBank::Sha256, &[11], &key, &pol).unwrap();
        assert_eq!(sig.len(), 256);
        // Another PCR value: the key signed others, not this one.
        let miss = sigs.find(PcrBank::Sha256, &[11], &key, &[0u8; 32]).unwrap_err();
        assert!(matches!(miss, SignatureMiss::NotThisValue { .. }), "{miss}");
        assert!(miss.to_string().contains("not one the key signed"), "{miss}");
        // Another key: nothing by it, and the message names the key that did sign.
        let other = PcrSigningKey::from_pkcs1_der(&{
            let mut der = key.pkcs1_der().to_vec();
            let last = der.len() - 6; // inside the modulus
            der[last] ^= 1;
            der
        })
        .unwrap();
        let miss = sigs.find(PcrBank::Sha256, &[11], &other, &pol).unwrap_err();
        assert!(matches!(miss, SignatureMiss::NotByThisKey { .. }), "{miss}");
        assert!(miss.to_string().contains(PKFP) && miss.to_string().contains("signed by another key"), "{miss}");
        // Another bank or PCR set is not a match either.
        assert!(sigs.find(PcrBank::Sha1, &[11], &key, &pol).is_err());
        assert!(sigs.find(PcrBank::Sha256, &[7, 11], &key, &pol).is_err());
    }

    #[test]
    fn damaged_signature_files_are_named() {
        let path = Path::new("/run/systemd/tpm2-pcr-signature.json");
        for (text, needle) in [
            ("not json", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"sha256":{}}"#, "not an array"),
            (r#"{"sha256":[{"pcrs":[99],"pkfp":"00","pol":"00","sig":"AA=="}]}"#, "not a PCR number"),
            (r#"{"sha256":[{"pcrs":[11],"pkfp":"zz","pol":"00","sig":"AA=="}]}"#, "\"pkfp\" is not hex"),
            (r#"{"sha256":[{"pcrs":[11],"pkfp":"00","pol":"00","sig":"***"}]}"#, "not base64"),
            (r#"{"sha256":[{"pcrs":[11],"pkfp":"00","pol":"00"}]}"#, "no \"sig\""),
        ] {
            let err = PcrSignatures::parse(text, path).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("tpm2-pcr-signature.json"), "{text}: {err}");
        }
        // A bank this agent does not know is skipped, not an error (systemd-measure may sign more).
        let sigs = PcrSignatures::parse(r#"{"sm3_256":[{"x":1}]}"#, path).unwrap();
        assert!(sigs.entries.is_empty());
    }

    #[test]
    fn missing_files_are_none_and_present_ones_are_merged() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        assert_eq!(PcrSignatures::load_existing(&[a.clone(), b.clone()]).unwrap(), None);
        std::fs::write(&b, SIG_JSON).unwrap();
        let sigs = PcrSignatures::load_existing(&[a.clone(), b.clone()]).unwrap().unwrap();
        assert_eq!(sigs.sources(), std::slice::from_ref(&b));
        assert_eq!(sigs.entries.len(), 2);
        std::fs::write(&a, "{").unwrap();
        let err = PcrSignatures::load_existing(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("a.json") && err.contains("damaged"), "{err}");
    }

    #[test]
    fn policy_pcr_digest_matches_systemd_measure() {
        // PCR 11 as systemd-measure 252 predicted it for a small test UKI, and the `pol` it
        // signed for that value (recorded from a run; the swtpm tests check the TPM agrees).
        let pcr11 = hex::decode("ad2145ad1679a9d632b73b3a869d1b6e729930d8ae33d6addf001cead1280766").unwrap();
        assert_eq!(
            hex::encode(policy_pcr_digest(&[11], &[&pcr11])),
            "d35896e8aac4de2b0388a709bc0808eb7b37c769200b9439e5ab2eadfafcb310"
        );
    }

    #[test]
    fn keys_in_other_forms_are_refused_with_the_reason() {
        for (text, needle) in [
            ("", "BEGIN PUBLIC KEY"),
            ("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n", "base64"),
            ("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n", "ends early"),
        ] {
            let err = PcrSigningKey::from_pem(text, "k.pem").unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("k.pem"), "{text:?}: {err}");
        }
    }
}
