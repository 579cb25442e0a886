//! The Reports page in a real headless Chromium (chromedriver, WebDriver) against a live dev
//! box (`wardbox dev`, so the real generation with its live probes): an auditor signs in,
//! generates a report, and downloads it as HTML, JSON and OSCAL through the page's links; the
//! JSON lists the digests of the two other files as downloaded; the downloaded HTML renders
//! (a screenshot, checked not blank) and prints to PDF in Chromium (`--print-to-pdf`: a real
//! PDF with pages whose text is the report's). Screenshots and the PDF go to
//! `$CARGO_TARGET_TMPDIR/browser-artifacts/`.
//!
//! Tier `browser_`: needs Debian `chromium` and `chromium-driver`; fails naming them if absent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use sha2::{Digest, Sha256};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PASSWORD: &str = "correct horse battery";

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("{what} exited with {status} before listening:\n{err}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr} within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A dev box (no engine) with an auditor account.
fn dev_box(base: &Path) -> (Killed, String) {
    let addr = free_addr();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
        // The page is what is tested here, not the model: no engine.
        .env("WARDBOX_ENGINE_BIN", "/nonexistent/wardbox-engine")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wardbox dev");
    wait_listening(addr, &mut agent, "the dev box");
    let mut add = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["users", "add", "-c", base.join("wardbox.toml").to_str().expect("utf8")])
        .args(["--username", "auditor.kim", "--display-name", "Kim Auditor", "--role", "auditor"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wardbox users add");
    add.stdin.take().expect("stdin").write_all(format!("{PASSWORD}\n").as_bytes()).expect("password");
    let out = add.wait_with_output().expect("users add");
    assert!(out.status.success(), "users add: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (Killed(agent), format!("http://{addr}"))
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

async fn browser(port: u16, profile: &Path, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
                "safebrowsing.enabled": false,
            },
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// Wait for a finished download named `name` (Chromium writes `.crdownload` until done).
fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if path.is_file() && !dir.join(format!("{name}.crdownload")).exists() {
            return std::fs::read(&path).expect("read the download");
        }
        let seen: Vec<String> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        assert!(Instant::now() < deadline, "{name} was not downloaded within 30 s (the download directory holds {seen:?})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fraction of pixels of a PNG that are not the page's white, and how many colours it has.
fn ink(png_bytes: &[u8]) -> (f64, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut buf).expect("a frame");
    let channels = frame.color_type.samples();
    let pixels = &buf[..frame.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut inked = 0usize;
    let mut total = 0usize;
    for p in pixels.chunks(channels) {
        // Grey (1-2 channels) or RGB(A); alpha is ignored.
        let rgb = if channels >= 3 { [p[0], p[1], p[2]] } else { [p[0]; 3] };
        colours.insert(rgb);
        total += 1;
        if rgb.iter().any(|&c| c < 235) {
            inked += 1;
        }
    }
    (inked as f64 / total.max(1) as f64, colours.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_auditor_generates_downloads_and_prints_a_report() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(Path::new(bin).exists(), "the browser_ tests need {bin}: apt-get install chromium chromium-driver");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, base) = dev_box(&dir.path().join("box"));
    let driver_addr = free_addr();
    let mut driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={}", driver_addr.port()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromedriver");
    wait_listening(driver_addr, &mut driver, "chromedriver");
    let _driver = Killed(driver);
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).expect("mkdir");
    let c = browser(driver_addr.port(), &dir.path().join("profile"), &downloads).await;

    // Sign in as the auditor and open the Reports page.
    c.goto(&format!("{base}/login")).await.expect("login page");
    c.find(Locator::Id("username")).await.expect("username").send_keys("auditor.kim").await.expect("type");
    c.find(Locator::Id("password")).await.expect("password").send_keys(PASSWORD).await.expect("type");
    c.find(Locator::Id("signin")).await.expect("button").click().await.expect("click");
    c.wait().at_most(Duration::from_secs(10)).for_url(&url::Url::parse(&format!("{base}/")).expect("url")).await.ok();
    c.goto(&format!("{base}/admin/reports")).await.expect("the Reports page");
    assert_eq!(c.current_url().await.expect("url").path(), "/admin/reports", "the auditor reaches the Reports page");

    // Generate: the real generation, live probes and all (the dev box has no TPM: unsigned).
    c.find(Locator::Id("generate")).await.expect("the generate button").click().await.expect("click");
    let message = c.wait().at_most(Duration::from_secs(120)).for_element(Locator::Id("message")).await.expect("the outcome");
    let said = message.text().await.expect("text");
    assert!(said.contains("written (UNSIGNED (no TPM on this box))"), "{said}");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("reports-page.png"), &png).expect("save");

    // Download the three files through the page's links.
    let mut files = Vec::new();
    for label in ["HTML", "JSON", "OSCAL"] {
        let link = c.find(Locator::XPath(&format!("//table[@id='reports']/tbody/tr[1]//a[.='{label}']"))).await.expect("a download link");
        let href = link.attr("href").await.expect("href").expect("an href");
        let name = href.rsplit('/').next().expect("a file name").to_string();
        link.click().await.expect("download");
        files.push((name.clone(), downloaded(&downloads, &name)));
    }
    let (html_name, html) = &files[0];
    let (_, json_bytes) = &files[1];
    let (_, oscal) = &files[2];
    let doc: serde_json::Value = serde_json::from_slice(json_bytes).expect("the JSON report");
    assert_eq!(doc["format"], "wardbox-report/1");
    assert_eq!(doc["renderings"]["html_sha256"], hex::encode(Sha256::digest(html)), "the HTML is the one the JSON lists");
    assert_eq!(doc["renderings"]["oscal_sha256"], hex::encode(Sha256::digest(oscal)), "the OSCAL is the one the JSON lists");
    let oscal: serde_json::Value = serde_json::from_slice(oscal).expect("the OSCAL document");
    assert!(oscal["assessment-results"]["results"].is_array(), "{oscal}");
    let page = String::from_utf8(html.clone()).expect("utf8");
    assert!(page.contains("<h2 id=\"changes\">What changed since the previous report</h2>"));

    // The downloaded page renders in the browser, from the file, as an auditor would open it.
    let html_path = downloads.join(html_name);
    c.goto(&format!("file://{}", html_path.display())).await.expect("open the downloaded report");
    let h1 = c.find(Locator::Css("h1")).await.expect("a heading").text().await.expect("text");
    assert!(h1.starts_with("Compliance checklist report"), "{h1}");
    let shot = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("report-html.png"), &shot).expect("save");
    let (inked, colours) = ink(&shot);
    assert!(inked > 0.02 && colours > 8, "the rendered report looks blank: {:.1} % of pixels inked, {colours} colours", inked * 100.0);
    c.close().await.expect("close");

    // And prints to PDF in Chromium.
    let pdf_path = artifacts().join("report.pdf");
    let _ = std::fs::remove_file(&pdf_path);
    let printed = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer", "--no-first-run"])
        .arg(format!("--user-data-dir={}", dir.path().join("print-profile").display()))
        .arg(format!("--print-to-pdf={}", pdf_path.display()))
        .arg(format!("file://{}", html_path.display()))
        .output()
        .expect("run chromium --print-to-pdf");
    let pdf = std::fs::read(&pdf_path).unwrap_or_else(|e| panic!("no PDF ({e}): {}", String::from_utf8_lossy(&printed.stderr)));
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let parsed = lopdf::Document::load_mem(&pdf).expect("the PDF parses");
    let pages = parsed.get_pages();
    assert!(pages.len() >= 2, "the printed report has {} page(s)", pages.len());
    let first_page = parsed.extract_text(&[1]).unwrap_or_default();
    assert!(first_page.contains("Compliance checklist report"), "the first page's text: {first_page:?}");
    eprintln!("printed {} pages, {} bytes: {}", pages.len(), pdf.len(), pdf_path.display());
}
