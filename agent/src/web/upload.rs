//! Reading an uploaded document out of the upload form (multipart/form-data): the first field,
//! its file name made safe to show and audit, and a content type retrieval can read.
//!
//! Also the image upload form: up to [`MAX_IMAGES_PER_UPLOAD`] files in one request (a DICOM
//! series, several photos), within the route's body limit.
//!
//! The bytes come from a workstation, so these are parsers the fuzz targets cover
//! (`agent/fuzz`, target `upload`); the upload routes (`pages::upload`, `images::upload`) call them.

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

/// The most files one image upload takes; together they are within the route's body limit
/// ([`super::MAX_UPLOAD_BYTES`]). A longer series goes in several uploads.
pub const MAX_IMAGES_PER_UPLOAD: usize = 50;

/// Every file of the image upload form, in the order sent; their names and declared types are
/// neither trusted nor kept (the bytes say what a file is; names often carry the patient's
/// name). Refused as a whole, before any file is looked at: no file, an empty file, or more
/// than [`MAX_IMAGES_PER_UPLOAD`] files (reading stops at the first one over), and a body over
/// the limit (413).
pub async fn read_images(form: &mut Multipart) -> Result<Vec<Bytes>, WebError> {
    let mut files = Vec::new();
    while let Some(field) = form.next_field().await.map_err(unreadable_upload)? {
        if files.len() == MAX_IMAGES_PER_UPLOAD {
            return Err(WebError::BadRequest(format!(
                "One upload takes at most {MAX_IMAGES_PER_UPLOAD} images (and {} in all); this one has more, so none was added. Upload the series in parts.",
                super::size_in_words(super::MAX_UPLOAD_BYTES)
            )));
        }
        let bytes = field.bytes().await.map_err(unreadable_upload)?;
        if bytes.is_empty() {
            return Err(WebError::BadRequest(format!("file {} of the upload is empty; nothing was added", files.len() + 1)));
        }
        files.push(bytes);
    }
    if files.is_empty() {
        return Err(WebError::BadRequest("choose an image to upload".into()));
    }
    Ok(files)
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
