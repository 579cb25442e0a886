//! The Alerts workflow and the access review in a real headless Chromium (chromedriver over
//! WebDriver) against the real TLS listener: the dashboard's banner leads to the alert, which
//! is marked reviewed, declared a possible breach (the notification clock shows), and closed
//! (the clock and the banner go); then the quarterly access review confirms a user's access.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/browser-artifacts/`.
//!
//! Tier `browser_`: needs Debian `chromium` and `chromium-driver`; fails naming them if absent.

mod browser_support;
mod web_support;

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use wardbox::alerting::outbox;
use wardbox::web::{Role, WebConfig};
use wardbox_alerts::{Alert, Rule};
use browser_support::*;
use web_support::*;

async fn text_of(c: &Client, css: &str) -> String {
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.expect(css).text().await.expect("text")
}

/// Polls until the element's text satisfies `ok` (the page after a form's redirect), up to 10 s.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && ok(&t)
        {
            return t;
        }
        assert!(Instant::now() < deadline, "{css} did not show what was expected within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit(c: &Client, form: &str, note: &str) {
    c.find(Locator::Css(&format!("{form} textarea, {form} input[name=note]"))).await.expect("note field").send_keys(note).await.expect("type");
    c.find(Locator::Css(&format!("{form} button"))).await.expect("button").click().await.expect("click");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_admin_takes_an_alert_from_the_banner_to_closed_and_reviews_access() {
    let driver = start_driver();
    let h = Harness::with_real_clock(WebConfig::default(), None);
    h.add_user("it.admin", Role::Admin, false);
    h.add_user("dr.a", Role::Clinician, false);
    let id = {
        let alert = Alert {
            rule: Rule::OwnRecord,
            subject: "user:dr.a".into(),
            at: "2027-01-15T22:10:00Z".into(),
            threshold: "every opening of a record with the user's own name (once a day per record)".into(),
            observed: "opened the record of a patient with the user's own name".into(),
            seqs: vec![41],
        };
        let mut store = h.ui.store.lock().expect("lock");
        let p = wardbox_rag::index::patient_owner(store.conn(), "MRN-0001").expect("patient").0;
        wardbox_rag::index::grant(store.conn(), "dr.a", p).expect("grant");
        outbox::store_alerts(store.conn_mut(), &[alert], &[], 41).expect("store")[0]
    };
    let server = serve(&h, h.dir.path()).await;
    let base = server.base.clone();
    let profile = tempfile::tempdir().expect("profile");
    let c = browser(&driver, profile.path()).await;

    c.goto(&format!("{base}/login")).await.expect("login page");
    c.find(Locator::Id("username")).await.expect("username").send_keys("it.admin").await.expect("type");
    c.find(Locator::Id("password")).await.expect("password").send_keys(PASSWORD).await.expect("type");
    c.find(Locator::Id("signin")).await.expect("button").click().await.expect("click");
    // The dashboard's banner leads to the list, the list to the alert.
    let banner = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::LinkText("1 alert not yet reviewed")).await.expect("the banner");
    screenshot(&c, "alerts-banner.png").await;
    banner.click().await.expect("click");
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(&format!("a[href='/admin/alerts/{id}']"))).await.expect("the alert in the list").click().await.expect("click");
    assert!(text_of(&c, "#state").await.contains("open"));

    submit(&c, &format!("form[action='/admin/alerts/{id}/review']"), "dr.a looked up her own record; she was told the rule.").await;
    wait_text(&c, "#reviewed", |t| t.starts_with("it.admin")).await;
    c.find(Locator::Css("#disposition-form select")).await.expect("select").select_by_value("possible_breach").await.expect("choose");
    submit(&c, "#disposition-form", "She also opened her neighbour's record.").await;
    wait_text(&c, "#breach-clock", |t| t.contains("notify by") && t.contains("days left")).await;
    screenshot(&c, "alert-breach-clock.png").await;
    c.goto(&format!("{base}/admin/alerts")).await.expect("list");
    assert!(text_of(&c, ".breach-clock").await.contains(&format!("alert {id}")));
    c.goto(&format!("{base}/admin/alerts/{id}")).await.expect("alert");
    submit(&c, "#close-form", "Neighbour notified on 2027-01-20; training booked.").await;
    wait_text(&c, "#state", |t| t == "closed: possible breach").await;
    assert!(c.find(Locator::Id("breach-clock")).await.is_err(), "the clock shows after closing");
    screenshot(&c, "alert-closed.png").await;
    c.goto(&format!("{base}/admin")).await.expect("dashboard");
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("stages")).await.expect("the health page");
    assert!(c.find(Locator::LinkText("1 alert not yet reviewed")).await.is_err(), "the banner stays");

    // The quarterly access review.
    c.goto(&format!("{base}/admin/access")).await.expect("access page");
    assert!(text_of(&c, "#review-progress").await.starts_with("0 of 1"));
    c.find(Locator::Css("#access-by-user form input[value=confirmed] ~ button")).await.expect("confirm").click().await.expect("click");
    wait_text(&c, "#review-progress", |t| t.starts_with("1 of 1")).await;
    assert!(text_of(&c, "#access-by-user").await.contains("confirmed by it.admin"));
    screenshot(&c, "access-review.png").await;
    c.close().await.expect("close");
    server.shutdown().await;

    let steps: Vec<String> = h
        .audit_records()
        .into_iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.detail).ok())
        .filter_map(|d| d["action"].as_str().filter(|a| a.starts_with("alert_") || a.starts_with("access_")).map(str::to_owned))
        .collect();
    assert_eq!(steps, ["alert_review", "alert_disposition", "alert_close", "access_review"]);
}
