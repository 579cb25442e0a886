//! Full-matrix qemu scenario (not in CI: `tests/qemu-full.sh`): a full system update on the
//! real appliance image, end to end, through the real boot chain (OVMF with Secure Boot
//! enforcing, signed systemd-boot, signed UKIs, swtpm).
//!
//! The test is the release engineer and IT: it makes TUF keys and a root with the project's
//! workstation tool (`wardbox-bundle keygen`, `root new`, `root sign`), builds the image with
//! that root as its first trusted root (`WARDBOX_UPDATE_ROOT`), and builds signed full bundles
//! with `wardbox-bundle build`: each a system image and one signed UKI per slot. The system
//! image of version N is the built root file system with `version: N` in its image
//! information (written with debugfs, no mount): what differs between two real releases is
//! not what this proves; that the box installs, boots, blesses and falls back is. A bundle
//! reaches the guest on a USB stick (qemu's usb-storage on an xHCI controller, an ext4 image),
//! which the box's USB policy refuses until an administrator opens the USB window; the
//! test-only unit `wardbox-update-probe.service` (switched on by `wardbox.update_probe` on the
//! signed command line) does what IT does at the console, as root: `wardbox usb open`, then
//! `wardbox update apply --yes` from the stick mounted read-only, then `wardbox usb close`.
//!
//! Each version's system image is its slot image (`image/verity.sh`: the file system and its
//! dm-verity tree), and its UKIs carry that image's root hash: every boot opens its root
//! verified, and the install checks the written slot against the UKI's root hash.
//!
//! 1. v1 from slot A, first boot (provisioning), the stick with bundle v2, a USB keyboard and a
//!    USB mouse plugged in: the keyboard is let in, the mouse and the stick are refused (no
//!    block device, no storage driver); in the window the stick alone is let in, mounted
//!    read-only with its block device read-only; the install writes slot B (the host then
//!    finds exactly v2's image there) and puts v2's slot-B UKI on the ESP as
//!    `wardbox-<v2>+3.efi`; closing the window takes the stick out and unloads the drivers;
//!    every decision is in the audit trail; status says v2 is pending in slot B.
//!    Before v2, bundles on the same stick the box must refuse, each applied as IT would, with
//!    its exit code: a downgrade (11), an unknown signer (10), a bit flipped in a UKI (13), a
//!    system image that is not the one its UKIs' root hash names (20: written, then refused
//!    before any entry names it).
//!    But first the power is cut while the install writes slot B: the ESP still boots only v1,
//!    which starts again (the TPM releases the key); the install, retried, is cut again while
//!    it copies v2's UKI onto the ESP (the system disk's writes slowed through qemu's monitor
//!    once the slot is read back): the ESP still boots only v1 (at most a temporary copy is
//!    left, which systemd-boot ignores), and the install from the stick, retried a second
//!    time, completes and removes the copy.
//! 2. Reboot: systemd-boot starts `wardbox-<v2>+3.efi`, whose command line names root-b; the
//!    TPM releases the volume key with no recovery prompt (signed PCR 11 policy). The power is
//!    cut there, before the boot is blessed: the entry is `+2-1`; the next boot starts it
//!    again, the agent is healthy, the boot is blessed (`wardbox-<v2>.efi`), and
//!    `wardbox update status --json` says v2 runs from slot B with the system floor at v2 and
//!    the install `installed`.
//! 3. v2 running, bundle v3 on a stick, through the window again: v3 goes to slot A (v1's slot); the install removes v1's
//!    entry, which boots slot A. v3's UKIs mask the agent on their signed command line, so v3
//!    never becomes healthy.
//! 4. Boots 4 to 6: v3 three times (systemd-boot counts `+2-1`, `+1-2`, `+0-3`; the kernel's
//!    command line names root-a), none blessed.
//! 7. systemd-boot starts v2 again by itself; the TPM releases the key; status says v2 runs
//!    from slot B and the v3 update fell back; the audit chain verifies and holds every view of
//!    boot 3's burst that was answered before the power cut.
//! 8. Secure Boot turned off in the firmware's variables: the firmware policy requires it, so
//!    the unlock refuses before the TPM is asked and the console says the recovery key does not
//!    help (no prompt).
//! 9. Secure Boot on again: the TPM releases the key with no prompt; the agent is healthy.
//!    A stick with a models-only bundle (the default chat and embedding models, SmolLM2 135M
//!    and MiniLM, as a connected workstation's `ollama pull` left them) is plugged in: the box
//!    has had no model so far. IT installs it at the console through the USB window; the
//!    install's health check has the running engine answer with each model. Without a reboot
//!    a note for a new patient is imported (embedded by the engine), and a clinician asks
//!    about the patient over HTTPS: the answer streams from the new chat model, citing the note.
//!
//! Every phase's duration is printed, and firmware-to-READY=1 of boot 2.
//! Run (as root): `cargo test -p wardbox-e2e --test qemu_update -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wardbox_e2e::appliance::{Appliance, Chain, boot_phases, build_image, check_health, console_tail, partition_start, require_appliance_tools, slot_image, virt_fw_vars};
use wardbox_e2e::release::{BUNDLED_MODELS, Workstation, bundle_disk, image_version, models_dir};
use wardbox_e2e::{Attach, Phases, Vm, WebSession, blank_data_disk, free_port, run, which};

const MIN: Duration = Duration::from_secs(60);
/// What every line of the guest's update probe starts with.
const PROBE: &str = "wardbox-update-probe: ";
/// image/partitions.env: the partitions the UKIs' command lines name.
const ROOT_A_UUID: &str = "8d6b2f4e-1c3a-4f7e-a2b5-6e9c0d1f2a3b";
const ROOT_B_UUID: &str = "4a1e9c7d-2b3f-4e5a-8c6d-7f0a1b2c3d4e";

#[test]
fn qemu_a_full_update_boots_the_other_slot_and_an_unhealthy_one_falls_back() {
    require_appliance_tools("qemu full-update scenario");
    for (program, package) in [("debugfs", "e2fsprogs"), ("cargo", "the Rust toolchain")] {
        if which(program).is_none() {
            panic!("the qemu full-update scenario needs `{program}` ({package})");
        }
    }
    let mut work = None;
    if let Err(e) = scenario(&mut work) {
        panic!("{e}{}", console_tail(work.as_deref(), 60));
    }
}

/// `MAJOR.(MINOR+n).0`.
fn next_minor(version: &str, n: u32) -> Result<String, String> {
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().map_err(|_| format!("version {version} is not MAJOR.MINOR.PATCH"))).collect::<Result<_, _>>()?;
    let [major, minor, _] = parts.as_slice() else { return Err(format!("version {version} is not MAJOR.MINOR.PATCH")) };
    Ok(format!("{major}.{}.0", minor + n))
}

/// The system image of `version` and its dm-verity arguments: the slot image
/// (`image/verity.sh`) of a sparse copy of the built root file system whose
/// /usr/lib/wardbox-image-info says `version: <version>` (debugfs, no mount).
fn system_image(repo: &Path, root: &Path, version: &str, work: &Path) -> Result<(PathBuf, String), String> {
    let fs = root_file_system(root, version, work)?;
    let slot = work.join(format!("root-{version}.img"));
    let verity = slot_image(repo, &fs, &slot)?;
    Ok((slot, verity))
}

fn root_file_system(root: &Path, version: &str, work: &Path) -> Result<PathBuf, String> {
    let out = work.join(format!("root-{version}.ext4"));
    run(Command::new("cp").arg("--sparse=always").arg(root).arg(&out))?;
    let info = run(Command::new("debugfs").arg("-R").arg("cat /usr/lib/wardbox-image-info").arg(&out))?;
    let body: Vec<String> = info
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .map(|l| if l.starts_with("version:") { format!("version: {version}") } else { l.to_string() })
        .collect();
    if !body.iter().any(|l| l == &format!("version: {version}")) {
        return Err(format!("the image's /usr/lib/wardbox-image-info has no version line:\n{info}"));
    }
    let file = work.join(format!("image-info-{version}"));
    std::fs::write(&file, format!("{}\n", body.join("\n"))).map_err(|e| e.to_string())?;
    run(Command::new("chmod").arg("0644").arg(&file))?;
    let script = work.join(format!("debugfs-{version}"));
    std::fs::write(
        &script,
        format!("cd /usr/lib\nrm wardbox-image-info\nwrite {} wardbox-image-info\nsif wardbox-image-info uid 0\nsif wardbox-image-info gid 0\n", file.display()),
    )
    .map_err(|e| e.to_string())?;
    run(Command::new("debugfs").arg("-w").arg("-f").arg(&script).arg(&out))?;
    let check = run(Command::new("debugfs").arg("-R").arg("cat /usr/lib/wardbox-image-info").arg(&out))?;
    if !check.lines().any(|l| l == format!("version: {version}")) {
        return Err(format!("writing the version into {} did not take:\n{check}", out.display()));
    }
    Ok(out)
}

/// What the console install must refuse, each in `stick-v2/refuse-<exit code>-<what>` (the
/// probe applies them in that order before v2's bundle and prints each exit code): v1 again
/// (a downgrade, 11); v2 signed by another workstation's keys (an unknown signer, 10); v2 with
/// one bit of its slot-B UKI flipped after signing (corrupt, 13: caught while the UKI is staged,
/// before the slot is opened); v2 whose system image is not the one its UKIs' root hash names
/// (20: the slot is written and read back, then its dm-verity tree does not match, and no boot
/// entry names it). Their system image is 1 MiB of zeros: all but the last are refused before
/// it is read.
fn refused_bundles(ws: &Workstation, other: &Workstation, v1: &str, v2: &str, ukis: [&Path; 2], notes: &Path, work: &Path) -> Result<(), String> {
    let small = work.join("small-system.img");
    std::fs::write(&small, vec![0u8; 1 << 20]).map_err(|e| e.to_string())?;
    let stick = work.join("stick-v2");
    let scratch = work.join("refused");
    let place = |built: PathBuf, name: &str| -> Result<PathBuf, String> {
        let dest = stick.join(name);
        std::fs::rename(&built, &dest).map_err(|e| format!("{} -> {}: {e}", built.display(), dest.display()))?;
        Ok(dest)
    };
    place(ws.full_bundle(v1, v1, &small, ukis[0], ukis[1], notes, &scratch.join("downgrade"))?, "refuse-11-downgrade")?;
    place(other.full_bundle(v2, v1, &small, ukis[0], ukis[1], notes, &scratch.join("signer"))?, "refuse-10-unknown-signer")?;
    let corrupt = place(ws.full_bundle(v2, v1, &small, ukis[0], ukis[1], notes, &scratch.join("corrupt"))?, "refuse-13-corrupt-uki")?;
    let uki = corrupt.join("targets/wardbox-b.efi");
    let mut bytes = std::fs::read(&uki).map_err(|e| format!("{}: {e}", uki.display()))?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&uki, bytes).map_err(|e| e.to_string())?;
    place(ws.full_bundle(v2, v1, &small, ukis[0], ukis[1], notes, &scratch.join("unverified"))?, "refuse-20-unverified-root")?;
    Ok(())
}

/// A full bundle of `version` whose system image was cut to half its signed length after
/// signing (a stick written part-way), in `<stick>/refuse-13-truncated-image`: the box must
/// refuse it as corrupt (13) while staging the image, before the ESP or the slot changes.
fn truncated_bundle(ws: &Workstation, version: &str, from: &str, ukis: [&Path; 2], notes: &Path, work: &Path, stick: &Path) -> Result<(), String> {
    let image = work.join("truncated-system.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).map_err(|e| e.to_string())?;
    let built = ws.full_bundle(version, from, &image, ukis[0], ukis[1], notes, &work.join("refused/truncated"))?;
    let target = built.join("targets/system.img");
    let file = std::fs::OpenOptions::new().write(true).open(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    file.set_len(1 << 19).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(stick).map_err(|e| e.to_string())?;
    let dest = stick.join("refuse-13-truncated-image");
    std::fs::rename(&built, &dest).map_err(|e| format!("{} -> {}: {e}", built.display(), dest.display()))
}

/// The refusals the probe printed (`refusal <dir> exit <code>: <last line>`): each bundle of
/// [`refused_bundles`] refused with the exit code its directory names.
fn check_refusals(run: &ProbeRun, boot: &str) -> Result<(), String> {
    check_refused(
        run,
        boot,
        &[
            ("refuse-10-unknown-signer", "unknown signer"),
            ("refuse-11-downgrade", "downgrade"),
            ("refuse-13-corrupt-uki", "corrupt UKI"),
            ("refuse-20-unverified-root", "system image not matching its UKI's root hash"),
        ],
    )
}

/// Each `(directory, what)` refused with the exit code its directory names.
fn check_refused(run: &ProbeRun, boot: &str, refusals: &[(&str, &str)]) -> Result<(), String> {
    let lines: Vec<&String> = run.lines.iter().filter(|l| l.starts_with("refusal ")).collect();
    for &(dir, what) in refusals {
        let code = &dir[7..9];
        let line = lines.iter().find(|l| l.starts_with(&format!("refusal {dir} "))).ok_or_else(|| {
            format!("{boot}: the probe did not try the {what} bundle ({dir}):\n{}", run.lines.join("\n"))
        })?;
        if !line.starts_with(&format!("refusal {dir} exit {code}:")) {
            return Err(format!("{boot}: the {what} bundle was not refused with exit {code}: {line}"));
        }
        eprintln!("== e2e: {boot}: refused on the box: {line}");
    }
    Ok(())
}

/// sha256 of the first `len` bytes of the partition named `label` on a raw GPT disk.
fn partition_sha256(disk: &Path, label: &str, len: u64) -> Result<String, String> {
    let start = partition_start(disk, label)?;
    let out = run(Command::new("bash").arg("-c").arg(format!("tail -c +{} {} | head -c {len} | sha256sum", start + 1, disk.display())))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

/// What the update probe printed in one boot: its lines, each `status:` JSON, the apply's
/// exit code when it applied.
struct ProbeRun {
    lines: Vec<String>,
    statuses: Vec<Value>,
    apply_exit: Option<i32>,
}

fn probe(vm: &mut Vm, boot: &str, timeout: Duration) -> Result<ProbeRun, String> {
    let text = vm.expect(&format!("{PROBE}end"), &["Kernel panic"], timeout).map_err(|e| format!("{boot}: {e}"))?;
    let lines: Vec<String> = text.lines().filter_map(|l| l.split_once(PROBE).map(|(_, v)| v.trim_end().to_string())).collect();
    let mut statuses = Vec::new();
    let mut apply_exit = None;
    for line in &lines {
        if let Some(json) = line.strip_prefix("status: ") {
            statuses.push(serde_json::from_str(json).map_err(|e| format!("{boot}: the probe's status is not JSON ({e}): {json}"))?);
        } else if let Some(rest) = line.strip_prefix("apply exit ") {
            apply_exit = rest.split_whitespace().next().and_then(|c| c.parse().ok());
        } else if line.starts_with("FAILED") {
            return Err(format!("{boot}: the update probe failed: {line}\n{}", lines.join("\n")));
        }
    }
    for line in lines.iter().filter(|l| l.starts_with("apply: ") || l.starts_with("applying")) {
        eprintln!("== e2e: {boot}: {line}");
    }
    Ok(ProbeRun { lines, statuses, apply_exit })
}

/// How a boot's stick was installed from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stick {
    /// By IT at the console (`wardbox usb open`, `wardbox update apply`), with a USB keyboard
    /// and a USB mouse also plugged in.
    ConsoleWithKeyboardAndMouse,
    /// By an admin on the Updates page (the window helper, the install helper).
    Page,
    /// By IT at the console, with nothing else plugged in.
    Console,
}

/// The USB policy and window as the probe saw them around an install from a stick: refused
/// before the window (no block device, no driver), let in alone and read-only inside it, taken
/// out after it, and every step in the audit trail.
fn check_usb_window(run: &ProbeRun, boot: &str, stick: Stick) -> Result<(), String> {
    let keyboard_and_mouse = stick == Stick::ConsoleWithKeyboardAndMouse;
    let line = |prefix: &str| run.lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let usb = |phase: &str| -> Result<Value, String> {
        let json = line(&format!("usb-{phase}: ")).ok_or_else(|| format!("{boot}: the probe printed no USB status {phase} the window"))?;
        serde_json::from_str(json).map_err(|e| format!("{boot}: the USB status {phase} the window is not JSON ({e}): {json}"))
    };
    let of_kind = |status: &Value, kind: &str| -> Vec<Value> {
        status["devices"].as_array().map(|d| d.iter().filter(|x| x["kind"] == kind).cloned().collect()).unwrap_or_default()
    };
    let (before, inside, after) = (usb("before")?, usb("window")?, usb("after")?);
    let fail = |what: &str, status: &Value| Err(format!("{boot}: {what}: {status}\n{}", run.lines.join("\n")));
    let sticks = of_kind(&before, "storage");
    if sticks.len() != 1 || sticks[0]["authorized"] != false || before["storage_drivers_loaded"] != false || before["window_open"] != false {
        return fail("before the window the stick is not the one refused device with no storage driver loaded", &before);
    }
    if keyboard_and_mouse {
        let keyboards = of_kind(&before, "keyboard");
        let others = of_kind(&before, "other");
        if keyboards.len() != 1 || keyboards[0]["authorized"] != true {
            return fail("the USB keyboard was not let in", &before);
        }
        if others.len() != 1 || others[0]["authorized"] != false {
            return fail("the USB mouse (an input device that is not a keyboard) was not refused", &before);
        }
    }
    if line("block devices before:").is_none_or(|l| !l.is_empty()) {
        return Err(format!("{boot}: a block device existed before the window: {:?}", line("block devices before:")));
    }
    let sticks = of_kind(&inside, "storage");
    if inside["window_open"] != true || inside["storage_drivers_loaded"] != true || sticks.len() != 1 || sticks[0]["authorized"] != true {
        return fail("inside the window the stick was not let in with the storage drivers loaded", &inside);
    }
    let read_only = run.lines.iter().any(|l| l.starts_with("stick sd") && l.ends_with("read-only: 1"));
    let mounted_ro = run.lines.iter().any(|l| l.starts_with("stick sd") && l.contains(" mounted: ext4 ro,") && l.contains("nosuid") && l.contains("noexec"));
    if !read_only || !mounted_ro {
        return fail("the stick's block device was not read-only, or it was not mounted ext4 ro,nosuid,noexec", &inside);
    }
    let sticks = of_kind(&after, "storage");
    if after["window_open"] != false || after["storage_drivers_loaded"] != false || sticks.len() != 1 || sticks[0]["authorized"] != false {
        return fail("after the window the stick was not taken out and the drivers unloaded", &after);
    }
    if line("block devices after:").is_none_or(|l| !l.is_empty()) {
        return Err(format!("{boot}: the stick's block device is still there after the window: {:?}", line("block devices after:")));
    }
    let audited = line("audited usb events:").ok_or_else(|| format!("{boot}: the probe did not count the audited USB events"))?;
    let count = |kind: &str| -> u32 {
        audited.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{kind}="))).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    // The mouse is a refused device; the stick a refused storage device, also an alert.
    let (mice, authorized) = if keyboard_and_mouse { (1, 2) } else { (0, 1) };
    let page_steps: &[(&str, u32)] = if stick == Stick::Page { &[("usb_window_open", 1), ("update_apply_by_admin", 2)] } else { &[] };
    let steps = [
        ("device-refused", mice),
        ("storage-refused", 1),
        ("usb_alert", 1),
        ("device-authorized", authorized),
        ("window-opened", 1),
        ("window-closed", 1),
        ("mounted", 1),
        ("removed", 1),
    ];
    for &(kind, n) in steps.iter().chain(page_steps) {
        if count(kind) < n {
            return Err(format!("{boot}: the audit trail holds fewer than {n} `{kind}` USB events: {audited}"));
        }
    }
    eprintln!("== e2e: {boot}: USB: stick refused before the window, let in read-only inside it, taken out after; audited: {audited}");
    Ok(())
}

/// An admin on the Updates page over HTTPS: signs in, opens the USB window, waits for the
/// stick's bundle to be listed, applies it (confirmed, with the digest shown), follows the
/// progress to its outcome, and sees the window closed again. Returns the last progress.
fn apply_from_the_page(vm: &Vm, work: &Path, password: &str, version: &str) -> Result<Value, String> {
    let fail = |what: String| format!("boot 3, the Updates page: {what}");
    let mut web = WebSession::login(vm.web_port, work, "qa.admin", password).map_err(fail)?;
    let (code, html) = web.get("/admin/updates").map_err(fail)?;
    if code != 200 || !html.contains("USB window: closed: no USB stick is let in.") || !html.contains("usb-window-open") {
        return Err(fail(format!("{code}: the page does not offer to open a closed USB window: {html}")));
    }
    let (code, html) = web.post("/admin/updates/usb-window", &[("action", "open")]).map_err(fail)?;
    if code != 200 || !html.contains("The USB window is open for 15 minutes") {
        return Err(fail(format!("opening the USB window answered {code}: {html}")));
    }
    eprintln!("== e2e: boot 3: the admin opened the USB window on the Updates page");
    let field = |html: &str, name: &str| -> Option<String> {
        let key = format!("name=\"{name}\" value=\"");
        html.find(&key).and_then(|at| html[at + key.len()..].split('"').next().map(str::to_owned))
    };
    let deadline = std::time::Instant::now() + 5 * MIN;
    let (bundle, sha) = loop {
        let (_, html) = web.get("/admin/updates").map_err(fail)?;
        if let (Some(b), Some(s)) = (field(&html, "bundle"), field(&html, "sha256")) {
            eprintln!("== e2e: boot 3: the page lists {b} (manifest sha256 {s})");
            break (b, s);
        }
        if std::time::Instant::now() > deadline {
            return Err(fail(format!("no bundle listed 5 minutes after the window opened: {html}")));
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    let (code, html) = web.post("/admin/updates/apply", &[("bundle", &bundle), ("sha256", &sha), ("confirm", "yes")]).map_err(fail)?;
    if code != 202 {
        return Err(fail(format!("applying answered {code}: {html}")));
    }
    let deadline = std::time::Instant::now() + 25 * MIN;
    let apply = loop {
        let (_, json) = web.get("/admin/updates/progress").map_err(fail)?;
        let v: Value = serde_json::from_str(&json).map_err(|e| fail(format!("the progress is not JSON ({e}): {json}")))?;
        if v["apply"]["running"] == false {
            break v["apply"].clone();
        }
        if std::time::Instant::now() > deadline {
            return Err(fail(format!("the install still runs after 25 minutes: {v}")));
        }
        std::thread::sleep(Duration::from_secs(10));
    };
    eprintln!("== e2e: boot 3: the page's install ended: {} {} ({})", apply["outcome"], apply["version"], apply["words"]);
    if apply["outcome"] != "pending-reboot" || apply["version"] != version || apply["by"] != "qa.admin" {
        return Err(fail(format!("the install from the page did not end pending a reboot into v{version}: {apply}")));
    }
    let (_, html) = web.get("/admin/updates").map_err(fail)?;
    if !html.contains("USB window: closed") {
        return Err(fail(format!("the USB window is not closed after the install: {html}")));
    }
    Ok(apply)
}

/// Signs in again as the page's admin and opens the alerts page over and over (each view is an
/// audited access record, written before the answer); after 30 answered views, or 3 minutes,
/// the power is cut while views keep coming. Returns how many were answered.
fn audited_burst_then_power_cut(vm: Vm, work: &Path, password: &str) -> Result<u32, String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let mut web = WebSession::login(vm.web_port, work, "qa.admin", password).map_err(|e| format!("boot 3, the burst: {e}"))?;
    let answered = Arc::new(AtomicU32::new(0));
    let counter = answered.clone();
    let clicks = std::thread::spawn(move || {
        // Until the box stops answering (the power cut); a refusal is an error of the test.
        loop {
            match web.get("/admin/alerts") {
                Ok((200, _)) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Ok((code, body)) => return Err(format!("boot 3, the burst: the alerts page answered {code}: {}", body.chars().take(300).collect::<String>())),
                Err(_) => return Ok(()),
            }
        }
    });
    let deadline = std::time::Instant::now() + 3 * MIN;
    while answered.load(Ordering::SeqCst) < 30 && std::time::Instant::now() < deadline && !clicks.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    vm.power_cut();
    clicks.join().map_err(|_| "boot 3, the burst: the clicking thread panicked")??;
    let n = answered.load(Ordering::SeqCst);
    if n == 0 {
        return Err("boot 3, the burst: no view was answered before the power cut".into());
    }
    Ok(n)
}

/// The models-only bundle's version (the models track has its own floor).
const MODELS_VERSION: &str = "1.0.0";

/// Boot 9: IT installs the models-only bundle from a stick at the console (the probe, through
/// the USB window); the install's health check has the running engine answer with each new
/// model. Then, without a reboot, the box uses them: the probe imports a note for a new patient
/// (the engine embeds it), makes a clinician and grants her the patient; the clinician asks
/// about the patient over HTTPS and the answer streams from the new chat model, citing the note.
fn models_without_a_reboot(vm: &mut Vm, work: &Path) -> Result<(), String> {
    let password = vm.peek_after(&format!("{PROBE}web clinician qa.clinician password "), &["Kernel panic", &format!("{PROBE}FAILED"), &format!("{PROBE}end")], 30 * MIN)?;
    let fail = |what: String| format!("boot 9, the clinician's question: {what}");
    let mut web = WebSession::login(vm.web_port, work, "qa.clinician", &password).map_err(fail)?;
    let answer = web.ask_about(MODELS_PATIENT, "What is the patient allergic to?", 20 * MIN).map_err(fail)?;
    eprintln!(
        "== e2e: boot 9: the clinician's question answered in {:.0} s (timing {}), citing {:?}: {}",
        answer.took.as_secs_f64(),
        answer.timing,
        answer.cited,
        answer.text.trim()
    );
    let run9 = probe(vm, "boot 9", 15 * MIN)?;
    if run9.apply_exit != Some(0) {
        return Err(format!("boot 9: `wardbox update apply` of the models-only bundle did not succeed:\n{}", run9.lines.join("\n")));
    }
    check_usb_window(&run9, "boot 9", Stick::Console)?;
    check_refused(&run9, "boot 9", &[("refuse-13-truncated-image", "truncated system image")])?;
    let says = |text: &str| run9.lines.iter().any(|l| l.starts_with("apply: ") && l.contains(text));
    let models = BUNDLED_MODELS.join(", ");
    let installed = run9.lines.iter().any(|l| l.starts_with("apply: installed  models") && BUNDLED_MODELS.iter().all(|m| l.contains(m)));
    if !installed || !says("answered with every new model") {
        return Err(format!("boot 9: the install does not say it installed {models} and the running engine answered with each:\n{}", run9.lines.join("\n")));
    }
    let import = run9.lines.iter().find_map(|l| l.strip_prefix("import exit ")).map(str::trim);
    if import != Some("0") {
        return Err(format!("boot 9: importing the note after the models arrived failed:\n{}", run9.lines.join("\n")));
    }
    let after = run9.statuses.last().ok_or("boot 9: no status after the install")?;
    if after["models"] != MODELS_VERSION || after["last"]["kind"] != "models-only" || after["last"]["outcome"] != "installed" {
        return Err(format!("boot 9: status does not show the models-only install at {MODELS_VERSION}: {after}"));
    }
    eprintln!("== e2e: boot 9: models {models} installed from the stick without a reboot; the running engine answered with each");
    Ok(())
}

/// The patient the probe makes for the models check (`update-probe`).
const MODELS_PATIENT: &str = "QA-MODELS-1";

/// The install's slot is written and read back (its "reading back" line at 100 %); what comes
/// next is the UKI's copy onto the ESP (a temporary file, synced, renamed). The system disk's
/// writes are slowed to 1 MiB/s there, so the copy's sync of some 44 MB takes long enough, and
/// the power is cut 10 s into it. The ESP then holds v1's entry and no entry of v2 (at most the
/// temporary copy, which systemd-boot ignores and the next install removes): the box boots v1.
fn power_cut_while_the_esp_is_written(mut vm: Vm, bx: &Appliance, v1_blessed: &str, v2: &str) -> Result<(), String> {
    loop {
        let text = vm.expect(&format!("{PROBE}apply: reading back"), &["Kernel panic", &format!("{PROBE}apply exit")], 30 * MIN)?;
        if text.lines().last().is_some_and(|l| l.contains(" 100%")) {
            break;
        }
    }
    vm.throttle_system_disk_writes(1 << 20)?;
    std::thread::sleep(Duration::from_secs(10));
    vm.power_cut();
    let entries = bx.ukis()?;
    let (copies, named): (Vec<&String>, Vec<&String>) = entries.iter().partition(|e| e.starts_with('.'));
    if named != [v1_blessed] || copies.iter().any(|c| !c.starts_with(&format!(".wardbox-{v2}+3.efi."))) {
        return Err(format!("boot 1: after the power cut in the middle of the ESP write the ESP holds {entries:?}, not {v1_blessed} alone (and at most a temporary copy of v{v2}'s UKI)"));
    }
    eprintln!(
        "== e2e: boot 1: the power was cut while the install copied v{v2}'s UKI onto the ESP: the ESP boots only v1 ({} temporary copy left: {copies:?})",
        copies.len()
    );
    Ok(())
}

fn power_off(vm: Vm, boot: &str) -> Result<(), String> {
    if !vm.shutdown(3 * MIN)? {
        eprintln!("== e2e: {boot}: the guest did not power off on the ACPI button within 3 minutes; the power was cut");
    }
    Ok(())
}

fn expect_entries(bx: &Appliance, boot: &str, expected: &[String]) -> Result<(), String> {
    let mut expected = expected.to_vec();
    expected.sort();
    let entries = bx.ukis()?;
    if entries != expected {
        return Err(format!("{boot}: the ESP's EFI/Linux holds {entries:?}, not {expected:?}"));
    }
    eprintln!("== e2e: {boot}: ESP entries {entries:?}");
    Ok(())
}

fn scenario(work_out: &mut Option<PathBuf>) -> Result<(), String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no repository root")?.to_path_buf();
    let mut phases = Phases::default();
    let keep = std::env::var_os("WARDBOX_E2E_KEEP").is_some();
    let tmp = wardbox_e2e::work_dir(&repo, "wardbox-e2e-update-")?;
    let work = tmp.keep();
    *work_out = Some(work.clone());
    eprintln!("== e2e: work directory {}", work.display());

    let ws = Workstation::ceremony(&repo, &work, &mut phases)?;
    let image = build_image(&mut phases, &repo, &[("WARDBOX_UPDATE_ROOT", &ws.roots.join("1.root.json"))])?;
    let info = std::fs::read_to_string(image.join("image-info.txt")).unwrap_or_default();
    if !info.contains("update-root: yes") {
        return Err(format!("the image has no trusted update root (WARDBOX_E2E_IMAGE built without WARDBOX_UPDATE_ROOT?):\n{info}"));
    }
    let chain = Chain::read(&image)?;
    let v1 = image_version(&image)?;
    let (v2, v3) = (next_minor(&v1, 1)?, next_minor(&v1, 2)?);
    eprintln!("== e2e: versions: running {v1}, update {v2}, unhealthy update {v3}");

    phases.start("release: system images, signed UKIs, bundles, bundle disks");
    let switches = "wardbox.status_console wardbox.update_probe";
    let uki_v1 = chain.make_uki(&repo, &image, &chain.version, "a", &format!("quiet {switches}"), &work.join("uki-v1"))?;
    // Each version's slot image (its root file system and dm-verity hash tree) and the root
    // hash its UKIs carry.
    let (root_v2, verity_v2) = system_image(&repo, &image.join("root.ext4"), &v2, &work)?;
    let (root_v3, verity_v3) = system_image(&repo, &image.join("root.ext4"), &v3, &work)?;
    let v2_a = chain.make_uki_for_root(&repo, &image, &verity_v2, &v2, "a", switches, &work.join("uki-v2-a"))?;
    let v2_b = chain.make_uki_for_root(&repo, &image, &verity_v2, &v2, "b", switches, &work.join("uki-v2-b"))?;
    // v3's agent never starts: masked on its signed command line, so its boot never completes.
    let broken = "systemd.mask=wardbox.service";
    let v3_a = chain.make_uki_for_root(&repo, &image, &verity_v3, &v3, "a", broken, &work.join("uki-v3-a"))?;
    let v3_b = chain.make_uki_for_root(&repo, &image, &verity_v3, &v3, "b", broken, &work.join("uki-v3-b"))?;
    let notes = work.join("notes.txt");
    std::fs::write(&notes, "Wardbox test release (qemu full-update scenario)\n").map_err(|e| e.to_string())?;
    ws.full_bundle(&v2, &v1, &root_v2, &v2_a, &v2_b, &notes, &work.join("stick-v2"))?;
    // Bundles the box must refuse, on the same stick: the probe applies each before v2.
    let other = Workstation::ceremony(&repo, &work.join("other-workstation"), &mut phases)?;
    phases.start("release: bundles the box must refuse");
    refused_bundles(&ws, &other, &v1, &v2, [&v2_a, &v2_b], &notes, &work)?;
    ws.full_bundle(&v3, &v1, &root_v3, &v3_a, &v3_b, &notes, &work.join("stick-v3"))?;
    // The models a box answers with, in a models-only bundle on a stick of its own.
    phases.start("release: models-only bundle (the default chat and embedding models)");
    let models = work.join("ollama-models");
    models_dir(&BUNDLED_MODELS, &models)?;
    ws.models_bundle(MODELS_VERSION, &v1, &models, &notes, &work.join("stick-models"))?;
    // Beside it, a full bundle of v4 cut short on the stick: refused while it is staged, with
    // the entry that boots the inactive slot (v3's, fallen back) left on the ESP.
    let v4 = next_minor(&v1, 3)?;
    truncated_bundle(&ws, &v4, &v1, [&v2_a, &v2_b], &notes, &work, &work.join("stick-models"))?;
    let (disk_v2, disk_v3, disk_models) = (work.join("bundle-v2.img"), work.join("bundle-v3.img"), work.join("bundle-models.img"));
    bundle_disk(&work.join("stick-v2"), &disk_v2)?;
    bundle_disk(&work.join("stick-v3"), &disk_v3)?;
    bundle_disk(&work.join("stick-models"), &disk_models)?;
    let root_len = std::fs::metadata(&root_v2).map_err(|e| e.to_string())?.len();
    let (sha_v2, sha_v3) = (sha256_file(&root_v2)?, sha256_file(&root_v3)?);

    phases.start("prepare the box (disks, NVRAM, TPM)");
    let system_disk = work.join("system.raw");
    run(Command::new("cp").arg("--sparse=always").arg(chain.dir.join("disk.raw")).arg(&system_disk))?;
    let data_disk = work.join("data.raw");
    blank_data_disk(&data_disk, 4096)?;
    let vars = work.join("OVMF_VARS.fd");
    std::fs::copy(chain.dir.join("OVMF_VARS.fd"), &vars).map_err(|e| e.to_string())?;
    let mut bx = Appliance::new(&work, vars, system_disk, data_disk, free_port()?);
    bx.remove_uki(&chain.uki_name())?;
    bx.add_uki(&uki_v1)?;
    let v1_blessed = format!("wardbox-{}.efi", chain.version);

    // ---------------------------------------------------------------- boot 1: install v2
    phases.start("boot 1: v1 from slot A, provisioning, install v2 into slot B, power cut while writing the slot");
    let devices = [Attach::UsbStick(&disk_v2, "WBCONSOLE"), Attach::Usb("usb-kbd"), Attach::Usb("usb-mouse")];
    let (mut vm, tpm) = bx.boot_with(&devices)?;
    vm.expect("RECOVERY KEY", &["Failed to start wardbox-un", "Kernel panic", "Access Denied", "No bootable option"], 20 * MIN)?;
    check_health(&mut vm, "boot 1", &chain.uki_name())?;
    // The power goes while the install writes slot B: the slot holds part of v2, and v2's
    // entry is not on the ESP yet (it goes there after the slot is read back).
    // The second progress line of the phase: some of the image is on the slot (lines come every
    // 5 s while it writes).
    for _ in 0..2 {
        vm.expect(&format!("{PROBE}apply: writing"), &["Kernel panic", &format!("{PROBE}apply exit")], 30 * MIN)?;
    }
    vm.power_cut();
    drop(tpm);
    expect_entries(&bx, "boot 1 (power cut while writing the slot)", std::slice::from_ref(&v1_blessed))?;
    eprintln!("== e2e: boot 1: the power was cut while the install wrote slot B; the ESP still boots only v1");

    phases.start("boot 1 again: v1 boots, the install from the stick is cut while it copies the UKI onto the ESP");
    let (mut vm, tpm) = bx.boot_with(&devices)?;
    vm.expect("The TPM released the key", &["RECOVERY KEY", "Wardbox recovery key", "Kernel panic"], 15 * MIN)?;
    check_health(&mut vm, "boot 1 again", &v1_blessed)?;
    power_cut_while_the_esp_is_written(vm, &bx, &v1_blessed, &v2)?;
    drop(tpm);

    phases.start("boot 1, third time: v1 boots, the install from the stick completes");
    let (mut vm, tpm) = bx.boot_with(&devices)?;
    vm.expect("The TPM released the key", &["RECOVERY KEY", "Wardbox recovery key", "Kernel panic"], 15 * MIN)?;
    check_health(&mut vm, "boot 1, third time", &v1_blessed)?;
    let run1 = probe(&mut vm, "boot 1 again", 30 * MIN)?;
    if run1.apply_exit != Some(0) {
        return Err(format!("boot 1: `wardbox update apply` of v2 did not succeed:\n{}", run1.lines.join("\n")));
    }
    check_usb_window(&run1, "boot 1", Stick::ConsoleWithKeyboardAndMouse)?;
    check_refusals(&run1, "boot 1")?;
    // The box checked v2's UKI against the data volume's seal before touching the slot.
    if !run1.lines.iter().any(|l| l.starts_with("apply: uki") && l.contains("signed for PCR 11 by the key the data volume's seal trusts")) {
        return Err(format!("boot 1: the install does not say v{v2}'s UKI is signed for the seal's PCR 11 key:\n{}", run1.lines.join("\n")));
    }
    let after = run1.statuses.last().ok_or("boot 1: the probe printed no status after the install")?;
    if after["pending"]["to"] != v2.as_str() || after["pending"]["slot"] != "b" || after["system"]["slot"] != "a" {
        return Err(format!("boot 1: after the install status does not say v{v2} pending in slot b while slot a runs: {after}"));
    }
    phases.start("boot 1: power off");
    power_off(vm, "boot 1")?;
    drop(tpm);
    expect_entries(&bx, "boot 1", &[v1_blessed.clone(), format!("wardbox-{v2}+3.efi")])?;
    let slot_b = partition_sha256(&bx.system_disk, "wardbox-root-b", root_len)?;
    if slot_b != sha_v2 {
        return Err(format!("boot 1: slot B does not hold v{v2}'s system image (sha256 {slot_b}, expected {sha_v2})"));
    }
    eprintln!("== e2e: boot 1: slot B holds v{v2}'s image byte for byte; v{v2}'s UKI waits with 3 tries");

    // ---------------------------------------------------------------- boot 2: v2 from slot B
    phases.start("boot 2: v2 from slot B, power cut before it is blessed");
    let (mut vm, tpm) = bx.boot()?;
    let unlocked = ["RECOVERY KEY", "TPM refused", "Wardbox recovery key", "Failed to start wardbox-un", "Kernel panic"];
    vm.expect("The TPM released the key", &unlocked, 15 * MIN)?;
    vm.power_cut();
    drop(tpm);
    // systemd-boot counted the try before it started v2; nothing blessed it.
    expect_entries(&bx, "boot 2 (power cut before the blessing)", &[v1_blessed.clone(), format!("wardbox-{v2}+2-1.efi")])?;

    phases.start("boot 2 again: v2 from slot B, TPM unlock, blessed");
    let (mut vm, tpm) = bx.boot()?;
    vm.expect("The TPM released the key", &unlocked, 15 * MIN)?;
    check_health(&mut vm, "boot 2", &format!("wardbox-{v2}+2-1.efi"))?;
    let run2 = probe(&mut vm, "boot 2", 10 * MIN)?;
    let status = run2.statuses.last().ok_or("boot 2: the probe printed no status")?;
    eprintln!("== e2e: boot 2: wardbox update status --json: {status}");
    if status["system"]["running"] != v2.as_str() || status["system"]["slot"] != "b" || status["system"]["floor"] != v2.as_str() {
        return Err(format!("boot 2: status does not say v{v2} runs from slot b with the system floor at v{v2}: {status}"));
    }
    if !status["pending"].is_null() || status["last"]["outcome"] != "installed" || status["last"]["to"] != v2.as_str() {
        return Err(format!("boot 2: the update is not settled as installed: {status}"));
    }
    let timing = boot_phases(&vm, "boot 2, v2 from slot B");
    eprintln!("== e2e: boot 2, firmware to READY=1:\n{timing}");
    phases.start("boot 2: power off");
    power_off(vm, "boot 2")?;
    drop(tpm);
    expect_entries(&bx, "boot 2", &[v1_blessed.clone(), format!("wardbox-{v2}.efi")])?;

    // ---------------------------------------------------------------- boot 3: install v3
    phases.start("boot 3: v2 from slot B, install v3 (unhealthy) into slot A from the admin Updates page");
    // The stick's USB serial number tells the probe to leave it to the page.
    let (mut vm, tpm) = bx.boot_with(&[Attach::UsbStick(&disk_v3, "WBPAGE")])?;
    vm.expect("The TPM released the key", &["RECOVERY KEY", "Wardbox recovery key", "Kernel panic"], 15 * MIN)?;
    check_health(&mut vm, "boot 3", &format!("wardbox-{v2}.efi"))?;
    let password = vm.peek_after(&format!("{PROBE}web admin qa.admin password "), &["Kernel panic", &format!("{PROBE}FAILED")], 10 * MIN)?;
    let applied = apply_from_the_page(&vm, &work, &password, &v3)?;
    let run3 = probe(&mut vm, "boot 3", 30 * MIN)?;
    check_usb_window(&run3, "boot 3", Stick::Page)?;
    let after = run3.statuses.last().ok_or("boot 3: no status after the install")?;
    if after["pending"]["to"] != v3.as_str() || after["pending"]["slot"] != "a" {
        return Err(format!("boot 3: status does not say v{v3} pending in slot a: {after}"));
    }
    // The admin keeps clicking; the power goes in the middle of it. Every view the box answered
    // was audited before the answer (or it did not happen): boot 7 counts them.
    phases.start("boot 3: a burst of audited page views, cut off by a power cut");
    let acknowledged = audited_burst_then_power_cut(vm, &work, &password)?;
    drop(tpm);
    eprintln!("== e2e: boot 3: {acknowledged} alerts-page views answered before the power cut");
    // v1's entry booted slot A, which now holds v3: the install removed it.
    let install_lines: Vec<&str> = applied["lines"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if !install_lines.iter().any(|l| l.contains("old entries removed") && l.contains(&v1_blessed)) {
        return Err(format!("boot 3: the install does not say it removed v1's entry {v1_blessed}, which boots slot A: {applied}"));
    }
    expect_entries(&bx, "boot 3", &[format!("wardbox-{v2}.efi"), format!("wardbox-{v3}+3.efi")])?;
    let slot_a = partition_sha256(&bx.system_disk, "wardbox-root-a", root_len)?;
    if slot_a != sha_v3 {
        return Err(format!("boot 3: slot A does not hold v{v3}'s system image"));
    }

    // ---------------------------------------------------------------- boots 4-6: v3 tries
    for (n, left) in [(4, "+2-1"), (5, "+1-2"), (6, "+0-3")] {
        let boot = format!("boot {n}");
        phases.start(&format!("{boot}: v3 from slot A, never healthy"));
        let (mut vm, tpm) = bx.boot()?;
        let cmdline = vm.expect("Kernel command line: ", &["Kernel panic"], 10 * MIN).map_err(|e| format!("{boot}: {e}"))?;
        let cmdline = cmdline.lines().last().unwrap_or_default().to_string();
        if !cmdline.contains(&format!("root=PARTUUID={ROOT_A_UUID}")) || !cmdline.contains("systemd.mask=wardbox.service") {
            return Err(format!("{boot}: the kernel did not start v{v3}'s slot-A UKI: {cmdline}"));
        }
        // The agent is masked, so nothing ever requires boot-complete.target to succeed: the
        // boot reaches multi-user.target and is never blessed.
        vm.expect("Reached target multi-user.target", &["Kernel panic", "Started wardbox.service"], 10 * MIN)
            .map_err(|e| format!("{boot}: {e}"))?;
        power_off(vm, &boot)?;
        drop(tpm);
        expect_entries(&bx, &boot, &[format!("wardbox-{v2}.efi"), format!("wardbox-{v3}{left}.efi")])?;
    }

    // ---------------------------------------------------------------- boot 7: back on v2
    phases.start("boot 7: systemd-boot falls back to v2, the agent reports it");
    let (mut vm, tpm) = bx.boot()?;
    let cmdline = vm.expect("Kernel command line: ", &["Kernel panic"], 10 * MIN)?;
    if !cmdline.lines().last().unwrap_or_default().contains(&format!("root=PARTUUID={ROOT_B_UUID}")) {
        return Err(format!("boot 7: the fallback did not start slot B: {cmdline}"));
    }
    vm.expect("The TPM released the key", &["RECOVERY KEY", "Wardbox recovery key", "Kernel panic"], 15 * MIN)?;
    check_health(&mut vm, "boot 7", &format!("wardbox-{v2}.efi"))?;
    let run7 = probe(&mut vm, "boot 7", 10 * MIN)?;
    let status = run7.statuses.last().ok_or("boot 7: the probe printed no status")?;
    eprintln!("== e2e: boot 7: wardbox update status --json: {status}");
    if status["system"]["running"] != v2.as_str() || status["system"]["slot"] != "b" {
        return Err(format!("boot 7: status does not say v{v2} runs from slot b: {status}"));
    }
    if status["failed"]["outcome"] != "fell-back" || status["failed"]["to"] != v3.as_str() || !status["pending"].is_null() {
        return Err(format!("boot 7: status does not report the v{v3} update as fallen back: {status}"));
    }
    // The power cut in the burst of boot 3: the store opens (the agent runs), the chain
    // verifies, and no view the box had answered is missing (at most the one in flight extra).
    let line = |prefix: &str| run7.lines.iter().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    if line("audit verify exit") != Some("0") {
        return Err(format!("boot 7: the audit chain does not verify after the power cut:\n{}", run7.lines.join("\n")));
    }
    let views: u32 = line("audited alerts-page views by qa.admin:").and_then(|n| n.parse().ok()).ok_or("boot 7: the probe did not count the audited views")?;
    if views < acknowledged || views > acknowledged + 1 {
        return Err(format!("boot 7: {acknowledged} views were answered before the power cut, but the audit trail holds {views}"));
    }
    eprintln!("== e2e: boot 7: the chain verifies; {views} audited views for {acknowledged} answered before the power cut");
    phases.start("boot 7: power off");
    power_off(vm, "boot 7")?;
    drop(tpm);

    // ---------------------------------------------------------------- boot 8: Secure Boot off
    // Someone turns Secure Boot off in the firmware setup. The firmware policy requires it, so
    // the unlock refuses before the TPM is asked, and the console says the recovery key does
    // not help (no prompt): no key opens patient data on a boot chain the clinic does not trust.
    phases.start("boot 8: Secure Boot off: unlock refused, no recovery prompt");
    let fw_vars = virt_fw_vars().ok_or("virt-fw-vars is missing (PyPI virt-firmware)")?;
    run(Command::new(&fw_vars).arg("--inplace").arg(&bx.vars).args(["--set-false", "SecureBootEnable"]))?;
    let (mut vm, tpm) = bx.boot()?;
    let refused = ["The TPM released the key", "Wardbox recovery key (try", "Kernel panic"];
    vm.expect("the firmware policy requires Secure Boot, but the firmware reports Secure Boot off", &refused, 15 * MIN)?;
    vm.expect("the recovery key does not help here", &refused, 5 * MIN)?;
    eprintln!("== e2e: boot 8: Secure Boot off: the unlock refused and the console asked for no recovery key");
    phases.start("boot 8: power off");
    power_off(vm, "boot 8")?;
    drop(tpm);

    // ---------------------------------------------------------------- boot 9: Secure Boot on again
    phases.start("boot 9: Secure Boot on again: the TPM releases the key");
    run(Command::new(&fw_vars).arg("--inplace").arg(&bx.vars).args(["--set-true", "SecureBootEnable"]))?;
    // With the models-only bundle's stick: the box has had no model so far.
    let (mut vm, tpm) = bx.boot_with(&[Attach::UsbStick(&disk_models, "WBMODELS")])?;
    vm.expect("The TPM released the key", &["RECOVERY KEY", "Wardbox recovery key", "Kernel panic"], 15 * MIN)?;
    check_health(&mut vm, "boot 9", &format!("wardbox-{v2}.efi"))?;
    phases.start("boot 9: a models-only bundle from the console, then a clinician's question, no reboot");
    models_without_a_reboot(&mut vm, &work)?;
    phases.start("boot 9: power off");
    power_off(vm, "boot 9")?;
    drop(tpm);
    // The truncated bundle refused before it changed the ESP: v3's entry, which boots the
    // inactive slot A, is still there.
    expect_entries(&bx, "boot 9", &[format!("wardbox-{v2}.efi"), format!("wardbox-{v3}+0-3.efi")])?;

    eprintln!("\n{}", phases.table());
    eprintln!("boot 2, firmware to READY=1:\n{timing}");
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
