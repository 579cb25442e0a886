//! Test support: a real software TPM (swtpm) started on free ports for one test and stopped
//! when dropped, and LUKS volume files in a temporary directory.
//!
//! These are device tests: when swtpm is not installed they fail with a message that says so,
//! never pass in silence.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const SWTPM: &str = "/usr/bin/swtpm";
const SETUP_HINT: &str = "apt-get install -y swtpm swtpm-tools libtss2-tcti-swtpm0 libtss2-dev libcryptsetup-dev";

/// A running swtpm. The TCTI uses `port` for commands and `port + 1` for control.
pub struct Swtpm {
    child: Child,
    pub port: u16,
    _state: tempfile::TempDir,
}

impl Swtpm {
    pub fn start() -> Swtpm {
        assert!(
            Path::new(SWTPM).is_file(),
            "swtpm_/luks_ tests need the software TPM at {SWTPM}, which is missing here. Install it: {SETUP_HINT}"
        );
        let state = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let port = free_port_pair();
            let mut child = Command::new(SWTPM)
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SWTPM}: {e}. {SETUP_HINT}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    // Lost a port race: try another pair.
                    eprintln!("swtpm exited early ({status}); retrying on other ports");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() && TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return Swtpm { child, port, _state: state };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start listening on any free port pair");
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stop it now (the drop does the same); used to test a TPM that vanished.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port P with P+1 also free at the time of asking.
fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
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
