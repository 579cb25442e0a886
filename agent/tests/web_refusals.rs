//! A refused request for a patient's data is audited with its outcome (unknown patient, no
//! grant, unknown document), the browser cannot tell the cases apart, and the records feed the
//! alert detector's `denied_access` rule.

mod web_support;

use std::sync::Arc;

use axum::http::StatusCode;
use tokio::sync::mpsc;
use wardbox::web::clinical::{AnswerEvent, Clinical, ClinicalError, Document, ModelInfo, PatientSummary, TaskKind, Uploaded, Viewer};
use wardbox::web::{Role, WebConfig};
use wardbox_alerts::{AlertsConfig, Detector, Record, Rule};
use web_support::*;

/// Patient `p-1` is granted, `p-2` exists but is not granted, anything else does not exist:
/// the answers a clinical back end gives, so this test checks what the web layer does with them.
#[derive(Debug)]
struct Grants;

impl Grants {
    fn reach(id: &str) -> Result<(), ClinicalError> {
        match id {
            "p-1" => Ok(()),
            "p-2" => Err(ClinicalError::NotGranted),
            _ => Err(ClinicalError::UnknownPatient),
        }
    }
}

impl Clinical for Grants {
    fn patients(&self, _v: &Viewer, _q: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Ok(vec![PatientSummary { id: "p-1".into(), display: "Granted Patient".into() }])
    }
    fn patient(&self, _v: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError> {
        Self::reach(id)?;
        Ok(PatientSummary { id: id.into(), display: "Granted Patient".into() })
    }
    fn document(&self, _v: &Viewer, p: &str, _d: &str) -> Result<Document, ClinicalError> {
        Self::reach(p)?;
        Err(ClinicalError::UnknownDocument)
    }
    fn run(&self, _v: &Viewer, p: &str, _t: TaskKind, _text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        Self::reach(p)?;
        Err(ClinicalError::Unavailable("no engine in this test".into()))
    }
    fn upload(&self, _v: &Viewer, p: &str, _f: &str, _c: &str, _b: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        Self::reach(p)?;
        Err(ClinicalError::Unavailable("no engine in this test".into()))
    }
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        Ok(vec![])
    }
}

fn outcomes(h: &Harness) -> Vec<(String, String)> {
    h.audit_records()
        .iter()
        .filter(|r| r.kind == "access")
        .filter_map(|r| {
            let d: serde_json::Value = serde_json::from_str(&r.detail).expect("json");
            Some((d["path"].as_str()?.to_owned(), d["outcome"].as_str()?.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn refused_patient_requests_are_audited_with_their_outcome() {
    let h = Harness::with(WebConfig::default(), Some(Arc::new(Grants)));
    let user = h.add_user("dr.a", Role::Clinician, false);
    let (token, csrf) = h.session(&user);

    let granted = h.send(get_with("/patients/p-1", &token)).await;
    assert_eq!(granted.status(), StatusCode::OK);
    assert!(outcomes(&h).is_empty(), "a granted view was recorded as refused: {:?}", outcomes(&h));

    let not_granted = h.send(get_with("/patients/p-2", &token)).await;
    let unknown = h.send(get_with("/patients/p-9", &token)).await;
    assert_eq!(not_granted.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_text(not_granted).await, body_text(unknown).await, "the browser can tell 'not granted' from 'unknown'");

    let doc = h.send(get_with("/patients/p-1/documents/d-7", &token)).await;
    assert_eq!(doc.status(), StatusCode::NOT_FOUND);
    let ask = h.send(post_form("/patients/p-2/ask", Some(&token), &[("csrf", &csrf), ("text", "latest labs?")])).await;
    assert_eq!(ask.status(), StatusCode::NOT_FOUND);

    assert_eq!(
        outcomes(&h),
        vec![
            ("/patients/p-2".to_owned(), "denied_no_grant".to_owned()),
            ("/patients/p-9".to_owned(), "denied_not_found".to_owned()),
            ("/patients/p-1/documents/d-7".to_owned(), "denied_not_found".to_owned()),
            ("/patients/p-2/ask".to_owned(), "denied_no_grant".to_owned()),
        ]
    );
    let records = h.audit_records();
    assert!(!records.iter().any(|r| r.kind == "query"), "a refused question was recorded as asked");
    for r in &records {
        assert!(!r.detail.contains("Granted Patient"), "a patient's name reached the audit log: {}", r.detail);
        assert!(!r.detail.contains("latest labs"), "question text reached the audit log: {}", r.detail);
    }
    // Who: the refusal carries the same fields as every record of a person's action.
    let refusal = records.iter().rev().find(|r| r.detail.contains("denied_no_grant")).expect("a refusal");
    let d: serde_json::Value = serde_json::from_str(&refusal.detail).expect("json");
    assert_eq!(d["who"]["user"], "dr.a");
    assert_eq!(d["route"], "/patients/{id}/ask");
    assert_eq!(refusal.actor, "dr.a");
}

#[tokio::test]
async fn repeated_refusals_raise_the_denied_access_alert() {
    let h = Harness::with(WebConfig::default(), Some(Arc::new(Grants)));
    let user = h.add_user("dr.a", Role::Clinician, false);
    let (token, _) = h.session(&user);
    for id in ["p-2", "p-3", "p-4"] {
        assert_eq!(h.send(get_with(&format!("/patients/{id}"), &token)).await.status(), StatusCode::NOT_FOUND);
    }
    let mut detector = Detector::new(&AlertsConfig::default()).expect("default thresholds");
    let mut alerts = Vec::new();
    for r in h.audit_records() {
        let record = Record { seq: r.seq, ts: &r.ts, kind: &r.kind, actor: &r.actor, detail: &r.detail };
        alerts.extend(detector.observe(&record).expect("the detector reads the agent's records"));
    }
    let denied: Vec<_> = alerts.iter().filter(|a| a.rule == Rule::DeniedAccess).collect();
    assert_eq!(denied.len(), 1, "{alerts:?}");
    assert_eq!(denied[0].subject, "user:dr.a");
    assert_eq!(denied[0].seqs.len(), 3, "the alert names the three refusals: {:?}", denied[0]);
}
