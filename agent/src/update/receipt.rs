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
