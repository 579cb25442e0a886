//! The Reports page (admins and auditors): generate a compliance report, list and download the
//! reports kept on the box (JSON, HTML, OSCAL), and record attestations and (admins) waivers.
//!
//! Generation itself is behind [`ReportService`], so this module knows only HTTP: the daemon
//! wires the real one (`cli::report::ConfiguredReports`, the same code as `wardbox report
//! generate`). Every request is audited by the guard; generating, attesting and waiving also
//! write an `admin_action` record naming who did it (texts as digests).

use std::path::Path;

use askama::Template;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use wardbox_report::facts::{Attestation, Waiver};

use super::pages::{Chrome, chrome, render, ui_of};
use super::{AppState, Authed, Role, WebError};
use crate::audit::{EventKind, TextDigest};

/// What a generation wrote, for the page.
#[derive(Debug, Clone)]
pub struct GeneratedSummary {
    /// The JSON file's name in [`ReportService::dir`].
    pub file: String,
    pub digest: String,
    pub signed: bool,
    /// "N pass, N fail, ..."
    pub counts: String,
}

/// Generates reports into a directory the page lists.
pub trait ReportService: Send + Sync + std::fmt::Debug {
    /// Where reports are written and read back from.
    fn dir(&self) -> &Path;
    /// Measure, evaluate, quote and write a report as `actor`'s action. Blocking: it runs the
    /// live probes (called off the async threads).
    fn generate(&self, actor: &str, full_chain: bool) -> Result<GeneratedSummary, String>;
}

const PREFIX: &str = "wardbox-report-";

/// A report file name the page serves: `wardbox-report-<time>` and one of the three
/// extensions, nothing else (no path, no other file of the directory).
fn servable(name: &str) -> Option<(&'static str, &'static str)> {
    let stem_ok = |stem: &str| {
        stem.strip_prefix(PREFIX).is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()))
    };
    if let Some(stem) = name.strip_suffix(".oscal.json") {
        return stem_ok(stem).then_some(("application/json", "OSCAL"));
    }
    if let Some(stem) = name.strip_suffix(".json") {
        return stem_ok(stem).then_some(("application/json", "JSON"));
    }
    if let Some(stem) = name.strip_suffix(".html") {
        return stem_ok(stem).then_some(("text/html; charset=utf-8", "HTML"));
    }
    None
}

#[derive(Debug)]
struct FileLink {
    name: String,
    label: &'static str,
}

#[derive(Debug)]
struct ReportRow {
    when: String,
    files: Vec<FileLink>,
}

/// The reports in `dir`, newest first, each with its files.
fn list(dir: &Path) -> Vec<ReportRow> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| servable(n).is_some());
    names.sort();
    let mut rows: Vec<ReportRow> = Vec::new();
    for name in names {
        let stamp = name.trim_start_matches(PREFIX).split('.').next().unwrap_or_default().to_string();
        let label = servable(&name).map(|(_, l)| l).unwrap_or_default();
        match rows.iter_mut().find(|r| r.when == stamp) {
            Some(row) => row.files.push(FileLink { name, label }),
            None => rows.push(ReportRow { when: stamp, files: vec![FileLink { name, label }] }),
        }
    }
    for row in &mut rows {
        row.files.sort_by_key(|f| f.label);
    }
    rows.reverse();
    rows
}

/// One item whose status differs between two reports, regressions first.
#[derive(Debug)]
struct ChangeRow {
    item: String,
    title: String,
    from: String,
    to: String,
    /// A change for the worse (from in order, or absent, to not in order).
    worse: bool,
}

/// What changed between two reports, for the page.
#[derive(Debug)]
struct Changes {
    /// "Report X compared with report Y" (or: the first report).
    heading: String,
    /// False for the first report, which has nothing to compare with.
    compared: bool,
    rows: Vec<ChangeRow>,
}

fn change_rows(changes: &[wardbox_report::report::Change]) -> Vec<ChangeRow> {
    let label = |s: Option<wardbox_report::Status>| s.map(|s| s.label().to_string()).unwrap_or_else(|| "(absent)".into());
    changes
        .iter()
        .map(|c| ChangeRow {
            item: c.item.clone(),
            title: c.title.clone(),
            from: label(c.from),
            to: label(c.to),
            worse: is_worse(c.from, c.to),
        })
        .collect()
}

/// Whether a change is for the worse: it ends not in order, and it was in order (or absent),
/// or it went from needing attention to failing.
fn is_worse(from: Option<wardbox_report::Status>, to: Option<wardbox_report::Status>) -> bool {
    use wardbox_report::Status::{Fail, NeedsAttention};
    match (from, to) {
        (_, None) => false,
        (_, Some(t)) if t.in_order() => false,
        (None, Some(_)) => true,
        (Some(f), Some(t)) => f.in_order() || (f == NeedsAttention && t == Fail),
    }
}

/// A report file the page may read: a `wardbox-report-<time>.json` of the directory.
fn read_report(dir: &Path, name: &str) -> Result<wardbox_report::json::Document, String> {
    if servable(name).map(|(_, l)| l) != Some("JSON") {
        return Err(format!("{name:?} is not a report of this box"));
    }
    let bytes = std::fs::read(dir.join(name)).map_err(|_| format!("there is no report {name}"))?;
    wardbox_report::json::read(&bytes).map_err(|e| format!("{name} cannot be read: {e}"))
}

/// What the newest report says changed since the one before it (computed when it was made).
fn newest_changes(dir: &Path, reports: &[ReportRow]) -> Option<Changes> {
    let newest = reports.first()?.files.iter().find(|f| f.label == "JSON")?;
    let doc = read_report(dir, &newest.name).ok()?;
    let heading = match &doc.report.previous {
        Some(p) => format!("The newest report ({}) compared with the one before it ({})", doc.report.generated_at, p.generated_at),
        None => format!("The newest report ({}) is the first: there is nothing to compare with", doc.report.generated_at),
    };
    Some(Changes { heading, compared: doc.report.previous.is_some(), rows: change_rows(&doc.report.changes) })
}

/// Two chosen reports: what changed from `from` to `to`.
fn compare(dir: &Path, from: &str, to: &str) -> Result<Changes, String> {
    let before = read_report(dir, from)?;
    let mut after = read_report(dir, to)?.report;
    after.compare_with(&before.report, before.integrity.as_ref().map(|i| i.digest.clone()));
    Ok(Changes {
        heading: format!("Report {} compared with report {}", after.generated_at, before.report.generated_at),
        compared: true,
        rows: change_rows(&after.changes),
    })
}

#[derive(Template)]
#[template(path = "admin_reports.html")]
struct ReportsPage {
    c: Chrome,
    message: Option<String>,
    unavailable: Option<String>,
    reports: Vec<ReportRow>,
    /// The JSON files, newest first, for the compare form.
    report_files: Vec<String>,
    latest: Option<Changes>,
    comparison: Option<Changes>,
    compared_from: String,
    compared_to: String,
    attestations: Vec<Attestation>,
    waivers: Vec<Waiver>,
    attestable: Vec<&'static str>,
    waivable: Vec<&'static str>,
}

async fn page(state: &AppState, a: &Authed, message: Option<String>) -> Result<Response, WebError> {
    page_comparing(state, a, message, None).await
}

async fn page_comparing(state: &AppState, a: &Authed, mut message: Option<String>, pair: Option<(String, String)>) -> Result<Response, WebError> {
    let ui = ui_of(state)?;
    let (mut attestations, mut waivers) = ui
        .with_store(|s| {
            let a = crate::compliance::attestations(s.conn()).map_err(|e| WebError::Internal(e.to_string()))?;
            let w = crate::compliance::waivers(s.conn()).map_err(|e| WebError::Internal(e.to_string()))?;
            Ok((a, w))
        })
        .await?;
    attestations.reverse();
    waivers.reverse();
    let (reports, unavailable) = match &ui.reports {
        Some(service) => (list(service.dir()), None),
        None => (Vec::new(), Some("Report generation is not set up on this box.".to_string())),
    };
    let report_files: Vec<String> =
        reports.iter().flat_map(|r| r.files.iter().filter(|f| f.label == "JSON").map(|f| f.name.clone())).collect();
    let (latest, comparison) = match &ui.reports {
        Some(service) => {
            let latest = newest_changes(service.dir(), &reports);
            let comparison = match &pair {
                Some((from, to)) => match compare(service.dir(), from, to) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        message = Some(format!("Cannot compare: {e}"));
                        None
                    }
                },
                None => None,
            };
            (latest, comparison)
        }
        None => (None, None),
    };
    let bad_pair = pair.is_some() && comparison.is_none();
    let ids = || wardbox_report::checklist::item_ids();
    let page = render(&ReportsPage {
        c: chrome(&ui, a),
        message,
        unavailable,
        reports,
        report_files,
        latest,
        comparison,
        compared_from: pair.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
        compared_to: pair.map(|p| p.1).unwrap_or_default(),
        attestations,
        waivers,
        attestable: ids().filter(|i| wardbox_report::checklist::is_attestation_item(i)).collect(),
        waivable: ids().filter(|i| wardbox_report::checklist::is_waivable_item(i)).collect(),
    });
    if bad_pair { bad(page) } else { page }
}

fn bad(resp: Result<Response, WebError>) -> Result<Response, WebError> {
    resp.map(|mut r| {
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        r
    })
}

/// `?from=A&to=B`: compare two reports of the list (what changed from A to B).
#[derive(Debug, Deserialize)]
pub(super) struct CompareQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

pub(super) async fn reports(State(state): State<AppState>, a: Authed, Query(q): Query<CompareQuery>) -> Result<Response, WebError> {
    let pair = match (q.from, q.to) {
        (Some(from), Some(to)) => Some((from, to)),
        (None, None) => None,
        _ => return bad(page(&state, &a, Some("Cannot compare: choose two reports.".into())).await),
    };
    page_comparing(&state, &a, None, pair).await
}

#[derive(Debug, Deserialize)]
pub(super) struct GenerateForm {
    #[serde(default)]
    full_chain: Option<String>,
}

pub(super) async fn generate(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<GenerateForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let Some(service) = ui.reports.clone() else {
        return Err(WebError::Unavailable("report generation is not set up on this box".into()));
    };
    let full_chain = f.full_chain.is_some();
    // On a thread of its own: the probes run a small runtime of their own (directory check),
    // which cannot start inside tokio's blocking pool.
    let actor = a.session.username.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("report-generate".into())
        .spawn(move || {
            let _ = tx.send(service.generate(&actor, full_chain));
        })
        .map_err(|e| WebError::Internal(format!("cannot start the report thread: {e}")))?;
    let result = rx.await.map_err(|_| WebError::Internal("the report thread ended without an answer".into()))?;
    match result {
        Ok(g) => {
            ui.audit(
                EventKind::AdminAction,
                &a.session.username,
                json!({ "who": a.who(), "action": "report_generate", "file": g.file, "digest": g.digest, "full_chain": full_chain }),
            )
            .await?;
            let signed = if g.signed { "quoted by the TPM" } else { "UNSIGNED (no TPM on this box)" };
            page(&state, &a, Some(format!("Report {} written ({signed}): {}.", g.file, g.counts))).await
        }
        Err(e) => page(&state, &a, Some(format!("The report could not be generated: {e}"))).await,
    }
}

pub(super) async fn download(State(state): State<AppState>, _a: Authed, UrlPath(file): UrlPath<String>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let Some(service) = ui.reports.clone() else { return Err(WebError::NotFound) };
    let Some((content_type, _)) = servable(&file) else { return Err(WebError::NotFound) };
    let path = service.dir().join(&file);
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(|e| WebError::Internal(format!("read task failed: {e}")))?
        .map_err(|_| WebError::NotFound)?;
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
pub(super) struct AttestForm {
    #[serde(default)]
    item: String,
    #[serde(default)]
    document: String,
    #[serde(default)]
    valid_until: String,
}

pub(super) async fn attest(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<AttestForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    let until = match crate::compliance::parse_until(&f.valid_until) {
        Ok(t) => t,
        Err(e) => return bad(page(&state, &a, Some(format!("Not recorded: {e}"))).await),
    };
    let (item, by, document, now) = (f.item.clone(), a.session.username.clone(), f.document.clone(), jiff::Timestamp::from_second(ui.clock.now()).unwrap_or_else(|_| jiff::Timestamp::now()));
    let recorded = ui.with_store(move |s| Ok(crate::compliance::attest(s.conn(), &item, &by, &document, until, now))).await?;
    match recorded {
        Ok(att) => {
            ui.audit(
                EventKind::AdminAction,
                &a.session.username,
                json!({ "who": a.who(), "action": "report_attestation", "item": att.item, "valid_until": att.valid_until, "document": TextDigest::of(&att.document) }),
            )
            .await?;
            page(&state, &a, Some(format!("Attestation recorded for {}, valid until {}.", att.item, att.valid_until))).await
        }
        Err(e) => bad(page(&state, &a, Some(format!("Not recorded: {e}"))).await),
    }
}

#[derive(Deserialize)]
pub(super) struct WaiveForm {
    #[serde(default)]
    item: String,
    #[serde(default)]
    approver: String,
    #[serde(default)]
    justification: String,
    #[serde(default)]
    expires: String,
}

pub(super) async fn waive(State(state): State<AppState>, a: Authed, axum::Form(f): axum::Form<WaiveForm>) -> Result<Response, WebError> {
    let ui = ui_of(&state)?;
    // The route table admits admins only; checked again here because the page is shared.
    if a.session.role != Role::Admin {
        return Err(WebError::Forbidden);
    }
    let until = match crate::compliance::parse_until(&f.expires) {
        Ok(t) => t,
        Err(e) => return bad(page(&state, &a, Some(format!("Not recorded: {e}"))).await),
    };
    let now = jiff::Timestamp::from_second(ui.clock.now()).unwrap_or_else(|_| jiff::Timestamp::now());
    let (item, approver, justification) = (f.item.clone(), f.approver.clone(), f.justification.clone());
    let recorded = ui.with_store(move |s| Ok(crate::compliance::waive(s.conn(), &item, &approver, &justification, until, now))).await?;
    match recorded {
        Ok(w) => {
            ui.audit(
                EventKind::AdminAction,
                &a.session.username,
                json!({ "who": a.who(), "action": "report_waiver", "item": w.item, "approver": w.approver, "expires_at": w.expires_at, "justification": TextDigest::of(&w.justification) }),
            )
            .await?;
            page(&state, &a, Some(format!("Waiver recorded for {}, expires {}.", w.item, w.expires_at))).await
        }
        Err(e) => bad(page(&state, &a, Some(format!("Not recorded: {e}"))).await),
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_report_files_are_served() {
        assert_eq!(servable("wardbox-report-20261129T100000Z.json").map(|s| s.1), Some("JSON"));
        assert_eq!(servable("wardbox-report-20261129T100000Z.oscal.json").map(|s| s.1), Some("OSCAL"));
        assert_eq!(servable("wardbox-report-20261129T100000Z.html").map(|s| s.1), Some("HTML"));
        for bad in ["../store.db", "wardbox-report-.json", "wardbox-report-2026/../x.json", "audit-verified.json", "wardbox-report-x.y.json", "wardbox-report-1.txt"] {
            assert_eq!(servable(bad), None, "{bad}");
        }
    }

    #[test]
    fn reports_are_listed_newest_first_with_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in ["20261001T000000Z", "20261101T000000Z"] {
            for ext in ["json", "html", "oscal.json"] {
                std::fs::write(dir.path().join(format!("{PREFIX}{n}.{ext}")), "{}").expect("write");
            }
        }
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let rows = list(dir.path());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].when, "20261101T000000Z");
        assert_eq!(rows[0].files.iter().map(|f| f.label).collect::<Vec<_>>(), vec!["HTML", "JSON", "OSCAL"]);
    }
}
