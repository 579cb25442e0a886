//! The load test: clinicians at once against a real agent over TLS.
//!
//! It starts `wardbox dev` (the dev profile: the real store, audit chain, engine and bundled
//! small model, the synthetic demo records) with the local CA's TLS on a free loopback port,
//! adds the accounts with `wardbox users add`, then runs goose: each clinician signs in, lists
//! the patients, opens one, searches, asks a question about the patient (the answer streams
//! from the model) and now and then uploads a short note; one administrator browses the audit
//! trail. At the end it prints goose's report, the time to the first token and to the full
//! answer, the agent's and the engine's memory at start and end, and stops the agent and
//! verifies the audit chain.
//!
//! Environment:
//!   WARDBOX_BIN          the agent binary (required)
//!   WARDBOX_ENGINE_BIN   the engine binary (required unless beside WARDBOX_BIN)
//!   LOAD_SECONDS         run time (default 60)
//!   LOAD_CLINICIANS      clinicians at once (default 15)
//!   LOAD_REPORT          goose's HTML report file (optional)
//!   LOAD_AGENT_LOG       where to keep the agent's log (optional)
//!   LOAD_ASK             0: no questions to the model (the rest of the mix only; default 1)
//!
//! It exits 1 when a request failed other than a 503 with Retry-After (a full queue, which the
//! UI documents), when no answer completed, or when the audit chain does not verify.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use goose::prelude::*;

const PASSWORD: &str = "load test password 1";

/// What every user needs to know about the running agent.
struct Target {
    ca_pem: Vec<u8>,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Clinician accounts are handed out in order as goose starts the users.
static NEXT_CLINICIAN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Times measured inside the ask transaction (goose times the whole transaction; these split
/// it at the first token).
#[derive(Default)]
struct AnswerTimes {
    first_token: Vec<Duration>,
    full_answer: Vec<Duration>,
    failed_answers: Vec<String>,
    busy_503: u64,
    unexpected: Vec<String>,
}

static TIMES: OnceLock<Mutex<AnswerTimes>> = OnceLock::new();

fn times() -> std::sync::MutexGuard<'static, AnswerTimes> {
    TIMES.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A user's session: its CSRF token and the patients it may open.
#[derive(Clone)]
struct Session {
    csrf: String,
    patients: Vec<String>,
    next: usize,
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

/// The text between `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// Record a failed request that is not a documented full-queue 503.
fn unexpected(what: String) {
    times().unexpected.push(what);
}

/// Each user gets its own client (cookie jar) that trusts the box's local CA and connects from
/// its own loopback address (`from`), as each clinician has a workstation of their own: the
/// agent throttles sign-ins and caps connections per client address.
async fn client_for(user: &mut GooseUser, from: std::net::Ipv4Addr) -> TransactionResult {
    let target = TARGET.get().expect("target set before the attack");
    let ca = reqwest::Certificate::from_pem(&target.ca_pem).expect("the local CA's certificate");
    let builder = reqwest::Client::builder()
        .cookie_store(true)
        .add_root_certificate(ca)
        .local_address(std::net::IpAddr::V4(from))
        .timeout(Duration::from_secs(300));
    user.set_client_builder(builder).await?;
    Ok(())
}

/// GET /login for the form's token, then POST it with the user's name.
async fn sign_in(user: &mut GooseUser, username: &str, from: std::net::Ipv4Addr) -> TransactionResult {
    client_for(user, from).await?;
    let mut page = user.get("/login").await?;
    let html = match page.response {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => {
            unexpected(format!("GET /login: {e}"));
            return Ok(());
        }
    };
    let Some(csrf) = between(&html, "name=\"csrf\" value=\"", "\"").map(str::to_string) else {
        return user.set_failure("the sign-in page has no token", &mut page.request, None, Some(&html));
    };
    let form = [("username", username), ("password", PASSWORD), ("csrf", csrf.as_str())];
    let mut done = user.post_form("/login", &form).await?;
    let ok = done.response.as_ref().map(|r| r.status().is_success() || r.status().is_redirection()).unwrap_or(false);
    if !ok {
        unexpected(format!("sign-in of {username} failed"));
        return user.set_failure("sign-in failed", &mut done.request, None, None);
    }
    Ok(())
}

/// Sign in as the next clinician account and read the patient list and the CSRF token.
async fn clinician_start(user: &mut GooseUser) -> TransactionResult {
    let number = NEXT_CLINICIAN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let username = format!("clin{number:02}");
    sign_in(user, &username, std::net::Ipv4Addr::new(127, 0, 1, number as u8)).await?;
    let list = user.get_named("/patients", "patients").await?;
    let html = match list.response {
        Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
        Ok(r) => {
            unexpected(format!("GET /patients: {}", r.status()));
            return Ok(());
        }
        Err(e) => {
            unexpected(format!("GET /patients: {e}"));
            return Ok(());
        }
    };
    let csrf = between(&html, "data-csrf=\"", "\"").unwrap_or_default().to_string();
    let patients: Vec<String> =
        html.split("href=\"/patients/").skip(1).filter_map(|s| s.split('"').next()).filter(|s| !s.contains('/')).map(str::to_string).collect();
    if patients.is_empty() || csrf.is_empty() {
        unexpected(format!("{username}: no patients or no CSRF token on /patients"));
    }
    user.set_session_data(Session { csrf, patients, next: number });
    Ok(())
}

/// The patient this user works on next (round robin over the list).
fn next_patient(user: &mut GooseUser) -> Option<(String, String)> {
    let s = user.get_session_data_mut::<Session>()?;
    if s.patients.is_empty() {
        return None;
    }
    s.next = (s.next + 1) % s.patients.len();
    Some((s.patients[s.next].clone(), s.csrf.clone()))
}

async fn check(user: &mut GooseUser, path: &str, name: &str) -> TransactionResult {
    let r = user.get_named(path, name).await?;
    match &r.response {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) => unexpected(format!("GET {name}: {}", resp.status())),
        Err(e) => unexpected(format!("GET {name}: {e}")),
    }
    Ok(())
}

async fn open_patient(user: &mut GooseUser) -> TransactionResult {
    let Some((id, _)) = next_patient(user) else { return Ok(()) };
    check(user, &format!("/patients/{id}"), "patient").await
}

async fn search(user: &mut GooseUser) -> TransactionResult {
    check(user, "/patients?q=a", "search").await
}

/// POST a question and read the streamed answer to its end; the first `token` event is the
/// time to first token.
async fn ask(user: &mut GooseUser) -> TransactionResult {
    let Some((id, csrf)) = next_patient(user) else { return Ok(()) };
    let path = format!("/patients/{id}/ask");
    let started = Instant::now();
    let request = user
        .get_request_builder(&GooseMethod::Post, &path)?
        .header("x-csrf-token", csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=What+medications+is+the+patient+on%3F");
    let goose_request = GooseRequest::builder().name("ask").set_request_builder(request).build();
    let answer = user.request(goose_request).await?;
    let mut response = match answer.response {
        Ok(r) => r,
        Err(e) => {
            unexpected(format!("POST ask: {e}"));
            return Ok(());
        }
    };
    if response.status().as_u16() == 503 && response.headers().contains_key("retry-after") {
        times().busy_503 += 1;
        return Ok(());
    }
    if !response.status().is_success() {
        unexpected(format!("POST ask: {}", response.status()));
        return Ok(());
    }
    let mut text = String::new();
    let mut first_token = None;
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                text.push_str(&String::from_utf8_lossy(&bytes));
                if first_token.is_none() && text.contains("event: token") {
                    first_token = Some(started.elapsed());
                }
            }
            Ok(None) => break,
            Err(e) => {
                unexpected(format!("ask stream: {e}"));
                return Ok(());
            }
        }
    }
    let full = started.elapsed();
    let mut t = times();
    if text.contains("event: done") {
        t.first_token.extend(first_token);
        t.full_answer.push(full);
    } else {
        let tail: String = text.chars().rev().take(200).collect::<Vec<_>>().into_iter().rev().collect();
        t.failed_answers.push(tail);
    }
    Ok(())
}

/// Upload notes written so far, so each note differs (a clinician does not upload the same
/// note twice).
static NOTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A short note as a Markdown upload (multipart/form-data, the CSRF token in the header).
async fn upload(user: &mut GooseUser) -> TransactionResult {
    let Some((id, csrf)) = next_patient(user) else { return Ok(()) };
    let note = NOTES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let boundary = "wardboxloadboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"visit-note-{note}.md\"\r\nContent-Type: text/markdown\r\n\r\n# Visit note {note}\n\nFollow-up visit. Blood pressure {}/82. Continue current treatment; review in 3 months.\n\r\n--{boundary}--\r\n",
        110 + note % 40
    );
    let request = user
        .get_request_builder(&GooseMethod::Post, &format!("/patients/{id}/upload"))?
        .header("x-csrf-token", csrf)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body);
    let r = user.request(GooseRequest::builder().name("upload").set_request_builder(request).build()).await?;
    match &r.response {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) if resp.status().as_u16() == 503 && resp.headers().contains_key("retry-after") => times().busy_503 += 1,
        Ok(resp) => unexpected(format!("POST upload: {}", resp.status())),
        Err(e) => unexpected(format!("POST upload: {e}")),
    }
    Ok(())
}

async fn admin_start(user: &mut GooseUser) -> TransactionResult {
    sign_in(user, "loadadmin", std::net::Ipv4Addr::new(127, 0, 2, 1)).await
}

async fn audit_trail(user: &mut GooseUser) -> TransactionResult {
    check(user, "/admin/audit", "audit trail").await
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The engine process the agent supervises (a child named wardbox-engine).
fn engine_pid(agent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == agent && comm.ends_with("(wardbox-engine")).then_some(pid)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(bin: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(format!("wardbox {}: {}\n{text}", args.join(" "), out.status)) }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
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

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> ExitCode {
    match load().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::from(2)
        }
    }
}

async fn load() -> Result<bool, String> {
    let bin = PathBuf::from(std::env::var_os("WARDBOX_BIN").ok_or("set WARDBOX_BIN to the wardbox binary")?);
    let seconds = env_num("LOAD_SECONDS", 60);
    let clinicians = env_num("LOAD_CLINICIANS", 15).clamp(1, 250);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let base = dir.path().join("box");
    let base_s = base.to_str().ok_or("temporary path is not UTF-8")?.to_string();
    let config_path = base.join("wardbox.toml");
    let config_s = config_path.to_str().ok_or("path")?.to_string();
    let addr = free_port();

    // The dev configuration, switched to the local CA's TLS: what the workstations would use.
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    let defaults = run(&bin, &["config", "defaults", "--base", &base_s], None)?;
    let mut config: toml::Table = defaults.parse().map_err(|e| format!("the default configuration: {e}"))?;
    let web = config.get_mut("web").and_then(|w| w.as_table_mut()).ok_or("no [web] in the defaults")?;
    web.insert("tls".into(), "local-ca".into());
    web.insert("listen".into(), addr.to_string().into());
    web.insert("hostnames".into(), toml::Value::Array(vec!["127.0.0.1".into(), "localhost".into()]));
    std::fs::write(&config_path, toml::to_string(&config).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;

    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = Command::new(&bin)
        .args(["dev", "--base", &base_s, "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut agent = Agent(child);
    let agent_pid = agent.0.id();

    // Up when /health answers over TLS and the demo records are indexed (the agent logs it).
    let ca_path = base.join("state/tls/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(600);
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            return Err(format!("the agent exited with {status}:\n{}", log_text()));
        }
        let text = log_text();
        if ca_path.exists() && (text.contains("synthetic demo records") || text.contains("demo records not indexed")) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the agent was not ready within 600 s:\n{text}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = log_text();
    if !text.contains("indexed") || text.contains("demo records not indexed") || text.contains("without an engine") {
        return Err(format!("the agent runs without its engine or demo records; this test needs both:\n{text}"));
    }
    for i in 1..=clinicians {
        let name = format!("clin{i:02}");
        run(&bin, &["users", "add", "-c", &config_s, "--username", &name, "--display-name", &format!("Clinician {i}"), "--role", "clinician"], Some(PASSWORD))?;
    }
    run(&bin, &["users", "add", "-c", &config_s, "--username", "loadadmin", "--display-name", "Load Admin", "--role", "admin"], Some(PASSWORD))?;
    let ca_pem = std::fs::read(&ca_path).map_err(|e| e.to_string())?;
    let _ = TARGET.set(Target { ca_pem });
    let engine = engine_pid(agent_pid);
    let rss_start = (rss_mib(agent_pid), engine.and_then(rss_mib));

    let asking = std::env::var("LOAD_ASK").map_or(true, |v| v != "0");
    let mut clinician = scenario!("clinician")
        .set_weight(clinicians)
        .map_err(|e| e.to_string())?
        .register_transaction(transaction!(clinician_start).set_on_start().set_name("sign in"))
        .register_transaction(transaction!(open_patient).set_name("open patient").set_weight(3).map_err(|e| e.to_string())?)
        .register_transaction(transaction!(search).set_name("search").set_weight(2).map_err(|e| e.to_string())?)
        .register_transaction(transaction!(upload).set_name("upload").set_weight(1).map_err(|e| e.to_string())?);
    if asking {
        clinician = clinician.register_transaction(transaction!(ask).set_name("ask").set_weight(1).map_err(|e| e.to_string())?);
    }
    let clinician = clinician.set_wait_time(Duration::from_secs(1), Duration::from_secs(3)).map_err(|e| e.to_string())?;
    let attack = GooseAttack::initialize_with_config(Default::default())
        .map_err(|e| e.to_string())?
        .register_scenario(clinician)
        .register_scenario(
            scenario!("admin")
                .set_weight(1)
                .map_err(|e| e.to_string())?
                .register_transaction(transaction!(admin_start).set_on_start().set_name("admin sign in"))
                .register_transaction(transaction!(audit_trail).set_name("audit trail"))
                .set_wait_time(Duration::from_secs(2), Duration::from_secs(5))
                .map_err(|e| e.to_string())?,
        )
        .set_default(GooseDefault::Host, format!("https://127.0.0.1:{}", addr.port()).as_str())
        .and_then(|a| a.set_default(GooseDefault::Users, clinicians + 1))
        .and_then(|a| a.set_default(GooseDefault::IncreaseRate, format!("{}", clinicians + 1).as_str()))
        .and_then(|a| a.set_default(GooseDefault::RunTime, seconds))
        .and_then(|a| a.set_default(GooseDefault::NoResetMetrics, true))
        .map_err(|e| e.to_string())?;
    let attack = match std::env::var("LOAD_REPORT") {
        Ok(file) => attack.set_default(GooseDefault::ReportFile, file.as_str()).map_err(|e| e.to_string())?,
        Err(_) => attack,
    };
    let started = Instant::now();
    let metrics = attack.execute().await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let rss_end = (rss_mib(agent_pid), engine.and_then(rss_mib));

    // Stop the agent, then verify the audit chain it wrote under load.
    drop(agent);
    let verified = run(&bin, &["audit", "verify", "-c", &config_s], None);

    let mut t = times();
    t.first_token.sort();
    t.full_answer.sort();
    println!("\n=== wardbox load: {clinicians} clinicians + 1 admin, {:.0} s over TLS", elapsed.as_secs_f64());
    println!(
        "answers: {} complete, {} failed in the stream, {} refused busy (503 + Retry-After)",
        t.full_answer.len(),
        t.failed_answers.len(),
        t.busy_503
    );
    println!(
        "time to first token: p50 {:.2} s, p95 {:.2} s; full answer: p50 {:.2} s, p95 {:.2} s",
        percentile(&t.first_token, 0.5).as_secs_f64(),
        percentile(&t.first_token, 0.95).as_secs_f64(),
        percentile(&t.full_answer, 0.5).as_secs_f64(),
        percentile(&t.full_answer, 0.95).as_secs_f64()
    );
    let mib = |v: Option<f64>| v.map_or("?".to_string(), |m| format!("{m:.0} MiB"));
    println!("agent RSS {} -> {}; engine RSS {} -> {}", mib(rss_start.0), mib(rss_end.0), mib(rss_start.1), mib(rss_end.1));
    println!("per request, ms (p50 / p95 / max):");
    for (key, r) in &metrics.requests {
        let mut buckets: Vec<(u64, usize)> = r.raw_data.times_us.iter().map(|(t, n)| (*t, *n)).collect();
        buckets.sort_unstable();
        let total: usize = buckets.iter().map(|(_, n)| n).sum();
        let at = |p: f64| {
            let rank = ((total as f64) * p).ceil().max(1.0) as usize;
            let mut seen = 0;
            buckets.iter().find(|(_, n)| {
                seen += n;
                seen >= rank
            }).map_or(0.0, |(t, _)| *t as f64 / 1000.0)
        };
        println!("  {key:<22} {:>5} requests  {:>9.0} / {:>9.0} / {:>9.0}", total, at(0.5), at(0.95), r.raw_data.maximum_time_us as f64 / 1000.0);
    }
    let goose_errors: usize = metrics.errors.values().map(|e| e.occurrences).sum();
    println!("goose request errors: {goose_errors}");
    for e in metrics.errors.values() {
        println!("  {} {}: {} x {}", e.method, e.name, e.occurrences, e.error);
    }
    for u in t.unexpected.iter().take(20) {
        println!("  unexpected: {u}");
    }
    for f in t.failed_answers.iter().take(5) {
        println!("  failed answer: ...{f}");
    }
    // The agent's own account of what went wrong (the records are synthetic: no PHI).
    let agent_log = log_text();
    for line in agent_log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).take(20) {
        println!("  agent: {line}");
    }
    if let Ok(keep) = std::env::var("LOAD_AGENT_LOG") {
        let _ = std::fs::write(keep, &agent_log);
    }
    match &verified {
        Ok(text) => println!("audit chain after the run: {}", text.lines().last().unwrap_or("verified")),
        Err(e) => println!("AUDIT CHAIN DOES NOT VERIFY: {e}"),
    }
    let ok = t.unexpected.is_empty() && t.failed_answers.is_empty() && (!asking || !t.full_answer.is_empty()) && verified.is_ok();
    println!("{}", if ok { "=== load: PASS" } else { "=== load: FAIL" });
    Ok(ok)
}
