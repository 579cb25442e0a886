//! Test support: a real software TPM (swtpm) started on free ports for one test and stopped
//! when dropped, and LUKS volume files in a temporary directory.
//!
//! These are device tests: when swtpm is not installed they fail with a message that says so,
//! never pass in silence.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A running swtpm for one test, with its state in a temporary directory.
pub struct Swtpm {
    inner: wardbox_volume::swtpm::SoftwareTpm,
    state: tempfile::TempDir,
}

impl Swtpm {
    /// Start one, or fail the test saying what is missing.
    pub fn start() -> Swtpm {
        let state = tempfile::tempdir().unwrap();
        match wardbox_volume::swtpm::SoftwareTpm::start(state.path()) {
            Ok(inner) => Swtpm { inner, state },
            Err(e) => panic!("swtpm_/luks_ tests need a software TPM: {e}"),
        }
    }

    pub fn tcti(&self) -> String {
        self.inner.tcti()
    }

    /// Stop it now (the drop does the same); used to test a TPM that vanished.
    pub fn stop(&mut self) {
        self.inner.stop();
    }

    /// A reboot of the machine: the same TPM (its seeds, so its sealed blobs, persist in the
    /// state directory) with every PCR back at zero. It listens on new ports: take `tcti()` again.
    pub fn reboot(&mut self) {
        self.inner.stop();
        self.inner = wardbox_volume::swtpm::SoftwareTpm::start(self.state.path())
            .unwrap_or_else(|e| panic!("restarting the software TPM failed: {e}"));
    }
}

/// A sparse 32 MiB file to hold a LUKS2 volume (the header alone takes 16 MiB).
pub fn volume_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(32 * 1024 * 1024).unwrap();
    path
}

/// SHA-256 of a whole file, to show that a refused operation changed nothing.
pub fn file_sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}
