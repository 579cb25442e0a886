//! Report benchmark: evaluating the checklist, rendering the three outputs, quoting with a
//! software TPM and verifying, for a box with many accounts, attestations and six years of
//! monthly exports, whose audit facts say 1,000,000 records. Prints a table.
//!
//! The audit chain check itself is not here: it belongs to the agent, which must verify
//! incrementally from the last matching checkpoint (see docs/report.md).
//!
//! Run: `cargo bench -p wardbox-report --bench evaluate` (WARDBOX_BENCH_ACCOUNTS changes the
//! number of accounts; the quote rows need swtpm).

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use wardbox_report::facts::{Account, Attestation, AuditFacts, FullWalk, MonthExport, Probe, RequestAudit, RetentionFacts};
use wardbox_report::json::{self, DocumentError};
use wardbox_report::quote::sign_report;
use wardbox_report::{Quoter, evaluate, sample, verify};

/// Facts of a large box, and how many monthly exports they list.
fn large_facts(now: Timestamp, accounts: usize) -> (wardbox_report::Facts, usize) {
    let mut facts = sample::healthy(now);
    let day = |d: i64| now.checked_sub(SignedDuration::from_hours(24 * d)).unwrap_or(now);
    facts.accounts = Probe::observed((0..accounts)
        .map(|i| Account {
            user_id: format!("user{i:05}"),
            role: if i % 10 == 0 { "admin".into() } else { "clinician".into() },
            source: if i % 3 == 0 { "directory".into() } else { "local".into() },
            disabled: i % 17 == 0,
            created_at: Some(day(400)),
            last_sign_in: Some(day((i % 80) as i64)),
            password_scheme: if i % 3 == 0 { String::new() } else { "argon2id".into() },
            must_change_password: false,
            sign_ins_searched_since: None,
        })
        .collect());
    let base = facts.attestations.clone();
    facts.attestations = (0..50)
        .flat_map(|n| {
            base.iter().map(move |a| Attestation { attested_at: day(1 + n), ..a.clone() }).collect::<Vec<_>>()
        })
        .collect::<Vec<Attestation>>();
    let exports: Vec<MonthExport> = (2020..=2026)
        .flat_map(|y| (1..=12).map(move |m| format!("{y}-{m:02}")))
        .filter(|m| m.as_str() >= "2020-12" && m.as_str() < "2026-11")
        .map(|month| MonthExport { month, checksum_ok: true })
        .collect();
    let export_count = exports.len();
    facts.retention = Probe::observed(RetentionFacts { retention_years: 6, first_record_month: Some("2020-12".into()), exports });
    facts.audit = Probe::observed(AuditFacts {
        records: 1_000_000,
        verified_from_seq: 990_001,
        head_seq: 1_000_000,
        first_break: None,
        checkpoints_checked: 1000,
        checkpoints_mismatched: 0,
        full_walk: false,
        last_full_walk: Some(FullWalk { at: day(3), head_seq: 990_000 }),
    });
    facts.request_audit = Probe::observed(RequestAudit {
        since: "2026-11-01T06:00:00Z".into(),
        classes: vec![sample::route_class("patient_data", true, 250_000), sample::route_class("administration", true, 4_000)],
    });
    (facts, export_count)
}

fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let start = Instant::now();
    let mut last = None;
    for _ in 0..runs {
        last = Some(f());
    }
    (start.elapsed() / runs, last.expect("at least one run"))
}

fn main() {
    let accounts: usize = std::env::var("WARDBOX_BENCH_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let now: Timestamp = "2026-11-29T10:00:00Z".parse().expect("time");
    let (facts, exports) = large_facts(now, accounts);
    let mut rows: Vec<(String, String)> = Vec::new();

    let (t, report) = time(20, || evaluate(&facts, now));
    rows.push((format!("evaluate ({accounts} accounts, {} attestations, {} exports)", facts.attestations.len(), exports), format!("{:.2} ms", t.as_secs_f64() * 1e3)));
    let (t, out) = time(20, || json::assemble::<DocumentError>(&report, |_| Ok(None)).expect("assemble"));
    rows.push(("render HTML + OSCAL + JSON, digest".into(), format!("{:.2} ms", t.as_secs_f64() * 1e3)));
    rows.push(("sizes: JSON / HTML / OSCAL".into(), format!("{} / {} / {} KiB", out.json.len() / 1024, out.html.len() / 1024, out.oscal.len() / 1024)));

    let state = tempfile::tempdir().expect("tempdir");
    match wardbox_volume::swtpm::SoftwareTpm::start(state.path()) {
        Ok(tpm) => {
            let mut quoter = Quoter::connect(&tpm.tcti()).expect("connect");
            let ak = quoter.ak_public().expect("ak");
            let (t, signed) = time(5, || sign_report(&mut quoter, &report).expect("sign"));
            rows.push(("render + quote (swtpm: AK re-derived, PCR read, quote)".into(), format!("{:.1} ms", t.as_secs_f64() * 1e3)));
            let (t, _) = time(20, || verify(&signed.json, &ak).expect("verify"));
            rows.push(("verify (no TPM)".into(), format!("{:.2} ms", t.as_secs_f64() * 1e3)));
        }
        Err(e) => rows.push(("render + quote".into(), format!("NOT MEASURED: {e}"))),
    }

    let width = rows.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    println!("{:width$}  time", "step");
    for (a, b) in rows {
        println!("{a:width$}  {b}");
    }
}
