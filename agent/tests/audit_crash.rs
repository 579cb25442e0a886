//! Kill the process with SIGKILL in the middle of a burst of appends: every record that was
//! acknowledged before the kill must be there, and the chain must verify.
//!
//! The test re-runs its own binary as the child, selected by an environment variable.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::json;
use wardbox::audit::{self, AuditEvent, AuditLog, EventKind};
use wardbox::store::{Store, StoreKey};

const CHILD_ENV: &str = "WARDBOX_AUDIT_CRASH_CHILD";
const KILL_AFTER_ACKS: usize = 3000;

#[test]
fn acknowledged_records_survive_sigkill() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.db");
    let key = StoreKey::random();
    let (mut store, _) = Store::open_or_create(&path, &key).expect("create");
    store.migrate().expect("migrate");
    drop(store);

    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "acknowledged_records_survive_sigkill", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{}", path.display(), key.to_hex().as_str()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < KILL_AFTER_ACKS {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(seq) = line.strip_prefix("ack ") {
            acked.push(seq.parse::<u64>().expect("seq"));
        }
    }
    assert_eq!(acked.len(), KILL_AFTER_ACKS, "the child stopped acknowledging before the kill");
    // SIGKILL: no destructors, no flush, mid-transaction for whichever group is in flight.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    // Acknowledgements already written to the pipe before the kill count too.
    for line in lines.map_while(Result::ok) {
        if let Some(seq) = line.strip_prefix("ack ") {
            acked.push(seq.parse::<u64>().expect("seq"));
        }
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the child was killed, not finished");

    let store = Store::open_existing(&path, &key).expect("reopen after the crash");
    let report = audit::verify_chain(&store, &[]).expect("verify");
    assert!(report.intact(), "chain broken after SIGKILL: {:?}", report.first_break);
    let max_acked = acked.iter().copied().max().expect("acks");
    assert!(
        report.head_seq >= max_acked,
        "acknowledged record {max_acked} is missing; the log ends at {}",
        report.head_seq
    );
    let mut stmt = store.conn().prepare("SELECT 1 FROM audit WHERE seq = ?1").expect("prep");
    for seq in &acked {
        assert!(stmt.exists([*seq as i64]).expect("query"), "acknowledged record {seq} lost");
    }
    eprintln!(
        "crash test: {} acknowledged before/at the kill, {} on disk after it",
        acked.len(),
        report.records
    );
}

/// The child: 8 threads appending as fast as they can, printing each acknowledgement.
fn child(spec: &str) {
    let (path, key) = spec.split_once('|').expect("spec");
    let key = StoreKey::from_hex(key).expect("key");
    let (log, _writer) = AuditLog::start(std::path::Path::new(path), &key).expect("start");
    let log = Arc::new(log);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let seq = log
                        .append_blocking(AuditEvent::new(EventKind::Query, format!("t{t}"), json!({ "i": i })))
                        .expect("append");
                    let mut out = out.lock().expect("stdout");
                    use std::io::Write;
                    writeln!(out, "ack {seq}").expect("write");
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
