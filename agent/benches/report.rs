//! Report benchmark: `wardbox report generate` on a live dev box whose audit chain holds
//! 1,000,000 records (a history of 400 days, 2,500 records a day, with real hashes, written
//! before the box's own records), with every live probe: the agent's start-up walk (a full walk
//! it records as the verified head), the first report (incremental from it), `wardbox audit
//! verify` (the full walk alone), the next report (incremental from the verified head) and one
//! with `--full-chain`. Prints a table.
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
    let mut agent = start(&base, addr);
    // Operator commands read the configuration file: give it the address the box serves on.
    let toml = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(&config_path, toml.replace("listen = \"127.0.0.1:8443\"", &format!("listen = \"{addr}\""))).expect("config");

    // Stop the box, give its chain a history of `records` records over the 400 days before its
    // own records (rewriting the chain from the start, as if the box had run that long), take a
    // checkpoint of the new head, and start it again.
    stop(&mut agent);
    let config = wardbox::config::Config::load(&config_path).expect("config");
    let volume = wardbox::stages::unlock::unlocker(&config.volume, &config.state_dir).open_for_cli().expect("volume");
    let mut store = Store::open_existing(&volume.data_dir.join(&config.store.file_name), &volume.store_key).expect("store");
    let own: Vec<AuditRecord> = {
        let mut stmt = store.conn().prepare("SELECT seq, ts, kind, actor, detail, prev_hash, hash FROM audit ORDER BY seq").expect("prepare");
        stmt.query_map([], AuditRecord::from_row).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    let load = Instant::now();
    let tx = store.conn_mut().transaction().expect("tx");
    tx.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit;").expect("clear");
    let mut prev = audit::GENESIS_HASH.to_string();
    {
        let mut insert = tx
            .prepare("INSERT INTO audit (seq, ts, kind, actor, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .expect("prepare");
        let first = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(24 * 400)).expect("time");
        let step_ms = (400 * 86_400_000 / records.max(1)) as i64;
        for seq in 1..=records {
            let ts = first.checked_add(jiff::SignedDuration::from_millis(step_ms * seq as i64)).expect("time").to_string();
            // A sign-in now and then, so the sign-in counts have something to count.
            let (kind, actor) = if seq % 100 == 0 { ("login", "dr.smith") } else { ("query", "dr.smith") };
            let detail = json!({ "patient": seq % 5000, "prompt": TextDigest::of("q") }).to_string();
            let hash = AuditRecord::compute_hash(seq, &ts, kind, actor, &detail, &prev);
            insert.execute(rusqlite::params![seq as i64, ts, kind, actor, detail, prev, hash]).expect("insert");
            prev = hash;
        }
        for (i, r) in own.iter().enumerate() {
            let seq = records + 1 + i as u64;
            let hash = AuditRecord::compute_hash(seq, &r.ts, &r.kind, &r.actor, &r.detail, &prev);
            insert.execute(rusqlite::params![seq as i64, r.ts, r.kind, r.actor, r.detail, prev, hash]).expect("insert");
            prev = hash;
        }
    }
    tx.execute_batch("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;")
        .expect("trigger");
    tx.commit().expect("commit");
    let load = load.elapsed();
    let head = records + own.len() as u64;
    let checkpoints = wardbox::daemon::checkpoint_log(&config.state_dir);
    std::fs::remove_file(checkpoints.path()).expect("old checkpoints");
    // The head the first start verified is gone with the rewritten chain.
    let _ = std::fs::remove_file(config.state_dir.join("audit-verified.json"));
    checkpoints.record(head, &prev).expect("checkpoint");
    let started = Instant::now();
    let mut agent = start(&base, addr);
    // The agent walks the whole chain at start and records the verified head: the reports
    // below check incrementally from it unless told to walk in full.
    let verified = config.state_dir.join("audit-verified.json");
    while !verified.exists() {
        assert!(started.elapsed() < Duration::from_secs(600), "the agent's start-up walk recorded no verified head");
        std::thread::sleep(Duration::from_millis(100));
    }
    let startup_walk = started.elapsed();
    let store = Store::open_existing(&volume.data_dir.join(&config.store.file_name), &volume.store_key).expect("store");
    // The two other heavy parts of the gathering, timed on their own (before this change, both
    // were passes over the whole chain).
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
    let generate = |args: &[&str]| {
        let (took, generated) = timed(args);
        let said = String::from_utf8_lossy(&generated.stdout).into_owned();
        assert!(said.contains("report sha256:"), "generate did not finish: {said}{}", String::from_utf8_lossy(&generated.stderr));
        took
    };
    let first = generate(&["report", "generate", "-c", cfg, "--out", out.to_str().expect("utf8")]);
    let (verify, verified) = timed(&["audit", "verify", "-c", cfg]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    std::thread::sleep(Duration::from_millis(1100));
    let next = generate(&["report", "generate", "-c", cfg, "--out", out.to_str().expect("utf8")]);
    std::thread::sleep(Duration::from_millis(1100));
    let full = generate(&["report", "generate", "-c", cfg, "--out", out.to_str().expect("utf8"), "--full-chain"]);
    let newest = std::fs::read_dir(&out)
        .expect("reports")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".json") && !p.to_string_lossy().ends_with(".oscal.json"))
        .max()
        .expect("a report");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(newest).expect("read")).expect("json");
    let chain = doc["report"]["items"].as_array().expect("items").iter().find(|i| i["id"] == "integrity-audit-log").expect("item");
    assert_eq!(chain["status"], "pass", "{chain}");

    stop(&mut agent);

    let total = head;
    println!("{:<58}  time", "step");
    println!("{:<58}  {:.2} s", format!("bulk load of {records} records (setup)"), load.as_secs_f64());
    println!("{:<58}  {:.2} s", format!("agent start to its start-up walk recorded, {total} records"), startup_walk.as_secs_f64());
    println!("{:<58}  {:.2} s", format!("first report (incremental from the start-up walk), {total} records"), first.as_secs_f64());
    println!("{:<58}  {:.2} s", format!("wardbox audit verify, {total} records (full walk)"), verify.as_secs_f64());
    println!("{:<58}  {:.2} s", format!("next report (incremental), {total} records"), next.as_secs_f64());
    println!("{:<58}  {:.2} s", format!("report --full-chain, {total} records"), full.as_secs_f64());
    println!("{:<58}  {:.2} s", "parts of generate, alone: store page-HMAC check", page_check.as_secs_f64());
    println!("{:<58}  {:.2} s", "parts of generate, alone: sign-in passes over the chain", sign_in_scans.as_secs_f64());
}

fn start(base: &std::path::Path, addr: std::net::SocketAddr) -> std::process::Child {
    let _ = std::fs::remove_file(base.join("state/status.json"));
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(base.with_extension("log")).expect("log"))
        .spawn()
        .expect("start wardbox dev");
    let deadline = Instant::now() + Duration::from_secs(300);
    while TcpStream::connect(addr).is_err() || !base.join("state/status.json").exists() {
        assert!(Instant::now() < deadline, "the dev box did not come up");
        assert!(agent.try_wait().expect("wait").is_none(), "the dev box exited");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The agent walks the whole chain once at start, in the background: let it finish, so
    // the timings below do not share the CPU with it.
    while !std::fs::read_to_string(base.with_extension("log")).unwrap_or_default().contains("audit chain verified at start") {
        assert!(Instant::now() < deadline, "the agent did not finish its start-up chain walk");
        std::thread::sleep(Duration::from_millis(200));
    }
    agent
}

/// SIGTERM, then SIGKILL after 60 s (a hung shutdown must not hang the benchmark; it is said).
fn stop(agent: &mut std::process::Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            eprintln!("NOTE: the agent did not stop within 60 s of SIGTERM; killed");
            let _ = agent.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.wait();
}
