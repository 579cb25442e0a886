//! Fault: the running agent (`wardbox dev`, the real binary) and a running `wardbox records
//! import` are killed with SIGKILL in the middle of an audit burst and of the import. Afterwards
//! the store opens, the audit chain verifies (`wardbox audit verify`), every request the agent
//! answered before the kill has its audit record in the chain, every file the import reported
//! as imported is in the index whole, the import left a trace in the chain, and the agent boots
//! again on the same box and signs the user in.
//!
//! What this does NOT test: SIGKILL ends the processes, not the machine. The kernel's page
//! cache survives it, so a write that reached the page cache but not the disk is not lost here.
//! The power-cut variant (kill qemu under the appliance image, then boot it again) needs the
//! qemu guest and is not done by this test.
//!
//! The import embeds through the dev profile's hashing embedder served over the engine's HTTP
//! API by this test (no model): what is under test is the store's transactions, not the
//! vectors. The agent itself runs without an engine.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod fault_support;

use fault_support::{Agent, cookie, http, open_store, serve_embeddings, start_dev_agent, text, wardbox};
use wardbox::config::Config;

const PASSWORD: &str = "correct horse battery";
const BURST_THREADS: usize = 4;
/// Kill once this many burst requests were answered and this many files reported imported.
const KILL_AFTER_ANSWERS: usize = 300;
const KILL_AFTER_IMPORTED: usize = 3;
const IMPORT_FILES: usize = 400;

fn sigkill(child: &Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
}

fn sign_in(addr: SocketAddr, username: &str) -> String {
    let (head, body) = http(addr, &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).expect("login page");
    let pre = cookie(&head, "wb_login");
    let marker = "name=\"csrf\" value=\"";
    let csrf = body[body.find(marker).expect("csrf") + marker.len()..].split('"').next().expect("token").to_string();
    let form = format!("csrf={csrf}&username={username}&password=correct+horse+battery");
    let req = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: wb_login={pre}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let (head, _) = http(addr, &req).expect("sign in");
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    cookie(&head, "wb_session")
}

#[test]
fn acknowledged_requests_and_imported_files_survive_sigkill_of_agent_and_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let agent = start_dev_agent(&base, addr, &dir.path().join("no-engine-here"), "the dev agent");
    let config = base.join("wardbox.toml");
    let add = ["users", "add", "--username", "audit.burst", "--display-name", "Audit Burst", "--role", "auditor"];
    let made = wardbox(&add, &config, &format!("{PASSWORD}\n"));
    assert!(made.status.success(), "{}", text(&made));
    let session = sign_in(addr, "audit.burst");

    // The import's configuration: the same box, with the engine's endpoint named.
    let mut import_config = Config::load(&config).expect("config");
    import_config.engine.endpoint = Some(format!("http://{}/", serve_embeddings()));
    let import_config_path = dir.path().join("import.toml");
    std::fs::write(&import_config_path, toml::to_string_pretty(&import_config).expect("toml")).expect("write");
    let incoming = dir.path().join("incoming");
    std::fs::create_dir_all(&incoming).expect("incoming");
    for i in 0..IMPORT_FILES {
        let note = format!("S: Follow-up call number {i}. Patient reports mild headache since visit {i}.\nA: Tension headache.\nP: Review in {i} days.\n");
        std::fs::write(incoming.join(format!("note-{i:04}.txt")), note).expect("note");
    }
    let mut import = Agent(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["records", "import", "--patient", "CRASH-1", "--new-patient", incoming.to_str().expect("utf8")])
            .args(["-c", import_config_path.to_str().expect("utf8")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the import"),
    );

    // The burst: every answered request's page view was audited before the answer (the guard
    // refuses a request whose record cannot be written). Each path is unique.
    let answered = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let burst: Vec<_> = (0..BURST_THREADS)
        .map(|t| {
            let (answered, stop, session) = (answered.clone(), stop.clone(), session.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let path = format!("/admin/alerts/{}", 9_000_000 + t * 100_000 + i);
                    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: wb_session={session}\r\nConnection: close\r\n\r\n");
                    match http(addr, &req) {
                        // Answered: the page view's audit record was acknowledged.
                        Ok((head, _)) if head.starts_with("HTTP/1.1 404") || head.starts_with("HTTP/1.1 200") => {
                            answered.lock().expect("lock").insert(path);
                        }
                        Ok((head, _)) if head.is_empty() => return,
                        Ok((head, body)) => panic!("unexpected answer during the burst: {head}\n{body}"),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let mut imported = Vec::new();
    let mut lines = BufReader::new(import.0.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    while imported.len() < KILL_AFTER_IMPORTED || answered.lock().expect("lock").len() < KILL_AFTER_ANSWERS {
        assert!(Instant::now() < deadline, "no kill point within 120 s: {} imported, {} answered", imported.len(), answered.lock().expect("lock").len());
        if imported.len() < KILL_AFTER_IMPORTED {
            let line = lines.next().expect("the import ended before the kill").expect("line");
            if line.contains("] imported ") {
                imported.push(line);
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Both at once, mid-write: no destructor, no flush.
    sigkill(&agent.0);
    sigkill(&import.0);
    stop.store(true, Ordering::SeqCst);
    // Lines the import wrote before it died count as reported too.
    imported.extend(lines.map_while(Result::ok).filter(|l| l.contains("] imported ")));
    for t in burst {
        t.join().expect("burst thread");
    }
    drop(agent);
    drop(import);
    let answered = answered.lock().expect("lock").clone();
    assert!(imported.len() < IMPORT_FILES, "the import finished before the kill; nothing was killed mid-import");

    let verify = wardbox(&["audit", "verify", "--json"], &config, "");
    assert!(verify.status.success(), "the chain does not verify after SIGKILL: {}", text(&verify));
    let store = open_store(&config);
    let details: Vec<String> = {
        let mut stmt = store.conn().prepare("SELECT detail FROM audit ORDER BY seq").expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    let audited: BTreeSet<String> = details
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|d| d["path"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = answered.difference(&audited).collect();
    assert!(lost.is_empty(), "{} answered requests have no audit record after the kill, e.g. {:?}", lost.len(), lost.first());
    let documents: i64 = store.conn().query_row("SELECT count(*) FROM rag_documents", [], |r| r.get(0)).expect("count");
    assert!(
        documents as usize >= imported.len(),
        "{} files were reported imported but only {documents} documents are in the index",
        imported.len()
    );
    // A file is stored whole or not at all: no document without all its passages.
    let torn: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM rag_documents d WHERE d.chunks != (SELECT count(*) FROM rag_chunks c WHERE c.document_id = d.id)",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(torn, 0, "{torn} documents were left half-imported by the kill");
    assert!(
        details.iter().any(|d| d.contains("\"records_import_started\"")),
        "{} files were imported before the kill and the audit chain has no trace of the import",
        imported.len()
    );
    drop(store);

    // The agent boots again on the killed box (stale pid file, the store's write-ahead log) and
    // serves the same account.
    let restarted = start_dev_agent(&base, addr, &dir.path().join("no-engine-here"), "the agent after the kill");
    assert!(!sign_in(addr, "audit.burst").is_empty(), "no sign-in after the restart");
    drop(restarted);
    eprintln!(
        "crash: {} requests answered, {} files reported imported before the kill; {} audit records, {documents} documents after it",
        answered.len(),
        imported.len(),
        details.len()
    );
}
