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
    facts.measured_boot.firmware = wardbox_report::Probe::unavailable("/sys/firmware/efi/efivars does not exist: not booted through UEFI");
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
    // A measured boot that could not be read is not satisfied: it needs attention, never passes.
    let boot = findings.iter().find(|f| f["target"]["target-id"] == "integrity-measured-boot").expect("finding");
    assert_eq!(boot["target"]["status"]["state"], "not-satisfied");
    assert_eq!(boot["target"]["status"]["reason"], "needs-attention");
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

/// Every value under a `uuid` or `…-uuid` key replaced: OSCAL's UUIDs are derived from the
/// box, the generation time and the item, so they change with the time and nothing else.
fn without_uuids(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "uuid" || k.ends_with("-uuid") {
                    *child = Value::String("UUID".into());
                } else {
                    without_uuids(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(without_uuids),
        _ => {}
    }
}

#[test]
fn two_reports_of_the_same_state_differ_only_in_their_time_and_quote() {
    // The same facts (the same state of the box, the same previous report), generated ten
    // minutes apart, each quoted by a different "TPM" (integrity made up: only its presence
    // matters here).
    let facts = sample::healthy(now());
    let later: jiff::Timestamp = "2026-11-29T10:10:00Z".parse().expect("time");
    let previous = evaluate(&sample::healthy("2026-11-01T10:00:00Z".parse().expect("time")), "2026-11-01T10:00:00Z".parse().expect("time"));
    let quoted = |at: jiff::Timestamp, signature: &str| {
        let mut report = evaluate(&facts, at);
        report.compare_with(&previous, Some(format!("sha256:{}", "ab".repeat(32))));
        let integrity = json::Integrity {
            digest: String::new(),
            pcr_bank: "sha256".into(),
            pcrs: vec![json::PcrValue { index: 7, value: "22".repeat(32) }],
            attest: format!("ff544347{signature}"),
            signature: signature.into(),
        };
        json::assemble::<DocumentError>(&report, |_| Ok(Some(integrity))).expect("assemble")
    };
    let (a, b) = (quoted(now(), "0018000b01"), quoted(later, "0018000b02"));
    let (t_a, t_b) = (now().to_string(), later.to_string());

    // The report itself and its HTML: byte for byte, once the time is the same.
    let doc = |out: &json::Outputs| serde_json::from_slice::<Value>(&out.json).expect("json");
    let (doc_a, doc_b) = (doc(&a), doc(&b));
    assert_ne!(doc_a["report"], doc_b["report"], "the time is in the report");
    assert_eq!(doc_a["report"].to_string().replace(&t_a, &t_b), doc_b["report"].to_string());
    assert_eq!(String::from_utf8(a.html.clone()).expect("utf8").replace(&t_a, &t_b), String::from_utf8(b.html.clone()).expect("utf8"));
    // OSCAL: the same once the time and the UUIDs derived from it are the same.
    let oscal = |out: &json::Outputs, t: &str| {
        let mut v: Value = serde_json::from_str(&String::from_utf8(out.oscal.clone()).expect("utf8").replace(t, &t_b)).expect("json");
        without_uuids(&mut v);
        v
    };
    assert_eq!(oscal(&a, &t_a), oscal(&b, &t_b));
    // What differs in the signed record: the digests of what changed with the time, and the quote.
    assert_ne!(doc_a["integrity"]["signature"], doc_b["integrity"]["signature"]);
}
