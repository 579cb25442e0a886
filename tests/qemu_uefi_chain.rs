//! qemu tier: the UEFI boot chain of image/uefi.sh, booted through OVMF with Secure Boot
//! enforcing and the chain's own (test) keys enrolled.
//!
//! 1. The signed chain boots: OVMF runs the signed systemd-boot from the ESP, systemd-boot
//!    counts a try (`wardbox-<v>+3.efi` becomes `+2-1`) and runs the signed UKI, the kernel
//!    says Secure Boot is enabled, the firmware's `SecureBoot` variable reads 1 in the guest,
//!    the kernel's command line is the one signed into the UKI (root by PARTUUID, read-only),
//!    and the real `systemd-bless-boot good` blesses the entry (`wardbox-<v>.efi`, checked on
//!    the disk afterwards from the host). The firmware's PK, KEK and db, read in the guest, pass
//!    the firmware policy's key check with the fingerprints image/uefi.sh wrote, and fail it
//!    when the policy pins another db certificate. With a software TPM, PCR 11 in the guest is
//!    the value systemd-measure predicted (and signed into the UKI) at build time, and the
//!    stub handed the signature and its public key to the initrd (`/.extra`).
//! 2. The same UKI unsigned, in place of the signed one: the firmware refuses to load it
//!    (`Access Denied`) and no kernel starts.
//! 3. The same UKI signed with a key that is not in db: refused the same way.
//! 4. Boot counting and fallback: on boot 1's disk, a newer UKI (same key) whose guest never
//!    blesses it, as when the agent fails health: systemd-boot tries it three times
//!    (`+2-1`, `+1-2`, `+0-3`), then boots the previous, blessed UKI by itself.
//!
//! The guest is NOT the appliance OS: to keep each boot to seconds it is Debian's kernel with a
//! busybox initrd that reports what firmware and bootloader did (tests/uefi-chain-guest.sh).
//! The chain around it (UKI, signatures, ESP, enrolled keys, GPT) is made by image/uefi.sh
//! exactly as for the appliance (`image/build.sh --uefi`).
//!
//! Needs qemu, OVMF, sbsigntool, mtools, dosfstools, systemd-boot-efi, busybox-static,
//! virt-fw-vars (tests/install-deps.sh) and apt access to Debian's mirror (the kernel package
//! is downloaded once, not installed); it FAILS naming what is missing.
//!
//! Run: `cargo test -p wardbox-e2e --test qemu_uefi_chain -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wardbox_e2e::{FirmwareBootSpec, OVMF_CODE, OVMF_VARS_BLANK, Phases, Swtpm, Vm, run, which};
use wardbox_firmware_policy::{
    CertFingerprint, DEFAULT_POLICY_TOML, FirmwarePolicy, KeyCheck, KeyVariable, read_enrolled_keys,
};

const MIN: Duration = Duration::from_secs(60);
/// What the test guest's init prints before each report line.
const GUEST: &str = "wardbox-uefi-chain: ";
/// The OS version in the UKI's name.
const VERSION: &str = "0.0.0-chain-test";
/// Where the ESP starts on image/uefi.sh's disk (1 MiB), for mtools' `image@@offset`.
const ESP_AT: &str = "@@1M";

/// What this test needs that is not on the machine, with where it comes from.
fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    let programs: &[(&str, &str)] = &[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("objcopy", "binutils"),
        ("sbsign", "sbsigntool"),
        ("sbverify", "sbsigntool"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("mdel", "mtools"),
        ("mdir", "mtools"),
        ("sfdisk", "fdisk"),
        ("openssl", "openssl"),
        ("bc", "bc"),
        ("busybox", "busybox-static"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
    ];
    for (program, package) in programs {
        if which(program).is_none() {
            missing.push(format!("program `{program}` (package {package})"));
        }
    }
    if std::env::var_os("WARDBOX_VIRT_FW_VARS").is_none() && which("virt-fw-vars").is_none() {
        missing.push("program `virt-fw-vars` (PyPI virt-firmware; tests/install-deps.sh installs it)".into());
    }
    for (file, package) in [
        (OVMF_CODE, "ovmf"),
        (OVMF_VARS_BLANK, "ovmf"),
        ("/usr/lib/systemd/boot/efi/linuxx64.efi.stub", "systemd-boot-efi"),
        ("/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi"),
    ] {
        if !Path::new(file).is_file() {
            missing.push(format!("file {file} (package {package})"));
        }
    }
    missing
}

#[test]
fn signed_chain_boots_with_secure_boot_unsigned_or_foreign_ukis_do_not_and_a_failing_one_falls_back() {
    let missing = missing();
    if !missing.is_empty() {
        panic!("the UEFI boot-chain test cannot run on this machine: missing {}", missing.join(", "));
    }
    if let Err(e) = scenario() {
        panic!("{e}");
    }
}

/// A copy of the chain's disk and variable store for one boot (the firmware and systemd-boot
/// write both).
struct Boot {
    dir: PathBuf,
    disk: PathBuf,
    vars: PathBuf,
    monitor: PathBuf,
}

impl Boot {
    fn prepare(work: &Path, chain: &Path, name: &str) -> Result<Boot, String> {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let disk = dir.join("disk.raw");
        run(Command::new("cp").arg("--sparse=always").arg(chain.join("disk.raw")).arg(&disk))?;
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(chain.join("OVMF_VARS.fd"), &vars).map_err(|e| e.to_string())?;
        Ok(Boot { monitor: dir.join("monitor.sock"), dir, disk, vars })
    }

    /// The ESP inside the disk, as mtools names it.
    fn esp(&self) -> String {
        format!("{}{ESP_AT}", self.disk.display())
    }

    /// The files in the ESP's EFI/Linux, sorted.
    fn uki_files(&self) -> Result<Vec<String>, String> {
        let listing = run(Command::new("mdir").args(["-b", "-i"]).arg(self.esp()).arg("::/EFI/Linux"))?;
        let mut files: Vec<String> = listing
            .lines()
            .map(|l| l.trim().trim_start_matches("::/EFI/Linux/").to_string())
            .filter(|l| !l.is_empty())
            .collect();
        files.sort();
        Ok(files)
    }

    /// Put `uki` on the ESP in place of the chain's UKI (same name, so systemd-boot picks it).
    fn replace_uki(&self, uki_name: &str, uki: &Path) -> Result<(), String> {
        let target = format!("::/EFI/Linux/{uki_name}");
        run(Command::new("mdel").arg("-i").arg(self.esp()).arg(&target))?;
        run(Command::new("mcopy").arg("-i").arg(self.esp()).arg(uki).arg(&target))?;
        Ok(())
    }

    /// Boot this disk, with a TPM when `tpm` is given; the console goes to `console-<n>.log`
    /// (`n`: the test's boot number).
    fn start(&self, n: u32, tpm: Option<&Swtpm>) -> Result<Vm, String> {
        let log = self.dir.join(format!("console-{n}.log"));
        eprintln!("== uefi-chain: boot {n}: console log {}", log.display());
        Vm::boot_firmware(&FirmwareBootSpec {
            system_disk: self.disk.clone(),
            vars: self.vars.clone(),
            tpm_socket: tpm.map(|t| t.socket.clone()),
            monitor_socket: self.monitor.clone(),
            memory_mib: 512,
            log,
        })
    }
}

/// Run image/uefi.sh on the test guest; `unhealthy` UKIs make the guest skip the blessing.
fn make_chain(
    repo: &Path,
    guest: &Path,
    version: &str,
    extra: &str,
    keys: Option<&Path>,
    out: &Path,
) -> Result<String, String> {
    let mut uefi = Command::new(repo.join("image/uefi.sh"));
    uefi.arg("--kernel")
        .arg(guest.join("vmlinuz"))
        .arg("--initrd")
        .arg(guest.join("initrd.img"))
        .arg("--os-release")
        .arg(guest.join("os-release"))
        .args(["--version", version, "--esp-mib", "64"])
        .args(["--cmdline-extra", &format!("console=ttyS0,115200 panic=-1{extra}")])
        .arg("--out")
        .arg(out);
    if let Some(keys) = keys {
        uefi.arg("--keys").arg(keys);
    }
    run(&mut uefi)
}

/// The value after `<GUEST><key>=` on a reported line.
fn reported(vm: &mut Vm, key: &str, fail_on: &[&str]) -> Result<String, String> {
    let needle = format!("{GUEST}{key}");
    let text = vm.expect(&needle, fail_on, 2 * MIN)?;
    let line = text.lines().last().unwrap_or_default();
    Ok(line.rsplit_once(&needle).map(|(_, v)| v.trim_start_matches(['=', ':']).trim().to_string()).unwrap_or_default())
}

/// The firmware must refuse the UKI on the ESP: systemd-boot's load of it fails with
/// `Access Denied` (the firmware's image verification), and no kernel ever starts.
fn expect_refused(vm: &mut Vm, stem: &str, what: &str) -> Result<(), String> {
    let never = ["Linux version", "Secure boot enabled", GUEST];
    let line = vm
        .expect(&format!("Error loading \\EFI\\Linux\\{stem}+2-1.efi"), &never, 3 * MIN)
        .map_err(|e| format!("{what}: {e}"))?;
    let line = line.lines().last().unwrap_or_default();
    if !line.contains("Access Denied") && !line.contains("Security Violation") {
        return Err(format!("{what}: systemd-boot could not load the UKI, but not for its signature: {line}"));
    }
    let from = line.find("Error loading").unwrap_or(0);
    eprintln!("== uefi-chain: {what}: refused ({})", line[from..].trim());
    // systemd-boot gives up and the firmware finds nothing else to boot.
    vm.expect("No bootable option", &never, 2 * MIN).map_err(|e| format!("{what}: {e}"))?;
    Ok(())
}

/// The firmware's PK, KEK and db, as the guest read them from efivarfs, checked the way the
/// agent's config stage checks them: the policy with image/uefi.sh's `[secure_boot_keys]`
/// accepts them, the same policy pinning another db certificate refuses them.
fn check_enrolled_keys(vm: &mut Vm, chain: &Path, work: &Path) -> Result<(), String> {
    let efivars = work.join("guest-efivars");
    std::fs::create_dir_all(&efivars).map_err(|e| e.to_string())?;
    for variable in KeyVariable::ALL {
        let value = reported(vm, &format!("efivar {}", variable.name()), &[])?;
        let value = value.split_whitespace().last().unwrap_or_default();
        let bytes = (0..value.len() / 2)
            .map(|i| u8::from_str_radix(value.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| format!("the guest's {} is not hex ({e}): {value}", variable.name()))?;
        std::fs::write(efivars.join(variable.file_name()), bytes).map_err(|e| e.to_string())?;
    }
    let pinned = std::fs::read_to_string(chain.join("secure-boot-keys.toml")).map_err(|e| e.to_string())?;
    let policy = FirmwarePolicy::from_toml_str(&format!("{DEFAULT_POLICY_TOML}{pinned}"), "default + uefi.sh keys")
        .map_err(|e| e.to_string())?;
    let enrolled = read_enrolled_keys(&efivars).map_err(|e| e.to_string())?;
    match policy.check_secure_boot_keys(&enrolled) {
        Ok(KeyCheck::Pinned) => {}
        other => return Err(format!("boot 1: the firmware's keys do not pass the policy that pins them: {other:?}")),
    }
    let mut other_db = policy.clone();
    if let Some(keys) = other_db.secure_boot_keys.as_mut() {
        keys.db = vec![CertFingerprint::of_der(b"another fleet's db certificate")];
    }
    if other_db.check_secure_boot_keys(&enrolled).is_ok() {
        return Err("boot 1: a policy pinning another db certificate accepted this firmware's keys".into());
    }
    eprintln!("== uefi-chain: boot 1: the firmware's PK, KEK and db are the keys the policy pins");
    Ok(())
}

/// PCR 11 in the guest (boot 1 has a TPM) is the value systemd-measure predicted at build time
/// for the state right after the stub (the entry without a boot phase in pcr11.json), and the
/// stub handed the signed PCR 11 values and their public key to the initrd: what a signed
/// PCR 11 policy needs at unlock.
fn check_pcr11(vm: &mut Vm, chain: &Path) -> Result<(), String> {
    let measured = reported(vm, "PCR11", &[])?;
    let predicted: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chain.join("pcr11.json")).map_err(|e| format!("no pcr11.json: {e}"))?,
    )
    .map_err(|e| format!("pcr11.json is not JSON: {e}"))?;
    let after_stub = predicted["sha256"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e.get("phase").is_none()))
        .and_then(|e| e["hash"].as_str())
        .ok_or_else(|| format!("pcr11.json has no value for the state after the stub: {predicted}"))?;
    if !measured.eq_ignore_ascii_case(after_stub) {
        return Err(format!("boot 1: PCR 11 in the guest is `{measured}`, systemd-measure predicted {after_stub}"));
    }
    let extra = reported(vm, "extra", &[])?;
    if extra != "pcrsig present pcrpkey present" {
        return Err(format!("boot 1: the stub did not hand the PCR signature and key to the initrd: {extra}"));
    }
    eprintln!(
        "== uefi-chain: boot 1: PCR 11 is the signed prediction ({}), .pcrsig and .pcrpkey reached /.extra",
        &after_stub[..16]
    );
    Ok(())
}

fn scenario() -> Result<(), String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no repository root")?.to_path_buf();
    let mut phases = Phases::default();
    let keep = std::env::var_os("WARDBOX_E2E_KEEP").is_some();
    let tmp = wardbox_e2e::work_dir(&repo, "wardbox-uefi-chain-")?;
    let work = if keep { tmp.keep() } else { tmp.path().to_path_buf() };
    eprintln!("== uefi-chain: work directory {}", work.display());

    phases.start("guest: Debian kernel + busybox initrd (downloads cached)");
    let guest = repo.join("target/uefi-chain-guest");
    run(Command::new(repo.join("tests/uefi-chain-guest.sh")).arg(&guest))?;

    phases.start("chain: image/uefi.sh (UKI, signatures, ESP, keys, disk)");
    let chain = work.join("chain");
    eprintln!("{}", make_chain(&repo, &guest, VERSION, "", None, &chain)?.trim_end());
    let stem = format!("wardbox-{VERSION}");
    let uki_name = format!("{stem}+3.efi");
    let signed_cmdline = std::fs::read_to_string(chain.join("cmdline.txt")).map_err(|e| e.to_string())?;
    let root_a = signed_cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("root=PARTUUID="))
        .ok_or_else(|| format!("the UKI's command line names no root by PARTUUID: {signed_cmdline}"))?
        .to_string();
    if !signed_cmdline.split_whitespace().any(|a| a == "ro") {
        return Err(format!("the UKI's command line does not mount the root read-only: {signed_cmdline}"));
    }
    let table = run(Command::new("sfdisk").arg("--dump").arg(chain.join("disk.raw")))?;
    let root_line = table.lines().find(|l| l.contains(&root_a.to_uppercase())).unwrap_or_default();
    if !root_line.contains("wardbox-root-a") {
        return Err(format!("partition {root_a} (the UKI's root) is not wardbox-root-a on the disk:\n{table}"));
    }
    if !table.lines().find(|l| l.contains("start=")).is_some_and(|l| l.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"))
    {
        return Err(format!("the disk's first partition is not the ESP:\n{table}"));
    }

    // ---------------------------------------------------------------- boot 1: signed chain
    phases.start("boot 1: signed chain, Secure Boot on, blessed");
    let signed = Boot::prepare(&work, &chain, "signed")?;
    let tpm = Swtpm::start(&work.join("tpm"), &work.join("swtpm.sock"), &work.join("swtpm.log"))?;
    let mut vm = signed.start(1, Some(&tpm))?;
    let refused = ["Access Denied", "Security Violation", "No bootable option", "Kernel panic"];
    vm.expect("Secure boot enabled", &refused, 3 * MIN).map_err(|e| format!("boot 1: {e}"))?;
    vm.expect(&format!("{GUEST}userspace reached"), &refused, 2 * MIN).map_err(|e| format!("boot 1: {e}"))?;
    let cmdline = reported(&mut vm, "cmdline", &refused)?;
    if cmdline != signed_cmdline.trim() {
        return Err(format!(
            "boot 1: the kernel ran with `{cmdline}`, not the UKI's signed `{}`",
            signed_cmdline.trim()
        ));
    }
    // The guest reports in this order: command line, PK/KEK/db, SecureBoot, the loader's variables.
    check_enrolled_keys(&mut vm, &chain, &work)?;
    let secure_boot = reported(&mut vm, "SecureBoot", &refused)?;
    if secure_boot != "1" {
        return Err(format!("boot 1: the SecureBoot variable in the guest is `{secure_boot}`, not 1"));
    }
    let selected = reported(&mut vm, "LoaderEntrySelected", &refused)?;
    if selected != uki_name {
        return Err(format!("boot 1: systemd-boot booted `{selected}`, not {uki_name}"));
    }
    let count_path = reported(&mut vm, "LoaderBootCountPath", &refused)?;
    if count_path != format!("\\EFI\\Linux\\{stem}+2-1.efi") {
        return Err(format!("boot 1: systemd-boot did not count the try as +2-1: LoaderBootCountPath `{count_path}`"));
    }
    check_pcr11(&mut vm, &chain)?;
    vm.expect(&format!("{GUEST}blessed"), &["systemd-bless-boot failed", "cannot mount the ESP"], 2 * MIN)
        .map_err(|e| format!("boot 1: {e}"))?;
    vm.expect(&format!("{GUEST}done"), &[], 2 * MIN).map_err(|e| format!("boot 1: {e}"))?;
    vm.wait_exit(2 * MIN).map_err(|e| format!("boot 1: the guest did not power off: {e}"))?;
    drop(tpm);
    let entries = signed.uki_files()?;
    if entries != [format!("{stem}.efi")] {
        return Err(format!("boot 1: after the blessed boot the ESP's EFI/Linux holds {entries:?}, not [{stem}.efi]"));
    }
    eprintln!(
        "== uefi-chain: boot 1: Secure Boot on, UKI {uki_name} booted with its signed command line, blessed to {stem}.efi"
    );

    // ---------------------------------------------------------------- boot 2: unsigned UKI
    phases.start("boot 2: unsigned UKI refused");
    let boot = Boot::prepare(&work, &chain, "unsigned")?;
    boot.replace_uki(&uki_name, &chain.join(format!("{stem}.unsigned.efi")))?;
    let mut vm = boot.start(2, None)?;
    expect_refused(&mut vm, &stem, "boot 2 (unsigned UKI)")?;
    drop(vm);

    // ---------------------------------------------------------------- boot 3: foreign key
    phases.start("boot 3: UKI signed with a key not in db refused");
    let boot = Boot::prepare(&work, &chain, "foreign-key")?;
    let key = work.join("foreign.key");
    let cert = work.join("foreign.crt");
    run(Command::new("openssl")
        .args(["req", "-quiet", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30"])
        .args(["-subj", "/CN=Not enrolled - TEST KEY/", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert))?;
    let foreign = work.join("foreign.efi");
    run(Command::new("sbsign")
        .arg("--key")
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .arg("--output")
        .arg(&foreign)
        .arg(chain.join(format!("{stem}.unsigned.efi"))))?;
    // A real signature, only from the wrong key.
    run(Command::new("sbverify").arg("--cert").arg(&cert).arg(&foreign))?;
    if run(Command::new("sbverify").arg("--cert").arg(chain.join("test-keys/db.crt")).arg(&foreign)).is_ok() {
        return Err(
            "the foreign-key UKI verifies against the enrolled db certificate: the check would prove nothing".into()
        );
    }
    boot.replace_uki(&uki_name, &foreign)?;
    let mut vm = boot.start(3, None)?;
    expect_refused(&mut vm, &stem, "boot 3 (UKI signed with a key not in db)")?;
    drop(vm);

    // ------------------------------------------------- boots 4-7: counted tries, then fallback
    // On boot 1's disk (its UKI blessed), a newer UKI signed with the same key whose guest
    // never blesses it, as when the agent fails its health check: systemd-boot must try it
    // three times, then boot the previous, blessed UKI by itself.
    phases.start("boots 4-7: an unhealthy UKI tried 3 times, then the previous one");
    let next_version = "0.0.1-chain-test";
    let next_stem = format!("wardbox-{next_version}");
    let next = work.join("chain-unhealthy");
    make_chain(&repo, &guest, next_version, " wardbox.chain_test=unhealthy", Some(&chain.join("test-keys")), &next)?;
    let next_name = format!("{next_stem}+3.efi");
    run(Command::new("mcopy")
        .arg("-i")
        .arg(signed.esp())
        .arg(next.join(&next_name))
        .arg(format!("::/EFI/Linux/{next_name}")))?;
    for (n, counted) in [(4, "+2-1"), (5, "+1-2"), (6, "+0-3")] {
        let mut vm = signed.start(n, None)?;
        let count_path = reported(&mut vm, "LoaderBootCountPath", &refused).map_err(|e| format!("boot {n}: {e}"))?;
        if count_path != format!("\\EFI\\Linux\\{next_stem}{counted}.efi") {
            return Err(format!(
                "boot {n}: expected the unhealthy UKI's try {counted}, got LoaderBootCountPath `{count_path}`"
            ));
        }
        vm.expect(&format!("{GUEST}unhealthy: not blessed"), &[&format!("{GUEST}blessed")], 2 * MIN)
            .map_err(|e| format!("boot {n}: {e}"))?;
        vm.wait_exit(2 * MIN).map_err(|e| format!("boot {n}: the guest did not power off: {e}"))?;
        eprintln!("== uefi-chain: boot {n}: the unhealthy UKI ran, try counted as {counted}");
    }
    let mut vm = signed.start(7, None)?;
    let selected = reported(&mut vm, "LoaderEntrySelected", &refused).map_err(|e| format!("boot 7: {e}"))?;
    if selected != format!("{stem}.efi") {
        return Err(format!(
            "boot 7: after three failed tries systemd-boot booted `{selected}`, not the previous {stem}.efi"
        ));
    }
    vm.expect(&format!("{GUEST}no boot counting in effect"), &["unhealthy"], 2 * MIN)
        .map_err(|e| format!("boot 7: {e}"))?;
    vm.wait_exit(2 * MIN).map_err(|e| format!("boot 7: the guest did not power off: {e}"))?;
    let entries = signed.uki_files()?;
    let expected = [format!("{stem}.efi"), format!("{next_stem}+0-3.efi")];
    if entries != expected {
        return Err(format!("boot 7: the ESP's EFI/Linux holds {entries:?}, not {expected:?}"));
    }
    eprintln!("== uefi-chain: boot 7: systemd-boot fell back to {stem}.efi; {next_stem}+0-3.efi is left marked bad");

    eprintln!("\n{}", phases.table());
    Ok(())
}
