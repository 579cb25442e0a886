//! A unified kernel image (UKI) from a bundle, read as data: its PE section table and the PCR 11
//! value systemd-stub 252 will measure from it. Pure (no TPM, no files), so it is fuzzed on its
//! own (`fuzz/`, target `uki`); the agent's `update::uki` checks the result against the
//! PCR-signing key the data volume's seal trusts (docs/update.md).
//!
//! 1. [`PeImage::parse`] reads the DOS header, the PE signature, the COFF header and the section
//!    table, bounds-checked; nothing else of the image is interpreted.
//! 2. [`predict_pcr11`]: for each of [`MEASURED_SECTIONS`] the UKI has (in that order, not the
//!    file's), extend SHA-256 of the name with its NUL, then SHA-256 of the section's
//!    `VirtualSize` bytes as loaded (zero-filled past the raw data); then each word of a boot
//!    phase (`sysinit`, `ready`).

use sha2::{Digest as _, Sha256};

/// The sections systemd-stub 252 measures into PCR 11, in the order it measures them (systemd's
/// `unified_sections` list, without `.pcrsig`, which is not measured: it cannot sign itself).
/// systemd-measure 252 predicts in the same order; the agent's tests compare with its output.
pub const MEASURED_SECTIONS: [&str; 7] = [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"];

/// The largest UKI read into memory for the check (the appliance's is about 44 MiB), and the
/// most a section may map.
pub const MAX_UKI_BYTES: u64 = 512 * 1024 * 1024;

/// The PE/COFF limit on sections (the loader refuses more).
const MAX_SECTIONS: usize = 96;

/// One section of a PE image, as the loader maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeSection<'a> {
    /// The name up to its first NUL (8 bytes at most; long names are `/<offset>` and never one
    /// systemd-stub looks for).
    pub name: &'a [u8],
    /// Bytes the loader maps (`VirtualSize`); past the raw data they are zeros.
    pub virtual_size: u32,
    /// The raw data that is mapped: `min(VirtualSize, SizeOfRawData)` bytes of the file.
    pub raw: &'a [u8],
}

impl PeSection<'_> {
    /// SHA-256 of the section as loaded: the raw bytes, then zeros up to `VirtualSize`.
    pub fn loaded_sha256(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.raw);
        let mut zeros = (self.virtual_size as usize).saturating_sub(self.raw.len());
        let block = [0u8; 4096];
        while zeros > 0 {
            let n = zeros.min(block.len());
            h.update(&block[..n]);
            zeros -= n;
        }
        h.finalize().into()
    }

    /// The section's whole contents from the file, when the file holds all of it.
    pub fn contents(&self) -> Option<&[u8]> {
        (self.raw.len() == self.virtual_size as usize).then_some(self.raw)
    }
}

/// The section table of a PE image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeImage<'a> {
    pub sections: Vec<PeSection<'a>>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at.checked_add(2)?).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> PeImage<'a> {
    /// Reads the DOS header, the PE signature, the COFF header and the section table, and the
    /// raw data range of each section, all bounds-checked against `bytes`. Nothing else of the
    /// image is interpreted.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.get(..2) != Some(b"MZ") {
            return Err("not a PE image (no \"MZ\" header)".into());
        }
        let pe = u32_at(bytes, 0x3c).ok_or("the DOS header ends early")? as usize;
        if pe.checked_add(4).and_then(|end| bytes.get(pe..end)) != Some(b"PE\0\0") {
            return Err("not a PE image (no \"PE\" signature where the DOS header points)".into());
        }
        let coff = pe + 4;
        let count = usize::from(u16_at(bytes, coff + 2).ok_or("the COFF header ends early")?);
        let optional = usize::from(u16_at(bytes, coff + 16).ok_or("the COFF header ends early")?);
        if count > MAX_SECTIONS {
            return Err(format!("{count} sections, more than the {MAX_SECTIONS} a PE image may have"));
        }
        let table = coff + 20 + optional;
        let table_end = table + count * 40;
        if table_end > bytes.len() {
            return Err("the section table runs past the end of the file".into());
        }
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let at = table + i * 40;
            let name_field = &bytes[at..at + 8];
            let name = &name_field[..name_field.iter().position(|b| *b == 0).unwrap_or(8)];
            let field = |offset: usize| u32_at(bytes, at + offset).ok_or("the section table ends early");
            let virtual_size = field(8)?;
            let raw_size = field(16)?;
            let raw_at = field(20)? as usize;
            if u64::from(virtual_size) > MAX_UKI_BYTES {
                return Err(format!("section {} maps {virtual_size} bytes, more than a UKI may", String::from_utf8_lossy(name)));
            }
            let mapped = raw_size.min(virtual_size) as usize;
            let raw = if mapped == 0 {
                &[][..]
            } else {
                raw_at.checked_add(mapped).and_then(|end| bytes.get(raw_at..end)).ok_or_else(|| {
                    format!("section {} claims data past the end of the file", String::from_utf8_lossy(name))
                })?
            };
            sections.push(PeSection { name, virtual_size, raw });
        }
        Ok(PeImage { sections })
    }

    /// The one section called `name`; a name that appears twice is refused (which one a loader
    /// takes is not something to guess about).
    pub fn section(&self, name: &str) -> Result<Option<&PeSection<'a>>, String> {
        let mut it = self.sections.iter().filter(|s| s.name == name.as_bytes());
        match (it.next(), it.next()) {
            (first, None) => Ok(first),
            _ => Err(format!("the image has more than one {name} section")),
        }
    }
}

fn extend(pcr: &mut [u8; 32], digest: &[u8]) {
    let mut h = Sha256::new();
    h.update(*pcr);
    h.update(digest);
    *pcr = h.finalize().into();
}

/// PCR 11 (sha256 bank, starting from zeros) after systemd-stub measured this UKI and then the
/// words of `phase` (`"sysinit:ready"`: `sysinit`, then `ready`; `""`: right after the stub).
pub fn predict_pcr11(image: &PeImage<'_>, phase: &str) -> Result<[u8; 32], String> {
    Ok(after_phase(measure_sections(image)?, phase))
}

/// PCR 11 right after the stub: each measured section's name (with its NUL), then its data.
pub fn measure_sections(image: &PeImage<'_>) -> Result<[u8; 32], String> {
    let mut pcr = [0u8; 32];
    for name in MEASURED_SECTIONS {
        let Some(section) = image.section(name)? else { continue };
        // The stub skips empty sections (and systemd-measure empty files).
        if section.virtual_size == 0 {
            continue;
        }
        let mut with_nul = name.as_bytes().to_vec();
        with_nul.push(0);
        extend(&mut pcr, &Sha256::digest(&with_nul));
        extend(&mut pcr, &section.loaded_sha256());
    }
    Ok(pcr)
}

/// `pcr` (from [`measure_sections`]) after systemd-pcrphase measured each word of `phase`.
pub fn after_phase(mut pcr: [u8; 32], phase: &str) -> [u8; 32] {
    for word in phase.split(':').filter(|w| !w.is_empty()) {
        extend(&mut pcr, &Sha256::digest(word.as_bytes()));
    }
    pcr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE image: DOS header pointing at "PE\0\0", a COFF header with no optional
    /// header, and the given sections (name, virtual size, raw data).
    fn pe(sections: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let pe_at = 0x40usize;
        let table = pe_at + 4 + 20;
        let data_at = table + sections.len() * 40;
        let mut out = vec![0u8; data_at];
        out[..2].copy_from_slice(b"MZ");
        out[0x3c..0x40].copy_from_slice(&(pe_at as u32).to_le_bytes());
        out[pe_at..pe_at + 4].copy_from_slice(b"PE\0\0");
        out[pe_at + 6..pe_at + 8].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        for (i, (name, virtual_size, raw)) in sections.iter().enumerate() {
            let at = table + i * 40;
            out[at..at + name.len()].copy_from_slice(name.as_bytes());
            out[at + 8..at + 12].copy_from_slice(&virtual_size.to_le_bytes());
            out[at + 16..at + 20].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            let raw_at = out.len() as u32;
            out[at + 20..at + 24].copy_from_slice(&raw_at.to_le_bytes());
            out.extend_from_slice(raw);
        }
        out
    }

    #[test]
    fn sections_are_read_with_their_loaded_size() {
        let bytes = pe(&[(".osrel", 3, b"ID=x"), (".pcrpkey", 8, b"12345678"), (".linux", 6, b"ab")]);
        let image = PeImage::parse(&bytes).expect("parses");
        let names: Vec<&[u8]> = image.sections.iter().map(|s| s.name).collect();
        assert_eq!(names, [&b".osrel"[..], b".pcrpkey", b".linux"]);
        // VirtualSize below the raw size: only VirtualSize bytes are mapped.
        assert_eq!(image.sections[0].raw, b"ID=");
        assert_eq!(image.sections[1].contents(), Some(&b"12345678"[..]));
        // VirtualSize above the raw size: the loader fills zeros, and so does the hash.
        let linux = image.section(".linux").expect("one").expect("there");
        assert_eq!(linux.contents(), None);
        assert_eq!(linux.loaded_sha256(), <[u8; 32]>::from(Sha256::digest(b"ab\0\0\0\0")));
    }

    #[test]
    fn pcr11_follows_the_stubs_order_not_the_files() {
        // The same sections in another file order measure the same; a changed byte does not.
        let a = pe(&[(".cmdline", 2, b"ro"), (".linux", 3, b"abc"), (".text", 1, b"x")]);
        let b = pe(&[(".linux", 3, b"abc"), (".cmdline", 2, b"ro")]);
        let c = pe(&[(".linux", 3, b"abc"), (".cmdline", 2, b"rw")]);
        let pcr = |bytes: &[u8], phase| predict_pcr11(&PeImage::parse(bytes).expect("parses"), phase).expect("predicts");
        assert_eq!(pcr(&a, ""), pcr(&b, ""));
        assert_ne!(pcr(&b, ""), pcr(&c, ""));
        // By hand: .linux first, then .cmdline, then the phase words.
        let mut want = [0u8; 32];
        for (name, data) in [(&b".linux\0"[..], &b"abc"[..]), (b".cmdline\0", b"ro")] {
            extend(&mut want, &Sha256::digest(name));
            extend(&mut want, &Sha256::digest(data));
        }
        assert_eq!(pcr(&a, ""), want);
        extend(&mut want, &Sha256::digest(b"sysinit"));
        assert_eq!(pcr(&a, "sysinit"), want);
        extend(&mut want, &Sha256::digest(b"ready"));
        assert_eq!(pcr(&a, "sysinit:ready"), want);
        // An empty section is skipped, as the stub skips it.
        let d = pe(&[(".linux", 3, b"abc"), (".cmdline", 2, b"ro"), (".splash", 0, b"")]);
        assert_eq!(pcr(&d, ""), pcr(&b, ""));
        // Two sections of one measured name: refused, not guessed.
        let twice = pe(&[(".linux", 3, b"abc"), (".linux", 3, b"def")]);
        let err = predict_pcr11(&PeImage::parse(&twice).expect("parses"), "").expect_err("two .linux");
        assert!(err.contains("more than one .linux"), "{err}");
    }

    #[test]
    fn garbage_and_truncated_images_are_refused_without_panicking() {
        let good = pe(&[(".linux", 4, b"abcd"), (".pcrsig", 2, b"{}")]);
        assert!(PeImage::parse(&good).is_ok());
        for (bytes, needle) in [
            (Vec::new(), "no \"MZ\""),
            (b"MZ".to_vec(), "ends early"),
            (b"XX".to_vec(), "no \"MZ\""),
            ({ let mut b = good.clone(); b[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes()); b }, "no \"PE\""),
            ({ let mut b = good.clone(); b[0x40] = b'X'; b }, "no \"PE\""),
            ({ let mut b = good.clone(); b[0x46..0x48].copy_from_slice(&97u16.to_le_bytes()); b }, "more than the 96"),
            ({ let mut b = good.clone(); b[0x46..0x48].copy_from_slice(&90u16.to_le_bytes()); b }, "past the end"),
            ({ let mut b = good.clone(); b[0x54..0x56].copy_from_slice(&u16::MAX.to_le_bytes()); b }, "past the end"),
            // The first section's raw data pointer past the end, and a size that overflows.
            ({ let mut b = good.clone(); b[0x58 + 20..0x58 + 24].copy_from_slice(&u32::MAX.to_le_bytes()); b }, "past the end of the file"),
            ({ let mut b = good.clone(); b[0x58 + 16..0x58 + 20].copy_from_slice(&u32::MAX.to_le_bytes()); b[0x58 + 8..0x58 + 12].copy_from_slice(&(1u32 << 20).to_le_bytes()); b }, "past the end of the file"),
            ({ let mut b = good.clone(); b[0x58 + 8..0x58 + 12].copy_from_slice(&u32::MAX.to_le_bytes()); b }, "more than a UKI may"),
            (good[..good.len() - 1].to_vec(), "past the end of the file"),
        ] {
            let err = PeImage::parse(&bytes).expect_err("refused");
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // Every prefix and every single-byte change of a valid image: an answer, never a panic.
        for len in 0..good.len() {
            let _ = PeImage::parse(&good[..len]);
        }
        for at in 0..good.len() {
            for value in [0u8, 0x7f, 0xff] {
                let mut b = good.clone();
                b[at] = value;
                // (A changed size byte can map up to 512 MiB of zeros: hashed correctly, but slowly.)
                if let Ok(image) = PeImage::parse(&b)
                    && image.sections.iter().all(|s| s.virtual_size < 1 << 20)
                {
                    let _ = predict_pcr11(&image, "sysinit:ready");
                }
            }
        }
    }
}
