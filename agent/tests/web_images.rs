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
        self.upload_series_as(token, csrf, patient, &[(file_name, bytes)]).await
    }

    /// Several files in one request, as the page sends a series (one form field per file).
    async fn upload_series(&self, patient: &str, files: &[(&str, &[u8])]) -> (StatusCode, String) {
        self.upload_series_as(&self.token, &self.csrf, patient, files).await
    }

    async fn upload_series_as(&self, token: &str, csrf: &str, patient: &str, files: &[(&str, &[u8])]) -> (StatusCode, String) {
        let boundary = "XIMAGEBOUNDARYX";
        let mut body = Vec::new();
        for (file_name, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
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
    assert_eq!((reply["filed"].as_u64(), reply["refused"].as_u64()), (Some(1), Some(0)), "{body}");
    let reply = &reply["images"][0];
    assert_eq!((reply["outcome"].as_str(), reply["file"].as_u64()), (Some("filed"), Some(1)));
    assert_eq!(reply["kind"], "dicom");
    assert_eq!(reply["modality"], "CT");
    assert_eq!((reply["width"].as_u64(), reply["height"].as_u64()), (Some(64), Some(64)));
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
    assert!(reply["images"][0]["burned_in"].as_str().is_some_and(|w| w.contains("BurnedInAnnotation")), "{body}");
    let page = c.page("p-b").await;
    assert!(page.contains("Text may be burned into this image"), "{page}");
    // A CT is not flagged.
    let (_, body) = c.upload("p-a", "ct.dcm", &fixture("ct_explicit_le.dcm")).await;
    assert!(body.contains(r#""burned_in":null"#), "{body}");
    assert!(!c.page("p-a").await.contains("Text may be burned"));
}

/// Every `2.25.` UID (the remapped form) in a de-identified file.
fn remapped_uids(dicom: &[u8]) -> std::collections::BTreeSet<String> {
    let text = String::from_utf8_lossy(dicom);
    text.match_indices("2.25.")
        .map(|(at, _)| text[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect::<String>())
        .filter(|uid| uid.len() > 10)
        .collect()
}

#[tokio::test]
async fn a_series_is_checked_and_filed_file_by_file_with_one_result_list() {
    let c = Clinic::new();
    let (ct1, ct2, rle, mr, jpg) =
        (fixture("ct_explicit_le.dcm"), fixture("ct_implicit_le.dcm"), fixture("ct_rle.dcm"), fixture("mr_jpeg_baseline.dcm"), fixture("photo_exif.jpg"));
    let note = b"Patient seen today, wound healing well.".to_vec();
    // Patient A's CT series with a photo, patient B's MR slipped in, and a note.
    let files: [(&str, &[u8]); 6] = [
        ("Testperson_Alberta_1.dcm", &ct1),
        ("Testperson_Alberta_2.dcm", &ct2),
        ("Examplar_Bertrand.dcm", &mr),
        ("Testperson_Alberta_3.dcm", &rle),
        ("wound.jpg", &jpg),
        ("note.txt", &note),
    ];
    let (status, body) = c.upload_series("p-a", &files).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!((reply["filed"].as_u64(), reply["refused"].as_u64()), (Some(4), Some(2)), "{body}");
    let results = reply["images"].as_array().expect("the result list");
    let outcomes: Vec<(u64, &str, &str)> = results
        .iter()
        .map(|r| (r["file"].as_u64().expect("file"), r["outcome"].as_str().expect("outcome"), r["reason"].as_str().or(r["kind"].as_str()).expect("kind")))
        .collect();
    assert_eq!(
        outcomes,
        [(1, "filed", "dicom"), (2, "filed", "dicom"), (3, "refused", "other_patient"), (4, "filed", "dicom"), (5, "filed", "photo"), (6, "refused", "not_an_image")]
    );
    assert!(results[2]["message"].as_str().is_some_and(|m| m.contains("names another patient")), "{body}");
    assert!(results[5]["message"].as_str().is_some_and(|m| m.contains("not a DICOM file, a PNG or a JPEG")), "{body}");
    assert_no_identifier(body.as_bytes(), "the result list");
    assert!(!body.contains("Testperson_Alberta") && !body.contains("Examplar"), "a file name came back: {body}");

    // Filed: the four of patient A, de-identified; B's MR and the note are not stored.
    let stored = c.stored();
    assert_eq!(stored.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect::<Vec<_>>(), [("p-a", "dicom"), ("p-a", "dicom"), ("p-a", "dicom"), ("p-a", "photo")]);
    for (_, _, dicom, render) in &stored {
        assert_no_identifier(dicom.as_deref().unwrap_or_default(), "a stored DICOM of the series");
        assert_no_identifier(render, "a stored render of the series");
    }
    // One patient, one key: the two CTs of study A still share their (remapped) study and
    // series, and the second still references the first.
    let (first, second) = (remapped_uids(stored[0].2.as_deref().expect("dicom")), remapped_uids(stored[1].2.as_deref().expect("dicom")));
    assert!(first.intersection(&second).count() >= 3, "the series lost its links: {first:?} / {second:?}");
    let study = serde_json::from_slice::<serde_json::Value>(&fixture("identifiers.json")).expect("manifest")["study_a_uids"]["study"].as_str().expect("uid").to_owned();
    assert!(!stored.iter().any(|r| r.2.as_deref().unwrap_or_default().windows(study.len()).any(|w| w == study.as_bytes())));

    // Each file audited on its own: four filed, two refused, no names, no identifiers.
    let (filed, refused) = (c.audit_of("upload_image"), c.audit_of("upload_image_refused"));
    assert_eq!((filed.len(), refused.len()), (4, 2));
    assert!(refused[0].contains(r#""reason":"other_patient""#) && refused[1].contains(r#""reason":"not_an_image""#), "{refused:?}");
    for r in filed.iter().chain(&refused) {
        assert_no_identifier(r.as_bytes(), "an audit record of the series");
        assert!(!r.contains("Testperson_Alberta") && !r.contains("wound.jpg"), "a file name reached the audit record: {r}");
    }
    let page = c.page("p-a").await;
    for id in 1..=4 {
        assert!(page.contains(&format!("src=\"/patients/p-a/images/{id}\"")), "image {id} is not listed");
    }

    // A series of which nothing can be filed: 400, with the same list.
    let (status, body) = c.upload_series("p-b", &[("ct.dcm", &ct1), ("note.txt", &note)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!((reply["filed"].as_u64(), reply["refused"].as_u64()), (Some(0), Some(2)), "{body}");
    assert_eq!(c.stored().len(), 4);
}

#[tokio::test]
async fn an_upload_over_the_limits_is_refused_whole_and_nothing_is_stored() {
    use wardbox::web::MAX_UPLOAD_BYTES;
    use wardbox::web::upload::MAX_IMAGES_PER_UPLOAD;
    let c = Clinic::new();
    let jpg = fixture("photo_exif.jpg");

    // One file more than an upload takes: refused before any is looked at.
    let too_many: Vec<(&str, &[u8])> = (0..=MAX_IMAGES_PER_UPLOAD).map(|_| ("wound.jpg", jpg.as_slice())).collect();
    let (status, body) = c.upload_series("p-a", &too_many).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains(&format!("at most {MAX_IMAGES_PER_UPLOAD} images")) && body.contains("none was added"), "{body}");
    // More bytes than the limit, in two files each under it.
    let half = vec![0x5Au8; MAX_UPLOAD_BYTES / 2 + 1];
    let (status, body) = c.upload_series("p-a", &[("a.dcm", &half), ("b.dcm", &half)]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body.contains("25 MiB"), "{body}");
    // An empty file among others.
    let (status, body) = c.upload_series("p-a", &[("wound.jpg", &jpg), ("empty.dcm", b"")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("file 2 of the upload is empty"), "{body}");
    assert!(c.stored().is_empty());
    assert!(c.audit_of("upload_image").is_empty() && c.audit_of("upload_image_refused").is_empty());

    // Exactly the limit is taken (the same photo: filed once, then already in the record).
    let (status, body) = c.upload_series("p-a", &too_many[..MAX_IMAGES_PER_UPLOAD]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.matches(r#""already_in_record":true"#).count(), MAX_IMAGES_PER_UPLOAD - 1);
    assert_eq!(c.stored().len(), 1);

    // The page states the limits.
    let page = c.page("p-a").await;
    assert!(page.contains(&format!("up to {MAX_IMAGES_PER_UPLOAD} files")) && page.contains("25 MiB in all"), "the page does not state the limits");
    // And gives them to its script, which splits a longer series into uploads within them.
    assert!(page.contains(&format!(r#"data-max-files="{MAX_IMAGES_PER_UPLOAD}" data-max-bytes="{MAX_UPLOAD_BYTES}""#)), "the page's limits differ");
}
