//! The JSON document: the report, the digests of its two other renderings, and the integrity
//! block (the TPM quote). This file is the signed record of a report.
//!
//! Shape (schema `schema/report-v1.schema.json`, format string [`FORMAT`]), written compact with
//! the fields in this order and nothing else:
//!
//! ```text
//! {"format":"wardbox-report/1","report":{…},"renderings":{"html_sha256":"…","oscal_sha256":"…"},"integrity":{…}|null}
//! ```
//!
//! The report's digest is SHA-256 over the bytes of the document up to and excluding
//! `,"integrity"`, closed with `}`: the "signed part", `{"format":…,"report":…,"renderings":…}`.
//! That digest is the TPM quote's qualifying data. Reading a document rebuilds the file from
//! its parsed parts and refuses it unless the bytes are identical, so no byte can change
//! anywhere (even whitespace) without the document being refused.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::report::Report;

/// The document format this crate writes and reads.
pub const FORMAT: &str = "wardbox-report/1";

/// The JSON Schema of the document (draft 2020-12).
pub const SCHEMA: &str = include_str!("../schema/report-v1.schema.json");

/// SHA-256 digests of the HTML and OSCAL renderings written beside the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renderings {
    pub html_sha256: String,
    pub oscal_sha256: String,
}

/// One PCR value at quote time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrValue {
    pub index: u8,
    /// Hex.
    pub value: String,
}

/// The TPM quote over the report's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integrity {
    /// "sha256:" and the hex digest of the signed part (the quote's qualifying data).
    pub digest: String,
    /// The PCR bank quoted, "sha256". Every hex field is lower-case: verification refuses
    /// upper-case hex, so that no byte of the file can change without the report being refused.
    pub pcr_bank: String,
    /// The quoted PCRs and their values; their digest is in the quote.
    pub pcrs: Vec<PcrValue>,
    /// The TPMS_ATTEST structure the TPM produced, hex (what the signature covers).
    pub attest: String,
    /// The TPMT_SIGNATURE over `attest` by the attestation key, hex.
    pub signature: String,
}

/// The three files of one report.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The signed record (`report.json`).
    pub json: Vec<u8>,
    pub html: Vec<u8>,
    /// `report.oscal.json`.
    pub oscal: Vec<u8>,
    /// The digest of the signed part (the quote's qualifying data).
    pub digest: [u8; 32],
}

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not a report document at all.
    #[error("this is not a Wardbox report document: {0}")]
    NotADocument(String),
    /// A format this agent does not read.
    #[error("the report format {found:?} is not known (this agent reads {FORMAT:?})")]
    UnknownFormat { found: String },
    /// The bytes differ from what generation writes for the same content: edited.
    #[error("the document's bytes are not the ones generation wrote (it was reformatted or edited)")]
    NotCanonical,
    /// Serialising the report failed (cannot happen for the report's own types).
    #[error("the report could not be serialised: {0}")]
    Serialise(#[from] serde_json::Error),
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn signed_part(report: &str, renderings: &str) -> String {
    format!("{{\"format\":\"{FORMAT}\",\"report\":{report},\"renderings\":{renderings}}}")
}

fn whole(signed: &str, integrity: &str) -> String {
    // The signed part without its closing brace, then the integrity block.
    format!("{},\"integrity\":{integrity}}}", &signed[..signed.len() - 1])
}

/// Render the three outputs of one report; `sign` receives the digest of the signed part and
/// returns the integrity block (or `None` for an unsigned report, which `verify` refuses).
pub fn assemble<E: From<DocumentError>>(
    report: &Report,
    sign: impl FnOnce(&[u8; 32]) -> Result<Option<Integrity>, E>,
) -> Result<Outputs, E> {
    let html = crate::html::render(report).into_bytes();
    let oscal = serde_json::to_vec_pretty(&crate::oscal::render(report)).map_err(DocumentError::from)?;
    let renderings = Renderings { html_sha256: sha256_hex(&html), oscal_sha256: sha256_hex(&oscal) };
    let report_json = serde_json::to_string(report).map_err(DocumentError::from)?;
    let renderings_json = serde_json::to_string(&renderings).map_err(DocumentError::from)?;
    let signed = signed_part(&report_json, &renderings_json);
    let digest: [u8; 32] = Sha256::digest(signed.as_bytes()).into();
    let integrity = sign(&digest)?;
    let integrity_json = serde_json::to_string(&integrity).map_err(DocumentError::from)?;
    Ok(Outputs { json: whole(&signed, &integrity_json).into_bytes(), html, oscal, digest })
}

/// A parsed document, checked to be byte-for-byte what generation writes.
#[derive(Debug, Clone)]
pub struct Document {
    pub report: Report,
    pub renderings: Renderings,
    pub integrity: Option<Integrity>,
    /// The digest of the signed part, recomputed from the bytes.
    pub digest: [u8; 32],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    format: String,
    #[serde(borrow)]
    report: &'a RawValue,
    #[serde(borrow)]
    renderings: &'a RawValue,
    #[serde(borrow)]
    integrity: &'a RawValue,
}

/// Read a document, refusing anything that is not exactly what generation writes.
pub fn read(bytes: &[u8]) -> Result<Document, DocumentError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DocumentError::NotADocument(format!("not UTF-8: {e}")))?;
    let env: Envelope = serde_json::from_str(text).map_err(|e| DocumentError::NotADocument(e.to_string()))?;
    if env.format != FORMAT {
        return Err(DocumentError::UnknownFormat { found: env.format });
    }
    let signed = signed_part(env.report.get(), env.renderings.get());
    if whole(&signed, env.integrity.get()).as_bytes() != bytes {
        return Err(DocumentError::NotCanonical);
    }
    let report: Report =
        serde_json::from_str(env.report.get()).map_err(|e| DocumentError::NotADocument(format!("the report part: {e}")))?;
    let renderings: Renderings = serde_json::from_str(env.renderings.get())
        .map_err(|e| DocumentError::NotADocument(format!("the renderings part: {e}")))?;
    let integrity: Option<Integrity> = serde_json::from_str(env.integrity.get())
        .map_err(|e| DocumentError::NotADocument(format!("the integrity part: {e}")))?;
    // The parts must also be what this agent writes for them (no extra spaces, field order).
    if serde_json::to_string(&report)? != env.report.get()
        || serde_json::to_string(&renderings)? != env.renderings.get()
        || serde_json::to_string(&integrity)? != env.integrity.get()
    {
        return Err(DocumentError::NotCanonical);
    }
    Ok(Document { report, renderings, integrity, digest: Sha256::digest(signed.as_bytes()).into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{evaluate, sample};

    fn now() -> jiff::Timestamp {
        "2026-11-29T10:00:00Z".parse().expect("time")
    }

    fn unsigned() -> Outputs {
        let report = evaluate(&sample::healthy(now()), now());
        assemble::<DocumentError>(&report, |_| Ok(None)).expect("assemble")
    }

    #[test]
    fn a_document_reads_back_with_the_digest_it_was_made_with() {
        let out = unsigned();
        let doc = read(&out.json).expect("read");
        assert_eq!(doc.digest, out.digest);
        assert_eq!(doc.renderings.html_sha256, sha256_hex(&out.html));
        assert_eq!(doc.renderings.oscal_sha256, sha256_hex(&out.oscal));
        assert_eq!(doc.report, evaluate(&sample::healthy(now()), now()));
    }

    #[test]
    fn the_same_facts_give_identical_files() {
        let (a, b) = (unsigned(), unsigned());
        assert_eq!(a.json, b.json);
        assert_eq!(a.html, b.html);
        assert_eq!(a.oscal, b.oscal);
    }

    #[test]
    fn reformatting_is_refused() {
        let out = unsigned();
        let value: serde_json::Value = serde_json::from_slice(&out.json).expect("json");
        let pretty = serde_json::to_vec_pretty(&value).expect("pretty");
        assert!(matches!(read(&pretty), Err(DocumentError::NotCanonical | DocumentError::NotADocument(_))));
        let mut spaced = out.json.clone();
        spaced.insert(1, b' ');
        assert!(matches!(read(&spaced), Err(DocumentError::NotCanonical)));
    }

    #[test]
    fn another_format_is_named() {
        let out = unsigned();
        let text = String::from_utf8(out.json).expect("utf8").replacen(FORMAT, "wardbox-report/9", 1);
        match read(text.as_bytes()) {
            Err(DocumentError::UnknownFormat { found }) => assert_eq!(found, "wardbox-report/9"),
            other => panic!("expected UnknownFormat, got {other:?}"),
        }
    }
}
