//! The weekly activity review page: a week of the real audit trail summarised for the privacy
//! officer (large prompts, failed sign-ins, emergency access, users by patients touched), and
//! "Mark week reviewed" recording who and when, shown on the page and audited with the note as
//! a digest. Clinical roles cannot open it.

mod web_support;

use axum::http::StatusCode;
use serde_json::json;
use wardbox::audit::EventKind;
use wardbox::web::Role;
use web_support::*;

#[tokio::test]
async fn a_week_of_the_audit_trail_is_summarised_and_its_review_recorded() {
    let h = Harness::new();
    let auditor = h.add_user("audit.c", Role::Auditor, false);
    let clinician = h.add_user("dr.a", Role::Clinician, false);
    let who = json!({ "user": "dr.a", "role": "clinician", "client": "10.0.0.5", "session": "s1", "break_glass": false });
    for p in ["17", "18", "19", "17"] {
        h.ui.audit(EventKind::Access, "dr.a", json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": format!("/patients/{p}") }))
            .await
            .expect("audit");
    }
    h.ui.audit(EventKind::Query, "dr.a", json!({ "who": who, "patient": "17", "task": "ask", "text": { "sha256": "ab", "chars": 12_000 } }))
        .await
        .expect("audit");
    for _ in 0..3 {
        h.ui.audit(EventKind::LoginFailed, "bob", json!({ "user": "bob", "client": "10.0.0.9", "reason": "bad_password", "emergency": false }))
            .await
            .expect("audit");
    }
    h.ui.audit(EventKind::SecurityAlert, "dr.a", json!({ "event": "break_glass_login", "who": who, "reason": { "sha256": "cd", "chars": 30 } }))
        .await
        .expect("audit");

    let (token, csrf) = h.session(&auditor);
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let page = body_text(h.send(get_with(&format!("/admin/review?week={today}"), &token)).await).await;
    assert!(page.contains("This week has not been reviewed") && page.contains("No week has been reviewed yet"), "{page}");
    assert!(page.contains("<td>dr.a</td><td>12000</td>"), "large prompt: {page}");
    assert!(page.contains("<td>bob</td><td>3</td>") && page.contains("<td>10.0.0.9</td><td>3</td>"), "failed sign-ins: {page}");
    assert!(page.contains("<td>dr.a</td><td>3</td>"), "three distinct patients: {page}");
    let emergency = page.split("id=\"break-glass\"").nth(1).expect("table");
    assert!(emergency.split("</table>").next().is_some_and(|t| t.contains("<td>dr.a</td>")), "{page}");
    assert!(!page.contains("/patients/17") && !page.contains(">17<"), "a patient id on the page: {page}");
    // Last week is empty and unreviewed.
    let empty = body_text(h.send(get_with("/admin/review", &token)).await).await;
    assert!(!empty.contains("<td>bob</td>"), "{empty}");

    // A week that has not started cannot be marked reviewed; nothing is recorded.
    let next_week = today.checked_add(jiff::Span::new().days(7)).expect("date");
    let future = h.send(post_form("/admin/review", Some(&token), &[("csrf", &csrf), ("week", &next_week.to_string()), ("note", "Looked ahead.")])).await;
    assert_eq!(future.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(future).await.contains("has not started yet"));
    let blank = h.send(post_form("/admin/review", Some(&token), &[("csrf", &csrf), ("week", &today.to_string()), ("note", " ")])).await;
    assert_eq!(blank.status(), StatusCode::BAD_REQUEST);
    let note = "Looked at dr.a's large question (a pasted discharge letter) and bob's typos.";
    let done = h.send(post_form("/admin/review", Some(&token), &[("csrf", &csrf), ("week", &today.to_string()), ("note", note)])).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let page = body_text(h.send(get_with(&format!("/admin/review?week={today}"), &token)).await).await;
    assert!(page.contains("Reviewed by audit.c at 20") && page.contains("pasted discharge letter"), "{page}");
    assert!(page.contains("Last review of any week: week of") && page.contains("by audit.c"), "{page}");

    let reviews: Vec<_> = h.audit_records().into_iter().filter(|r| r.detail.contains("activity_review")).collect();
    assert_eq!(reviews.len(), 1);
    let d: serde_json::Value = serde_json::from_str(&reviews[0].detail).expect("json");
    assert_eq!(d["note"]["chars"].as_u64(), Some(note.chars().count() as u64));
    assert!(!reviews[0].detail.contains("discharge letter"), "the note's text reached the audit log");

    let (token, _) = h.session(&clinician);
    assert_eq!(h.send(get_with("/admin/review", &token)).await.status(), StatusCode::FORBIDDEN);
}
