//! At-least-once delivery across a collector outage and a kill -9 of the agent, end to end:
//! a real `wardbox dev` with `[alert_delivery.syslog]` pointing at a collector that is down
//! raises alerts from failed sign-ins at its real login form; they wait failed in the outbox;
//! the agent is killed (SIGKILL); the collector (Debian's `rsyslogd` with a TLS input) comes up;
//! the restarted agent delivers exactly the alerts that were pending, each once, and raises no
//! new ones from its replay of the chain.
//!
//! Tier `rsyslog_`: needs `/usr/sbin/rsyslogd` and the `rsyslog-openssl` driver; a missing one
//! fails the test, naming it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const OSSL_DRIVER: &str = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SIGKILL: no shutdown path runs, as when the box loses power or the process is killed.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wardbox(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).args(["-c", config.to_str().expect("utf8")]).stdin(Stdio::null()).output().expect("run wardbox")
}

fn http(addr: SocketAddr, request: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

fn start_dev(base: &Path, addr: SocketAddr) -> Killed {
    let agent = Killed(
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

/// (id, [(destination, state)]) of every stored alert, from `wardbox alerts list --json`.
fn alerts(config: &Path) -> Vec<(i64, Vec<(String, String)>)> {
    let out = wardbox(&["alerts", "list", "--json", "--limit", "1000"], config);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|a| {
            let d = a["deliveries"].as_array().expect("deliveries").iter().map(|d| (d[0].as_str().unwrap_or("").to_string(), d[1].as_str().unwrap_or("").to_string())).collect();
            (a["id"].as_i64().expect("id"), d)
        })
        .collect()
}

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Test clinic CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).expect("issuer");
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["syslog.test".to_owned()]).expect("params");
    leaf.distinguished_name.push(DnType::CommonName, "syslog.test");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
    let p = Pki { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&p.ca, ca_cert.pem()).expect("write");
    std::fs::write(&p.cert, leaf_cert.pem()).expect("write");
    std::fs::write(&p.key, leaf_key.serialize_pem()).expect("write");
    p
}

fn rsyslog(dir: &Path, port: u16, p: &Pki, out: &Path) -> Killed {
    for needed in [RSYSLOGD, OSSL_DRIVER] {
        assert!(Path::new(needed).exists(), "{needed} is missing: install Debian's rsyslog and rsyslog-openssl (tests/install-deps.sh) to run the rsyslog_ tier");
    }
    let work = dir.join("rsyslog");
    std::fs::create_dir_all(&work).expect("dir");
    let conf = format!(
        r#"global(workDirectory="{work}" DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="plain" type="string" string="%APP-NAME% %MSGID% %msg%\n")
*.* action(type="omfile" file="{out}" template="plain")
"#,
        work = work.display(),
        ca = p.ca.display(),
        cert = p.cert.display(),
        key = p.key.display(),
        out = out.display(),
    );
    std::fs::write(work.join("rsyslog.conf"), conf).expect("conf");
    let mut child = Command::new(RSYSLOGD)
        .args(["-n", "-f"])
        .arg(work.join("rsyslog.conf"))
        .arg("-i")
        .arg(work.join("pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsyslogd");
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().expect("wait").is_none(), "rsyslogd exited");
        assert!(Instant::now() < deadline, "rsyslogd not listening after 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

/// The dev configuration with the failed sign-in thresholds at 2 and the collector at `port`.
fn write_config(base: &Path, p: &Pki, port: u16) -> PathBuf {
    let defaults = Command::new(env!("CARGO_BIN_EXE_wardbox")).args(["config", "defaults", "--base", base.to_str().expect("utf8")]).output().expect("defaults");
    let toml = String::from_utf8(defaults.stdout).expect("utf8");
    let delivery = format!(
        "[alert_delivery]\nadmin_url = \"https://wardbox.test\"\nretry_initial_secs = 1\nretry_max_secs = 2\n[alert_delivery.syslog]\naddress = \"127.0.0.1:{port}\"\nserver_name = \"syslog.test\"\nca_file = \"{}\"\n",
        p.ca.display()
    );
    let configured = toml
        .replace("account_failures = 5\naddress_failures = 10", "account_failures = 2\naddress_failures = 2")
        .replace("[alert_delivery]\nadmin_url = \"\"\n", &delivery);
    assert!(configured.contains("[alert_delivery.syslog]") && configured.contains("account_failures = 2"), "the defaults changed shape");
    std::fs::create_dir_all(base).expect("base");
    let config = base.join("wardbox.toml");
    std::fs::write(&config, configured).expect("config");
    config
}

#[test]
fn rsyslog_gets_exactly_the_pending_alerts_after_an_outage_and_a_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let p = pki(dir.path());
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let config = write_config(&base, &p, port);

    // The collector is down: the alerts raised wait in the outbox, failed and retried.
    let agent = start_dev(&base, addr);
    failed_signin(addr, "ghost");
    failed_signin(addr, "ghost");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let a = alerts(&config);
        if !a.is_empty() && a.iter().all(|(_, d)| d.iter().all(|(_, state)| state == "failed")) {
            break a;
        }
        assert!(Instant::now() < deadline, "no failed delivery within 30 s: {a:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(agent); // kill -9

    let received = dir.path().join("received.log");
    let _collector = rsyslog(dir.path(), port, &p, &received);
    let _agent = start_dev(&base, addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        if pending.iter().all(|(id, _)| text.contains(&format!("alert {id}: "))) {
            break;
        }
        assert!(Instant::now() < deadline, "pending alerts not delivered within 30 s: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more passes: nothing is sent twice, and the replay raised nothing new.
    std::thread::sleep(Duration::from_secs(4));
    let text = std::fs::read_to_string(&received).unwrap_or_default();
    let alert_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("wardbox alert ")).collect();
    assert_eq!(alert_lines.len(), pending.len(), "exactly the pending alerts, each once: {text}");
    let after = alerts(&config);
    assert_eq!(after.len(), pending.len(), "the replay after the kill raised alerts again: {after:?}");
    assert!(after.iter().all(|(_, d)| d.iter().all(|(_, s)| s == "delivered")), "{after:?}");
    assert!(text.contains("wardbox heartbeat heartbeat:"), "the heartbeat arrives once the collector is up: {text}");
}

/// Time from the event (the second failed sign-in answered) to the alert on the dashboard's
/// data (stored) and at the collector, with the collector up; the issue's aim is under 60 s.
/// Debug build; printed for docs/alerts.md.
#[test]
fn rsyslog_receives_the_alert_seconds_after_the_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    let p = pki(dir.path());
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let config = write_config(&base, &p, port);
    let received = dir.path().join("received.log");
    let _collector = rsyslog(dir.path(), port, &p, &received);
    let _agent = start_dev(&base, addr);
    failed_signin(addr, "ghost");
    failed_signin(addr, "ghost");
    let event = Instant::now();
    let mut stored = None;
    loop {
        if stored.is_none() && !alerts(&config).is_empty() {
            stored = Some(event.elapsed());
        }
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        if text.lines().any(|l| l.starts_with("wardbox alert ")) {
            break;
        }
        assert!(event.elapsed() < Duration::from_secs(60), "no alert at the collector within 60 s: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_collector = event.elapsed();
    eprintln!("event to alert stored (seen by the CLI): {:?}; to the collector: {at_collector:?}", stored.unwrap_or(at_collector));
}
