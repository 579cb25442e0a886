//! The upload forms a workstation sends (multipart/form-data), read the way the upload routes
//! read them: the document form (`read_upload`) and the image form (`read_images`, several
//! files). The first bytes of the input choose the boundary, the rest is the body. Reading must
//! never panic; a document it accepts has a name without control characters, at most
//! `MAX_FILE_NAME_CHARS` long, and one of the accepted content types; an image upload it
//! accepts has between one and `MAX_IMAGES_PER_UPLOAD` files, none empty, no more bytes in all
//! than the body.
#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use wardbox::web::upload::{MAX_FILE_NAME_CHARS, MAX_IMAGES_PER_UPLOAD, UPLOAD_TYPES, read_images, read_upload};

/// The form of a request, if it is one.
async fn form_of(request: Option<Request<Body>>) -> Option<Multipart> {
    Multipart::from_request(request?, &()).await.ok()
}

fuzz_target!(|data: &[u8]| {
    // A boundary of 1-70 characters from the boundary alphabet (RFC 2046), then the body.
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len % 70) + 1;
    if rest.len() < len {
        return;
    }
    let (boundary, body) = rest.split_at(len);
    let boundary: String = boundary.iter().map(|b| char::from(b'a' + b % 26)).collect();
    let request = || {
        Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from(body.to_vec()))
            .ok()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let Some(mut form) = form_of(request()).await else {
            return;
        };
        if let Ok(file) = read_upload(&mut form).await {
            assert!(!file.file_name.chars().any(char::is_control), "control character in {:?}", file.file_name);
            assert!(file.file_name.chars().count() <= MAX_FILE_NAME_CHARS);
            assert!(UPLOAD_TYPES.contains(&file.content_type.as_str()), "{}", file.content_type);
        }
        let Some(mut form) = form_of(request()).await else {
            return;
        };
        if let Ok(files) = read_images(&mut form).await {
            assert!((1..=MAX_IMAGES_PER_UPLOAD).contains(&files.len()), "{} files", files.len());
            assert!(files.iter().all(|f| !f.is_empty()), "an empty file was accepted");
            assert!(files.iter().map(|f| f.len()).sum::<usize>() <= body.len(), "more bytes than the body");
        }
    });
});
