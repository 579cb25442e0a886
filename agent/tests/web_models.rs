//! The administrators' Models page: every installed model with its size, context length,
//! licence and the tasks it serves, and the choice of a model per task (admins only, audited).
//! The back end here records the choice; `model_clinical` runs the real one against the engine.

mod web_support;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use tokio::sync::mpsc;
use wardbox::web::clinical::{AnswerEvent, Clinical, ClinicalError, Document, ModelInfo, PatientSummary, TaskKind, Uploaded, Viewer};
use wardbox::web::{Role, WebConfig};
use web_support::*;

#[derive(Debug, Default)]
struct Models {
    chosen: Mutex<Vec<(String, TaskKind, String)>>,
}

impl Clinical for Models {
    fn patients(&self, _v: &Viewer, _q: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Ok(vec![])
    }
    fn patient(&self, _v: &Viewer, _id: &str) -> Result<PatientSummary, ClinicalError> {
        Err(ClinicalError::UnknownPatient)
    }
    fn document(&self, _v: &Viewer, _p: &str, _d: &str) -> Result<Document, ClinicalError> {
        Err(ClinicalError::UnknownDocument)
    }
    fn run(&self, _v: &Viewer, _p: &str, _t: TaskKind, _text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        Err(ClinicalError::UnknownPatient)
    }
    fn upload(&self, _v: &Viewer, _p: &str, _f: &str, _c: &str, _b: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        Err(ClinicalError::UnknownPatient)
    }
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        let model = |name: &str, size_bytes, context_length, licence: &str, tasks: &[&str]| ModelInfo {
            name: name.into(),
            size_bytes,
            digest: String::new(),
            loaded: !tasks.is_empty(),
            context_length,
            licence: licence.into(),
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
        };
        Ok(vec![
            model("smollm2:135m", 98_362_432, Some(8192), "Apache License", &["ask", "soap", "medications"]),
            model("big:8b", 4_900_000_000, Some(131_072), "Llama 3.1 Community License", &["discharge"]),
            model("all-minilm:l6-v2", 45_800_000, Some(512), "Apache License", &["embeddings"]),
        ])
    }
    fn set_task_model(&self, admin: &str, task: TaskKind, model: &str) -> Result<(), ClinicalError> {
        if model == "all-minilm:l6-v2" {
            return Err(ClinicalError::Rejected("all-minilm:l6-v2 is the embedding model; it does not write answers".into()));
        }
        self.chosen.lock().unwrap_or_else(|e| e.into_inner()).push((admin.into(), task, model.into()));
        Ok(())
    }
}

#[tokio::test]
async fn admins_see_each_models_context_and_licence_and_choose_a_model_per_task() {
    let backend = Arc::new(Models::default());
    let h = Harness::with(WebConfig::default(), Some(backend.clone()));
    let (token, csrf) = h.session(&h.add_user("it.admin", Role::Admin, false));
    let page = body_text(h.send(get_with("/admin/models", &token)).await).await;
    for shown in ["smollm2:135m", "98 MB", "8192 tokens", "Llama 3.1 Community License", "131072 tokens", "ask, soap, medications", "embeddings"] {
        assert!(page.contains(shown), "{shown:?} is not on the page: {page}");
    }
    // The discharge task's form has the model serving it selected; the embedding model is
    // offered for no task.
    let form = page.split(r#"id="task-model-discharge""#).nth(1).and_then(|f| f.split("</form>").next()).expect("the discharge form");
    assert!(form.contains(r#"<option value="big:8b" selected>"#) && !form.contains("all-minilm"), "{form}");

    let resp = h.send(post_form("/admin/models/tasks", Some(&token), &[("csrf", &csrf), ("task", "discharge"), ("model", "smollm2:135m")])).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/admin/models");
    assert_eq!(backend.chosen.lock().expect("lock").clone(), vec![("it.admin".to_owned(), TaskKind::Discharge, "smollm2:135m".to_owned())]);
    let record = h.audit_records().into_iter().rev().find(|r| r.detail.contains("set_task_model")).expect("audited");
    assert!(record.detail.contains(r#""task":"discharge""#) && record.detail.contains(r#""model":"smollm2:135m""#), "{}", record.detail);

    // Refusals name the problem and change nothing.
    let resp = h.send(post_form("/admin/models/tasks", Some(&token), &[("csrf", &csrf), ("task", "ask"), ("model", "all-minilm:l6-v2")])).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(resp).await.contains("embedding model"));
    let resp = h.send(post_form("/admin/models/tasks", Some(&token), &[("csrf", &csrf), ("task", "surgery"), ("model", "smollm2:135m")])).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(backend.chosen.lock().expect("lock").len(), 1);
    // Not for clinicians.
    let (clinician, ccsrf) = h.session(&h.add_user("dr.a", Role::Clinician, false));
    let resp = h.send(post_form("/admin/models/tasks", Some(&clinician), &[("csrf", &ccsrf), ("task", "ask"), ("model", "big:8b")])).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(backend.chosen.lock().expect("lock").len(), 1);
}
