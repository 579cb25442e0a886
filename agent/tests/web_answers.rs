//! The clinician's answer as the page receives it: the answer checked against its sources
//! (`check` event: items found in no source marked with their reason, sentences without a
//! citation marked, counts for the banner), the time to the first token and to the end
//! (`timing`), and the audit record (the check's counts and the timings, never text). The back
//! end here streams a fixed answer and checks it with the agent's own checking code
//! (`clinical::checking`), the code `RagClinical` runs after every answer. Conversations: the
//! id in the stream, follow-ups, the list on the patient's page and the resumed page, for
//! their owner only, and the audit metadata of each turn.

mod web_support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::mpsc;
use wardbox::clinical::checking;
use wardbox::web::clinical::{
    AnswerEvent, Citation, Clinical, ClinicalError, Conversation, ConversationSummary, ConversationTurn, Document, ModelInfo, PatientSummary,
    TaskKind, Uploaded, Viewer,
};
use wardbox::web::{Role, WebConfig};
use wardbox_rag::check::CheckConfig;
use web_support::*;

const SOURCE: &str = "Metformin 500 mg PO twice daily; lisinopril 10 mg daily. Osteoarthritis of the left knee.";

/// Streams `answer` in pieces, then the check, the source, the footer, the audit detail.
#[derive(Debug)]
struct Answers {
    answer: &'static str,
}

impl Clinical for Answers {
    fn patients(&self, _v: &Viewer, _q: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Ok(vec![PatientSummary { id: "p-1".into(), display: "Test Patient".into() }])
    }
    fn patient(&self, _v: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError> {
        Ok(PatientSummary { id: id.into(), display: "Test Patient".into() })
    }
    fn document(&self, _v: &Viewer, _p: &str, _d: &str) -> Result<Document, ClinicalError> {
        Err(ClinicalError::UnknownDocument)
    }
    fn run(&self, _v: &Viewer, _p: &str, _t: TaskKind, _text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        let (tx, rx) = mpsc::channel(16);
        let answer = self.answer;
        tokio::spawn(async move {
            // A first token that takes a moment, as a model's does.
            tokio::time::sleep(Duration::from_millis(30)).await;
            for piece in answer.split_inclusive(' ') {
                let _ = tx.send(AnswerEvent::Token(piece.into())).await;
            }
            let (view, counts) = checking::check_answer(answer, &[(1, SOURCE.to_owned())], &CheckConfig::default());
            let _ = tx.send(AnswerEvent::Checked(view)).await;
            let c = Citation { n: 1, document_id: "7".into(), title: "Visit".into(), snippet: SOURCE.into() };
            let _ = tx.send(AnswerEvent::Citation(c)).await;
            let _ = tx.send(AnswerEvent::Footer("Verify against the cited sources.".into())).await;
            let _ = tx.send(AnswerEvent::Audit(serde_json::json!({ "check": checking::audit_counts(&counts) }))).await;
            let _ = tx.send(AnswerEvent::Done { model: "test-model".into() }).await;
        });
        Ok(rx)
    }
    fn upload(&self, _v: &Viewer, _p: &str, _f: &str, _c: &str, _b: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        Err(ClinicalError::Rejected("no uploads here".into()))
    }
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        Ok(vec![])
    }
}

/// (event, data) pairs of a server-sent event stream.
fn events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<String>();
            Some((event.to_owned(), serde_json::from_str(&data).unwrap_or(serde_json::Value::Null)))
        })
        .collect()
}

async fn ask(answer: &'static str) -> (Vec<(String, serde_json::Value)>, String) {
    let h = Harness::with(WebConfig::default(), Some(Arc::new(Answers { answer })));
    let user = h.add_user("dr.a", Role::Clinician, false);
    let (token, csrf) = h.session(&user);
    let resp = h.send(post_form("/patients/p-1/ask", Some(&token), &[("csrf", &csrf), ("text", "What does she take?")])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = body_text(resp).await;
    let mut record = None;
    for _ in 0..100 {
        record = h.audit_records().into_iter().find(|r| r.kind == "answer");
        if record.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (events(&body), record.expect("the answer is audited").detail)
}

#[tokio::test]
async fn an_unsupported_dose_is_marked_with_its_reason_and_counted_in_the_audit_record() {
    let (events, audit) = ask("Metformin 1000 mg twice daily [1]. She has right knee pain.").await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let tokens = names.iter().filter(|n| **n == "token").count();
    assert!(tokens > 3, "{names:?}");
    assert_eq!(&names[tokens..], ["check", "citation", "footer", "timing", "done"], "{names:?}");

    let check = &events[tokens].1;
    assert_eq!(check["unsupported"], 2, "the dose and the side: {check}");
    assert_eq!(check["not_cited"], 1, "{check}");
    let segments = check["segments"].as_array().expect("segments");
    let shown: String = segments.iter().map(|s| s["text"].as_str().unwrap_or_default()).collect();
    assert_eq!(shown, "Metformin 1000 mg twice daily [1]. She has right knee pain.");
    let marked: Vec<(&str, &str)> = segments
        .iter()
        .filter_map(|s| Some((s["text"].as_str()?, s["unsupported"].as_str()?)))
        .collect();
    assert_eq!(marked[0], ("1000 mg", "1000 mg: in none of the sources; they say metformin 500 mg [1]"));
    assert_eq!(marked[1], ("right", "right: in none of the sources; they say left knee [1]"));
    assert!(segments.iter().any(|s| s["not_cited"] == true && s["text"].as_str().unwrap_or_default().contains("knee pain")), "{check}");

    let timing = &events[events.len() - 2].1;
    let first = timing["first_token_ms"].as_u64().expect("time to first token");
    let total = timing["total_ms"].as_u64().expect("total time");
    assert!(first >= 30 && total >= first, "{timing}");
    assert!(timing["check_us"].as_u64().is_some(), "{timing}");

    // The audit record: counts and timings, nothing of the answer's text.
    let detail: serde_json::Value = serde_json::from_str(&audit).expect("json detail");
    assert_eq!(detail["retrieval"]["check"]["unsupported"], 2, "{audit}");
    assert_eq!(detail["retrieval"]["check"]["unsupported_by_kind"]["dose"], 1, "{audit}");
    assert_eq!(detail["retrieval"]["check"]["unsupported_by_kind"]["laterality"], 1, "{audit}");
    assert!(detail["timing"]["total_ms"].as_u64().is_some(), "{audit}");
    for text in ["Metformin", "metformin", "1000", "knee", "right"] {
        assert!(!audit.contains(text), "{text:?} reached the audit record: {audit}");
    }
}

#[tokio::test]
async fn a_supported_answer_carries_no_mark() {
    let (events, _) = ask("Metformin 1 g twice daily would be 1000 mg; the record says 500 mg [1]. Left knee osteoarthritis [1].").await;
    let check = &events.iter().find(|(e, _)| e == "check").expect("a check").1;
    // "1 g" and "1000 mg" are in no source: the checker is literal about doses.
    assert_eq!(check["unsupported"], 2, "{check}");
    let (events, _) = ask("Metformin 500 mg twice daily and lisinopril 10 mg daily [1]. Left knee osteoarthritis [1].").await;
    let check = &events.iter().find(|(e, _)| e == "check").expect("a check").1;
    assert_eq!((check["unsupported"].as_u64(), check["not_cited"].as_u64()), (Some(0), Some(0)), "{check}");
    assert!(check["segments"].as_array().expect("segments").iter().all(|s| s.get("unsupported").is_none()), "{check}");
}

/// Keeps conversations per user in memory, the way the real back end keys them, so the pages'
/// wiring can be tested without a model: the id comes back in the stream, the next question
/// continues it, the patient's page lists it and its page resumes it, for its owner only.
#[derive(Debug, Default)]
struct Conversing {
    /// (owner, questions) per conversation; the id is the index + 1.
    kept: std::sync::Mutex<Vec<(String, Vec<String>)>>,
}

impl Clinical for Conversing {
    fn patients(&self, _v: &Viewer, _q: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Ok(vec![])
    }
    fn patient(&self, _v: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError> {
        Ok(PatientSummary { id: id.into(), display: "Test Patient".into() })
    }
    fn document(&self, _v: &Viewer, _p: &str, _d: &str) -> Result<Document, ClinicalError> {
        Err(ClinicalError::UnknownDocument)
    }
    fn run(&self, _v: &Viewer, _p: &str, _t: TaskKind, _text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        Err(ClinicalError::Rejected("questions only".into()))
    }
    fn ask(&self, v: &Viewer, _p: &str, conversation: Option<&str>, text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let index = match conversation {
            Some(id) => {
                let i = id.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).ok_or(ClinicalError::UnknownConversation)?;
                match kept.get(i) {
                    Some((owner, _)) if *owner == v.username => i,
                    _ => return Err(ClinicalError::UnknownConversation),
                }
            }
            None => {
                kept.push((v.username.clone(), Vec::new()));
                kept.len() - 1
            }
        };
        kept[index].1.push(text.to_owned());
        let (id, turn) = ((index + 1).to_string(), kept[index].1.len());
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let _ = tx.send(AnswerEvent::Conversation { id, turn, carried: turn - 1, dropped: 0 }).await;
            let _ = tx.send(AnswerEvent::Token("Not found in the record.".into())).await;
            let _ = tx.send(AnswerEvent::Done { model: "test-model".into() }).await;
        });
        Ok(rx)
    }
    fn conversations(&self, v: &Viewer, _p: &str) -> Result<Vec<ConversationSummary>, ClinicalError> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        Ok(kept
            .iter()
            .enumerate()
            .filter(|(_, (owner, _))| *owner == v.username)
            .map(|(i, (_, qs))| ConversationSummary {
                id: (i + 1).to_string(),
                started: "2027-01-15 08:00 UTC".into(),
                updated: "2027-01-15 08:01 UTC".into(),
                turns: qs.len(),
                first_question: qs[0].clone(),
            })
            .collect())
    }
    fn conversation(&self, v: &Viewer, _p: &str, id: &str) -> Result<Conversation, ClinicalError> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let i = id.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).ok_or(ClinicalError::UnknownConversation)?;
        match kept.get(i) {
            Some((owner, qs)) if *owner == v.username => Ok(Conversation {
                id: id.into(),
                turns: qs.iter().map(|q| ConversationTurn { question: q.clone(), answer: "Not found in the record.".into() }).collect(),
            }),
            _ => Err(ClinicalError::UnknownConversation),
        }
    }
    fn upload(&self, _v: &Viewer, _p: &str, _f: &str, _c: &str, _b: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        Err(ClinicalError::Rejected("no uploads here".into()))
    }
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn a_follow_up_continues_its_conversation_which_its_owner_alone_lists_and_resumes() {
    let h = Harness::with(WebConfig::default(), Some(Arc::new(Conversing::default())));
    let (token, csrf) = h.session(&h.add_user("dr.a", Role::Clinician, false));
    let resp = h.send(post_form("/patients/p-1/ask", Some(&token), &[("csrf", &csrf), ("text", "Is she on warfarin?")])).await;
    let first = events(&body_text(resp).await);
    assert_eq!(first[0].0, "conversation");
    assert_eq!(first[0].1, serde_json::json!({ "id": "1", "turn": 1, "carried": 0, "dropped": 0 }));
    let resp = h
        .send(post_form("/patients/p-1/ask", Some(&token), &[("csrf", &csrf), ("text", "Since when?"), ("conversation", "1")]))
        .await;
    let second = events(&body_text(resp).await);
    assert_eq!(second[0].1, serde_json::json!({ "id": "1", "turn": 2, "carried": 1, "dropped": 0 }));

    // The patient's page lists it; its page shows the turns and continues it.
    let page = body_text(h.send(get_with("/patients/p-1", &token)).await).await;
    assert!(page.contains(r#"href="/patients/p-1/conversations/1""#) && page.contains("Is she on warfarin?"), "{page}");
    let page = body_text(h.send(get_with("/patients/p-1/conversations/1", &token)).await).await;
    assert!(page.contains(r#"data-conversation="1""#) && page.contains("Since when?") && page.contains("Follow-up question"), "{page}");

    // Another clinician: not listed, not reachable, cannot continue it.
    let (other, other_csrf) = h.session(&h.add_user("dr.b", Role::Clinician, false));
    let page = body_text(h.send(get_with("/patients/p-1", &other)).await).await;
    assert!(!page.contains("/conversations/1") && !page.contains("Is she on warfarin?"), "{page}");
    assert_eq!(h.send(get_with("/patients/p-1/conversations/1", &other)).await.status(), StatusCode::NOT_FOUND);
    let resp = h
        .send(post_form("/patients/p-1/ask", Some(&other), &[("csrf", &other_csrf), ("text", "and?"), ("conversation", "1")]))
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // The audit trail holds each turn's conversation id and number, never the question.
    let mut answers = Vec::new();
    for _ in 0..100 {
        answers = h.audit_records().into_iter().filter(|r| r.kind == "answer").collect();
        if answers.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answers.len(), 2);
    let detail: serde_json::Value = serde_json::from_str(&answers[1].detail).expect("json detail");
    assert_eq!(detail["conversation"], serde_json::json!({ "id": "1", "turn": 2, "carried": 1, "dropped": 0 }), "{detail}");
    assert!(answers.iter().all(|r| !r.detail.contains("warfarin") && !r.detail.contains("Since when")));
}
