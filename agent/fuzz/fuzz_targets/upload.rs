//! The upload form a workstation sends (multipart/form-data), read the way the upload route
//! reads it. The first bytes of the input choose the boundary, the rest is the body. Reading
//! must never panic; a file it accepts has a name without control characters, at most
//! `MAX_FILE_NAME_CHARS` long, and one of the accepted content types.
#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use wardbox::web::upload::{MAX_FILE_NAME_CHARS, UPLOAD_TYPES, read_upload};

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
    let Ok(request) = Request::builder()
        .method("POST")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let Ok(mut form) = Multipart::from_request(request, &()).await else {
            return;
        };
        if let Ok(file) = read_upload(&mut form).await {
            assert!(!file.file_name.chars().any(char::is_control), "control character in {:?}", file.file_name);
            assert!(file.file_name.chars().count() <= MAX_FILE_NAME_CHARS);
            assert!(UPLOAD_TYPES.contains(&file.content_type.as_str()), "{}", file.content_type);
        }
    });
});
