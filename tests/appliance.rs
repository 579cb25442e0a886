//! What the appliance scenarios share: the image build (`image/build.sh --uefi`, cached), its
//! UEFI chain, signed test UKIs, one box (disks, NVRAM, TPM) booted through the firmware, the
//! ESP read and written with mtools between boots, and the agent's health from the console.
//! Used by `qemu_image` (provision, unlock, egress, recovery) and `qemu_update` (a full update
//! from slot A to slot B and a fallback).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Attach, BootSpec, Phases, Swtpm, Vm, run, which};

const MIN: Duration = Duration::from_secs(60);
/// Where the ESP starts on image/uefi.sh's disk (1 MiB), for mtools' `image@@offset`.
const ESP_AT: &str = "@@1M";

/// One box: its NVRAM, TPM state, system disk (a raw copy of the chain's disk.raw, so the host
/// can read and write the ESP between boots) and data disk.
#[derive(Debug)]
pub struct Appliance {
    pub work: PathBuf,
    pub vars: PathBuf,
    pub tpm_state: PathBuf,
    pub system_disk: PathBuf,
    pub data_disk: PathBuf,
    pub web_port: u16,
    pub boots: u32,
}

impl Appliance {
    pub fn new(work: &Path, vars: PathBuf, system_disk: PathBuf, data_disk: PathBuf, web_port: u16) -> Appliance {
        Appliance { work: work.to_path_buf(), vars, tpm_state: work.join("tpm"), system_disk, data_disk, web_port, boots: 0 }
    }

    /// Boot once (a fresh swtpm process on the same TPM state, like a power cycle), through the
    /// firmware: no `-kernel`, OVMF finds systemd-boot on the ESP.
    pub fn boot(&mut self) -> Result<(Vm, Swtpm), String> {
        self.boot_with(&[])
    }

    /// [`Appliance::boot`] with more devices attached (a USB stick holding an update bundle).
    pub fn boot_with(&mut self, attached: &[Attach]) -> Result<(Vm, Swtpm), String> {
        self.boots += 1;
        let n = self.boots;
        let tpm = Swtpm::start(&self.tpm_state, &self.work.join("swtpm.sock"), &self.work.join(format!("swtpm-{n}.log")))?;
        let log = self.work.join(format!("console-{n}.log"));
        eprintln!("== e2e: boot {n}: console log {}", log.display());
        let spec = BootSpec {
            system_disk: self.system_disk.clone(),
            data_disk: self.data_disk.clone(),
            vars: self.vars.clone(),
            tpm_socket: tpm.socket.clone(),
            monitor_socket: self.work.join("monitor.sock"),
            web_port: self.web_port,
            memory_mib: 3072,
            log,
        };
        Ok((Vm::boot_attached(&spec, attached)?, tpm))
    }

    /// The ESP inside the system disk, as mtools names it.
    pub fn esp(&self) -> String {
        format!("{}{ESP_AT}", self.system_disk.display())
    }

    /// The UKIs in the ESP's EFI/Linux, sorted.
    pub fn ukis(&self) -> Result<Vec<String>, String> {
        let listing = run(Command::new("mdir").args(["-b", "-i"]).arg(self.esp()).arg("::/EFI/Linux"))?;
        let mut files: Vec<String> = listing
            .lines()
            .map(|l| l.trim().trim_start_matches("::/EFI/Linux/").to_string())
            .filter(|l| !l.is_empty())
            .collect();
        files.sort();
        Ok(files)
    }

    pub fn add_uki(&self, uki: &Path) -> Result<(), String> {
        let name = uki.file_name().and_then(|n| n.to_str()).ok_or("a UKI path without a file name")?;
        run(Command::new("mcopy").arg("-i").arg(self.esp()).arg(uki).arg(format!("::/EFI/Linux/{name}")))?;
        Ok(())
    }

    pub fn remove_uki(&self, name: &str) -> Result<(), String> {
        run(Command::new("mdel").arg("-i").arg(self.esp()).arg(format!("::/EFI/Linux/{name}")))?;
        Ok(())
    }

    /// Flips the low bit of the byte `at` bytes into the system disk's partition `label` (what
    /// a tampered or decayed disk looks like to the box). Returns the byte's offset on the disk.
    pub fn flip_bit(&self, label: &str, at: u64) -> Result<u64, String> {
        use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
        let offset = partition_start(&self.system_disk, label)? + at;
        let mut disk = std::fs::OpenOptions::new().read(true).write(true).open(&self.system_disk).map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        disk.seek(SeekFrom::Start(offset)).and_then(|_| disk.read_exact(&mut byte)).map_err(|e| e.to_string())?;
        byte[0] ^= 1;
        disk.seek(SeekFrom::Start(offset)).and_then(|_| disk.write_all(&byte)).map_err(|e| e.to_string())?;
        Ok(offset)
    }
}

/// The byte offset of the partition named `label` on a raw GPT disk.
pub fn partition_start(disk: &Path, label: &str) -> Result<u64, String> {
    let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(disk))?).map_err(|e| e.to_string())?;
    table["partitiontable"]["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == label))
        .and_then(|p| p["start"].as_u64())
        .map(|sector| sector * 512)
        .ok_or_else(|| format!("no partition {label} on {}", disk.display()))
}

/// The image's UEFI chain (`image/build.sh --uefi`, in `<image>/uefi`): the version in its
/// UKI's name, the dm-verity arguments of its root (slot A's image), and the rest of the
/// command line its UKI was signed with, after the root.
#[derive(Debug)]
pub struct Chain {
    pub dir: PathBuf,
    pub version: String,
    pub verity: String,
    pub cmdline_extra: String,
}

/// The arguments of `image/verity.sh` (`wardbox.verity_root_hash=… wardbox.verity_hash_offset=…`)
/// in a command line.
fn verity_args(cmdline: &str) -> String {
    cmdline.split_whitespace().filter(|w| w.starts_with("wardbox.verity_")).collect::<Vec<_>>().join(" ")
}

/// `image/verity.sh`: the slot image of a root file system (the file system and its dm-verity
/// hash tree) at `out`; returns the command line arguments that open it.
pub fn slot_image(repo: &Path, root_fs: &Path, out: &Path) -> Result<String, String> {
    let args = run(Command::new(repo.join("image/verity.sh")).arg(root_fs).arg(out))?;
    let args = args.trim().to_string();
    if verity_args(&args).split_whitespace().count() != 2 {
        return Err(format!("image/verity.sh printed no verity arguments: {args}"));
    }
    Ok(args)
}

impl Chain {
    pub fn read(image: &Path) -> Result<Chain, String> {
        let dir = image.join("uefi");
        let info = std::fs::read_to_string(dir.join("uefi-info.txt"))
            .map_err(|e| format!("no UEFI chain in {} (built without --uefi?): {e}", dir.display()))?;
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .ok_or_else(|| format!("uefi-info.txt has no `{key}` line"))
        };
        let uki = field("uki:")?;
        let version = uki
            .strip_prefix("wardbox-")
            .and_then(|v| v.rsplit_once('+'))
            .map(|(v, _)| v.to_string())
            .ok_or_else(|| format!("the chain's UKI is not named wardbox-<version>+<tries>.efi: {uki}"))?;
        // uefi.sh puts the root (by PARTUUID, read-only) and the USB policy first; the rest is
        // the build's.
        let cmdline = field("cmdline:")?;
        let rest = cmdline
            .split_once("rootfstype=ext4")
            .map(|(_, rest)| rest.trim())
            .map(|rest| rest.strip_prefix("usbcore.authorized_default=0").unwrap_or(rest).trim().to_string())
            .ok_or_else(|| format!("the chain's command line does not name the root file system type: {cmdline}"))?;
        let verity = verity_args(&rest);
        if verity.split_whitespace().count() != 2 {
            return Err(format!("the chain's command line does not open its root through dm-verity: {cmdline}"));
        }
        let cmdline_extra = rest.split_whitespace().filter(|w| !w.starts_with("wardbox.verity_")).collect::<Vec<_>>().join(" ");
        Ok(Chain { dir, version, verity, cmdline_extra })
    }

    pub fn uki_name(&self) -> String {
        format!("wardbox-{}+3.efi", self.version)
    }

    /// A UKI for this chain (`image/uefi.sh --uki-only`): the image's kernel, initrd and
    /// os-release, signed with the chain's keys (so the firmware and the PCR-signing key accept
    /// it), booting `slot` ("a" or "b") holding the image's own root, with `extra` after the
    /// build's command line. Returns its path, `<out>/wardbox-<version>+3.efi`.
    pub fn make_uki(&self, repo: &Path, image: &Path, version: &str, slot: &str, extra: &str, out: &Path) -> Result<PathBuf, String> {
        self.make_uki_for_root(repo, image, &self.verity, version, slot, extra, out)
    }

    /// As `make_uki`, for the slot image whose dm-verity arguments are `verity` (`slot_image`).
    #[allow(clippy::too_many_arguments)]
    pub fn make_uki_for_root(
        &self,
        repo: &Path,
        image: &Path,
        verity: &str,
        version: &str,
        slot: &str,
        extra: &str,
        out: &Path,
    ) -> Result<PathBuf, String> {
        let mut uefi = Command::new(repo.join("image/uefi.sh"));
        uefi.arg("--uki-only")
            .arg("--kernel")
            .arg(image.join("vmlinuz"))
            .arg("--initrd")
            .arg(image.join("initrd.img"))
            .arg("--os-release")
            .arg(image.join("os-release"))
            .args(["--version", version, "--slot", slot])
            .args(["--cmdline-extra", &format!("{verity} {} {extra}", self.cmdline_extra)])
            .arg("--keys")
            .arg(self.dir.join("test-keys"))
            .arg("--out")
            .arg(out);
        run(&mut uefi)?;
        let cmdline = std::fs::read_to_string(out.join("cmdline.txt")).map_err(|e| e.to_string())?;
        eprintln!("== e2e: UKI wardbox-{version}+3.efi for slot {slot}, command line: {cmdline}");
        Ok(out.join(format!("wardbox-{version}+3.efi")))
    }
}

/// Builds the image (`image/build.sh --uefi`, OS tree cached under target/image), unless
/// WARDBOX_E2E_IMAGE names a built one. `env`: variables for the build (e.g. the update root).
pub fn build_image(phases: &mut Phases, repo: &Path, env: &[(&str, &Path)]) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("WARDBOX_E2E_IMAGE") {
        let dir = PathBuf::from(dir);
        eprintln!("== e2e: using the image in {} (WARDBOX_E2E_IMAGE)", dir.display());
        return Ok(dir);
    }
    phases.start("build image (image/build.sh --uefi, cached)");
    let out = repo.join("target/image");
    let mut build = Command::new(repo.join("image/build.sh"));
    build.arg("--out").arg(&out).arg("--uefi");
    for (key, value) in env {
        build.env(key, value);
    }
    let status = build.status().map_err(|e| format!("cannot run image/build.sh: {e}"))?;
    if !status.success() {
        return Err(format!("image/build.sh failed ({status}); its output is above"));
    }
    Ok(out)
}

/// What the UEFI chain needs beyond [`crate::require`]: programs, with where they come from.
pub fn missing_chain_tools() -> Vec<String> {
    let mut missing = Vec::new();
    for (program, package) in [
        ("objcopy", "binutils"),
        ("sbsign", "sbsigntool"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("mdel", "mtools"),
        ("mdir", "mtools"),
        ("openssl", "openssl"),
    ] {
        if which(program).is_none() {
            missing.push(format!("program `{program}` (package {package})"));
        }
    }
    if virt_fw_vars().is_none() {
        missing.push("program `virt-fw-vars` (PyPI virt-firmware; tests/install-deps.sh installs it)".into());
    }
    for file in ["/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"] {
        if !Path::new(file).is_file() {
            missing.push(format!("file {file} (package systemd-boot-efi)"));
        }
    }
    missing
}

pub fn virt_fw_vars() -> Option<PathBuf> {
    std::env::var_os("WARDBOX_VIRT_FW_VARS").map(PathBuf::from).or_else(|| which("virt-fw-vars"))
}

/// Fails (naming what is missing and how to install it) unless this machine can build and
/// boot the appliance: the qemu tier's programs, the UEFI chain's tools, and root.
pub fn require_appliance_tools(tier: &str) {
    let missing = crate::require();
    let chain_missing = missing_chain_tools();
    if !missing.is_empty() || !chain_missing.is_empty() {
        let mut list: Vec<String> = missing.iter().map(|m| format!("{} (package {})", m.what, m.package)).collect();
        list.extend(chain_missing);
        let mut packages: Vec<&str> = missing.iter().map(|m| m.package).collect();
        packages.dedup();
        panic!(
            "the {tier} cannot run on this machine: missing {}.\nInstall: apt-get install -y {} (and tests/install-deps.sh)",
            list.join(", "),
            packages.join(" ")
        );
    }
    if !is_root() {
        panic!("the {tier} needs root (mkosi and mkfs build the image); run it as root, as CI does");
    }
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// The health JSON: the outcome of one boot stage ("ok", "failed", "degraded", ...).
pub fn stage_outcome(health: &serde_json::Value, stage: &str) -> Option<String> {
    health["stages"].as_array()?.iter().find(|s| s["stage"] == stage).and_then(|s| s["outcome"].as_str()).map(str::to_string)
}

/// The agent's health as `wardbox status --json` prints it on the console
/// (wardbox-status-console.service): running, appliance profile, the security stages ok; and
/// the measured boot it shows: Secure Boot on, `entry` started by systemd-boot, PCR 7 and 11.
pub fn check_health(vm: &mut Vm, boot: &str, entry: &str) -> Result<serde_json::Value, String> {
    const TAG: &str = "wardbox-status: ";
    let line = vm.expect(TAG, &["Kernel panic"], 5 * MIN).map_err(|e| format!("{boot}: {e}"))?;
    let json = line.rsplit_once(TAG).map(|(_, j)| j.trim()).unwrap_or_default();
    let status: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("{boot}: the status line is not JSON ({e}): {json}"))?;
    let health = status["health"].clone();
    eprintln!("== e2e: {boot}: agent running {}, state {}", status["agent_running"], health["state"]);
    if status["agent_running"] != true {
        return Err(format!("{boot}: the agent is not running: {status}"));
    }
    if health["profile"] != "appliance" {
        return Err(format!("{boot}: the box runs the {} profile, not appliance", health["profile"]));
    }
    for stage in ["config", "unlock", "firewall", "store"] {
        let outcome = stage_outcome(&health, stage);
        if outcome.as_deref() != Some("ok") {
            return Err(format!("{boot}: boot stage `{stage}` is {outcome:?}, not ok; health: {health}"));
        }
    }
    if health["state"] == "failed" {
        return Err(format!("{boot}: the agent reports state failed: {health}"));
    }
    let measured = &status["boot"];
    let pcr = |n: &str| measured[n].as_str().is_some_and(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()));
    if measured["secure_boot"] != "on" || measured["boot_entry"] != entry || !pcr("pcr7") || !pcr("pcr11") {
        return Err(format!("{boot}: `wardbox status` shows the measured boot as {measured}, not Secure Boot on, entry {entry}, PCR 7 and 11"));
    }
    Ok(health)
}

/// A boot's phases from the console, in seconds since qemu started (TCG): firmware (to the
/// bootloader's start), loader (systemd-boot reads and the firmware verifies the UKI, the stub
/// measures it: up to the kernel's own EFI stub), kernel (to the initrd's /init), initrd (to
/// systemd on the root), unlock (to the TPM's release), agent (to READY=1: systemd reports
/// wardbox.service started).
pub fn boot_phases(vm: &Vm, title: &str) -> String {
    let marks = [
        ("firmware", "BdsDxe: starting"),
        ("loader", "EFI stub: "),
        ("kernel", "Run /init as init process"),
        ("initrd", "Welcome to "),
        ("unlock", "The TPM released the key"),
        ("agent (READY=1)", "Started wardbox.service"),
    ];
    let mut out = format!("{:<26} ends at s   takes s\n", format!("phase ({title})"));
    let mut last = 0.0;
    for (name, needle) in marks {
        match vm.seen_at(needle) {
            Some(at) => {
                let at = at.as_secs_f64();
                out.push_str(&format!("{name:<26}{at:>9.1}{:>10.1}\n", at - last));
                last = at;
            }
            None => out.push_str(&format!("{name:<26}   (`{needle}` not seen)\n")),
        }
    }
    out
}

/// The last lines of the newest console log in `work`: why a boot failed, in the test's own
/// failure message (CI keeps only the end of a long run's output).
pub fn console_tail(work: Option<&Path>, lines: usize) -> String {
    let Some(work) = work else { return String::new() };
    let newest = std::fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("console-") && n.ends_with(".log")))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let Some(log) = newest else { return String::new() };
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("\n--- the last {lines} lines of {} ---\n{}", log.display(), crate::clean(&tail))
}
