//! A software TPM (swtpm) process, for tests, the bench and the dev profile. Never used by the
//! appliance profile, whose configuration only accepts `device:` TCTIs.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs swtpm.
pub const SWTPM_BINARY: &str = "/usr/bin/swtpm";

/// Errors starting swtpm.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    #[error(
        "the software TPM {path} is missing; install it with \
         `apt-get install -y swtpm swtpm-tools libtss2-tcti-swtpm0`"
    )]
    Missing { path: PathBuf },
    #[error("cannot start {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("swtpm did not start listening on 127.0.0.1 ({detail})")]
    NotListening { detail: String },
    #[error("no free pair of TCP ports on 127.0.0.1: {0}")]
    Ports(std::io::Error),
}

/// A running swtpm on 127.0.0.1; stopped when dropped. The TCTI uses `port` for TPM commands
/// and `port + 1` for its control channel.
#[derive(Debug)]
pub struct SoftwareTpm {
    child: Child,
    port: u16,
}

impl SoftwareTpm {
    /// Start swtpm keeping its state (its seeds, so its sealed blobs) in `state_dir`.
    pub fn start(state_dir: &Path) -> Result<Self, SwtpmError> {
        Self::start_with(Path::new(SWTPM_BINARY), state_dir)
    }

    pub fn start_with(binary: &Path, state_dir: &Path) -> Result<Self, SwtpmError> {
        if !binary.is_file() {
            return Err(SwtpmError::Missing { path: binary.to_path_buf() });
        }
        let mut last = String::new();
        // A port found free can be taken before swtpm binds it; retry on another pair.
        for _ in 0..20 {
            let port = free_port_pair()?;
            let mut child = Command::new(binary)
                .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
                .arg("--tpmstate")
                .arg(format!("dir={}", state_dir.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|source| SwtpmError::Spawn { path: binary.to_path_buf(), source })?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("it exited with {status}");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() && TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    return Ok(SoftwareTpm { child, port });
                }
                if Instant::now() > deadline {
                    last = "nothing listened after 10 s".into();
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(SwtpmError::NotListening { detail: last })
    }

    /// The TCTI string for [`crate::Tpm::connect`].
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop the process now (the drop does the same).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SoftwareTpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port P with P+1 also free at the time of asking.
fn free_port_pair() -> Result<u16, SwtpmError> {
    for _ in 0..100 {
        let a = TcpListener::bind(("127.0.0.1", 0)).map_err(SwtpmError::Ports)?;
        let port = a.local_addr().map_err(SwtpmError::Ports)?.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(SwtpmError::Ports(std::io::Error::other("100 tries")))
}
