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
    #[error("{0}")]
    BadRequest(String),
    #[error("your role does not allow this page")]
    Forbidden,
    #[error("the request did not carry this session's security token")]
    Csrf,
    /// The audit record could not be written, so the request was not carried out.
    #[error("the audit log cannot be written: {0}")]
    AuditFailed(String),
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
            WebError::NotFound => (StatusCode::NOT_FOUND, "Not found", "There is nothing at this address.".into()),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Cannot do this", m.clone()),
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
            WebError::Internal(e) => {
                tracing::error!("internal error: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "The error was logged; tell IT if it persists.".into())
            }
        };
        let body = MessagePage { title, message: &message }
            .render()
            .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Error</p>".into());
        (status, Html(body)).into_response()
    }
}
