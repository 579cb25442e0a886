//! The PNG writer every render goes through. It writes only the chunks a decoder needs
//! (IHDR, IDAT, IEND): no text, time, ICC or EXIF chunks, so nothing but pixels leaves.

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

/// Why an image could not be written as PNG.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error(
        "the pixel buffer holds {actual} bytes, but {width}x{height} with {channels} channel(s) needs {expected}"
    )]
    BufferSize {
        width: u32,
        height: u32,
        channels: u8,
        expected: usize,
        actual: usize,
    },
    #[error("the PNG encoder refused the image: {0}")]
    Encode(#[source] image::ImageError),
}

/// The channel layouts we render: grey (DICOM monochrome), RGB (DICOM colour, photos) and
/// RGBA (photos with transparency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Grey,
    Rgb,
    Rgba,
}

impl Channels {
    pub fn count(self) -> u8 {
        match self {
            Channels::Grey => 1,
            Channels::Rgb => 3,
            Channels::Rgba => 4,
        }
    }

    fn color_type(self) -> image::ExtendedColorType {
        match self {
            Channels::Grey => image::ExtendedColorType::L8,
            Channels::Rgb => image::ExtendedColorType::Rgb8,
            Channels::Rgba => image::ExtendedColorType::Rgba8,
        }
    }
}

/// Encodes 8-bit pixels (rows top to bottom, channels interleaved) as a metadata-free PNG.
pub fn encode_png(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: Channels,
) -> Result<Vec<u8>, PngError> {
    let expected = width as usize * height as usize * channels.count() as usize;
    if pixels.len() != expected {
        return Err(PngError::BufferSize {
            width,
            height,
            channels: channels.count(),
            expected,
            actual: pixels.len(),
        });
    }
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(pixels, width, height, channels.color_type())
        .map_err(PngError::Encode)?;
    Ok(out)
}

/// The chunk types of a PNG file in order, or `None` when the bytes are not a well-formed
/// PNG. Tests and callers use it to prove a render carries no metadata chunk.
pub fn png_chunk_types(png: &[u8]) -> Option<Vec<[u8; 4]>> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let mut rest = png.strip_prefix(SIGNATURE)?;
    let mut types = Vec::new();
    while !rest.is_empty() {
        let length = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        // length, type, data, CRC
        rest = rest.get(8usize.checked_add(length)?.checked_add(4)?..)?;
        types.push(kind);
    }
    Some(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_only_the_chunks_a_decoder_needs() {
        let png = encode_png(&[0, 64, 128, 255], 2, 2, Channels::Grey).expect("encode");
        let types = png_chunk_types(&png).expect("well-formed");
        assert!(
            types
                .iter()
                .all(|t| matches!(t, b"IHDR" | b"IDAT" | b"IEND")),
            "{types:?}"
        );
        assert_eq!(types.first(), Some(b"IHDR"));
        assert_eq!(types.last(), Some(b"IEND"));
    }

    #[test]
    fn wrong_buffer_size_is_refused() {
        let err = encode_png(&[0; 5], 2, 2, Channels::Grey).expect_err("5 bytes for 2x2 grey");
        assert!(
            matches!(
                err,
                PngError::BufferSize {
                    expected: 4,
                    actual: 5,
                    ..
                }
            ),
            "{err}"
        );
    }
}
