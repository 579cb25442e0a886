//! The verified root of a system slot (dm-verity), as the update install checks it.
//!
//! A slot image is the root file system followed by its dm-verity hash tree (`image/verity.sh`);
//! the UKI that boots it carries `wardbox.verity_root_hash=<sha256>` and
//! `wardbox.verity_hash_offset=<bytes>` on its signed command line, and the initrd opens the root
//! through dm-verity with them (docs/image.md, "The verified root"). A UKI whose root hash does
//! not match the slot's tree would not boot (every read of the root fails), so before an update
//! makes the new slot bootable the install checks that it will:
//!
//! - the UKI names both arguments, or neither (neither is refused on a box whose running system
//!   is verified: an update may not take that away);
//! - the slot, as written and read back, holds a veritysetup superblock at the offset (format 1,
//!   SHA-256, 4096-byte blocks) whose data area ends exactly where the tree starts;
//! - SHA-256 of the salt and the tree's top block is the UKI's root hash.
//!
//! Only the superblock and the top block are read: every other byte of the slot was checked
//! against the bundle's signed hash while it was written and read back, so a top block that
//! matches the root hash means the whole tree, and through it the file system, is the one the
//! kernel will verify against.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// `wardbox update apply`'s exit code when the system image does not match the root hash on its
/// UKI's command line, or the UKI names none on a box whose running system is verified (the new
/// slot is not made bootable). Stable: docs/update.md lists it.
pub const EXIT_ROOT_UNVERIFIED: u8 = 20;

const ROOT_HASH_ARG: &str = "wardbox.verity_root_hash=";
const HASH_OFFSET_ARG: &str = "wardbox.verity_hash_offset=";
/// veritysetup's superblock: 512 bytes at the hash offset, padded to a hash block.
const SUPERBLOCK_BYTES: usize = 512;
const SIGNATURE: &[u8; 8] = b"verity\0\0";
/// The block size `image/verity.sh` uses for data and hash blocks (the page size: the kernel
/// takes no larger data block).
const BLOCK: u64 = 4096;

/// The dm-verity arguments of a kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityArgs {
    pub root_hash: [u8; 32],
    /// Where the superblock (and after it the tree) starts in the slot: the file system's size.
    pub hash_offset: u64,
}

impl VerityArgs {
    /// The arguments on `cmdline`: `None` when it names neither, an error when it names one,
    /// either twice, or a malformed value.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<VerityArgs>, String> {
        let values = |prefix: &str| cmdline.split_whitespace().filter_map(|w| w.strip_prefix(prefix)).collect::<Vec<_>>();
        let (hashes, offsets) = (values(ROOT_HASH_ARG), values(HASH_OFFSET_ARG));
        match (hashes.as_slice(), offsets.as_slice()) {
            ([], []) => Ok(None),
            ([hash], [offset]) => {
                let mut root_hash = [0u8; 32];
                hex::decode_to_slice(hash, &mut root_hash)
                    .map_err(|_| format!("{ROOT_HASH_ARG}{hash} is not a SHA-256 (64 hexadecimal digits)"))?;
                let hash_offset = offset
                    .parse::<u64>()
                    .ok()
                    .filter(|o| *o > 0 && *o % BLOCK == 0)
                    .ok_or_else(|| format!("{HASH_OFFSET_ARG}{offset} is not a positive multiple of {BLOCK} bytes"))?;
                Ok(Some(VerityArgs { root_hash, hash_offset }))
            }
            _ => Err(format!(
                "the command line must name {ROOT_HASH_ARG} and {HASH_OFFSET_ARG} once each (it names them {} and {} times)",
                hashes.len(),
                offsets.len()
            )),
        }
    }
}

/// Whether this box's running system was booted with a verified root (its kernel command line
/// names the dm-verity arguments). An unreadable /proc/cmdline counts as verified: the install
/// then requires a verified root of the update too.
pub fn running_system_verified() -> bool {
    std::fs::read_to_string("/proc/cmdline").map_or(true, |c| c.contains(ROOT_HASH_ARG))
}

/// The dm-verity arguments of a UKI's signed command line (`.cmdline`), checked before the slot
/// is written: `Ok(None)` when it names none, which only a box whose own root is not verified
/// takes (`running_verified`).
pub fn uki_args(image: &super::uki::PeImage<'_>, name: &str, running_verified: bool) -> Result<Option<VerityArgs>, String> {
    let args = match image.section(".cmdline")?.and_then(super::uki::PeSection::contents) {
        Some(cmdline) => {
            let cmdline = std::str::from_utf8(cmdline).map_err(|_| format!("{name}'s command line is not text"))?;
            VerityArgs::from_cmdline(cmdline.trim_end_matches('\0')).map_err(|e| format!("{name}: {e}"))?
        }
        None => None,
    };
    if args.is_none() && running_verified {
        return Err(format!(
            "{name} boots its root unverified (no {ROOT_HASH_ARG} on its command line), and this box's running system is verified: \
             an update may not take that away"
        ));
    }
    Ok(args)
}

/// Checks that the slot at `slot`, holding an image of `image_len` bytes (written and read back),
/// has the hash tree whose root is `args.root_hash` at `args.hash_offset`.
pub fn check_slot(slot: &Path, image_len: u64, args: &VerityArgs) -> Result<(), String> {
    let mut file = File::open(slot).map_err(|e| format!("cannot open the slot {}: {e}", slot.display()))?;
    check_tree(
        |offset, buf| {
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(buf)
        },
        image_len,
        args,
    )
    .map_err(|why| format!("the system image in {} does not match the root hash on its UKI's command line: {why}", slot.display()))
}

/// The check of [`check_slot`] over `read_at(offset, buf)`, which fills `buf` from the slot.
fn check_tree(mut read_at: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>, image_len: u64, args: &VerityArgs) -> Result<(), String> {
    let sb_end = args.hash_offset.checked_add(SUPERBLOCK_BYTES as u64).filter(|end| *end <= image_len).ok_or_else(|| {
        format!("the hash offset {} leaves no room for the superblock in the {image_len}-byte image", args.hash_offset)
    })?;
    let mut sb = [0u8; SUPERBLOCK_BYTES];
    read_at(args.hash_offset, &mut sb).map_err(|e| format!("reading the superblock at {}: {e}", args.hash_offset))?;
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    if &sb[..8] != SIGNATURE {
        return Err(format!("no dm-verity superblock at byte {}", args.hash_offset));
    }
    let (version, hash_type) = (u32_at(8), u32_at(12));
    if version != 1 || hash_type != 1 {
        return Err(format!("superblock version {version}, hash type {hash_type}: only version 1, type 1 (veritysetup's default) is known"));
    }
    let algorithm = &sb[32..64];
    let name_end = algorithm.iter().position(|b| *b == 0).unwrap_or(algorithm.len());
    if &algorithm[..name_end] != b"sha256" {
        return Err(format!("hash algorithm {:?}, not sha256", String::from_utf8_lossy(&algorithm[..name_end])));
    }
    let (data_block, hash_block) = (u64::from(u32_at(64)), u64::from(u32_at(68)));
    if data_block != BLOCK || hash_block != BLOCK {
        return Err(format!("data blocks of {data_block} and hash blocks of {hash_block} bytes, not {BLOCK} (image/verity.sh)"));
    }
    let data_blocks = u64::from_le_bytes(sb[72..80].try_into().expect("8 bytes"));
    if data_blocks.checked_mul(data_block) != Some(args.hash_offset) || data_blocks < 2 {
        return Err(format!(
            "the tree covers {data_blocks} data blocks, not the {} bytes before it: part of the file system would not be verified",
            args.hash_offset
        ));
    }
    let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    if salt_size > 256 {
        return Err(format!("a salt of {salt_size} bytes (at most 256)"));
    }
    let salt = &sb[88..88 + salt_size];
    // The tree starts at the first hash block after the superblock; its top level, one block,
    // comes first.
    let top_at = sb_end.div_ceil(hash_block) * hash_block;
    if top_at.checked_add(hash_block).is_none_or(|end| end > image_len) {
        return Err(format!("the image ends before the tree's top block (byte {top_at})"));
    }
    let mut top = vec![0u8; hash_block as usize];
    read_at(top_at, &mut top).map_err(|e| format!("reading the tree's top block at {top_at}: {e}"))?;
    let mut h = Sha256::new();
    h.update(salt);
    h.update(&top);
    let actual: [u8; 32] = h.finalize().into();
    if actual != args.root_hash {
        return Err(format!("the tree's root is {}, the command line names {}", hex::encode(actual), hex::encode(args.root_hash)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "035e102431207afd2637b196eeb4c040cfc03e7af2b8c91dac672f1f552bb60f";

    #[test]
    fn command_line_arguments_come_in_pairs() {
        assert_eq!(VerityArgs::from_cmdline("root=PARTUUID=x ro quiet"), Ok(None));
        let args = VerityArgs::from_cmdline(&format!("ro {ROOT_HASH_ARG}{HASH} {HASH_OFFSET_ARG}16777216 quiet")).expect("ok").expect("some");
        assert_eq!((hex::encode(args.root_hash), args.hash_offset), (HASH.to_string(), 16_777_216));
        for bad in [
            format!("{ROOT_HASH_ARG}{HASH}"),
            format!("{HASH_OFFSET_ARG}4096"),
            format!("{ROOT_HASH_ARG}{HASH} {ROOT_HASH_ARG}{HASH} {HASH_OFFSET_ARG}4096"),
            format!("{ROOT_HASH_ARG}{} {HASH_OFFSET_ARG}4096", &HASH[1..]),
            format!("{ROOT_HASH_ARG}{HASH} {HASH_OFFSET_ARG}4097"),
            format!("{ROOT_HASH_ARG}{HASH} {HASH_OFFSET_ARG}0"),
            format!("{ROOT_HASH_ARG}{HASH} {HASH_OFFSET_ARG}-4096"),
        ] {
            assert!(VerityArgs::from_cmdline(&bad).is_err(), "{bad}");
        }
    }

    /// A slot image made by the real `image/verity.sh` (veritysetup) from a real ext4 file
    /// system; the test fails naming what is missing where the tools are not installed.
    fn made_by_verity_sh(dir: &Path) -> (std::path::PathBuf, VerityArgs) {
        let fs = dir.join("root.ext4");
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): the test needs e2fsprogs and cryptsetup-bin"));
            assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).expect("utf-8")
        };
        run(std::process::Command::new("truncate").args(["-s", "24M"]).arg(&fs));
        run(std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&fs));
        let slot = dir.join("root.img");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/verity.sh");
        let printed = run(std::process::Command::new(script).arg(&fs).arg(&slot));
        let args = VerityArgs::from_cmdline(&printed).expect("parse").expect("verity.sh printed both arguments");
        assert_eq!(args.hash_offset, 24 * 1024 * 1024);
        (slot, args)
    }

    #[test]
    fn the_tree_veritysetup_made_matches_its_root_hash_and_a_changed_byte_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (slot, args) = made_by_verity_sh(dir.path());
        let len = std::fs::metadata(&slot).expect("meta").len();
        check_slot(&slot, len, &args).expect("the tree veritysetup made matches");

        // Another root hash, an offset that is not the tree's, an image cut before the top block.
        let mut other = args.clone();
        other.root_hash[0] ^= 1;
        assert!(check_slot(&slot, len, &other).expect_err("other hash").contains("the command line names"));
        let moved = VerityArgs { hash_offset: args.hash_offset - BLOCK, ..args.clone() };
        assert!(check_slot(&slot, len, &moved).expect_err("moved").contains("no dm-verity superblock"));
        assert!(check_slot(&slot, args.hash_offset + 1024, &args).is_err());

        // One changed bit in the top block, and a superblock that covers less than the file system.
        let mut bytes = std::fs::read(&slot).expect("read");
        let top = (args.hash_offset + BLOCK) as usize;
        bytes[top + 7] ^= 0x10;
        let flipped = dir.path().join("flipped.img");
        std::fs::write(&flipped, &bytes).expect("write");
        assert!(check_slot(&flipped, len, &args).expect_err("flipped").contains("the tree's root is"));
        bytes[top + 7] ^= 0x10;
        let sb = args.hash_offset as usize;
        let blocks = u64::from_le_bytes(bytes[sb + 72..sb + 80].try_into().expect("8")) - 1;
        bytes[sb + 72..sb + 80].copy_from_slice(&blocks.to_le_bytes());
        let short = dir.path().join("short.img");
        std::fs::write(&short, &bytes).expect("write");
        assert!(check_slot(&short, len, &args).expect_err("short").contains("would not be verified"));
    }
}
