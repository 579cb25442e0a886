//! The Reports page through `app(state)`: admins and auditors list, generate, download and
//! attest; only admins waive; clinicians are refused; bad input is refused naming the problem;
//! every action is in the audit trail. Generation is a stand-in that writes the three files
//! (the real generation is `report_cli.rs`, against a live dev box).

mod web_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{StatusCode, header};
use tower::ServiceExt;
use wardbox::audit::AuditLog;
use wardbox::boot::BootLog;
use wardbox::config::Profile;
use wardbox::store::{Store, StoreKey};
use wardbox::web::accounts::{self, NewUser, Role};
use wardbox::web::reports::{GeneratedSummary, ReportService};
use wardbox::web::{AppState, Health, ManualClock, Ui, WebConfig, app};
use web_support::{PASSWORD, body_text, get_with, post_form};

/// Writes the three files a generation writes, numbered, and counts its calls.
#[derive(Debug)]
struct WritesFiles {
    dir: PathBuf,
    calls: Mutex<Vec<(String, bool)>>,
}

impl ReportService for WritesFiles {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn generate(&self, actor: &str, full_chain: bool) -> Result<GeneratedSummary, String> {
        let mut calls = self.calls.lock().expect("lock");
        calls.push((actor.to_string(), full_chain));
        let stem = format!("wardbox-report-2027011{}T080000Z", calls.len());
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        for (ext, body) in [("json", "{\"format\":\"wardbox-report/1\"}"), ("html", "<!doctype html><title>r</title>"), ("oscal.json", "{}")] {
            std::fs::write(self.dir.join(format!("{stem}.{ext}")), body).map_err(|e| e.to_string())?;
        }
        Ok(GeneratedSummary { file: format!("{stem}.json"), digest: "sha256:00".into(), signed: false, counts: "20 pass, 3 fail".into() })
    }
}

struct Box_ {
    _dir: tempfile::TempDir,
    state: AppState,
    ui: Arc<Ui>,
    service: Arc<WritesFiles>,
    store_path: PathBuf,
    key: StoreKey,
    writer: Option<wardbox::audit::WriterThread>,
}

impl Drop for Box_ {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.join_within(std::time::Duration::from_secs(2));
        }
    }
}

fn start() -> Box_ {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = StoreKey::random();
    let store_path = dir.path().join("wardbox.db");
    let (mut store, _) = Store::open_or_create(&store_path, &key).expect("store");
    store.migrate().expect("migrate");
    let (audit, writer) = AuditLog::start(&store_path, &key).expect("audit");
    let service = Arc::new(WritesFiles { dir: dir.path().join("reports"), calls: Mutex::new(Vec::new()) });
    let ui = Ui::new(Arc::new(Mutex::new(store)), audit, &WebConfig::default())
        .with_clock(Arc::new(ManualClock::new(1_800_000_000)))
        .with_reports(service.clone());
    let health = Health::from_boot(Profile::Dev, &BootLog::new(Profile::Dev), "2027-01-15T08:00:00Z".into());
    let state = AppState::with_ui(health, ui);
    let ui = state.ui.clone().expect("ui");
    Box_ { _dir: dir, state, ui, service, store_path, key, writer: Some(writer) }
}

impl Box_ {
    /// A signed-in session of a new account with `role`: (token, csrf).
    fn session(&self, username: &str, role: Role) -> (String, String) {
        let user = {
            let store = self.ui.store.lock().expect("lock");
            let new = NewUser { username, display_name: username, role, password: PASSWORD, break_glass: false };
            accounts::add_user(store.conn(), &new, "2027-01-15T08:00:00Z").expect("add user")
        };
        let (token, s) = self.ui.sessions.create(&user, 1_800_000_000, false);
        (token, s.csrf)
    }

    async fn send(&self, req: axum::http::Request<axum::body::Body>) -> axum::http::Response<axum::body::Body> {
        app(self.state.clone()).oneshot(req).await.expect("infallible")
    }

    /// The `admin_action` details in the audit trail, oldest first.
    fn admin_actions(&self) -> Vec<serde_json::Value> {
        let store = Store::open_existing(&self.store_path, &self.key).expect("open");
        let mut stmt = store.conn().prepare("SELECT detail FROM audit WHERE kind = 'admin_action' ORDER BY seq").expect("prepare");
        stmt.query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|d| serde_json::from_str(&d.expect("row")).expect("json"))
            .collect()
    }
}

#[tokio::test]
async fn admins_and_auditors_generate_list_download_and_attest() {
    let b = start();
    let (admin, admin_csrf) = b.session("pm.jones", Role::Admin);
    let (auditor, auditor_csrf) = b.session("auditor.kim", Role::Auditor);

    let page = b.send(get_with("/admin/reports", &auditor)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = body_text(page).await;
    assert!(html.contains("No report yet"), "{html}");
    assert!(html.contains("<option>admin-training</option>"), "the attestation form lists the items");
    assert!(!html.contains("action=\"/admin/reports/waive\""), "auditors see no waiver form");

    // The auditor generates; the page names the file and its counts.
    let done = b.send(post_form("/admin/reports/generate", Some(&auditor), &[("csrf", &auditor_csrf)])).await;
    assert_eq!(done.status(), StatusCode::OK);
    let html = body_text(done).await;
    assert!(html.contains("Report wardbox-report-20270111T080000Z.json written (UNSIGNED (no TPM on this box)): 20 pass, 3 fail."), "{html}");
    assert!(html.contains("href=\"/admin/reports/wardbox-report-20270111T080000Z.oscal.json\""), "{html}");
    // The admin asks for a full walk of the chain.
    let done = b.send(post_form("/admin/reports/generate", Some(&admin), &[("csrf", &admin_csrf), ("full_chain", "1")])).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(*b.service.calls.lock().expect("lock"), vec![("auditor.kim".to_string(), false), ("pm.jones".to_string(), true)]);

    // Downloads: each file with its type, as an attachment; nothing else of the directory.
    let html = b.send(get_with("/admin/reports/wardbox-report-20270111T080000Z.html", &auditor)).await;
    assert_eq!(html.status(), StatusCode::OK);
    assert_eq!(html.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(html.headers()[header::CONTENT_DISPOSITION].to_str().expect("ascii").starts_with("attachment"));
    let json = b.send(get_with("/admin/reports/wardbox-report-20270111T080000Z.json", &admin)).await;
    assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(body_text(json).await, "{\"format\":\"wardbox-report/1\"}");
    std::fs::write(b.service.dir.join("other.json"), "{}").expect("write");
    for name in ["other.json", "..%2Fwardbox.db", "wardbox-report-20990101T000000Z.json"] {
        let refused = b.send(get_with(&format!("/admin/reports/{name}"), &admin)).await;
        assert_eq!(refused.status(), StatusCode::NOT_FOUND, "{name}");
    }

    // Attestation by the auditor; a bad date and a measured item are refused, naming why.
    let ok = b
        .send(post_form("/admin/reports/attest", Some(&auditor), &[("csrf", &auditor_csrf), ("item", "admin-risk-assessment"), ("document", "Risk assessment 2026, signed"), ("valid_until", "2099-01-01")]))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(body_text(ok).await.contains("Attestation recorded for admin-risk-assessment"));
    let bad = b
        .send(post_form("/admin/reports/attest", Some(&auditor), &[("csrf", &auditor_csrf), ("item", "admin-training"), ("document", "log"), ("valid_until", "soon")]))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(bad).await.contains("is not a date"));
    let measured = b
        .send(post_form("/admin/reports/attest", Some(&admin), &[("csrf", &admin_csrf), ("item", "access-automatic-logoff"), ("document", "we promise"), ("valid_until", "2099-01-01")]))
        .await;
    assert_eq!(measured.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(measured).await.contains("never attested"));
    // The box records the weekly activity review itself: no attestation stands in for it.
    let recorded = b
        .send(post_form("/admin/reports/attest", Some(&admin), &[("csrf", &admin_csrf), ("item", "admin-activity-review"), ("document", "we looked"), ("valid_until", "2099-01-01")]))
        .await;
    assert_eq!(recorded.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(recorded).await.contains("never attested"));

    // Waivers: admins only.
    let waived = b
        .send(post_form("/admin/reports/waive", Some(&admin), &[("csrf", &admin_csrf), ("item", "physical-usb-storage"), ("approver", "dr.owner"), ("justification", "updates by USB"), ("expires", "2099-01-01")]))
        .await;
    assert_eq!(waived.status(), StatusCode::OK);
    let html = body_text(waived).await;
    assert!(html.contains("Waiver recorded for physical-usb-storage"), "{html}");
    assert!(html.contains("Risk assessment 2026, signed"), "the page lists the attestations: {html}");
    let refused = b
        .send(post_form("/admin/reports/waive", Some(&auditor), &[("csrf", &auditor_csrf), ("item", "physical-usb-storage"), ("approver", "x"), ("justification", "y"), ("expires", "2099-01-01")]))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Every action is audited with who did it; the texts only as digests.
    let actions = b.admin_actions();
    let names: Vec<&str> = actions.iter().map(|a| a["action"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, vec!["report_generate", "report_generate", "report_attestation", "report_waiver"], "{actions:?}");
    assert_eq!(actions[0]["who"]["user"], "auditor.kim");
    assert_eq!(actions[1]["full_chain"], true);
    let all = actions.iter().map(|a| a.to_string()).collect::<String>();
    assert!(!all.contains("Risk assessment 2026") && !all.contains("updates by USB"), "{all}");
}

#[tokio::test]
async fn clinicians_do_not_reach_the_reports_page() {
    let b = start();
    let (clinician, csrf) = b.session("dr.smith", Role::Clinician);
    assert_eq!(b.send(get_with("/admin/reports", &clinician)).await.status(), StatusCode::FORBIDDEN);
    let refused = b.send(post_form("/admin/reports/generate", Some(&clinician), &[("csrf", &csrf)])).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(b.service.calls.lock().expect("lock").is_empty());
}

/// A real report of made-up facts (the report crate's own renderings, unsigned) written where
/// the page lists reports; `previous` is compared with as generation does.
fn write_report(dir: &Path, stamp: &str, change: impl FnOnce(&mut wardbox_report::Facts), previous: Option<&wardbox_report::Report>) -> wardbox_report::Report {
    let now: jiff::Timestamp = format!("{}-{}-{}T{}:{}:{}Z", &stamp[..4], &stamp[4..6], &stamp[6..8], &stamp[9..11], &stamp[11..13], &stamp[13..15]).parse().expect("time");
    let mut facts = wardbox_report::sample::healthy(now);
    change(&mut facts);
    let mut report = wardbox_report::evaluate(&facts, now);
    if let Some(p) = previous {
        report.compare_with(p, None);
    }
    let out = wardbox_report::json::assemble::<wardbox_report::json::DocumentError>(&report, |_| Ok(None)).expect("render");
    std::fs::create_dir_all(dir).expect("mkdir");
    let base = dir.join(format!("wardbox-report-{stamp}"));
    std::fs::write(base.with_extension("json"), &out.json).expect("write");
    std::fs::write(base.with_extension("html"), &out.html).expect("write");
    std::fs::write(base.with_extension("oscal.json"), &out.oscal).expect("write");
    report
}

#[tokio::test]
async fn the_page_shows_what_changed_and_compares_two_reports_regressions_first() {
    let b = start();
    let (auditor, _) = b.session("auditor.kim", Role::Auditor);
    let dir = b.service.dir.clone();
    // October: training not attested yet. November: training attested, the idle logoff
    // raised to an hour (pass -> fail), Secure Boot turned off in the firmware (the measured
    // boot, pass -> fail), the firewall drifted (pass -> fail).
    let october = write_report(&dir, "20261001T080000Z", |f| f.attestations.retain(|a| a.item != "admin-training"), None);
    let november = write_report(
        &dir,
        "20261101T080000Z",
        |f| {
            f.sessions.idle_timeout_secs = 3600;
            if let wardbox_report::Probe::Observed { value } = &mut f.measured_boot.firmware {
                value.secure_boot = Some(false);
            }
            if let wardbox_report::Probe::Observed { value } = &mut f.firewall {
                value.drift = vec!["table inet wardbox was flushed: its chains hold no rules".into()];
            }
        },
        Some(&october),
    );
    // December, the same state as November: nothing changed.
    write_report(
        &dir,
        "20261201T080000Z",
        |f| {
            f.sessions.idle_timeout_secs = 3600;
            if let wardbox_report::Probe::Observed { value } = &mut f.measured_boot.firmware {
                value.secure_boot = Some(false);
            }
            if let wardbox_report::Probe::Observed { value } = &mut f.firewall {
                value.drift = vec!["table inet wardbox was flushed: its chains hold no rules".into()];
            }
        },
        Some(&november),
    );

    // The newest report's own comparison, on the page.
    let html = body_text(b.send(get_with("/admin/reports", &auditor)).await).await;
    assert!(html.contains("The newest report (2026-12-01T08:00:00Z) compared with the one before it (2026-11-01T08:00:00Z)"), "{html}");
    assert!(html.contains("No item changed."), "{html}");
    assert!(html.contains("<option selected>wardbox-report-20261101T080000Z.json</option>"), "the form offers the one before the newest: {html}");

    // October -> December, chosen on the form: pass -> fail first, the improvement last.
    let resp = b
        .send(get_with("/admin/reports?from=wardbox-report-20261001T080000Z.json&to=wardbox-report-20261201T080000Z.json", &auditor))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = body_text(resp).await;
    assert!(html.contains("Report 2026-12-01T08:00:00Z compared with report 2026-10-01T08:00:00Z"), "{html}");
    let table = &html[html.find("<table id=\"comparison\">").expect("the comparison table")..];
    let table = &table[..table.find("</table>").expect("end")];
    let rows: Vec<&str> = table.split("<tr").skip(2).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].contains("(access-automatic-logoff)") && rows[0].contains("<td>pass</td><td>fail</td>") && rows[0].starts_with(" class=\"failed\""), "{}", rows[0]);
    assert!(rows[1].contains("(integrity-measured-boot)") && rows[1].contains("<td>pass</td><td>fail</td>") && rows[1].starts_with(" class=\"failed\""), "{}", rows[1]);
    assert!(rows[2].contains("(network-outbound-blocked)") && rows[2].contains("<td>pass</td><td>fail</td>"), "{}", rows[2]);
    assert!(rows[3].contains("(admin-training)") && rows[3].contains("<td>needs attention</td><td>attested</td>") && !rows[3].contains("failed"), "{}", rows[3]);

    // Anything but two reports of the list is refused, naming why.
    for query in [
        "from=wardbox-report-20261001T080000Z.json",
        "from=..%2Fwardbox.db&to=wardbox-report-20261201T080000Z.json",
        "from=wardbox-report-20261001T080000Z.html&to=wardbox-report-20261201T080000Z.json",
        "from=wardbox-report-20250101T000000Z.json&to=wardbox-report-20261201T080000Z.json",
    ] {
        let resp = b.send(get_with(&format!("/admin/reports?{query}"), &auditor)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(body_text(resp).await.contains("Cannot compare"), "{query}");
    }
}
