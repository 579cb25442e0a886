//! `wardbox alerts list|show|ack|dispose|close|test` against a running dev box (the real binary, a real
//! store, a real audit chain): failed sign-ins at the web page raise an alert through the
//! daemon's detector; the CLI lists and shows it, acknowledges it once with a reason (the
//! chain, with the CLI's audit record of it, still verifies), refuses a second
//! acknowledgement and an empty reason, and `test` without a destination says so and sends
//! nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wardbox(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(args)
        .args(["-c", config.to_str().expect("utf8")])
        .stdin(Stdio::null())
        .output()
        .expect("run wardbox")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn http(addr: SocketAddr, request: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

/// One failed sign-in through the real login form (its CSRF cookie and field).
fn failed_signin(addr: SocketAddr, user: &str) {
    let page = http(addr, &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).expect("login page");
    let cookie = page
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .expect("login cookie")
        .to_string();
    let token = cookie.split_once('=').expect("cookie value").1;
    let body = format!("csrf={token}&username={user}&password=wrong-password");
    let resp = http(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("post");
    assert!(!resp.starts_with("HTTP/1.1 5"), "{resp}");
}

/// `wardbox dev` on `base` listening on `addr`, without an engine, once it serves.
fn start_dev(base: &Path, addr: SocketAddr) -> Agent {
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
            .env("WARDBOX_ENGINE_BIN", base.join("no-engine-here"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wardbox dev"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http(addr, &format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "the dev agent did not serve within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

/// Waits until `wardbox alerts list` shows `rule`; returns the listing.
fn wait_for_alert(config: &Path, rule: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = wardbox(&["alerts", "list"], config);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let t = text(&out);
        if t.contains(rule) {
            return t;
        }
        assert!(Instant::now() < deadline, "no {rule} alert listed within 30 s: {t}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// An audit chain found broken at start is written into the chain itself, so the detector
/// raises `audit_chain` and the outbox would deliver it off the box (not only the status page).
#[test]
fn a_broken_audit_chain_found_at_start_becomes_an_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let agent = start_dev(&base, addr);
    // Let the detector take its first position in the chain, then stop the box.
    std::thread::sleep(Duration::from_secs(1));
    drop(agent);
    // Someone with the key edits a record (dropping the trigger that forbids it).
    let key_hex = std::fs::read_to_string(base.join("state/dev-store.key")).expect("dev key");
    let key = wardbox::store::StoreKey::from_hex(key_hex.trim()).expect("key");
    let store = wardbox::store::Store::open_existing(&base.join("data/wardbox.db"), &key).expect("open");
    store
        .conn()
        .execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET detail = '{\"tampered\":true}' WHERE seq = 3;")
        .expect("tamper");
    drop(store);
    let config = base.join("wardbox.toml");
    let _agent = start_dev(&base, addr);
    let listed = wait_for_alert(&config, "audit_chain");
    let line = listed.lines().find(|l| l.contains("audit_chain")).expect("line");
    assert!(line.contains(" box ") && line.contains("chain_broken"), "{line}");
}

#[test]
fn alerts_are_listed_shown_and_acknowledged_from_the_console() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    // The dev configuration with the failed sign-in thresholds at 2, under the web layer's own
    // throttle (which answers 429 after 3 and checks nothing more).
    let defaults = Command::new(env!("CARGO_BIN_EXE_wardbox")).args(["config", "defaults", "--base", base.to_str().expect("utf8")]).output().expect("defaults");
    assert!(defaults.status.success(), "{}", text(&defaults));
    let toml = String::from_utf8(defaults.stdout).expect("utf8");
    let lowered = toml.replace("account_failures = 5\naddress_failures = 10", "account_failures = 2\naddress_failures = 2");
    assert_ne!(lowered, toml, "the defaults no longer carry the sign-in thresholds");
    std::fs::create_dir_all(&base).expect("base");
    std::fs::write(base.join("wardbox.toml"), lowered).expect("config");
    let _agent = start_dev(&base, addr);
    let config = base.join("wardbox.toml");
    for _ in 0..2 {
        failed_signin(addr, "ghost");
    }
    // The daemon's detector raises `signin_failures_account` for the name typed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let out = wardbox(&["alerts", "list", "--open"], &config);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let t = text(&out);
        if t.contains("signin_failures_account") {
            break t;
        }
        assert!(Instant::now() < deadline, "no alert listed within 30 s: {t}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let id: i64 = listed
        .lines()
        .find(|l| l.contains("signin_failures_account"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("alert id");
    assert!(listed.contains("[open]") && !listed.contains("ghost"), "a name that is no account is never repeated: {listed}");

    let shown = text(&wardbox(&["alerts", "show", &id.to_string()], &config));
    assert!(shown.contains("threshold:") && shown.contains("audit records:") && shown.contains("acknowledged:  not yet"), "{shown}");

    let empty = wardbox(&["alerts", "ack", &id.to_string(), "--reason", "  "], &config);
    assert_eq!(empty.status.code(), Some(1), "{}", text(&empty));
    let reason = "Typos by the new locum; confirmed by phone.";
    let ack = wardbox(&["alerts", "ack", &id.to_string(), "--reason", reason], &config);
    assert_eq!(ack.status.code(), Some(0), "{}", text(&ack));
    let shown = text(&wardbox(&["alerts", "show", &id.to_string()], &config));
    assert!(shown.contains("acknowledged:  by cli:") && shown.contains(reason), "{shown}");
    let again = wardbox(&["alerts", "ack", &id.to_string(), "--reason", "other"], &config);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already acknowledged"), "{}", text(&again));
    let open = text(&wardbox(&["alerts", "list", "--open"], &config));
    assert!(!open.lines().any(|l| l.contains("[open]") && l.trim_start().starts_with(&format!("{id} "))), "{open}");
    assert!(open.lines().all(|l| !l.contains("acknowledged by")), "--open lists only open alerts: {open}");
    let missing = wardbox(&["alerts", "ack", "999999", "--reason", "x"], &config);
    assert_eq!(missing.status.code(), Some(1));

    // The rest of the workflow from the console: a disposition, then closing.
    let early = wardbox(&["alerts", "close", &id.to_string(), "--note", "done"], &config);
    assert_eq!(early.status.code(), Some(1));
    assert!(text(&early).contains("has no disposition yet"), "{}", text(&early));
    let bad = wardbox(&["alerts", "dispose", &id.to_string(), "--disposition", "fine", "--note", "x"], &config);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let d = wardbox(&["alerts", "dispose", &id.to_string(), "--disposition", "possible_breach", "--note", "could be a stolen password"], &config);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d));
    let shown = text(&wardbox(&["alerts", "show", &id.to_string()], &config));
    assert!(shown.contains("POSSIBLE BREACH since") && shown.contains("days left"), "{shown}");
    let c = wardbox(&["alerts", "close", &id.to_string(), "--note", "the locum's typos after all"], &config);
    assert_eq!(c.status.code(), Some(0), "{}", text(&c));
    let shown = text(&wardbox(&["alerts", "show", &id.to_string()], &config));
    assert!(shown.contains("closed:        by cli:") && !shown.contains("POSSIBLE BREACH"), "{shown}");
    let assign = wardbox(&["alerts", "assign", &id.to_string(), "--to", "nobody"], &config);
    assert_eq!(assign.status.code(), Some(1), "a closed alert is not changed: {}", text(&assign));

    // The chain, with the acknowledgement appended by the CLI beside the running agent, verifies.
    let verify = wardbox(&["audit", "verify"], &config);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    let json = wardbox(&["alerts", "list", "--json"], &config);
    assert!(text(&json).contains("\"reviewed_by\""), "{}", text(&json));

    let test = wardbox(&["alerts", "test"], &config);
    assert_eq!(test.status.code(), Some(1), "{}", text(&test));
    assert!(text(&test).contains("no alert destination is configured"), "{}", text(&test));
}
