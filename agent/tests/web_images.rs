//! Medical images on the patient's page, through the whole web stack (`web::app`, the guard,
//! a real SQLCipher store and audit chain) and the real de-identification (`wardbox-images`):
//! a DICOM file and a photo uploaded, filed de-identified, listed, shown (no-store, only to
//! users who may see the patient); a DICOM naming another patient, a DICOM in an unsupported
//! transfer syntax and a file that is not an image refused with nothing stored.
//!
//! The files are the DICOM and photo fixtures of `wardbox-images` (`agent/images/tests/fixtures`,
//! made with pydicom and Pillow by its `generate.py`), with identifiers written into standard
//! tags, nested sequences, private tags and photo metadata; `identifiers.json` lists them all.
//! The patient directory is a test back end that knows the fixtures' two patients the way a
//! record system would (record id, name, birth date).

mod web_support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use wardbox::store::Store;
use wardbox::web::clinical::{
    AnswerEvent, Clinical, ClinicalError, Document, ModelInfo, PatientSummary, RecordIdentity, TaskKind, Uploaded, Viewer,
};
use wardbox::web::{Role, WebConfig};
use web_support::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

/// Every identifying string the fixtures carry.
fn identifiers() -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_slice(&fixture("identifiers.json")).expect("identifiers.json");
    let list: Vec<String> = manifest["identifiers"].as_array().expect("list").iter().map(|v| v.as_str().expect("string").to_owned()).collect();
    assert!(list.len() > 20, "the fixtures' identifier list is incomplete");
    list
}

fn assert_no_identifier(bytes: &[u8], what: &str) {
    for id in identifiers() {
        assert!(!bytes.windows(id.len()).any(|w| w == id.as_bytes()), "{what} still carries {id:?}");
    }
}

/// The record system: patient A and B of the fixtures, as a record knows them, and patient C
/// known by nothing a header could match. `outsider` may see nobody.
#[derive(Debug)]
struct Records;

impl Records {
    fn reach(v: &Viewer, id: &str) -> Result<(), ClinicalError> {
        match id {
            _ if v.username == "outsider" => Err(ClinicalError::NotGranted),
            "p-a" | "p-b" | "p-c" => Ok(()),
            _ => Err(ClinicalError::UnknownPatient),
        }
    }
}

impl Clinical for Records {
    fn patients(&self, _v: &Viewer, _q: &str) -> Result<Vec<PatientSummary>, ClinicalError> {
        Ok(vec![])
    }
    fn patient(&self, v: &Viewer, id: &str) -> Result<PatientSummary, ClinicalError> {
        Self::reach(v, id)?;
        Ok(PatientSummary { id: id.into(), display: format!("Patient {id}") })
    }
    fn patient_identity(&self, v: &Viewer, id: &str) -> Result<RecordIdentity, ClinicalError> {
        Self::reach(v, id)?;
        Ok(match id {
            "p-a" => RecordIdentity {
                record_ids: vec!["MRN-0001".into(), "PID-7734-A".into()],
                name: Some("Alberta Quill Testperson".into()),
                birth_date: Some("1961-04-12".into()),
            },
            "p-b" => RecordIdentity { record_ids: vec!["PID-9921-B".into()], name: Some("Bertrand Examplar".into()), birth_date: Some("1979-09-30".into()) },
            // A patient the record knows by nothing a DICOM header carries.
            _ => RecordIdentity::default(),
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

/// A stored image row: (patient, kind, de-identified DICOM, render).
type StoredImage = (String, String, Option<Vec<u8>>, Vec<u8>);

struct Clinic {
    h: Harness,
    token: String,
    csrf: String,
}

impl Clinic {
    fn new() -> Self {
        let h = Harness::with(WebConfig::default(), Some(Arc::new(Records)));
        let user = h.add_user("drlee", Role::Clinician, false);
        let (token, csrf) = h.session(&user);
        Self { h, token, csrf }
    }

    async fn upload_as(&self, token: &str, csrf: &str, patient: &str, file_name: &str, bytes: &[u8]) -> (StatusCode, String) {
        let boundary = "XIMAGEBOUNDARYX";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = Request::post(format!("/patients/{patient}/images"))
            .header(header::COOKIE, format!("wb_session={token}"))
            .header("x-csrf-token", csrf)
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from(body))
            .expect("request");
        let resp = self.h.send(req).await;
        let status = resp.status();
        (status, body_text(resp).await)
    }

    async fn upload(&self, patient: &str, file_name: &str, bytes: &[u8]) -> (StatusCode, String) {
        self.upload_as(&self.token, &self.csrf, patient, file_name, bytes).await
    }

    /// (status, content type, cache control, body).
    async fn image(&self, token: &str, path: &str) -> (StatusCode, String, String, Vec<u8>) {
        let resp = self.h.send(get_with(path, token)).await;
        let hv = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let (ct, cc) = (hv(header::CONTENT_TYPE), hv(header::CACHE_CONTROL));
        let status = resp.status();
        (status, ct, cc, resp.into_body().collect().await.expect("body").to_bytes().to_vec())
    }

    async fn page(&self, patient: &str) -> String {
        let resp = self.h.send(get_with(&format!("/patients/{patient}"), &self.token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        body_text(resp).await
    }

    /// Every stored image row.
    fn stored(&self) -> Vec<StoredImage> {
        let store = Store::open_existing(&self.h.store_path, &self.h.key).expect("open");
        let mut stmt = store.conn().prepare("SELECT patient, kind, dicom, render FROM images ORDER BY id").expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).expect("query").collect::<Result<_, _>>().expect("rows")
    }

    fn audit_of(&self, action: &str) -> Vec<String> {
        let marker = format!(r#""action":"{action}""#);
        self.h.audit_records().into_iter().map(|r| r.detail).filter(|d| d.contains(&marker)).collect()
    }
}

#[tokio::test]
async fn a_dicom_is_filed_deidentified_listed_and_shown() {
    let c = Clinic::new();
    let original = fixture("ct_explicit_le.dcm");
    let (status, body) = c.upload("p-a", "Testperson_Alberta_chest.dcm", &original).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["kind"], "dicom");
    assert_eq!(reply["modality"], "CT");
    assert_eq!(reply["already_in_record"], false);
    assert!(reply["uids_remapped"].as_u64().expect("n") >= 3 && reply["attributes_removed"].as_u64().expect("n") >= 2, "{body}");
    let id = reply["image_id"].as_i64().expect("id");

    // Stored: the de-identified file and its render, none of the identifiers, not the file name.
    let stored = c.stored();
    assert_eq!(stored.len(), 1);
    let (patient, kind, dicom, render) = &stored[0];
    assert_eq!((patient.as_str(), kind.as_str()), ("p-a", "dicom"));
    let dicom = dicom.as_ref().expect("the de-identified DICOM is kept");
    assert_eq!(&dicom[128..132], b"DICM");
    assert_ne!(dicom, &original);
    assert_no_identifier(dicom, "the stored DICOM");
    assert_no_identifier(render, "the stored render");
    // The store file itself is encrypted: no DICOM or PNG structure readable in it.
    let raw = std::fs::read(&c.h.store_path).expect("store file");
    assert!(!raw.windows(4).any(|w| w == b"DICM") && !raw.windows(4).any(|w| w == b"IHDR"), "the store file is not encrypted");

    // Listed on the patient's page, shown as a PNG, never cached.
    let page = c.page("p-a").await;
    let src = format!("/patients/p-a/images/{id}");
    assert!(page.contains(&format!("src=\"{src}\"")) && page.contains("CT, DICOM, 64&times;64"), "{page}");
    let (status, ct, cc, png) = c.image(&c.token, &src).await;
    assert_eq!((status, ct.as_str(), cc.as_str()), (StatusCode::OK, "image/png", "no-store"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png, render);
    assert_no_identifier(&png, "the served image");

    // Audited with digests, sizes, modality and counts, nothing from the header or the name.
    let records = c.audit_of("upload_image");
    assert_eq!(records.len(), 1);
    let detail: serde_json::Value = serde_json::from_str(&records[0]).expect("detail");
    assert_eq!(detail["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(detail["bytes"].as_u64(), Some(original.len() as u64));
    assert_eq!(detail["modality"], "CT");
    assert_eq!(detail["dicom"]["bytes"].as_u64(), Some(dicom.len() as u64));
    assert_eq!(detail["render"]["bytes"].as_u64(), Some(png.len() as u64));
    assert!(detail["deidentified"]["uids_remapped"].as_u64().expect("n") >= 3, "{detail}");
    assert_no_identifier(records[0].as_bytes(), "the audit record");
    assert!(!records[0].contains("Testperson_Alberta"), "the file name reached the audit record");

    // The same file again is filed once.
    let (status, body) = c.upload("p-a", "again.dcm", &original).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""already_in_record":true"#) && body.contains(&format!(r#""image_id":{id}"#)), "{body}");
    assert_eq!(c.stored().len(), 1);
}

#[tokio::test]
async fn only_users_who_may_see_the_patient_get_the_image() {
    let c = Clinic::new();
    let (status, body) = c.upload("p-a", "ct.dcm", &fixture("ct_explicit_le.dcm")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let src = "/patients/p-a/images/1";
    assert_eq!(c.image(&c.token, src).await.0, StatusCode::OK);
    // Another patient's URL does not reach it, nor does an id that does not exist.
    assert_eq!(c.image(&c.token, "/patients/p-b/images/1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.image(&c.token, "/patients/p-a/images/2").await.0, StatusCode::NOT_FOUND);
    // A clinician without access to the patient: not found, and cannot upload either.
    let outsider = c.h.add_user("outsider", Role::Clinician, false);
    let (token, csrf) = c.h.session(&outsider);
    let (status, ..) = c.image(&token, src).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = c.upload_as(&token, &csrf, "p-a", "ct.dcm", &fixture("ct_rle.dcm")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An administrator does not look at patients.
    let admin = c.h.add_user("admin1", Role::Admin, false);
    let (token, _) = c.h.session(&admin);
    let (status, _, _, body) = c.image(&token, src).await;
    assert!(status == StatusCode::FORBIDDEN || status.is_redirection(), "{status}");
    assert!(!body.starts_with(b"\x89PNG"));
    assert_eq!(c.stored().len(), 1);
}

#[tokio::test]
async fn a_dicom_naming_another_patient_is_refused_and_nothing_is_stored() {
    let c = Clinic::new();
    // Patient A's CT uploaded to patient B.
    let (status, body) = c.upload("p-b", "ct.dcm", &fixture("ct_explicit_le.dcm")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("names another patient") && body.contains("patient ID"), "{body}");
    assert_no_identifier(body.as_bytes(), "the refusal");
    assert!(c.stored().is_empty());
    assert!(!c.page("p-b").await.contains("/patients/p-b/images/"));
    let refused = c.audit_of("upload_image_refused");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].contains(r#""reason":"other_patient""#), "{}", refused[0]);
    assert_no_identifier(refused[0].as_bytes(), "the refusal's audit record");
    assert!(c.audit_of("upload_image").is_empty());

    // Patient B's MR goes to patient B.
    let (status, body) = c.upload("p-b", "mr.dcm", &fixture("mr_jpeg_baseline.dcm")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(c.stored().len(), 1);
}

#[tokio::test]
async fn a_dicom_that_nothing_in_the_record_can_be_compared_with_is_refused() {
    let c = Clinic::new();
    let (status, body) = c.upload("p-c", "ct.dcm", &fixture("ct_explicit_le.dcm")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("names no patient that can be compared with this record"), "{body}");
    assert!(c.stored().is_empty());
    assert!(c.audit_of("upload_image_refused")[0].contains(r#""reason":"no_identity""#));
    // A photo carries no identity to compare: it is filed.
    let (status, body) = c.upload("p-c", "wound.png", &fixture("photo_exif.png")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn files_that_are_not_images_are_refused_and_nothing_is_stored() {
    let c = Clinic::new();
    for (name, bytes, expected) in [
        ("note.txt", b"Patient seen today, wound healing well.".to_vec(), "not a DICOM file, a PNG or a JPEG"),
        ("report.pdf", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n".to_vec(), "not a DICOM file, a PNG or a JPEG"),
        ("mr.dcm", fixture("mr_jpeg2000.dcm"), "transfer syntax"),
        ("cut.dcm", fixture("ct_explicit_le.dcm")[..400].to_vec(), "cannot be added as an image"),
    ] {
        let (status, body) = c.upload("p-b", name, &bytes).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(body.contains(expected), "{name}: {body}");
    }
    assert!(c.stored().is_empty());
    assert_eq!(c.audit_of("upload_image_refused").len(), 4);
}

#[tokio::test]
async fn a_photo_is_filed_without_its_metadata() {
    let c = Clinic::new();
    let original = fixture("photo_exif.jpg");
    let (status, body) = c.upload("p-a", "wound.jpg", &original).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""kind":"photo""#), "{body}");
    let (status, ct, cc, served) = c.image(&c.token, "/patients/p-a/images/1").await;
    assert_eq!((status, ct.as_str(), cc.as_str()), (StatusCode::OK, "image/jpeg", "no-store"));
    assert_eq!(&served[..2], b"\xff\xd8");
    assert_ne!(served, original);
    assert_no_identifier(&served, "the served photo");
    let stored = c.stored();
    assert_eq!((stored[0].1.as_str(), stored[0].2.is_none()), ("photo", true));

    let (status, body) = c.upload("p-a", "wound.png", &fixture("photo_exif.png")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, ct, _, served) = c.image(&c.token, "/patients/p-a/images/2").await;
    assert_eq!(ct, "image/png");
    assert_no_identifier(&served, "the served PNG photo");
    assert!(c.page("p-a").await.contains("photo, "));
}

#[tokio::test]
async fn burned_in_text_is_flagged_on_the_page() {
    let c = Clinic::new();
    let (status, body) = c.upload("p-b", "us.dcm", &fixture("us_burned_in.dcm")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(reply["burned_in"].as_str().is_some_and(|w| w.contains("BurnedInAnnotation")), "{body}");
    let page = c.page("p-b").await;
    assert!(page.contains("Text may be burned into this image"), "{page}");
    // A CT is not flagged.
    let (_, body) = c.upload("p-a", "ct.dcm", &fixture("ct_explicit_le.dcm")).await;
    assert!(body.contains(r#""burned_in":null"#), "{body}");
    assert!(!c.page("p-a").await.contains("Text may be burned"));
}
