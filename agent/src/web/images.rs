//! Medical images on a patient's page: a DICOM file or a photo (PNG, JPEG) uploaded by the care
//! team is de-identified by `wardbox-images` before anything is stored, filed under the patient
//! in the store (SQLCipher: encrypted like every document), listed on the patient's page and
//! shown there as a rendered image.
//!
//! What is kept: for DICOM, the de-identified Part 10 file and its first frame rendered to a
//! PNG without metadata; for a photo, the photo re-encoded from its pixels alone. Never the
//! uploaded bytes, never the file name (names of files often carry the patient's name).
//!
//! A DICOM header that names another patient than the record is refused; so is one that names
//! nobody the record can be compared with (nothing proves whose study it is). Images whose
//! pixels may carry text (burned-in annotation) are filed with a warning shown on the page.
//!
//! [`prepare`] is the decision, pure; the rest reads and writes the store and answers HTTP.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use wardbox_images::deid::{self, BurnedInText, DeidCounts, DeidKey, DeidParams, ExpectedPatient, IdentityCheck};
use wardbox_images::dicom::{self, DEFAULT_MAX_DECODED_BYTES};
use wardbox_images::photo::{self, PhotoError, PhotoFormat, PhotoLimits};

use super::clinical::RecordIdentity;
use super::pages::{clinical_error, ui_of, viewer};
use super::{AppState, Authed, WebError};
use crate::audit::EventKind;

pub const MIGRATION_NAME: &str = "medical images";
pub const MIGRATION_SQL: &str = "
    -- The site's key for remapping DICOM UIDs (HMAC): one per box, made on first use.
    CREATE TABLE image_site_key (
        id  INTEGER PRIMARY KEY CHECK (id = 1),
        key BLOB NOT NULL CHECK (length(key) = 32)
    ) STRICT;
    -- Each patient's date offset in days (DICOM dates are shifted by it), made on first use.
    CREATE TABLE image_patients (
        patient          TEXT PRIMARY KEY,      -- the clinical back end's patient id
        date_offset_days INTEGER NOT NULL
    ) STRICT;
    -- De-identified images. No file name and no uploaded bytes are kept.
    CREATE TABLE images (
        id            INTEGER PRIMARY KEY,
        patient       TEXT NOT NULL,
        upload_sha256 TEXT NOT NULL,            -- of the uploaded bytes: the same file is filed once
        kind          TEXT NOT NULL CHECK (kind IN ('dicom', 'photo')),
        dicom         BLOB,                     -- the de-identified Part 10 file (DICOM only)
        render        BLOB NOT NULL,            -- what the page shows: PNG, or the cleaned photo
        render_type   TEXT NOT NULL CHECK (render_type IN ('image/png', 'image/jpeg')),
        width         INTEGER NOT NULL,
        height        INTEGER NOT NULL,
        modality      TEXT,                     -- DICOM modality code (CT, MR, US, ...)
        burned_in     TEXT,                     -- why the pixels may carry text; NULL when not indicated
        uploaded_by   TEXT NOT NULL,
        uploaded_at   INTEGER NOT NULL,         -- unix seconds
        UNIQUE (patient, upload_sha256)
    ) STRICT;
";

/// The range of per-patient date offsets, in days into the past (up to ten years).
const MAX_DATE_OFFSET_DAYS: i32 = 3650;

/// An image ready to file: what is stored and what the audit record and the uploader learn.
#[derive(Debug)]
pub struct Prepared {
    pub kind: &'static str,
    pub dicom: Option<Vec<u8>>,
    pub render: Vec<u8>,
    pub render_type: &'static str,
    pub width: u32,
    pub height: u32,
    pub modality: Option<String>,
    pub burned_in: Option<String>,
    pub counts: DeidCounts,
}

/// Why an upload was refused; the message names the problem, never a value from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The header's identity differs from the record's in this field.
    OtherPatient(&'static str),
    /// The header names nobody the record can be compared with.
    NoIdentity,
    /// Not DICOM, PNG or JPEG, or a bad one (the reason, from `wardbox-images`).
    NotAnImage(String),
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::OtherPatient(field) => format!(
                "This DICOM file names another patient (its {field} differs from this record's). It was not added; upload it to the right patient."
            ),
            Refusal::NoIdentity => "This DICOM file names no patient that can be compared with this record (no matching patient ID, name or birth date in its header). It was not added.".into(),
            Refusal::NotAnImage(why) => format!("This file cannot be added as an image: {why}. Use a DICOM file (.dcm), a PNG or a JPEG."),
        }
    }

    /// A short code for the audit record.
    fn code(&self) -> &'static str {
        match self {
            Refusal::OtherPatient(_) => "other_patient",
            Refusal::NoIdentity => "no_identity",
            Refusal::NotAnImage(_) => "not_an_image",
        }
    }
}

/// Whether the bytes are a DICOM Part 10 file (the "DICM" marker after the preamble).
fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM".as_slice())
}

/// De-identifies an uploaded image for the patient `record` describes. Pure.
pub fn prepare(bytes: &[u8], record: &RecordIdentity, key: &DeidKey, patient_key: &str, date_offset_days: i32) -> Result<Prepared, Refusal> {
    if !is_dicom(bytes) {
        return prepare_photo(bytes);
    }
    let params = DeidParams { key, patient_key, date_offset_days };
    let out = deid::deidentify(bytes, &params).map_err(|e| Refusal::NotAnImage(e.to_string()))?;
    match identity_check(&out.identity, record) {
        IdentityCheck::Matches => {}
        IdentityCheck::Mismatch(field) => return Err(Refusal::OtherPatient(field)),
        IdentityCheck::NothingToCompare => return Err(Refusal::NoIdentity),
    }
    let object = dicom::read_part10(&out.file).map_err(|e| Refusal::NotAnImage(e.to_string()))?;
    let rendered = dicom::render_first_frame(&object, DEFAULT_MAX_DECODED_BYTES).map_err(|e| Refusal::NotAnImage(e.to_string()))?;
    Ok(Prepared {
        kind: "dicom",
        dicom: Some(out.file),
        render: rendered.png,
        render_type: "image/png",
        width: rendered.width,
        height: rendered.height,
        modality: out.modality,
        burned_in: burned_in_reason(&out.burned_in),
        counts: out.counts,
    })
}

fn prepare_photo(bytes: &[u8]) -> Result<Prepared, Refusal> {
    let clean = photo::clean_photo(bytes, &PhotoLimits::default()).map_err(|e| match e {
        PhotoError::UnsupportedFormat => Refusal::NotAnImage("it is not a DICOM file, a PNG or a JPEG".into()),
        e => Refusal::NotAnImage(e.to_string()),
    })?;
    Ok(Prepared {
        kind: "photo",
        dicom: None,
        render_type: match clean.format {
            PhotoFormat::Png => "image/png",
            PhotoFormat::Jpeg => "image/jpeg",
        },
        render: clean.bytes,
        width: clean.width,
        height: clean.height,
        modality: None,
        burned_in: None,
        counts: DeidCounts::default(),
    })
}

/// The header against the record. A record may know a patient under several ids: the one the
/// header names is compared if the record has it, otherwise the first (which then differs).
fn identity_check(header: &deid::PatientIdentity, record: &RecordIdentity) -> IdentityCheck {
    let id = match header.id.as_deref() {
        Some(h) => record.record_ids.iter().find(|r| r.trim().eq_ignore_ascii_case(h.trim())).or(record.record_ids.first()),
        None => record.record_ids.first(),
    };
    let expected = ExpectedPatient { id: id.map(String::as_str), name: record.name.as_deref(), birth_date: record.birth_date.as_deref() };
    deid::check_identity(header, &expected)
}

fn burned_in_reason(b: &BurnedInText) -> Option<String> {
    match b {
        BurnedInText::NotIndicated => None,
        BurnedInText::AnnotationYes => Some("the file says its pixels carry annotation (BurnedInAnnotation YES)".into()),
        BurnedInText::Modality(code, what) => Some(format!("{what} ({code}) images often carry text in their pixels")),
        BurnedInText::SopClass(_, what) => Some(format!("{what} images often carry text in their pixels")),
    }
}

// --- The store -------------------------------------------------------------------------------

/// The site key, made on first use.
fn site_key(conn: &Connection) -> rusqlite::Result<DeidKey> {
    let existing: Option<Vec<u8>> = conn.query_row("SELECT key FROM image_site_key WHERE id = 1", [], |r| r.get(0)).optional()?;
    let bytes = match existing {
        Some(k) => zeroize::Zeroizing::new(k),
        None => {
            let mut k = zeroize::Zeroizing::new(vec![0u8; 32]);
            rand::fill(&mut k[..]);
            conn.execute("INSERT INTO image_site_key (id, key) VALUES (1, ?1)", params![&k[..]])?;
            k
        }
    };
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes[..32]);
    Ok(DeidKey::from_bytes(*key))
}

/// The patient's date offset (negative days), made on first use.
fn date_offset(conn: &Connection, patient: &str) -> rusqlite::Result<i32> {
    conn.execute(
        "INSERT OR IGNORE INTO image_patients (patient, date_offset_days) VALUES (?1, ?2)",
        params![patient, -rand::random_range(1..=MAX_DATE_OFFSET_DAYS)],
    )?;
    conn.query_row("SELECT date_offset_days FROM image_patients WHERE patient = ?1", [patient], |r| r.get(0))
}

/// An image as listed on the patient's page.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub id: i64,
    pub kind: String,
    pub modality: Option<String>,
    pub width: u32,
    pub height: u32,
    pub burned_in: Option<String>,
    /// UTC, to the minute.
    pub uploaded_at: String,
    pub uploaded_by: String,
}

/// The patient's images, newest first.
pub fn list(conn: &Connection, patient: &str) -> rusqlite::Result<Vec<ImageSummary>> {
    let mut stmt = conn.prepare(
        "SELECT id, kind, modality, width, height, burned_in, uploaded_at, uploaded_by FROM images WHERE patient = ?1 ORDER BY id DESC",
    )?;
    stmt.query_map([patient], |r| {
        let at: i64 = r.get(6)?;
        Ok(ImageSummary {
            id: r.get(0)?,
            kind: r.get(1)?,
            modality: r.get(2)?,
            width: r.get(3)?,
            height: r.get(4)?,
            burned_in: r.get(5)?,
            uploaded_at: jiff::Timestamp::from_second(at).map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default(),
            uploaded_by: r.get(7)?,
        })
    })?
    .collect()
}

/// The rendered image and its type, if the image is this patient's.
fn render_of(conn: &Connection, patient: &str, image: i64) -> rusqlite::Result<Option<(Vec<u8>, String)>> {
    conn.query_row("SELECT render, render_type FROM images WHERE id = ?1 AND patient = ?2", params![image, patient], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

// --- HTTP ------------------------------------------------------------------------------------

/// What the uploader is told (and the page shows).
#[derive(Debug, Serialize)]
pub struct UploadedImage {
    pub image_id: i64,
    pub already_in_record: bool,
    pub kind: &'static str,
    pub modality: Option<String>,
    pub burned_in: Option<String>,
    pub attributes_removed: usize,
    pub attributes_emptied_or_replaced: usize,
    pub uids_remapped: usize,
    pub dates_shifted: usize,
}

/// The form's first field's bytes (the file); its name and declared type are not trusted or
/// kept: the bytes say what the file is.
async fn read_file(form: &mut Multipart) -> Result<Bytes, WebError> {
    let field = form
        .next_field()
        .await
        .map_err(|e| WebError::BadRequest(format!("the upload is not readable: {}", e.body_text())))?
        .ok_or_else(|| WebError::BadRequest("choose an image to upload".into()))?;
    field.bytes().await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            WebError::TooLarge { limit: super::MAX_UPLOAD_BYTES }
        } else {
            WebError::BadRequest(format!("the upload is not readable: {}", e.body_text()))
        }
    })
}

fn store_error(e: rusqlite::Error) -> WebError {
    WebError::Internal(format!("the image store failed: {e}"))
}

/// `POST /patients/{id}/images`: de-identify, check the identity, file, audit.
pub(super) async fn upload(State(state): State<AppState>, a: Authed, Path(id): Path<String>, mut form: Multipart) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let bytes = read_file(&mut form).await?;
    let (v, pid) = (viewer(&a), id.clone());
    // Also the access check: a patient this user may not see is not found.
    let record = ui.clinical(move |c| c.patient_identity(&v, &pid)).await.map_err(clinical_error)?;
    let upload_sha256 = hex::encode(Sha256::digest(&bytes));
    let upload_bytes = bytes.len();
    let pid = id.clone();
    let (key, offset) = ui.with_store(move |s| Ok((site_key(s.conn()).map_err(store_error)?, date_offset(s.conn(), &pid).map_err(store_error)?))).await?;
    let pid = id.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&bytes, &record, &key, &pid, offset))
        .await
        .map_err(|e| WebError::Internal(format!("the image task failed: {e}")))?;
    let prepared = match prepared {
        Ok(p) => p,
        Err(refusal) => {
            ui.audit(
                EventKind::Access,
                &a.session.username,
                json!({ "who": a.who(), "action": "upload_image_refused", "patient": id, "reason": refusal.code(),
                        "sha256": upload_sha256, "bytes": upload_bytes }),
            )
            .await?;
            return Err(WebError::BadRequest(refusal.message()));
        }
    };
    let render_sha256 = hex::encode(Sha256::digest(&prepared.render));
    let dicom_digest = prepared.dicom.as_ref().map(|d| json!({ "sha256": hex::encode(Sha256::digest(d)), "bytes": d.len() }));
    let (pid, who, sha) = (id.clone(), a.session.username.clone(), upload_sha256.clone());
    let now = ui.clock.now();
    let (image_id, already, p) = ui
        .with_store(move |s| {
            let conn = s.conn();
            let existing: Option<i64> = conn
                .query_row("SELECT id FROM images WHERE patient = ?1 AND upload_sha256 = ?2", params![pid, sha], |r| r.get(0))
                .optional()
                .map_err(store_error)?;
            if let Some(existing) = existing {
                return Ok((existing, true, prepared));
            }
            conn.execute(
                "INSERT INTO images (patient, upload_sha256, kind, dicom, render, render_type, width, height, modality, burned_in, uploaded_by, uploaded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![pid, sha, prepared.kind, prepared.dicom, prepared.render, prepared.render_type, prepared.width, prepared.height,
                        prepared.modality, prepared.burned_in, who, now],
            )
            .map_err(store_error)?;
            Ok((conn.last_insert_rowid(), false, prepared))
        })
        .await?;
    let c = p.counts;
    ui.audit(
        EventKind::Access,
        &a.session.username,
        json!({ "who": a.who(), "action": "upload_image", "patient": id, "image": image_id, "already_in_record": already, "kind": p.kind,
                "sha256": upload_sha256, "bytes": upload_bytes, "dicom": dicom_digest,
                "render": { "sha256": render_sha256, "bytes": p.render.len(), "type": p.render_type, "width": p.width, "height": p.height },
                "modality": p.modality, "burned_in": p.burned_in.is_some(),
                "deidentified": { "removed": c.removed, "emptied": c.emptied, "dummied": c.dummied, "uids_remapped": c.uids_remapped, "dates_shifted": c.dates_shifted } }),
    )
    .await?;
    Ok(Json(UploadedImage {
        image_id,
        already_in_record: already,
        kind: p.kind,
        modality: p.modality,
        burned_in: p.burned_in,
        attributes_removed: c.removed,
        attributes_emptied_or_replaced: c.emptied + c.dummied,
        uids_remapped: c.uids_remapped,
        dates_shifted: c.dates_shifted,
    })
    .into_response())
}

/// `GET /patients/{id}/images/{image}`: the rendered image, to users who may see the patient,
/// never cached.
pub(super) async fn show(State(state): State<AppState>, a: Authed, Path((id, image)): Path<(String, String)>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let (v, pid) = (viewer(&a), id.clone());
    ui.clinical(move |c| c.patient(&v, &pid)).await.map_err(clinical_error)?;
    let image: i64 = image.parse().map_err(|_| WebError::NotFound)?;
    let (bytes, content_type) = ui.with_store(move |s| render_of(s.conn(), &id, image).map_err(store_error)).await?.ok_or(WebError::NotFound)?;
    Ok((
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store".to_string()), (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string())],
        bytes,
    )
        .into_response())
}
