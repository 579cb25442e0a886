//! Static assets compiled into the binary from `ui/static`: the box serves every script,
//! style and icon itself, nothing comes from outside.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../../ui/static/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../../ui/static/app.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../../ui/static/favicon.svg")),
];

pub(super) async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ctype, bytes)) => {
            let mut resp = (StatusCode::OK, *bytes).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
            resp
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
