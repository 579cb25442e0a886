//! Sign-in, sessions and their limits, lockout, CSRF, break-glass, and what reaches the audit
//! trail, all through the real pages of `app(state)` against a real SQLCipher store.

mod web_support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tokio::sync::mpsc;
use wardbox::web::clinical::{AnswerEvent, Citation, Clinical, ClinicalError, Document, ModelInfo, PatientSummary, TaskKind, Uploaded, Viewer};
use wardbox::web::session::audit_session_id;
use wardbox::web::accounts;
use wardbox::web::{Role, WebConfig};
use web_support::*;

fn session_of(resp: &axum::http::Response<Body>) -> String {
    set_cookie(resp, "wb_session").expect("a session cookie")
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_and_lands_on_the_role_home() {
    let h = Harness::new();
    h.add_user("dr.a", Role::Clinician, false);
    h.add_user("it.admin", Role::Admin, false);
    let resp = sign_in(&h, "/login", "Dr.A", PASSWORD, None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/patients");
    let cookie = set_cookie_header(&resp, "wb_session").expect("cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let token = session_of(&resp);
    assert_eq!(token.len(), 64);
    let resp = h.send(get_with("/session/status", &token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, r#"{"remaining":900}"#);

    let resp = sign_in(&h, "/login", "it.admin", PASSWORD, None).await;
    assert_eq!(location(&resp), "/admin");
    let page = body_text(h.send(get_with("/admin", &session_of(&resp))).await).await;
    assert!(page.contains("id=\"stages\"") && page.contains("Signs out in"), "{page}");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_get_the_same_answer() {
    let h = Harness::new();
    h.add_user("dr.a", Role::Clinician, false);
    let wrong = sign_in(&h, "/login", "dr.a", "not the password", None).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong, "wb_session").is_none());
    let unknown = sign_in(&h, "/login", "dr.nobody", "not the password", None).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (a, b) = (body_text(wrong).await, body_text(unknown).await);
    let msg = |s: &str| s.split("id=\"message\">").nth(1).and_then(|r| r.split('<').next()).unwrap_or_default().to_string();
    assert!(!msg(&a).is_empty());
    assert_eq!(msg(&a), msg(&b), "the page tells which user names exist");
    let failed: Vec<_> = h.audit_records().into_iter().filter(|r| r.kind == "login_failed").collect();
    assert_eq!(failed.len(), 2);
    assert!(failed[0].detail.contains("bad_password") && failed[1].detail.contains("unknown_user"));
    assert!(!failed.iter().any(|r| r.detail.contains("not the password")), "a password reached the audit log");
}

#[tokio::test]
async fn idle_sessions_end_after_the_limit_and_activity_extends_them() {
    let h = Harness::new();
    let user = h.add_user("dr.a", Role::Clinician, false);
    let token = session_of(&sign_in(&h, "/login", "dr.a", PASSWORD, None).await);
    h.clock.advance(14 * 60);
    assert_eq!(h.send(get_with("/", &token)).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&h.send(get_with("/", &token)).await), "/patients", "activity counts");
    // The timer's own polling does not keep the session alive.
    h.clock.advance(14 * 60);
    assert_eq!(h.send(get_with("/session/status", &token)).await.status(), StatusCode::OK);
    h.clock.advance(60);
    let resp = h.send(get_with("/patients", &token)).await;
    assert_eq!(location(&resp), "/login?m=idle");
    assert!(set_cookie_header(&resp, "wb_session").expect("cleared").contains("Max-Age=0"));
    // Gone for good: the next request is simply anonymous.
    assert_eq!(location(&h.send(get_with("/patients", &token)).await), "/login?m=signin");
    let ended = h.audit_records().into_iter().filter(|r| r.kind == "logout").collect::<Vec<_>>();
    assert_eq!(ended.len(), 1);
    assert!(ended[0].detail.contains("\"idle\""), "{}", ended[0].detail);
    let _ = user;
}

#[tokio::test]
async fn sessions_end_at_the_absolute_limit_however_busy() {
    let web = WebConfig { absolute_timeout_secs: 3600, ..WebConfig::default() };
    let h = Harness::with(web, None);
    h.add_user("dr.a", Role::Clinician, false);
    let token = session_of(&sign_in(&h, "/login", "dr.a", PASSWORD, None).await);
    for _ in 0..5 {
        h.clock.advance(600);
        assert_eq!(location(&h.send(get_with("/", &token)).await), "/patients");
    }
    h.clock.advance(600);
    assert_eq!(location(&h.send(get_with("/", &token)).await), "/login?m=absolute");
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let h = Harness::new();
    h.add_user("dr.a", Role::Clinician, false);
    let token = session_of(&sign_in(&h, "/login", "dr.a", PASSWORD, None).await);
    let page = body_text(h.send(get_with("/patients", &token)).await).await;
    let csrf = form_csrf(&page);
    let resp = h.send(post_form("/logout", Some(&token), &[("csrf", &csrf)])).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?m=signout");
    // Replaying the old cookie gets nothing.
    assert_eq!(location(&h.send(get_with("/patients", &token)).await), "/login?m=signin");
    assert_eq!(h.send(post_form("/logout", Some(&token), &[("csrf", &csrf)])).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn one_address_guessing_is_throttled_and_paused_while_the_real_admin_signs_in_from_another() {
    let h = Harness::new();
    h.add_user("it.admin", Role::Admin, false);
    let (attacker, office) = (client("10.66.0.1"), client("10.0.0.5"));
    for i in 0..3 {
        let resp = sign_in_from(&h, attacker, "/login", "it.admin", &format!("guess number {i}"), None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "free attempt {i}");
    }
    // The fourth at once is refused before any password check, even the right one.
    let resp = sign_in_from(&h, attacker, "/login", "it.admin", PASSWORD, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    let page = body_text(resp).await;
    assert!(page.contains("Too many failed sign-ins from this computer. Wait 1 second"), "{page}");
    // The administrator at the office is not affected.
    assert_eq!(sign_in_from(&h, office, "/login", "it.admin", PASSWORD, None).await.status(), StatusCode::SEE_OTHER);
    // The guesser waits as told each time (1, 2, 4... seconds) until the address is paused.
    for n in 3..10 {
        h.clock.advance(1 << (n - 3));
        let resp = sign_in_from(&h, attacker, "/login", "it.admin", "another guess!", None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "after {n} failures and the wait");
    }
    let resp = sign_in_from(&h, attacker, "/login", "it.admin", PASSWORD, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "900");
    assert!(body_text(resp).await.contains("sign-in from here is paused for 15 minutes"));
    // Ten guesses from one address never lock the account.
    assert_eq!(sign_in_from(&h, office, "/login", "it.admin", PASSWORD, None).await.status(), StatusCode::SEE_OTHER);
    let admin = accounts::find_by_username(h.ui.store.lock().expect("lock").conn(), "it.admin").expect("read").expect("admin");
    assert_eq!(admin.locked_until, 0, "one address locked the admin account");
    // Audited and alerted once; refused attempts are not audited one by one.
    let records = h.audit_records();
    let blocked: Vec<_> = records.iter().filter(|r| r.kind == "security_alert" && r.detail.contains("signin_address_blocked")).collect();
    assert_eq!(blocked.len(), 1);
    assert!(blocked[0].detail.contains("10.66.0.1"), "{}", blocked[0].detail);
    assert_eq!(records.iter().filter(|r| r.kind == "login_failed").count(), 10);
    let alerts = h.state.health.read().expect("health").alerts.clone();
    assert!(alerts.iter().any(|a| a.source == "access" && a.message.contains("10.66.0.1")), "{alerts:?}");
    // The pause runs out.
    h.clock.advance(900);
    assert_eq!(sign_in_from(&h, attacker, "/login", "it.admin", "yet another guess", None).await.status(), StatusCode::UNAUTHORIZED);
}

/// `n` wrong passwords for it.admin sent at the same moment from one address; their answers.
async fn guesses_at_once(h: &Harness, from: Option<std::net::SocketAddr>, n: usize) -> Vec<StatusCode> {
    let guesses: Vec<String> = (0..n).map(|i| format!("parallel guess {i}")).collect();
    let answers = futures_util::future::join_all(guesses.iter().map(|g| sign_in_from(h, from, "/login", "it.admin", g, None))).await;
    answers.iter().map(|r| r.status()).collect()
}

/// A terminal server (or the clinic's NAT) is one client address for many people, who sign in
/// together at the start of the day: attempts in progress are not failures. Guesses from one
/// address are still throttled however they are sent, and no more of them run at once than the
/// address may hold connections.
#[tokio::test]
async fn a_terminal_server_signs_sixteen_people_in_at_once_while_parallel_guesses_are_still_throttled() {
    let web = WebConfig { max_connections_per_address: 20, ..WebConfig::default() };
    let h = Harness::with(web, None);
    let staff: Vec<String> = (1..=16).map(|i| format!("dr.desk{i}")).collect();
    for name in &staff {
        h.add_user(name, Role::Clinician, false);
    }
    h.add_user("it.admin", Role::Admin, false);
    let terminal = client("10.0.0.40");
    let morning = futures_util::future::join_all(staff.iter().map(|name| sign_in_from(&h, terminal, "/login", name, PASSWORD, None))).await;
    for (name, resp) in staff.iter().zip(&morning) {
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{name} signing in with the others at the terminal server");
        assert_eq!(location(resp), "/patients");
    }

    // Six guesses sent at once from one address are each checked, and count: the address then
    // waits as after six failures in a row (8 seconds), even with the right password.
    let attacker = client("10.66.0.2");
    let guesses = guesses_at_once(&h, attacker, 6).await;
    assert_eq!(guesses, vec![StatusCode::UNAUTHORIZED; 6]);
    let resp = sign_in_from(&h, attacker, "/login", "it.admin", PASSWORD, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "8");
    // Past the free failures, parallel guesses get no further than one at a time.
    h.clock.advance(8);
    let more = guesses_at_once(&h, attacker, 5).await;
    assert_eq!(more.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 1, "{more:?}");
    assert_eq!(more.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 4, "{more:?}");

    // A flood from one address: no more attempts in progress at once than it may hold
    // connections; the rest are refused before any password check.
    let flooder = client("10.66.0.3");
    let flood = guesses_at_once(&h, flooder, 30).await;
    assert_eq!(flood.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 20, "{flood:?}");
    assert_eq!(flood.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 10, "{flood:?}");
    // Twenty failures at once pause the address as ten in a row would, and the ten past the
    // tenth lengthen the pause by their share of it (90 seconds each): a burst buys no more
    // guesses per period than patience does.
    let resp = sign_in_from(&h, flooder, "/login", "it.admin", PASSWORD, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1800");
    // Neither address locked the account, and the terminal server's people are not affected.
    let admin = accounts::find_by_username(h.ui.store.lock().expect("lock").conn(), "it.admin").expect("read").expect("admin");
    assert_eq!(admin.locked_until, 0, "one address locked the admin account");
    assert_eq!(sign_in_from(&h, terminal, "/login", "dr.desk1", PASSWORD, None).await.status(), StatusCode::SEE_OTHER);
    let blocked = h.audit_records().into_iter().filter(|r| r.kind == "security_alert" && r.detail.contains("signin_address_blocked")).count();
    assert_eq!(blocked, 1, "one pause, one alert");
}

#[tokio::test]
async fn accounts_lock_on_failures_from_several_addresses_but_their_person_still_signs_in_at_their_desk() {
    let h = Harness::new();
    h.add_user("dr.a", Role::Clinician, false);
    let admin = h.add_user("it.admin", Role::Admin, false);
    let desk = client("10.0.0.10");
    assert_eq!(sign_in_from(&h, desk, "/login", "dr.a", PASSWORD, None).await.status(), StatusCode::SEE_OTHER);
    // Distributed guessing: one try from each of five addresses.
    for i in 0..5 {
        let resp = sign_in_from(&h, client(&format!("10.9.0.{i}")), "/login", "dr.a", "wrong password!", None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Locked: a new address is refused even with the right password...
    assert_eq!(sign_in_from(&h, client("10.0.0.11"), "/login", "dr.a", PASSWORD, None).await.status(), StatusCode::UNAUTHORIZED);
    // ...while she keeps working at the desk she signed in from before.
    assert_eq!(sign_in_from(&h, desk, "/login", "dr.a", PASSWORD, None).await.status(), StatusCode::SEE_OTHER);
    // Her sign-in does not lift the lock for the guessers.
    assert_eq!(sign_in_from(&h, client("10.9.0.7"), "/login", "dr.a", PASSWORD, None).await.status(), StatusCode::UNAUTHORIZED);
    let records = h.audit_records();
    let locked = records.iter().find(|r| r.kind == "security_alert" && r.detail.contains("account_locked")).expect("audited");
    assert!(locked.detail.contains("\"addresses\":5"), "{}", locked.detail);
    assert!(records.iter().any(|r| r.kind == "login_failed" && r.detail.contains("\"locked\"")));
    let alerts = h.state.health.read().expect("health").alerts.clone();
    assert!(alerts.iter().any(|a| a.source == "access" && a.message.contains("account dr.a locked")), "{alerts:?}");
    // The lock runs out.
    h.clock.advance(15 * 60);
    assert_eq!(sign_in_from(&h, client("10.0.0.11"), "/login", "dr.a", PASSWORD, None).await.status(), StatusCode::SEE_OTHER);
    // Lock again; an administrator unlocks it through the users page.
    for i in 0..5 {
        sign_in_from(&h, client(&format!("10.8.0.{i}")), "/login", "dr.a", "wrong password!", None).await;
    }
    assert_eq!(sign_in_from(&h, client("10.0.0.12"), "/login", "dr.a", PASSWORD, None).await.status(), StatusCode::UNAUTHORIZED);
    let (token, csrf) = h.session(&admin);
    let users = body_text(h.send(get_with("/admin/users", &token)).await).await;
    assert!(users.contains("<b>locked</b>"), "{users}");
    let resp = h.send(post_form("/admin/users/dr.a/unlock", Some(&token), &[("csrf", &csrf)])).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(sign_in_from(&h, client("10.0.0.12"), "/login", "dr.a", PASSWORD, None).await.status(), StatusCode::SEE_OTHER);
    assert!(h.audit_records().iter().any(|r| r.kind == "admin_action" && r.detail.contains("user_unlock")));
}

#[tokio::test]
async fn state_changing_requests_without_the_session_token_are_refused() {
    let h = Harness::new();
    let admin = h.add_user("it.admin", Role::Admin, false);
    let other = h.add_user("it.other", Role::Admin, false);
    let (token, csrf) = h.session(&admin);
    let (_, other_csrf) = h.session(&other);
    let create = |csrf: Option<&str>| {
        let mut f = vec![("username", "dr.new"), ("display_name", "Dr New"), ("role", "clinician"), ("password", PASSWORD)];
        if let Some(c) = csrf {
            f.push(("csrf", c));
        }
        post_form("/admin/users", Some(&token), &f)
    };
    for (what, req) in [
        ("no token", create(None)),
        ("a wrong token", create(Some("0123"))),
        ("another session's token", create(Some(&other_csrf))),
    ] {
        let resp = h.send(req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{what}");
        assert!(body_text(resp).await.contains("did not come from a Wardbox page"), "{what}");
    }
    // A JSON or multipart body cannot smuggle the token past the form check.
    let json = Request::post("/logout")
        .header(header::COOKIE, format!("wb_session={token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!("{{\"csrf\":\"{csrf}\"}}")))
        .expect("req");
    assert_eq!(h.send(json).await.status(), StatusCode::FORBIDDEN);
    // The right token from another site's page is still refused (Origin check).
    let mut cross = create(Some(&csrf));
    cross.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().expect("h"));
    cross.headers_mut().insert(header::HOST, "wardbox.local".parse().expect("h"));
    assert_eq!(h.send(cross).await.status(), StatusCode::FORBIDDEN);
    // Nothing was created by any of them; the right token works, as a header too.
    {
        let store = h.ui.store.lock().expect("lock");
        assert!(wardbox::web::accounts::find_by_username(store.conn(), "dr.new").expect("q").is_none());
    }
    let mut ok = create(None);
    ok.headers_mut().insert("x-csrf-token", csrf.parse().expect("h"));
    assert_eq!(h.send(ok).await.status(), StatusCode::OK);
    assert!(h.audit_records().iter().any(|r| r.kind == "security_alert" && r.detail.contains("csrf_rejected")));
    // The sign-in form has its own token: without the matching cookie it is refused.
    let form = body_text(h.send(get("/login")).await).await;
    let req = post_form("/login", None, &[("csrf", &form_csrf(&form)), ("username", "it.admin"), ("password", PASSWORD)]);
    assert_eq!(h.send(req).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn break_glass_works_only_on_its_page_with_a_reason_and_is_shown_to_admins() {
    let h = Harness::new();
    h.add_user("er.emergency", Role::Clinician, true);
    h.add_user("dr.a", Role::Clinician, false);
    let admin = h.add_user("it.admin", Role::Admin, false);
    // Not on the normal page: emergency accounts are never used quietly.
    assert_eq!(sign_in(&h, "/login", "er.emergency", PASSWORD, None).await.status(), StatusCode::UNAUTHORIZED);
    // Not without a reason; not for a normal account.
    assert_eq!(sign_in(&h, "/login/emergency", "er.emergency", PASSWORD, Some("")).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        sign_in(&h, "/login/emergency", "dr.a", PASSWORD, Some("patient crashing in bay 3")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = sign_in(&h, "/login/emergency", "er.emergency", PASSWORD, Some("directory down, patient crashing in bay 3")).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let token = session_of(&resp);
    let page = body_text(h.send(get_with("/patients", &token)).await).await;
    assert!(page.contains("EMERGENCY ACCESS"), "the session does not show it is an emergency one");

    let alert = h.audit_records().into_iter().find(|r| r.kind == "security_alert" && r.detail.contains("break_glass_login")).expect("alert");
    assert!(!alert.detail.contains("bay 3"), "the reason text reached the audit chain: {}", alert.detail);
    let health = h.state.health.read().expect("health").clone();
    assert!(health.alerts.iter().any(|a| a.message.contains("EMERGENCY ACCESS: er.emergency")), "{:?}", health.alerts);
    let (admin_token, _) = h.session(&admin);
    let dash = body_text(h.send(get_with("/admin", &admin_token)).await).await;
    assert!(dash.contains("directory down, patient crashing in bay 3") && dash.contains("EMERGENCY ACCESS"), "{dash}");
    // Break-glass sessions are short: one hour by default.
    for _ in 0..5 {
        h.clock.advance(600);
        assert_eq!(location(&h.send(get_with("/", &token)).await), "/patients");
    }
    h.clock.advance(700);
    assert_eq!(location(&h.send(get_with("/", &token)).await), "/login?m=absolute");
}

#[tokio::test]
async fn page_views_are_audited_with_user_role_client_and_hashed_session() {
    let h = Harness::new();
    let user = h.add_user("dr.a", Role::Nurse, false);
    let (token, _) = h.session(&user);
    let mut req = get_with("/patients?q=smith", &token);
    req.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([10, 1, 2, 3], 40000))));
    h.send(req).await;
    let rec = h.audit_records().into_iter().rev().find(|r| r.kind == "access").expect("access record");
    let d: serde_json::Value = serde_json::from_str(&rec.detail).expect("json");
    assert_eq!(rec.actor, "dr.a");
    assert_eq!(d["who"]["role"], "nurse");
    assert_eq!(d["who"]["client"], "10.1.2.3");
    assert_eq!(d["who"]["session"], audit_session_id(&token));
    assert_eq!(d["route"], "/patients");
    assert!(!rec.detail.contains(&token), "the session token itself reached the audit log");
}

#[tokio::test]
async fn without_an_engine_clinical_pages_say_the_model_is_not_available() {
    let h = Harness::new();
    let user = h.add_user("dr.a", Role::Clinician, false);
    let (token, csrf) = h.session(&user);
    let resp = h.send(post_form("/patients/p-1/ask", Some(&token), &[("csrf", &csrf), ("text", "latest potassium?")])).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body_text(resp).await.contains("the model is not available"));
    let resp = h.send(get_with("/patients", &token)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!h.audit_records().iter().any(|r| r.kind == "query"), "a query was recorded though nothing answered");
}

/// A clinical back end that plays a fixed answer: it stands in for the engine (another
/// module) so that this test checks the web layer's relay, not the model.
#[derive(Debug)]
struct Scripted;

impl Clinical for Scripted {
    fn patients(&self, _v: &Viewer, _q: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Ok(vec![PatientSummary { id: "p-1".into(), display: "Test Patient, 1970-01-01".into() }])
    }
    fn patient(&self, _v: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError> {
        if id == "p-1" { Ok(PatientSummary { id: id.into(), display: "Test Patient".into() }) } else { Err(ClinicalError::UnknownPatient) }
    }
    fn document(&self, _v: &Viewer, _p: &str, _d: &str) -> Result<Document, ClinicalError> {
        Err(ClinicalError::UnknownDocument)
    }
    fn run(&self, _v: &Viewer, _p: &str, _t: TaskKind, _text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            for t in ["Potassium ", "was 5.9 ", "[1]."] {
                let _ = tx.send(AnswerEvent::Token(t.into())).await;
            }
            let c = Citation { n: 1, document_id: "lab/2027-01-14".into(), title: "Labs 14 Jan".into(), snippet: "K 5.9".into() };
            let _ = tx.send(AnswerEvent::Citation(c)).await;
            let _ = tx.send(AnswerEvent::Done { model: "test-model".into() }).await;
        });
        Ok(rx)
    }
    fn upload(&self, _v: &Viewer, _p: &str, _f: &str, _c: &str, _b: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        Ok(Uploaded { document_id: "doc-9".into(), already_in_record: false, identifiers_replaced: [("NAME".to_owned(), 2)].into() })
    }
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn answers_stream_as_server_sent_events_and_are_audited_as_digests() {
    let h = Harness::with(WebConfig::default(), Some(Arc::new(Scripted)));
    let user = h.add_user("dr.a", Role::Clinician, false);
    let (token, csrf) = h.session(&user);
    let resp = h.send(post_form("/patients/p-1/ask", Some(&token), &[("csrf", &csrf), ("text", "What was the potassium?")])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let body = body_text(resp).await;
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events, ["token", "token", "token", "citation", "timing", "done"], "{body}");
    assert!(body.contains(r#""href":"/patients/p-1/documents/lab%2F2027-01-14""#), "{body}");
    // Give the relay a moment to write the answer record after the stream ended.
    for _ in 0..50 {
        if h.audit_records().iter().any(|r| r.kind == "answer") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let records = h.audit_records();
    let q = records.iter().find(|r| r.kind == "query").expect("query record");
    let a = records.iter().find(|r| r.kind == "answer").expect("answer record");
    assert!(!q.detail.contains("potassium") && q.detail.contains("sha256"), "{}", q.detail);
    assert!(!a.detail.contains("5.9") && a.detail.contains("lab/2027-01-14") && a.detail.contains("test-model"), "{}", a.detail);
    // Multipart upload with the token in the header.
    let boundary = "XBOUNDARYX";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let req = Request::post("/patients/p-1/upload")
        .header(header::COOKIE, format!("wb_session={token}"))
        .header("x-csrf-token", &csrf)
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .expect("req");
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, r#"{"document_id":"doc-9","already_in_record":false,"identifiers_replaced":{"NAME":2}}"#);
    // The uploader sees what de-identification replaced, and the audit record keeps the counts.
    let records = h.audit_records();
    let up = records.iter().rev().find(|r| r.detail.contains(r#""action":"upload""#)).expect("upload record");
    assert!(up.detail.contains(r#""identifiers_replaced":{"NAME":2}"#), "{}", up.detail);
}
