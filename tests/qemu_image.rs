//! qemu tier: the appliance image, booted in qemu with a software TPM, four times.
//!
//! 1. First boot, blank data disk: the box provisions its encrypted volume (recovery key shown
//!    once on the console), unlocks it through the TPM, and the agent answers on port 443.
//! 2. Second boot: the TPM releases the key unattended, dm-crypt opens the volume, the
//!    egress-deny firewall holds (a connection from inside the guest to the host is blocked,
//!    and nothing arrives at the host), the agent's health endpoint answers through a loopback
//!    port-forward and reports every security stage ok. The compliance report made in the
//!    guest passes every technical item, fails the outbound item once the firewall table is
//!    flushed, and `wardbox report verify` on the host accepts it, refusing it after one
//!    changed byte or quoted by another TPM (`report_probe`, once per box).
//! 3. The Secure Boot keys change (the box boots with another UEFI variable store, so PCR 7
//!    changes): the TPM refuses, the console asks for the recovery key, a wrong key is refused,
//!    the right one opens the volume and reseals, and the agent serves again.
//! 4. Same changed firmware: the TPM releases the resealed key unattended.
//!
//! Needs root (mkosi, mkfs), qemu, swtpm, OVMF; it FAILS naming what is missing. The image is
//! built by image/build.sh (cached by its inputs) unless WARDBOX_E2E_IMAGE names a built image
//! directory. Pieces other subsystems have not delivered yet (TLS, the engine) are listed as
//! NOT CHECKED at the end; with WARDBOX_E2E_STRICT=1 (CI) each of them fails the test.
//!
//! Run: `cargo test -p wardbox-e2e --test qemu_image -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wardbox_e2e::{
    BootSpec, OVMF_VARS_MS, OVMF_VARS_SNAKEOIL, Phases, Sink, Swtpm, Vm, blank_data_disk, find_recovery_key, free_port,
    require, run,
};

const MIN: Duration = Duration::from_secs(60);

/// What the test could not check because a piece is not in this build.
#[derive(Debug, Default)]
struct Gaps(Vec<String>);

impl Gaps {
    fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("== e2e: NOT CHECKED: {what}");
        self.0.push(what);
    }
}

struct Box_ {
    work: PathBuf,
    image: PathBuf,
    vars: PathBuf,
    tpm_state: PathBuf,
    system_disk: PathBuf,
    data_disk: PathBuf,
    cmdline: String,
    web_port: u16,
    boots: u32,
}

impl Box_ {
    /// Boot once (a fresh swtpm process on the same TPM state, like a power cycle).
    fn boot(&mut self) -> Result<(Vm, Swtpm), String> {
        self.boots += 1;
        let n = self.boots;
        let tpm = Swtpm::start(&self.tpm_state, &self.work.join("swtpm.sock"), &self.work.join(format!("swtpm-{n}.log")))?;
        let log = self.work.join(format!("console-{n}.log"));
        eprintln!("== e2e: boot {n}: console log {}", log.display());
        let spec = BootSpec {
            kernel: self.image.join("vmlinuz"),
            initrd: self.image.join("initrd.img"),
            cmdline: self.cmdline.clone(),
            system_disk: self.system_disk.clone(),
            data_disk: self.data_disk.clone(),
            vars: self.vars.clone(),
            tpm_socket: tpm.socket.clone(),
            monitor_socket: self.work.join("monitor.sock"),
            web_port: self.web_port,
            memory_mib: 3072,
            log,
        };
        Ok((Vm::boot(&spec)?, tpm))
    }
}

/// The health JSON: the outcome of one boot stage ("ok", "failed", "degraded", ...).
fn stage_outcome(health: &serde_json::Value, stage: &str) -> Option<String> {
    health["stages"].as_array()?.iter().find(|s| s["stage"] == stage).and_then(|s| s["outcome"].as_str()).map(str::to_string)
}

/// The web port answered: over HTTPS (else a gap: TLS not in this build), with any HTTP status
/// (`/health` answers without a login only on loopback; from the LAN it redirects to the login
/// page, which still proves the TLS server is up).
fn check_web(answer: &(&'static str, u16, String), gaps: &mut Gaps, boot: &str) {
    let (scheme, status, _) = answer;
    eprintln!("== e2e: {boot}: port 443 answered {status} over {scheme}");
    if *scheme == "http" {
        gaps.note(format!("{boot}: port 443 answered over plain HTTP, not HTTPS (TLS is not in this build)"));
    }
}

/// The agent's health as `wardbox status --json` prints it on the console
/// (wardbox-status-console.service): running, appliance profile, the security stages ok.
fn check_health(vm: &mut Vm, boot: &str) -> Result<serde_json::Value, String> {
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
    Ok(health)
}

fn build_image(phases: &mut Phases, repo: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("WARDBOX_E2E_IMAGE") {
        let dir = PathBuf::from(dir);
        eprintln!("== e2e: using the image in {} (WARDBOX_E2E_IMAGE)", dir.display());
        return Ok(dir);
    }
    phases.start("build image (image/build.sh, cached)");
    let out = repo.join("target/image");
    let status = Command::new(repo.join("image/build.sh"))
        .arg("--out")
        .arg(&out)
        .status()
        .map_err(|e| format!("cannot run image/build.sh: {e}"))?;
    if !status.success() {
        return Err(format!("image/build.sh failed ({status}); its output is above"));
    }
    Ok(out)
}

#[test]
fn qemu_image_provisions_unlocks_blocks_egress_and_recovers() {
    let missing = require();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|m| format!("{} (package {})", m.what, m.package)).collect();
        let mut packages: Vec<&str> = missing.iter().map(|m| m.package).collect();
        packages.dedup();
        panic!(
            "the qemu_ tier cannot run on this machine: missing {}.\nInstall: apt-get install -y {}",
            list.join(", "),
            packages.join(" ")
        );
    }
    if !nix_is_root() {
        panic!("the qemu_ tier needs root (mkosi and mkfs build the image); run it as root, as CI does");
    }
    if let Err(e) = scenario() {
        panic!("{e}{}", console_tail(40));
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn scenario() -> Result<(), String> {
    let strict = std::env::var("WARDBOX_E2E_STRICT").is_ok_and(|v| v == "1");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no repository root")?.to_path_buf();
    let mut phases = Phases::default();
    let mut gaps = Gaps::default();

    let image = build_image(&mut phases, &repo)?;
    let info = std::fs::read_to_string(image.join("image-info.txt")).unwrap_or_default();
    if info.contains("engine: no") {
        gaps.note("the engine: this image was built without wardbox-engine (target/release/wardbox-engine absent)");
    }

    phases.start("prepare the box (disks, NVRAM, TPM)");
    // Kept when a boot fails (its console logs are the evidence), and with WARDBOX_E2E_KEEP.
    let keep = std::env::var_os("WARDBOX_E2E_KEEP").is_some();
    let tmp = tempfile::Builder::new().prefix("wardbox-e2e-").tempdir_in(repo.join("target")).map_err(|e| e.to_string())?;
    let work = tmp.keep();
    let _ = WORK_DIR.set(work.clone());
    eprintln!("== e2e: work directory {}", work.display());
    let system_disk = work.join("system.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(image.join("system.raw")).arg(&system_disk))?;
    let data_disk = work.join("data.raw");
    blank_data_disk(&data_disk, 3072)?;
    let vars = work.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS_MS, &vars).map_err(|e| e.to_string())?;
    let sink = Sink::start()?;
    let cmdline = std::fs::read_to_string(image.join("cmdline.txt")).map_err(|e| format!("no cmdline.txt in the image: {e}"))?;
    let cmdline = format!("{} wardbox.status_console wardbox.egress_probe=10.0.2.2:{} wardbox.report_probe", cmdline.trim(), sink.port);
    let mut bx = Box_ {
        work: work.clone(),
        image: image.clone(),
        vars: vars.clone(),
        tpm_state: work.join("tpm"),
        system_disk,
        data_disk,
        cmdline,
        web_port: free_port()?,
        boots: 0,
    };

    // ---------------------------------------------------------------- boot 1
    phases.start("boot 1: first boot, provisioning");
    let (mut vm, tpm) = bx.boot()?;
    vm.expect("Linux version", &[], 3 * MIN)?;
    vm.expect("RECOVERY KEY", &["Failed to start wardbox-un", "Kernel panic"], 20 * MIN)?;
    vm.expect("Keyslots:", &["Kernel panic"], 2 * MIN)?;
    let recovery_key = find_recovery_key(&vm.transcript()).ok_or("the provisioning output shows no recovery key")?;
    eprintln!("== e2e: boot 1: provisioning printed a recovery key");
    let answer = vm.wait_for_web("/health", 15 * MIN).map_err(|e| format!("boot 1: {e}"))?;
    check_web(&answer, &mut gaps, "boot 1");
    check_health(&mut vm, "boot 1")?;
    phases.start("boot 1: power off");
    if !vm.shutdown(3 * MIN)? {
        gaps.note("boot 1: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);

    // ---------------------------------------------------------------- boot 2
    phases.start("boot 2: TPM unlock, firewall, agent");
    let (mut vm, tpm) = bx.boot()?;
    vm.expect("The TPM released the key", &["RECOVERY KEY", "TPM refused", "Failed to start wardbox-un", "Kernel panic"], 15 * MIN)?;
    let answer = vm.wait_for_web("/health", 10 * MIN).map_err(|e| format!("boot 2: {e}"))?;
    check_web(&answer, &mut gaps, "boot 2");
    let before_status = vm.mark();
    let health = check_health(&mut vm, "boot 2")?;
    vm.rewind(before_status);
    match stage_outcome(&health, "engine").as_deref() {
        Some("ok") => {}
        other => gaps.note(format!("boot 2: the engine stage is {other:?}: the agent did not start an engine")),
    }
    // The egress probe runs after the agent is up: the control (loopback) must connect, the
    // host must not be reachable, and nothing may arrive at the host's listener.
    // expect() returns the text from its cursor up to the end of the matching line: judge
    // that line alone, not whatever the console printed before it.
    let last_line = |text: String| text.lines().last().unwrap_or_default().trim().to_string();
    let control = last_line(vm.expect("wardbox-egress-probe: 127.0.0.1:443", &[], 5 * MIN)?);
    if !control.contains("OPEN") {
        return Err(format!("boot 2: the egress probe's control connection (loopback to the agent) failed, so the probe proves nothing: {control}"));
    }
    let probe = last_line(vm.expect(&format!("wardbox-egress-probe: 10.0.2.2:{}", sink.port), &[], 2 * MIN)?);
    if !probe.contains("BLOCKED") {
        return Err(format!("boot 2: a connection from inside the box to the host got out: {probe}"));
    }
    vm.expect("wardbox-egress-probe: done", &[], MIN)?;
    if sink.count() != 0 {
        return Err(format!("boot 2: the host's listener received {} connection(s) from the guest", sink.count()));
    }
    eprintln!("== e2e: boot 2: egress blocked ({})", probe.trim());
    phases.start("boot 2: compliance report in the guest, verified on the host");
    wardbox_e2e::report_probe::check_guest_reports(&mut vm, &work, &repo, 15 * MIN).map_err(|e| format!("boot 2: {e}"))?;
    phases.start("boot 2: power off");
    if !vm.shutdown(3 * MIN)? {
        gaps.note("boot 2: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);

    // ---------------------------------------------------------------- boot 3
    phases.start("boot 3: Secure Boot keys changed, recovery");
    std::fs::copy(OVMF_VARS_SNAKEOIL, &vars).map_err(|e| e.to_string())?;
    let (mut vm, tpm) = bx.boot()?;
    vm.expect("Wardbox recovery key (try 1 of 3)", &["The TPM released the key", "Kernel panic"], 15 * MIN)?;
    // A well-formed key that is not this volume's.
    let wrong = wardbox_volume::RecoveryKey::generate().map_err(|e| e.to_string())?;
    vm.type_line(wrong.display())?;
    vm.expect("did not open the volume", &["open with the recovery key"], 10 * MIN)?;
    vm.expect("Wardbox recovery key (try 2 of 3)", &[], 2 * MIN)?;
    vm.type_line(&recovery_key)?;
    vm.expect("open with the recovery key", &["did not open the volume"], 10 * MIN)?;
    let answer = vm.wait_for_web("/health", 10 * MIN).map_err(|e| format!("boot 3: {e}"))?;
    check_web(&answer, &mut gaps, "boot 3");
    check_health(&mut vm, "boot 3")?;
    phases.start("boot 3: power off");
    if !vm.shutdown(3 * MIN)? {
        gaps.note("boot 3: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);

    // ---------------------------------------------------------------- boot 4
    phases.start("boot 4: resealed key, unattended unlock");
    let (mut vm, tpm) = bx.boot()?;
    vm.expect("The TPM released the key", &["Wardbox recovery key", "Failed to start wardbox-un", "Kernel panic"], 15 * MIN)?;
    let answer = vm.wait_for_web("/health", 10 * MIN).map_err(|e| format!("boot 4: {e}"))?;
    check_web(&answer, &mut gaps, "boot 4");
    check_health(&mut vm, "boot 4")?;
    phases.start("boot 4: power off");
    if !vm.shutdown(3 * MIN)? {
        gaps.note("boot 4: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);

    eprintln!("\n{}", phases.table());
    if !gaps.0.is_empty() {
        let list = gaps.0.join("\n  - ");
        eprintln!("== e2e: NOT CHECKED in this build:\n  - {list}");
        if strict {
            return Err(format!("WARDBOX_E2E_STRICT=1 and these were not checked:\n  - {list}"));
        }
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

/// The work directory of this run, for the failure report.
static WORK_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The last lines of the newest console log: why a boot failed, in the test's own failure
/// message (CI keeps only the end of a long run's output).
fn console_tail(lines: usize) -> String {
    let Some(work) = WORK_DIR.get() else { return String::new() };
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
    format!("\n--- the last {lines} lines of {} ---\n{}", log.display(), wardbox_e2e::clean(&tail))
}
