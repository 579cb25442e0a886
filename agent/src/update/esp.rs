//! Which system slot an entry on the ESP boots.
//!
//! A UKI's signed command line (its `.cmdline` PE section) names its root partition,
//! `root=PARTUUID=<slot>`. When a full install rewrites a slot, every older entry that names
//! that slot would start the new system under an old version's name, or, after a power cut
//! half-way through the write, a half-written one. Such entries are removed before the slot is
//! opened for writing ([`entries_booting`]); the running slot's entries are never touched.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A `.cmdline` longer than this is not one the image build made.
const MAX_CMDLINE: u64 = 64 * 1024;
/// The PE headers and section table are read from the first bytes only.
const HEADER_BYTES: usize = 64 * 1024;

/// Where the `.cmdline` section lies in a PE file, from its headers (pure): (offset, length).
pub fn cmdline_section(header: &[u8]) -> Option<(u64, u64)> {
    let u16_at = |at: usize| header.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| header.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if header.get(..2)? != b"MZ" {
        return None;
    }
    let pe = u32_at(0x3c)? as usize;
    if header.get(pe..pe + 4)? != b"PE\0\0" {
        return None;
    }
    let sections = u16_at(pe + 6)? as usize;
    let optional = u16_at(pe + 20)? as usize;
    let table = pe + 24 + optional;
    (0..sections).find_map(|i| {
        let at = table + i * 40;
        if header.get(at..at + 8)? != b".cmdline" {
            return None;
        }
        let virtual_size = u64::from(u32_at(at + 8)?);
        let raw_size = u64::from(u32_at(at + 16)?);
        let offset = u64::from(u32_at(at + 20)?);
        Some((offset, virtual_size.min(raw_size)))
    })
}

/// The partition a kernel command line mounts as root by `root=PARTUUID=` (pure; lowercase).
pub fn root_partuuid(cmdline: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix("root=PARTUUID=")).map(str::to_ascii_lowercase)
}

/// The root partition a UKI file's command line names; None when it is not a PE image with a
/// `.cmdline` section naming one.
pub fn uki_root_partuuid(path: &Path) -> Option<String> {
    let mut file = fs::File::open(path).ok()?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    file.by_ref().take(HEADER_BYTES as u64).read_to_end(&mut header).ok()?;
    let (offset, len) = cmdline_section(&header)?;
    if len > MAX_CMDLINE {
        return None;
    }
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = Vec::new();
    file.take(len).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    root_partuuid(text.trim_end_matches('\0'))
}

/// The PARTUUID of the partition `slot` is (by its `/dev/disk/by-partuuid` link); None for a
/// slot that is not a partition (a file on a dev box).
pub fn slot_partuuid(slot: &Path) -> Option<String> {
    let device = fs::canonicalize(slot).ok()?;
    fs::read_dir("/dev/disk/by-partuuid")
        .ok()?
        .filter_map(Result::ok)
        .find(|e| fs::canonicalize(e.path()).is_ok_and(|p| p == device))
        .and_then(|e| e.file_name().to_str().map(str::to_ascii_lowercase))
}

/// The `wardbox-*.efi` entries in `esp_dir` whose UKI boots the partition `partuuid`.
pub fn entries_booting(esp_dir: &Path, partuuid: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(esp_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("wardbox-") || !name.to_ascii_lowercase().ends_with(".efi") {
            continue;
        }
        if uki_root_partuuid(&entry.path()).is_some_and(|p| p == partuuid.to_ascii_lowercase()) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE file with a `.cmdline` section holding `cmdline` (and a NUL pad), as objcopy
    /// lays out a UKI: DOS header, PE signature, COFF header, no optional header, one section.
    fn fake_uki(cmdline: &str) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        f[0x40..0x44].copy_from_slice(b"PE\0\0");
        f[0x46..0x48].copy_from_slice(&1u16.to_le_bytes());
        f[0x54..0x56].copy_from_slice(&0u16.to_le_bytes());
        let s = 0x40 + 24;
        f[s..s + 8].copy_from_slice(b".cmdline");
        let data = format!("{cmdline}\0");
        f[s + 8..s + 12].copy_from_slice(&(cmdline.len() as u32).to_le_bytes());
        f[s + 16..s + 20].copy_from_slice(&(data.len() as u32).to_le_bytes());
        f[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes());
        f.extend_from_slice(data.as_bytes());
        f
    }

    #[test]
    fn the_root_a_uki_names_is_read_from_its_cmdline_section() {
        let dir = super::super::tempdir::TempDir::new().expect("dir");
        let a = "8d6b2f4e-1c3a-4f7e-a2b5-6e9c0d1f2a3b";
        let b = "4a1e9c7d-2b3f-4e5a-8c6d-7f0a1b2c3d4e";
        let write = |name: &str, bytes: &[u8]| fs::write(dir.path().join(name), bytes).expect("write");
        write("wardbox-0.1.0.efi", &fake_uki(&format!("root=PARTUUID={a} ro rootfstype=ext4 quiet")));
        write("wardbox-0.3.0+0-3.efi", &fake_uki(&format!("root=PARTUUID={} ro", a.to_ascii_uppercase())));
        write("wardbox-0.2.0.efi", &fake_uki(&format!("root=PARTUUID={b} ro")));
        write("wardbox-notes.efi", b"MZ not a PE file at all");
        write("other-a.efi", &fake_uki(&format!("root=PARTUUID={a} ro")));
        assert_eq!(uki_root_partuuid(&dir.path().join("wardbox-0.2.0.efi")).as_deref(), Some(b));
        assert_eq!(uki_root_partuuid(&dir.path().join("wardbox-notes.efi")), None);
        let booting_a: Vec<String> = entries_booting(dir.path(), a)
            .expect("list")
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(booting_a, ["wardbox-0.1.0.efi", "wardbox-0.3.0+0-3.efi"]);
        assert_eq!(entries_booting(dir.path(), b).expect("list").len(), 1);
    }

    #[test]
    fn broken_headers_are_no_section_not_a_panic() {
        let good = fake_uki("root=PARTUUID=x ro");
        for cut in [0, 1, 2, 0x3c, 0x44, 0x50, 0x58, 0x60, 0x70] {
            let _ = cmdline_section(&good[..cut]);
        }
        let mut bad = good.clone();
        bad[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(cmdline_section(&bad), None);
        assert_eq!(root_partuuid("ro quiet"), None);
    }
}
