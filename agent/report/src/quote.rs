//! Integrity: the attestation key (AK), the TPM quote over a report's digest, and verification
//! on any machine.
//!
//! **The attestation key** is a restricted ECDSA P-256 signing key, created as a *primary* key in
//! the TPM's endorsement hierarchy from a fixed template (this module's
//! [`ak_template`]). The same template on the same TPM always gives the same key, so nothing is
//! stored on the box and nothing can be swapped: provisioning exports its public part
//! ([`Quoter::ak_public`], PEM) to the clinic's records, and every later quote is made with the
//! same key. Because the key is restricted, the TPM signs with it only data it produced itself
//! (quotes, certifications), never a forged structure that looks like a quote. The endorsement
//! seed survives `TPM2_Clear`, so clearing the owner hierarchy does not change the AK.
//!
//! **A quote** is `TPM2_Quote` over the boot PCRs ([`BOOT_PCRS`], SHA-256 bank) with the
//! report's digest as the qualifying data. The report carries the PCR values, the `TPMS_ATTEST`
//! bytes and the `TPMT_SIGNATURE` (see [`crate::json::Integrity`]).
//!
//! **Verification** ([`verify`]) needs only the report file and the AK's public PEM: the file is
//! byte-for-byte what generation wrote; its digest is the quote's qualifying data; the signature
//! verifies with the AK; the listed PCR values hash to the quoted PCR digest. It then returns the
//! PCR values so they can be compared with the values expected for the box
//! ([`Verified::pcr_differences`]).
//!
//! There may be no resource manager (swtpm, `/dev/tpm0`): every transient object this module
//! loads is flushed before the call returns, on the error paths too.

use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tss_esapi::{
    Context, TctiNameConf,
    attributes::ObjectAttributesBuilder,
    constants::{CapabilityType, tss::TPM2_TRANSIENT_FIRST},
    handles::{KeyHandle, ObjectHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, PublicAlgorithm},
        ecc::EccCurve,
        resource_handles::Hierarchy,
        session_handles::AuthSession,
    },
    structures::{
        Attest, AttestInfo, CapabilityData, Data, EccParameter, EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme,
        PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Public, PublicBuilder, PublicEccParametersBuilder,
        Signature, SignatureScheme, SymmetricDefinitionObject,
    },
    traits::{Marshall, UnMarshall},
};

use crate::json::{self, DocumentError, Integrity, PcrValue};
use crate::report::Report;

/// The PCRs a report's quote covers: the firmware, its configuration, option ROMs, the boot
/// loader and the Secure Boot policy (SHA-256 bank).
pub const BOOT_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// How many times a quote is retried when a PCR changes between reading the values and quoting.
const QUOTE_ATTEMPTS: u32 = 4;

/// Tells the AK apart from any other key derived from the endorsement seed.
const AK_UNIQUE_LABEL: &[u8] = b"wardbox report attestation key";

/// DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point (id-ecPublicKey,
/// prime256v1, BIT STRING of 66 bytes); the 65-byte point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Errors making a quote.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// The TCTI string is not one this agent accepts.
    #[error(transparent)]
    Tcti(#[from] wardbox_volume::TpmError),
    /// Nothing answered at the configured TPM.
    #[error("no TPM answered at {tcti:?}: {detail}")]
    NoTpm { tcti: String, detail: String },
    /// A TPM command failed.
    #[error("the TPM command {op} failed: {source}")]
    Command { op: &'static str, source: tss_esapi::Error },
    /// The TPM returned something this module cannot use.
    #[error("the TPM returned an unexpected {what}")]
    Unexpected { what: &'static str },
    /// PCRs changed between reading them and quoting them, every time.
    #[error("the boot PCRs changed during each of {attempts} quote attempts (something keeps extending them)")]
    PcrsKeptChanging { attempts: u32 },
    /// The report document could not be assembled.
    #[error(transparent)]
    Document(#[from] DocumentError),
}

fn cmd(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> QuoteError {
    move |source| QuoteError::Command { op, source }
}

/// The public part of the attestation key: an uncompressed P-256 point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkPublic {
    point: [u8; 65],
}

impl AkPublic {
    fn from_xy(x: &[u8], y: &[u8]) -> Option<Self> {
        if x.len() > 32 || y.len() > 32 {
            return None;
        }
        let mut point = [0u8; 65];
        point[0] = 0x04;
        point[1 + 32 - x.len()..33].copy_from_slice(x);
        point[33 + 32 - y.len()..].copy_from_slice(y);
        Some(AkPublic { point })
    }

    /// The key as a PEM "PUBLIC KEY" (SubjectPublicKeyInfo), readable by OpenSSL and
    /// `tpm2_checkquote`.
    pub fn to_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// Read a PEM written by [`AkPublic::to_pem`] (or any P-256 SubjectPublicKeyInfo PEM).
    pub fn from_pem(pem: &str) -> Result<Self, VerifyError> {
        let bad = |reason: &str| VerifyError::BadAkFile { reason: reason.to_string() };
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PUBLIC KEY-----")
            .collect();
        if body.is_empty() {
            return Err(bad("it has no \"-----BEGIN PUBLIC KEY-----\" block"));
        }
        let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| bad(&format!("its base64 does not decode: {e}")))?;
        if der.len() != P256_SPKI_PREFIX.len() + 65 || der[..P256_SPKI_PREFIX.len()] != P256_SPKI_PREFIX {
            return Err(bad("it is not an uncompressed ECDSA P-256 public key"));
        }
        let mut point = [0u8; 65];
        point.copy_from_slice(&der[P256_SPKI_PREFIX.len()..]);
        if point[0] != 0x04 {
            return Err(bad("the point is not uncompressed"));
        }
        Ok(AkPublic { point })
    }

    /// SHA-256 of the key's DER, hex: a short fingerprint to compare by eye or phone.
    pub fn fingerprint(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        json::sha256_hex(&der)
    }
}

/// The AK's template. Fixed forever: changing any bit changes the key every box exported.
pub fn ak_template() -> Result<Public, QuoteError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .map_err(cmd("AK attributes"))?;
    let parameters = PublicEccParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_curve(EccCurve::NistP256)
        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
        .with_is_signing_key(true)
        .with_is_decryption_key(false)
        .with_restricted(true)
        .build()
        .map_err(cmd("AK parameters"))?;
    let label = EccParameter::try_from(Sha256::digest(AK_UNIQUE_LABEL).to_vec()).map_err(cmd("AK unique"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(parameters)
        .with_ecc_unique_identifier(EccPoint::new(label, EccParameter::default()))
        .build()
        .map_err(cmd("AK template"))
}

fn selection(pcrs: &[u8]) -> Result<PcrSelectionList, QuoteError> {
    let slots = pcrs
        .iter()
        .map(|p| PcrSlot::try_from(1u32 << p).map_err(cmd("PCR selection")))
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new().with_selection(HashingAlgorithm::Sha256, &slots).build().map_err(cmd("PCR selection"))
}

/// Decode lower-case hex only: upper-case hex decodes to the same bytes, so accepting it would
/// let a byte of the file change without the report being refused.
fn lower_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("it is not lower-case hex".into());
    }
    hex::decode(text).map_err(|e| format!("it is not hex: {e}"))
}

/// SHA-256 over the concatenated PCR values: what a quote's PCR digest is.
fn pcr_digest(values: &[PcrValue]) -> Result<[u8; 32], String> {
    let mut hasher = Sha256::new();
    for v in values {
        hasher.update(lower_hex(&v.value).map_err(|e| format!("PCR {}: {e}", v.index))?);
    }
    Ok(hasher.finalize().into())
}

/// A connection to the TPM that quotes reports. Holds no TPM objects between calls.
pub struct Quoter {
    ctx: Context,
    tcti: String,
}

impl std::fmt::Debug for Quoter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quoter").field("tcti", &self.tcti).finish_non_exhaustive()
    }
}

impl Quoter {
    /// Connect to the TPM named by a TCTI string (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=N`), checked the same way as the volume's.
    pub fn connect(tcti: &str) -> Result<Self, QuoteError> {
        let spec = wardbox_volume::tpm::parse_tcti(tcti)?;
        let no_tpm = |detail: String| QuoteError::NoTpm { tcti: tcti.to_string(), detail };
        if let wardbox_volume::tpm::TctiSpec::Device(path) = &spec
            && !std::path::Path::new(path).exists()
        {
            return Err(no_tpm(format!("{path} does not exist")));
        }
        let conf = TctiNameConf::from_str(tcti).map_err(|e| no_tpm(e.to_string()))?;
        let mut ctx = Context::new(conf).map_err(|e| no_tpm(e.to_string()))?;
        ctx.get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 1).map_err(|e| no_tpm(e.to_string()))?;
        Ok(Quoter { ctx, tcti: tcti.to_string() })
    }

    /// Create (re-derive) the AK and run `f` with its handle; the handle is flushed afterwards
    /// whatever `f` returns.
    fn with_ak<T>(&mut self, f: impl FnOnce(&mut Context, KeyHandle, &Public) -> Result<T, QuoteError>) -> Result<T, QuoteError> {
        let template = ak_template()?;
        let created = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .map_err(cmd("CreatePrimary (endorsement hierarchy attestation key)"))?;
        let handle = created.key_handle;
        let result = f(&mut self.ctx, handle, &created.out_public);
        let flush = self.ctx.flush_context(ObjectHandle::from(handle)).map_err(cmd("FlushContext"));
        let value = result?;
        flush?;
        Ok(value)
    }

    /// The AK's public part, for export at provisioning.
    pub fn ak_public(&mut self) -> Result<AkPublic, QuoteError> {
        self.with_ak(|_, _, public| ak_public_of(public))
    }

    /// Quote `digest` over `pcrs` (SHA-256 bank) with the AK.
    pub fn quote(&mut self, digest: &[u8; 32], pcrs: &[u8]) -> Result<Integrity, QuoteError> {
        let sel = selection(pcrs)?;
        self.with_ak(|ctx, ak, _| {
            for _ in 0..QUOTE_ATTEMPTS {
                let values = read_pcrs(ctx, pcrs, sel.clone())?;
                let (attest, signature) = ctx
                    .execute_with_session(Some(AuthSession::Password), |ctx| {
                        ctx.quote(
                            ak,
                            Data::try_from(digest.to_vec())?,
                            SignatureScheme::EcDsa { hash_scheme: HashScheme::new(HashingAlgorithm::Sha256) },
                            sel.clone(),
                        )
                    })
                    .map_err(cmd("Quote"))?;
                let AttestInfo::Quote { info } = attest.attested() else {
                    return Err(QuoteError::Unexpected { what: "attestation type (not a quote)" });
                };
                // A PCR extended between the read and the quote: read again.
                if pcr_digest(&values).ok().as_ref().map(|d| d.as_slice()) != Some(info.pcr_digest().value()) {
                    continue;
                }
                return Ok(Integrity {
                    digest: format!("sha256:{}", hex::encode(digest)),
                    pcr_bank: "sha256".into(),
                    pcrs: values,
                    attest: hex::encode(attest.marshall().map_err(cmd("marshal TPMS_ATTEST"))?),
                    signature: hex::encode(signature.marshall().map_err(cmd("marshal TPMT_SIGNATURE"))?),
                });
            }
            Err(QuoteError::PcrsKeptChanging { attempts: QUOTE_ATTEMPTS })
        })
    }

    /// How many transient objects the TPM holds now: zero after any call of this module on a
    /// TPM nobody else uses.
    pub fn transient_objects(&mut self) -> Result<usize, QuoteError> {
        let (data, _) = self
            .ctx
            .execute_without_session(|ctx| ctx.get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 256))
            .map_err(cmd("GetCapability (handles)"))?;
        Ok(match data {
            CapabilityData::Handles(list) => list.len(),
            _ => 0,
        })
    }

    /// The current values of `pcrs` (SHA-256 bank).
    pub fn read_pcrs(&mut self, pcrs: &[u8]) -> Result<Vec<PcrValue>, QuoteError> {
        let sel = selection(pcrs)?;
        read_pcrs(&mut self.ctx, pcrs, sel)
    }
}

fn ak_public_of(public: &Public) -> Result<AkPublic, QuoteError> {
    match public {
        Public::Ecc { unique, .. } => AkPublic::from_xy(unique.x().value(), unique.y().value())
            .ok_or(QuoteError::Unexpected { what: "AK point size" }),
        _ => Err(QuoteError::Unexpected { what: "AK algorithm (not ECC)" }),
    }
}

fn read_pcrs(ctx: &mut Context, pcrs: &[u8], sel: PcrSelectionList) -> Result<Vec<PcrValue>, QuoteError> {
    let mut sorted = pcrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (_, read_sel, digests) = ctx.execute_without_session(|ctx| ctx.pcr_read(sel)).map_err(cmd("PCR_Read"))?;
    let values = digests.value();
    if values.len() != sorted.len() || read_sel.get_selections().len() != 1 {
        return Err(QuoteError::Unexpected { what: "number of PCR values" });
    }
    // The TPM returns the selected PCRs in ascending order, the order a quote digests them in.
    Ok(sorted.iter().zip(values).map(|(i, d)| PcrValue { index: *i, value: hex::encode(d.value()) }).collect())
}

/// Evaluate nothing, render and quote: the three files of `report`, the document signed with a
/// quote over [`BOOT_PCRS`].
pub fn sign_report(quoter: &mut Quoter, report: &Report) -> Result<json::Outputs, QuoteError> {
    json::assemble(report, |digest| quoter.quote(digest, &BOOT_PCRS).map(Some))
}

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file is not a report, or its bytes are not the ones generation wrote.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The AK file cannot be used.
    #[error("the attestation key file cannot be used: {reason}")]
    BadAkFile { reason: String },
    /// The report carries no quote.
    #[error("the report is not signed: it carries no TPM quote (it was generated without a TPM)")]
    NotSigned,
    /// The digest written in the integrity block is not the digest of the report's content.
    #[error("the report was changed after it was quoted: its content hashes to sha256:{actual}, the quote is for {claimed}")]
    Edited { claimed: String, actual: String },
    /// The attestation bytes are not a TPM quote.
    #[error("the quote is damaged: {reason}")]
    BadQuote { reason: String },
    /// The quote's qualifying data is not this report's digest.
    #[error("the quote was made for other content (qualifying data {quoted}, report digest {actual}): the report was changed or the quote taken from another report")]
    QuoteForOtherContent { quoted: String, actual: String },
    /// The signature does not verify with the given AK.
    #[error("the quote's signature does not verify with this attestation key (fingerprint {fingerprint}): it was made by another TPM or key, or it was altered")]
    WrongSigner { fingerprint: String },
    /// The PCR values written in the report are not the ones the TPM quoted.
    #[error("the PCR values written in the report are not the ones the TPM quoted: {reason}")]
    PcrValuesAltered { reason: String },
}

/// A report that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub report: Report,
    /// "sha256:…" of the signed part.
    pub digest: String,
    pub renderings: json::Renderings,
    /// The boot PCRs at quote time, as the TPM attested them.
    pub pcrs: Vec<PcrValue>,
    /// The TPM's firmware version and reset count at quote time (a reset count that goes back
    /// between two reports of one box means a different TPM or a cleared one).
    pub tpm_firmware_version: u64,
    pub tpm_reset_count: u32,
    /// The qualified name of the signing key as the quote states it (hex).
    pub signer: String,
}

/// One PCR whose quoted value differs from the value expected for the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrDifference {
    pub index: u8,
    pub expected: String,
    /// Absent when the quote did not cover this PCR.
    pub quoted: Option<String>,
}

impl Verified {
    /// Compare the quoted PCRs with the values expected for this box (e.g. those recorded at
    /// provisioning, or in the previous accepted report).
    pub fn pcr_differences(&self, expected: &[PcrValue]) -> Vec<PcrDifference> {
        expected
            .iter()
            .filter_map(|e| {
                let quoted = self.pcrs.iter().find(|q| q.index == e.index).map(|q| q.value.clone());
                (quoted.as_deref() != Some(e.value.to_lowercase().as_str()))
                    .then(|| PcrDifference { index: e.index, expected: e.value.clone(), quoted })
            })
            .collect()
    }

    /// Whether `bytes` are the rendering (HTML or OSCAL) this report lists.
    pub fn rendering_matches(&self, bytes: &[u8]) -> bool {
        let h = json::sha256_hex(bytes);
        h == self.renderings.html_sha256 || h == self.renderings.oscal_sha256
    }
}

/// Verify a report document against the box's attestation key. Pure computation: no TPM.
pub fn verify(report_bytes: &[u8], ak: &AkPublic) -> Result<Verified, VerifyError> {
    let doc = json::read(report_bytes)?;
    let integrity = doc.integrity.ok_or(VerifyError::NotSigned)?;
    let actual = hex::encode(doc.digest);
    if integrity.digest != format!("sha256:{actual}") {
        return Err(VerifyError::Edited { claimed: integrity.digest, actual });
    }
    let bad_quote = |reason: String| VerifyError::BadQuote { reason };
    let attest_bytes = lower_hex(&integrity.attest).map_err(|e| bad_quote(format!("the attestation: {e}")))?;
    let attest = Attest::unmarshall(&attest_bytes).map_err(|e| bad_quote(format!("the attestation does not parse: {e}")))?;
    if attest.extra_data().value() != doc.digest.as_slice() {
        return Err(VerifyError::QuoteForOtherContent { quoted: hex::encode(attest.extra_data().value()), actual });
    }
    // The signature, checked before anything in the attestation is believed.
    let sig_bytes = lower_hex(&integrity.signature).map_err(|e| bad_quote(format!("the signature: {e}")))?;
    let signature = Signature::unmarshall(&sig_bytes).map_err(|e| bad_quote(format!("the signature does not parse: {e}")))?;
    let Signature::EcDsa(ecc) = signature else {
        return Err(bad_quote("the signature is not ECDSA".into()));
    };
    if ecc.hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(bad_quote("the signature does not use SHA-256".into()));
    }
    let (r, s) = (ecc.signature_r().value(), ecc.signature_s().value());
    if r.len() > 32 || s.len() > 32 {
        return Err(bad_quote("the signature's numbers are too long for P-256".into()));
    }
    let mut fixed = [0u8; 64];
    fixed[32 - r.len()..32].copy_from_slice(r);
    fixed[64 - s.len()..].copy_from_slice(s);
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &ak.point);
    key.verify(&attest_bytes, &fixed).map_err(|_| VerifyError::WrongSigner { fingerprint: ak.fingerprint() })?;
    // The PCR values written beside the quote must be the ones it covers.
    let AttestInfo::Quote { info } = attest.attested() else {
        return Err(bad_quote("the attestation is not a quote".into()));
    };
    let altered = |reason: String| VerifyError::PcrValuesAltered { reason };
    let selections = info.pcr_selection().get_selections();
    let [selection] = selections else {
        return Err(altered(format!("the quote covers {} PCR banks, expected one", selections.len())));
    };
    if selection.hashing_algorithm() != HashingAlgorithm::Sha256 || integrity.pcr_bank != "sha256" {
        return Err(altered("the quoted bank is not SHA-256".into()));
    }
    let quoted: Vec<u8> = selection.selected().iter().map(|s| u32::from(*s).trailing_zeros() as u8).collect();
    let mut quoted_sorted = quoted.clone();
    quoted_sorted.sort_unstable();
    let listed: Vec<u8> = integrity.pcrs.iter().map(|p| p.index).collect();
    if listed != quoted_sorted {
        return Err(altered(format!("the report lists PCRs {listed:?}, the quote covers {quoted_sorted:?}")));
    }
    let digest = pcr_digest(&integrity.pcrs).map_err(altered)?;
    if digest.as_slice() != info.pcr_digest().value() {
        return Err(altered("their digest differs from the quoted PCR digest".into()));
    }
    Ok(Verified {
        report: doc.report,
        digest: integrity.digest,
        renderings: doc.renderings,
        pcrs: integrity.pcrs,
        tpm_firmware_version: attest.firmware_version(),
        tpm_reset_count: attest.clock_info().reset_count(),
        signer: hex::encode(attest.qualified_signer().value()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ak_pem_round_trips_and_refuses_other_keys() {
        let ak = AkPublic::from_xy(&[1; 32], &[2; 31]).expect("point");
        let pem = ak.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(AkPublic::from_pem(&pem).expect("parse"), ak);
        assert!(matches!(AkPublic::from_pem("hello"), Err(VerifyError::BadAkFile { .. })));
        // An RSA key's SPKI (different algorithm identifier) is refused by name.
        let rsa = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END PUBLIC KEY-----\n";
        match AkPublic::from_pem(rsa) {
            Err(VerifyError::BadAkFile { reason }) => assert!(reason.contains("P-256"), "{reason}"),
            other => panic!("expected BadAkFile, got {other:?}"),
        }
    }

    #[test]
    fn pcr_digest_is_sha256_of_the_concatenated_values() {
        let values = vec![PcrValue { index: 0, value: "00".repeat(32) }, PcrValue { index: 7, value: "ff".repeat(32) }];
        let mut expected = Sha256::new();
        expected.update([0u8; 32]);
        expected.update([0xffu8; 32]);
        assert_eq!(pcr_digest(&values).expect("digest"), <[u8; 32]>::from(expected.finalize()));
        assert!(pcr_digest(&[PcrValue { index: 1, value: "zz".into() }]).is_err());
    }
}
