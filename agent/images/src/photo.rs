//! Photos (PNG and JPEG) cleaned for the records: decoded to pixels and re-encoded, so no
//! metadata (EXIF with GPS and camera serials, XMP, IPTC, ICC profiles, comments, text chunks)
//! can ride along; the EXIF orientation is applied to the pixels first, since it is dropped
//! with the rest. Large photos are downscaled to a maximum edge; headers that promise more
//! pixels than allowed are refused before anything is allocated.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::png::{Channels, PngError, encode_png};

/// Bounds on what a photo may cost to decode and how large it is kept.
#[derive(Debug, Clone, Copy)]
pub struct PhotoLimits {
    /// The longest edge kept; larger photos are downscaled to it (aspect ratio kept).
    pub max_edge: u32,
    /// The most pixels a photo's header may declare. 20-megapixel camera photos pass;
    /// a decompression bomb (a small file declaring a huge image) is refused.
    pub max_pixels: u64,
    /// The most bytes the decoder may allocate.
    pub max_alloc_bytes: u64,
}

impl Default for PhotoLimits {
    fn default() -> Self {
        PhotoLimits {
            max_edge: 2048,
            max_pixels: 50_000_000,
            max_alloc_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Why a photo could not be cleaned. Nothing in a message comes from the photo's metadata.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("the file is not a PNG or JPEG image")]
    UnsupportedFormat,
    #[error(
        "the photo declares {width}x{height} pixels, over the limit of {max_pixels} (refused as a possible decompression bomb)"
    )]
    TooManyPixels {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("decoding the photo would need more memory than the {max_alloc_bytes}-byte limit")]
    OverMemoryLimit { max_alloc_bytes: u64 },
    #[error("the photo is corrupt or truncated: {0}")]
    Corrupt(#[source] image::ImageError),
    #[error("the cleaned photo could not be encoded as JPEG: {0}")]
    JpegEncode(#[source] image::ImageError),
    #[error(transparent)]
    Png(#[from] PngError),
}

/// The format a cleaned photo is written in: the input's, so a JPEG stays a JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoFormat {
    Png,
    Jpeg,
}

/// A photo with nothing but pixels.
#[derive(Debug, Clone)]
pub struct CleanPhoto {
    pub bytes: Vec<u8>,
    pub format: PhotoFormat,
    pub width: u32,
    pub height: u32,
    /// Whether the photo was downscaled to `max_edge`.
    pub downscaled: bool,
}

/// The JPEG quality of re-encoded photos: high enough that clinical detail survives.
const JPEG_QUALITY: u8 = 90;

/// Decodes a PNG or JPEG within `limits`, applies its orientation, downscales it to the
/// maximum edge and re-encodes the pixels alone.
pub fn clean_photo(bytes: &[u8], limits: &PhotoLimits) -> Result<CleanPhoto, PhotoError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PhotoError::Corrupt(image::ImageError::IoError(e)))?;
    let format = match reader.format() {
        Some(ImageFormat::Png) => PhotoFormat::Png,
        Some(ImageFormat::Jpeg) => PhotoFormat::Jpeg,
        _ => return Err(PhotoError::UnsupportedFormat),
    };
    let mut decoder_limits = Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(e, limits))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(PhotoError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    // The decoder's own limits cover its internal buffers; the decoded image itself is
    // checked here, before it is allocated.
    if decoder.total_bytes() > limits.max_alloc_bytes {
        return Err(PhotoError::OverMemoryLimit {
            max_alloc_bytes: limits.max_alloc_bytes,
        });
    }
    // A missing or unreadable orientation means "as stored".
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, limits))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    let downscaled = image.width().max(image.height()) > limits.max_edge;
    if downscaled {
        // `thumbnail` averages whole source pixels in one pass: fast, and it allocates only
        // the output.
        image = image.thumbnail(limits.max_edge, limits.max_edge);
    }
    let (width, height) = (image.width(), image.height());
    let bytes = match format {
        PhotoFormat::Jpeg => {
            let rgb = image.to_rgb8();
            let mut out = Vec::new();
            JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
                .encode_image(&rgb)
                .map_err(PhotoError::JpegEncode)?;
            out
        }
        PhotoFormat::Png => {
            let (pixels, channels) = if image.color().has_alpha() {
                (image.to_rgba8().into_raw(), Channels::Rgba)
            } else if image.color().has_color() {
                (image.to_rgb8().into_raw(), Channels::Rgb)
            } else {
                (image.to_luma8().into_raw(), Channels::Grey)
            };
            encode_png(&pixels, width, height, channels)?
        }
    };
    Ok(CleanPhoto {
        bytes,
        format,
        width,
        height,
        downscaled,
    })
}

fn decode_error(error: image::ImageError, limits: &PhotoLimits) -> PhotoError {
    match error {
        image::ImageError::Limits(_) => PhotoError::OverMemoryLimit {
            max_alloc_bytes: limits.max_alloc_bytes,
        },
        other => PhotoError::Corrupt(other),
    }
}

/// The JPEG marker segments of a file, in order (SOI, APPn, DQT, SOF, DHT, SOS, ...), up to
/// the start of scan; `None` when the bytes are not a well-formed JPEG. Tests use it to prove
/// a cleaned JPEG has no APP1 (EXIF/XMP), APP2 (ICC), APP13 (IPTC) or COM segment.
pub fn jpeg_markers(jpeg: &[u8]) -> Option<Vec<u8>> {
    let mut rest = jpeg.strip_prefix(&[0xFF, 0xD8])?;
    let mut markers = vec![0xD8];
    loop {
        let (&[0xFF, marker], tail) = rest.split_first_chunk::<2>()? else {
            return None;
        };
        markers.push(marker);
        let length = usize::from(u16::from_be_bytes(*tail.first_chunk::<2>()?));
        if marker == 0xDA {
            return Some(markers);
        }
        rest = tail.get(length..)?;
    }
}
