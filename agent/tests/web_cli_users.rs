//! The first administrator is made from the console (`wardbox users add`, password on standard
//! input) and signs in to the running dev agent over real HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// One HTTP/1.1 request; returns the raw response head and body.
fn http(addr: SocketAddr, request: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

fn cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_default()
        .to_string()
}

fn users(config: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["users"])
        .args(args)
        .args(["-c", config.to_str().expect("utf8")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wardbox users");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
    child.wait_with_output().expect("output")
}

#[test]
fn first_admin_from_the_console_signs_in_to_the_running_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let addr = free_port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wardbox dev");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if http(addr, &req).is_ok_and(|(head, _)| head.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(agent.try_wait().expect("wait").is_none(), "the agent exited before serving");
        assert!(Instant::now() < deadline, "no health answer within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = base.join("wardbox.toml");
    let add = ["add", "--username", "IT.Admin", "--display-name", "IT Admin", "--role", "admin"];
    let weak = users(&config, &add, "short\n");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too short"), "{}", String::from_utf8_lossy(&weak.stderr));
    let ok = users(&config, &add, "correct horse battery\n");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("created it.admin (admin)"));
    let again = users(&config, &add, "correct horse battery\n");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "no second account of the same name");
    let list = users(&config, &["list"], "");
    assert!(String::from_utf8_lossy(&list.stdout).contains("it.admin"));
    // A postal address for the same_address alert rule: set, refused when it is no address or
    // names no account, cleared.
    let text = |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let set = users(&config, &["address", "--username", "it.admin", "--address", "12 Elm Street, Springfield"], "");
    assert!(set.status.success() && text(&set).contains("postal address of it.admin set"), "{}", text(&set));
    let bad = users(&config, &["address", "--username", "it.admin", "--address", "Springfield"], "");
    assert!(!bad.status.success() && text(&bad).contains("needs a house number and a street"), "{}", text(&bad));
    let nobody = users(&config, &["address", "--username", "nobody", "--address", "1 Oak Road"], "");
    assert!(!nobody.status.success() && text(&nobody).contains("there is no user nobody"), "{}", text(&nobody));
    let clear = users(&config, &["address", "--username", "it.admin", "--clear"], "");
    assert!(clear.status.success() && text(&clear).contains("postal address of it.admin cleared"), "{}", text(&clear));

    // Sign in through the agent's pages.
    let (head, body) = http(addr, &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).expect("login page");
    let pre = cookie(&head, "wb_login");
    let marker = "name=\"csrf\" value=\"";
    let csrf = body[body.find(marker).expect("csrf") + marker.len()..].split('"').next().expect("token").to_string();
    let form = format!("csrf={csrf}&username=it.admin&password=correct+horse+battery");
    let req = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: wb_login={pre}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let (head, _) = http(addr, &req).expect("sign in");
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(head.to_lowercase().contains("location: /admin"), "{head}");
    let session = cookie(&head, "wb_session");
    assert_eq!(session.len(), 64, "{head}");
    let (head, body) = http(addr, &format!("GET /admin HTTP/1.1\r\nHost: {addr}\r\nCookie: wb_session={session}\r\nConnection: close\r\n\r\n")).expect("admin");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The dev profile's plain HTTP is stated on the health page.
    assert!(body.contains("Running without TLS for the web UI"), "the page hides that the UI runs without TLS");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(agent.wait().expect("wait").success(), "unclean shutdown");
}
