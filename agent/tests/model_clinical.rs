//! The clinical back end end to end (tier `model_`): the real engine (SmolLM2 135M Instruct for answers,
//! all-MiniLM-L6-v2 for embeddings), a real SQLCipher store at the agent's schema, the
//! synthetic corpus indexed the way the dev profile does it, per-user grants, streamed answers
//! re-identified for the viewer, citations that resolve, uploads.
//!
//! Needs the engine binary and the test store (models-bundle/fetch-test-model.sh); fails
//! saying which when either is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod model_support;

use std::sync::Arc;
use std::time::Duration;

use model_support::{MINILM, SMOLLM2, engine_config};
use wardbox::clinical::pool::StorePool;
use wardbox::clinical::{self, ClinicalConfig, PatientAccess, RagClinical};
use wardbox::stages::engine;
use wardbox::store::{Store, StoreKey};
use wardbox::web::Role;
use wardbox::web::clinical::{AnswerCheck, AnswerEvent, Citation, Clinical, ClinicalError, TaskKind, Viewer};
use wardbox_rag::index;

const CASTELLANOS_MRN: &str = "00451234";
const LINDQVIST_MRN: &str = "00982210";

/// Run a back-end call the way the web layer does: off the async threads.
async fn call<T: Send + 'static>(rag: &Arc<RagClinical>, f: impl FnOnce(&RagClinical) -> T + Send + 'static) -> T {
    let rag = rag.clone();
    tokio::task::spawn_blocking(move || f(&rag)).await.expect("blocking call")
}

fn viewer(username: &str, role: Role, break_glass: bool) -> Viewer {
    Viewer { username: username.into(), role, break_glass }
}

#[derive(Debug, Default)]
struct Streamed {
    /// (id, turn, carried, dropped) of the conversation the answer belongs to.
    conversation: Option<(String, usize, usize, usize)>,
    /// From the call to the first token.
    first_token: Option<Duration>,
    text: String,
    check: Option<AnswerCheck>,
    citations: Vec<Citation>,
    footer: Option<String>,
    audit: Option<serde_json::Value>,
    done: Option<String>,
    failed: Option<String>,
}

async fn collect(rx: tokio::sync::mpsc::Receiver<AnswerEvent>) -> Streamed {
    collect_since(rx, std::time::Instant::now()).await
}

async fn collect_since(mut rx: tokio::sync::mpsc::Receiver<AnswerEvent>, asked: std::time::Instant) -> Streamed {
    let mut s = Streamed::default();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(300), rx.recv()).await.expect("the answer must not hang");
        match ev {
            Some(AnswerEvent::Token(t)) => {
                s.first_token.get_or_insert_with(|| asked.elapsed());
                s.text.push_str(&t)
            }
            Some(AnswerEvent::Conversation { id, turn, carried, dropped }) => s.conversation = Some((id, turn, carried, dropped)),
            Some(AnswerEvent::Checked(c)) => s.check = Some(c),
            Some(AnswerEvent::Citation(c)) => s.citations.push(c),
            Some(AnswerEvent::Footer(f)) => s.footer = Some(f),
            Some(AnswerEvent::Audit(a)) => s.audit = Some(a),
            Some(AnswerEvent::Done { model }) => s.done = Some(model),
            Some(AnswerEvent::Failed(m)) => s.failed = Some(m),
            None => return s,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_clinician_sees_granted_patients_only_and_gets_cited_reidentified_answers() {
    let cfg = engine_config(&[SMOLLM2, MINILM], 2);
    let (handle, _) = engine::start(&cfg).await.expect("the engine's readiness gate");
    let engine = handle.expect("an engine is configured");

    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::random();
    let path = dir.path().join("wardbox.db");
    let (mut store, _) = Store::open_or_create(&path, &key).unwrap();
    store.migrate().unwrap();
    let pool = StorePool::open(&path, &key, 2).unwrap();

    // The dev profile's demo records: the synthetic corpus, into the agent's own store.
    clinical::demo::seed(pool.clone(), engine.clone(), ClinicalConfig::dev()).await;
    let (a, b, stats, b_doc) = {
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || {
            let s = pool.get();
            let a = index::find_patient(s.conn(), CASTELLANOS_MRN).unwrap().expect("patient A indexed");
            let b = index::find_patient(s.conn(), LINDQVIST_MRN).unwrap().expect("patient B indexed");
            index::grant(s.conn(), "dr.a", a).unwrap();
            let b_doc: i64 = s.conn().query_row("SELECT id FROM rag_documents WHERE owner = ?1 LIMIT 1", [b], |r| r.get(0)).unwrap();
            (a, b, index::stats(s.conn()).unwrap(), b_doc)
        })
        .await
        .unwrap()
    };
    assert_eq!(stats.documents as usize, wardbox_rag::synth::corpus().docs.len(), "every demo record is indexed");

    let config = ClinicalConfig { chat_model: SMOLLM2.into(), patient_access: PatientAccess::Grants, max_answer_tokens: 96, ..ClinicalConfig::default() };
    let rag = Arc::new(RagClinical::new(pool.clone(), engine.clone(), config, tokio::runtime::Handle::current()));
    let dr_a = viewer("dr.a", Role::Clinician, false);

    // Grants: dr.a sees patient A only; B is refused as not granted in every call (the browser
    // sees 404 as for an unknown patient).
    let v = dr_a.clone();
    let listed = call(&rag, move |c| c.patients(&v, "")).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![a.to_string()]);
    assert!(listed[0].display.contains("Castellanos") && listed[0].display.contains(CASTELLANOS_MRN), "{}", listed[0].display);
    let (v, bid) = (dr_a.clone(), b.to_string());
    assert!(matches!(call(&rag, move |c| c.patient(&v, &bid)).await, Err(ClinicalError::NotGranted)));
    let (v, bid) = (dr_a.clone(), b.to_string());
    assert!(matches!(call(&rag, move |c| c.run(&v, &bid, TaskKind::Ask, "What medications?")).await, Err(ClinicalError::NotGranted)));
    let (v, aid, bdoc) = (dr_a.clone(), a.to_string(), b_doc.to_string());
    assert!(matches!(call(&rag, move |c| c.document(&v, &aid, &bdoc)).await, Err(ClinicalError::UnknownDocument)), "B's document through A's page");
    // A nurse without grants sees nobody; an emergency session sees everyone.
    let v = viewer("nurse.b", Role::Nurse, false);
    assert!(call(&rag, move |c| c.patients(&v, "")).await.unwrap().is_empty());
    let v = viewer("dr.e", Role::Clinician, true);
    assert_eq!(call(&rag, move |c| c.patients(&v, "")).await.unwrap().len(), 3);
    // Search by name.
    let v = viewer("dr.e", Role::Clinician, true);
    let found = call(&rag, move |c| c.patients(&v, "lindq")).await.unwrap();
    assert_eq!(found.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![b.to_string()]);

    // A question whose answer is in one note: streamed, re-identified, cited, audited.
    let (v, aid) = (dr_a.clone(), a.to_string());
    let asked = std::time::Instant::now();
    let rx = call(&rag, move |c| c.run(&v, &aid, TaskKind::Ask, "Which new diabetes medication was started at the last visit?")).await.unwrap();
    let s = collect(rx).await;
    let answered = asked.elapsed();
    assert!(s.failed.is_none(), "the answer failed: {:?}", s.failed);
    assert_eq!(s.done.as_deref(), Some(SMOLLM2));
    assert!(!s.text.trim().is_empty(), "no answer text");
    println!("answer: {}", s.text);
    // Checked against its sources, as shown: the pieces are exactly the streamed text.
    let check = s.check.as_ref().expect("the answer is checked against its sources");
    assert_eq!(check.segments.iter().map(|x| x.text.as_str()).collect::<String>(), s.text, "the check covers the answer as shown");
    println!(
        "check: {} items, {} unsupported, {} sentences not cited; answer (retrieval + generation) {} ms, check {} µs",
        check.items,
        check.unsupported,
        check.not_cited,
        answered.as_millis(),
        check.micros
    );
    for pseudonym in ["[NAME-", "[MRN-", "[PHONE-", "[ADDRESS-"] {
        assert!(!s.text.contains(pseudonym), "the clinician was shown a pseudonym: {}", s.text);
        assert!(s.citations.iter().all(|c| !c.snippet.contains(pseudonym) && !c.title.contains(pseudonym)), "{:?}", s.citations);
    }
    // The note with the fact is among the sources, and its citation resolves to the passage.
    let mut fact = None;
    for cite in &s.citations {
        let (v, aid, doc) = (dr_a.clone(), a.to_string(), cite.document_id.clone());
        let d = call(&rag, move |c| c.document(&v, &aid, &doc)).await.unwrap();
        assert!(!d.text.contains("[NAME-") && !d.title.contains("[NAME-"), "{}", d.text);
        if d.text.to_lowercase().contains("empagliflozin") {
            fact = Some(cite.clone());
        }
    }
    let fact = fact.unwrap_or_else(|| panic!("no source holds the fact: {:?}", s.citations));
    assert!(s.footer.as_deref().unwrap_or_default().contains("not a diagnosis"), "{:?}", s.footer);
    let audit_detail = s.audit.expect("an audit detail");
    assert_eq!(audit_detail["check"]["unsupported"], check.unsupported, "the audit record counts the unsupported items: {audit_detail}");
    assert_eq!(audit_detail["check"]["not_cited"], check.not_cited, "{audit_detail}");
    let audit = audit_detail.to_string();
    assert!(!audit.to_lowercase().contains("empagliflozin") && !audit.contains("Castellanos") && audit.contains("sha256"), "{audit}");
    assert!(audit.contains(&format!("\"document\":{}", fact.document_id)), "the sources' ids are audited: {audit}");

    // A conversation: a question, then a follow-up that carries it; listed for its owner only,
    // resumable by id, out of reach for anyone else.
    let (v, aid) = (dr_a.clone(), a.to_string());
    let asked = std::time::Instant::now();
    let rx = call(&rag, move |c| c.ask(&v, &aid, None, "Which new diabetes medication was started at the last visit?")).await.unwrap();
    let first = collect_since(rx, asked).await;
    let (cid, turn, carried, dropped) = first.conversation.clone().expect("a conversation was started");
    assert_eq!((turn, carried, dropped), (1, 0, 0));
    assert!(first.done.is_some(), "{:?}", first.failed);
    let (v, aid, c2) = (dr_a.clone(), a.to_string(), cid.clone());
    let asked = std::time::Instant::now();
    let rx = call(&rag, move |c| c.ask(&v, &aid, Some(&c2), "And what dose of it?")).await.unwrap();
    let follow = collect_since(rx, asked).await;
    assert_eq!(follow.conversation, Some((cid.clone(), 2, 1, 0)), "the follow-up carries the first turn");
    assert!(follow.done.is_some(), "{:?}", follow.failed);
    println!(
        "time to first token: first question {} ms, follow-up {} ms",
        first.first_token.map_or(0, |d| d.as_millis()),
        follow.first_token.map_or(0, |d| d.as_millis())
    );
    let (v, aid) = (dr_a.clone(), a.to_string());
    let listed = call(&rag, move |c| c.conversations(&v, &aid)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].turns), (cid.as_str(), 2));
    assert_eq!(listed[0].first_question, "Which new diabetes medication was started at the last visit?");
    let (v, aid, c3) = (dr_a.clone(), a.to_string(), cid.clone());
    let resumed = call(&rag, move |c| c.conversation(&v, &aid, &c3)).await.unwrap();
    assert_eq!(resumed.turns.len(), 2);
    assert_eq!(resumed.turns[1].question, "And what dose of it?");
    assert_eq!(resumed.turns[0].answer.trim(), first.text.trim(), "the stored answer is the one shown");
    // Kept de-identified in the store: the patient's name is not in it.
    let stored: Vec<String> = {
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || {
            let s = pool.get();
            let mut q = s.conn().prepare("SELECT question || ' ' || answer FROM conversation_turns").unwrap();
            q.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        })
        .await
        .unwrap()
    };
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|t| !t.contains("Castellanos")), "{stored:?}");
    // Someone else, even in an emergency session that sees the patient: no list, no access,
    // and no continuing it.
    let (v, aid) = (viewer("dr.e", Role::Clinician, true), a.to_string());
    assert!(call(&rag, move |c| c.conversations(&v, &aid)).await.unwrap().is_empty());
    let (v, aid, c4) = (viewer("dr.e", Role::Clinician, true), a.to_string(), cid.clone());
    assert!(matches!(call(&rag, move |c| c.conversation(&v, &aid, &c4)).await, Err(ClinicalError::UnknownConversation)));
    let (v, aid, c5) = (viewer("dr.e", Role::Clinician, true), a.to_string(), cid.clone());
    assert!(matches!(call(&rag, move |c| c.ask(&v, &aid, Some(&c5), "and?")).await, Err(ClinicalError::UnknownConversation)));

    // A reviewed draft saved to the record: a new document, marked, de-identified in the index
    // like any other, and found by a later question.
    let draft = "Discharge instructions for Dolores Castellanos: take furosemide 40 mg every morning and weigh yourself daily; call if your weight rises by 2 kg.";
    let (v, aid) = (dr_a.clone(), a.to_string());
    let saved = call(&rag, move |c| c.save_draft(&v, &aid, TaskKind::Discharge, draft, "2027-01-15 09:30 UTC")).await.unwrap();
    assert!(!saved.already_in_record && saved.identifiers_replaced.get("NAME").is_some_and(|n| *n >= 1), "{saved:?}");
    let (v, aid, did) = (dr_a.clone(), a.to_string(), saved.document_id.clone());
    let shown = call(&rag, move |c| c.document(&v, &aid, &did)).await.unwrap();
    assert!(shown.text.contains("AI-assisted draft, reviewed and saved by dr.a at 2027-01-15 09:30 UTC"), "{}", shown.text);
    assert!(shown.text.contains("Dolores Castellanos") && shown.title.contains("Discharge instructions"), "{} / {}", shown.title, shown.text);
    let (v, aid) = (dr_a.clone(), a.to_string());
    let rx = call(&rag, move |c| c.run(&v, &aid, TaskKind::Ask, "How often should she weigh herself after discharge, and on which furosemide dose?")).await.unwrap();
    let later = collect(rx).await;
    assert!(later.citations.iter().any(|c| c.document_id == saved.document_id), "the saved draft is among the sources: {:?}", later.citations);
    let (v, aid) = (dr_a.clone(), a.to_string());
    let refused = call(&rag, move |c| c.save_draft(&v, &aid, TaskKind::Ask, "text", "2027-01-15 09:31 UTC")).await;
    assert!(matches!(refused, Err(ClinicalError::Rejected(_))), "{refused:?}");

    // Model per task: the installed models with size, context length and licence, and which
    // tasks each serves; an administrator gives medication lists to another model.
    let models = call(&rag, |c| c.models()).await.unwrap();
    let smol = models.iter().find(|m| m.name == SMOLLM2).expect("the chat model is listed");
    assert!(smol.context_length.is_some_and(|n| n >= 2048) && smol.licence != "not stated", "{smol:?}");
    assert_eq!(smol.tasks, ["ask", "soap", "discharge", "medications"]);
    assert!(models.iter().any(|m| m.name == MINILM && m.tasks == ["embeddings"]), "{models:?}");
    let refused = call(&rag, |c| c.set_task_model("it.admin", TaskKind::Medications, MINILM)).await;
    assert!(matches!(&refused, Err(ClinicalError::Rejected(m)) if m.contains("embedding model")), "{refused:?}");
    let refused = call(&rag, |c| c.set_task_model("it.admin", TaskKind::Medications, "nosuch:1b")).await;
    assert!(matches!(&refused, Err(ClinicalError::Rejected(m)) if m.contains("not installed")), "{refused:?}");
    call(&rag, |c| c.set_task_model("it.admin", TaskKind::Medications, model_support::GEMMA)).await.unwrap();
    let models = call(&rag, |c| c.models()).await.unwrap();
    assert!(models.iter().any(|m| m.name == model_support::GEMMA && m.tasks == ["medications"]), "{models:?}");
    let (v, aid) = (dr_a.clone(), a.to_string());
    let listed = collect(call(&rag, move |c| c.run(&v, &aid, TaskKind::Medications, "Current medications")).await.unwrap()).await;
    assert_eq!(listed.done.as_deref(), Some(model_support::GEMMA), "the medication list came from the model chosen for it: {:?}", listed.failed);
    let (v, aid) = (dr_a.clone(), a.to_string());
    let asked = collect(call(&rag, move |c| c.run(&v, &aid, TaskKind::Ask, "Which new diabetes medication was started?")).await.unwrap()).await;
    assert_eq!(asked.done.as_deref(), Some(SMOLLM2), "questions stay with the default model");

    // Nothing relevant: the policy's "not found", without sources.
    let (v, aid) = (dr_a.clone(), a.to_string());
    let rx = call(&rag, move |c| c.run(&v, &aid, TaskKind::Ask, "What is the boiling point of liquid nitrogen on Saturn's moons?")).await.unwrap();
    let nf = collect(rx).await;
    assert_eq!(nf.text, "Not found in the record.");
    assert!(nf.citations.is_empty() && nf.done.is_some());

    // Upload: de-identified in the index, re-identified for the viewer, idempotent.
    let note = b"S: Dolores Castellanos reports dizziness since starting lisinopril 10 mg daily.\nP: Reduce lisinopril to 5 mg; recheck BP in two weeks.".to_vec();
    let (v, aid, n1) = (dr_a.clone(), a.to_string(), note.clone());
    let first = call(&rag, move |c| c.upload(&v, &aid, "dizziness-note.txt", "text/plain", n1)).await.unwrap();
    let doc_id = first.document_id.clone();
    // The uploader is told what was replaced (counts by category, never the values).
    assert!(!first.already_in_record && first.identifiers_replaced.get("NAME").is_some_and(|n| *n >= 1), "{first:?}");
    let (v, aid, n2) = (dr_a.clone(), a.to_string(), note.clone());
    let again = call(&rag, move |c| c.upload(&v, &aid, "dizziness-note.txt", "text/plain", n2)).await.unwrap();
    assert_eq!(again.document_id, doc_id, "the same file twice is one document");
    assert!(again.already_in_record && again.identifiers_replaced.is_empty(), "{again:?}");
    let (v, aid, d2) = (dr_a.clone(), a.to_string(), doc_id.clone());
    let shown = call(&rag, move |c| c.document(&v, &aid, &d2)).await.unwrap();
    assert!(shown.text.contains("Dolores Castellanos") && shown.text.contains("lisinopril"), "{}", shown.text);
    let stored: Vec<String> = {
        let (pool, id) = (pool.clone(), doc_id.parse::<i64>().unwrap());
        tokio::task::spawn_blocking(move || {
            let s = pool.get();
            let mut q = s.conn().prepare("SELECT text FROM rag_chunks WHERE document_id = ?1").unwrap();
            q.query_map([id], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        })
        .await
        .unwrap()
    };
    assert!(!stored.is_empty() && stored.iter().all(|t| !t.contains("Castellanos") && !t.contains("Dolores")), "{stored:?}");
    // Another patient's Bundle on A's page, and a file that is no document: refused, by name.
    let other = wardbox_rag::synth::corpus().docs.into_iter().find(|d| d.name.starts_with("lindqvist") && d.name.ends_with(".json")).expect("B's bundle");
    let (v, aid) = (dr_a.clone(), a.to_string());
    let refused = call(&rag, move |c| c.upload(&v, &aid, &other.name, "application/json", other.bytes)).await;
    assert!(matches!(&refused, Err(ClinicalError::Rejected(m)) if m.contains("another patient")), "{refused:?}");
    let (v, aid) = (dr_a.clone(), a.to_string());
    let refused = call(&rag, move |c| c.upload(&v, &aid, "scan.exe", "application/octet-stream", b"MZ\x90\x00".to_vec())).await;
    assert!(matches!(&refused, Err(ClinicalError::Rejected(m)) if m.contains("not supported")), "{refused:?}");

    engine.shutdown().await;
}
