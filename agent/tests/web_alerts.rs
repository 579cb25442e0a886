//! The Alerts page: administrators and auditors list the alerts the detector raised and mark
//! each reviewed with a note; the review is audited (the note as a digest), never overwritten,
//! and the page is closed to clinical roles.

mod web_support;

use axum::http::StatusCode;
use wardbox::alerting::{Destination, outbox};
use wardbox::web::Role;
use wardbox_alerts::{Alert, Rule};
use web_support::*;

fn raise(h: &Harness) -> i64 {
    let alert = Alert {
        rule: Rule::DeniedAccess,
        subject: "user:dr.a".into(),
        at: "2027-01-15T22:10:00Z".into(),
        threshold: "3 refused requests in 10 min".into(),
        observed: "3 refused requests in 10 min (last: denied_no_grant)".into(),
        seqs: vec![41, 42, 43],
    };
    let mut store = h.ui.store.lock().expect("lock");
    let ids = outbox::store_alerts(store.conn_mut(), &[alert], &[Destination::Syslog], 43).expect("store");
    ids[0]
}

#[tokio::test]
async fn alerts_are_listed_and_reviewed_with_a_note_on_record() {
    let h = Harness::new();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    let id = raise(&h);

    let list = h.send(get_with("/admin/alerts", &token)).await;
    assert_eq!(list.status(), StatusCode::OK);
    let html = body_text(list).await;
    assert!(html.contains("1 alert not yet reviewed"), "{html}");
    assert!(html.contains("denied_access") && html.contains("user:dr.a") && html.contains("syslog: new"), "{html}");
    assert!(html.contains(&format!("href=\"/admin/alerts/{id}\"")), "{html}");

    // The dashboard's banner counts what is not yet reviewed and links to the list.
    let dashboard = body_text(h.send(get_with("/admin", &token)).await).await;
    assert!(dashboard.contains(r#"<a href="/admin/alerts">1 alert not yet reviewed</a>"#), "{dashboard}");

    let page = body_text(h.send(get_with(&format!("/admin/alerts/{id}"), &token)).await).await;
    assert!(page.contains("41, 42, 43") && page.contains("3 refused requests in 10 min"), "{page}");
    assert!(page.contains("Mark reviewed"), "{page}");

    let review = format!("/admin/alerts/{id}/review");
    let empty = h.send(post_form(&review, Some(&token), &[("csrf", &csrf), ("note", "  ")])).await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let note = "Called dr.a: wrong patient picked from the list, nothing opened.";
    let done = h.send(post_form(&review, Some(&token), &[("csrf", &csrf), ("note", note)])).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let page = body_text(h.send(get_with(&format!("/admin/alerts/{id}"), &token)).await).await;
    assert!(page.contains("it.admin, 20"), "who and when: {page}");
    assert!(page.contains("Called dr.a: wrong patient picked from the list"), "{page}");
    assert!(!page.contains("Mark reviewed"), "a reviewed alert offers the review again");
    let list = body_text(h.send(get_with("/admin/alerts", &token)).await).await;
    assert!(list.contains("0 alerts not yet reviewed"), "{list}");
    let dashboard = body_text(h.send(get_with("/admin", &token)).await).await;
    assert!(!dashboard.contains("alerts-banner"), "the banner stays after the review: {dashboard}");

    // A review is not overwritten.
    let again = h.send(post_form(&review, Some(&token), &[("csrf", &csrf), ("note", "something else")])).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(again).await.contains("already reviewed"));

    // Audited once, with the note as a digest only.
    let reviews: Vec<_> = h.audit_records().into_iter().filter(|r| r.detail.contains("alert_review")).collect();
    assert_eq!(reviews.len(), 1);
    let d: serde_json::Value = serde_json::from_str(&reviews[0].detail).expect("json");
    assert_eq!((d["who"]["user"].as_str(), d["alert"].as_i64()), (Some("it.admin"), Some(id)));
    assert_eq!(d["note"]["chars"].as_u64(), Some(note.chars().count() as u64));
    assert!(!reviews[0].detail.contains("wrong patient"), "the note's text reached the audit log");

    // Without the form's token, nothing happens.
    let id2 = raise_second(&h);
    let forged = h.send(post_form(&format!("/admin/alerts/{id2}/review"), Some(&token), &[("note", "x")])).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(h.send(get_with("/admin/alerts/999", &token)).await.status(), StatusCode::NOT_FOUND);
}

fn raise_second(h: &Harness) -> i64 {
    let alert = Alert {
        rule: Rule::OffHours,
        subject: "user:dr.b".into(),
        at: "2027-01-16T23:00:00Z".into(),
        threshold: "clinic hours".into(),
        observed: "active at 23:00 on a Saturday".into(),
        seqs: vec![50],
    };
    let mut store = h.ui.store.lock().expect("lock");
    outbox::store_alerts(store.conn_mut(), &[alert], &[], 50).expect("store")[0]
}

#[tokio::test]
async fn auditors_review_and_clinical_roles_are_kept_out() {
    let h = Harness::new();
    let auditor = h.add_user("audit.c", Role::Auditor, false);
    let clinician = h.add_user("dr.a", Role::Clinician, false);
    let id = raise(&h);
    let (token, csrf) = h.session(&auditor);
    assert_eq!(h.send(get_with("/admin/alerts", &token)).await.status(), StatusCode::OK);
    let done = h.send(post_form(&format!("/admin/alerts/{id}/review"), Some(&token), &[("csrf", &csrf), ("note", "expected")])).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let (token, csrf) = h.session(&clinician);
    assert_eq!(h.send(get_with("/admin/alerts", &token)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(h.send(get_with(&format!("/admin/alerts/{id}"), &token)).await.status(), StatusCode::FORBIDDEN);
    let post = h.send(post_form(&format!("/admin/alerts/{id}/review"), Some(&token), &[("csrf", &csrf), ("note", "mine")])).await;
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
}

/// The workflow after review: assign to an administrator or auditor, record a disposition
/// with a note, close. "Possible breach" starts the 60-day notification clock, shown on the
/// alert and the list until the alert is closed; a closed alert takes no further step; every
/// step is in the alert's history and audited with its note as a digest.
#[tokio::test]
async fn alerts_are_assigned_given_a_disposition_and_closed_with_the_breach_clock_shown_until_then() {
    let h = Harness::new();
    let admin = h.add_user("it.admin", Role::Admin, false);
    h.add_user("audit.c", Role::Auditor, false);
    h.add_user("dr.z", Role::Clinician, false);
    let (token, csrf) = h.session(&admin);
    let id = raise(&h);
    let post = |step: &str, fields: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> = vec![("csrf", csrf.clone())];
        form.extend(fields);
        (format!("/admin/alerts/{id}/{step}"), form)
    };
    let send = |(path, form): (String, Vec<(&str, String)>)| {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        h.send(post_form(&path, Some(&token), &pairs))
    };

    // A clinician cannot take an alert; an auditor can.
    let r = send(post("assign", vec![("assignee", "dr.z".into())])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(r).await.contains("not an administrator or auditor"));
    assert_eq!(send(post("assign", vec![("assignee", "audit.c".into())])).await.status(), StatusCode::SEE_OTHER);
    // Closing needs a disposition first; a disposition needs a note.
    let r = send(post("close", vec![("note", "done".into())])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(r).await.contains("has no disposition yet"));
    let r = send(post("disposition", vec![("disposition", "possible_breach".into()), ("note", " ".into())])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = send(post("disposition", vec![("disposition", "breach".into()), ("note", "x".into())])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "an unknown disposition");
    let why = "dr.a opened records of three patients not in their care after hours.";
    assert_eq!(send(post("disposition", vec![("disposition", "possible_breach".into()), ("note", why.into())])).await.status(), StatusCode::SEE_OTHER);

    let page = body_text(h.send(get_with(&format!("/admin/alerts/{id}"), &token)).await).await;
    assert!(page.contains("id=\"breach-clock\"") && page.contains("days left"), "{page}");
    assert!(page.contains("assigned to audit.c") || page.contains(">audit.c<"), "{page}");
    assert!(page.contains("possible breach"), "{page}");
    let list = body_text(h.send(get_with("/admin/alerts", &token)).await).await;
    assert!(list.contains("Possible breach under investigation") && list.contains(&format!("alert {id}</a>, notify by")), "{list}");

    let closing = "Notified the patients and the privacy officer on 2027-01-20.";
    assert_eq!(send(post("close", vec![("note", closing.into())])).await.status(), StatusCode::SEE_OTHER);
    let page = body_text(h.send(get_with(&format!("/admin/alerts/{id}"), &token)).await).await;
    assert!(!page.contains("breach-clock") && page.contains("closed: possible breach"), "{page}");
    assert!(page.contains("it.admin: assign audit.c") && page.contains("disposition possible breach") && page.contains("it.admin: close"), "{page}");
    assert!(!page.contains("close-form"), "a closed alert offers more steps");
    let list = body_text(h.send(get_with("/admin/alerts", &token)).await).await;
    assert!(!list.contains("Possible breach under investigation"), "{list}");
    assert!(list.contains("0 alerts not yet reviewed"), "closing acknowledges: {list}");
    let r = send(post("disposition", vec![("disposition", "false_positive".into()), ("note", "later".into())])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(r).await.contains("is closed"));

    // Audited: each step once, the notes as digests only.
    let steps: Vec<serde_json::Value> = h
        .audit_records()
        .into_iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.detail).ok())
        .filter(|d| d["action"].as_str().is_some_and(|a| a.starts_with("alert_")))
        .collect();
    let names: Vec<&str> = steps.iter().filter_map(|d| d["action"].as_str()).collect();
    assert_eq!(names, ["alert_assign", "alert_disposition", "alert_close"]);
    assert_eq!(steps[1]["value"], "possible_breach");
    assert_eq!(steps[1]["note"]["chars"].as_u64(), Some(why.chars().count() as u64));
    let all = serde_json::to_string(&steps).expect("json");
    assert!(!all.contains("three patients") && !all.contains("Notified"), "a note's text reached the audit log");
}
