//! Retrieval and answering with the real embedding model (all-MiniLM-L6-v2, converted to GGUF)
//! and a real chat model (SmolLM2 135M Instruct), both served by the real `wardbox-engine`
//! over its Ollama API, into a real SQLCipher store.
//!
//! Needs: the engine binary (`cargo build -p wardbox-engine`; found at WARDBOX_ENGINE_BIN or
//! in the workspace's target/{release,debug}) and a model store holding `all-minilm:l6-v2`
//! (models-bundle/fetch-embedding-model.sh) and `smollm2:135m` (fetch-test-model.sh), at
//! WARDBOX_MODEL_STORE or ~/.cache/wardbox/models/store. Missing either fails the test with
//! that message; it never passes silently.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wardbox_rag::answer::{self, OllamaGenerator, RetrievalConfig, SafetyPolicy, Task};
use wardbox_rag::embed::{Embedder, OllamaEmbedder};
use wardbox_rag::index::{self, Access, Scope};
use wardbox_rag::ingest::{self, ChunkConfig, Outcome};
use wardbox_rag::synth::corpus;

const EMBED_MODEL: &str = "all-minilm:l6-v2";
const CHAT_MODEL: &str = "smollm2:135m";

struct Engine {
    child: Child,
    url: String,
    // Held while the engine lives: the tests of this file run one engine at a time. Two at once
    // can race for the same free port (each binds port 0, drops it, then starts its engine
    // there, so both would talk to one engine), and two engines loading models on 2 cores
    // starve each other.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start_engine() -> Engine {
    // A test that panicked while holding the lock poisons it; the next test still runs.
    let one_at_a_time = ONE_ENGINE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bin = std::env::var_os("WARDBOX_ENGINE_BIN").map(PathBuf::from).or_else(|| {
        ["target/release/wardbox-engine", "target/debug/wardbox-engine"].iter().map(|p| workspace().join(p)).find(|p| p.exists())
    });
    let Some(bin) = bin.filter(|b| b.exists()) else {
        panic!("model_ test: the wardbox-engine binary is missing: build it (cargo build -p wardbox-engine) or set WARDBOX_ENGINE_BIN");
    };
    let store = std::env::var_os("WARDBOX_MODEL_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/wardbox/models/store"));
    for (model, script) in [("all-minilm/l6-v2", "models-bundle/fetch-embedding-model.sh"), ("smollm2/135m", "models-bundle/fetch-test-model.sh")] {
        let manifest = store.join("manifests/registry.ollama.ai/library").join(model);
        assert!(manifest.exists(), "model_ test: {} is not in the model store {} ({} missing): run {script}", model.replace('/', ":"), store.display(), manifest.display());
    }
    let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let child = Command::new(&bin)
        .args(["serve", "--store"])
        .arg(&store)
        .args(["--tcp", &format!("127.0.0.1:{port}"), "--slots", "2", "--ctx-per-slot", "2048"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("model_ test: cannot start {}: {e}", bin.display()));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "model_ test: the engine did not listen on port {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Engine { child, url: format!("http://127.0.0.1:{port}/"), _one_at_a_time: one_at_a_time }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn model_retrieval_top5_holds_the_chunk_with_the_fact_and_unrelated_is_not_found() {
    let engine = start_engine();
    let emb = OllamaEmbedder::new(&engine.url, EMBED_MODEL, index::DIMS).expect("embedder");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = index::open_encrypted(&dir.path().join("w.db"), &[0x42; 32]).expect("store");
    let rt = rt();
    let c = corpus();
    let mut doc_ids: HashMap<String, i64> = HashMap::new();
    let started = Instant::now();
    let mut chunks = 0;
    for d in &c.docs {
        match rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &d.name, &d.bytes, &d.owner(), ChunkConfig::default())).expect("ingest") {
            Outcome::Ingested { document_id, chunks: n, .. } => {
                doc_ids.insert(d.name.clone(), document_id);
                chunks += n;
            }
            other => panic!("{other:?}"),
        }
    }
    println!("ingested {chunks} chunks in {:.2} s with {EMBED_MODEL} through the engine", started.elapsed().as_secs_f64());

    let cfg = RetrievalConfig::default();
    let mut failures = Vec::new();
    println!("{:<62} {:>4} {:>8}", "question", "rank", "distance");
    for f in &c.facts {
        let (scope, access) = match f.record_id {
            Some(r) => (Scope { patient: Some(index::find_patient(&conn, r).expect("f").expect("patient")), include_library: false }, Access::AllPatients),
            None => (Scope { patient: None, include_library: true }, Access::Patients(Default::default())),
        };
        let hits = rt.block_on(answer::retrieve(&conn, &emb, f.question, &scope, &access, RetrievalConfig { k: 5, ..cfg })).expect("retrieve");
        let want = doc_ids[f.document];
        let found = hits.iter().position(|h| h.document_id == want && h.text.to_lowercase().contains(&f.marker.to_lowercase()));
        let dist = found.and_then(|i| hits[i].distance);
        println!("{:<62} {:>4} {:>8}", f.question, found.map_or("-".into(), |i| (i + 1).to_string()), dist.map_or("-".into(), |d| format!("{d:.3}")));
        if found.is_none() {
            for h in &hits {
                println!("    got doc {} d={:?}: {:.120}", h.document_id, h.distance, h.text.replace('\n', " "));
            }
            failures.push(f.question);
        }
    }
    assert!(failures.is_empty(), "the chunk with the fact was not in the top 5 for: {failures:?}");

    // A question the record has nothing on: no source passes the relevance bar, so the answer
    // is "not found" without asking the model.
    let a = index::find_patient(&conn, "00451234").expect("f").expect("A");
    let llm = OllamaGenerator::new(&engine.url, CHAT_MODEL, 64).expect("generator");
    let nf = rt
        .block_on(answer::answer(&conn, &emb, &llm, Task::Question, "What is the boiling point of liquid nitrogen on Saturn's moons?", &Scope { patient: Some(a), include_library: false }, &Access::AllPatients, &SafetyPolicy::default(), cfg, false))
        .expect("answer");
    assert!(nf.not_found, "an unrelated question found sources: {:?}", nf.sources.iter().map(|s| &s.text).collect::<Vec<_>>());
}

#[test]
fn model_answer_through_the_engine_cites_numbered_sources() {
    let engine = start_engine();
    let emb = OllamaEmbedder::new(&engine.url, EMBED_MODEL, index::DIMS).expect("embedder");
    let llm = OllamaGenerator::new(&engine.url, CHAT_MODEL, 96).expect("generator");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = index::open_encrypted(&dir.path().join("w.db"), &[0x43; 32]).expect("store");
    let rt = rt();
    for d in corpus().docs.iter().filter(|d| d.name.starts_with("castellanos")) {
        rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &d.name, &d.bytes, &d.owner(), ChunkConfig::default())).expect("ingest");
    }
    let a = index::find_patient(&conn, "00451234").expect("f").expect("A");
    let scope = Scope { patient: Some(a), include_library: false };
    for task in [Task::Question, Task::MedicationList] {
        let q = if task == Task::Question { "Which new diabetes medication was started?" } else { "List her medications." };
        // The medication list streams, as the web UI uses it; the pieces add up to the answer.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ans = if task == Task::MedicationList {
            rt.block_on(answer::answer_streaming(&conn, &emb, &llm, task, q, &scope, &Access::AllPatients, &SafetyPolicy::default(), RetrievalConfig::default(), true, tx)).expect("answer")
        } else {
            rt.block_on(answer::answer(&conn, &emb, &llm, task, q, &scope, &Access::AllPatients, &SafetyPolicy::default(), RetrievalConfig::default(), true)).expect("answer")
        };
        let mut streamed = String::new();
        let mut pieces = 0;
        while let Ok(p) = rx.try_recv() {
            streamed.push_str(&p);
            pieces += 1;
        }
        if task == Task::MedicationList {
            assert!(pieces > 1, "the answer did not stream ({pieces} pieces)");
            assert_eq!(streamed, ans.text);
        }
        println!("{task:?}: {} sources; answer {:?}; cited {:?}; unresolved {:?}", ans.sources.len(), ans.text, ans.cited.iter().map(|s| s.n).collect::<Vec<_>>(), ans.unresolved_citations);
        assert!(!ans.not_found && !ans.sources.is_empty());
        assert!(!ans.text.trim().is_empty(), "the model returned nothing");
        // Every citation the model made is either resolved to a stored passage or reported.
        for s in &ans.cited {
            let chunk = index::chunk(&conn, s.chunk_id, &Access::AllPatients).expect("resolve").expect("exists");
            assert_eq!(chunk.text, s.text);
        }
        let (qa, ra) = answer::audit_detail(task, q, &ans, Some(a));
        let audit = format!("{qa}{ra}");
        assert!(!audit.contains("diabetes") && !audit.contains("Castellanos"), "{audit}");
    }
    let _ = emb.model();
}
