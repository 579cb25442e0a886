//! DICOM import throughput: a 200-image CT-like series (512x512, 16-bit signed, explicit VR
//! little endian), made at run time from the committed 64x64 fixture by replacing the pixels
//! and giving each instance its own number and UID, so nothing large is committed. Each image
//! goes through the whole import path: parse, de-identify, parse the result, render to PNG.
//!
//! Run with `cargo run --release -p wardbox-images --bin wardbox-images-bench [-- IMAGES]`.

use std::time::Instant;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use wardbox_images::deid::{DeidKey, DeidParams, deidentify};
use wardbox_images::dicom::{DEFAULT_MAX_DECODED_BYTES, read_part10, render_first_frame};

const SIDE: u16 = 512;
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ct_explicit_le.dcm"
);

/// One 512x512 slice: a disc of soft tissue in air whose radius changes along the series,
/// with a deterministic texture, stored as HU + 1024 like the fixture.
fn slice_pixels(index: u32) -> Vec<u16> {
    let side = i64::from(SIDE);
    let radius = 150 + i64::from(index % 50);
    let mut pixels = Vec::with_capacity((side * side) as usize);
    for y in 0..side {
        for x in 0..side {
            let (dx, dy) = (x - side / 2, y - side / 2);
            let hu: i64 = if dx * dx + dy * dy < radius * radius {
                40
            } else {
                -1000
            };
            let texture = ((x * 31 + y * 17 + i64::from(index) * 7) % 41) - 20;
            pixels.push((hu + texture + 1024) as u16);
        }
    }
    pixels
}

/// The series as Part 10 files in memory.
fn make_series(images: u32) -> Vec<Vec<u8>> {
    let template = read_part10(&std::fs::read(FIXTURE).expect("fixture ct_explicit_le.dcm"))
        .expect("fixture parses");
    (0..images)
        .map(|index| {
            let mut object = template.clone();
            let sop_uid = format!("1.2.826.0.1.3680043.8.498.3003.1.{}", index + 1);
            object.put(DataElement::new(
                tags::ROWS,
                VR::US,
                PrimitiveValue::from(SIDE),
            ));
            object.put(DataElement::new(
                tags::COLUMNS,
                VR::US,
                PrimitiveValue::from(SIDE),
            ));
            object.put(DataElement::new(
                tags::INSTANCE_NUMBER,
                VR::IS,
                PrimitiveValue::from((index + 1).to_string()),
            ));
            object.put(DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(sop_uid.as_str()),
            ));
            object.update_meta(|meta| meta.media_storage_sop_instance_uid = sop_uid.clone());
            object.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(slice_pixels(index).into()),
            ));
            let mut bytes = Vec::new();
            object.write_all(&mut bytes).expect("write generated slice");
            bytes
        })
        .collect()
}

/// Imports every file; returns the total bytes of PNG written (so nothing is optimised away).
fn import_all(series: &[Vec<u8>]) -> usize {
    let key = DeidKey::from_bytes([42; 32]);
    let params = DeidParams {
        key: &key,
        patient_key: "bench-patient",
        date_offset_days: -30,
    };
    series
        .iter()
        .map(|file| {
            let clean = deidentify(file, &params).expect("de-identify");
            let object = read_part10(&clean.file).expect("re-read");
            render_first_frame(&object, DEFAULT_MAX_DECODED_BYTES)
                .expect("render")
                .png
                .len()
        })
        .sum()
}

fn main() {
    let images: u32 = std::env::args()
        .nth(1)
        .map_or(200, |a| a.parse().expect("IMAGES is a number"));
    let started = Instant::now();
    let series = make_series(images);
    let generated = started.elapsed();
    let input_bytes: usize = series.iter().map(Vec::len).sum();
    let started = Instant::now();
    let png_bytes = import_all(&series);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{images} images of {SIDE}x{SIDE} 16-bit ({:.1} MB) generated in {:.2} s; imported \
         (de-identify + re-read + render) in {elapsed:.2} s: {:.1} images/s, {:.1} ms/image, \
         {:.1} MB of PNG",
        input_bytes as f64 / 1e6,
        generated.as_secs_f64(),
        f64::from(images) / elapsed,
        elapsed * 1000.0 / f64::from(images),
        png_bytes as f64 / 1e6,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_series_imports() {
        let series = make_series(2);
        let first = read_part10(&series[0]).expect("parses");
        let rows = first.get(tags::ROWS).and_then(|e| e.to_int::<u32>().ok());
        assert_eq!(rows, Some(512));
        assert!(import_all(&series) > 0);
    }
}
