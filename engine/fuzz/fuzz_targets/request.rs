//! Whole HTTP requests through the engine's TCP router (the one with the `Host` check): a
//! fuzzed `Host` header and body against each endpoint. The store holds no model, so nothing
//! reaches llama.cpp; everything before it (body parsing, name parsing, refusals, routing) does.
//! Properties: no panic; every error is Ollama's JSON `{"error": "..."}` (bodiless HEAD answers
//! aside); a `Host` that is not loopback is always 403.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use wardbox_engine::registry::Registry;
use wardbox_engine::server::{AppState, tcp_app};
use wardbox_engine::worker::WorkerConfig;
use wardbox_models_bundle::Store;

const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/api/show"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("GET", "/api/version"),
    ("HEAD", "/"),
    ("POST", "/api/pull"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/blobs/sha256:00"),
    ("GET", "/api/chat"),
    ("POST", "/v1/chat/completions"),
];

struct Fixture {
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
    _store: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::new(Store::new(dir.path()), WorkerConfig::default(), 1);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Fixture { rt, state: Arc::new(AppState { registry }), _store: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let (method, path) = ENDPOINTS[usize::from(which) % ENDPOINTS.len()];
    // `Host` up to the first newline, the body after it.
    let (host, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b"localhost"[..], rest),
    };
    let mut req = Request::builder().method(Method::from_bytes(method.as_bytes()).expect("method")).uri(path);
    let Ok(host_value) = axum::http::HeaderValue::from_bytes(host) else { return };
    req = req.header("host", host_value);
    let req = req.header("content-type", "application/json").body(Body::from(body.to_vec())).expect("request");
    let f = fixture();
    let (status, bytes) = f.rt.block_on(async {
        let resp = tcp_app(f.state.clone()).oneshot(req).await.expect("infallible");
        let status = resp.status();
        (status, axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body"))
    });
    let loopback = std::str::from_utf8(host).is_ok_and(wardbox_engine::listen::is_loopback_host);
    if !loopback {
        assert_eq!(status, 403, "Host {host:?} must be refused");
    }
    // A HEAD answer has no body, by definition.
    if (status.is_client_error() || status.is_server_error()) && method != "HEAD" {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {path} -> {status}: not JSON: {:?}", String::from_utf8_lossy(&bytes)));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path} -> {status}: {v}");
    }
});
