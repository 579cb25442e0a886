//! The dev profile boots end to end as a real process, the health endpoint reports every stage,
//! and SIGTERM shuts it down cleanly with the boot recorded in a verifiable audit chain.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A plain HTTP/1.1 GET; returns (status code, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

#[test]
fn dev_profile_boots_and_reports_every_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let addr = free_port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wardbox dev");

    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok((200, body)) = get(addr, "/health") {
            break body;
        }
        if let Ok(Some(status)) = agent.try_wait() {
            let mut err = String::new();
            agent.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("the agent exited with {status} before serving:\n{err}");
        }
        assert!(Instant::now() < deadline, "no health answer within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(health["profile"], "dev");
    let stages: Vec<&str> = health["stages"].as_array().expect("stages").iter().map(|s| s["stage"].as_str().expect("name")).collect();
    assert_eq!(stages, ["config", "unlock", "firewall", "store", "gpu", "engine", "serve"]);
    for s in health["stages"].as_array().expect("stages") {
        assert_ne!(s["outcome"], "failed", "stage failed: {s}");
        assert!(s["started_at"].is_string(), "{s}");
    }
    // The dev profile says, in the health data, every protection it runs without.
    let without = health["running_without"].to_string();
    for p in ["data volume encryption", "TPM binding", "egress-deny firewall"] {
        assert!(without.contains(p), "health does not say the box runs without {p}: {without}");
    }
    assert_eq!(health["state"], "degraded");
    let status = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["status", "-c", base.join("wardbox.toml").to_str().expect("utf8")])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("running (pid"), "{text}");
    assert!(text.contains("RUNNING WITHOUT: egress-deny firewall"), "{text}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let exit = agent.wait().expect("wait");
    let mut stderr = String::new();
    agent.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
    assert!(exit.success(), "unclean shutdown {exit}:\n{stderr}");
    assert!(stderr.contains("DEV PROFILE"), "the dev profile was not announced loudly:\n{stderr}");

    // The boot stages and the lifecycle are in the audit chain, and it verifies.
    let verify = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["audit", "verify", "--json", "-c", base.join("wardbox.toml").to_str().expect("utf8")])
        .output()
        .expect("verify");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("json");
    // 7 stages before serving were audited: 6 boot stages + "serving" + "stopped".
    assert!(report["records"].as_u64().expect("records") >= 8, "{report}");
}

#[test]
fn the_appliance_profile_refuses_to_start_without_its_protections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("appliance.toml");
    std::fs::write(
        &config,
        format!(
            "profile = \"appliance\"\nstate_dir = \"{}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().join("data").display()
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["serve", "-c", config.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`volume.mode`"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "a refused start created the data directory");
}
