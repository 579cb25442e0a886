//! What the agent adds to an answer: the time to the first token of a question asked through
//! the clinician web UI, beside the same prompt sent straight to the engine, in one run.
//!
//! It starts `wardbox-engine serve` with SmolLM2 135M Instruct and all-MiniLM-L6-v2 as the
//! agent starts it in the dev profile, and a `wardbox dev` box (the real store, audit chain and
//! demo records) serving HTTPS with its local CA whose engine endpoint is a tap: a TCP relay in
//! this process that notes when the agent's embed and chat requests pass and when the first
//! generated text comes back. It adds a clinician with `wardbox users add` and signs in as a
//! browser does. Then, in rounds whose order alternates, it times:
//!
//! - **engine**: `POST /api/chat` (NDJSON stream) straight to the engine, with exactly the
//!   messages and options the agent sends for this question (the prompt is taken from
//!   `wardbox_rag::answer` run on the box's own store, as the agent runs it);
//! - **web UI**: `POST /patients/{id}/ask` over TLS with the session cookie and CSRF token, as
//!   the clinician page's script does (server-sent events). This includes everything the agent
//!   does: the session and CSRF checks, the access and query audit records, the conversation
//!   row, retrieval (the question embedded by the engine, then the hybrid search in the
//!   encrypted store), the prompt, the engine call, re-identification and the SSE relay, and
//!   the tap's extra hop.
//!
//! The two paths' requests are separate requests on a noisy machine, so the bench also splits
//! each web UI answer at the tap: the engine's own time to the first token for that very
//! request, and what the agent spends before (with retrieval shown apart: the UI cannot ask
//! without a patient, so retrieval always runs) and after it.
//!
//! "First token" is the first byte of generated text on each path (the first NDJSON line with
//! content; the first `token` event); "last token" the last such; "end" the engine's `done`
//! line or the UI's `done` event (after the answer check, citations and footer). Answers are
//! `WARDBOX_BENCH_TOKENS` tokens at most on both paths (greedy, same seed), and the first
//! answers of the two paths are compared: the same text says the engine got the same prompt.
//!
//! Run: `cargo bench -p wardbox --bench ui_ttft` (WARDBOX_BENCH_ROUNDS: rounds, 12 by default;
//! WARDBOX_BENCH_TOKENS: answer tokens, 64 by default; WARDBOX_ENGINE_BIN: the engine binary,
//! by default `wardbox-engine` in the target directory's release folder; the models from
//! `models-bundle/fetch-test-model.sh` and `fetch-embedding-model.sh`, in
//! `~/.cache/wardbox/models/store` or `WARDBOX_MODEL_STORE`). Prints medians and minima of each
//! path and their ratios, the split, and the load average before and after.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header;
use hyper_util::rt::TokioIo;
use ollama_rs::generation::chat::ChatMessage;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::models::ModelOptions;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use wardbox::store::Store;
use wardbox::web::Role;
use wardbox::web::clinical::TaskKind;
use wardbox_rag::answer::{self, GenerateFuture, Generator, Prompt, RetrievalConfig, Task};
use wardbox_rag::embed::OllamaEmbedder;
use wardbox_rag::index::{self, Access, Scope};

const PASSWORD: &str = "bench password for the clinician";
const USERNAME: &str = "bench.clinician";
/// A question whose answer is in one of the patient's notes (the model tests ask it too).
const QUESTION: &str = "Which new diabetes medication was started at the last visit?";
/// Dolores Castellanos, one of the invented patients of the demo records.
const PATIENT_MRN: &str = "00451234";
const CHAT_MODEL: &str = "smollm2:135m";
const EMBED_MODEL: &str = "all-minilm:l6-v2";

fn main() {
    let rounds: usize = env_or("WARDBOX_BENCH_ROUNDS", 12);
    let tokens: usize = env_or("WARDBOX_BENCH_TOKENS", 64);
    let engine_bin = engine_binary();
    let models = model_store();
    let load_before = loadavg();

    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let (web_addr, engine_addr) = (free_addr(), free_addr());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let _engine = Engine::start(&engine_bin, &models, engine_addr, &dir.path().join("engine.log"));
    // The agent reaches the engine through the tap, which notes when each request passes.
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("tap port");
    let tap_addr = listener.local_addr().expect("tap address");
    let seen = Arc::new(Tap::default());
    runtime.spawn(tap(listener, engine_addr, seen.clone()));
    write_config(&base, web_addr, tap_addr, tokens);
    let log = dir.path().join("agent.log");
    let mut agent = Agent::start(&base, web_addr, &log);
    let config_path = base.join("wardbox.toml");
    wardbox_cli(&["users", "add", "-c", path_str(&config_path), "--username", USERNAME, "--display-name", "Bench Clinician", "--role", "clinician"], Some(PASSWORD));

    let config = wardbox::config::Config::load(&config_path).expect("config");
    let volume = wardbox::stages::unlock::unlocker(&config.volume, &config.state_dir).open_for_cli().expect("the dev box's store key");
    let store = Store::open_existing(&volume.data_dir.join(&config.store.file_name), &volume.store_key).expect("the dev box's store");
    let owner = index::find_patient(store.conn(), PATIENT_MRN).expect("find patient").expect("the demo patient is indexed");
    let asked = Asked {
        embedder: OllamaEmbedder::new(&format!("http://{engine_addr}/"), EMBED_MODEL, index::DIMS).expect("embedder"),
        owner,
        retrieval: RetrievalConfig { k: config.clinical.sources, max_distance: config.clinical.max_distance },
        policy: config.clinical.safety.clone(),
    };

    let ca = base.join("state/tls/ca.pem");
    let (mut ui, mut engine, engine_body) = runtime.block_on(async {
        let mut ui = UiClient::sign_in(web_addr, &ca).await;
        // The prompt the agent builds for this question, and the request it sends with it.
        let prompt = asked.prompt(store.conn()).await;
        let messages = vec![ChatMessage::system(prompt.system.clone()), ChatMessage::user(prompt.user.clone())];
        // As `clinical::EngineGenerator` sets them: greedy, fixed seed, the answer budget.
        let request = ChatMessageRequest::new(CHAT_MODEL.into(), messages).options(ModelOptions::default().temperature(0.0).seed(7).num_predict(tokens as i32));
        let mut body = serde_json::to_value(&request).expect("request json");
        body["stream"] = serde_json::Value::Bool(true);
        let body = body.to_string();
        // Warm-up: one answer each way (not timed), compared.
        let mut engine = EngineClient::connect(engine_addr).await;
        let from_engine = engine.ask(&body).await;
        let from_ui = ui.ask(owner).await;
        let pseudonyms = index::load_pseudonyms(store.conn(), owner).expect("pseudonyms");
        let shown = wardbox_rag::deid::reidentify(&from_engine.text, &pseudonyms);
        if shown == from_ui.text {
            println!("same answer on both paths ({} tokens, {} characters): the engine got the agent's prompt", from_engine.tokens, shown.len());
        } else {
            println!("NOTE: the answers differ; the comparison below may not be like for like.\n  engine: {shown:?}\n  web UI: {:?}", from_ui.text);
        }
        println!("prompt: {} tokens (the engine's count), {} characters", from_engine.prompt_tokens, prompt.system.len() + prompt.user.len());
        (ui, engine, body)
    });

    let mut engine_runs = Vec::new();
    let mut ui_runs = Vec::new();
    for round in 0..rounds {
        runtime.block_on(async {
            // Alternate which path goes first, so that a change of load falls on both.
            if round % 2 == 0 {
                engine_runs.push(engine.ask(&engine_body).await);
                ui_runs.push(ui.ask(owner).await);
            } else {
                ui_runs.push(ui.ask(owner).await);
                engine_runs.push(engine.ask(&engine_body).await);
            }
        });
        eprintln!("round {}/{rounds}: first token engine {:?}, web UI {:?}", round + 1, engine_runs[round].first, ui_runs[round].first);
    }
    drop(store);
    agent.stop();
    let load_after = loadavg();
    let splits: Vec<Option<Split>> = ui_runs.iter().map(|r| Split::of(r, &seen.events())).collect();
    report(&engine_runs, &ui_runs, &splits, tokens, load_before, load_after);
}

/// Print the table.
fn report(engine: &[Run], ui: &[Run], splits: &[Option<Split>], tokens: usize, load_before: String, load_after: String) {
    let n = engine.len();
    println!();
    println!("SmolLM2 135M Instruct, {n} rounds, answers of at most {tokens} tokens; load average before: {load_before}, after: {load_after}");
    println!("{:<44} {:>12} {:>12} {:>12} {:>12}", "", "engine med", "web UI med", "engine min", "web UI min");
    let row = |what: &str, pick: fn(&Run) -> Duration| {
        let (e, u) = (engine.iter().map(pick).collect::<Vec<_>>(), ui.iter().map(pick).collect::<Vec<_>>());
        let (em, um, en, un) = (median(&e), median(&u), min(&e), min(&u));
        println!("{what:<44} {:>10.0}ms {:>10.0}ms {:>10.0}ms {:>10.0}ms", ms(em), ms(um), ms(en), ms(un));
        (em, um, en, un)
    };
    let (em, um, en, un) = row("time to first token", |r| r.first);
    row("time to last token", |r| r.last);
    row("time to the end (engine done / UI done)", |r| r.end);
    let paired: Vec<f64> = engine.iter().zip(ui).map(|(e, u)| ms(u.first) / ms(e.first)).collect();
    println!();
    println!(
        "first token, web UI / engine (separate requests): medians {:.3}x, minima {:.3}x, per-round ratio median {:.3}x",
        ms(um) / ms(em),
        ms(un) / ms(en),
        median_f(&paired)
    );
    let ui_tokens: Vec<Run> = ui.iter().zip(engine).map(|(u, e)| Run { tokens: e.tokens, ..u.clone() }).collect();
    let rate = |runs: &[Run]| median_f(&runs.iter().map(|r| r.tokens.saturating_sub(1) as f64 / (r.last - r.first).as_secs_f64().max(1e-9)).collect::<Vec<_>>());
    println!("generation after the first token: engine {:.1} tok/s, web UI {:.1} tok/s (medians, the engine's token count)", rate(engine), rate(&ui_tokens));

    let splits: Vec<Split> = splits.iter().flatten().copied().collect();
    if splits.len() < n {
        println!("NOTE: {} of {n} web UI answers could not be split (the tap missed a request)", n - splits.len());
    }
    if splits.is_empty() {
        return;
    }
    println!();
    println!("the web UI's time to first token, split where the agent's requests to the engine pass (medians of {} answers):", splits.len());
    let part = |what: &str, pick: fn(&Split) -> Duration| {
        let d = median(&splits.iter().map(pick).collect::<Vec<_>>());
        println!("  {what:<86} {:>8.1} ms", ms(d));
    };
    part("before retrieval (TLS, session and CSRF checks, access audit, conversation row)", |s| s.before_retrieval);
    part("retrieval: the question embedded by the engine", |s| s.embedding);
    part("retrieval: hybrid search in the encrypted store, prompt", |s| s.search);
    part("the engine, from the agent's chat request to the first token", |s| s.engine);
    part("relay to the browser (re-identification, SSE, TLS)", |s| s.relay);
    let with: Vec<f64> = splits.iter().map(|s| ms(s.total()) / ms(s.engine)).collect();
    let without: Vec<f64> = splits.iter().map(|s| (ms(s.total()) - ms(s.embedding) - ms(s.search)) / ms(s.engine)).collect();
    let extra: Vec<Duration> = splits.iter().map(|s| s.total() - s.engine).collect();
    println!(
        "the agent adds {:.0} ms median to the engine's own time to first token for the same request: {:+.2} % with retrieval, {:+.2} % without (per-answer medians)",
        ms(median(&extra)),
        (median_f(&with) - 1.0) * 100.0,
        (median_f(&without) - 1.0) * 100.0
    );
    let held = median_f(&with) < 1.05;
    println!("verdict: {} (target: < 5 % extra time to the first token through the web UI)", if held { "held" } else { "NOT held" });
}

/// Where one web UI answer's time to its first token went, from the tap's notes.
#[derive(Debug, Clone, Copy)]
struct Split {
    before_retrieval: Duration,
    embedding: Duration,
    search: Duration,
    engine: Duration,
    relay: Duration,
}

impl Split {
    /// The agent's embed request, its answer, its chat request and the chat's first content,
    /// the first of each in order after the question was sent.
    fn of(run: &Run, events: &[(Instant, Seen)]) -> Option<Split> {
        let sent = run.sent?;
        let first = sent + run.first;
        let mut at = events.iter().filter(|(t, _)| *t >= sent && *t <= first);
        let mut next = |kind: Seen| at.find(|(_, s)| *s == kind).map(|(t, _)| *t);
        let (embed, embedded, chat, content) = (next(Seen::Embed)?, next(Seen::EmbedAnswered)?, next(Seen::Chat)?, next(Seen::ChatFirstContent)?);
        Some(Split { before_retrieval: embed - sent, embedding: embedded - embed, search: chat - embedded, engine: content - chat, relay: first - content })
    }

    fn total(&self) -> Duration {
        self.before_retrieval + self.embedding + self.search + self.engine + self.relay
    }
}

/// What the tap saw pass between the agent and the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Embed,
    EmbedAnswered,
    Chat,
    ChatFirstContent,
}

#[derive(Default)]
struct Tap(Mutex<Vec<(Instant, Seen)>>);

impl Tap {
    fn note(&self, at: Instant, what: Seen) {
        self.0.lock().expect("tap").push((at, what));
    }

    fn events(&self) -> Vec<(Instant, Seen)> {
        self.0.lock().expect("tap").clone()
    }
}

/// A TCP relay between the agent and the engine that notes the time of each embed and chat
/// request, of an embed request's answer and of a chat's first generated text. It adds a hop
/// (two socket copies) to the web UI's path only: a cost counted against the agent.
async fn tap(listener: tokio::net::TcpListener, engine: SocketAddr, seen: Arc<Tap>) {
    use std::sync::atomic::{AtomicU8, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const NONE: u8 = 0;
    const EMBED: u8 = 1;
    const CHAT: u8 = 2;
    while let Ok((agent, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(upstream) = tokio::net::TcpStream::connect(engine).await else { return };
            let _ = (agent.set_nodelay(true), upstream.set_nodelay(true));
            let (mut agent_read, mut agent_write) = agent.into_split();
            let (mut engine_read, mut engine_write) = upstream.into_split();
            // What this connection's next answer is awaited for.
            let waiting = Arc::new(AtomicU8::new(NONE));
            let (waiting_up, seen_up) = (waiting.clone(), seen.clone());
            let up = async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = agent_read.read(&mut buf).await {
                    let now = Instant::now();
                    let chunk = &buf[..n];
                    if chunk.starts_with(b"POST /api/chat ") {
                        seen_up.note(now, Seen::Chat);
                        waiting_up.store(CHAT, Ordering::SeqCst);
                    } else if chunk.starts_with(b"POST /api/embed ") {
                        seen_up.note(now, Seen::Embed);
                        waiting_up.store(EMBED, Ordering::SeqCst);
                    }
                    if engine_write.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                let _ = engine_write.shutdown().await;
            };
            let down = async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = engine_read.read(&mut buf).await {
                    let now = Instant::now();
                    let chunk = &buf[..n];
                    match waiting.load(Ordering::SeqCst) {
                        EMBED => {
                            seen.note(now, Seen::EmbedAnswered);
                            waiting.store(NONE, Ordering::SeqCst);
                        }
                        CHAT if has_content(chunk) => {
                            seen.note(now, Seen::ChatFirstContent);
                            waiting.store(NONE, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                    if agent_write.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                let _ = agent_write.shutdown().await;
            };
            tokio::join!(up, down);
        });
    }
}

/// Whether an NDJSON chat chunk carries generated text (`"content":"` and not empty).
fn has_content(chunk: &[u8]) -> bool {
    let marker = b"\"content\":\"";
    chunk.windows(marker.len() + 1).any(|w| w.starts_with(marker) && w[marker.len()] != b'"')
}

/// One timed answer.
#[derive(Debug, Clone, Default)]
struct Run {
    /// When the request was sent (the web UI's answers, to match the tap's notes).
    sent: Option<Instant>,
    /// From sending the request to the first byte of generated text.
    first: Duration,
    /// To the last byte of generated text.
    last: Duration,
    /// To the end of the response.
    end: Duration,
    text: String,
    /// Tokens generated, as the engine counts them (the UI path uses the engine path's count:
    /// the same prompt and options give the same answer).
    tokens: usize,
    prompt_tokens: usize,
    /// The agent's own measure of its time to the first token (its `timing` event).
    server_first: Option<Duration>,
}

/// What the agent's retrieval needs, set up in this process over the same store and engine.
struct Asked {
    embedder: OllamaEmbedder,
    owner: i64,
    retrieval: RetrievalConfig,
    policy: answer::SafetyPolicy,
}

impl Asked {
    /// The prompt the agent builds for `QUESTION` (as `clinical::AnswerJob` calls it: a new
    /// conversation, a clinician's sections, the patient and the library).
    async fn prompt(&self, conn: &rusqlite::Connection) -> Prompt {
        let captured = Capture::default();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let scope = Scope { patient: Some(self.owner), include_library: true };
        answer::answer_followup_streaming(
            conn,
            &self.embedder,
            &captured,
            Task::Question,
            QUESTION,
            &[],
            wardbox::clinical::minimum_necessary(Role::Clinician, TaskKind::Ask),
            &scope,
            &Access::AllPatients,
            &self.policy,
            self.retrieval,
            tx,
        )
        .await
        .expect("retrieval");
        captured.0.lock().expect("capture").take().expect("the question found sources and reached the model")
    }
}

/// A generator that keeps the prompt it is given and answers nothing.
#[derive(Default)]
struct Capture(Mutex<Option<Prompt>>);

impl Generator for Capture {
    fn model(&self) -> &str {
        CHAT_MODEL
    }

    fn generate<'a>(&'a self, prompt: &'a Prompt) -> GenerateFuture<'a> {
        *self.0.lock().expect("capture") = Some(prompt.clone());
        Box::pin(async { Ok(String::new()) })
    }
}

/// One kept-alive HTTP/1.1 connection to the engine's loopback TCP listener.
struct EngineClient {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl EngineClient {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the engine");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(conn);
        Self { addr, sender }
    }

    async fn ask(&mut self, body: &str) -> Run {
        if self.sender.is_closed() {
            *self = Self::connect(self.addr).await;
        }
        let request = hyper::Request::post("/api/chat")
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let started = Instant::now();
        self.sender.ready().await.expect("engine connection");
        let response = self.sender.send_request(request).await.expect("engine request");
        assert!(response.status().is_success(), "the engine answered {}", response.status());
        let mut body = response.into_body();
        let mut run = Run::default();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.expect("engine stream").into_data() else { continue };
            let now = started.elapsed();
            pending.extend_from_slice(&data);
            while let Some(cut) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=cut).collect();
                let v: serde_json::Value = serde_json::from_slice(&line).expect("an NDJSON line");
                assert!(v.get("error").is_none(), "the engine failed: {v}");
                let piece = v["message"]["content"].as_str().unwrap_or_default();
                if !piece.is_empty() {
                    if run.text.is_empty() {
                        run.first = now;
                    }
                    run.last = now;
                    run.text.push_str(piece);
                }
                if v["done"] == true {
                    run.end = now;
                    run.tokens = v["eval_count"].as_u64().unwrap_or_default() as usize;
                    run.prompt_tokens = v["prompt_eval_count"].as_u64().unwrap_or_default() as usize;
                }
            }
        }
        assert!(!run.text.is_empty() && run.end > Duration::ZERO, "the engine's answer was empty or unfinished");
        run
    }
}

/// A signed-in clinician's browser: one kept-alive TLS connection, the session cookie and the
/// page's CSRF token.
struct UiClient {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    sender: SendRequest<Full<Bytes>>,
    session: String,
    csrf: String,
}

impl UiClient {
    async fn connect(addr: SocketAddr, tls: &tokio_rustls::TlsConnector) -> SendRequest<Full<Bytes>> {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the web UI");
        stream.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from(addr.ip().to_string()).expect("server name");
        let stream = tls.connect(name, stream).await.expect("TLS handshake with the box");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(conn);
        sender
    }

    async fn request(&mut self, request: hyper::Request<Full<Bytes>>) -> hyper::Response<hyper::body::Incoming> {
        if self.sender.is_closed() {
            self.sender = Self::connect(self.addr, &self.tls).await;
        }
        self.sender.ready().await.expect("web connection");
        self.sender.send_request(request).await.expect("web request")
    }

    fn builder(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder().method(method).uri(path).header(header::HOST, self.addr.to_string())
    }

    async fn text(response: hyper::Response<hyper::body::Incoming>) -> String {
        String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).into_owned()
    }

    /// Sign in through the sign-in page, then read the CSRF token the pages carry.
    async fn sign_in(addr: SocketAddr, ca: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).expect("the box's CA").map(|c| c.expect("certificate")) {
            roots.add(cert).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_config =
            rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().expect("TLS").with_root_certificates(roots).with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config));
        let sender = Self::connect(addr, &tls).await;
        let mut client = Self { addr, tls, sender, session: String::new(), csrf: String::new() };

        let page = client.request(client.builder("GET", "/login").body(Full::default()).expect("request")).await;
        let login_cookie = cookie(&page, "wb_login").expect("the sign-in page sets its token cookie");
        let html = Self::text(page).await;
        let token = between(&html, "name=\"csrf\" value=\"", "\"").expect("the sign-in form's token").to_owned();
        let form = serde_urlencoded::to_string([("username", USERNAME), ("password", PASSWORD), ("csrf", token.as_str())]).expect("form");
        let signed = client
            .request(
                client
                    .builder("POST", "/login")
                    .header(header::COOKIE, format!("wb_login={login_cookie}"))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
                    .expect("request"),
            )
            .await;
        client.session = cookie(&signed, "wb_session").unwrap_or_else(|| panic!("sign-in refused: {}", signed.status()));
        let _ = Self::text(signed).await;
        let page = client.request(client.builder("GET", "/patients").header(header::COOKIE, client.cookie()).body(Full::default()).expect("request")).await;
        assert!(page.status().is_success(), "GET /patients: {}", page.status());
        let html = Self::text(page).await;
        client.csrf = between(&html, "data-csrf=\"", "\"").expect("the page's CSRF token").to_owned();
        client
    }

    fn cookie(&self) -> String {
        format!("wb_session={}", self.session)
    }

    /// Ask `QUESTION` about the patient in a new conversation, as the patient page does.
    async fn ask(&mut self, owner: i64) -> Run {
        let form = serde_urlencoded::to_string([("text", QUESTION), ("conversation", "")]).expect("form");
        let request = self
            .builder("POST", &format!("/patients/{owner}/ask"))
            .header(header::COOKIE, self.cookie())
            .header("x-csrf-token", &self.csrf)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::from(form)))
            .expect("request");
        let started = Instant::now();
        let response = self.request(request).await;
        assert!(response.status().is_success(), "POST ask: {}", response.status());
        let mut body = response.into_body();
        let mut run = Run { sent: Some(started), ..Run::default() };
        let mut pending = String::new();
        'stream: while let Some(frame) = body.frame().await {
            let Ok(data) = frame.expect("answer stream").into_data() else { continue };
            let now = started.elapsed();
            pending.push_str(std::str::from_utf8(&data).expect("UTF-8 events"));
            while let Some(cut) = pending.find("\n\n") {
                let raw: String = pending.drain(..cut + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                match event {
                    "token" => {
                        let piece: String = serde_json::from_str(&data).expect("a token event");
                        if run.text.is_empty() {
                            run.first = now;
                        }
                        run.last = now;
                        run.text.push_str(&piece);
                    }
                    "timing" => {
                        let t: serde_json::Value = serde_json::from_str(&data).expect("timing");
                        run.server_first = t["first_token_ms"].as_u64().map(Duration::from_millis);
                    }
                    "failed" => panic!("the answer failed: {data}"),
                    "done" => {
                        run.end = now;
                        break 'stream;
                    }
                    _ => {}
                }
            }
        }
        assert!(!run.text.is_empty() && run.end > Duration::ZERO, "the web UI's answer was empty or unfinished");
        // Read the rest (nothing), so the connection is ready for the next request.
        while body.frame().await.is_some() {}
        run
    }
}

/// Set-Cookie's value for `name`.
fn cookie<B>(response: &hyper::Response<B>, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap_or_default().to_owned()))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    Some(&text[from..from + text[from..].find(end)?])
}

/// The dev configuration with the local CA's TLS, the engine at `engine` (run by this bench,
/// as the agent would run it), and answers of at most `tokens` tokens.
fn write_config(base: &Path, web: SocketAddr, engine: SocketAddr, tokens: usize) {
    std::fs::create_dir_all(base).expect("box dir");
    let defaults = wardbox_cli(&["config", "defaults", "--base", path_str(base)], None);
    let mut config: toml::Table = defaults.parse().expect("the default configuration");
    let web_table = config.get_mut("web").and_then(|w| w.as_table_mut()).expect("[web]");
    web_table.insert("tls".into(), "local-ca".into());
    web_table.insert("listen".into(), web.to_string().into());
    web_table.insert("hostnames".into(), toml::Value::Array(vec!["127.0.0.1".into(), "localhost".into()]));
    let engine_table = config.get_mut("engine").and_then(|w| w.as_table_mut()).expect("[engine]");
    engine_table.insert("endpoint".into(), format!("http://{engine}/").into());
    let clinical = config.get_mut("clinical").and_then(|w| w.as_table_mut()).expect("[clinical]");
    assert_eq!(clinical.get("chat_model").and_then(|m| m.as_str()), Some(CHAT_MODEL), "the dev box's chat model changed");
    clinical.insert("max_answer_tokens".into(), (tokens as i64).into());
    std::fs::write(base.join("wardbox.toml"), toml::to_string(&config).expect("toml")).expect("write config");
}

/// `wardbox-engine serve` with the arguments and environment the agent gives the engine it
/// supervises in the dev profile (`stages::engine::engine_command`: both models resident, 4
/// slots of 2048 tokens, the CPU, passive OpenMP waiting); killed when the bench ends.
struct Engine(Child);

impl Engine {
    fn start(binary: &Path, store: &Path, addr: SocketAddr, log: &Path) -> Self {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--store", path_str(store), "--tcp", &addr.to_string(), "--preload", CHAT_MODEL, "--preload", EMBED_MODEL])
            .args(["--max-loaded", "2", "--slots", "4", "--ctx-per-slot", "2048", "--gpu-layers", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("engine log"));
        if std::env::var_os("OMP_WAIT_POLICY").is_none() {
            command.env("OMP_WAIT_POLICY", "PASSIVE");
        }
        let mut engine = Engine(command.spawn().expect("start wardbox-engine"));
        let deadline = Instant::now() + Duration::from_secs(300);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = engine.0.try_wait() {
                panic!("the engine exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "the engine did not listen within 300 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `wardbox dev` box, stopped with SIGTERM when the bench ends.
struct Agent(Child);

impl Agent {
    /// Up when the web UI answers and the demo records are indexed (the agent logs it).
    fn start(base: &Path, addr: SocketAddr, log: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["dev", "--base", path_str(base), "--listen", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("start wardbox dev");
        let mut agent = Agent(child);
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Ok(Some(status)) = agent.0.try_wait() {
                panic!("the dev box exited with {status}:\n{text}");
            }
            if text.contains("demo records not indexed") || text.contains("without an engine") {
                agent.stop();
                panic!("the dev box runs without its engine or demo records; this bench needs both:\n{text}");
            }
            if text.contains("synthetic demo records") && TcpStream::connect(addr).is_ok() {
                return agent;
            }
            assert!(Instant::now() < deadline, "the dev box was not ready within 900 s:\n{text}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                eprintln!("NOTE: the agent did not stop within 60 s of SIGTERM; killed");
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// Run a `wardbox` operator command; its standard output.
fn wardbox_cli(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wardbox");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(format!("{text}\n").as_bytes()).expect("stdin");
    }
    let out = child.wait_with_output().expect("wardbox");
    assert!(out.status.success(), "wardbox {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// `WARDBOX_ENGINE_BIN`, or the release engine in the target directory; missing is said.
fn engine_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WARDBOX_ENGINE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let release = target.join("release/wardbox-engine");
    assert!(
        release.exists(),
        "MISSING ENGINE BINARY: build it with `cargo build --release -p wardbox-engine` (looked for {}), or set WARDBOX_ENGINE_BIN",
        release.display()
    );
    release
}

/// The test model store, checked to hold both models.
fn model_store() -> PathBuf {
    let dir = std::env::var_os("WARDBOX_MODEL_STORE").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("WARDBOX_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wardbox/models"));
        cache.join("store")
    });
    for model in [CHAT_MODEL, EMBED_MODEL] {
        assert!(
            dir.join("manifests/registry.ollama.ai/library").join(model.replace(':', "/")).exists(),
            "MISSING TEST MODEL: {model} is not in {}; run models-bundle/fetch-test-model.sh and models-bundle/fetch-embedding-model.sh",
            dir.display()
        );
    }
    dir
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "unknown".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn min(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

fn median_f(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
