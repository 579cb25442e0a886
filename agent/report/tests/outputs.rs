//! The JSON document validates against its own schema and the OSCAL rendering against NIST's
//! OSCAL 1.0.4 assessment-results schema (both copied into `schema/`), and each validator is
//! shown to refuse a broken document, so these tests can fail.

use serde_json::Value;
use wardbox_report::json::{self, DocumentError};
use wardbox_report::{evaluate, sample};

fn now() -> jiff::Timestamp {
    "2026-11-29T10:00:00Z".parse().expect("time")
}

fn schema(path: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let schema: Value = serde_json::from_str(&text).expect("schema json");
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// A report with every kind of status, a waiver, changes and a previous report, so the schemas
/// see every shape.
fn varied_outputs() -> json::Outputs {
    let before = evaluate(&sample::healthy(now()), now());
    let mut facts = sample::healthy(now());
    facts.sessions.idle_timeout_secs = 3600;
    facts.attestations.retain(|a| a.item != wardbox_report::ids::TRAINING);
    facts.ldap = wardbox_report::facts::LdapFacts::NotConfigured;
    if let wardbox_report::Probe::Observed { value } = &mut facts.accounts {
        value.retain(|a| a.source == "local");
    }
    facts.usb = wardbox_report::Probe::unavailable("cannot read /sys/bus/usb");
    let mut report = evaluate(&facts, now());
    report.compare_with(&before, Some(format!("sha256:{}", "ab".repeat(32))));
    let integrity = json::Integrity {
        digest: format!("sha256:{}", "00".repeat(32)),
        pcr_bank: "sha256".into(),
        pcrs: vec![json::PcrValue { index: 7, value: "22".repeat(32) }],
        attest: "ff544347".into(),
        signature: "0018000b".into(),
    };
    json::assemble::<DocumentError>(&report, |_| Ok(Some(integrity))).expect("assemble")
}

#[test]
fn the_json_document_validates_against_its_schema() {
    let validator = schema(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/report-v1.schema.json"));
    for out in [varied_outputs(), json::assemble::<DocumentError>(&evaluate(&sample::healthy(now()), now()), |_| Ok(None)).expect("assemble")] {
        let doc: Value = serde_json::from_slice(&out.json).expect("json");
        assert_eq!(errors(&validator, &doc), Vec::<String>::new());
    }
    // The schema in the crate is the one compiled into the library.
    assert_eq!(json::SCHEMA, std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/report-v1.schema.json")).expect("read"));
}

#[test]
fn the_json_schema_refuses_a_broken_document() {
    let validator = schema(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/report-v1.schema.json"));
    let mut doc: Value = serde_json::from_slice(&varied_outputs().json).expect("json");
    doc["report"]["items"][0]["status"] = Value::String("ok".into());
    doc["report"]["items"][1]["evidence"] = Value::Array(vec![]);
    let errs = errors(&validator, &doc);
    assert!(errs.iter().any(|e| e.contains("/report/items/0/status")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("/report/items/1/evidence")), "{errs:?}");
}

#[test]
fn the_oscal_rendering_validates_against_the_oscal_1_0_4_schema() {
    let validator = schema(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/oscal_assessment-results_schema.json"));
    let out = varied_outputs();
    let doc: Value = serde_json::from_slice(&out.oscal).expect("json");
    assert_eq!(errors(&validator, &doc), Vec::<String>::new());
    assert_eq!(doc["assessment-results"]["metadata"]["oscal-version"], "1.0.4");
    let findings = doc["assessment-results"]["results"][0]["findings"].as_array().expect("findings");
    let logoff = findings.iter().find(|f| f["target"]["target-id"] == "access-automatic-logoff").expect("finding");
    assert_eq!(logoff["target"]["status"]["state"], "not-satisfied");
    assert_eq!(logoff["target"]["status"]["reason"], "fail");
}

#[test]
fn the_oscal_schema_refuses_a_broken_document() {
    let validator = schema(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/oscal_assessment-results_schema.json"));
    let mut doc: Value = serde_json::from_slice(&varied_outputs().oscal).expect("json");
    doc["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = Value::String("passed".into());
    doc["assessment-results"]["uuid"] = Value::String("not-a-uuid".into());
    let errs = errors(&validator, &doc);
    assert!(errs.iter().any(|e| e.contains("/findings/0/target/status/state")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("/assessment-results/uuid")), "{errs:?}");
}
