//! Filesystem on the opened volume: make it once at provisioning, mount it at boot.
//!
//! These need root and a device-mapper device, so they run on the appliance and in the qemu
//! guest of the image tests (issue 9), not on the build host; there is no host test for them.
//! `mounted_at` is pure over the text of /proc/self/mounts and is unit-tested.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};

/// Errors making or mounting the filesystem.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mkfs helper is not at its configured absolute path.
    #[error("the filesystem tool {path} is missing; install e2fsprogs")]
    MissingTool { path: PathBuf },
    /// mkfs ran and failed; its stderr is kept.
    #[error("making the filesystem on {device} failed: {stderr}")]
    Mkfs { device: PathBuf, stderr: String },
    /// The mount or unmount system call failed.
    #[error("cannot {op} {target}: {source}")]
    Mount { op: &'static str, target: PathBuf, source: nix::Error },
    /// The mount point is not usable.
    #[error("the mount point {path} cannot be prepared: {source}")]
    MountPoint { path: PathBuf, source: std::io::Error },
}

/// The filesystem type the data volume carries.
pub const FS_TYPE: &str = "ext4";

/// Make an ext4 filesystem on the opened volume (provisioning only).
pub fn make_filesystem(mkfs: &Path, device: &Path) -> Result<(), MountError> {
    if !mkfs.is_file() {
        return Err(MountError::MissingTool { path: mkfs.to_path_buf() });
    }
    let out = Command::new(mkfs)
        .args(["-q", "-L", "wardbox-data"])
        .arg(device)
        .output()
        .map_err(|e| MountError::Mkfs { device: device.to_path_buf(), stderr: e.to_string() })?;
    if !out.status.success() {
        return Err(MountError::Mkfs {
            device: device.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Mount the opened volume. No set-uid programs, no device files, no executables on the data
/// volume: it holds data only (models are read, not executed).
pub fn mount_volume(device: &Path, mount_point: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(mount_point)
        .map_err(|source| MountError::MountPoint { path: mount_point.to_path_buf(), source })?;
    nix::mount::mount(
        Some(device),
        mount_point,
        Some(FS_TYPE),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| MountError::Mount { op: "mount the data volume on", target: mount_point.to_path_buf(), source })
}

/// Unmount the data volume.
pub fn unmount_volume(mount_point: &Path) -> Result<(), MountError> {
    nix::mount::umount2(mount_point, MntFlags::empty())
        .map_err(|source| MountError::Mount { op: "unmount", target: mount_point.to_path_buf(), source })
}

/// The device mounted at `mount_point`, from the text of /proc/self/mounts.
pub fn mounted_at(proc_mounts: &str, mount_point: &Path) -> Option<String> {
    let want = mount_point.to_str()?;
    proc_mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let source = fields.next()?;
        // /proc/mounts escapes spaces in paths as \040.
        let target = fields.next()?.replace("\\040", " ");
        (target == want).then(|| source.to_string())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mount_table_lookup() {
        let table = "proc /proc proc rw 0 0\n/dev/mapper/wardbox-data /var/lib/wardbox/data ext4 rw,nosuid 0 0\n/dev/sda1 /mnt/a\\040b vfat rw 0 0\n";
        assert_eq!(mounted_at(table, Path::new("/var/lib/wardbox/data")).as_deref(), Some("/dev/mapper/wardbox-data"));
        assert_eq!(mounted_at(table, Path::new("/mnt/a b")).as_deref(), Some("/dev/sda1"));
        assert_eq!(mounted_at(table, Path::new("/var/lib/wardbox")), None);
    }

    #[test]
    fn missing_mkfs_is_named() {
        let err = make_filesystem(Path::new("/nonexistent/mkfs.ext4"), Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mkfs.ext4"), "{err}");
    }
}
