//! `wardbox records import` on a running dev box without an engine (the real binary, a real
//! store): a record id that is not in the index is refused, naming it and the flag that
//! declares a new patient, and nothing is stored; with the flag, the import gets as far as the
//! engine and says plainly that the running agent has none. Images need no engine: DICOM files
//! and photos (the committed fixtures of `wardbox-images`) are filed de-identified under the
//! patient, and a DICOM naming another patient, or nobody, is refused, as on the patient's page.

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

/// A dev box under `dir/box`, serving, without an engine: (the agent, its configuration file).
fn dev_box_without_engine(dir: &Path) -> (Agent, std::path::PathBuf) {
    let base = dir.join("box");
    let addr = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
            .env("WARDBOX_ENGINE_BIN", dir.join("no-engine-here"))
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
    (agent, base.join("wardbox.toml"))
}

#[test]
fn importing_to_an_unknown_patient_needs_new_patient_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No engine on purpose: this test is about what happens before anything is embedded.
    let (_agent, config) = dev_box_without_engine(dir.path());
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

fn fixture(name: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/tests/fixtures").join(name);
    assert!(path.is_file(), "fixture {} is missing", path.display());
    path
}

/// Every identifying string the image fixtures carry.
fn identifiers() -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("identifiers.json")).expect("read")).expect("identifiers.json");
    manifest["identifiers"].as_array().expect("list").iter().map(|v| v.as_str().expect("string").to_owned()).collect()
}

fn carries(bytes: &[u8], id: &str) -> bool {
    bytes.windows(id.len()).any(|w| w == id.as_bytes())
}

/// The dev box's store, opened beside the running agent with its dev key.
fn dev_store(config: &Path) -> wardbox::store::Store {
    let base = config.parent().expect("base");
    let key = wardbox::store::StoreKey::from_hex(std::fs::read_to_string(base.join("state/dev-store.key")).expect("dev key").trim()).expect("key");
    wardbox::store::Store::open_existing(&base.join("data/wardbox.db"), &key).expect("open the store")
}

/// A stored image row: (kind, de-identified DICOM, render, who filed it).
type StoredImage = (String, Option<Vec<u8>>, Vec<u8>, String);

#[test]
fn importing_images_files_them_deidentified_and_refuses_another_patients_or_nobodys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, config) = dev_box_without_engine(dir.path());
    let (ct1, ct2, photo) = (fixture("ct_explicit_le.dcm"), fixture("ct_implicit_le.dcm"), fixture("photo_exif.jpg"));
    let path = |p: &std::path::PathBuf| p.to_str().expect("utf8").to_owned();

    // Patient A's two CTs and a photo, under A's record id, declared new: filed, no engine needed.
    let first = wardbox(&["records", "import", "--patient", "PID-7734-A", "--new-patient", &path(&ct1), &path(&ct2), &path(&photo)], &config);
    let out = text(&first);
    assert_eq!(first.status.code(), Some(0), "{out}");
    assert!(out.contains(&format!("[1/3] filed {} as image 1 (DICOM CT; ", ct1.display())) && out.contains("UIDs remapped"), "{out}");
    assert!(out.contains(&format!("[3/3] filed {} as image 3 (photo; ", photo.display())), "{out}");
    assert!(out.contains("3 images filed, 0 already there, 0 refused"), "{out}");
    // The same files again change nothing.
    let again = wardbox(&["records", "import", "--patient", "PID-7734-A", &path(&ct1)], &config);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("already filed") && text(&again).contains("(image 1)"), "{}", text(&again));

    // Patient B's MR to patient A: refused, as the upload refuses it. So is a header naming
    // nobody (a file already de-identified elsewhere), a file named .dcm that is none, and an
    // image without a patient to file it under.
    let nobody = dir.path().join("anonymous.dcm");
    let params = wardbox_images::deid::DeidParams {
        key: &wardbox_images::deid::DeidKey::from_bytes([7; 32]),
        patient_key: "elsewhere",
        date_offset_days: -30,
    };
    let anonymous = wardbox_images::deid::deidentify(&std::fs::read(&ct1).expect("read"), &params).expect("de-identify").file;
    std::fs::write(&nobody, anonymous).expect("write");
    let fake = dir.path().join("scan.dcm");
    std::fs::write(&fake, b"Patient seen today.").expect("write");
    let refused = wardbox(&["records", "import", "--patient", "PID-7734-A", &path(&fixture("mr_jpeg_baseline.dcm")), &path(&nobody), &path(&fake)], &config);
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(out.contains("SKIPPED") && out.contains("names another patient (its patient ID differs"), "{out}");
    assert!(out.contains("names no patient that can be compared with this record"), "{out}");
    assert!(out.contains(&format!("SKIPPED {}: This file cannot be added as an image", fake.display())), "{out}");
    assert!(out.contains("0 images filed, 0 already there, 3 refused"), "{out}");
    let unowned = wardbox(&["records", "import", &path(&photo)], &config);
    assert_eq!(unowned.status.code(), Some(1), "{}", text(&unowned));
    assert!(text(&unowned).contains("name the patient with --patient"), "{}", text(&unowned));

    // In the store: the three images of A, de-identified, the two CTs still one study; in the
    // audit chain the same records as the upload writes, with no identifier and no file name.
    let store = dev_store(&config);
    let mut stmt = store.conn().prepare("SELECT kind, dicom, render, uploaded_by FROM images ORDER BY id").expect("prepare");
    let rows: Vec<StoredImage> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).expect("query").collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["dicom", "dicom", "photo"]);
    assert!(rows.iter().all(|r| r.3.starts_with("cli:")), "filed by the console's operator");
    for id in identifiers() {
        for (_, dicom, render, _) in &rows {
            assert!(!carries(dicom.as_deref().unwrap_or_default(), &id) && !carries(render, &id), "a stored image carries {id:?}");
        }
    }
    let mut stmt = store.conn().prepare("SELECT detail FROM audit ORDER BY seq").expect("prepare");
    let details: Vec<String> = stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows");
    let of = |action: &str| details.iter().filter(|d| d.contains(&format!(r#""action":"{action}""#))).cloned().collect::<Vec<_>>();
    let (filed, refusals) = (of("upload_image"), of("upload_image_refused"));
    assert_eq!((filed.len(), refusals.len()), (4, 3), "three filed, one already there, three refused");
    assert!(refusals[0].contains(r#""reason":"other_patient""#) && refusals[1].contains(r#""reason":"no_identity""#), "{refusals:?}");
    assert!(refusals[2].contains(r#""reason":"not_an_image""#), "{refusals:?}");
    assert!(filed[0].contains(r#""uids_remapped":"#) && filed[0].contains(r#""modality":"CT""#), "{}", filed[0]);
    let summaries = of("records_import");
    assert!(summaries[0].contains(r#""filed":3"#), "{}", summaries[0]);
    for d in details.iter().filter(|d| d.contains("image")) {
        for id in identifiers() {
            assert!(!d.contains(&id), "an audit record carries {id:?}: {d}");
        }
        assert!(!d.contains(".dcm") && !d.contains(".jpg"), "a file name reached the audit chain: {d}");
    }
}
