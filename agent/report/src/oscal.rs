//! The OSCAL rendering: NIST OSCAL 1.0.4 assessment-results (schema in
//! `schema/oscal_assessment-results_schema.json`, validated against in the tests).
//!
//! Mapping: one result for the report; every checklist item is a reviewed control (its id is
//! the control id), a finding whose target is that control's objective (`satisfied` when the
//! item is in order, `not-satisfied` otherwise, with our status as the reason token), and one
//! observation per piece of evidence (method TEST for measured items, EXAMINE for attestations;
//! each observed value is a property). UUIDs are derived from the box, the time and the item,
//! so the same report gives the same document.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::report::{Method, Report, Status};

/// The namespace of our own OSCAL properties.
pub const PROPERTY_NS: &str = "urn:wardbox:report";

/// A name-based UUID (version 5 layout; the name is hashed with SHA-256 and truncated), so the
/// same report always gets the same identifiers.
fn uuid(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"wardbox-report-oscal");
    for p in parts {
        hasher.update((p.len() as u64).to_be_bytes());
        hasher.update(p.as_bytes());
    }
    let mut b: [u8; 16] = hasher.finalize()[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// OSCAL property values are one line with no surrounding spaces.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() { "(empty)".into() } else { joined }
}

fn status_token(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::NeedsAttention => "needs-attention",
        Status::Attested => "attested",
        Status::NotApplicable => "not-applicable",
    }
}

fn prop(name: &str, value: &str) -> Value {
    json!({ "name": name, "ns": PROPERTY_NS, "value": one_line(value) })
}

/// Render the report as an OSCAL assessment-results document.
pub fn render(report: &Report) -> Value {
    let t = report.generated_at.to_string();
    let base = [report.box_name.as_str(), t.as_str()];
    let mut observations = Vec::new();
    let mut findings = Vec::new();
    for item in &report.items {
        let mut related = Vec::new();
        for (n, e) in item.evidence.iter().enumerate() {
            let id = uuid(&[base[0], base[1], "observation", &item.id, &n.to_string()]);
            let mut props: Vec<Value> = e.values.iter().map(|v| prop("observed", &format!("{}: {}", v.name, v.value))).collect();
            props.push(prop("checklist-item", &item.id));
            observations.push(json!({
                "uuid": id,
                "title": e.check,
                "description": e.how,
                "props": props,
                "methods": [match item.method { Method::Measured => "TEST", Method::Attestation => "EXAMINE" }],
                "collected": e.at.to_string(),
            }));
            related.push(json!({ "observation-uuid": id }));
        }
        let mut finding = json!({
            "uuid": uuid(&[base[0], base[1], "finding", &item.id]),
            "title": item.title,
            "description": item.reason,
            "props": [
                prop("status", status_token(item.status)),
                prop("control-reference", &item.references.join("; ")),
                prop("method", match item.method { Method::Measured => "measured", Method::Attestation => "attestation" }),
            ],
            "target": {
                "type": "objective-id",
                "target-id": item.id,
                "status": {
                    "state": if item.status.in_order() { "satisfied" } else { "not-satisfied" },
                    "reason": status_token(item.status),
                },
            },
        });
        if !related.is_empty() {
            finding["related-observations"] = Value::Array(related);
        }
        if let Some(r) = &item.remediation {
            finding["remarks"] = Value::String(format!("Remediation: {r}"));
        }
        findings.push(finding);
    }
    let controls: Vec<Value> = report.items.iter().map(|i| json!({ "control-id": i.id })).collect();
    json!({
        "assessment-results": {
            "uuid": uuid(&[base[0], base[1], "assessment-results"]),
            "metadata": {
                "title": format!("Compliance checklist report: {}", report.box_name),
                "last-modified": t,
                "version": format!("wardbox-report/{}", report.format_version),
                "oscal-version": "1.0.4",
                "props": [prop("box-name", &report.box_name), prop("profile", &report.profile)],
            },
            // The plan is the checklist itself, described in the product documentation.
            "import-ap": { "href": "#wardbox-compliance-checklist" },
            "results": [{
                "uuid": uuid(&[base[0], base[1], "result"]),
                "title": "Wardbox compliance checklist",
                "description": "HIPAA Security Rule safeguards and the go-live checklist for local AI, measured live on the box or attested by named staff.",
                "start": t,
                "end": t,
                "reviewed-controls": { "control-selections": [{ "include-controls": controls }] },
                "observations": observations,
                "findings": findings,
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_shaped_like_version_5() {
        let a = uuid(&["box", "t", "x"]);
        assert_eq!(a, uuid(&["box", "t", "x"]));
        assert_ne!(a, uuid(&["box", "t", "y"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn property_values_are_single_trimmed_lines() {
        assert_eq!(one_line("  a\n b\t c "), "a b c");
        assert_eq!(one_line(" \n"), "(empty)");
    }
}
