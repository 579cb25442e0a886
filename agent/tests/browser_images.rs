//! Medical images on the patient's page in a real headless Chromium, driven through
//! chromedriver over WebDriver, against the real TLS listener, the real de-identification and
//! a real store: a clinician picks a DICOM file and a JPEG photo in one upload, sees both
//! listed as added and shown (the browser loads the rendered PNG and the cleaned photo, and
//! what it is served carries no identifier), then uploads another patient's DICOM and sees it
//! refused with nothing added, then a 60-slice series, which the page sends in uploads within
//! the server's limits. Screenshots go to `$CARGO_TARGET_TMPDIR/browser-artifacts/`.
//!
//! The files are the committed fixtures of `wardbox-images` (made with pydicom and Pillow by
//! its `generate.py`, identifiers in standard tags, sequences, private tags and photo
//! metadata). The record system is a test back end that knows the fixtures' two patients.
//!
//! Tier `browser_`: needs Debian `chromium` and `chromium-driver`; fails naming them if absent.

mod browser_support;
mod web_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use browser_support::*;
use fantoccini::{Client, Locator};
use tokio::sync::mpsc;
use wardbox::web::clinical::{
    AnswerEvent, Clinical, ClinicalError, Document, ModelInfo, PatientSummary, RecordIdentity, TaskKind, Uploaded, Viewer,
};
use wardbox::web::{Role, WebConfig};
use web_support::*;

fn fixture(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/tests/fixtures").join(name);
    assert!(path.is_file(), "fixture {} is missing", path.display());
    path
}

/// Every identifying string the fixtures carry.
fn identifiers() -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("identifiers.json")).expect("read")).expect("json");
    manifest["identifiers"].as_array().expect("list").iter().map(|v| v.as_str().expect("string").to_owned()).collect()
}

fn assert_no_identifier(bytes: &[u8], what: &str) {
    for id in identifiers() {
        assert!(!bytes.windows(id.len()).any(|w| w == id.as_bytes()), "{what} still carries {id:?}");
    }
}

/// The record system: the fixtures' patients A and B, as a record knows them.
#[derive(Debug)]
struct Records;

impl Clinical for Records {
    fn patients(&self, _v: &Viewer, _q: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Ok(vec![PatientSummary { id: "p-a".into(), display: "Alberta Quill Testperson, 1961-04-12".into() }])
    }
    fn patient(&self, _v: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError> {
        match id {
            "p-a" => Ok(PatientSummary { id: id.into(), display: "Alberta Quill Testperson, 1961-04-12".into() }),
            _ => Err(ClinicalError::UnknownPatient),
        }
    }
    fn patient_identity(&self, v: &Viewer, id: &str) -> Result<RecordIdentity, ClinicalError> {
        self.patient(v, id)?;
        Ok(RecordIdentity {
            record_ids: vec!["PID-7734-A".into()],
            name: Some("Alberta Quill Testperson".into()),
            birth_date: Some("1961-04-12".into()),
        })
    }
    fn document(&self, _v: &Viewer, _p: &str, _d: &str) -> Result<Document, ClinicalError> {
        Err(ClinicalError::UnknownDocument)
    }
    fn run(&self, _v: &Viewer, _p: &str, _t: TaskKind, _text: &str) -> Result<mpsc::Receiver<AnswerEvent>, ClinicalError> {
        Err(ClinicalError::Unavailable("no engine in this test".into()))
    }
    fn upload(&self, _v: &Viewer, _p: &str, _f: &str, _c: &str, _b: Vec<u8>) -> Result<Uploaded, ClinicalError> {
        Err(ClinicalError::Unavailable("no index in this test".into()))
    }
    fn models(&self) -> Result<Vec<ModelInfo>, ClinicalError> {
        Ok(vec![])
    }
}

/// Picks `files` in the image form and uploads them; waits for the result list.
async fn upload(c: &Client, files: &[PathBuf], shot_on_failure: &str) -> Vec<String> {
    let paths: Vec<String> = files.iter().map(|p| p.to_str().expect("utf8").to_owned()).collect();
    c.find(Locator::Id("image-file")).await.expect("file field").send_keys(&paths.join("\n")).await.expect("pick the files");
    c.find(Locator::Css("#image-form button")).await.expect("upload button").click().await.expect("click");
    let wanted = files.len();
    for _ in 0..150 {
        let items = c.find_all(Locator::Css("#image-results li")).await.expect("results");
        if items.len() == wanted {
            let mut out = Vec::new();
            for li in items {
                out.push(li.text().await.expect("text"));
            }
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(c, shot_on_failure).await;
    let status = c.find(Locator::Id("image-status")).await.expect("status").text().await.expect("text");
    panic!("no result list for {wanted} files within 15 s; the page says {status:?}");
}

/// Scrolls the result list into view for the screenshot.
async fn show_results(c: &Client) {
    c.execute("document.getElementById('image-results').scrollIntoView({ block: 'end' });", vec![]).await.expect("scroll");
}

/// The bytes the browser is served at `src` (fetched in the page, with its session).
async fn served(c: &Client, src: &str) -> Vec<u8> {
    let script = "const done = arguments[arguments.length - 1];
        fetch(arguments[0], { credentials: 'same-origin' }).then(r => r.arrayBuffer()).then(b => done(Array.from(new Uint8Array(b))));";
    let bytes = c.execute_async(script, vec![serde_json::json!(src)]).await.expect("fetch in the page");
    bytes.as_array().expect("bytes").iter().map(|b| u8::try_from(b.as_u64().expect("byte")).expect("byte")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_clinician_uploads_a_dicom_and_a_photo_sees_both_and_another_patients_dicom_refused() {
    let driver = start_driver();
    let h = Harness::with_real_clock(WebConfig::default(), Some(Arc::new(Records)));
    h.add_user("dr.a", Role::Clinician, false);
    let server = serve(&h, h.dir.path()).await;
    let base = server.base.clone();
    let profile = tempfile::tempdir().expect("profile");
    let c = browser(&driver, profile.path()).await;

    sign_in_as(&c, &base, "dr.a").await;
    let link = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::LinkText("Alberta Quill Testperson, 1961-04-12"))
        .await
        .expect("the patient list");
    link.click().await.expect("pick the patient");
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("image-form")).await.expect("the image form");
    let none = c.find(Locator::Id("image-list")).await.expect("list").text().await.expect("text");
    assert!(none.contains("No images yet"), "{none}");

    // Patient A's CT and a wound photo, in one upload.
    let results = upload(&c, &[fixture("ct_explicit_le.dcm"), fixture("photo_exif.jpg")], "images-upload-FAILED.png").await;
    assert!(results[0].starts_with("ct_explicit_le.dcm: added as image 1 (DICOM CT; ") && results[0].contains("UIDs remapped"), "{results:?}");
    assert!(results[1].starts_with("photo_exif.jpg: added as image 2 (photo; "), "{results:?}");
    let status = c.find(Locator::Id("image-status")).await.expect("status").text().await.expect("text");
    assert_eq!(status, "2 of 2 added.");
    // Both shown at once, loaded by the browser: the CT as its 64x64 render.
    let shown = c
        .execute(
            "return Array.from(document.querySelectorAll('#image-list img')).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth, i.naturalHeight]);",
            vec![],
        )
        .await
        .expect("images");
    let mut loaded = Vec::new();
    for _ in 0..50 {
        loaded = c
            .execute("return Array.from(document.querySelectorAll('#image-list img')).map(i => i.complete ? i.naturalWidth : 0);", vec![])
            .await
            .expect("images")
            .as_array()
            .expect("list")
            .iter()
            .map(|w| w.as_u64().unwrap_or(0))
            .collect::<Vec<_>>();
        if loaded.len() == 2 && loaded.iter().all(|w| *w > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(loaded.len(), 2, "two images on the page: {shown}");
    assert!(loaded.iter().all(|w| *w > 0), "an image did not load: {loaded:?} {shown}");
    assert_eq!(loaded[1], 64, "the CT's render is 64 pixels wide: {shown}");
    let caption = c.find(Locator::Css("#image-1 figcaption")).await.expect("caption").text().await.expect("text");
    assert!(caption.starts_with("CT, DICOM, 64×64"), "{caption}");
    show_results(&c).await;
    screenshot(&c, "images-uploaded.png").await;

    // What the browser is shown is the de-identified render and the cleaned photo.
    let png = served(&c, "/patients/p-a/images/1").await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_no_identifier(&png, "the CT's render as served");
    let jpeg = served(&c, "/patients/p-a/images/2").await;
    assert_eq!(&jpeg[..2], b"\xff\xd8");
    assert_ne!(jpeg, std::fs::read(fixture("photo_exif.jpg")).expect("read"));
    assert_no_identifier(&jpeg, "the photo as served");

    // Patient B's MR uploaded to patient A: refused, said so, nothing added.
    let results = upload(&c, &[fixture("mr_jpeg_baseline.dcm")], "images-refusal-FAILED.png").await;
    assert!(results[0].starts_with("mr_jpeg_baseline.dcm: This DICOM file names another patient"), "{results:?}");
    let refused = c.find(Locator::Css("#image-results li.error")).await.expect("the refusal, marked").text().await.expect("text");
    assert!(refused.contains("patient ID differs"), "{refused}");
    let status = c.find(Locator::Id("image-status")).await.expect("status").text().await.expect("text");
    assert_eq!(status, "0 of 1 added, 1 refused.");
    show_results(&c).await;
    screenshot(&c, "images-refused.png").await;
    // After a reload the page lists the two images only.
    c.refresh().await.expect("reload");
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("image-form")).await.expect("the image form");
    assert_eq!(c.find_all(Locator::Css("#image-list figure")).await.expect("figures").len(), 2);
    assert_eq!(h.audit_records().iter().filter(|r| r.detail.contains(r#""action":"upload_image_refused""#)).count(), 1);

    // A series longer than one upload takes (60 slices of patient A, each file distinct): the
    // page sends it in uploads within the limits and lists every file's outcome.
    let series = tempfile::tempdir().expect("series dir");
    let slice = std::fs::read(fixture("ct_explicit_le.dcm")).expect("read");
    let slices: Vec<PathBuf> = (0..60u8)
        .map(|i| {
            let mut bytes = slice.clone();
            // Never the fixture itself (a non-zero change), each slice different.
            *bytes.last_mut().expect("pixels") ^= 0x80 | i;
            let path = series.path().join(format!("slice{i:02}.dcm"));
            std::fs::write(&path, bytes).expect("write");
            path
        })
        .collect();
    let results = upload(&c, &slices, "images-series-FAILED.png").await;
    assert!(results.iter().all(|r| r.contains(": added as image ")), "{results:?}");
    assert!(results[59].starts_with("slice59.dcm: added as image "), "{results:?}");
    let status = c.find(Locator::Id("image-status")).await.expect("status").text().await.expect("text");
    assert_eq!(status, "60 of 60 added.");
    assert_eq!(c.find_all(Locator::Css("#image-list figure")).await.expect("figures").len(), 62);
    let uploads = h.audit_records().iter().filter(|r| r.detail.contains(r#""action":"upload_image""#)).count();
    assert_eq!(uploads, 62, "one audit record per file");

    c.close().await.expect("close");
    server.shutdown().await;
}
