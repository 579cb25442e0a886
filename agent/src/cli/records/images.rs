//! Images in `wardbox records import`: DICOM files and photos filed under the import's patient
//! through the same steps as the upload on the patient's page (`web::images::file_image`):
//! de-identified, a DICOM header's patient compared with the record's and the file refused when
//! it names another patient or nobody the record can be compared with, filed in the same table
//! and audited with the same `upload_image` / `upload_image_refused` records. File names are
//! printed here, on the operator's console, never stored or audited.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::json;
use wardbox_rag::index;

use super::super::{CliError, cli_actor};
use crate::store::Store;
use crate::web::clinical::RecordIdentity;
use crate::web::images::{self, ImageResult, UploadedImage};

/// What the images of an import came to (counts only: the summary line and audit record).
#[derive(Debug, Default)]
pub(super) struct ImageImport {
    pub filed: usize,
    pub already: usize,
    pub refused: usize,
    removed: usize,
    emptied_or_replaced: usize,
    uids_remapped: usize,
    dates_shifted: usize,
}

impl ImageImport {
    pub fn any(&self) -> bool {
        self.filed + self.already + self.refused > 0
    }

    /// For the import's summary audit record.
    pub fn audit(&self) -> serde_json::Value {
        json!({ "filed": self.filed, "already_in_record": self.already, "refused": self.refused,
                "deidentified": { "removed": self.removed, "emptied_or_replaced": self.emptied_or_replaced,
                                  "uids_remapped": self.uids_remapped, "dates_shifted": self.dates_shifted } })
    }

    pub fn summary(&self) -> String {
        format!("{} images filed, {} already there, {} refused", self.filed, self.already, self.refused)
    }

    fn add(&mut self, i: &UploadedImage) {
        self.filed += 1;
        self.removed += i.attributes_removed;
        self.emptied_or_replaced += i.attributes_emptied_or_replaced;
        self.uids_remapped += i.uids_remapped;
        self.dates_shifted += i.dates_shifted;
    }
}

/// Files `files` (positions `first + 1 ..` of `total` on the console) under the patient with
/// the record id `patient`; `record` writes an audit record. A file refused is reported and
/// skipped; a store failure ends the import.
pub(super) fn import(
    store: &Store,
    record: &mut dyn FnMut(serde_json::Value) -> Result<(), CliError>,
    files: &[PathBuf],
    patient: Option<&str>,
    first: usize,
    total: usize,
) -> Result<ImageImport, CliError> {
    let mut out = ImageImport::default();
    if files.is_empty() {
        return Ok(out);
    }
    let target = match patient {
        Some(record_id) => Some(target(store.conn(), record_id).map_err(|e| index_failed(&e))?),
        None => None,
    };
    let actor = cli_actor();
    for (i, file) in files.iter().enumerate() {
        let at = format!("[{}/{total}]", first + i + 1);
        let Some((owner, identity)) = &target else {
            out.refused += 1;
            eprintln!(
                "{at} SKIPPED {}: an image is filed under one patient; name the patient with --patient (a DICOM header is checked against that patient's record)",
                file.display()
            );
            continue;
        };
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                out.refused += 1;
                eprintln!("{at} SKIPPED {}: cannot read it: {e}", file.display());
                continue;
            }
        };
        let now = jiff::Timestamp::now().as_second();
        let outcome = images::file_image(store.conn(), owner, identity, &bytes, first + i + 1, &actor, now).map_err(|e| store_failed(&e, file))?;
        record(outcome.audit)?;
        match outcome.result {
            ImageResult::Filed(image) if image.already_in_record => {
                out.already += 1;
                println!("{at} already filed {} (image {})", file.display(), image.image_id);
            }
            ImageResult::Filed(image) => {
                println!("{at} filed {} as image {} ({})", file.display(), image.image_id, filed_summary(&image));
                out.add(&image);
            }
            ImageResult::Refused { message, .. } => {
                out.refused += 1;
                eprintln!("{at} SKIPPED {}: {message}", file.display());
            }
        }
    }
    Ok(out)
}

/// The patient the images go under (the store's patient id, as the patient's page has it) and
/// how the record identifies them. The import has already refused a record id that is neither
/// in the index nor declared new nor introduced by a Bundle; a patient declared new with images
/// alone is made here. The record id the patient was found by is one of their ids, so a
/// DICOM header's patient ID is compared with it too.
fn target(conn: &Connection, record_id: &str) -> Result<(String, RecordIdentity), index::IndexError> {
    let owner = match index::find_patient(conn, record_id)? {
        Some(owner) => owner,
        None => index::patient_owner(conn, record_id)?.0,
    };
    let mut identity = crate::clinical::record_identity_of(conn, owner)?.unwrap_or_default();
    with_record_id(&mut identity, record_id);
    Ok((owner.to_string(), identity))
}

/// Adds the record id the operator named, unless the record has it already (pure).
fn with_record_id(identity: &mut RecordIdentity, record_id: &str) {
    let record_id = record_id.trim();
    if !identity.record_ids.iter().any(|r| r.trim().eq_ignore_ascii_case(record_id)) {
        identity.record_ids.push(record_id.to_owned());
    }
}

/// "DICOM CT; 12 attributes removed, …" for the console; counts only.
fn filed_summary(i: &UploadedImage) -> String {
    let mut s = if i.kind == "dicom" {
        format!(
            "DICOM{}; {} attributes removed, {} emptied or replaced, {} UIDs remapped, {} dates shifted",
            i.modality.as_deref().map(|m| format!(" {m}")).unwrap_or_default(),
            i.attributes_removed,
            i.attributes_emptied_or_replaced,
            i.uids_remapped,
            i.dates_shifted
        )
    } else {
        "photo; re-encoded from its pixels, its metadata dropped".to_owned()
    };
    if let Some(why) = &i.burned_in {
        s.push_str(&format!("; flagged: text may be burned into its pixels ({why})"));
    }
    s
}

fn index_failed(e: &index::IndexError) -> CliError {
    match e {
        index::IndexError::Sqlite(e) if crate::store::is_volume_full(e) => {
            CliError::new("the data volume is full, so no image was filed; free space on the data volume and run the import again")
        }
        e => CliError::new(e.to_string()),
    }
}

fn store_failed(e: &rusqlite::Error, file: &Path) -> CliError {
    if crate::store::is_volume_full(e) {
        CliError::new(format!(
            "the data volume is full, so {} and the images after it were not filed; free space on the data volume and run the import again",
            file.display()
        ))
    } else {
        CliError::new(format!("the image store failed at {}: {e}", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_id_named_is_compared_too_once() {
        let mut identity = RecordIdentity { record_ids: vec!["MRN-0001".into()], name: None, birth_date: None };
        with_record_id(&mut identity, " mrn-0001 ");
        assert_eq!(identity.record_ids, ["MRN-0001"]);
        with_record_id(&mut identity, "PID-7734-A");
        assert_eq!(identity.record_ids, ["MRN-0001", "PID-7734-A"]);
    }
}
