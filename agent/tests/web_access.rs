//! The access management page: grants per user and per patient, granting by record id and
//! revoking (administrators only), and the quarterly access review, each user's access
//! confirmed or revoked and recorded; every change audited; auditors read, clinicians are out.

mod web_support;

use axum::http::StatusCode;
use wardbox::web::Role;
use wardbox_rag::index;
use web_support::*;

#[tokio::test]
async fn grants_are_managed_and_reviewed_each_quarter() {
    let h = Harness::new();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let auditor = h.add_user("audit.c", Role::Auditor, false);
    let clinician = h.add_user("dr.a", Role::Clinician, false);
    h.add_user("rn.b", Role::Nurse, false);
    let (p1, p2) = {
        let store = h.ui.store.lock().expect("lock");
        let p1 = index::patient_owner(store.conn(), "MRN-0001").expect("patient").0;
        let p2 = index::patient_owner(store.conn(), "MRN-0002").expect("patient").0;
        index::grant(store.conn(), "dr.a", p1).expect("grant");
        (p1, p2)
    };
    let (token, csrf) = h.session(&admin);
    let page = body_text(h.send(get_with("/admin/access", &token)).await).await;
    assert!(page.contains(&format!("<td>dr.a</td><td>clinician</td><td>{p1}</td><td>1</td>")), "{page}");
    assert!(page.contains("0 of 2 users reviewed this quarter"), "{page}");
    assert!(!page.contains("MRN-0001"), "record ids are not listed");

    // Grant by record id; a wrong id or a non-clinical account is refused.
    let r = h.send(post_form("/admin/access/grant", Some(&token), &[("csrf", &csrf), ("username", "rn.b"), ("patient", "MRN-0002")])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = h.send(post_form("/admin/access/grant", Some(&token), &[("csrf", &csrf), ("username", "rn.b"), ("patient", "MRN-9999")])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = h.send(post_form("/admin/access/grant", Some(&token), &[("csrf", &csrf), ("username", "audit.c"), ("patient", "MRN-0002")])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = body_text(h.send(get_with("/admin/access", &token)).await).await;
    assert!(page.contains(&format!("<td>{p2}</td><td>rn.b</td>")), "per patient: {page}");

    // The quarterly review: dr.a confirmed, rn.b revoked (every grant of theirs removed).
    let r = h.send(post_form("/admin/access/review", Some(&token), &[("csrf", &csrf), ("username", "dr.a"), ("decision", "confirmed")])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = h.send(post_form("/admin/access/review", Some(&token), &[("csrf", &csrf), ("username", "rn.b"), ("decision", "revoked")])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = body_text(h.send(get_with("/admin/access", &token)).await).await;
    assert!(page.contains("2 of 2 users reviewed this quarter"), "{page}");
    assert!(page.contains("confirmed by it.admin at") && page.contains("revoked by it.admin at"), "{page}");
    assert!(page.contains("<td>rn.b</td><td>nurse</td><td></td><td>0</td>"), "{page}");
    {
        let store = h.ui.store.lock().expect("lock");
        assert!(!index::revoke(store.conn(), "rn.b", p2).expect("revoke"), "the review left rn.b's grant");
    }
    // Revoke one grant.
    let r = h.send(post_form("/admin/access/revoke", Some(&token), &[("csrf", &csrf), ("username", "dr.a"), ("patient", &p1.to_string())])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let again = h.send(post_form("/admin/access/revoke", Some(&token), &[("csrf", &csrf), ("username", "dr.a"), ("patient", &p1.to_string())])).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    let actions: Vec<String> = h
        .audit_records()
        .into_iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.detail).ok())
        .filter_map(|d| d["action"].as_str().filter(|a| a.starts_with("access_")).map(|a| format!("{a} {}", d["target"].as_str().unwrap_or(""))))
        .collect();
    assert_eq!(actions, ["access_grant rn.b", "access_review dr.a", "access_review rn.b", "access_revoke dr.a"]);

    // Auditors read; they change nothing. Clinicians cannot open it.
    let (token, csrf) = h.session(&auditor);
    assert_eq!(h.send(get_with("/admin/access", &token)).await.status(), StatusCode::OK);
    let r = h.send(post_form("/admin/access/grant", Some(&token), &[("csrf", &csrf), ("username", "dr.a"), ("patient", "MRN-0001")])).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (token, _) = h.session(&clinician);
    assert_eq!(h.send(get_with("/admin/access", &token)).await.status(), StatusCode::FORBIDDEN);
}
