//! Report benchmark: `wardbox report generate` on a live dev box whose audit chain holds
//! 1,000,000 records (bulk-loaded after the box's own, with real hashes), with every live probe;
//! and `wardbox audit verify` on the same chain, the walk that dominates it. Prints a table.
//!
//! Run: `cargo bench -p wardbox --bench report` (WARDBOX_BENCH_RECORDS changes the size).

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use wardbox::audit::{self, AuditRecord, TextDigest};
use wardbox::store::Store;

fn main() {
    let records: u64 = std::env::var("WARDBOX_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let config_path = base.join("wardbox.toml");
    let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wardbox dev");
    let deadline = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect(addr).is_err() || !base.join("state/status.json").exists() {
        assert!(Instant::now() < deadline, "the dev box did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Append `records` records after the box's own, chained to its head.
    let config = wardbox::config::Config::load(&config_path).expect("config");
    let volume = wardbox::stages::unlock::unlocker(&config.volume, &config.state_dir).open_for_cli().expect("volume");
    let mut store = Store::open_existing(&volume.data_dir.join(&config.store.file_name), &volume.store_key).expect("store");
    let (head, mut prev) = audit::read_head(&store).expect("head");
    let load = Instant::now();
    let tx = store.conn_mut().transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO audit (seq, ts, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .expect("prepare");
        let ts = jiff::Timestamp::now().to_string();
        for seq in head + 1..=head + records {
            // A sign-in now and then, so the sign-in counts have something to count.
            let (kind, actor) = if seq % 100 == 0 { ("login", "dr.smith") } else { ("query", "dr.smith") };
            let detail = json!({ "patient": seq % 5000, "prompt": TextDigest::of("q") }).to_string();
            let hash = AuditRecord::compute_hash(seq, &ts, kind, actor, &detail, &prev);
            insert.execute(rusqlite::params![seq as i64, ts, kind, actor, detail, prev, hash]).expect("insert");
            prev = hash;
        }
    }
    tx.commit().expect("commit");
    let load = load.elapsed();
    // The two other heavy parts of the gathering, timed on their own.
    let start = Instant::now();
    let mut check = store.conn().prepare("PRAGMA cipher_integrity_check").expect("prepare");
    let failures = check.query_map([], |_| Ok(())).expect("check").count();
    assert_eq!(failures, 0);
    drop(check);
    let page_check = start.elapsed();
    let start = Instant::now();
    let since = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(24 * 30)).expect("time").to_string();
    let _: (i64, i64) = store
        .conn()
        .query_row(
            "SELECT coalesce(sum(kind = 'login'), 0), coalesce(sum(kind = 'login_failed'), 0) FROM audit WHERE ts >= ?1",
            [since.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counts");
    let mut last = store.conn().prepare("SELECT actor, max(ts) FROM audit WHERE kind = 'login' GROUP BY actor").expect("prepare");
    let _ = last.query_map([], |_| Ok(())).expect("last").count();
    drop(last);
    let sign_in_scans = start.elapsed();
    drop(store);

    let cfg = config_path.to_str().expect("utf8");
    let out = dir.path().join("reports");
    let timed = |args: &[&str]| {
        let start = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).output().expect("run");
        (start.elapsed(), output)
    };
    let (generate, generated) = timed(&["report", "generate", "-c", cfg, "--out", out.to_str().expect("utf8")]);
    let said = String::from_utf8_lossy(&generated.stdout);
    assert!(said.contains("report sha256:"), "generate did not finish: {said}{}", String::from_utf8_lossy(&generated.stderr));
    let (verify, verified) = timed(&["audit", "verify", "-c", cfg]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = agent.wait();

    let total = head + records;
    println!("{:<58}  time", "step");
    println!("{:<58}  {:.2} s", format!("bulk load of {records} records (setup)"), load.as_secs_f64());
    println!("{:<58}  {:.2} s", format!("wardbox report generate, {total} records, live probes"), generate.as_secs_f64());
    println!("{:<58}  {:.2} s", format!("wardbox audit verify, {total} records (full walk)"), verify.as_secs_f64());
    println!("{:<58}  {:.2} s", "parts of generate, alone: store page-HMAC check", page_check.as_secs_f64());
    println!("{:<58}  {:.2} s", "parts of generate, alone: sign-in passes over the chain", sign_in_scans.as_secs_f64());
}
