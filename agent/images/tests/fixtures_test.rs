//! The image pipeline against files written by `tests/fixtures/generate.py` (pydicom and
//! Pillow): every identifier the generator wrote is listed in `identifiers.json`, and none may
//! survive de-identification, rendering or photo cleaning.

use std::path::PathBuf;

use dicom_dictionary_std::tags;
use wardbox_images::deid::{BurnedInText, DeidKey, DeidParams, deidentify, may_go_to_model};
use wardbox_images::dicom::{
    DEFAULT_MAX_DECODED_BYTES, DicomError, read_part10, render_first_frame,
};
use wardbox_images::photo::{PhotoError, PhotoFormat, PhotoLimits, clean_photo, jpeg_markers};
use wardbox_images::png::png_chunk_types;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&fixture("identifiers.json")).expect("identifiers.json parses")
}

fn identifiers() -> Vec<String> {
    let list: Vec<String> = manifest()["identifiers"]
        .as_array()
        .expect("identifiers list")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect();
    assert!(list.len() > 20, "the generator lists its identifiers");
    list
}

/// Every identifier, and its DICOM-encoded pieces (a PN's components, a date's digits), must
/// be absent from `bytes`. Case-insensitive, since some writers upper-case.
fn assert_no_identifier(bytes: &[u8], what: &str) {
    let haystack = String::from_utf8_lossy(bytes).to_lowercase();
    for identifier in identifiers() {
        for piece in identifier.split('^').filter(|p| p.len() >= 4) {
            assert!(
                !haystack.contains(&piece.to_lowercase()),
                "{what}: identifier piece {piece:?} survived"
            );
        }
    }
}

const DICOM_FIXTURES: &[&str] = &[
    "ct_explicit_le.dcm",
    "ct_implicit_le.dcm",
    "ct_rle.dcm",
    "mr_jpeg_baseline.dcm",
    "us_burned_in.dcm",
    "cr_monochrome1.dcm",
];

const OFFSET_DAYS: i32 = -123;

fn key() -> DeidKey {
    DeidKey::from_bytes(*b"test site key for wardbox images")
}

#[test]
fn fixtures_really_carry_the_identifiers() {
    // Otherwise the absence checks below could not fail.
    for name in DICOM_FIXTURES {
        let text = String::from_utf8_lossy(&fixture(name)).to_string();
        for needle in [
            "PRIV-PATIENT-Alberta",
            "Saint Quillfeather Clinic",
            "Nestedname^Orla",
        ] {
            assert!(text.contains(needle), "{name} lacks {needle}");
        }
    }
    let jpeg = String::from_utf8_lossy(&fixture("photo_exif.jpg")).to_string();
    assert!(jpeg.contains("CAMSERIAL-0058-7731") && jpeg.contains("XMP Creator"));
}

#[test]
fn every_transfer_syntax_renders_a_metadata_free_png() {
    for name in DICOM_FIXTURES {
        let object = read_part10(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rendered = render_first_frame(&object, DEFAULT_MAX_DECODED_BYTES)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let chunks = png_chunk_types(&rendered.png).expect("well-formed PNG");
        assert!(
            chunks
                .iter()
                .all(|c| matches!(c, b"IHDR" | b"IDAT" | b"IEND")),
            "{name}: {chunks:?}"
        );
        assert_eq!(rendered.frames, 1);
        let decoded = image::load_from_memory(&rendered.png).expect("our PNG decodes");
        assert_eq!(
            (decoded.width(), decoded.height()),
            (rendered.width, rendered.height)
        );
        if name.starts_with("ct_") {
            // Window 40/400 over HU: air (-1000) is black, the soft-tissue disc (40 +/- 20)
            // is mid-grey. Corner and centre prove the modality LUT and VOI window applied.
            let grey = decoded.to_luma8();
            assert_eq!(grey.get_pixel(0, 0).0[0], 0, "{name}: air is black");
            let centre = grey.get_pixel(32, 32).0[0];
            assert!(
                (100..=155).contains(&centre),
                "{name}: soft tissue mid-grey, got {centre}"
            );
        }
    }
}

/// Our renders against the generator's own (numpy: modality LUT, DICOM's linear window,
/// min-max normalisation, MONOCHROME1 inversion), pixel by pixel.
#[test]
fn renders_match_an_independent_implementation() {
    for name in DICOM_FIXTURES {
        let object = read_part10(&fixture(name)).expect("read");
        let ours = render_first_frame(&object, DEFAULT_MAX_DECODED_BYTES).expect("render");
        let ours = image::load_from_memory(&ours.png).expect("decode ours");
        let expected = image::load_from_memory(&fixture(&name.replace(".dcm", ".expected.png")))
            .expect("decode expected");
        assert_eq!(ours.color(), expected.color(), "{name}");
        let (ours, expected) = (ours.into_bytes(), expected.into_bytes());
        assert_eq!(ours.len(), expected.len(), "{name}");
        // One level of rounding apart (we window at 16 bits and narrow); two for the JPEG,
        // whose decoders may differ by one before normalisation stretches the range.
        let tolerance = if name.contains("jpeg") { 2 } else { 1 };
        let worst = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(worst <= tolerance, "{name}: a pixel differs by {worst}");
        let spread = expected.iter().max().unwrap_or(&0) - expected.iter().min().unwrap_or(&0);
        assert!(
            spread > 100,
            "{name}: the reference has contrast, so the comparison means something"
        );
    }
}

/// Every prefix of every fixture (in steps) is refused or read; none panics. (This found a
/// panic in dicom-rs's RLE decoder on truncated segments, now contained in `dicom`.)
#[test]
fn truncations_at_any_point_never_panic() {
    let params_key = key();
    let params = DeidParams {
        key: &params_key,
        patient_key: "p",
        date_offset_days: 5,
    };
    let mut panicked = Vec::new();
    for name in DICOM_FIXTURES {
        let bytes = fixture(name);
        for cut in (0..bytes.len()).step_by(31) {
            let prefix = &bytes[..cut];
            let outcome = std::panic::catch_unwind(|| {
                if let Ok(object) = read_part10(prefix) {
                    let _ = render_first_frame(&object, DEFAULT_MAX_DECODED_BYTES);
                }
                let _ = deidentify(prefix, &params);
            });
            if outcome.is_err() {
                panicked.push(format!("{name} cut at {cut}"));
            }
        }
    }
    assert!(panicked.is_empty(), "panicked on: {panicked:?}");
}

#[test]
fn deidentified_files_keep_no_identifier_and_no_private_tag() {
    let manifest = manifest();
    for name in DICOM_FIXTURES {
        let params = DeidParams {
            key: &key(),
            patient_key: "record-17",
            date_offset_days: OFFSET_DAYS,
        };
        let out = deidentify(&fixture(name), &params).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_no_identifier(&out.file, name);

        // The identity goes to the caller, separately.
        let patient = if name.starts_with("ct_") { "A" } else { "B" };
        let expected = &manifest["patients"][patient];
        assert_eq!(
            out.identity.name.as_deref(),
            expected["name"].as_str(),
            "{name}"
        );
        assert_eq!(
            out.identity.id.as_deref(),
            expected["id"].as_str(),
            "{name}"
        );
        assert_eq!(
            out.identity.birth_date.as_deref(),
            expected["birth"].as_str(),
            "{name}"
        );

        // The counts say what was done: every fixture has private tags and identifiers to
        // remove, a name to empty, the three instance UIDs to remap and a study date to shift.
        assert!(out.counts.removed >= 2, "{name}: {:?}", out.counts);
        assert!(out.counts.emptied >= 1, "{name}: {:?}", out.counts);
        assert!(out.counts.uids_remapped >= 3, "{name}: {:?}", out.counts);
        assert!(out.counts.dates_shifted >= 2, "{name}: {:?}", out.counts);

        let object = read_part10(&out.file).expect("the de-identified file reads back");
        let private: Vec<_> = object
            .iter()
            .map(dicom_core::header::Header::tag)
            .filter(|t| t.0 % 2 == 1)
            .collect();
        assert!(private.is_empty(), "{name}: private tags left: {private:?}");
        let text = |tag| {
            object
                .get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim().to_string())
        };
        assert_eq!(text(tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
        assert!(text(tags::DEIDENTIFICATION_METHOD).is_some_and(|m| m.contains("PS3.15")));
        assert_eq!(
            text(tags::PATIENT_NAME).as_deref(),
            Some(""),
            "{name}: name emptied"
        );
        assert!(
            object.get(tags::INSTITUTION_NAME).is_none(),
            "{name}: institution removed"
        );

        // Dates shifted by the offset (2024-03-15 - 123 days = 2023-11-13).
        assert_eq!(
            text(tags::STUDY_DATE).as_deref(),
            Some("20231113"),
            "{name}"
        );
        assert_eq!(
            text(tags::CONTENT_DATE).as_deref(),
            Some("20231114"),
            "{name}"
        );
        // Acquisition DateTime is X/Z/D in the profile: removed, not shifted.
        assert!(object.get(tags::ACQUISITION_DATE_TIME).is_none(), "{name}");

        // The render of the de-identified file carries no identifier either.
        let rendered = render_first_frame(&object, DEFAULT_MAX_DECODED_BYTES).expect("render");
        assert_no_identifier(&rendered.png, name);
    }
}

#[test]
fn uids_are_remapped_consistently_within_a_patients_study() {
    let params = DeidParams {
        key: &key(),
        patient_key: "record-17",
        date_offset_days: 0,
    };
    let first = deidentify(&fixture("ct_explicit_le.dcm"), &params).expect("first");
    let second = deidentify(&fixture("ct_implicit_le.dcm"), &params).expect("second");
    let uids = &manifest()["study_a_uids"];
    for original in ["study", "series", "instance_1", "frame_of_reference"] {
        let original = uids[original].as_str().expect("uid");
        for file in [&first.file, &second.file] {
            assert!(
                !String::from_utf8_lossy(file).contains(original),
                "{original} survived"
            );
        }
    }
    assert_eq!(first.study_uid, second.study_uid);
    assert_eq!(first.series_uid, second.series_uid);
    assert_ne!(first.sop_instance_uid, second.sop_instance_uid);
    assert!(first.study_uid.starts_with("2.25."));

    let read = |bytes: &[u8]| read_part10(bytes).expect("reads");
    let (a, b) = (read(&first.file), read(&second.file));
    let text = |o: &dicom_object::DefaultDicomObject, tag| {
        o.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches('\0').to_string())
    };
    assert_eq!(
        text(&a, tags::FRAME_OF_REFERENCE_UID),
        text(&b, tags::FRAME_OF_REFERENCE_UID)
    );
    assert_eq!(
        text(&a, tags::SOP_INSTANCE_UID).as_deref(),
        Some(first.sop_instance_uid.as_str())
    );
    assert_eq!(
        a.meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0'),
        first.sop_instance_uid
    );
    // The second instance references the first; the reference follows the remapping.
    let reference = b
        .get(tags::REFERENCED_IMAGE_SEQUENCE)
        .and_then(|e| e.items())
        .expect("sequence kept")[0]
        .get(tags::REFERENCED_SOP_INSTANCE_UID)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches('\0').to_string());
    assert_eq!(reference.as_deref(), Some(first.sop_instance_uid.as_str()));

    // Another patient key maps the same study elsewhere.
    let other = DeidParams {
        key: &key(),
        patient_key: "record-18",
        date_offset_days: 0,
    };
    let elsewhere = deidentify(&fixture("ct_explicit_le.dcm"), &other).expect("other");
    assert_ne!(elsewhere.study_uid, first.study_uid);
}

#[test]
fn burned_in_annotation_keeps_the_image_from_the_model() {
    let params = DeidParams {
        key: &key(),
        patient_key: "record-17",
        date_offset_days: 0,
    };
    let us = deidentify(&fixture("us_burned_in.dcm"), &params).expect("us");
    assert_eq!(us.burned_in, BurnedInText::AnnotationYes);
    assert!(!may_go_to_model(&us.burned_in, false));
    assert!(may_go_to_model(&us.burned_in, true));
    let ct = deidentify(&fixture("ct_explicit_le.dcm"), &params).expect("ct");
    assert_eq!(ct.burned_in, BurnedInText::NotIndicated);
    assert!(may_go_to_model(&ct.burned_in, false));
}

#[test]
fn bad_files_get_a_typed_error() {
    let good = fixture("ct_explicit_le.dcm");
    assert!(matches!(read_part10(b"hello"), Err(DicomError::NotPart10)));
    assert!(matches!(
        read_part10(&fixture("photo_exif.png")),
        Err(DicomError::NotPart10)
    ));
    // Cut inside the file meta group, inside the data set, and inside the pixel data.
    for cut in [140, 400, 2000, good.len() - 100] {
        let truncated = &good[..cut];
        let result =
            read_part10(truncated).and_then(|o| render_first_frame(&o, DEFAULT_MAX_DECODED_BYTES));
        assert!(
            matches!(
                result,
                Err(DicomError::Malformed(_)
                    | DicomError::PixelDecode(_)
                    | DicomError::NoPixelData)
            ),
            "cut at {cut}: {result:?}"
        );
        let params = DeidParams {
            key: &key(),
            patient_key: "p",
            date_offset_days: 0,
        };
        if let Ok(out) = deidentify(truncated, &params) {
            // A cut that still parses must not get through rendering.
            let rendered = read_part10(&out.file)
                .and_then(|o| render_first_frame(&o, DEFAULT_MAX_DECODED_BYTES));
            assert!(rendered.is_err(), "cut at {cut} rendered");
        }
    }
    match read_part10(&fixture("mr_jpeg2000.dcm")) {
        Err(DicomError::UnsupportedTransferSyntax(uid)) => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.90")
        }
        other => panic!("JPEG 2000 must be refused by name: {other:?}"),
    }
    // A header promising more than the decoding limit is refused before decoding.
    let object = read_part10(&good).expect("read");
    assert!(matches!(
        render_first_frame(&object, 1000),
        Err(DicomError::TooLarge {
            rows: 64,
            columns: 64,
            ..
        })
    ));
}

#[test]
fn photos_keep_no_metadata() {
    for (name, format) in [
        ("photo_exif.jpg", PhotoFormat::Jpeg),
        ("photo_exif.png", PhotoFormat::Png),
    ] {
        let input = fixture(name);
        let clean =
            clean_photo(&input, &PhotoLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(clean.format, format);
        assert_eq!((clean.width, clean.height), (64, 48));
        assert!(!clean.downscaled);
        assert_no_identifier(&clean.bytes, name);
        for needle in ["Exif", "GPS", "QuillCam", "adobe", "ICCFAKE"] {
            assert!(
                !String::from_utf8_lossy(&clean.bytes).contains(needle),
                "{name}: {needle}"
            );
        }
        match format {
            PhotoFormat::Jpeg => {
                let markers = jpeg_markers(&clean.bytes).expect("well-formed JPEG");
                // APP0 (JFIF) is allowed; APP1 (EXIF/XMP), APP2 (ICC), APP13 (IPTC), COM not.
                assert!(
                    markers.iter().all(|m| !matches!(m, 0xE1..=0xEF | 0xFE)),
                    "{name}: {markers:x?}"
                );
                let original = jpeg_markers(&input).expect("input JPEG");
                assert!(
                    original.contains(&0xE1) && original.contains(&0xFE),
                    "the input had them"
                );
            }
            PhotoFormat::Png => {
                let chunks = png_chunk_types(&clean.bytes).expect("well-formed PNG");
                assert!(
                    chunks
                        .iter()
                        .all(|c| matches!(c, b"IHDR" | b"IDAT" | b"IEND")),
                    "{chunks:?}"
                );
                let original = png_chunk_types(&input).expect("input PNG");
                assert!(
                    original.iter().any(|c| c == b"eXIf") && original.iter().any(|c| c == b"iTXt")
                );
            }
        }
        let decoded = image::load_from_memory(&clean.bytes).expect("decodes");
        assert_eq!(decoded.width(), 64);
    }
}

#[test]
fn a_20_megapixel_photo_is_downscaled_and_a_bomb_refused() {
    let limits = PhotoLimits {
        max_edge: 1024,
        ..PhotoLimits::default()
    };
    let clean = clean_photo(&fixture("photo_20mp.png"), &limits).expect("20 MP accepted");
    assert!(clean.downscaled);
    assert_eq!(
        (clean.width, clean.height),
        (1024, 683),
        "5472x3648 scaled to a 1024 edge"
    );

    match clean_photo(&fixture("photo_bomb.png"), &PhotoLimits::default()) {
        Err(PhotoError::TooManyPixels {
            width: 100_000,
            height: 100_000,
            ..
        }) => {}
        other => panic!("the bomb must be refused by its header: {other:?}"),
    }
    let tight = PhotoLimits {
        max_alloc_bytes: 1024 * 1024,
        ..PhotoLimits::default()
    };
    match clean_photo(&fixture("photo_20mp.png"), &tight) {
        Err(PhotoError::OverMemoryLimit { .. }) => {}
        other => panic!("a 20 MB decode over a 1 MiB budget must be refused: {other:?}"),
    }
    let mut truncated = fixture("photo_exif.jpg");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        clean_photo(&truncated, &PhotoLimits::default()),
        Err(PhotoError::Corrupt(_))
    ));
    assert!(matches!(
        clean_photo(b"GIF89a....", &PhotoLimits::default()),
        Err(PhotoError::UnsupportedFormat)
    ));
}
