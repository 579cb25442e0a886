//! `wardbox records …` against a running agent and the real engine (tier `model_`): a folder
//! with a good FHIR Bundle, a note and a broken file is imported (the bad file is named and
//! skipped, the rest goes in), a second import changes nothing, grants name real accounts and
//! patients, and the audit trail records the import as counts only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod model_support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use model_support::{MINILM, SMOLLM2, engine_config};
use wardbox::config::Config;
use wardbox::stages::engine;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wardbox(args: &[&str], config: &Path, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(args)
        .args(["-c", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_records_import_skips_bad_files_is_idempotent_and_grants_check_names() {
    let cfg = engine_config(&[SMOLLM2, MINILM], 2);
    let (handle, _) = engine::start(&cfg).await.expect("the engine's readiness gate");
    let engine = handle.expect("engine");

    // A dev box whose engine is the one above, run by someone else (only probed).
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("box");
    let mut config = Config::dev_defaults(&base);
    let listen: SocketAddr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.web.listen = listen;
    config.engine.endpoint = cfg.endpoint.clone();
    config.clinical.demo_records = false;
    std::fs::create_dir_all(&base).unwrap();
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["serve", "-c", config_path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "the agent did not serve within 90 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    let files = dir.path().join("incoming");
    std::fs::create_dir_all(&files).unwrap();
    let corpus = wardbox_rag::synth::corpus();
    let bundle = corpus.docs.iter().find(|d| d.name == "castellanos-record.json").expect("bundle");
    std::fs::write(files.join("castellanos-record.json"), &bundle.bytes).unwrap();
    std::fs::write(files.join("broken.json"), b"{ not json").unwrap();
    let import = |extra: &[&str]| {
        let mut args = vec!["records", "import"];
        args.extend_from_slice(extra);
        args.push(files.to_str().unwrap());
        wardbox(&args, &config_path, "")
    };
    let first = import(&[]);
    let out = text(&first);
    assert_eq!(first.status.code(), Some(1), "a skipped file makes the exit status 1: {out}");
    assert!(out.contains("SKIPPED") && out.contains("broken.json: not valid JSON"), "{out}");
    assert!(out.contains("imported") && out.contains("castellanos-record.json") && out.contains("1 imported"), "{out}");
    // The operator sees what de-identification replaced in the Bundle (counts by kind).
    assert!(out.contains("replaced ") && out.contains(" name"), "{out}");
    std::fs::remove_file(files.join("broken.json")).unwrap();
    let again = import(&[]);
    assert!(again.status.success() && text(&again).contains("0 imported") && text(&again).contains("1 already there"), "{}", text(&again));

    // A note for the same patient, by record id.
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("phone-call.txt"), b"S: Daughter called; patient dizzy since Monday.\nP: Review lisinopril dose.").unwrap();
    let note = wardbox(&["records", "import", "--patient", "00451234", notes.to_str().unwrap()], &config_path, "");
    assert!(note.status.success(), "{}", text(&note));
    let status = wardbox(&["records", "status"], &config_path, "");
    assert!(text(&status).contains("1 patients, 2 documents"), "{}", text(&status));

    // Grants name an existing account and an indexed patient.
    let nobody = wardbox(&["records", "grant", "--username", "dr.nobody", "--patient", "00451234"], &config_path, "");
    assert!(!nobody.status.success() && text(&nobody).contains("no account"), "{}", text(&nobody));
    let add = wardbox(&["users", "add", "--username", "dr.a", "--display-name", "Dr A", "--role", "clinician"], &config_path, "correct horse battery staple\n");
    assert!(add.status.success(), "{}", text(&add));
    let unknown = wardbox(&["records", "grant", "--username", "dr.a", "--patient", "99999999"], &config_path, "");
    assert!(!unknown.status.success() && text(&unknown).contains("no patient with the record id"), "{}", text(&unknown));
    let granted = wardbox(&["records", "grant", "--username", "dr.a", "--patient", "00451234"], &config_path, "");
    assert!(granted.status.success(), "{}", text(&granted));
    let revoked = wardbox(&["records", "revoke", "--username", "dr.a", "--patient", "00451234"], &config_path, "");
    assert!(revoked.status.success(), "{}", text(&revoked));
    let twice = wardbox(&["records", "revoke", "--username", "dr.a", "--patient", "00451234"], &config_path, "");
    assert!(!twice.status.success() && text(&twice).contains("nothing was changed"), "{}", text(&twice));

    // The trail has the imports as counts; no file name, no record id.
    let month = jiff::Timestamp::now().strftime("%Y-%m").to_string();
    let export = dir.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let exported = wardbox(&["audit", "export", "--month", &month, "--out", export.to_str().unwrap()], &config_path, "");
    assert!(exported.status.success(), "{}", text(&exported));
    let mut trail = String::new();
    let gz = std::fs::File::open(export.join(format!("audit-{month}.jsonl.gz"))).unwrap();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut trail).unwrap();
    assert!(trail.contains("records_import") && trail.contains("records_grant") && trail.contains("records_revoke"), "{trail}");
    // (Each record's detail is a JSON string inside the exported line, hence the escapes.)
    assert!(trail.contains(r#"\"identifiers_replaced\":{\""#) && trail.contains(r#"\"NAME\":"#), "the import's replacement counts are kept: {trail}");
    assert!(!trail.contains("castellanos") && !trail.contains("00451234") && !trail.contains("phone-call"), "{trail}");

    engine.shutdown().await;
}

/// `wardbox dev` chooses its engine's port when it starts; the operator command must find that
/// engine through the same configuration file as on the appliance.
#[test]
fn model_records_import_reaches_the_engine_a_dev_box_chose_at_run_time() {
    let (binary, store) = (model_support::engine_binary(), model_support::store_dir(&[SMOLLM2, MINILM]));
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("box");
    // The dev configuration as `wardbox dev` writes it (no [engine] endpoint), without the demo
    // records so the engine is free for this import.
    let mut config = Config::dev_defaults(&base);
    config.clinical.demo_records = false;
    assert!(config.engine.endpoint.is_none());
    std::fs::create_dir_all(&base).unwrap();
    let config_path = base.join("wardbox.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).unwrap()).unwrap();
    let listen: SocketAddr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["dev", "--base", base.to_str().unwrap(), "--listen", &listen.to_string()])
            .env("WARDBOX_ENGINE_BIN", &binary)
            .env("WARDBOX_MODEL_STORE", &store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The agent publishes its engine once the engine stage passed.
    let published = wardbox::daemon::engine_file(&config.state_dir);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !(published.exists() && TcpStream::connect(listen).is_ok()) {
        assert!(Instant::now() < deadline, "the dev agent did not serve with its engine within 180 s ({} missing)", published.display());
        std::thread::sleep(Duration::from_millis(200));
    }
    let files = dir.path().join("incoming");
    std::fs::create_dir_all(&files).unwrap();
    let corpus = wardbox_rag::synth::corpus();
    let bundle = corpus.docs.iter().find(|d| d.name == "castellanos-record.json").expect("bundle");
    std::fs::write(files.join("castellanos-record.json"), &bundle.bytes).unwrap();
    let import = wardbox(&["records", "import", files.to_str().unwrap()], &config_path, "");
    assert!(import.status.success() && text(&import).contains("1 imported"), "{}", text(&import));
    let status = wardbox(&["records", "status"], &config_path, "");
    assert!(text(&status).contains("1 patients, 1 documents"), "{}", text(&status));
}
