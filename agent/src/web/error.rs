//! The web layer's errors and their one mapping to responses: a plain page with a message for
//! the person at the workstation, never internals (those go to the log).

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A back end (model, index, directory) is not running: said plainly, 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("not found")]
    NotFound,
    /// A patient (or a patient's document) outside this user's reach. Answered exactly like
    /// `NotFound`, so ids cannot be probed for existence; only the audit record differs.
    #[error("not found")]
    NotGranted,
    #[error("{0}")]
    BadRequest(String),
    /// The request body is over the route's limit: 413, naming the limit.
    #[error("the request is larger than the limit of {}", size_in_words(*limit))]
    TooLarge { limit: usize },
    #[error("your role does not allow this page")]
    Forbidden,
    #[error("the request did not carry this session's security token")]
    Csrf,
    /// The audit record could not be written, so the request was not carried out.
    #[error("the audit log cannot be written: {0}")]
    AuditFailed(String),
    /// The data volume has no space left, so the write (or its audit record) was refused: 503.
    #[error("the data volume is full")]
    VolumeFull,
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Template)]
#[template(path = "message.html")]
pub(super) struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            WebError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Not available", m.clone()),
            WebError::NotFound | WebError::NotGranted => (StatusCode::NOT_FOUND, "Not found", "There is nothing at this address.".into()),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Cannot do this", m.clone()),
            WebError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                format!("This is larger than the limit of {} for this page; nothing was stored.", size_in_words(*limit)),
            ),
            WebError::Forbidden => (StatusCode::FORBIDDEN, "Not allowed", "Your role does not give access to this page.".into()),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Request refused",
                "The request did not come from a Wardbox page of this session. Reload the page and try again.".into(),
            ),
            WebError::AuditFailed(e) => {
                tracing::error!("request refused because the audit log cannot be written: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not available",
                    "The box cannot record this action in its audit trail, so it was not carried out. Tell IT.".into(),
                )
            }
            WebError::VolumeFull => {
                tracing::error!("request refused: the data volume is full");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not available",
                    "The data volume is full, so this action was not carried out or recorded; nothing already saved is lost. Tell IT to free space: the box works again without a restart.".into(),
                )
            }
            WebError::Internal(e) => {
                tracing::error!("internal error: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "The error was logged; tell IT if it persists.".into())
            }
        };
        let body = MessagePage { title, message: &message }
            .render()
            .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Error</p>".into());
        let mut resp = (status, Html(body)).into_response();
        if let Some(outcome) = self.refusal() {
            resp.extensions_mut().insert(RefusedAccess(outcome));
        }
        resp
    }
}

/// Put on a response that refused a request, with the outcome the guard writes into the audit
/// record of a patient-data route (`denied_*`, which the alert detector counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedAccess(pub &'static str);

impl WebError {
    /// The audit outcome of a refusal; `None` for errors that are not a refusal of access
    /// (the box failed, the input was bad).
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            WebError::NotFound => Some("denied_not_found"),
            WebError::NotGranted => Some("denied_no_grant"),
            WebError::Forbidden => Some("denied_forbidden"),
            _ => None,
        }
    }
}

/// A byte count as people read it: "25 MiB", "256 KiB", "900 bytes".
pub fn size_in_words(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_in_words(25 * 1024 * 1024), "25 MiB");
        assert_eq!(size_in_words(256 * 1024), "256 KiB");
        assert_eq!(size_in_words(1000), "1000 bytes");
    }
}
