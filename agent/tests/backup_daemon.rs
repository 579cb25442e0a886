//! The running agent backs up by itself: `wardbox dev` with a `[backup]` section whose nightly
//! time has just passed runs the backup at start (the schedule's first check); with the disk
//! missing, the failure is an alert in the health data and a `backup` alert in the store
//! (through the audit chain and the detector, as every alert).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wardbox::config::Config;
use wardbox::store::Store;

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

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

/// The agent process; stopped with SIGTERM (then killed) when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A dev box whose nightly backup to `usb` was due five minutes ago; the agent serving it.
fn start(base: &Path, usb: &Path) -> (Agent, SocketAddr, Config) {
    let mut config = Config::dev_defaults(base);
    let due = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_mins(5)).unwrap();
    config.backup.usb_path = Some(usb.to_owned());
    config.backup.nightly_at = due.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M").to_string();
    config.backup.utc_offset_minutes = Some(0);
    std::fs::create_dir_all(base).unwrap();
    std::fs::write(base.join("wardbox.toml"), toml::to_string_pretty(&config).unwrap()).unwrap();
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.to_str().unwrap(), "--listen", &addr.to_string()])
        // No engine: these tests are about backups.
        .env("WARDBOX_ENGINE_BIN", "/nonexistent/wardbox-engine")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wardbox dev");
    let agent = Agent(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(get(addr, "/health"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "the agent did not serve within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    (agent, addr, config)
}

fn store(config: &Config, base: &Path) -> Store {
    let key = wardbox::stages::unlock::load_or_create_key_file(&config.state_dir.join("dev-store.key")).unwrap();
    Store::open_existing(&base.join("data").join(&config.store.file_name), &key).unwrap()
}

/// Poll `f` for up to `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_agent_backs_up_when_the_nightly_time_has_come() {
    let dir = tempfile::tempdir().unwrap();
    let (base, usb): (PathBuf, PathBuf) = (dir.path().join("box"), dir.path().join("usb"));
    std::fs::create_dir_all(&usb).unwrap();
    let (agent, addr, config) = start(&base, &usb);
    let snapshot: String = wait_for(90, "a good backup recorded", || {
        store(&config, &base)
            .conn()
            .query_row("SELECT snapshot_id FROM backup_runs WHERE kind = 'backup' AND ok = 1", [], |r| r.get(0))
            .ok()
    });
    assert!(usb.join("config").is_file(), "the repository is on the disk");
    // The schedule's run is audited as the system's, and the configuration file is in it. (The
    // run is recorded, then audited: wait for the audit record too.)
    let detail: String = wait_for(30, "the nightly backup audited", || {
        store(&config, &base)
            .conn()
            .query_row("SELECT detail FROM audit WHERE actor = 'system' AND detail LIKE '%backup_nightly%'", [], |r| r.get(0))
            .ok()
    });
    assert!(detail.contains(&snapshot), "{detail}");
    let (_, health) = get(addr, "/health").unwrap();
    assert!(!health.contains("\"source\":\"backup\""), "no backup alert: {health}");
    // Restoring onto this box while its agent runs is refused, and nothing is touched.
    let out = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["backup", "restore-box", "-c", base.join("wardbox.toml").to_str().unwrap(), "--key-file", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the agent is running (process") && said.contains("stop it first"), "{said}");
    drop(agent);
}

#[test]
fn a_missing_disk_at_night_is_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (base, usb) = (dir.path().join("box"), dir.path().join("not-mounted"));
    let (agent, addr, config) = start(&base, &usb);
    let health = wait_for(90, "the backup alert in the health data", || {
        get(addr, "/health").ok().map(|(_, body)| body).filter(|b| b.contains("\"source\":\"backup\""))
    });
    assert!(health.contains("is not available"), "{health}");
    let rule: String = wait_for(60, "a backup alert stored by the detector", || {
        store(&config, &base).conn().query_row("SELECT rule FROM alerts WHERE rule = 'backup'", [], |r| r.get(0)).ok()
    });
    assert_eq!(rule, "backup");
    let failed: i64 = store(&config, &base)
        .conn()
        .query_row("SELECT count(*) FROM backup_runs WHERE kind = 'backup' AND ok = 0", [], |r| r.get(0))
        .unwrap();
    assert_eq!(failed, 1, "one attempt for the night");
    drop(agent);
}
