//! qemu tier: the appliance image, booted in qemu with a software TPM, five times, as a box
//! boots: OVMF with Secure Boot enforcing and the image's (test) keys enrolled, the signed
//! systemd-boot on the disk's ESP, and a signed unified kernel image (UKI).
//!
//! 1. First boot, blank data disk: the box provisions its encrypted volume (recovery key shown
//!    once on the console), sealed to PCR 7 and to the PCR 11 values the PCR-signing key signed;
//!    it unlocks through the TPM, the agent answers on port 443, and once it is healthy the
//!    boot entry is blessed (systemd-boot's `+3` try counter is gone from its name on the ESP).
//! 2. An update: a second signed UKI with another command line (no `quiet`), so another PCR 11,
//!    is the default entry. The TPM releases the key with no recovery prompt (the signed PCR 11
//!    policy), the egress-deny firewall holds (a connection from inside the guest to the host
//!    is blocked, and nothing arrives at the host), the health endpoint answers, the new entry
//!    is blessed. `wardbox volume status` in the guest names the entry that booted, Secure Boot
//!    on and PCR 7/11. The boot's phases (firmware, loader, kernel, initrd, unlock, agent) are
//!    timed from the console. The compliance report made in the guest passes every technical
//!    item, fails the outbound item once the firewall table is flushed, and `wardbox report
//!    verify` on the host accepts it, refusing it after one changed byte or quoted by another
//!    TPM (`report_probe`, once per box: only the second UKI's command line asks for it).
//! 3. A dbx update (the firmware's revocation list gains an entry, as a firmware vendor ships
//!    them; Secure Boot stays on with the same pinned keys), so PCR 7 changes: the TPM refuses,
//!    the console asks for the recovery key, a wrong key is refused, the right one opens the
//!    volume and reseals, and the agent serves again.
//! 4. Same firmware: the TPM releases the resealed key unattended. (Every boot's initrd opens
//!    the root through dm-verity with the root hash on the UKI's signed command line; boot 2,
//!    whose command line is not `quiet`, shows it.)
//! 5. One bit of the root file system changed on the disk: dm-verity refuses the block, the
//!    initrd does not mount the root (it reboots), and the TPM is never asked.
//!
//! The UKIs carry the test's switches in their signed command line (the console cannot add
//! to it): `wardbox.status_console`, and `wardbox.egress_probe=10.0.2.2:<port>` with the port
//! of the host listener this run opened before it built them (see [`test_ukis`]).
//!
//! Needs root (mkosi, mkfs), qemu, swtpm, OVMF, the UEFI chain's tools (sbsigntool, mtools,
//! dosfstools, systemd-boot-efi, virt-fw-vars); it FAILS naming what is missing. The image is
//! built by `image/build.sh --uefi` (cached by its inputs) unless WARDBOX_E2E_IMAGE names a
//! built image directory. Pieces other subsystems have not delivered yet (TLS, the engine) are
//! listed as NOT CHECKED at the end; with WARDBOX_E2E_STRICT=1 (CI) each of them fails the test.
//!
//! Run: `cargo test -p wardbox-e2e --test qemu_image -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wardbox_e2e::appliance::{
    Appliance, Chain, boot_phases, build_image, check_health, require_appliance_tools, stage_outcome, virt_fw_vars,
};
use wardbox_e2e::{Phases, Sink, Vm, blank_data_disk, find_recovery_key, free_port, run};

const MIN: Duration = Duration::from_secs(60);
/// The owner GUID of the dbx entry boot 3 adds (any GUID: the firmware does not check it).
const DBX_OWNER: &str = "77fa9abd-0359-4d32-bd60-28f4e78f784b";

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

/// The test's UKIs, made by `image/uefi.sh --uki-only` from the image's kernel, initrd and
/// os-release with the chain's keys (so the firmware and the PCR-signing key accept them):
/// the build's command line plus the test switches. The egress probe's port is this run's
/// host listener, opened before the UKIs are built, so it is part of the signed command line
/// (a free port each run; building a UKI takes seconds).
///
/// 1. Same name as the image's UKI (it replaces it on the test's copy of the disk), with
///    `quiet`.
/// 2. Version `<version>.1` (newer, so systemd-boot's default `wardbox-*` picks it), without
///    `quiet`: another command line, so another PCR 11 value, signed by the same key.
fn test_ukis(repo: &Path, image: &Path, chain: &Chain, work: &Path, switches: &str) -> Result<(PathBuf, PathBuf), String> {
    let first = chain.make_uki(repo, image, &chain.version, "a", &format!("quiet {switches}"), &work.join("uki-1"))?;
    // The compliance report probe only in the update's UKI: it runs in boot 2 (once per box).
    let second_version = format!("{}.1", chain.version);
    let second = chain.make_uki(repo, image, &second_version, "a", &format!("wardbox.report_probe {switches}"), &work.join("uki-2"))?;
    Ok((first, second))
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

/// The lines a guest hook printed after `tag`, up to its `end` line (the hook prints one
/// prefixed line per line of output).
fn tagged_lines(vm: &mut Vm, tag: &str, boot: &str) -> Result<Vec<String>, String> {
    let text = vm.expect(&format!("{tag}end"), &["Kernel panic"], 5 * MIN).map_err(|e| format!("{boot}: {e}"))?;
    Ok(text.lines().filter_map(|l| l.split_once(tag).map(|(_, v)| v.to_string())).filter(|l| l != "end").collect())
}

/// `wardbox volume status` in the guest: the boot entry systemd-boot started, Secure Boot on,
/// and PCR 7 and 11 (the key is bound to both), and the key would be released at the next boot.
fn check_volume_status(vm: &mut Vm, boot: &str, entry: &str) -> Result<(), String> {
    let lines = tagged_lines(vm, "wardbox-volume-status: ", boot)?;
    let all = lines.join("\n");
    let expected = format!("Boot: Secure Boot is on; boot entry {entry}");
    if !lines.iter().any(|l| l.trim() == expected) {
        return Err(format!("{boot}: `wardbox volume status` does not say `{expected}`:\n{all}"));
    }
    for pcr in ["PCR  7: ", "PCR 11: "] {
        if !lines.iter().any(|l| l.trim_start().starts_with(pcr)) {
            return Err(format!("{boot}: `wardbox volume status` shows no `{}`:\n{all}", pcr.trim()));
        }
    }
    if !all.contains("signed PCR 11") || all.contains("would NOT unlock") {
        return Err(format!("{boot}: the volume is not sealed to the signed PCR 11 policy, or would not unlock:\n{all}"));
    }
    eprintln!("== e2e: {boot}: `wardbox volume status`: {expected}; PCR 7 and 11 shown; signed PCR 11 policy");
    Ok(())
}

#[test]
fn qemu_image_provisions_unlocks_blocks_egress_and_recovers() {
    require_appliance_tools("qemu_ tier");
    if let Err(e) = scenario() {
        panic!("{e}{}", console_tail(40));
    }
}

fn scenario() -> Result<(), String> {
    let strict = std::env::var("WARDBOX_E2E_STRICT").is_ok_and(|v| v == "1");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no repository root")?.to_path_buf();
    let mut phases = Phases::default();
    let mut gaps = Gaps::default();

    let image = build_image(&mut phases, &repo, &[])?;
    let info = std::fs::read_to_string(image.join("image-info.txt")).unwrap_or_default();
    if info.contains("engine: no") {
        gaps.note("the engine: this image was built without wardbox-engine (target/release/wardbox-engine absent)");
    }
    let chain = Chain::read(&image)?;

    phases.start("prepare the box (test UKIs, disks, NVRAM, TPM)");
    // Kept when a boot fails (its console logs are the evidence), and with WARDBOX_E2E_KEEP.
    let keep = std::env::var_os("WARDBOX_E2E_KEEP").is_some();
    let tmp = wardbox_e2e::work_dir(&repo, "wardbox-e2e-")?;
    let work = tmp.keep();
    let _ = WORK_DIR.set(work.clone());
    eprintln!("== e2e: work directory {}", work.display());
    let sink = Sink::start()?;
    let switches = format!("wardbox.status_console wardbox.egress_probe=10.0.2.2:{}", sink.port);
    let (first_uki, update_uki) = test_ukis(&repo, &image, &chain, &work, &switches)?;
    let system_disk = work.join("system.raw");
    run(Command::new("cp").arg("--sparse=always").arg(chain.dir.join("disk.raw")).arg(&system_disk))?;
    let data_disk = work.join("data.raw");
    blank_data_disk(&data_disk, 3072)?;
    let vars = work.join("OVMF_VARS.fd");
    std::fs::copy(chain.dir.join("OVMF_VARS.fd"), &vars).map_err(|e| e.to_string())?;
    let mut bx = Appliance::new(&work, vars.clone(), system_disk, data_disk, free_port()?);
    // The test's first UKI in place of the image's (same name and counter).
    bx.remove_uki(&chain.uki_name())?;
    bx.add_uki(&first_uki)?;
    let stem = format!("wardbox-{}", chain.version);
    let update_stem = format!("wardbox-{}.1", chain.version);

    // ---------------------------------------------------------------- boot 1
    phases.start("boot 1: first boot, provisioning");
    let (mut vm, tpm) = bx.boot()?;
    // (The first UKI's `quiet` hides the kernel's own messages; `wardbox volume status` below
    // says Secure Boot is on and which entry booted.)
    vm.expect("RECOVERY KEY", &["Failed to start wardbox-un", "Kernel panic", "Access Denied", "No bootable option"], 20 * MIN)?;
    vm.expect("Keyslots:", &["Kernel panic"], 2 * MIN)?;
    let recovery_key = find_recovery_key(&vm.transcript()).ok_or("the provisioning output shows no recovery key")?;
    eprintln!("== e2e: boot 1: provisioning printed a recovery key");
    // The backup key's escrow follows on the same sheet (docs/backup.md), once, on the console.
    vm.expect("Backup key fingerprint", &["NO BACKUP KEY", "Kernel panic"], 3 * MIN)
        .map_err(|e| format!("boot 1: the provisioning sheet shows no backup key: {e}"))?;
    eprintln!("== e2e: boot 1: provisioning printed a backup key");
    let answer = vm.wait_for_web("/health", 15 * MIN).map_err(|e| format!("boot 1: {e}"))?;
    check_web(&answer, &mut gaps, "boot 1");
    check_health(&mut vm, "boot 1", &chain.uki_name())?;
    check_volume_status(&mut vm, "boot 1", &chain.uki_name())?;
    phases.start("boot 1: power off");
    if !vm.shutdown(3 * MIN)? {
        gaps.note("boot 1: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);
    let entries = bx.ukis()?;
    if entries != [format!("{stem}.efi")] {
        return Err(format!("boot 1: after a healthy boot the ESP's EFI/Linux holds {entries:?}, not the blessed [{stem}.efi]"));
    }
    eprintln!("== e2e: boot 1: healthy, and the entry is blessed ({stem}.efi: no try counter)");

    // ---------------------------------------------------------------- boot 2
    phases.start("boot 2: updated UKI, TPM unlock, firewall, agent");
    bx.add_uki(&update_uki)?;
    let (mut vm, tpm) = bx.boot()?;
    vm.expect("opened as /dev/mapper/wardbox-root", &["Kernel panic", "Failed to mount"], 10 * MIN)
        .map_err(|e| format!("boot 2: the initrd did not open the root through dm-verity: {e}"))?;
    vm.expect(
        "The TPM released the key",
        &["RECOVERY KEY", "TPM refused", "Wardbox recovery key", "Failed to start wardbox-un", "Kernel panic"],
        15 * MIN,
    )?;
    let answer = vm.wait_for_web("/health", 10 * MIN).map_err(|e| format!("boot 2: {e}"))?;
    check_web(&answer, &mut gaps, "boot 2");
    let before_status = vm.mark();
    let update_name = format!("{update_stem}+3.efi");
    let health = check_health(&mut vm, "boot 2", &update_name)?;
    check_volume_status(&mut vm, "boot 2", &update_name)?;
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
    let timing = boot_phases(&vm, "boot 2, TCG");
    eprintln!("== e2e: boot 2, firmware to READY=1:\n{timing}");
    phases.start("boot 2: power off");
    if !vm.shutdown(3 * MIN)? {
        gaps.note("boot 2: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);
    let entries = bx.ukis()?;
    let expected = [format!("{update_stem}.efi"), format!("{stem}.efi")];
    if entries != expected {
        return Err(format!("boot 2: after a healthy boot of the update the ESP's EFI/Linux holds {entries:?}, not {expected:?}"));
    }
    eprintln!("== e2e: boot 2: the updated UKI unlocked with no recovery prompt and is blessed ({update_stem}.efi)");

    // ---------------------------------------------------------------- boot 3
    phases.start("boot 3: dbx update (PCR 7 changed), recovery");
    // A revocation the firmware vendor ships: dbx gains the hash of some binary. Secure Boot
    // stays on with the same (pinned) PK, KEK and db; PCR 7, which measures dbx, changes.
    let fw_vars = virt_fw_vars().ok_or("virt-fw-vars is missing")?;
    run(Command::new(fw_vars)
        .arg("--inplace")
        .arg(&vars)
        .args(["--add-dbx-hash", DBX_OWNER, "5eb2e0c1f3b9a6d4c8e7f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5"]))?;
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
    check_health(&mut vm, "boot 3", &format!("{update_stem}.efi"))?;
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
    check_health(&mut vm, "boot 4", &format!("{update_stem}.efi"))?;
    check_volume_status(&mut vm, "boot 4", &format!("{update_stem}.efi"))?;
    phases.start("boot 4: power off");
    if !vm.shutdown(3 * MIN)? {
        gaps.note("boot 4: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);

    // ---------------------------------------------------------------- boot 5
    // One bit of the root file system changed on the disk (its superblock's volume name, in the
    // block every mount reads first): dm-verity refuses the block, the root is not mounted, and
    // the initrd reboots instead of running it. The TPM is never asked.
    phases.start("boot 5: one bit of the root changed on the disk: not booted");
    let flipped = bx.flip_bit("wardbox-root-a", 1024 + 0x78)?;
    eprintln!("== e2e: boot 5: flipped one bit of root-a's file system at disk byte {flipped}");
    let (mut vm, tpm) = bx.boot()?;
    vm.expect("opened as /dev/mapper/wardbox-root", &["The TPM released the key", "RECOVERY KEY"], 10 * MIN)
        .map_err(|e| format!("boot 5: the initrd did not open the root through dm-verity: {e}"))?;
    let refused = "wardbox-verity: the root file system on /dev/vda2 does not match the root hash on the signed command line";
    vm.expect(refused, &["The TPM released the key", "Wardbox recovery key", "Started wardbox"], 5 * MIN)
        .map_err(|e| format!("boot 5: the initrd did not refuse the changed root: {e}"))?;
    vm.expect("Rebooting automatically due to panic= boot argument", &["The TPM released the key", "Dropping to a shell"], MIN)
        .map_err(|e| format!("boot 5: the initrd did not reboot after refusing the root: {e}"))?;
    // The kernel's own refusal (its message may come before the initrd's lines).
    if !vm.transcript().contains("data block 0 is corrupted") {
        return Err("boot 5: the root was refused, but the kernel did not say dm-verity found block 0 corrupted".into());
    }
    eprintln!("== e2e: boot 5: dm-verity refused the changed block, the initrd did not mount the root and rebooted");
    vm.power_cut();
    drop(tpm);

    eprintln!("\n{}", phases.table());
    eprintln!("boot 2, firmware to READY=1:\n{timing}");
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

fn console_tail(lines: usize) -> String {
    wardbox_e2e::appliance::console_tail(WORK_DIR.get().map(PathBuf::as_path), lines)
}
