//! `wardbox records import` on a running dev box without an engine (the real binary, a real
//! store): a record id that is not in the index is refused, naming it and the flag that
//! declares a new patient, and nothing is stored; with the flag, the import gets as far as the
//! engine and says plainly that the running agent has none.

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

fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = String::new();
    let _ = s.read_to_string(&mut head);
    head.starts_with("HTTP/1.1 200")
}

#[test]
fn importing_to_an_unknown_patient_needs_new_patient_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    // No engine on purpose: this test is about what happens before anything is embedded.
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
            .env("WARDBOX_ENGINE_BIN", dir.path().join("no-engine-here"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wardbox dev"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(addr) {
        assert!(agent.0.try_wait().expect("wait").is_none(), "the dev agent exited before serving");
        assert!(Instant::now() < deadline, "the dev agent did not serve within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = base.join("wardbox.toml");
    let note = dir.path().join("phone-call.txt");
    std::fs::write(&note, b"S: Daughter called; patient dizzy since Monday.").expect("note");
    let note = note.to_str().expect("utf8");

    let typo = wardbox(&["records", "import", "--patient", "NOSUCH", note], &config);
    assert_eq!(typo.status.code(), Some(1), "{}", text(&typo));
    let out = text(&typo);
    assert!(out.contains("\"NOSUCH\"") && out.contains("--new-patient") && out.contains("nothing was imported"), "{out}");
    let status = wardbox(&["records", "status"], &config);
    assert!(text(&status).contains("0 patients, 0 documents"), "{}", text(&status));

    // The flag needs a record id.
    let bare = wardbox(&["records", "import", "--new-patient", note], &config);
    assert_eq!(bare.status.code(), Some(2), "{}", text(&bare));

    // Declared new: the import goes on to the engine, and this agent runs without one.
    let declared = wardbox(&["records", "import", "--patient", "NOSUCH", "--new-patient", note], &config);
    assert_eq!(declared.status.code(), Some(1), "{}", text(&declared));
    let out = text(&declared);
    assert!(out.contains("no engine is configured") && out.contains("engine.json"), "{out}");
    let status = wardbox(&["records", "status"], &config);
    assert!(text(&status).contains("0 patients, 0 documents"), "{}", text(&status));
}
