//! Shared by the browser tests that drive the agent's own UI in headless Chromium: chromedriver
//! and a Chromium session, screenshots, and the UI served over TLS on a free port with a way to
//! stop it before the harness goes.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use wardbox::web::{TlsMode, WebConfig, app, tls};

use crate::web_support::{Harness, PASSWORD};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub fn start_driver() -> Driver {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(Path::new(bin).exists(), "the browser_ tests need {bin}: apt-get install chromium chromium-driver");
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

pub async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    // The local CA is not installed in this throwaway profile; the TLS tests check the chain.
    caps.insert("acceptInsecureCerts".into(), json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver")
}

/// Signs `user` in through the sign-in page and waits until the signed-in page has come. The
/// click only starts the form's submission: a test that navigated on straight away raced it,
/// and the submission's redirect could land after (and over) the test's own next page.
pub async fn sign_in_as(c: &Client, base: &str, user: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    c.find(Locator::Id("username")).await.expect("username").send_keys(user).await.expect("type");
    c.find(Locator::Id("password")).await.expect("password").send_keys(PASSWORD).await.expect("type");
    c.find(Locator::Id("signin")).await.expect("button").click().await.expect("click");
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("signout"))
        .await
        .unwrap_or_else(|e| panic!("{user} was not signed in within 30 s ({e})"));
}

pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(artifacts().join(name), png).expect("save screenshot");
}

/// The UI being served: its address, and what stops it.
pub struct Served {
    pub base: String,
    stop: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Stop serving and wait until the server task has let go of the agent's state, so the
    /// harness can then join its audit writer (a writer still running when the test binary
    /// exits closes its SQLCipher connection during the process's exit and can crash it).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.serving).await;
    }
}

/// The UI over TLS on a free port.
pub async fn serve(h: &Harness, dir: &Path) -> Served {
    let web = WebConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls: TlsMode::LocalCa,
        hostnames: vec!["localhost".into()],
        ..WebConfig::default()
    };
    let (bound, _) = tls::bind(&web, dir).await.expect("bind");
    let port = bound.local_addr().expect("addr").port();
    let router = app(h.state.clone());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(async move {
        let _ = bound
            .serve(router, move || {
                let mut rx = rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            })
            .await;
    });
    Served { base: format!("https://localhost:{port}"), stop, serving }
}
