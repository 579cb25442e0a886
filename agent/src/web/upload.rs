//! Reading an uploaded document out of the upload form (multipart/form-data): the first field,
//! its file name made safe to show and audit, and a content type retrieval can read.
//!
//! The bytes come from a workstation, so this is one of the parsers the fuzz targets cover
//! (`agent/fuzz`, target `upload`); the upload route (`pages::upload`) calls it.

use axum::body::Bytes;
use axum::extract::Multipart;
use axum::extract::multipart::MultipartError;

use super::WebError;

/// File types a clinician may add to a record: what retrieval can read (PDF with a text layer,
/// text and Markdown notes, FHIR R4 JSON Bundles).
pub const UPLOAD_TYPES: &[&str] = &["application/pdf", "text/plain", "text/markdown", "application/json", "application/fhir+json",
    // What browsers send for a type they do not know (.md on many systems): the back end
    // reads the file itself and refuses what it cannot index, by name.
    "application/octet-stream"];

/// The longest file name kept (in characters); the rest is cut.
pub const MAX_FILE_NAME_CHARS: usize = 200;

/// One uploaded file, as read from the form.
#[derive(Debug)]
pub struct UploadedFile {
    /// The name the browser gave, without control characters, at most `MAX_FILE_NAME_CHARS`.
    pub file_name: String,
    /// One of `UPLOAD_TYPES`.
    pub content_type: String,
    pub bytes: Bytes,
}

/// The form's first field as a file, or the error to answer with: 413 naming the limit when
/// the body is over it, 400 naming the problem otherwise.
pub async fn read_upload(form: &mut Multipart) -> Result<UploadedFile, WebError> {
    let field = form
        .next_field()
        .await
        .map_err(unreadable_upload)?
        .ok_or_else(|| WebError::BadRequest("choose a file to upload".into()))?;
    let file_name: String = field.file_name().unwrap_or("upload").chars().filter(|c| !c.is_control()).take(MAX_FILE_NAME_CHARS).collect();
    let content_type = field.content_type().unwrap_or("application/octet-stream").to_string();
    if !UPLOAD_TYPES.contains(&content_type.as_str()) {
        return Err(WebError::BadRequest(format!("{content_type} files cannot be added; use PDF, text, Markdown or FHIR JSON")));
    }
    let bytes = field.bytes().await.map_err(unreadable_upload)?;
    Ok(UploadedFile { file_name, content_type, bytes })
}

/// A multipart error: over the size limit is 413 naming it (the guard refuses most such
/// uploads before they are read; this covers the rest), anything else 400.
fn unreadable_upload(e: MultipartError) -> WebError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        WebError::TooLarge { limit: super::MAX_UPLOAD_BYTES }
    } else {
        WebError::BadRequest(format!("the upload is not readable: {}", e.body_text()))
    }
}
