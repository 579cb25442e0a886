//! Slow and abusive clients against a real agent process serving TLS: a connection that never
//! finishes its handshake, one that trickles its headers (slowloris) and an HTTP/2 connection
//! that never sends a request are closed within their timeouts, and one client address cannot
//! hold more than its share of connections while another address is still served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wardbox::config::Config;
use wardbox::web::TlsMode;

/// A `wardbox serve` process in the dev profile with the local CA's TLS on loopback.
struct Agent {
    child: Child,
    addr: SocketAddr,
    ca: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Start an agent whose `[web]` section `edit` adjusts, and wait until it serves over TLS.
async fn start(edit: impl FnOnce(&mut wardbox::web::WebConfig)) -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("box");
    std::fs::create_dir_all(&base).expect("base");
    let mut config = Config::dev_defaults(&base);
    config.web.tls = TlsMode::LocalCa;
    config.web.listen = free_port();
    config.web.hostnames = vec!["localhost".into(), "127.0.0.1".into()];
    edit(&mut config.web);
    config.validate().expect("the test configuration is valid");
    let path = base.join("wardbox.toml");
    std::fs::write(&path, toml::to_string_pretty(&config).expect("toml")).expect("write config");
    let log = dir.path().join("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["serve", "-c", path.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start wardbox serve");
    let mut agent = Agent { child, addr: config.web.listen, ca: config.state_dir.join("tls/ca.pem"), log, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if agent.ca.exists()
            && let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(5), get(&agent, None, "/health")).await
            && status == 200
        {
            return agent;
        }
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("the agent exited with {status} before serving:\n{}", std::fs::read_to_string(&agent.log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "no TLS health answer within 60 s:\n{}", std::fs::read_to_string(&agent.log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn connector(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).expect("ca pem")).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TCP connection to the agent from `from` (a loopback address; the kernel picks the port).
async fn tcp_from(agent: &Agent, from: Option<&str>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(from) = from {
        socket.bind(SocketAddr::new(from.parse().expect("address"), 0))?;
    }
    socket.connect(agent.addr).await
}

async fn tls_from(agent: &Agent, from: Option<&str>, alpn: &[&[u8]]) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp_from(agent, from).await?;
    connector(&agent.ca, alpn).connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// One HTTP/1.1 request on a fresh TLS connection; the status code.
async fn get(agent: &Agent, from: Option<&str>, path: &str) -> std::io::Result<u16> {
    let mut tls = tls_from(agent, from, &[]).await?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    Ok(text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0))
}

/// Read until the server closes the connection; how long after `started` that was, or `None`
/// when it was still open `limit` after `started`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), started: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The settings of the timeout tests: short timeouts, so the test waits seconds, not minutes.
fn short_timeouts(web: &mut wardbox::web::WebConfig) {
    web.handshake_timeout_secs = 2;
    web.header_timeout_secs = 2;
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_within_the_timeout() {
    let agent = start(short_timeouts).await;
    // Connects and sends nothing.
    let started = Instant::now();
    let mut silent = tcp_from(&agent, None).await.expect("connect");
    // Sends the first bytes of a ClientHello record and stops.
    let mut partial = tcp_from(&agent, None).await.expect("connect");
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).await.expect("write");
    for (what, stream) in [("a silent client", &mut silent), ("a half-sent ClientHello", &mut partial)] {
        let closed = closed_within(stream, started, Duration::from_secs(8)).await;
        let closed = closed.unwrap_or_else(|| panic!("{what} still holds its connection after 8 s (handshake timeout 2 s)"));
        assert!(closed >= Duration::from_millis(1500), "{what} was closed after {closed:?}, before its timeout");
    }
    assert_eq!(get(&agent, None, "/login").await.expect("a normal request"), 200);
}

#[tokio::test]
async fn trickled_headers_and_a_silent_http2_connection_are_closed() {
    let agent = start(short_timeouts).await;
    // Slowloris: a request line, then one header line every 300 ms, never the blank line.
    let tls = tls_from(&agent, None, &[b"http/1.1"]).await.expect("handshake");
    let (mut reader, mut writer) = tokio::io::split(tls);
    writer.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\n").await.expect("request line");
    let trickle = tokio::spawn(async move {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(format!("X-Slow-{i}: x\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let closed = closed_within(&mut reader, Instant::now(), Duration::from_secs(10)).await;
    trickle.abort();
    let closed = closed.expect("a client trickling its headers still held its connection after 10 s (header timeout 2 s)");
    assert!(closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6), "closed after {closed:?}");

    // HTTP/2 by ALPN, then nothing: no request head ever arrives.
    let mut h2 = tls_from(&agent, None, &[b"h2"]).await.expect("handshake");
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let closed = closed_within(&mut h2, Instant::now(), Duration::from_secs(10)).await;
    let closed = closed.expect("a silent HTTP/2 connection was still open after 10 s (header timeout 2 s)");
    assert!(closed >= Duration::from_millis(1500), "closed after {closed:?}");

    assert_eq!(get(&agent, None, "/login").await.expect("a normal request"), 200);
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connections() {
    const LIMIT: usize = 4;
    let agent = start(|web| web.max_connections_per_address = LIMIT as u32).await;
    // LIMIT finished handshakes: each is accepted and counted by the agent.
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(tls_from(&agent, Some("127.0.0.1"), &[]).await.expect("a connection within the limit"));
    }
    // The next one from the same address is closed before its handshake.
    let refused = tls_from(&agent, Some("127.0.0.1"), &[]).await;
    assert!(refused.is_err(), "connection {} from one address got a handshake", LIMIT + 1);
    // Another workstation is still served.
    assert_eq!(get(&agent, Some("127.0.0.2"), "/login").await.expect("another address"), 200);
    // The held connections are real ones: a request on one is answered.
    let mut first = held.remove(0);
    first.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut response = Vec::new();
    let _ = first.read_to_end(&mut response).await;
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"), "a held connection was not served");
    drop(first);
    // Its place is free again once the agent has seen it close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match get(&agent, Some("127.0.0.1"), "/login").await {
            Ok(200) => break,
            other => assert!(Instant::now() < deadline, "a closed connection did not free its place: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
}
