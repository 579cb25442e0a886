//! The one guard every routed request passes: route table lookup, session, role, CSRF, audit.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::session::{Ended, Session, cookie_value, tokens_equal};
use super::{AppState, Access, CSRF_HEADER, LOGIN_COOKIE, RefusedAccess, SESSION_COOKIE, Verb, WebError, route_spec};
use super::requests::RouteClass;
use crate::audit::EventKind;

/// The signed-in person behind a request, put there by the guard.
#[derive(Debug, Clone)]
pub struct Authed {
    pub session: Session,
    /// The raw session token, for logout.
    pub token: String,
    pub client: String,
}

impl Authed {
    /// The fields every audit record of a person's action carries.
    pub fn who(&self) -> serde_json::Value {
        json!({
            "user": self.session.username,
            "role": self.session.role,
            "client": self.client,
            "session": self.session.audit_id,
            "break_glass": self.session.break_glass,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = WebError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only the guard inserts this; a handler reached without it is refused.
        parts.extensions.get::<Authed>().cloned().ok_or(WebError::Forbidden)
    }
}

/// The client's address (or "unknown" where the server did not record one).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub Option<SocketAddr>);

impl ClientAddr {
    pub fn from_extensions(ext: &axum::http::Extensions) -> Self {
        ClientAddr(ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0))
    }
    pub fn is_loopback(&self) -> bool {
        self.0.is_some_and(|a| a.ip().is_loopback())
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{}", a.ip()),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::from_extensions(&parts.extensions))
    }
}

pub(super) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(path) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let verb = match *req.method() {
        Method::GET | Method::HEAD => Verb::Get,
        Method::POST => Verb::Post,
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    };
    let Some(spec) = route_spec(verb, &path) else {
        tracing::error!(path, "route is not in the route table; refused to everyone");
        return WebError::Forbidden.into_response();
    };
    // Before anything reads the body (the CSRF check, the extractors): over the route's limit
    // is 413 naming the limit, never a parse error.
    let req = match within_body_limit(req, spec.max_body).await {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let client = ClientAddr::from_extensions(req.extensions());
    let roles = match spec.access {
        Access::Public => {
            if verb == Verb::Post {
                // Sign-in forms: double-submit CSRF, the form's token must match the cookie
                // set with the form.
                let expected = cookie_value(req.headers(), LOGIN_COOKIE).map(str::to_owned);
                return match csrf_checked(req, expected.as_deref(), spec.max_body).await {
                    Ok(req) => next.run(req).await,
                    Err(e) => e.into_response(),
                };
            }
            return next.run(req).await;
        }
        Access::LoopbackOr(_) if client.is_loopback() => return next.run(req).await,
        Access::LoopbackOr(roles) | Access::Roles(roles) => roles,
    };
    let Some(ui) = state.ui.clone() else {
        return WebError::Unavailable("the web UI is not running on this box".into()).into_response();
    };
    let now = ui.clock.now();
    let token = cookie_value(req.headers(), SESSION_COOKIE).map(str::to_owned);
    // The session timer polls this route; polling must not count as activity.
    let checked = match &token {
        None => Err(Ended::Unknown),
        Some(t) if path == "/session/status" => ui.sessions.peek(t, now),
        Some(t) => ui.sessions.touch(t, now),
    };
    let session = match checked {
        Ok(s) => s,
        Err(ended) => {
            if ended != Ended::Unknown {
                // The session just ended by a limit: record it once (it is gone now).
                let _ = ui
                    .audit(EventKind::Logout, "system", json!({ "reason": format!("{ended:?}").to_lowercase(), "client": client.to_string() }))
                    .await;
            }
            return anonymous(verb, ended, ui.secure_cookies);
        }
    };
    let authed = Authed { session, token: token.unwrap_or_default(), client: client.to_string() };
    if !roles.contains(&authed.session.role) {
        let _ = ui
            .audit(
                EventKind::Access,
                &authed.session.username,
                json!({ "who": authed.who(), "method": verb.as_str(), "route": path, "outcome": "denied_role" }),
            )
            .await;
        return WebError::Forbidden.into_response();
    }
    let mut req = req;
    if verb == Verb::Post {
        if let Err(e) = same_origin(req.headers(), req.uri()) {
            return e.into_response();
        }
        req = match csrf_checked(req, Some(&authed.session.csrf), spec.max_body).await {
            Ok(r) => r,
            Err(e) => {
                let _ = ui
                    .audit(
                        EventKind::SecurityAlert,
                        &authed.session.username,
                        json!({ "who": authed.who(), "event": "csrf_rejected", "route": path }),
                    )
                    .await;
                return e.into_response();
            }
        };
    }
    // Every page view and action by a person is in the audit trail, or does not happen. The
    // timer's polling is left out: it is not something the person did.
    if path != "/session/status" {
        let uri_path = req.uri().path();
        if let Err(e) = ui
            .audit(
                EventKind::Access,
                &authed.session.username,
                json!({ "who": authed.who(), "method": verb.as_str(), "route": path, "path": uri_path }),
            )
            .await
        {
            state.requests.audit_failed(RouteClass::of(&path));
            return e.into_response();
        }
        state.requests.audited(RouteClass::of(&path));
    }
    let uri_path = req.uri().path().to_owned();
    req.extensions_mut().insert(authed.clone());
    let mut resp = next.run(req).await;
    // A refused request for a patient's data (unknown, not granted, forbidden) is audited with
    // its outcome, so that repeated attempts at patients the user may not see are on record
    // and reach the alert detector. The browser's answer does not tell the cases apart.
    if let Some(RefusedAccess(outcome)) = resp.extensions().get::<RefusedAccess>().copied()
        && path.starts_with("/patients/{id}")
        && let Err(e) = ui
            .audit(
                EventKind::Access,
                &authed.session.username,
                json!({ "who": authed.who(), "method": verb.as_str(), "route": path, "path": uri_path, "outcome": outcome }),
            )
            .await
    {
        return e.into_response();
    }
    // Pages with patient or account data are never cached by the browser or a proxy.
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An unauthenticated request: pages go to the sign-in page, everything else gets 401.
fn anonymous(verb: Verb, ended: Ended, secure: bool) -> Response {
    let mut resp = if verb == Verb::Get {
        let reason = match ended {
            Ended::Idle => "idle",
            Ended::Absolute => "absolute",
            Ended::Unknown => "signin",
        };
        Redirect::to(&format!("/login?m={reason}")).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "sign in first").into_response()
    };
    if ended != Ended::Unknown
        && let Ok(v) = HeaderValue::from_str(&clear_cookie(SESSION_COOKIE, "/", secure))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// A state-changing request whose `Origin` names another site is refused, whatever the token
/// (defence in depth beside SameSite=Strict and the CSRF token).
fn same_origin(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Result<(), WebError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    // HTTP/1.1 names the site in `Host`; HTTP/2 in the `:authority` pseudo-header, which
    // hyper puts in the request URI.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    if !host.is_empty() && origin_host == host {
        Ok(())
    } else {
        Err(WebError::Csrf)
    }
}

/// Check the CSRF token of a state-changing request against `expected`: from the
/// `x-csrf-token` header, or from the `csrf` field of a URL-encoded form (the body is read
/// and put back). Anything else, including a multipart body without the header, is refused.
async fn csrf_checked(req: Request, expected: Option<&str>, max_body: usize) -> Result<Request, WebError> {
    let Some(expected) = expected.filter(|e| !e.is_empty()) else { return Err(WebError::Csrf) };
    if let Some(sent) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return if tokens_equal(sent, expected) { Ok(req) } else { Err(WebError::Csrf) };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(WebError::Csrf);
    }
    let (parts, body) = req.into_parts();
    let bytes = read_limited(body, max_body).await?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| WebError::Csrf)?;
    let sent = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or_default();
    if !tokens_equal(sent, expected) {
        return Err(WebError::Csrf);
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Refuse a body over `limit` with 413: at once by its declared length, or, when it declares
/// none (chunked), by reading at most `limit` bytes of it.
async fn within_body_limit(req: Request, limit: usize) -> Result<Request, WebError> {
    if let Some(declared) = req.headers().get(header::CONTENT_LENGTH) {
        let declared: u64 = declared
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| WebError::BadRequest("the request's Content-Length is not a number".into()))?;
        return if declared > limit as u64 { Err(WebError::TooLarge { limit }) } else { Ok(req) };
    }
    if axum::body::HttpBody::size_hint(req.body()).exact() == Some(0) {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = read_limited(body, limit).await?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Read a whole body of at most `limit` bytes; more is 413 naming the limit.
async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, WebError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| WebError::BadRequest("the request body could not be read".into()))?;
        if buf.len() + chunk.len() > limit {
            return Err(WebError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

pub fn session_cookie(token: &str, secure: bool) -> String {
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" })
}

pub fn clear_cookie(name: &str, path: &str, secure: bool) -> String {
    format!("{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" })
}

/// Headers on every response: a strict Content-Security-Policy (no inline script, nothing
/// from outside the box), no framing, no sniffing, no referrer to another site, and HSTS over TLS.
pub(super) async fn security_headers(State(state): State<AppState>, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` on the
    // box's own form posts (Fetch: a request's origin is serialised as null under that policy),
    // which `same_origin` refuses, so no signed-in form would work; `same-origin` still sends
    // nothing to another site, and a cross-site post then says `Origin: null` and is refused.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=()"));
    if state.ui.as_ref().is_some_and(|ui| ui.secure_cookies) {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_origin_is_refused() {
        let plain: axum::http::Uri = "/logout".parse().expect("uri");
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::HOST, "box.clinic:8443".parse().expect("h"));
        assert!(same_origin(&h, &plain).is_ok(), "no Origin header: rely on the token");
        h.insert(header::ORIGIN, "https://box.clinic:8443".parse().expect("h"));
        assert!(same_origin(&h, &plain).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().expect("h"));
        assert!(same_origin(&h, &plain).is_err());
        // HTTP/2: no Host header, the authority is in the URI.
        let h2: axum::http::Uri = "https://box.clinic:8443/logout".parse().expect("uri");
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::ORIGIN, "https://box.clinic:8443".parse().expect("h"));
        assert!(same_origin(&h, &h2).is_ok());
        assert!(same_origin(&h, &plain).is_err(), "no host at all: refused");
    }
}
