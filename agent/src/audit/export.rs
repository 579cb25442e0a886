//! Monthly export of the audit log to compressed JSON lines with a checksum file, for
//! retention outside the box. Export copies; nothing is deleted.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AuditRecord, SELECT_RECORDS};
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub file: PathBuf,
    pub checksum_file: PathBuf,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub sha256: String,
}

/// Export the records of `month` (`YYYY-MM`, UTC) to `audit-YYYY-MM.jsonl.gz` in `out_dir`
/// with `audit-YYYY-MM.jsonl.gz.sha256` beside it (in `sha256sum -c` format). Each line is a
/// whole record, hashes included, so the segment can be re-verified away from the box.
pub fn export_month(store: &Store, month: &str, out_dir: &Path) -> Result<ExportSummary, String> {
    validate_month(month)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let name = format!("audit-{month}.jsonl.gz");
    let file = out_dir.join(&name);
    let checksum_file = out_dir.join(format!("{name}.sha256"));
    if file.exists() {
        return Err(format!("{} already exists; refusing to overwrite an export", file.display()));
    }
    // Write to a temporary name and rename, so a half-written export never looks complete.
    let partial = out_dir.join(format!(".{name}.partial"));
    let out = std::fs::File::create(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let mut gz = GzEncoder::new(out, Compression::default());
    let mut stmt = store
        .conn()
        .prepare(&format!("{SELECT_RECORDS} WHERE substr(ts, 1, 7) = ?1 ORDER BY seq"))
        .map_err(|e| e.to_string())?;
    let mut rows = stmt.query([month]).map_err(|e| e.to_string())?;
    let (mut records, mut first_seq, mut last_seq) = (0u64, None, None);
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let record = AuditRecord::from_row(row).map_err(|e| e.to_string())?;
        first_seq.get_or_insert(record.seq);
        last_seq = Some(record.seq);
        records += 1;
        serde_json::to_writer(&mut gz, &record).map_err(|e| e.to_string())?;
        gz.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    let out = gz.finish().map_err(|e| e.to_string())?;
    out.sync_all().map_err(|e| e.to_string())?;
    drop(out);
    let sha256 = hex::encode(Sha256::digest(std::fs::read(&partial).map_err(|e| e.to_string())?));
    std::fs::write(&checksum_file, format!("{sha256}  {name}\n")).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, &file).map_err(|e| e.to_string())?;
    Ok(ExportSummary { file, checksum_file, records, first_seq, last_seq, sha256 })
}

fn validate_month(month: &str) -> Result<(), String> {
    let ok = month.len() == 7
        && month.as_bytes()[4] == b'-'
        && month[..4].chars().all(|c| c.is_ascii_digit())
        && matches!(month[5..].parse::<u8>(), Ok(1..=12));
    if ok { Ok(()) } else { Err(format!("`{month}` is not a month in the form YYYY-MM")) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn months_are_checked() {
        for good in ["2026-01", "2026-12"] {
            assert!(super::validate_month(good).is_ok(), "{good}");
        }
        for bad in ["2026-13", "2026-00", "26-01", "2026/01", "2026-1", "abcd-01"] {
            assert!(super::validate_month(bad).is_err(), "{bad}");
        }
    }
}
