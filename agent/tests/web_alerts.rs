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
