//! Reading DICOM Part 10 files and rendering their pixels to PNG.
//!
//! Decoding goes through dicom-rs with only its pure-Rust codecs compiled in (uncompressed
//! explicit/implicit little and big endian, JPEG baseline/extended/lossless through
//! `jpeg-decoder`, RLE lossless). Anything else (JPEG 2000, JPEG-LS, deflate, video) is refused
//! by name before any pixel is touched.

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::png::{Channels, PngError, encode_png};

/// The size of the Part 10 preamble before the "DICM" marker.
const PREAMBLE_LEN: usize = 128;

/// Why a DICOM file could not be read or rendered. Nothing in a message comes from the
/// file's attribute values, so errors may be logged without leaking patient data.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("not a DICOM Part 10 file: no \"DICM\" marker after the 128-byte preamble")]
    NotPart10,
    #[error("the DICOM file is malformed or truncated: {0}")]
    Malformed(#[source] Box<dicom_object::ReadError>),
    #[error(
        "the DICOM transfer syntax {0} is not supported (supported: uncompressed little/big endian, JPEG baseline, extended and lossless, RLE lossless)"
    )]
    UnsupportedTransferSyntax(String),
    #[error("the DICOM file has no pixel data (not an image)")]
    NoPixelData,
    #[error(
        "the DICOM image is {rows}x{columns} with {frames} frame(s) of {bits_allocated}-bit samples, over the {limit_bytes}-byte decoding limit"
    )]
    TooLarge {
        rows: u32,
        columns: u32,
        frames: u32,
        bits_allocated: u16,
        limit_bytes: u64,
    },
    #[error("the DICOM image attribute {0} is missing or invalid")]
    BadImageAttribute(&'static str),
    #[error("the DICOM photometric interpretation {0} is not supported for rendering")]
    UnsupportedPhotometric(String),
    #[error("the DICOM pixel data could not be decoded: {0}")]
    PixelDecode(#[source] Box<dicom_pixeldata::Error>),
    #[error("the DICOM pixel data is corrupt (the decoder failed on it)")]
    DecoderPanicked,
    #[error(transparent)]
    Png(#[from] PngError),
}

/// The most decoded pixel bytes one file may need (all frames, native samples): 512 MiB.
/// A header claiming more is refused before decoding, so a crafted file cannot exhaust memory.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;

/// Parses a DICOM Part 10 file held in memory and checks that its transfer syntax is one we
/// can decode.
pub fn read_part10(bytes: &[u8]) -> Result<DefaultDicomObject, DicomError> {
    if bytes.len() < PREAMBLE_LEN + 4 || &bytes[PREAMBLE_LEN..PREAMBLE_LEN + 4] != b"DICM" {
        return Err(DicomError::NotPart10);
    }
    let object = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(&bytes[PREAMBLE_LEN..])
        .map_err(|e| DicomError::Malformed(Box::new(e)))?;
    let uid = transfer_syntax_uid(&object);
    match TransferSyntaxRegistry.get(&uid) {
        Some(ts) if ts.can_decode_all() => Ok(object),
        _ => Err(DicomError::UnsupportedTransferSyntax(uid)),
    }
}

/// The file's transfer syntax UID without DICOM's trailing padding.
pub fn transfer_syntax_uid(object: &DefaultDicomObject) -> String {
    object
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// One frame rendered for the page and the model.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// A PNG with no metadata chunks.
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// How many frames the file holds; only the first is rendered.
    pub frames: u32,
}

/// Renders the first frame of an image as an 8-bit PNG: the modality LUT (rescale slope and
/// intercept) first, then the file's first VOI window; a file without a window is min-max
/// normalised. MONOCHROME1 is inverted so that higher values are always brighter.
pub fn render_first_frame(
    object: &DefaultDicomObject,
    max_decoded_bytes: u64,
) -> Result<Rendered, DicomError> {
    if object.get(tags::PIXEL_DATA).is_none() {
        return Err(DicomError::NoPixelData);
    }
    check_decoded_size(object, max_decoded_bytes)?;
    // dicom-rs 0.10.1's RLE decoder indexes out of bounds on a truncated segment (a panic,
    // not an error); a crafted upload must not take the caller's thread down, so a panic in
    // the decoder becomes an error like any other bad file.
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| object.decode_pixel_data()))
            .map_err(|_| DicomError::DecoderPanicked)?
            .map_err(|e| DicomError::PixelDecode(Box::new(e)))?;
    let photometric = decoded.photometric_interpretation().as_str().to_string();
    let channels = match (photometric.as_str(), decoded.samples_per_pixel()) {
        ("MONOCHROME1" | "MONOCHROME2", 1) => Channels::Grey,
        ("RGB", 3) => Channels::Rgb,
        // The JPEG decoder hands YCbCr back as RGB but may keep the original name.
        ("YBR_FULL" | "YBR_FULL_422", 3) if is_jpeg(object) => Channels::Rgb,
        _ => return Err(DicomError::UnsupportedPhotometric(photometric)),
    };
    let voi = match decoded.window() {
        Ok(Some(windows)) if !windows.is_empty() => VoiLutOption::First,
        _ => VoiLutOption::Normalize,
    };
    let options = ConvertOptions::new().with_voi_lut(voi);
    let decode_error = |e| DicomError::PixelDecode(Box::new(e));
    // dicom-pixeldata windows into the full range of the allocated bits (0..=65535 for
    // 16-bit samples), so wide samples are converted at 16 bits and narrowed here.
    let mut pixels: Vec<u8> = if decoded.bits_allocated() > 8 {
        let wide: Vec<u16> = decoded
            .to_vec_frame_with_options(0, &options)
            .map_err(decode_error)?;
        wide.into_iter().map(|v| (v >> 8) as u8).collect()
    } else {
        decoded
            .to_vec_frame_with_options(0, &options)
            .map_err(decode_error)?
    };
    if photometric == "MONOCHROME1" {
        pixels.iter_mut().for_each(|p| *p = 255 - *p);
    }
    let (width, height) = (decoded.columns(), decoded.rows());
    let png = encode_png(&pixels, width, height, channels)?;
    Ok(Rendered {
        png,
        width,
        height,
        frames: decoded.number_of_frames(),
    })
}

fn is_jpeg(object: &DefaultDicomObject) -> bool {
    transfer_syntax_uid(object).starts_with("1.2.840.10008.1.2.4.5")
        || transfer_syntax_uid(object).starts_with("1.2.840.10008.1.2.4.70")
}

/// Refuses an image whose header promises more decoded bytes than the limit, before the
/// decoder allocates anything.
fn check_decoded_size(object: &DefaultDicomObject, limit_bytes: u64) -> Result<(), DicomError> {
    let int = |tag, name: &'static str| -> Result<u32, DicomError> {
        object
            .get(tag)
            .and_then(|e| e.to_int::<u32>().ok())
            .ok_or(DicomError::BadImageAttribute(name))
    };
    let rows = int(tags::ROWS, "Rows (0028,0010)")?;
    let columns = int(tags::COLUMNS, "Columns (0028,0011)")?;
    let bits_allocated = int(tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)")?;
    let samples = int(tags::SAMPLES_PER_PIXEL, "SamplesPerPixel (0028,0002)")?;
    let frames = match object.get(tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(e) => e
            .to_int::<u32>()
            .map_err(|_| DicomError::BadImageAttribute("NumberOfFrames (0028,0008)"))?,
    };
    if rows == 0 || columns == 0 || frames == 0 || bits_allocated == 0 || samples == 0 {
        return Err(DicomError::BadImageAttribute(
            "Rows/Columns/NumberOfFrames (zero)",
        ));
    }
    let bytes = u64::from(rows)
        * u64::from(columns)
        * u64::from(frames)
        * u64::from(samples)
        * u64::from(bits_allocated.div_ceil(8));
    if bytes > limit_bytes {
        return Err(DicomError::TooLarge {
            rows,
            columns,
            frames,
            bits_allocated: bits_allocated.try_into().unwrap_or(u16::MAX),
            limit_bytes,
        });
    }
    Ok(())
}
