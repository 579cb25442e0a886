//! Full-matrix qemu scenario (not in CI: `tests/qemu-full.sh`): a clinic's box backed up to its
//! USB backup disk, and a replacement box with another TPM restored from that disk with the
//! backup key from the first box's sheet, on the real appliance image through the real boot
//! chain (OVMF with Secure Boot enforcing, signed systemd-boot, signed UKIs, swtpm).
//!
//! The test-only unit `wardbox-restore-probe.service` (switched on by `wardbox.restore_probe`
//! on the signed command line) does what IT does at each box's console, as root; the test is
//! the release engineer (a models-only bundle signed with the image's trusted root), the person
//! who plugs sticks in and out (qemu's monitor: `device_del`, `drive_add`, `device_add` while the
//! box runs), the one who types the backup key from the sheet (a small virtio disk holding the
//! typed text), and a clinician over HTTPS.
//!
//! Box A, the clinic's box: first boot (provisioning: the console shows the recovery key and the
//! backup key); a stick with the models-only bundle (the box has no model before) is installed
//! through the USB window; a note for a new patient is imported and a clinician made and granted
//! the patient; she asks about the patient over HTTPS and the answer cites the note. The stick is
//! pulled and the backup disk (ext4 labelled `WARDBOX-BACKUP`, as the clinic prepares it)
//! plugged in while the box runs; `wardbox backup now` lets it in through a backup window,
//! backs up, closes the window. The host then checks the repository with the stock `restic`
//! (`check --read-data`, `snapshots`) and the key from the sheet.
//!
//! Box B, the replacement: a new TPM, a blank data disk, the same image. First boot provisions
//! it (its own recovery key and sheet). With the backup disk plugged in, the probe stops the
//! agent, writes the key typed from A's sheet into a file on the data volume, runs `wardbox
//! backup restore-box` (a restore window: the disk read-only), removes the key file and starts
//! the agent. The disk is pulled and the models stick plugged in; the probe installs the models
//! (the same signed bundle A had: a reinstall of the installed version, which the restored
//! floors allow for models). The clinician signs in with her password from box A and asks the
//! same question: the answer cites the same note. The audit chain verifies and continues from
//! A's head with the `restored_onto_replacement` record.
//!
//! Every phase's duration is printed.
//! Run (as root): `cargo test -p wardbox-e2e --test qemu_restore -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use wardbox_e2e::appliance::{Appliance, Chain, build_image, check_health, console_tail, require_appliance_tools};
use wardbox_e2e::release::{BUNDLED_MODELS, Workstation, bundle_disk, image_version, models_dir};
use wardbox_e2e::{Attach, Phases, Vm, WebSession, blank_data_disk, free_port, run, which};

const MIN: Duration = Duration::from_secs(60);
/// What every line of the guest's restore probe starts with.
const PROBE: &str = "wardbox-restore-probe: ";
/// The patient the probe makes on box A (`restore-probe`).
const PATIENT: &str = "QA-RESTORE-1";
const QUESTION: &str = "What is the patient allergic to?";

#[test]
fn qemu_a_replacement_box_restores_the_clinics_backup_and_answers_as_before() {
    require_appliance_tools("qemu backup-and-restore scenario");
    if which("restic").is_none() {
        panic!("the qemu backup-and-restore scenario checks the repository with the stock `restic` (Debian restic)");
    }
    let mut work = None;
    if let Err(e) = scenario(&mut work) {
        panic!("{e}{}", console_tail(work.as_deref(), 60));
    }
}

/// What the probe printed in one boot, up to its `end`.
fn probe_lines(vm: &mut Vm, boot: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let text = vm.expect(&format!("{PROBE}end"), &["Kernel panic"], timeout).map_err(|e| format!("{boot}: {e}"))?;
    let lines: Vec<String> = text.lines().filter_map(|l| l.split_once(PROBE).map(|(_, v)| v.trim_end().to_string())).collect();
    if let Some(failed) = lines.iter().find(|l| l.starts_with("FAILED")) {
        return Err(format!("{boot}: the restore probe failed: {failed}\n{}", lines.join("\n")));
    }
    Ok(lines)
}

/// The value after `prefix` on the probe's first line that starts with it.
fn after<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim)
}

/// Waits for the probe's line starting with `prefix` and returns the rest of it; the console's
/// read position stays where it was, for [`probe_lines`].
fn wait_for_line(vm: &mut Vm, prefix: &str, timeout: Duration) -> Result<String, String> {
    vm.peek_after(&format!("{PROBE}{prefix}"), &["Kernel panic", &format!("{PROBE}FAILED"), &format!("{PROBE}end")], timeout)
}

/// The clinician's question about the patient over HTTPS: the titles of the sources the
/// answer cites.
fn ask(vm: &Vm, work: &Path, password: &str, boot: &str) -> Result<Vec<String>, String> {
    let fail = |what: String| format!("{boot}, the clinician's question: {what}");
    let mut web = WebSession::login(vm.web_port, work, "qa.clinician", password).map_err(fail)?;
    let answer = web.ask_about(PATIENT, QUESTION, 20 * MIN).map_err(fail)?;
    eprintln!(
        "== e2e: {boot}: the clinician's question answered in {:.0} s (timing {}), citing {:?}: {}",
        answer.took.as_secs_f64(),
        answer.timing,
        answer.cited,
        answer.text.trim()
    );
    Ok(answer.cited)
}

/// The backup key as the first boot's console printed it on the sheet (`BACKUP KEY: …`, then
/// the key on its own line, in groups).
fn backup_key_from_the_sheet(console: &str) -> Result<String, String> {
    let mut lines = console.lines().skip_while(|l| !l.contains("BACKUP KEY:"));
    lines.next().ok_or("the first boot's console shows no BACKUP KEY on the sheet")?;
    lines
        .map(str::trim)
        .map(|l| l.rsplit_once("] ").map_or(l, |(_, rest)| rest).trim())
        .find(|l| !l.is_empty() && l.split(['-', ' ']).all(|g| !g.is_empty() && g.chars().all(|c| c.is_ascii_alphanumeric())) && l.len() >= 40)
        .map(str::to_owned)
        .ok_or_else(|| "the sheet's BACKUP KEY line is not followed by the key".into())
}

/// A blank USB backup disk as the clinic prepares it: ext4 labelled WARDBOX-BACKUP.
fn backup_disk(out: &Path, mib: u64) -> Result<(), String> {
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "WARDBOX-BACKUP"]).arg(out).arg(format!("{mib}M")))?;
    Ok(())
}

/// The stock restic on the host reads the repository box A wrote on the disk, with the key from
/// the sheet: `check --read-data` passes and `snapshots` lists the backup.
fn restic_checks(disk: &Path, key: &str, work: &Path) -> Result<String, String> {
    let repo = work.join("backup-disk-copy");
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&repo).map_err(|e| e.to_string())?;
    // debugfs copies the disk's directories out of the ext4 image without mounting it.
    let listing = run(Command::new("debugfs").arg("-R").arg("ls -p /").arg(disk))?;
    for name in listing.lines().filter_map(|l| l.split('/').nth(5)).filter(|n| !n.is_empty() && *n != "." && *n != ".." && *n != "lost+found") {
        run(Command::new("debugfs").arg("-R").arg(format!("rdump /{name} {}", repo.display())).arg(disk))?;
    }
    let root = std::fs::read_dir(&repo)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("config").is_file())
        .or_else(|| repo.join("config").is_file().then(|| repo.clone()))
        .ok_or_else(|| format!("no restic repository (a `config` file) on the backup disk: {}", repo.display()))?;
    let password = work.join("restic-password");
    // The repository's password is the key's hex form; the sheet groups it for reading.
    let compact: String = key.chars().filter(|c| !c.is_whitespace()).collect();
    std::fs::write(&password, compact).map_err(|e| e.to_string())?;
    let restic = |args: &[&str]| run(Command::new("restic").arg("-r").arg(&root).arg("--password-file").arg(&password).args(args));
    let check = restic(&["check", "--read-data", "--no-lock"])?;
    let snapshots = restic(&["snapshots", "--no-lock"])?;
    if !check.contains("no errors were found") || !snapshots.contains("1 snapshots") {
        return Err(format!("the stock restic does not find the backup sound and listed:\n{check}\n{snapshots}"));
    }
    Ok(snapshots)
}

fn scenario(work_out: &mut Option<PathBuf>) -> Result<(), String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no repository root")?.to_path_buf();
    let mut phases = Phases::default();
    let keep = std::env::var_os("WARDBOX_E2E_KEEP").is_some();
    let tmp = wardbox_e2e::work_dir(&repo, "wardbox-e2e-restore-")?;
    let work = tmp.keep();
    *work_out = Some(work.clone());
    eprintln!("== e2e: work directory {}", work.display());

    let ws = Workstation::ceremony(&repo, &work, &mut phases)?;
    let image = build_image(&mut phases, &repo, &[("WARDBOX_UPDATE_ROOT", &ws.roots.join("1.root.json"))])?;
    let chain = Chain::read(&image)?;

    phases.start("release: the models-only bundle, its stick, the backup disk, the boxes' UKI");
    let models = work.join("ollama-models");
    models_dir(&BUNDLED_MODELS, &models)?;
    let notes = work.join("notes.txt");
    std::fs::write(&notes, "Wardbox models (qemu backup-and-restore scenario)\n").map_err(|e| e.to_string())?;
    ws.models_bundle("1.0.0", &image_version(&image)?, &models, &notes, &work.join("stick-models"))?;
    let disk_models = work.join("bundle-models.img");
    bundle_disk(&work.join("stick-models"), &disk_models)?;
    let disk_backup = work.join("backup-disk.img");
    backup_disk(&disk_backup, 2048)?;
    let uki = chain.make_uki(&repo, &image, &chain.version, "a", "quiet wardbox.status_console wardbox.restore_probe", &work.join("uki"))?;
    // Each box's first boot starts the entry with its three tries (blessed during that boot).
    let first_entry = chain.uki_name();
    let new_box = |name: &str| -> Result<Appliance, String> {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let system_disk = dir.join("system.raw");
        run(Command::new("cp").arg("--sparse=always").arg(chain.dir.join("disk.raw")).arg(&system_disk))?;
        let data_disk = dir.join("data.raw");
        blank_data_disk(&data_disk, 4096)?;
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(chain.dir.join("OVMF_VARS.fd"), &vars).map_err(|e| e.to_string())?;
        let bx = Appliance::new(&dir, vars, system_disk, data_disk, free_port()?);
        bx.remove_uki(&chain.uki_name())?;
        bx.add_uki(&uki)?;
        Ok(bx)
    };

    // ---------------------------------------------------------------- box A
    phases.start("box A: first boot (provisioning), models from a stick, a patient, a question");
    let mut box_a = new_box("box-a")?;
    let (mut vm, tpm) = box_a.boot_with(&[Attach::UsbStick(&disk_models, "WBMODELS")])?;
    let sheet_start = vm.mark();
    vm.expect("RECOVERY KEY", &["Failed to start wardbox-un", "Kernel panic", "Access Denied", "No bootable option"], 20 * MIN)?;
    vm.expect("Backup key fingerprint", &["Kernel panic"], 5 * MIN)?;
    let mark = vm.mark();
    vm.rewind(sheet_start);
    let sheet = vm.expect("Backup key fingerprint", &[], MIN)?;
    vm.rewind(mark);
    let key = backup_key_from_the_sheet(&sheet)?;
    eprintln!("== e2e: box A: the sheet shows a backup key ({} characters)", key.len());
    check_health(&mut vm, "box A", &first_entry)?;
    let password = wait_for_line(&mut vm, "web clinician qa.clinician password ", 40 * MIN)?;
    let cited_on_a = ask(&vm, &work, &password, "box A")?;

    phases.start("box A: the stick pulled, the backup disk plugged in, `wardbox backup now`");
    wait_for_line(&mut vm, "waiting for the backup disk", 10 * MIN)?;
    vm.unplug_usb_stick("WBMODELS")?;
    vm.plug_usb_stick(&disk_backup, "WBBACKUP", true)?;
    let lines = probe_lines(&mut vm, "box A", 30 * MIN)?;
    for line in lines.iter().filter(|l| l.starts_with("backup") || l.starts_with("apply: installed")) {
        eprintln!("== e2e: box A: {line}");
    }
    if after(&lines, "backup exit ").is_none_or(|rest| !rest.starts_with("0 ")) {
        return Err(format!("box A: `wardbox backup now` to the USB disk did not succeed:\n{}", lines.join("\n")));
    }
    if after(&lines, "window after the backup: ").is_none_or(|s| !s.contains("\"window_open\":false")) {
        return Err(format!("box A: the backup window is not closed after the backup:\n{}", lines.join("\n")));
    }
    phases.start("box A: power off");
    if !vm.shutdown(3 * MIN)? {
        eprintln!("== e2e: box A: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);
    phases.start("host: the stock restic checks the backup disk with the key from the sheet");
    let snapshots = restic_checks(&disk_backup, &key, &work)?;
    eprintln!("== e2e: restic snapshots on the backup disk:\n{snapshots}");

    // ---------------------------------------------------------------- box B
    phases.start("box B: another TPM, a blank data disk: first boot (provisioning), restore from the backup disk");
    let mut box_b = new_box("box-b")?;
    // What the person types from A's sheet, on a disk of its own: the test's keyboard.
    let typed = work.join("typed-backup-key.raw");
    let mut bytes = format!("{key}\n").into_bytes();
    bytes.resize(4096, 0);
    std::fs::write(&typed, bytes).map_err(|e| e.to_string())?;
    let (mut vm, tpm) = box_b.boot_with(&[Attach::UsbStick(&disk_backup, "WBBACKUP"), Attach::Disk(&typed)])?;
    vm.expect("RECOVERY KEY", &["Failed to start wardbox-un", "Kernel panic", "Access Denied", "No bootable option"], 20 * MIN)?;
    check_health(&mut vm, "box B", &first_entry)?;
    wait_for_line(&mut vm, "waiting for the models stick", 40 * MIN)?;
    vm.unplug_usb_stick("WBBACKUP")?;
    vm.plug_usb_stick(&disk_models, "WBMODELS", false)?;
    wait_for_line(&mut vm, "models installed", 30 * MIN)?;
    phases.start("box B: the clinician of box A asks the same question");
    let cited_on_b = ask(&vm, &work, &password, "box B")?;
    if cited_on_b != cited_on_a {
        return Err(format!("box B's answer cites {cited_on_b:?}, box A's cited {cited_on_a:?}"));
    }
    let lines = probe_lines(&mut vm, "box B", 10 * MIN)?;
    for line in lines.iter().filter(|l| l.starts_with("restore") || l.starts_with("audit") || l.starts_with("apply: installed")) {
        eprintln!("== e2e: box B: {line}");
    }
    if after(&lines, "restore exit ").is_none_or(|rest| !rest.starts_with("0 ")) {
        return Err(format!("box B: `wardbox backup restore-box` did not succeed:\n{}", lines.join("\n")));
    }
    if after(&lines, "key file removed: ") != Some("yes") {
        return Err(format!("box B: the typed key file is still on the data volume:\n{}", lines.join("\n")));
    }
    if after(&lines, "audit verify exit ") != Some("0") || after(&lines, "restored_onto_replacement records: ") != Some("1") {
        return Err(format!("box B: the audit chain does not verify, or does not continue with one restored_onto_replacement record:\n{}", lines.join("\n")));
    }
    if after(&lines, "apply exit ") != Some("0") {
        return Err(format!("box B: the models bundle did not install on the restored box:\n{}", lines.join("\n")));
    }
    phases.start("box B: power off");
    if !vm.shutdown(3 * MIN)? {
        eprintln!("== e2e: box B: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    drop(tpm);

    eprintln!("\n{}", phases.table());
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
