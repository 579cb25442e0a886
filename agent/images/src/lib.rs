//! Medical images for the records, as pure functions over bytes: nothing here touches the
//! disk, the network or the store, so every decision is testable on its own.
//!
//! - [`dicom`]: read a DICOM Part 10 file (explicit/implicit little endian, JPEG baseline, RLE
//!   and whatever else the compiled-in pure-Rust decoders handle), apply the modality LUT and
//!   the default VOI window, render 8-bit PNG.
//! - [`deid`]: de-identify a DICOM file per DICOM PS3.15's Basic Application Level
//!   Confidentiality Profile (table as data in `profile_table`), remap UIDs per patient,
//!   shift dates, and hand the header's patient identity back to the caller separately.
//! - [`photo`]: PNG and JPEG photos re-encoded from pixels only (EXIF, XMP, IPTC, ICC and
//!   comments dropped), downscaled to a maximum edge, decompression bombs refused.
//! - [`png`]: the one PNG writer, which writes no metadata chunks.

pub mod deid;
pub mod dicom;
pub mod photo;
pub mod png;
mod profile_table;
