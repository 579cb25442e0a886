//! Harness for the end-to-end tests: boot the appliance image in qemu with a software TPM,
//! watch its serial console, type into it, and reach its web port through a loopback
//! port-forward.
//!
//! Everything here drives real programs (qemu, swtpm, OVMF, the built image); nothing is
//! simulated. Missing programs are reported by [`require`] with the package that provides them.

pub mod appliance;
pub mod release;
pub mod report_probe;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A required program or file that is missing, with the Debian package that provides it.
#[derive(Debug)]
pub struct Missing {
    pub what: String,
    pub package: &'static str,
}

/// Check that every program and firmware file the qemu tier needs is present. Returns the list
/// of what is missing (empty when all is there).
pub fn require() -> Vec<Missing> {
    let mut missing = Vec::new();
    let programs: &[(&str, &'static str)] = &[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("swtpm", "swtpm"),
        ("curl", "curl"),
        ("sfdisk", "fdisk"),
        ("mkosi", "mkosi"),
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("mkfs.ext4", "e2fsprogs"),
        ("bc", "bc"),
        ("veritysetup", "cryptsetup-bin"),
    ];
    for (program, package) in programs {
        if which(program).is_none() {
            missing.push(Missing { what: format!("program `{program}`"), package });
        }
    }
    for file in [OVMF_CODE, OVMF_VARS_BLANK] {
        if !Path::new(file).is_file() {
            missing.push(Missing { what: format!("firmware file {file}"), package: "ovmf" });
        }
    }
    missing
}

/// OVMF with Secure Boot support (SMM), and its variable store without keys, into which
/// image/uefi.sh enrols the image's Secure Boot keys.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const OVMF_VARS_BLANK: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Run a command to completion; on failure the error carries its output.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(format!("{cmd:?} failed ({}):\n{text}", out.status)) }
}

/// A phase timer that prints each phase's duration as it ends, and a table at the end.
#[derive(Debug, Default)]
pub struct Phases {
    done: Vec<(String, Duration)>,
    current: Option<(String, Instant)>,
}

impl Phases {
    pub fn start(&mut self, name: &str) {
        self.end();
        eprintln!("== e2e: {name} ...");
        self.current = Some((name.to_string(), Instant::now()));
    }

    pub fn end(&mut self) {
        if let Some((name, t)) = self.current.take() {
            let d = t.elapsed();
            eprintln!("== e2e: {name}: {:.1} s", d.as_secs_f64());
            self.done.push((name, d));
        }
    }

    pub fn table(&mut self) -> String {
        self.end();
        let mut s = String::from("phase                                       seconds\n");
        let mut total = Duration::ZERO;
        for (name, d) in &self.done {
            s.push_str(&format!("{name:<44}{:>7.1}\n", d.as_secs_f64()));
            total += *d;
        }
        s.push_str(&format!("{:<44}{:>7.1}\n", "total", total.as_secs_f64()));
        s
    }
}

/// A software TPM for one boot, on a Unix control socket, keeping its state in `state_dir`
/// across boots (the same "chip" every boot, as on a real box).
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    pub socket: PathBuf,
}

impl Swtpm {
    pub fn start(state_dir: &Path, socket: &Path, log: &Path) -> Result<Swtpm, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(socket);
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", state_dir.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--log")
            .arg(format!("file={},level=1", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start swtpm: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(format!("swtpm did not create {} within 10 s", socket.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Swtpm { child, socket: socket.to_path_buf() })
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one boot of the appliance needs. It boots as a box does: no `-kernel`; the
/// firmware finds systemd-boot on the system disk's ESP, which starts a signed UKI (kernel,
/// initrd and command line inside it).
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The system disk: a qcow2 overlay (`.qcow2`) over the built disk, or a raw copy of it
    /// (any other name; the host can then read and write the ESP with mtools between boots).
    pub system_disk: PathBuf,
    pub data_disk: PathBuf,
    /// This box's UEFI variable store (a copy; it persists across boots like NVRAM).
    pub vars: PathBuf,
    pub tpm_socket: PathBuf,
    pub monitor_socket: PathBuf,
    /// Host loopback port forwarded to the guest's port 443.
    pub web_port: u16,
    pub memory_mib: u32,
    pub log: PathBuf,
}

/// A boot through the firmware and the bootloader on the disk ([`Vm::boot_firmware`]).
#[derive(Debug, Clone)]
pub struct FirmwareBootSpec {
    /// A raw GPT disk whose first partition is the ESP (image/uefi.sh's disk.raw, or a copy).
    pub system_disk: PathBuf,
    /// The UEFI variable store with the Secure Boot keys (a copy: the firmware writes it).
    pub vars: PathBuf,
    /// A software TPM's control socket ([`Swtpm`]), or no TPM.
    pub tpm_socket: Option<PathBuf>,
    pub monitor_socket: PathBuf,
    pub memory_mib: u32,
    pub log: PathBuf,
}

/// A device attached to a guest beside its system and data disks.
#[derive(Debug, Clone, Copy)]
pub enum Attach<'a> {
    /// A raw disk image, read-only, on virtio.
    Disk(&'a Path),
    /// A raw disk image as a USB stick (usb-storage on an xHCI controller), read-only on the
    /// host, with the USB serial number given (also its qemu device id, `usb-<serial>`, for
    /// [`Vm::unplug`]).
    UsbStick(&'a Path, &'a str),
    /// [`Attach::UsbStick`] that the guest may write (a backup disk).
    UsbDisk(&'a Path, &'a str),
    /// Another USB device by qemu's name (`usb-kbd`, `usb-mouse`).
    Usb(&'a str),
}

/// A running guest: its console transcript, and its stdin for typing at the console.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    transcript: Arc<Mutex<String>>,
    /// When qemu was started, and when each piece of the transcript arrived (its end offset and
    /// the time since the start): console milestones are timed afterwards ([`Vm::seen_at`]).
    started: Instant,
    arrivals: Arc<Mutex<Vec<(usize, Duration)>>>,
    /// How far [`Vm::expect`] has read.
    cursor: AtomicUsize,
    monitor_socket: PathBuf,
    pub web_port: u16,
}

impl Vm {
    pub fn boot(spec: &BootSpec) -> Result<Vm, String> {
        Self::boot_attached(spec, &[])
    }

    /// [`Vm::boot`] with more devices attached, in the order given (see [`Attach`]).
    pub fn boot_attached(spec: &BootSpec, attached: &[Attach]) -> Result<Vm, String> {
        // TCG by default: nested KVM on the build machines fails `-cpu max` (MSR 0x10a), and
        // TCG is what the timings in docs/image.md were taken with. WARDBOX_E2E_ACCEL=kvm where
        // KVM works.
        let accel = std::env::var("WARDBOX_E2E_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", &format!("q35,accel={accel},smm=on")])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
            .args(["-cpu", "max", "-smp", "2", "-m", &spec.memory_mib.to_string()])
            .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
            .args(["-monitor", &format!("unix:{},server=on,wait=off", spec.monitor_socket.display())])
            .args(["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")])
            .args(["-drive", &format!("if=pflash,format=raw,unit=1,file={}", spec.vars.display())]);
        let format = if spec.system_disk.extension().is_some_and(|e| e == "qcow2") { "qcow2" } else { "raw" };
        cmd.args(["-drive", &format!("file={},if=none,id=sys,format={format}", spec.system_disk.display())])
            .args(["-device", "virtio-blk-pci,drive=sys"])
            .args(["-drive", &format!("file={},if=none,id=data,format=raw", spec.data_disk.display())])
            .args(["-device", "virtio-blk-pci,drive=data"]);
        if attached.iter().any(|a| !matches!(a, Attach::Disk(_))) {
            cmd.args(["-device", "qemu-xhci,id=xhci"]);
        }
        for (i, attach) in attached.iter().enumerate() {
            match attach {
                Attach::Disk(disk) => {
                    cmd.args(["-drive", &format!("file={},if=none,id=extra{i},format=raw,readonly=on", disk.display())])
                        .args(["-device", &format!("virtio-blk-pci,drive=extra{i}")]);
                }
                Attach::UsbStick(image, serial) | Attach::UsbDisk(image, serial) => {
                    let read_only = if matches!(attach, Attach::UsbStick(..)) { ",readonly=on" } else { "" };
                    cmd.args(["-drive", &format!("file={},if=none,id=extra{i},format=raw{read_only}", image.display())])
                        .args(["-device", &format!("usb-storage,bus=xhci.0,drive=extra{i},removable=on,serial={serial},id=usb-{serial}")]);
                }
                Attach::Usb(device) => {
                    cmd.args(["-device", &format!("{device},bus=xhci.0")]);
                }
            }
        }
        cmd.args(["-chardev", &format!("socket,id=chrtpm,path={}", spec.tpm_socket.display())])
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"])
            // User-mode networking: the guest sees the host's loopback as 10.0.2.2, and the
            // host reaches the guest's 443 on a loopback port. Nothing else is reachable.
            .args([
                "-nic",
                &format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{}-:443", spec.web_port),
            ]);
        Self::spawn(cmd, &spec.log, &spec.monitor_socket, spec.web_port)
    }

    /// Boot through the firmware alone, as a box does: no `-kernel`; OVMF (Secure Boot capable,
    /// SMM) finds the bootloader on the raw system disk's ESP and decides, with the keys in
    /// `vars`, what may run. One CPU, no network, a TPM when the spec names one: for the
    /// boot-chain test.
    pub fn boot_firmware(spec: &FirmwareBootSpec) -> Result<Vm, String> {
        let accel = std::env::var("WARDBOX_E2E_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", &format!("q35,accel={accel},smm=on")])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
            .args(["-cpu", "max", "-smp", "1", "-m", &spec.memory_mib.to_string()])
            .args(["-display", "none", "-no-reboot", "-serial", "stdio", "-nic", "none"])
            .args(["-monitor", &format!("unix:{},server=on,wait=off", spec.monitor_socket.display())])
            .args(["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")])
            .args(["-drive", &format!("if=pflash,format=raw,unit=1,file={}", spec.vars.display())])
            .args(["-drive", &format!("file={},if=none,id=sys,format=raw", spec.system_disk.display())])
            .args(["-device", "virtio-blk-pci,drive=sys"]);
        if let Some(socket) = &spec.tpm_socket {
            cmd.args(["-chardev", &format!("socket,id=chrtpm,path={}", socket.display())])
                .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"]);
        }
        Self::spawn(cmd, &spec.log, &spec.monitor_socket, 0)
    }

    /// Start qemu with its serial console on stdio, and collect the console into the
    /// transcript and the log file.
    fn spawn(mut cmd: Command, log: &Path, monitor_socket: &Path, web_port: u16) -> Result<Vm, String> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start qemu: {e}"))?;
        let started = Instant::now();
        let transcript = Arc::new(Mutex::new(String::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let log = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let transcript = transcript.clone();
            let arrivals = arrivals.clone();
            let mut log = log.try_clone().map_err(|e| e.to_string())?;
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                // The end of the last read that may continue in the next one: half a UTF-8
                // character or half an escape sequence, which cleaned alone would leave its
                // other half in the transcript (and split a word a test waits for).
                let mut pending = Vec::new();
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = log.write_all(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                    let (complete, rest) = split_incomplete_tail(&pending);
                    let text = clean(&String::from_utf8_lossy(complete));
                    pending = rest.to_vec();
                    if let Ok(mut t) = transcript.lock() {
                        t.push_str(&text);
                        if let Ok(mut a) = arrivals.lock() {
                            a.push((t.len(), started.elapsed()));
                        }
                    }
                }
            });
        }
        Ok(Vm {
            child,
            transcript,
            started,
            arrivals,
            cursor: AtomicUsize::new(0),
            monitor_socket: monitor_socket.to_path_buf(),
            web_port,
        })
    }

    /// How long after qemu's start `needle` first appeared on the console (to the arrival of
    /// the piece of output that held its end), or None if it has not.
    pub fn seen_at(&self, needle: &str) -> Option<Duration> {
        let text = self.transcript();
        let end = text.find(needle)? + needle.len();
        let arrivals = self.arrivals.lock().ok()?;
        arrivals.iter().find(|(until, _)| *until >= end).map(|(_, at)| *at)
    }

    /// Time since qemu was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wait for qemu to exit by itself (the guest powered off), at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!("qemu did not exit within {} s", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The whole console transcript so far.
    pub fn transcript(&self) -> String {
        self.transcript.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Wait until `needle` appears on the console after the cursor; move the cursor past it
    /// and return the text from the cursor to the end of the line that holds the needle (once
    /// that line is complete).
    /// Fails early when qemu exits, or when one of `fail_on` appears first.
    pub fn expect(&mut self, needle: &str, fail_on: &[&str], timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let from = self.cursor.load(Ordering::SeqCst);
            let text = self.transcript();
            let rest = text.get(from..).unwrap_or("");
            let hit = rest.find(needle);
            let bad = fail_on.iter().filter_map(|f| rest.find(f).map(|i| (i, *f))).min();
            match (hit, bad) {
                (_, Some((i, f))) if hit.is_none_or(|h| i < h) => {
                    let line_end = rest[i..].find('\n').map_or(rest.len(), |e| i + e);
                    return Err(format!("the console showed `{f}` while waiting for `{needle}`: {}", rest[i..line_end].trim()));
                }
                // Only a whole line: a long line (the status JSON) arrives over the 115200-baud
                // serial console in pieces, and the needle is at its start.
                (Some(i), _) if rest[i..].contains('\n') => {
                    let line_end = rest[i..].find('\n').map_or(rest.len(), |e| i + e);
                    self.cursor.store(from + line_end, Ordering::SeqCst);
                    return Ok(rest[..line_end].to_string());
                }
                _ => {}
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("qemu exited ({status}) while waiting for `{needle}`"));
            }
            if Instant::now() > deadline {
                return Err(format!("`{needle}` did not appear on the console within {} s", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Where [`Vm::expect`] has read up to; [`Vm::rewind`] goes back there, for output whose
    /// order between two services is not fixed.
    pub fn mark(&self) -> usize {
        self.cursor.load(Ordering::SeqCst)
    }

    pub fn rewind(&self, mark: usize) {
        self.cursor.store(mark, Ordering::SeqCst);
    }

    /// [`Vm::expect`] for `needle` that leaves the read position where it was (a later
    /// `expect` reads the same lines again); returns what follows `needle` on its line, trimmed.
    pub fn peek_after(&mut self, needle: &str, fail_on: &[&str], timeout: Duration) -> Result<String, String> {
        let mark = self.mark();
        let found = self.expect(needle, fail_on, timeout);
        self.rewind(mark);
        let line = found?.lines().last().unwrap_or_default().to_string();
        Ok(line.split_once(needle).map(|(_, v)| v.trim().to_string()).unwrap_or_default())
    }

    /// Type a line at the console (the guest's ttyS0).
    pub fn type_line(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.child.stdin.as_mut().ok_or("qemu has no stdin")?;
        stdin
            .write_all(format!("{line}\r").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot type at the console: {e}"))
    }

    /// GET a path on the guest's web port: HTTPS first (certificate not checked: the box
    /// makes its own at provisioning), then plain HTTP. Returns (scheme, status, body).
    pub fn get(&self, path: &str) -> Option<(&'static str, u16, String)> {
        for scheme in ["https", "http"] {
            let out = Command::new("curl")
                .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
                .arg(format!("{scheme}://127.0.0.1:{}{path}", self.web_port))
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if let Some((body, code)) = text.rsplit_once('\n')
                && let Ok(code) = code.trim().parse::<u16>()
                && code != 0
            {
                return Some((scheme, code, body.to_string()));
            }
        }
        None
    }

    /// Poll `path` until it answers (any HTTP status), or the timeout.
    pub fn wait_for_web(&self, path: &str, timeout: Duration) -> Result<(&'static str, u16, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(answer) = self.get(path) {
                return Ok(answer);
            }
            if Instant::now() > deadline {
                return Err(format!("nothing answered on the guest's port 443 (host 127.0.0.1:{}) within {} s", self.web_port, timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Press the ACPI power button (again every 20 s: an early press can be missed while the
    /// guest is still settling) and wait for qemu to exit. Returns whether the guest powered
    /// off by itself; after `timeout` the power is cut (`quit`), like pulling the plug.
    pub fn shutdown(mut self, timeout: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        let mut next_press = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(true);
            }
            if Instant::now() > deadline {
                let _ = self.monitor("quit");
                std::thread::sleep(Duration::from_secs(5));
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(false);
            }
            if Instant::now() >= next_press {
                self.monitor("system_powerdown")?;
                next_press = Instant::now() + Duration::from_secs(20);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Vm {
    /// Sends one command to qemu's human monitor; returns what the monitor printed in the
    /// half second after it (its banner, the echo, and any answer or error).
    pub fn monitor(&self, command: &str) -> Result<String, String> {
        let talk = || -> std::io::Result<String> {
            let mut s = std::os::unix::net::UnixStream::connect(&self.monitor_socket)?;
            s.write_all(format!("{command}\n").as_bytes())?;
            // Let qemu read the line and answer before the connection closes.
            std::thread::sleep(Duration::from_millis(500));
            s.set_nonblocking(true)?;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        talk().map_err(|e| format!("cannot reach the qemu monitor: {e}"))
    }

    /// Plugs a USB stick into the running guest (qemu's monitor: `drive_add`, `device_add` on
    /// the xHCI controller, which the guest has when it booted with a USB device): a raw image,
    /// read-only unless `writable`, with the USB serial number given and the device id
    /// `usb-<serial>`.
    pub fn plug_usb_stick(&self, image: &Path, serial: &str, writable: bool) -> Result<(), String> {
        let read_only = if writable { "" } else { ",readonly=on" };
        for command in [
            format!("drive_add 0 if=none,id=drive-{serial},file={},format=raw{read_only}", image.display()),
            format!("device_add usb-storage,bus=xhci.0,drive=drive-{serial},removable=on,serial={serial},id=usb-{serial}"),
        ] {
            let answer = self.monitor(&command)?;
            if answer.contains("rror") || answer.contains("unknown") {
                return Err(format!("qemu refused `{command}`: {answer}"));
            }
        }
        Ok(())
    }

    /// Pulls the USB stick with the serial number given out of the running guest.
    pub fn unplug_usb_stick(&self, serial: &str) -> Result<(), String> {
        let answer = self.monitor(&format!("device_del usb-{serial}"))?;
        if answer.contains("rror") || answer.contains("unknown") {
            return Err(format!("qemu did not pull the stick {serial}: {answer}"));
        }
        Ok(())
    }

    /// Limits the writes to the system disk (`sys`) to `bytes_per_second` from now on (qemu's
    /// I/O throttling), so that the guest's next write takes long enough for the power to be
    /// cut in its middle.
    pub fn throttle_system_disk_writes(&self, bytes_per_second: u64) -> Result<(), String> {
        let answer = self.monitor(&format!("block_set_io_throttle sys 0 0 {bytes_per_second} 0 0 0"))?;
        if answer.contains("rror") || answer.contains("unknown") {
            return Err(format!("qemu did not throttle the system disk: {answer}"));
        }
        Ok(())
    }

    /// Pulls the plug: qemu is killed at once (what the guest had not written to its disks is
    /// lost; what it had is on the host's files).
    pub fn power_cut(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Split console bytes into what can be cleaned now and a tail that may continue in the next
/// read: an unfinished UTF-8 character, or an escape sequence without its final byte (at most
/// 64 bytes are held back, so a stray ESC cannot stop the transcript).
pub fn split_incomplete_tail(bytes: &[u8]) -> (&[u8], &[u8]) {
    let mut end = bytes.len();
    if let Err(e) = std::str::from_utf8(bytes)
        && e.error_len().is_none()
    {
        end = e.valid_up_to();
    }
    let window = end.saturating_sub(64);
    if let Some(esc) = bytes[window..end].iter().rposition(|&b| b == 0x1b).map(|i| window + i) {
        let after = &bytes[esc + 1..end];
        let finished = match after.first() {
            None => false,
            Some(b'[') => after[1..].iter().any(|b| (0x40..=0x7e).contains(b)),
            Some(_) => true,
        };
        if !finished {
            end = esc;
        }
    }
    bytes.split_at(end)
}

/// Strip terminal escape sequences and carriage returns from console output.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: drop the next char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A scenario's work directory under the repository's `target/` (made when a build put its
/// output elsewhere, `CARGO_TARGET_DIR`): disks and logs stay beside the build, off /tmp.
pub fn work_dir(repo: &Path, prefix: &str) -> Result<tempfile::TempDir, String> {
    let target = repo.join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    tempfile::Builder::new().prefix(prefix).tempdir_in(&target).map_err(|e| format!("cannot make a work directory in {}: {e}", target.display()))
}

/// A person signed in to a guest's web UI over HTTPS, as a browser does it (curl with a cookie
/// jar): the login form's CSRF cookie and field, the session cookie, each form's CSRF field
/// taken from the last page, and the Origin header a browser sends with a form.
#[derive(Debug)]
pub struct WebSession {
    base: String,
    jar: PathBuf,
    csrf: Option<String>,
}

impl WebSession {
    /// Signs in as `user` at the guest's HTTPS port forwarded to `web_port`.
    pub fn login(web_port: u16, work: &Path, user: &str, password: &str) -> Result<WebSession, String> {
        let mut s = WebSession { base: format!("https://127.0.0.1:{web_port}"), jar: work.join(format!("cookies-{user}.txt")), csrf: None };
        let _ = std::fs::remove_file(&s.jar);
        let (code, _) = s.get("/login")?;
        if code != 200 {
            return Err(format!("GET /login answered {code}"));
        }
        let (code, body) = s.post("/login", &[("username", user), ("password", password)])?;
        if code != 303 && code != 302 {
            return Err(format!("signing in as {user} answered {code}: {}", body.chars().take(400).collect::<String>()));
        }
        Ok(s)
    }

    fn curl(&mut self, path: &str, form: Option<&[(&str, &str)]>, max: Duration) -> Result<(u16, String), String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "--max-time", &max.as_secs().to_string(), "-w", "\n%{http_code}"]).arg("-b").arg(&self.jar).arg("-c").arg(&self.jar);
        if let Some(fields) = form {
            cmd.args(["-H", &format!("Origin: {}", self.base)]);
            let csrf = self.csrf.clone().unwrap_or_default();
            for (k, v) in fields.iter().copied().chain(std::iter::once(("csrf", csrf.as_str()))) {
                cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
            }
        }
        let out = cmd.arg(format!("{}{path}", self.base)).output().map_err(|e| format!("cannot run curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').ok_or_else(|| format!("curl {path}: no status"))?;
        let code: u16 = code.trim().parse().map_err(|_| format!("curl {path}: no HTTP status ({})", String::from_utf8_lossy(&out.stderr).trim()))?;
        if code == 0 {
            return Err(format!("curl {path}: no answer ({})", String::from_utf8_lossy(&out.stderr).trim()));
        }
        if let Some(at) = body.find("name=\"csrf\" value=\"") {
            let rest = &body[at + "name=\"csrf\" value=\"".len()..];
            self.csrf = rest.split('"').next().map(str::to_owned);
        }
        Ok((code, body.to_string()))
    }

    /// GET `path`: the status and the body.
    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.curl(path, None, Self::MAX)
    }

    /// POST a form to `path` with the CSRF field of the last page.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<(u16, String), String> {
        self.curl(path, Some(fields), Self::MAX)
    }

    /// POST a form whose answer streams for long (a question answered by the engine under
    /// emulation): the whole answer, waiting up to `max`.
    pub fn post_streamed(&mut self, path: &str, fields: &[(&str, &str)], max: Duration) -> Result<(u16, String), String> {
        self.curl(path, Some(fields), max)
    }

    /// How long one request may take.
    const MAX: Duration = Duration::from_secs(300);

    /// A clinician's question about the patient whose record id is `record_id`, as the patient
    /// page asks it: the patient found through the patients page's search (the page's address
    /// is the index's id, not the record id), then the question posted and its answer streamed
    /// to its end (waiting up to `max`). Fails unless the answer streams tokens and at least
    /// one citation to `done`.
    pub fn ask_about(&mut self, record_id: &str, question: &str, max: Duration) -> Result<StreamedAnswer, String> {
        let (code, html) = self.get(&format!("/patients?q={record_id}"))?;
        let path = html
            .lines()
            .find(|l| l.contains(record_id) && l.contains("href=\"/patients/"))
            .and_then(|l| l.split("href=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned)
            .ok_or_else(|| format!("the patients page ({code}) does not list {record_id}: {}", html.chars().take(600).collect::<String>()))?;
        let (code, html) = self.get(&path)?;
        if code != 200 || !html.contains(record_id) {
            return Err(format!("the patient page {path} answered {code}: {}", html.chars().take(400).collect::<String>()));
        }
        let started = Instant::now();
        let (code, stream) = self.post_streamed(&format!("{path}/ask"), &[("text", question), ("conversation", "")], max)?;
        let took = started.elapsed();
        let events: Vec<(String, String)> = stream
            .split("\n\n")
            .filter_map(|e| {
                let kind = e.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_default();
                Some((kind.to_string(), data.to_string()))
            })
            .collect();
        fn of<'a>(events: &'a [(String, String)], kind: &'a str) -> impl Iterator<Item = &'a str> {
            events.iter().filter(move |(k, _)| k == kind).map(|(_, d)| d.as_str())
        }
        let text: String = of(&events, "token").filter_map(|d| serde_json::from_str::<String>(d).ok()).collect();
        let mut cited: Vec<String> = of(&events, "citation")
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|c| c["title"].as_str().map(str::to_owned))
            .collect();
        cited.sort();
        cited.dedup();
        let timing = of(&events, "timing").next().unwrap_or("none").to_string();
        if code != 200 || events.last().map(|(k, _)| k.as_str()) != Some("done") || text.trim().is_empty() || cited.is_empty() {
            return Err(format!("the answer did not stream tokens and a citation to `done` ({code}): {}", stream.chars().take(2000).collect::<String>()));
        }
        Ok(StreamedAnswer { text, cited, timing, took })
    }
}

/// An answer as the patient page streamed it ([`WebSession::ask_about`]).
#[derive(Debug)]
pub struct StreamedAnswer {
    pub text: String,
    /// The titles of the sources it cites, sorted, each once.
    pub cited: Vec<String>,
    /// The answer's `timing` event (time to the first token and to the end, ms).
    pub timing: String,
    /// From the question posted to the end of the stream.
    pub took: Duration,
}

/// A free loopback TCP port (bound and released; fine for a test on one machine).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

/// A listener on the host's loopback that counts connections: the guest reaches it as
/// 10.0.2.2:port, so a connection here means something left the box.
#[derive(Debug)]
pub struct Sink {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
}

impl Sink {
    pub fn start() -> Result<Sink, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if conn.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Ok(Sink { port, connections })
    }

    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Make a blank data disk: a sparse file with one GPT partition named `wardbox-data`, as the
/// box's data disk arrives from the factory.
pub fn blank_data_disk(path: &Path, size_mib: u64) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    file.set_len(size_mib * 1024 * 1024).map_err(|e| e.to_string())?;
    drop(file);
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sfdisk: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(b"label: gpt\nstart=2048, type=0fc63daf-8483-4772-8e79-3d69d8477de4, name=\"wardbox-data\"\n")
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("sfdisk failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Pull the recovery key out of the provisioning output: the first line after
/// "RECOVERY KEY" that is 8 dash-separated groups of 5 characters.
pub fn find_recovery_key(transcript: &str) -> Option<String> {
    let start = transcript.find("RECOVERY KEY")?;
    transcript[start..].lines().map(str::trim).find(|l| {
        let groups: Vec<&str> = l.split('-').collect();
        groups.len() == 8 && groups.iter().all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_alphanumeric()))
    })
    .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_escapes_are_removed() {
        assert_eq!(clean("\u{1b}[0;32m  OK  \u{1b}[0m] Started x.\r\n"), "  OK  ] Started x.\n");
    }

    /// A read that ends inside an escape sequence or a UTF-8 character keeps that tail for the
    /// next read (seen: `Started \e[0;1|;39mwardbox.service` left `;39m` in the transcript).
    #[test]
    fn a_read_cut_inside_an_escape_or_a_character_is_cleaned_whole() {
        let whole = "[  OK  ] Started \u{1b}[0;1;39mwardbox.service\u{1b}[0m \u{2026}\n".as_bytes();
        for cut in 0..whole.len() {
            let (first, rest) = split_incomplete_tail(&whole[..cut]);
            let mut carried = rest.to_vec();
            carried.extend_from_slice(&whole[cut..]);
            let (second, tail) = split_incomplete_tail(&carried);
            assert!(tail.is_empty(), "cut at {cut}: {tail:?} held back at the end");
            let text = clean(&String::from_utf8_lossy(first)) + &clean(&String::from_utf8_lossy(second));
            assert_eq!(text, "[  OK  ] Started wardbox.service \u{2026}\n", "cut at {cut}");
        }
        // A stray ESC far back does not hold the transcript back.
        let stray = [b"\x1bX".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(split_incomplete_tail(&stray).1, b"");
    }

    #[test]
    fn the_recovery_key_is_found_after_its_heading_only() {
        let text = "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFF-GGGGG-HHHHH\nRECOVERY KEY: write it down\n\n    K2M4P-Q7R9S-T3V5W-X8Y2Z-A4B6C-D8E2F-G3H5J-K7L9M\n";
        assert_eq!(find_recovery_key(text).as_deref(), Some("K2M4P-Q7R9S-T3V5W-X8Y2Z-A4B6C-D8E2F-G3H5J-K7L9M"));
        assert_eq!(find_recovery_key("no key here"), None);
    }
}
