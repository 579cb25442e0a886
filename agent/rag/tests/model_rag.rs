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

/// The clinical question-answering evaluation with the bundled model: synthetic patients whose
/// records hold known facts (drugs, doses, labs, dates), one question per fact whose answer is
/// in one document, and questions the record has nothing on. Reports citation precision (a
/// cited passage holds the fact), the share of answers the checker finds unsupported items or
/// uncited sentences in, and "not found" for absent facts. Figures, not bars: they measure the
/// model; the checker's own bars are in `check_eval`, which does not depend on a model.
#[test]
fn model_qa_evaluation_reports_citation_precision_unsupported_answers_and_not_found() {
    use wardbox_rag::check::{self, CheckConfig};
    let engine = start_engine();
    let emb = OllamaEmbedder::new(&engine.url, EMBED_MODEL, index::DIMS).expect("embedder");
    let llm = OllamaGenerator::new(&engine.url, CHAT_MODEL, 96).expect("generator");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = index::open_encrypted(&dir.path().join("w.db"), &[0x44; 32]).expect("store");
    let rt = rt();
    let c = corpus();
    for d in &c.docs {
        rt.block_on(ingest::ingest_bytes(&mut conn, &emb, &d.name, &d.bytes, &d.owner(), ChunkConfig::default())).expect("ingest");
    }
    let cfg = RetrievalConfig::default();
    let (mut answered, mut cited_answers, mut cites, mut precise_cites, mut fact_cited) = (0, 0, 0, 0, 0);
    let (mut with_unsupported, mut with_uncited, mut items, mut unsupported_items) = (0, 0, 0, 0);
    let mut check_time = Duration::ZERO;
    let mut generation_time = Duration::ZERO;
    for f in &c.facts {
        let (scope, access) = match f.record_id {
            Some(r) => (Scope { patient: Some(index::find_patient(&conn, r).expect("f").expect("patient")), include_library: false }, Access::AllPatients),
            None => (Scope { patient: None, include_library: true }, Access::Patients(Default::default())),
        };
        let started = Instant::now();
        let ans = rt.block_on(answer::answer(&conn, &emb, &llm, Task::Question, f.question, &scope, &access, &SafetyPolicy::default(), cfg, false)).expect("answer");
        generation_time += started.elapsed();
        answered += 1;
        let marker = f.marker.to_lowercase();
        if !ans.cited.is_empty() {
            cited_answers += 1;
        }
        cites += ans.cited.len();
        precise_cites += ans.cited.iter().filter(|s| s.text.to_lowercase().contains(&marker)).count();
        if ans.cited.iter().any(|s| s.text.to_lowercase().contains(&marker)) {
            fact_cited += 1;
        }
        let started = Instant::now();
        let checked = check::check(&ans.text, &ans.sources, &CheckConfig::default());
        check_time += started.elapsed();
        items += checked.counts.items;
        unsupported_items += checked.counts.unsupported;
        with_unsupported += usize::from(checked.has_unsupported());
        with_uncited += usize::from(checked.counts.not_cited > 0);
    }
    // Facts no record holds: the answer should be "not found" (retrieval finds nothing
    // relevant, or the model says so).
    let absent = [
        ("00451234", "What did the colonoscopy in 2015 show?"),
        ("00451234", "Which vaccine caused the anaphylaxis in childhood?"),
        ("00982210", "What was the result of the sleep study?"),
        ("00982210", "Which chemotherapy regimen was given?"),
    ];
    let mut not_found = 0;
    for (record, question) in absent {
        let scope = Scope { patient: Some(index::find_patient(&conn, record).expect("f").expect("patient")), include_library: false };
        let ans = rt.block_on(answer::answer(&conn, &emb, &llm, Task::Question, question, &scope, &Access::AllPatients, &SafetyPolicy::default(), cfg, false)).expect("answer");
        not_found += usize::from(ans.not_found);
    }
    println!("\nclinical QA with {CHAT_MODEL} ({answered} questions whose answer is in one document):");
    println!("  answers citing a source: {cited_answers} of {answered}");
    println!("  citation precision (a cited passage holds the fact): {precise_cites} of {cites} citations");
    println!("  answers citing the passage with the fact: {fact_cited} of {answered}");
    println!("  answers with an unsupported item (checker): {with_unsupported} of {answered} ({unsupported_items} of {items} items)");
    println!("  answers with a sentence citing nothing: {with_uncited} of {answered}");
    println!("  absent facts answered \"not found\": {not_found} of {}", absent.len());
    println!(
        "  time per answer: retrieval + generation {:.0} ms, check {:.0} µs",
        generation_time.as_secs_f64() * 1e3 / answered as f64,
        check_time.as_secs_f64() * 1e6 / answered as f64
    );
    assert_eq!(answered, c.facts.len(), "every question was answered");
    assert!(precise_cites <= cites && fact_cited <= answered);
}
