//! Writing a verified target to a slot (a partition, or a file in tests).
//!
//! A corrupt stick must be caught before the first byte reaches the slot, not half-way through
//! the flash. So the target is first streamed from the stick into a temporary file in a staging
//! directory (on the box: the encrypted data volume), with tough enforcing the signed size and
//! hash while it streams; only a complete, verified copy is then written to the slot, hashed
//! again as it is copied (the staging copy could change under us), synced, dropped from the page
//! cache and read back from the device to be hashed a third time.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tough::TargetName;

use crate::error::{UpdateError, from_tough};
use crate::manifest::ContentRole;
use crate::verify::{SignedTarget, VerifiedBundle};

/// A verified copy of a target in the staging directory ([`stage_target`]); deleted on drop
/// unless persisted where it belongs.
pub use tempfile::NamedTempFile as StagedFile;

/// Staging files start with this, so ones a power cut left behind can be found and removed.
const STAGING_PREFIX: &str = ".wardbox-update-";

const COPY_BUF: usize = 4 * 1024 * 1024;

/// Room kept free in the staging directory beyond the target itself, so an update never fills
/// the data volume the clinic's records live on.
pub const STAGING_RESERVE: u64 = 256 * 1024 * 1024;

/// Where a target goes.
#[derive(Debug, Clone)]
pub struct SlotPlan {
    /// The inactive slot (must exist; its size is its capacity).
    pub slot: PathBuf,
    /// The running slot, which is never written (compared by device and inode).
    pub running_slot: Option<PathBuf>,
    /// A directory on the data volume for the verified temporary copy.
    pub staging_dir: PathBuf,
    /// Free space to leave in the staging directory (default [`STAGING_RESERVE`]).
    pub staging_reserve: u64,
}

/// The phases the progress callback reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the stick into the staging copy, verifying size and hash.
    Verifying,
    /// Writing the verified copy to the slot.
    Writing,
    /// Reading the slot back and hashing it.
    ReadingBack,
}

/// What was written, for the audit record and the install receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotReceipt {
    pub target: String,
    pub slot: PathBuf,
    pub length: u64,
    pub sha256: String,
    pub verify_time: Duration,
    pub write_time: Duration,
    pub read_back_time: Duration,
}

/// Verifies the bundle's target with `role` into staging, then writes it to the slot and reads
/// it back. Any failure before the slot write leaves the slot byte-for-byte unchanged.
pub async fn write_to_slot(
    bundle: &VerifiedBundle,
    role: ContentRole,
    plan: &SlotPlan,
    progress: &mut (dyn FnMut(Phase, u64, u64) + Send),
) -> Result<SlotReceipt, UpdateError> {
    stage_for_slot(bundle, role, plan, progress).await?.write(plan, progress)
}

/// A target verified into staging for a slot, not yet written: what the caller may act on
/// (remove the boot entries that name the slot) only once the stick's bytes are known good.
#[derive(Debug)]
pub struct StagedSlotImage {
    staged: tempfile::NamedTempFile,
    target: SignedTarget,
    verify_time: Duration,
}

/// Verifies the bundle's target with `role` into staging, after checking that it fits the slot
/// and the staging space and that the slot is not the running one. Touches no slot: a
/// truncated, oversized or corrupt target from the stick fails here.
pub async fn stage_for_slot(
    bundle: &VerifiedBundle,
    role: ContentRole,
    plan: &SlotPlan,
    progress: &mut (dyn FnMut(Phase, u64, u64) + Send),
) -> Result<StagedSlotImage, UpdateError> {
    let target = bundle.target_for(role)?.clone();
    check_not_running(plan)?;
    let capacity = slot_capacity(&plan.slot)?;
    if target.length > capacity {
        return Err(UpdateError::NoSpace { what: format!("slot {}", plan.slot.display()), needed: target.length, available: capacity });
    }
    let free = free_space(&plan.staging_dir)?;
    let needed = target.length.saturating_add(plan.staging_reserve);
    if needed > free {
        return Err(UpdateError::NoSpace {
            what: format!("staging in {} (target plus {} reserve)", plan.staging_dir.display(), plan.staging_reserve),
            needed,
            available: free,
        });
    }
    let started = Instant::now();
    let staged = stage(bundle, &target, &plan.staging_dir, progress).await?;
    Ok(StagedSlotImage { staged, target, verify_time: started.elapsed() })
}

impl StagedSlotImage {
    /// Writes the verified copy to the plan's slot and reads it back.
    pub fn write(self, plan: &SlotPlan, progress: &mut (dyn FnMut(Phase, u64, u64) + Send)) -> Result<SlotReceipt, UpdateError> {
        let StagedSlotImage { staged, target, verify_time } = self;
        // The running slot is refused again: the plan is the caller's, and may be another.
        check_not_running(plan)?;
        // From here on the bytes are verified; the slot is opened for writing only now.
        let slot = plan.slot.clone();
        let staged_path = staged.path().to_owned();
        let expected = target.sha256.clone();
        let length = target.length;
        let started = Instant::now();
        let (written_hash, write_time, read_back) = {
            let mut progress_write = |done| progress(Phase::Writing, done, length);
            let written = copy_to_slot(&staged_path, &slot, length, &mut progress_write)?;
            let write_time = started.elapsed();
            let started = Instant::now();
            let mut progress_read = |done| progress(Phase::ReadingBack, done, length);
            let read_back = hash_prefix(&slot, length, &mut progress_read)?;
            (written, write_time, (read_back, started.elapsed()))
        };
        drop(staged);
        if written_hash != expected {
            return Err(UpdateError::Corrupt(format!(
                "the staged copy of {} changed before it was written (sha256 {written_hash}, signed {expected})",
                target.name
            )));
        }
        if read_back.0 != expected {
            return Err(UpdateError::WriteVerify { slot, expected, actual: read_back.0 });
        }
        Ok(SlotReceipt {
            target: target.name,
            slot,
            length,
            sha256: expected,
            verify_time,
            write_time,
            read_back_time: read_back.1,
        })
    }
}

/// Streams one signed target from the stick into a new temporary file in `staging_dir` (after
/// checking there is room for it plus `reserve`), with the same checks as [`write_to_slot`]:
/// tough enforces the signed length while streaming and the hash at the end, and the byte count
/// must equal the signed length. The caller moves the verified file where it belongs (a model
/// blob into the store, a policy file beside the one it replaces, a UKI onto the ESP); dropped,
/// it is deleted.
pub async fn stage_target(
    bundle: &VerifiedBundle,
    target: &SignedTarget,
    staging_dir: &Path,
    reserve: u64,
    progress: &mut (dyn FnMut(Phase, u64, u64) + Send),
) -> Result<tempfile::NamedTempFile, UpdateError> {
    let free = free_space(staging_dir)?;
    let needed = target.length.saturating_add(reserve);
    if needed > free {
        return Err(UpdateError::NoSpace {
            what: format!("staging in {} ({} plus {reserve} reserve)", staging_dir.display(), target.name),
            needed,
            available: free,
        });
    }
    stage(bundle, target, staging_dir, progress).await
}

/// Free bytes in the file system holding `dir` (for the caller's own space checks).
pub fn free_bytes(dir: &Path) -> Result<u64, UpdateError> {
    free_space(dir)
}

/// Streams the target from the stick into a temporary file; tough stops the stream with an
/// error at the first byte past the signed length and on a hash mismatch at the end. The
/// temporary file is deleted when dropped, so a failure leaves nothing behind.
async fn stage(
    bundle: &VerifiedBundle,
    target: &SignedTarget,
    staging_dir: &Path,
    progress: &mut (dyn FnMut(Phase, u64, u64) + Send),
) -> Result<tempfile::NamedTempFile, UpdateError> {
    let mut staged = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempfile_in(staging_dir)
        .map_err(UpdateError::io("creating staging file", staging_dir))?;
    let name = TargetName::new(target.name.as_str()).map_err(from_tough)?;
    let mut stream = bundle
        .repo
        .read_target(&name)
        .await
        .map_err(from_tough)?
        .ok_or_else(|| UpdateError::Corrupt(format!("{} is not a signed target", target.name)))?;
    let mut done = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(from_tough)?;
        staged.write_all(&chunk).map_err(|e| staging_write_error(e, staging_dir, target.length))?;
        done += chunk.len() as u64;
        progress(Phase::Verifying, done, target.length);
    }
    // tough checks the hash when the stream ends; the length check is ours as well, so a target
    // declared longer than it hashes can never pass as complete.
    if done != target.length {
        return Err(UpdateError::Corrupt(format!("{} is {done} bytes, the signed length is {}", target.name, target.length)));
    }
    staged.as_file().sync_all().map_err(UpdateError::io("syncing staging file", staged.path().to_owned()))?;
    Ok(staged)
}

/// Removes staging files a power cut or a killed process left behind; returns how many. Call it
/// when no install is running (the agent, at start).
pub fn clean_stale_staging(staging_dir: &Path) -> Result<usize, UpdateError> {
    let mut removed = 0;
    for entry in std::fs::read_dir(staging_dir).map_err(UpdateError::io("reading staging directory", staging_dir))? {
        let entry = entry.map_err(UpdateError::io("reading staging directory", staging_dir))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            std::fs::remove_file(entry.path()).map_err(UpdateError::io("removing stale staging file", entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn staging_write_error(e: std::io::Error, dir: &Path, needed: u64) -> UpdateError {
    if e.raw_os_error() == Some(nix::libc::ENOSPC) {
        UpdateError::NoSpace { what: format!("staging in {}", dir.display()), needed, available: free_space(dir).unwrap_or(0) }
    } else {
        UpdateError::io("writing staging file", dir)(e)
    }
}

fn check_not_running(plan: &SlotPlan) -> Result<(), UpdateError> {
    let Some(running) = &plan.running_slot else {
        return Ok(());
    };
    let a = std::fs::metadata(&plan.slot).map_err(UpdateError::io("reading slot", &plan.slot))?;
    let b = std::fs::metadata(running).map_err(UpdateError::io("reading running slot", running))?;
    // Block devices are the same device when their rdev matches; files when dev+inode match.
    let same = (a.rdev() != 0 && a.rdev() == b.rdev()) || (a.dev() == b.dev() && a.ino() == b.ino());
    if same {
        return Err(UpdateError::RunningSlot(plan.slot.clone()));
    }
    Ok(())
}

/// The slot's size: a partition's size, or a file's length (seeking to the end works for both).
fn slot_capacity(slot: &Path) -> Result<u64, UpdateError> {
    let mut f = File::open(slot).map_err(UpdateError::io("opening slot", slot))?;
    f.seek(SeekFrom::End(0)).map_err(UpdateError::io("sizing slot", slot))
}

fn free_space(dir: &Path) -> Result<u64, UpdateError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| UpdateError::io("reading free space of", dir)(std::io::Error::from(e)))?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Copies the staged file over the start of the slot, hashing what it copies, then syncs and
/// drops the slot's pages from the cache so the read-back comes from the device.
fn copy_to_slot(staged: &Path, slot: &Path, length: u64, progress: &mut dyn FnMut(u64)) -> Result<String, UpdateError> {
    let mut src = File::open(staged).map_err(UpdateError::io("opening staging file", staged))?;
    // No truncate, no create: a partition cannot be truncated, and a missing slot is an error.
    let mut dst = OpenOptions::new().write(true).open(slot).map_err(UpdateError::io("opening slot for writing", slot))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    let mut done = 0u64;
    while done < length {
        let want = usize::try_from((length - done).min(COPY_BUF as u64)).unwrap_or(COPY_BUF);
        let n = src.read(&mut buf[..want]).map_err(UpdateError::io("reading staging file", staged))?;
        if n == 0 {
            return Err(UpdateError::Corrupt(format!("the staged copy ended at {done} of {length} bytes")));
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(UpdateError::io("writing slot", slot))?;
        done += n as u64;
        progress(done);
    }
    dst.sync_all().map_err(UpdateError::io("syncing slot", slot))?;
    drop_cache(&dst);
    Ok(hex::encode(hasher.finalize()))
}

fn drop_cache(f: &File) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    // Best effort: when the kernel keeps the pages anyway the read-back still hashes what the
    // kernel will hand to the next reader, which is what boots.
    let _ = posix_fadvise(f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

/// sha256 of the first `length` bytes of a file or device.
pub fn hash_prefix(path: &Path, length: u64, progress: &mut dyn FnMut(u64)) -> Result<String, UpdateError> {
    let mut f = File::open(path).map_err(UpdateError::io("opening for read-back", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    let mut done = 0u64;
    while done < length {
        let want = usize::try_from((length - done).min(COPY_BUF as u64)).unwrap_or(COPY_BUF);
        let n = f.read(&mut buf[..want]).map_err(UpdateError::io("reading back", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex::encode(hasher.finalize()))
}
