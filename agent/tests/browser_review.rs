//! The weekly activity review page in a real headless Chromium (chromedriver over WebDriver)
//! against the real TLS listener: an auditor opens it from the navigation, goes to this week,
//! sees each section filled from the seeded audit trail, and marks the week reviewed; the
//! page then says who reviewed it and when, and an administrator sees the same. A clinician
//! has no link to it and is refused at its address. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/browser-artifacts/`.
//!
//! Tier `browser_`: needs Debian `chromium` and `chromium-driver`; fails naming them if absent.

mod browser_support;
mod web_support;

use std::time::{Duration, Instant};

use browser_support::*;
use fantoccini::{Client, Locator};
use serde_json::json;
use wardbox::audit::EventKind;
use wardbox::web::{Role, WebConfig};
use wardbox_alerts::AlertsConfig;
use web_support::*;

/// Polls until the element's text satisfies `ok` (a page after a click or a redirect), up to
/// 10 s, and returns it.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ok(&t) {
                return t;
            }
            last = t;
        }
        assert!(Instant::now() < deadline, "{css} did not show what was expected within 10 s; it shows {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_out(c: &Client) {
    c.find(Locator::Id("signout")).await.expect("sign-out button").click().await.expect("click");
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("signin")).await.expect("back at the sign-in page");
}

/// The rows of a section's table, each as its cells' texts.
async fn rows(c: &Client, table: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for row in c.find_all(Locator::Css(&format!("#{table} tbody tr"))).await.expect("rows") {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await.expect("cells") {
            cells.push(cell.text().await.expect("text"));
        }
        out.push(cells);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_auditor_reviews_the_week_and_the_page_says_who_and_when() {
    let driver = start_driver();
    // A clinic closed every day: all the seeded work is off hours, whatever the day the test runs.
    let mut rules = AlertsConfig::default();
    let hours = &mut rules.clinic_hours;
    for day in [&mut hours.mon, &mut hours.tue, &mut hours.wed, &mut hours.thu, &mut hours.fri, &mut hours.sat, &mut hours.sun] {
        *day = "closed".into();
    }
    let h = Harness::with_real_clock_and_rules(WebConfig::default(), rules);
    h.add_user("audit.c", Role::Auditor, false);
    h.add_user("it.admin", Role::Admin, false);
    h.add_user("dr.a", Role::Clinician, false);

    // This week's audit trail: dr.a opens three patients (one twice) and pastes a long text
    // into a question; someone types a wrong password three times for "bob"; an emergency
    // sign-in. The records are the shapes the web layer writes (as in web_review.rs).
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

    let server = serve(&h, h.dir.path()).await;
    let base = server.base.clone();
    let profile = tempfile::tempdir().expect("profile");
    let c = browser(&driver, profile.path()).await;

    // The auditor opens the page from the navigation (last week), then goes to this week.
    sign_in_as(&c, &base, "audit.c").await;
    c.find(Locator::LinkText("Activity review")).await.expect("the navigation link").click().await.expect("click");
    wait_text(&c, "h1", |t| t.starts_with("Weekly activity review")).await;
    c.find(Locator::XPath("//a[contains(., 'week after')]")).await.expect("the next week's link").click().await.expect("click");
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let monday = wardbox::alerting::review::monday_of(today);
    wait_text(&c, "h1", |t| t.ends_with(&monday.to_string())).await;
    assert_eq!(
        wait_text(&c, "#reviewed-this-week", |t| !t.is_empty()).await,
        "This week has not been reviewed."
    );
    assert_eq!(wait_text(&c, "#last-review", |t| !t.is_empty()).await, "No week has been reviewed yet.");

    // Each section shows the seeded week.
    let off_hours = rows(&c, "off-hours").await;
    assert!(off_hours.iter().any(|r| r[0] == "dr.a"), "dr.a's work off hours: {off_hours:?}");
    let prompts = rows(&c, "large-prompts").await;
    assert!(prompts.iter().any(|r| r[0] == "dr.a" && r[1] == "12000"), "the large question: {prompts:?}");
    assert!(rows(&c, "failed-accounts").await.contains(&vec!["bob".to_string(), "3".to_string()]));
    assert!(rows(&c, "failed-addresses").await.contains(&vec!["10.0.0.9".to_string(), "3".to_string()]));
    let emergency = rows(&c, "break-glass").await;
    assert!(emergency.iter().any(|r| r[0] == "dr.a"), "the emergency sign-in: {emergency:?}");
    assert!(rows(&c, "patients-by-user").await.contains(&vec!["dr.a".to_string(), "3".to_string()]), "three distinct patients");
    let page = c.source().await.expect("page source");
    assert!(!page.contains("/patients/17") && !page.contains(">17<"), "a patient id on the page");
    screenshot(&c, "review-week.png").await;

    // Mark the week reviewed: the page now says by whom and when, with the note.
    let note = "Looked at dr.a's large question (a pasted letter) and bob's failed sign-ins.";
    c.find(Locator::Css("form[action='/admin/review'] textarea[name=note]")).await.expect("note").send_keys(note).await.expect("type");
    let before = jiff::Timestamp::now();
    c.find(Locator::Css("form[action='/admin/review'] button")).await.expect("button").click().await.expect("click");
    let reviewed = wait_text(&c, "#reviewed-this-week", |t| t.starts_with("Reviewed by audit.c at ")).await;
    assert!(reviewed.ends_with(note), "{reviewed}");
    let at: jiff::Timestamp = reviewed["Reviewed by audit.c at ".len()..].split(": ").next().expect("time").parse().expect("a time");
    assert!(at >= before.checked_sub(jiff::Span::new().seconds(1)).expect("t") && at <= jiff::Timestamp::now(), "reviewed at {at}");
    let last = wait_text(&c, "#last-review", |t| t.contains("by audit.c")).await;
    assert!(last.starts_with(&format!("Last review of any week: week of {monday}, by audit.c at ")), "{last}");
    screenshot(&c, "review-marked.png").await;
    sign_out(&c).await;

    // An administrator sees the same review of that week.
    sign_in_as(&c, &base, "it.admin").await;
    c.goto(&format!("{base}/admin/review?week={monday}")).await.expect("review page");
    assert_eq!(wait_text(&c, "#reviewed-this-week", |t| t.starts_with("Reviewed by")).await, reviewed);
    sign_out(&c).await;

    // A clinician has no link to the page and is refused at its address.
    sign_in_as(&c, &base, "dr.a").await;
    assert!(c.find(Locator::LinkText("Activity review")).await.is_err(), "a clinician has the link");
    c.goto(&format!("{base}/admin/review?week={monday}")).await.expect("review page");
    let body = wait_text(&c, "body", |t| !t.is_empty()).await;
    assert!(body.contains("Your role does not give access to this page."), "{body}");
    assert!(!body.contains("Reviewed by") && !body.contains("bob"), "the refused page shows the review: {body}");
    screenshot(&c, "review-refused.png").await;
    c.close().await.expect("close");
    server.shutdown().await;

    let records = h.audit_records();
    let reviews: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.detail).ok())
        .filter(|d| d["action"] == "activity_review")
        .collect();
    assert_eq!(reviews.len(), 1, "one review recorded");
    assert_eq!((reviews[0]["who"]["user"].as_str(), reviews[0]["week"].as_str()), (Some("audit.c"), Some(monday.to_string().as_str())));
    assert!(!reviews[0].to_string().contains("pasted letter"), "the note's text reached the audit log");
    let refused = records.iter().filter(|r| r.actor == "dr.a" && r.detail.contains("\"route\":\"/admin/review\"") && r.detail.contains("denied_role")).count();
    assert_eq!(refused, 1, "the clinician's attempt is audited as refused");
}
