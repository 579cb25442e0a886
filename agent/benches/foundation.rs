//! Foundation benchmark: audit append rate with full durability, `audit verify` over 1,000,000
//! records, and the agent's idle RSS. Prints a table.
//!
//! Run: `cargo bench -p wardbox --bench foundation` (set WARDBOX_BENCH_RECORDS to change the
//! verify size).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wardbox::audit::{self, AuditEvent, AuditLog, AuditRecord, EventKind, GENESIS_HASH, TextDigest};
use wardbox::store::{Store, StoreKey};

fn main() {
    let records: u64 = std::env::var("WARDBOX_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut rows: Vec<(String, String)> = Vec::new();

    let dir = tempfile::tempdir().expect("tempdir");
    let key = StoreKey::random();
    let path = dir.path().join("bench.db");
    let (mut store, _) = Store::open_or_create(&path, &key).expect("create");
    store.migrate().expect("migrate");
    drop(store);

    // 1. One caller appending and waiting for each record: one fsync'd commit per record.
    let (log, writer) = AuditLog::start(&path, &key).expect("start");
    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        log.append_blocking(event(i)).expect("append");
    }
    let serial = n as f64 / start.elapsed().as_secs_f64();
    rows.push(("audit append, 1 caller, synchronous=FULL".into(), format!("{serial:.0} records/s")));

    // 2. 16 concurrent callers: group commit shares each fsync.
    let log = Arc::new(log);
    let per_thread = 2000;
    let start = Instant::now();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    log.append_blocking(event(i)).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    let grouped = (16 * per_thread) as f64 / start.elapsed().as_secs_f64();
    rows.push(("audit append, 16 callers, synchronous=FULL".into(), format!("{grouped:.0} records/s")));
    drop(log);
    writer.join();

    // 3. Verify a chain of `records` records (bulk-loaded with real hashes).
    let big = dir.path().join("big.db");
    let (mut store, _) = Store::open_or_create(&big, &key).expect("create");
    store.migrate().expect("migrate");
    let start = Instant::now();
    bulk_load(&mut store, records);
    let load = start.elapsed();
    drop(store);
    let store = Store::open_existing(&big, &key).expect("open");
    let start = Instant::now();
    let report = audit::verify_chain(&store, &[]).expect("verify");
    let verify = start.elapsed();
    assert!(report.intact() && report.records == records);
    rows.push((format!("audit verify, {records} records"), format!("{:.2} s ({:.0} records/s)", verify.as_secs_f64(), records as f64 / verify.as_secs_f64())));
    rows.push((format!("bulk load of {records} records (setup)"), format!("{:.2} s", load.as_secs_f64())));
    let size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
    rows.push(("store size per 1M audit records".into(), format!("{:.0} MiB", size as f64 * 1e6 / records as f64 / 1048576.0)));

    // 4. The agent's RSS when idle, as a real process in the dev profile.
    rows.push(("agent RSS, idle after boot (dev profile)".into(), idle_rss(dir.path())));

    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}

fn event(i: u64) -> AuditEvent {
    AuditEvent::new(EventKind::Query, "user-1", json!({ "patient": i, "prompt": TextDigest::of("a question") }))
}

fn bulk_load(store: &mut Store, n: u64) {
    let tx = store.conn_mut().transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO audit (seq, ts, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .expect("prep");
        let mut prev = GENESIS_HASH.to_string();
        let ts = jiff::Timestamp::now().to_string();
        for seq in 1..=n {
            let detail = json!({ "patient": seq % 5000, "prompt": TextDigest::of("q") }).to_string();
            let hash = AuditRecord::compute_hash(seq, &ts, "query", "user-1", &detail, &prev);
            insert.execute(rusqlite::params![seq as i64, ts, "query", "user-1", detail, prev, hash]).expect("insert");
            prev = hash;
        }
    }
    tx.commit().expect("commit");
}

fn idle_rss(base: &std::path::Path) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.join("box").to_str().expect("utf8"), "--listen", &addr.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let _ = agent.kill();
            return "agent did not start".into();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.id())).unwrap_or_default();
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").trim_start_matches("VmRSS:").trim().to_string();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = agent.wait();
    rss
}
