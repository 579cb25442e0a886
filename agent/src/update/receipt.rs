//! The install receipt: the last install from the log, as JSON for the clinic's records, quoted
//! by the TPM's attestation key (the compliance report's AK and `TPM2_Quote` over the boot PCRs,
//! with the receipt's sha256 as qualifying data) when the box has a TPM. Shared by `wardbox update
//! receipt` and the admin Updates page.

use std::path::Path;

use jiff::Timestamp;
use serde_json::json;

use super::installs::{InstallLog, InstallRecord};
use super::{UpdatePaths, running_version};

/// A receipt, ready to write or download.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The document (pretty JSON, newline at the end): the receipt's exact bytes as a string,
    /// their digest, and the quote.
    pub document: Vec<u8>,
    /// The install it is a receipt of.
    pub install: InstallRecord,
    /// Whether a TPM quoted it.
    pub signed: bool,
}

/// Makes the receipt of the last install. `tcti`: the TPM to quote with (none: unsigned, and
/// the document says so with `"signed": false`).
pub fn make(data_dir: &Path, exported_by: &str, tcti: Option<&str>) -> Result<Receipt, String> {
    let paths = UpdatePaths::new(data_dir);
    let last = InstallLog::new(paths.installs())
        .last()?
        .ok_or("no update was ever applied on this box: there is nothing to receipt")?;
    let receipt = json!({
        "product": super::PRODUCT,
        "architecture": std::env::consts::ARCH,
        "system_version": running_version().map_err(|e| e.to_string())?,
        "install": last,
        "exported": Timestamp::now(),
        "exported_by": exported_by,
    });
    // The quote covers the receipt's bytes exactly as they are written below.
    let receipt_bytes = serde_json::to_vec(&receipt).map_err(|e| e.to_string())?;
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&receipt_bytes).into();
    let quote = match tcti {
        Some(tcti) => {
            let mut quoter = wardbox_report::Quoter::connect(tcti).map_err(|e| e.to_string())?;
            Some(quoter.quote(&digest, &wardbox_report::quote::BOOT_PCRS).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let receipt_text = String::from_utf8(receipt_bytes).map_err(|e| e.to_string())?;
    let doc = json!({
        "receipt": receipt_text,
        "digest": format!("sha256:{}", hex::encode(digest)),
        "quote": quote,
        "signed": quote.is_some(),
    });
    let mut document = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    document.push(b'\n');
    Ok(Receipt { document, install: last, signed: quote.is_some() })
}

/// The TPM that quotes receipts: the volume's (none for a plain-directory volume).
pub fn tcti(config: &crate::config::Config) -> Option<String> {
    match &config.volume {
        crate::stages::unlock::VolumeConfig::Luks2Tpm(c) => Some(c.tcti.clone()),
        crate::stages::unlock::VolumeConfig::PlainDirectory { .. } => None,
    }
}

/// A receipt whose quote verified against the box's attestation key.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// The receipt itself (product, versions, the install record, who exported it, when).
    pub receipt: serde_json::Value,
    /// "sha256:…" of the receipt's bytes, as the quote carries it.
    pub digest: String,
    /// The boot PCRs at quote time: (index, lower-case hex).
    pub pcrs: Vec<(u8, String)>,
    /// The TPM's reset count at quote time.
    pub tpm_reset_count: u32,
}

/// Why a receipt is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the file is not a receipt: {0}")]
    NotAReceipt(String),
    #[error("the receipt is not signed: it was exported on a box without a TPM, so nothing vouches for it")]
    NotSigned,
    #[error("the receipt was edited: its bytes hash to sha256:{actual}, but it says {claimed}")]
    Edited { claimed: String, actual: String },
    #[error("the quote is not over this receipt (it quotes {quoted}, the receipt is sha256:{actual})")]
    QuoteForOtherContent { quoted: String, actual: String },
    #[error("the signature does not verify with the attestation key {fingerprint}: another box signed it, or the quote was altered")]
    WrongSigner { fingerprint: String },
    #[error("the quote is malformed: {0}")]
    BadQuote(String),
    #[error("the PCR values written beside the quote are not the ones it covers: {0}")]
    PcrValuesAltered(String),
    #[error("the attestation key file: {0}")]
    BadKey(String),
}

fn lower_hex(what: &str, text: &str) -> Result<Vec<u8>, ReceiptError> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReceiptError::BadQuote(format!("{what} is not lower-case hex")));
    }
    hex::decode(text).map_err(|e| ReceiptError::BadQuote(format!("{what} is not hex: {e}")))
}

/// The uncompressed P-256 point of the attestation key, from the PEM `wardbox report export-ak`
/// writes (checked by the report crate's own parser first).
fn ak_point(ak_pem: &str) -> Result<(Vec<u8>, String), ReceiptError> {
    use base64::Engine as _;
    let ak = wardbox_report::AkPublic::from_pem(ak_pem).map_err(|e| ReceiptError::BadKey(e.to_string()))?;
    let body: String = ak.to_pem().lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| ReceiptError::BadKey(e.to_string()))?;
    let point = der.get(der.len().saturating_sub(65)..).unwrap_or_default().to_vec();
    Ok((point, ak.fingerprint()))
}

/// Verifies a receipt document against the box's attestation key (`wardbox report export-ak`).
/// Pure computation, no TPM: runs on any machine. Checks, in order: the receipt's bytes against
/// its digest; the quote's qualifying data against that digest; the quote's ECDSA P-256 signature
/// by the key; the PCR values beside the quote against the quoted PCR digest.
pub fn verify(document: &[u8], ak_pem: &str) -> Result<VerifiedReceipt, ReceiptError> {
    use sha2::Digest as _;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::structures::{Attest, AttestInfo, Signature};
    use tss_esapi::traits::UnMarshall;

    let (point, fingerprint) = ak_point(ak_pem)?;
    let doc: serde_json::Value = serde_json::from_slice(document).map_err(|e| ReceiptError::NotAReceipt(e.to_string()))?;
    let text = doc["receipt"].as_str().ok_or_else(|| ReceiptError::NotAReceipt("it has no \"receipt\" string".into()))?;
    let claimed = doc["digest"].as_str().ok_or_else(|| ReceiptError::NotAReceipt("it has no \"digest\"".into()))?;
    let digest: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
    let actual = hex::encode(digest);
    if claimed != format!("sha256:{actual}") {
        return Err(ReceiptError::Edited { claimed: claimed.to_owned(), actual });
    }
    let receipt: serde_json::Value = serde_json::from_str(text).map_err(|e| ReceiptError::NotAReceipt(format!("the receipt does not parse: {e}")))?;
    let quote = &doc["quote"];
    if quote.is_null() {
        return Err(ReceiptError::NotSigned);
    }
    let field = |name: &str| quote[name].as_str().ok_or_else(|| ReceiptError::BadQuote(format!("it has no {name}")));
    if field("digest")? != claimed {
        return Err(ReceiptError::QuoteForOtherContent { quoted: field("digest")?.to_owned(), actual });
    }
    let attest_bytes = lower_hex("the attestation", field("attest")?)?;
    let attest = Attest::unmarshall(&attest_bytes).map_err(|e| ReceiptError::BadQuote(format!("the attestation does not parse: {e}")))?;
    if attest.extra_data().value() != digest.as_slice() {
        return Err(ReceiptError::QuoteForOtherContent { quoted: hex::encode(attest.extra_data().value()), actual });
    }
    // The signature, checked before anything in the attestation is believed.
    let sig_bytes = lower_hex("the signature", field("signature")?)?;
    let signature = Signature::unmarshall(&sig_bytes).map_err(|e| ReceiptError::BadQuote(format!("the signature does not parse: {e}")))?;
    let Signature::EcDsa(ecc) = signature else {
        return Err(ReceiptError::BadQuote("the signature is not ECDSA".into()));
    };
    if ecc.hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(ReceiptError::BadQuote("the signature does not use SHA-256".into()));
    }
    let (r, s) = (ecc.signature_r().value(), ecc.signature_s().value());
    if r.len() > 32 || s.len() > 32 {
        return Err(ReceiptError::BadQuote("the signature's numbers are too long for P-256".into()));
    }
    let mut fixed = [0u8; 64];
    fixed[32 - r.len()..32].copy_from_slice(r);
    fixed[64 - s.len()..].copy_from_slice(s);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(&attest_bytes, &fixed)
        .map_err(|_| ReceiptError::WrongSigner { fingerprint })?;
    // The PCR values written beside the quote must be the ones it covers.
    let AttestInfo::Quote { info } = attest.attested() else {
        return Err(ReceiptError::BadQuote("the attestation is not a quote".into()));
    };
    let altered = ReceiptError::PcrValuesAltered;
    let selections = info.pcr_selection().get_selections();
    let [selection] = selections else {
        return Err(altered(format!("the quote covers {} PCR banks, expected one", selections.len())));
    };
    if selection.hashing_algorithm() != HashingAlgorithm::Sha256 || quote["pcr_bank"] != "sha256" {
        return Err(altered("the quoted bank is not SHA-256".into()));
    }
    let mut quoted: Vec<u8> = selection.selected().iter().map(|s| u32::from(*s).trailing_zeros() as u8).collect();
    quoted.sort_unstable();
    let listed: Vec<(u8, String)> = quote["pcrs"]
        .as_array()
        .ok_or_else(|| altered("no PCR list".into()))?
        .iter()
        .map(|p| {
            let index = p["index"].as_u64().and_then(|i| u8::try_from(i).ok()).ok_or_else(|| altered(format!("a PCR entry without an index: {p}")))?;
            let value = p["value"].as_str().ok_or_else(|| altered(format!("PCR {index} has no value")))?.to_owned();
            Ok((index, value))
        })
        .collect::<Result<_, ReceiptError>>()?;
    let indices: Vec<u8> = listed.iter().map(|(i, _)| *i).collect();
    if indices != quoted {
        return Err(altered(format!("the receipt lists PCRs {indices:?}, the quote covers {quoted:?}")));
    }
    let mut hasher = sha2::Sha256::new();
    for (index, value) in &listed {
        hasher.update(lower_hex(&format!("PCR {index}"), value)?);
    }
    if hasher.finalize().as_slice() != info.pcr_digest().value() {
        return Err(altered("their digest differs from the quoted PCR digest".into()));
    }
    Ok(VerifiedReceipt { receipt, digest: claimed.to_owned(), pcrs: listed, tpm_reset_count: attest.clock_info().reset_count() })
}
