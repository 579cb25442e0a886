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
                "This DICOM file names another patient (its {field} differs from this record's). It was not added; add it to the right patient's record."
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

/// Whether a file's first bytes say it is an image this module takes (DICOM Part 10, PNG or
/// JPEG): the console import sends such files here rather than to the document index.
pub fn looks_like_image(head: &[u8]) -> bool {
    is_dicom(head) || head.starts_with(b"\x89PNG\r\n\x1a\n") || head.starts_with(&[0xFF, 0xD8, 0xFF])
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

/// What de-identifying `patient`'s images takes from the store: the site key and the patient's
/// date offset (each made on first use).
pub fn deid_keys(conn: &Connection, patient: &str) -> rusqlite::Result<(DeidKey, i32)> {
    Ok((site_key(conn)?, date_offset(conn, patient)?))
}

/// The uploaded bytes as the audit record and the store know them: digest and size.
#[derive(Debug, Clone)]
pub struct UploadDigest {
    pub sha256: String,
    pub bytes: usize,
}

impl UploadDigest {
    pub fn of(bytes: &[u8]) -> Self {
        Self { sha256: hex::encode(Sha256::digest(bytes)), bytes: bytes.len() }
    }
}

/// Files a prepared image under `patient`: its id, and whether the same upload was already
/// there (then nothing changes: the same file is filed once).
pub fn insert(conn: &Connection, patient: &str, upload: &UploadDigest, p: &Prepared, uploaded_by: &str, now: i64) -> rusqlite::Result<(i64, bool)> {
    let existing: Option<i64> = conn
        .query_row("SELECT id FROM images WHERE patient = ?1 AND upload_sha256 = ?2", params![patient, upload.sha256], |r| r.get(0))
        .optional()?;
    if let Some(existing) = existing {
        return Ok((existing, true));
    }
    conn.execute(
        "INSERT INTO images (patient, upload_sha256, kind, dicom, render, render_type, width, height, modality, burned_in, uploaded_by, uploaded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![patient, upload.sha256, p.kind, p.dicom, p.render, p.render_type, p.width, p.height, p.modality, p.burned_in, uploaded_by, now],
    )?;
    Ok((conn.last_insert_rowid(), false))
}

/// The detail of the `upload_image` audit record: digests, sizes, the render's type and size,
/// the modality, the burned-in flag and the de-identification counts; never a header value or
/// a file name. The caller adds who did it.
pub fn filed_audit(patient: &str, image_id: i64, already: bool, upload: &UploadDigest, p: &Prepared) -> serde_json::Value {
    let c = &p.counts;
    json!({ "action": "upload_image", "patient": patient, "image": image_id, "already_in_record": already, "kind": p.kind,
            "sha256": upload.sha256, "bytes": upload.bytes,
            "dicom": p.dicom.as_ref().map(|d| json!({ "sha256": hex::encode(Sha256::digest(d)), "bytes": d.len() })),
            "render": { "sha256": hex::encode(Sha256::digest(&p.render)), "bytes": p.render.len(), "type": p.render_type, "width": p.width, "height": p.height },
            "modality": p.modality, "burned_in": p.burned_in.is_some(),
            "deidentified": { "removed": c.removed, "emptied": c.emptied, "dummied": c.dummied, "uids_remapped": c.uids_remapped, "dates_shifted": c.dates_shifted } })
}

/// The detail of the `upload_image_refused` audit record: the reason code and the upload's
/// digest and size. The caller adds who did it.
pub fn refused_audit(patient: &str, refusal: &Refusal, upload: &UploadDigest) -> serde_json::Value {
    json!({ "action": "upload_image_refused", "patient": patient, "reason": refusal.code(), "sha256": upload.sha256, "bytes": upload.bytes })
}

/// One image checked and filed or refused: what its uploader is told, and the audit detail
/// to record (without who).
#[derive(Debug)]
pub struct FileOutcome {
    pub result: ImageResult,
    pub audit: serde_json::Value,
}

/// Checks and files one image for `patient`, whose record says `record`, in one go (keys,
/// [`prepare`], [`insert`]): for the console import, which holds its own store. The web route
/// runs the same steps with de-identification off the store's lock.
pub fn file_image(conn: &Connection, patient: &str, record: &RecordIdentity, bytes: &[u8], position: usize, uploaded_by: &str, now: i64) -> rusqlite::Result<FileOutcome> {
    let (key, offset) = deid_keys(conn, patient)?;
    let upload = UploadDigest::of(bytes);
    match prepare(bytes, record, &key, patient, offset) {
        Ok(p) => {
            let (image_id, already) = insert(conn, patient, &upload, &p, uploaded_by, now)?;
            Ok(FileOutcome { audit: filed_audit(patient, image_id, already, &upload, &p), result: ImageResult::Filed(UploadedImage::new(position, image_id, already, p)) })
        }
        Err(refusal) => Ok(FileOutcome { audit: refused_audit(patient, &refusal, &upload), result: ImageResult::refused(position, &refusal) }),
    }
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

/// What the uploader is told of a filed image (and the page shows).
#[derive(Debug, Serialize)]
pub struct UploadedImage {
    /// The file's position in the upload (1 for the first): the page names the file by it.
    pub file: usize,
    pub image_id: i64,
    pub already_in_record: bool,
    pub kind: &'static str,
    pub modality: Option<String>,
    pub width: u32,
    pub height: u32,
    pub burned_in: Option<String>,
    pub attributes_removed: usize,
    pub attributes_emptied_or_replaced: usize,
    pub uids_remapped: usize,
    pub dates_shifted: usize,
}

impl UploadedImage {
    fn new(file: usize, image_id: i64, already_in_record: bool, p: Prepared) -> Self {
        let c = p.counts;
        Self {
            file,
            image_id,
            already_in_record,
            kind: p.kind,
            modality: p.modality,
            width: p.width,
            height: p.height,
            burned_in: p.burned_in,
            attributes_removed: c.removed,
            attributes_emptied_or_replaced: c.emptied + c.dummied,
            uids_remapped: c.uids_remapped,
            dates_shifted: c.dates_shifted,
        }
    }
}

/// One file of an upload: filed, or refused with the reason.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ImageResult {
    Filed(UploadedImage),
    Refused {
        file: usize,
        /// The audit record's reason code.
        reason: &'static str,
        message: String,
    },
}

impl ImageResult {
    fn refused(file: usize, refusal: &Refusal) -> Self {
        ImageResult::Refused { file, reason: refusal.code(), message: refusal.message() }
    }
}

/// The answer to an upload: every file's outcome, in the order sent.
#[derive(Debug, Serialize)]
pub struct UploadResults {
    pub filed: usize,
    pub refused: usize,
    pub images: Vec<ImageResult>,
}

fn store_error(e: rusqlite::Error) -> WebError {
    WebError::Internal(format!("the image store failed: {e}"))
}

/// `POST /patients/{id}/images`: one file or several (a series), each de-identified, checked
/// against the record and filed or refused on its own, each audited. 200 with the list when at
/// least one was filed; 400 with the list when every one was refused.
pub(super) async fn upload(State(state): State<AppState>, a: Authed, Path(id): Path<String>, mut form: Multipart) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let files = super::upload::read_images(&mut form).await?;
    let (v, pid) = (viewer(&a), id.clone());
    // Also the access check: a patient this user may not see is not found.
    let record = std::sync::Arc::new(ui.clinical(move |c| c.patient_identity(&v, &pid)).await.map_err(clinical_error)?);
    let pid = id.clone();
    let keys = std::sync::Arc::new(ui.with_store(move |s| deid_keys(s.conn(), &pid).map_err(store_error)).await?);
    let mut images = Vec::with_capacity(files.len());
    for (i, bytes) in files.into_iter().enumerate() {
        let upload = UploadDigest::of(&bytes);
        let (pid, record, keys) = (id.clone(), record.clone(), keys.clone());
        // De-identification and rendering off the store's lock.
        let prepared = tokio::task::spawn_blocking(move || prepare(&bytes, &record, &keys.0, &pid, keys.1))
            .await
            .map_err(|e| WebError::Internal(format!("the image task failed: {e}")))?;
        let (result, detail) = match prepared {
            Ok(p) => {
                let (pid, who, u) = (id.clone(), a.session.username.clone(), upload.clone());
                let now = ui.clock.now();
                let (image_id, already, p) =
                    ui.with_store(move |s| insert(s.conn(), &pid, &u, &p, &who, now).map(|(i, al)| (i, al, p)).map_err(store_error)).await?;
                let detail = filed_audit(&id, image_id, already, &upload, &p);
                (ImageResult::Filed(UploadedImage::new(i + 1, image_id, already, p)), detail)
            }
            Err(refusal) => (ImageResult::refused(i + 1, &refusal), refused_audit(&id, &refusal, &upload)),
        };
        ui.audit(EventKind::Access, &a.session.username, with_who(detail, a.who())).await?;
        images.push(result);
    }
    let filed = images.iter().filter(|r| matches!(r, ImageResult::Filed(_))).count();
    let status = if filed == 0 { axum::http::StatusCode::BAD_REQUEST } else { axum::http::StatusCode::OK };
    Ok((status, Json(UploadResults { filed, refused: images.len() - filed, images })).into_response())
}

/// The audit detail with who did it first.
fn with_who(detail: serde_json::Value, who: serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert("who".into(), who);
    if let serde_json::Value::Object(fields) = detail {
        out.extend(fields);
    }
    serde_json::Value::Object(out)
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
