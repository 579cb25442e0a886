//! The engine binary with real models (tier `model_`): Gemma 3 270M (base) and SmolLM2 135M
//! Instruct from the store that `models-bundle/fetch-test-model.sh` fills. These tests fail,
//! naming the script, when the models are not there.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use wardbox_models_bundle::{ModelName, Store};

const GEMMA: &str = "gemma3:270m";
const SMOL: &str = "smollm2:135m";

fn store_dir() -> PathBuf {
    if let Ok(s) = std::env::var("WARDBOX_MODEL_STORE") {
        return PathBuf::from(s);
    }
    let cache = std::env::var("WARDBOX_MODEL_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/wardbox/models")
    });
    cache.join("store")
}

/// The test store, or a failure that says how to get it.
fn store() -> Store {
    let dir = store_dir();
    let store = Store::new(&dir);
    for m in [GEMMA, SMOL] {
        let name: ModelName = m.parse().unwrap();
        if store.entry(&name).is_err() {
            panic!(
                "MISSING TEST MODEL: {m} is not in the model store {}. Run models-bundle/fetch-test-model.sh \
                 (or set WARDBOX_MODEL_STORE to a store that has it).",
                dir.display()
            );
        }
    }
    store
}

/// A running `wardbox-engine serve`, killed on drop.
struct Engine {
    child: Child,
    socket: PathBuf,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(store: &Path, preload: &[&str], extra: &[&str]) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wardbox-engine"));
    cmd.arg("serve")
        .arg("--store")
        .arg(store)
        .arg("--socket")
        .arg(&socket)
        .args(["--tcp", "127.0.0.1:0", "--ctx-per-slot", "1024", "--threads", "1"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for p in preload {
        cmd.args(["--preload", p]);
    }
    let mut child = cmd.spawn().expect("spawn wardbox-engine");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| {
        let status = child.wait().ok();
        panic!("engine did not start (exit {status:?}); first stdout line {line:?}")
    });
    Engine { base: base.to_owned(), socket, child, _dir: dir }
}

/// Where a request goes: the Unix socket, or TCP.
enum To<'a> {
    Unix(&'a Path),
    Tcp(&'a str),
}

async fn call(to: To<'_>, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Vec<u8>) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = match to {
        To::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
        To::Tcp(base) => {
            let addr = base.strip_prefix("http://").unwrap();
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
    };
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, bytes)
}

async fn post(e: &Engine, path: &str, body: Value) -> (StatusCode, Value) {
    let (s, b) = call(To::Tcp(&e.base), "POST", path, Some(body)).await;
    let v = serde_json::from_slice(&b).unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&b)));
    (s, v)
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes).lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Greedy, no repetition penalty: fully deterministic.
fn greedy(n: u32) -> Value {
    json!({ "temperature": 0, "repeat_penalty": 1.0, "num_predict": n })
}

#[tokio::test(flavor = "multi_thread")]
async fn model_chat_streams_over_the_unix_socket_and_ends_with_final_stats() {
    let e = start(store().root(), &[GEMMA], &[]);
    let (status, body) = call(
        To::Unix(&e.socket),
        "POST",
        "/api/chat",
        Some(json!({ "model": GEMMA, "messages": [{"role": "user", "content": "Tell me about the sea."}], "options": greedy(12) })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let lines = lines(&body);
    assert!(lines.len() >= 2, "expected token lines and a final line, got {lines:?}");
    let (last, tokens) = lines.split_last().unwrap();
    for l in tokens {
        assert_eq!(l["done"], json!(false));
        assert_eq!(l["message"]["role"], json!("assistant"));
        assert!(l["message"]["content"].is_string());
        assert!(l["created_at"].as_str().unwrap().contains('T'));
    }
    let text: String = tokens.iter().map(|l| l["message"]["content"].as_str().unwrap()).collect();
    assert!(!text.trim().is_empty(), "no text streamed");
    assert_eq!(last["done"], json!(true));
    assert!(matches!(last["done_reason"].as_str(), Some("stop" | "length")), "{last}");
    for k in ["total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"] {
        assert!(last[k].is_u64(), "final line lacks {k}: {last}");
    }
    for k in ["total_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"] {
        assert!(last[k].as_u64().unwrap() > 0, "{k} is zero: {last}");
    }
    assert!(last["eval_count"].as_u64().unwrap() <= 12);

    // The same over TCP, non-streaming, gives the same text (greedy).
    let (s, v) = post(&e, "/api/chat", json!({ "model": GEMMA, "stream": false,
        "messages": [{"role": "user", "content": "Tell me about the sea."}], "options": greedy(12) })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["message"]["content"].as_str().unwrap(), text);
}

#[tokio::test(flavor = "multi_thread")]
async fn model_greedy_and_seeded_sampling_are_reproducible() {
    let e = start(store().root(), &[GEMMA], &[]);
    let generate = |options: Value| {
        let e = &e;
        async move {
            let (s, v) = post(e, "/api/generate", json!({ "model": GEMMA, "prompt": "Once upon a time", "stream": false, "options": options })).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            (v["response"].as_str().unwrap().to_owned(), v["context"].clone())
        }
    };
    let a = generate(greedy(24)).await;
    let b = generate(greedy(24)).await;
    assert!(!a.0.is_empty());
    assert_eq!(a, b, "greedy decoding must give identical tokens");

    let seeded = |seed: u32| json!({ "temperature": 1.0, "top_k": 100, "top_p": 1.0, "seed": seed, "num_predict": 24 });
    let s1 = generate(seeded(42)).await;
    let s2 = generate(seeded(42)).await;
    let s3 = generate(seeded(7)).await;
    assert_eq!(s1, s2, "the same seed must give the same sample");
    assert_ne!(s1.1, s3.1, "different seeds gave the same 24 sampled tokens");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_stop_sequences_stop_and_num_predict_caps() {
    let e = start(store().root(), &[GEMMA], &[]);
    let req = |options: Value| json!({ "model": GEMMA, "prompt": "Write a long story about a lighthouse keeper.", "stream": false, "options": options });
    let (_, full) = post(&e, "/api/generate", req(greedy(48))).await;
    let text = full["response"].as_str().unwrap().to_owned();
    assert!(full["eval_count"].as_u64().unwrap() > 8, "need a long greedy answer to test with: {full}");

    // num_predict caps the answer at exactly that many tokens.
    let (_, capped) = post(&e, "/api/generate", req(greedy(5))).await;
    assert_eq!(capped["eval_count"], json!(5), "{capped}");
    assert_eq!(capped["done_reason"], json!("length"));
    assert!(text.starts_with(capped["response"].as_str().unwrap()));

    // A stop sequence taken from the middle of the greedy answer: the answer ends just before it.
    let chars: Vec<char> = text.chars().collect();
    let mid = chars.len() / 2;
    let stop: String = chars[mid..(mid + 4).min(chars.len())].iter().collect();
    let expected = &text[..text.find(&stop).unwrap()];
    let mut opts = greedy(48);
    opts["stop"] = json!([stop]);
    let (_, stopped) = post(&e, "/api/generate", req(opts.clone())).await;
    assert_eq!(stopped["response"].as_str().unwrap(), expected, "stop {stop:?}");
    assert_eq!(stopped["done_reason"], json!("stop"));

    // Streaming: the stop sequence never leaks, even split over tokens.
    let mut sreq = req(opts);
    sreq["stream"] = json!(true);
    let (_, body) = call(To::Tcp(&e.base), "POST", "/api/generate", Some(sreq)).await;
    let streamed: String = lines(&body).iter().map(|l| l["response"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(streamed, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn model_embedding_has_the_models_dimension() {
    let store = store();
    let resolved = store.resolve(&GEMMA.parse().unwrap()).unwrap();
    let md = wardbox_models_bundle::gguf::Metadata::read(&mut BufReader::new(std::fs::File::open(&resolved.model_path).unwrap())).unwrap();
    let dim = md.embedding_length().expect("GGUF records its embedding length") as usize;
    let e = start(store.root(), &[GEMMA], &[]);
    let (s, v) = post(&e, "/api/embed", json!({ "model": GEMMA, "input": ["The patient reports a headache.", "Quarterly tax filing deadlines"] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let embs = v["embeddings"].as_array().unwrap();
    assert_eq!(embs.len(), 2);
    let vecs: Vec<Vec<f64>> = embs.iter().map(|e| e.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
    for vec in &vecs {
        assert_eq!(vec.len(), dim, "embedding length must be the model's embedding_length");
        let norm: f64 = vec.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "embeddings are L2-normalised, got norm {norm}");
    }
    assert_ne!(vecs[0], vecs[1]);
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 4);
}

const MINILM: &str = "all-minilm:l6-v2";

/// The store with the embedding model as well, or a failure that says how to get it.
fn embedding_store() -> Store {
    let store = store();
    if store.entry(&MINILM.parse().unwrap()).is_err() {
        panic!(
            "MISSING TEST MODEL: {MINILM} is not in the model store {}. Run models-bundle/fetch-embedding-model.sh \
             (or set WARDBOX_MODEL_STORE to a store that has it).",
            store_dir().display()
        );
    }
    store
}

fn vectors(v: &Value) -> Vec<Vec<f64>> {
    v["embeddings"].as_array().unwrap().iter().map(|e| e.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

/// Inputs of very different lengths (a few tokens to a few hundred), each different.
fn varied_inputs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let words = [3, 40, 120, 9, 200, 60][i % 6];
            let body: Vec<String> = (0..words).map(|w| format!("w{}", (i * 31 + w * 7) % 97)).collect();
            format!("Note {i}: the patient reports {}.", body.join(" "))
        })
        .collect()
}

/// Several inputs share one decode; each must come out as if it had been embedded alone: a
/// sequence that leaked into another's attention or pooling would move its vector far more
/// than the tolerance (measured: max |diff| 1e-4, cosine 0.9999994). An encoder (MiniLM, no KV
/// cache) with more inputs than one decode takes (32) and an embedding batch smaller than the
/// inputs together, so the request needs several decodes; and a decoder with a KV cache
/// (Gemma), which embeds one input per decode (docs/engine.md) and must match as well.
#[tokio::test(flavor = "multi_thread")]
async fn model_batched_embeddings_match_one_at_a_time() {
    let store = embedding_store();
    for (model, n) in [(MINILM, 40), (GEMMA, 6)] {
        let e = start(store.root(), &[model], &["--embed-batch", "1024"]);
        let inputs = varied_inputs(n);
        let (s, together) = post(&e, "/api/embed", json!({ "model": model, "input": inputs })).await;
        assert_eq!(s, StatusCode::OK, "{together}");
        let together_count = together["prompt_eval_count"].as_u64().unwrap();
        let together = vectors(&together);
        assert_eq!(together.len(), n);
        let mut alone_count = 0;
        for (i, input) in inputs.iter().enumerate() {
            let (s, alone) = post(&e, "/api/embed", json!({ "model": model, "input": [input] })).await;
            assert_eq!(s, StatusCode::OK, "{alone}");
            alone_count += alone["prompt_eval_count"].as_u64().unwrap();
            let alone = &vectors(&alone)[0];
            let max_diff = alone.iter().zip(&together[i]).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let cos: f64 = alone.iter().zip(&together[i]).map(|(a, b)| a * b).sum();
            assert!(max_diff < 1e-3 && cos > 0.99999, "{model}: input {i} embedded with others differs from alone: max |diff| {max_diff}, cosine {cos}");
        }
        assert_eq!(together_count, alone_count, "{model}: prompt_eval_count counts every input's tokens once");
        // Different inputs still get different vectors (a batch that pooled them all together
        // would give one vector n times).
        assert!(together[0] != together[1] && together[1] != together[n - 1]);
    }
}

/// The manifest digest of each model the engine has loaded (`/api/ps`).
async fn loaded_digests(e: &Engine) -> Vec<String> {
    let (_, ps) = call(To::Tcp(&e.base), "GET", "/api/ps", None).await;
    let ps: Value = serde_json::from_slice(&ps).unwrap();
    ps["models"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()).collect()
}

/// A models bundle replaces a model under the same name while the engine runs: the next
/// request is answered by the new weights, with no restart (the engine sees the store's
/// manifest change and loads the model again).
#[tokio::test(flavor = "multi_thread")]
async fn model_replaced_in_the_store_is_loaded_again() {
    let src = store();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let name: ModelName = "swap:1".parse().unwrap();
    let import = |from: &str| {
        let gguf = src.resolve(&from.parse().unwrap()).unwrap().model_path;
        store
            .import(&wardbox_models_bundle::ImportRequest { name: name.clone(), gguf, template: None, params: None, licenses: vec![], system: None })
            .unwrap();
        store.entry(&name).unwrap().manifest_digest.hex().to_owned()
    };
    let smol = import(SMOL);
    let e = start(store.root(), &[], &[]);
    let ask = json!({ "model": "swap:1", "prompt": "The capital of France is", "raw": true, "stream": false, "options": greedy(2) });
    let (s, v) = post(&e, "/api/generate", ask.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(loaded_digests(&e).await, vec![smol.clone()]);

    let gemma = import(GEMMA);
    assert_ne!(gemma, smol);
    let (s, v) = post(&e, "/api/generate", ask).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(loaded_digests(&e).await, vec![gemma], "the engine still answers with the replaced weights");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_corrupted_blob_is_refused() {
    let src = store();
    let gguf = src.resolve(&GEMMA.parse().unwrap()).unwrap().model_path;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let name: ModelName = GEMMA.parse().unwrap();
    store
        .import(&wardbox_models_bundle::ImportRequest { name: name.clone(), gguf, template: None, params: None, licenses: vec![], system: None })
        .unwrap();
    let blob = store.resolve(&name).unwrap().model_path;
    // Flip one byte in the middle of the weights, as a bad disk sector or tampering would.
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&blob).unwrap();
        let at = f.metadata().unwrap().len() / 2;
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0x40]).unwrap();
    }
    let e = start(store.root(), &[], &[]);
    let (s, v) = post(&e, "/api/chat", json!({ "model": GEMMA, "messages": [{"role": "user", "content": "hi"}] })).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("corrupted") && err.contains(&blob.file_name().unwrap().to_string_lossy()[7..]), "{err}");
    let (_, ps) = call(To::Tcp(&e.base), "GET", "/api/ps", None).await;
    assert_eq!(serde_json::from_slice::<Value>(&ps).unwrap()["models"], json!([]), "nothing may be loaded");
    // An unknown model is a 404, as in Ollama.
    let (s, _) = post(&e, "/api/chat", json!({ "model": "nope:1", "messages": [{"role": "user", "content": "hi"}] })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    drop(e);

    // Preloading a corrupted model: the engine refuses to start.
    let out = Command::new(env!("CARGO_BIN_EXE_wardbox-engine"))
        .args(["serve", "--tcp", "127.0.0.1:0", "--preload", GEMMA, "--store"])
        .arg(store.root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupted"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn model_eight_simultaneous_chats_complete() {
    let e = start(store().root(), &[GEMMA], &["--slots", "8"]);
    let topics = ["rain", "mountains", "bread", "music", "rivers", "stars", "trains", "gardens"];
    let tasks: Vec<_> = topics
        .iter()
        .map(|t| {
            let base = e.base.clone();
            let body = json!({ "model": GEMMA, "messages": [{"role": "user", "content": format!("Write about {t}.")}], "options": greedy(24) });
            tokio::spawn(async move { call(To::Tcp(&base), "POST", "/api/chat", Some(body)).await })
        })
        .collect();
    // Watch the engine while they run: with 8 slots, requests are decoded together, not one
    // after another, so several are in flight at the same moment.
    let mut max_in_flight = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        let (_, ps) = call(To::Tcp(&e.base), "GET", "/api/ps", None).await;
        let ps: Value = serde_json::from_slice(&ps).unwrap();
        max_in_flight = max_in_flight.max(ps["models"][0]["in_flight"].as_u64().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        let (s, b) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        let lines = lines(&b);
        let last = lines.last().unwrap();
        assert_eq!(last["done"], json!(true), "{last}");
        assert!(last["eval_count"].as_u64().unwrap() > 0);
        let text: String = lines.iter().map(|l| l["message"]["content"].as_str().unwrap_or("")).collect();
        assert!(!text.trim().is_empty());
    }
    assert!(max_in_flight >= 4, "expected the chats to run together, saw at most {max_in_flight} in flight");
    let (_, ps) = call(To::Tcp(&e.base), "GET", "/api/ps", None).await;
    let ps: Value = serde_json::from_slice(&ps).unwrap();
    assert_eq!(ps["models"][0]["slots"], json!(8));
    assert_eq!(ps["models"][0]["in_flight"], json!(0), "every slot is freed after its answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_busy_beyond_the_queue_is_503() {
    let e = start(store().root(), &[GEMMA], &["--slots", "1", "--queue", "1"]);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let base = e.base.clone();
            let body = json!({ "model": GEMMA, "prompt": "Write a long essay.", "stream": false, "options": greedy(200) });
            tokio::spawn(async move { call(To::Tcp(&base), "POST", "/api/generate", Some(body)).await })
        })
        .collect();
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(String::from_utf8_lossy(&b).contains("busy"), "{}", String::from_utf8_lossy(&b));
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&b)),
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_gemma_chat_template_matches_the_handwritten_format() {
    let e = start(store().root(), &[GEMMA], &[]);
    let (_, templated) = post(&e, "/api/generate", json!({ "model": GEMMA, "prompt": "Hello there", "stream": false, "options": greedy(1) })).await;
    let handwritten = "<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n";
    let (_, raw) = post(&e, "/api/generate", json!({ "model": GEMMA, "prompt": handwritten, "raw": true, "stream": false, "options": greedy(1) })).await;
    assert_eq!(templated["prompt_eval_count"], raw["prompt_eval_count"], "{templated} vs {raw}");
    assert_eq!(templated["context"], raw["context"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn model_instruct_model_answers_with_its_gguf_template() {
    let e = start(store().root(), &[SMOL], &[]);
    let (s, v) = post(&e, "/api/chat", json!({ "model": SMOL, "stream": false, "options": greedy(24),
        "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let answer = v["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "SmolLM2 with its ChatML template should answer Paris: {answer:?}");
    let (_, show) = post(&e, "/api/show", json!({ "model": SMOL })).await;
    assert_eq!(show["details"]["family"], json!("llama"));
    assert!(show["model_info"]["general.architecture"] == json!("llama"), "{}", show["model_info"]);
    // No template layer in the store: show reports the GGUF's own (ChatML) template.
    let template = show["template"].as_str().unwrap();
    assert!(template.contains("<|im_start|>") && template.contains("<|im_end|>"), "{template:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_ollama_rs_client_works() {
    use ollama_rs::Ollama;
    use ollama_rs::generation::chat::ChatMessage;
    use ollama_rs::generation::chat::request::ChatMessageRequest;
    use ollama_rs::generation::completion::request::GenerationRequest;
    use ollama_rs::generation::embeddings::request::GenerateEmbeddingsRequest;
    use ollama_rs::models::ModelOptions;
    use tokio_stream::StreamExt;

    let e = start(store().root(), &[GEMMA], &[]);
    let client = Ollama::try_new(format!("{}/", e.base)).unwrap();
    let models = client.list_local_models().await.unwrap();
    assert!(models.iter().any(|m| m.name == GEMMA), "{models:?}");
    let info = client.show_model_info(GEMMA.into()).await.unwrap();
    assert!(info.template.contains("<start_of_turn>"));
    assert!(info.license.contains("Gemma"));

    let opts = ModelOptions::default().temperature(0.0).num_predict(8).repeat_penalty(1.0);
    let r = client.generate(GenerationRequest::new(GEMMA.into(), "The sea is").options(opts.clone())).await.unwrap();
    assert!(r.done && !r.response.is_empty());
    assert_eq!(r.eval_count, Some(8));

    let req = ChatMessageRequest::new(GEMMA.into(), vec![ChatMessage::user("Tell me a fact.".into())]).options(opts);
    let mut stream = client.send_chat_messages_stream(req).await.unwrap();
    let mut text = String::new();
    let mut final_data = None;
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        text.push_str(&item.message.content);
        if item.done {
            final_data = item.final_data;
        }
    }
    assert!(!text.is_empty());
    let f = final_data.expect("the last chunk carries the final stats");
    assert!(f.eval_count > 0 && f.prompt_eval_count > 0 && f.total_duration > 0);

    let emb = client
        .generate_embeddings(GenerateEmbeddingsRequest::new(GEMMA.into(), vec!["a", "b"].into()))
        .await
        .unwrap();
    assert_eq!(emb.embeddings.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn model_python_ollama_client_works() {
    let e = start(store().root(), &[GEMMA], &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ollama_python_client.py");
    // The venv fetch-test-model.sh makes, unless PYTHON names another interpreter.
    let venv = store_dir().parent().map(|c| c.join("venv/bin/python3"));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| match venv {
        Some(v) if v.exists() => v.display().to_string(),
        _ => "python3".into(),
    });
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&e.base)
        .arg(GEMMA)
        .output()
        .await
        .unwrap_or_else(|err| panic!("MISSING: cannot run {python} ({err}); run models-bundle/fetch-test-model.sh (it makes a venv with the ollama client)"));
    assert!(
        out.status.success(),
        "the ollama Python client failed against the engine:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refuses_a_non_loopback_tcp_address() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_wardbox-engine"))
        .args(["serve", "--tcp", "0.0.0.0:11434", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only listens on loopback"));
    assert!(started.elapsed() < Duration::from_secs(30));
}
