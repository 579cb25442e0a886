//! A backup disk that stays mounted but returns I/O errors (EIO), for the tests of the backup
//! crate and of the agent: a real FUSE filesystem (`failing_disk.py`, libfuse 2 through the
//! Debian package `python3-fusepy`) passing every operation through to a directory until a
//! fault set here fires. The kernel then answers the program's reads and writes with EIO, as
//! it does for a USB disk with bad sectors or a loose cable.
//!
//! Needs `/dev/fuse`, `fusermount` (Debian `fuse`) and `/usr/bin/python3` with `fusepy`
//! (Debian `python3-fusepy`; tests/deps.d/backup.list), and root to mount; a test that uses it
//! fails naming what is missing.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The filesystem, written next to the control files when a disk is mounted.
const SCRIPT: &str = include_str!("failing_disk.py");
const PYTHON: &str = "/usr/bin/python3";
const FUSERMOUNT: &str = "/usr/bin/fusermount";

/// A mounted failing disk; unmounted when dropped.
pub struct FailingDisk {
    child: Child,
    mount_point: PathBuf,
    control: PathBuf,
}

fn require(ok: bool, what: &str) {
    assert!(ok, "this test mounts a FUSE filesystem that returns I/O errors, and needs {what}");
}

impl FailingDisk {
    /// Mount a disk at `mount_point` (an empty directory) whose contents live in `backing` (made
    /// if absent), with its control files in `control` (a directory outside the mount).
    pub fn mount(backing: &Path, mount_point: &Path, control: &Path) -> FailingDisk {
        require(Path::new("/dev/fuse").exists(), "/dev/fuse (the fuse kernel module; in a container, the device passed in)");
        require(Path::new(FUSERMOUNT).is_file(), "fusermount (Debian package `fuse`)");
        require(Path::new(PYTHON).is_file(), "/usr/bin/python3 (Debian package `python3`)");
        let fusepy = Command::new(PYTHON).args(["-c", "import fusepy"]).output().expect("run /usr/bin/python3");
        require(fusepy.status.success(), "the Python module fusepy for /usr/bin/python3 (Debian package `python3-fusepy`)");
        std::fs::create_dir_all(backing).unwrap();
        std::fs::create_dir_all(control).unwrap();
        let script = control.join("failing_disk.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let log = control.join("failing-disk.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(PYTHON)
            .arg(&script)
            .args([backing, mount_point, control])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start failing_disk.py");
        let mut disk = FailingDisk { child, mount_point: mount_point.to_owned(), control: control.to_owned() };
        let parent = mount_point.parent().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mounted = std::fs::metadata(mount_point).and_then(|m| Ok(m.dev() != std::fs::metadata(parent)?.dev()));
            if mounted.as_ref().is_ok_and(|m| *m) {
                return disk;
            }
            if let Ok(Some(status)) = disk.child.try_wait() {
                panic!(
                    "the failing disk could not be mounted on {} ({status}; needs root and a working /dev/fuse): {}",
                    mount_point.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the failing disk was not mounted on {} within 30 s (last look: {mounted:?})", mount_point.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn set(&self, name: &str, value: &str) {
        let file = self.control.join(name);
        std::fs::write(file.with_extension("new"), value).unwrap();
        std::fs::rename(file.with_extension("new"), file).unwrap();
    }

    /// Every operation on `path` (relative to the disk's root) fails with EIO: a bad sector
    /// under one file; the rest of the disk works.
    pub fn fail_path(&self, path: &str) {
        self.set("fail-path", path);
    }

    /// Once `bytes` more have been written through the mount, every write fails with EIO.
    pub fn fail_writes_after(&self, bytes: u64) {
        self.set("fail-writes-after", &bytes.to_string());
    }

    /// The first unlink of a file in `dir` (relative to the disk's root) fails with EIO and
    /// removes nothing, and from then on every operation fails: the disk fails at that moment.
    pub fn fail_at_first_unlink_in(&self, dir: &str) {
        self.set("fail-at-unlink-in", dir);
    }

    /// Every operation fails with EIO from now on.
    pub fn fail_everything(&self) {
        self.set("fail", "");
    }

    /// The disk works again (as after it was plugged in anew): every fault is cleared.
    pub fn heal(&self) {
        for name in ["fail", "fail-path", "fail-writes-after", "fail-at-unlink-in"] {
            match std::fs::remove_file(self.control.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("clear the fault {name}: {e}"),
            }
        }
    }

    /// Which fault fired first, if any ("write /data/… after … bytes", "unlink /keys/…").
    pub fn fired(&self) -> Option<String> {
        std::fs::read_to_string(self.control.join("fired")).ok().map(|s| s.trim().to_owned())
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = Command::new(FUSERMOUNT).arg("-u").arg("-z").arg(&self.mount_point).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
