//! The engine binary's HTTP surface without a real model: errors in Ollama's shape for unknown
//! and refused endpoints, the TCP listener's `Host` check (DNS-rebinding defence), the Unix
//! socket without one, and `/api/show` for a model whose template lives in its GGUF. The store
//! holds a GGUF that is only a header: `/api/show` and `/api/tags` read headers, never weights.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use wardbox_models_bundle::{ImportRequest, Store};

/// SmolLM2's ChatML template, as its GGUF carries it (abridged).
const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const MODEL: &str = "tiny:header";

/// A GGUF header with string metadata and no tensors.
fn gguf_header(kvs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        out.extend((k.len() as u64).to_le_bytes());
        out.extend(k.as_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    out
}

/// A running `wardbox-engine serve` on a store with one header-only model, killed on drop.
struct Engine {
    child: Child,
    socket: PathBuf,
    /// `127.0.0.1:PORT`.
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    std::fs::write(&gguf, gguf_header(&[("general.architecture", "llama"), ("tokenizer.chat_template", CHATML)])).unwrap();
    let store = Store::new(dir.path().join("store"));
    store
        .import(&ImportRequest {
            name: MODEL.parse().unwrap(),
            gguf,
            template: None,
            params: None,
            licenses: vec!["Apache 2.0".into()],
            system: None,
        })
        .unwrap();
    let socket = dir.path().join("engine.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardbox-engine"))
        .arg("serve")
        .arg("--store")
        .arg(store.root())
        .arg("--socket")
        .arg(&socket)
        .args(["--tcp", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn wardbox-engine");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| {
        let status = child.wait().ok();
        panic!("engine did not start (exit {status:?}); first stdout line {line:?}")
    });
    Engine { addr: addr.to_owned(), socket, child, _dir: dir }
}

enum To<'a> {
    Unix(&'a Path),
    Tcp(&'a str),
}

/// One HTTP/1.1 request with exactly the given `Host` (none when `None`) and request target.
async fn call(to: To<'_>, method: &str, target: &str, host: Option<&str>, body: Vec<u8>) -> (StatusCode, String, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(target).header("content-type", "application/json");
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = match to {
        To::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
        To::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
    };
    let status = resp.status();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, content_type, bytes)
}

/// The `error` of an Ollama error body, failing when the body is anything else.
fn error_of(what: &str, content_type: &str, body: &[u8]) -> String {
    assert!(content_type.starts_with("application/json"), "{what}: content-type {content_type:?}, body {:?}", String::from_utf8_lossy(body));
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("{what}: not JSON: {:?}", String::from_utf8_lossy(body)));
    let err = v["error"].as_str().unwrap_or_else(|| panic!("{what}: no error field: {v}"));
    assert!(!err.is_empty(), "{what}: empty error");
    err.to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_refused_endpoints_answer_with_ollamas_json_error() {
    let e = start();
    for (method, path) in [("GET", "/api/nope"), ("POST", "/v1/chat/completions"), ("GET", "/favicon.ico"), ("DELETE", "/")] {
        let (s, ct, b) = call(To::Tcp(&e.addr), method, path, Some("localhost"), Vec::new()).await;
        let what = format!("{method} {path}");
        let err = error_of(&what, &ct, &b);
        if path == "/" {
            assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{what}: {err}");
        } else {
            assert_eq!(s, StatusCode::NOT_FOUND, "{what}: {err}");
            assert!(err.contains(path), "{what}: the error names the path: {err}");
        }
    }
    // Ollama's model-management endpoints: refused, saying where models come from.
    for (method, path, body) in [
        ("POST", "/api/pull", json!({ "model": "llama3" })),
        ("POST", "/api/push", json!({ "model": "x/y" })),
        ("POST", "/api/create", json!({ "model": "m", "from": "llama3" })),
        ("POST", "/api/copy", json!({ "source": MODEL, "destination": "copy:1" })),
        ("DELETE", "/api/delete", json!({ "model": MODEL })),
        ("POST", "/api/blobs/sha256:29fdb92e57cf082e", json!(null)),
    ] {
        let what = format!("{method} {path}");
        let (s, ct, b) = call(To::Tcp(&e.addr), method, path, Some("localhost"), body.to_string().into_bytes()).await;
        let err = error_of(&what, &ct, &b);
        assert_eq!(s, StatusCode::FORBIDDEN, "{what}: {err}");
        assert!(err.contains("bundles"), "{what}: {err}");
    }
    // Nothing was deleted.
    let (s, _, b) = call(To::Tcp(&e.addr), "GET", "/api/tags", Some("localhost"), Vec::new()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["models"][0]["name"], json!(MODEL));

    // A body over the limit: 413 naming the limit, as JSON.
    let big = format!("{{\"model\":\"{MODEL}\",\"prompt\":\"{}\"}}", "a".repeat(3 * 1024 * 1024));
    let (s, ct, b) = call(To::Tcp(&e.addr), "POST", "/api/generate", Some("localhost"), big.into_bytes()).await;
    let err = error_of("oversized body", &ct, &b);
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert!(err.contains("2 MiB"), "{err}");

    // The same over the Unix socket, and through the client the agent uses.
    let (s, ct, b) = call(To::Unix(&e.socket), "POST", "/api/pull", Some("x"), b"{}".to_vec()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(error_of("pull over the socket", &ct, &b).contains("bundles"));
    let client = ollama_rs::Ollama::try_new(format!("http://{}/", e.addr)).unwrap();
    let err = client.pull_model("llama3".into(), false).await.unwrap_err().to_string();
    assert!(err.contains("bundles"), "ollama-rs shows the engine's message: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_listener_accepts_only_loopback_host_names() {
    let e = start();
    let port = e.addr.rsplit_once(':').unwrap().1;
    for host in ["localhost".to_owned(), format!("localhost:{port}"), format!("127.0.0.1:{port}"), "127.0.0.1".into(), "[::1]".into(), format!("[::1]:{port}")] {
        let (s, _, b) = call(To::Tcp(&e.addr), "GET", "/api/version", Some(&host), Vec::new()).await;
        assert_eq!(s, StatusCode::OK, "Host {host}: {}", String::from_utf8_lossy(&b));
    }
    // What a page on a rebound domain sends, and other names that are not loopback.
    for host in ["evil.example".to_owned(), format!("evil.example:{port}"), format!("127.0.0.1.nip.io:{port}"), "localhost.evil.example".into(), "10.0.0.5".into(), String::new()] {
        let (s, ct, b) = call(To::Tcp(&e.addr), "GET", "/api/tags", Some(&host), Vec::new()).await;
        let err = error_of(&format!("Host {host:?}"), &ct, &b);
        assert_eq!(s, StatusCode::FORBIDDEN, "Host {host:?}: {err}");
        assert!(err.contains("Host"), "{err}");
        // Refused before any route runs: a write endpoint is refused the same way.
        let (s, _, _) = call(To::Tcp(&e.addr), "POST", "/api/show", Some(&host), json!({ "model": MODEL }).to_string().into_bytes()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "Host {host:?} on /api/show");
    }
    // No Host at all, and an absolute-form target naming a foreign host.
    let (s, _, _) = call(To::Tcp(&e.addr), "GET", "/api/tags", None, Vec::new()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no Host");
    let (s, _, _) = call(To::Tcp(&e.addr), "GET", "http://evil.example/api/tags", Some("localhost"), Vec::new()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "absolute-form target with a foreign authority");

    // The clients the agent uses (ollama-rs) send the endpoint's own host: accepted.
    let client = ollama_rs::Ollama::try_new(format!("http://{}/", e.addr)).unwrap();
    let models = client.list_local_models().await.unwrap();
    assert_eq!(models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), [MODEL]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_needs_no_host_check() {
    let e = start();
    // `curl --unix-socket S http://x/...` and hyper-based clients send a placeholder host.
    for host in [Some("x"), Some("evil.example"), Some("localhost"), None] {
        let (s, _, b) = call(To::Unix(&e.socket), "GET", "/api/tags", host, Vec::new()).await;
        assert_eq!(s, StatusCode::OK, "Host {host:?} over the socket: {}", String::from_utf8_lossy(&b));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn show_reports_the_gguf_template_when_the_store_has_no_template_layer() {
    let e = start();
    let (s, _, b) = call(To::Tcp(&e.addr), "POST", "/api/show", Some("localhost"), json!({ "model": MODEL }).to_string().into_bytes()).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["template"], json!(CHATML));
    assert!(v["modelfile"].as_str().unwrap().contains("<|im_start|>"), "{}", v["modelfile"]);
    let client = ollama_rs::Ollama::try_new(format!("http://{}/", e.addr)).unwrap();
    assert_eq!(client.show_model_info(MODEL.into()).await.unwrap().template, CHATML);
}
