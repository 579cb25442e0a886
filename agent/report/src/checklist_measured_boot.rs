//! The measured boot item: Secure Boot on and enforcing, the booted kernel image a signed UKI
//! of the firmware policy, PCR 7 and 11 as the TPM holds them, and what the volume key is bound
//! to, and whether the running root file system is the verified one (dm-verity with the root
//! hash on the signed command line). Pure: the agent reads the firmware's variables, the TPM,
//! the policy, the kernel command line and the mount table into
//! [`crate::facts::MeasuredBootFacts`]; this decides.
//!
//! Unlike the other technical items, a box that shows nothing to measure (no UEFI variables, no
//! firmware policy, no TPM: a dev machine) needs attention rather than failing: the item then
//! says what could not be read, and it never passes.

use crate::facts::{FirmwareBoot, KeyList, Probe, RootFileSystem};
use crate::report::Status;

use super::{Ctx, Outcome, list_or_none, yes_no};

/// One thing found wrong, or not measurable, with what to do about it.
struct Finding {
    status: Status,
    reason: String,
    remedy: &'static str,
}

const REMEDY_SECURE_BOOT: &str = "Turn Secure Boot on in the firmware setup with the box's own keys enrolled (PK, KEK and db as the firmware policy pins them, not setup or audit mode), then check with `wardbox status`; if nobody changed the firmware on purpose, treat it as a security incident.";
const REMEDY_IMAGE: &str = "Boot the box from its signed Wardbox kernel image through systemd-boot (reinstall the current system with `wardbox update apply` if the ESP was changed); a kernel started otherwise is not the one the policy signs, so treat it as a security incident.";
const REMEDY_KEYS: &str = "Restore the Secure Boot keys the firmware policy pins (firmware setup), or, after IT has checked them, put the new keys in the policy's [secure_boot_keys] and reseal (`wardbox volume reseal`).";
const REMEDY_PIN: &str = "Pin the fleet's Secure Boot keys in the firmware policy ([secure_boot_keys], written by the image build for the keys it signs with) so only the policy's signed images boot.";
const REMEDY_SEAL: &str = "Run `wardbox volume reseal` (recovery key) so the volume key is bound to PCR 7 and the signed PCR 11 policy the firmware policy asks for.";
const REMEDY_ROOT: &str = "Boot the box from its signed Wardbox kernel image (UKI) through systemd-boot: its command line opens the root file system through dm-verity with the image's root hash. An image whose root is not opened through dm-verity is not a Wardbox release; if nobody changed the box's boot on purpose, treat it as a security incident.";
const REMEDY_MEASURE: &str = "Generate the report on the appliance itself, booted through UEFI with its TPM and firmware policy; on a dev machine this item cannot be measured.";

fn finding(status: Status, reason: impl Into<String>, remedy: &'static str) -> Finding {
    Finding { status, reason: reason.into(), remedy }
}

/// A boot entry of a Wardbox kernel image, `wardbox-<version>[+<left>[-<done>]].efi`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct UkiEntry<'a> {
    pub version: &'a str,
    /// The try counter it booted with (`+3`, `+2-1`); `None`: a blessed entry.
    pub counter: Option<&'a str>,
}

/// Parse a systemd-boot entry name as a Wardbox UKI; `None` for anything else.
pub(super) fn uki_entry(name: &str) -> Option<UkiEntry<'_>> {
    let stem = name.strip_prefix("wardbox-")?.strip_suffix(".efi")?;
    let (version, counter) = match stem.split_once('+') {
        Some((v, c)) => (v, Some(c)),
        None => (stem, None),
    };
    let version_ok = version.starts_with(|c: char| c.is_ascii_digit())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '~' | '-' | '_'));
    let counter_ok = counter.is_none_or(|c| {
        let mut parts = c.splitn(2, '-');
        parts.all(|p| !p.is_empty() && p.chars().all(|d| d.is_ascii_digit()))
    });
    (version_ok && counter_ok).then_some(UkiEntry { version, counter })
}

fn flag(value: Option<bool>, absent: &str) -> String {
    value.map_or_else(|| absent.to_string(), yes_no)
}

fn keys_text(lists: &[KeyList]) -> String {
    if lists.is_empty() {
        return "none".into();
    }
    lists.iter().map(|l| format!("{}: {}", l.variable, list_or_none(&l.entries))).collect::<Vec<_>>().join("; ")
}

/// Secure Boot on and enforcing, and the booted image a Wardbox UKI.
fn judge_firmware(fw: &FirmwareBoot, pcr11_zero: bool, findings: &mut Vec<Finding>) {
    match fw.secure_boot {
        None => findings.push(finding(Status::NeedsAttention, "the SecureBoot variable cannot be read", REMEDY_SECURE_BOOT)),
        Some(false) => findings.push(finding(Status::Fail, "Secure Boot is off: the firmware starts any boot loader and kernel", REMEDY_SECURE_BOOT)),
        Some(true) => {}
    }
    match fw.setup_mode {
        Some(true) => findings.push(finding(
            Status::Fail,
            "the firmware is in setup mode (no platform key): Secure Boot enforces nothing and anyone may enrol keys",
            REMEDY_SECURE_BOOT,
        )),
        None => findings.push(finding(
            Status::NeedsAttention,
            "the SetupMode variable cannot be read, so enforcement is not confirmed",
            REMEDY_SECURE_BOOT,
        )),
        Some(false) => {}
    }
    if fw.audit_mode == Some(true) {
        findings.push(finding(
            Status::Fail,
            "the firmware is in audit mode: images that fail verification still run",
            REMEDY_SECURE_BOOT,
        ));
    }
    match fw.boot_entry.as_deref() {
        None => findings.push(finding(
            Status::Fail,
            "systemd-boot did not start this boot (no LoaderEntrySelected): the booted image is not a boot entry of the policy",
            REMEDY_IMAGE,
        )),
        Some(entry) if uki_entry(&entry.to_ascii_lowercase()).is_none() => findings.push(finding(
            Status::Fail,
            format!("the booted entry {entry} is not a Wardbox kernel image (wardbox-<version>.efi)"),
            REMEDY_IMAGE,
        )),
        Some(_) => {}
    }
    if fw.stub_info.is_none() {
        findings.push(finding(
            Status::Fail,
            "no systemd-stub reported itself (StubInfo): the kernel was not started from a signed unified kernel image",
            REMEDY_IMAGE,
        ));
    } else if pcr11_zero {
        findings.push(finding(
            Status::Fail,
            "PCR 11 is all zeros although a unified kernel image's stub ran: the kernel image was not measured",
            REMEDY_IMAGE,
        ));
    }
}

/// The device-mapper name the initrd opens the verified root as (`wardbox-verity` in the
/// image's initramfs scripts).
const VERIFIED_ROOT_DM_NAME: &str = "wardbox-root";

/// The first 16 hex digits of a root hash, enough to tell images apart in a line.
fn short_hash(hash: &str) -> String {
    format!("{}…", hash.get(..16).unwrap_or(hash))
}

/// The root file system verified: the command line's dm-verity root hash, and `/` mounted from
/// the dm-verity device the initrd opened with it. Returns the evidence's values.
fn judge_root(root: &Probe<RootFileSystem>, findings: &mut Vec<Finding>) -> Vec<(&'static str, String)> {
    let r = match root {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => {
            findings.push(finding(
                Status::NeedsAttention,
                format!("whether the root file system is verified cannot be read: {reason}"),
                REMEDY_MEASURE,
            ));
            return vec![("root file system", format!("unavailable: {reason}"))];
        }
    };
    let mounted_from = format!("{} ({})", r.device, r.device_number);
    let dm_device = match (&r.dm_name, r.dm_verity) {
        (None, _) => "no (not a device-mapper device)".to_string(),
        (Some(name), true) => format!("{name}, opened by veritysetup (dm-verity)"),
        (Some(name), false) => format!("{name}, not a dm-verity device"),
    };
    let on_verity_device = r.dm_verity && r.dm_name.as_deref() == Some(VERIFIED_ROOT_DM_NAME);
    let verdict = match (&r.arguments_refused, &r.root_hash) {
        (Some(why), _) => {
            findings.push(finding(
                Status::Fail,
                format!("the root file system is not verified: the kernel command line's dm-verity arguments are not usable ({why})"),
                REMEDY_ROOT,
            ));
            format!("NOT verified: unusable dm-verity arguments ({why})")
        }
        (None, None) => {
            findings.push(finding(
                Status::Fail,
                format!(
                    "the root file system is not verified: the kernel command line names no dm-verity root hash (wardbox.verity_root_hash), and / is mounted from {}",
                    r.device
                ),
                REMEDY_ROOT,
            ));
            format!("NOT verified: no root hash on the kernel command line, / mounted from {}", r.device)
        }
        (None, Some(hash)) if !on_verity_device => {
            findings.push(finding(
                Status::Fail,
                format!(
                    "the root file system is not verified: the kernel command line names a dm-verity root hash, but / is mounted from {} ({dm_device}), not the dm-verity device {VERIFIED_ROOT_DM_NAME}",
                    r.device
                ),
                REMEDY_ROOT,
            ));
            format!("NOT verified: root hash {} on the command line, but / mounted from {}", short_hash(hash), r.device)
        }
        (None, Some(hash)) => format!("verified (dm-verity), root hash {}, device {VERIFIED_ROOT_DM_NAME}", short_hash(hash)),
    };
    vec![
        ("root file system", verdict),
        ("root hash on the command line", r.root_hash.clone().unwrap_or_else(|| "none".into())),
        ("hash tree offset", r.hash_offset.map_or_else(|| "none".into(), |o| format!("{o} bytes"))),
        ("/ mounted from", mounted_from),
        ("device-mapper device", dm_device),
    ]
}

pub(super) fn check_measured_boot(cx: &Ctx) -> Outcome {
    let mb = &cx.facts.measured_boot;
    let mut findings = Vec::new();

    // 1. The firmware's Secure Boot mode.
    let firmware_check = "Secure Boot is on and enforcing";
    let firmware_how = "read the firmware's SecureBoot, SetupMode, AuditMode and DeployedMode variables (efivarfs)";
    let image_check = "the booted kernel image is a signed Wardbox UKI of the firmware policy";
    let image_how = "read systemd-boot's LoaderEntrySelected and LoaderBootCountPath and systemd-stub's StubInfo (efivarfs); the TPM checked this boot's PCR 11 against the volume seal's PCR-signing key";
    let (firmware_values, image_values) = match &mb.firmware {
        Probe::Observed { value: fw } => {
            let entry = fw.boot_entry.as_deref().map(str::to_ascii_lowercase);
            let parsed = entry.as_deref().and_then(uki_entry);
            let blessed = match (&parsed, &fw.boot_count_path) {
                (None, _) => "not a Wardbox kernel image".to_string(),
                (Some(UkiEntry { counter: None, .. }), None) => "yes (booted without a try counter)".to_string(),
                (Some(u), path) => format!(
                    "no: booted on trial with the try counter +{} ({}); systemd-bless-boot blesses it after a healthy boot",
                    u.counter.unwrap_or("?"),
                    path.as_deref().unwrap_or("no count path")
                ),
            };
            (
                vec![
                    ("Secure Boot", flag(fw.secure_boot, "not readable")),
                    ("setup mode", flag(fw.setup_mode, "not readable")),
                    ("audit mode", flag(fw.audit_mode, "absent (firmware without audit mode)")),
                    ("deployed mode", flag(fw.deployed_mode, "absent")),
                ],
                vec![
                    ("boot entry", fw.boot_entry.clone().unwrap_or_else(|| "none (not started by systemd-boot)".into())),
                    ("version", parsed.as_ref().map_or_else(|| "-".into(), |u| u.version.to_string())),
                    ("blessed entry", blessed),
                    ("kernel image stub", fw.stub_info.clone().unwrap_or_else(|| "none (not a unified kernel image)".into())),
                ],
            )
        }
        Probe::Unavailable { reason } => {
            findings.push(finding(Status::NeedsAttention, format!("the firmware's boot variables cannot be read: {reason}"), REMEDY_MEASURE));
            (vec![("UEFI variables", format!("unavailable: {reason}"))], vec![("UEFI variables", format!("unavailable: {reason}"))])
        }
    };

    // 2. PCR 7 and 11 from the TPM, and what the volume key is sealed to.
    let mut tpm_values = match &mb.pcrs {
        Probe::Observed { value } => vec![("PCR 7", value.pcr7.clone()), ("PCR 11", value.pcr11.clone())],
        Probe::Unavailable { reason } => {
            findings.push(finding(Status::NeedsAttention, format!("PCR 7 and 11 cannot be read from the TPM: {reason}"), REMEDY_MEASURE));
            vec![("PCR 7 and 11", format!("unavailable: {reason}"))]
        }
    };
    let pcr11_zero = matches!(&mb.pcrs, Probe::Observed { value } if value.pcr11.chars().all(|c| c == '0'));
    if let Probe::Observed { value: fw } = &mb.firmware {
        judge_firmware(fw, pcr11_zero, &mut findings);
    }
    let policy = match &mb.policy {
        Probe::Observed { value } => Some(value),
        Probe::Unavailable { .. } => None,
    };
    match &cx.facts.tpm {
        Probe::Observed { value: t } => {
            tpm_values.push(("volume key sealed to", format!("{} PCRs {:?}", t.pcr_bank, t.sealed_pcrs)));
            tpm_values.push((
                "signed PCR 11 policy",
                t.signed_pcr11_key.as_ref().map_or_else(|| "no (literal PCRs only)".into(), |k| format!("yes, PCR-signing key {k}")),
            ));
            let signed = match (t.signed_pcr11_key.is_some(), t.pcr11_signed) {
                (false, _) => "not checked (no signed PCR 11 policy)".to_string(),
                (true, Some(true)) => "yes: this boot's PCR 11 is signed by the PCR-signing key".to_string(),
                (true, Some(false)) => format!("NO: {}", t.seal_check),
                (true, None) => format!("not checked: {}", t.seal_check),
            };
            tpm_values.push(("booted image signed for the volume key", signed));
            if !t.sealed_pcrs.contains(&7) {
                findings.push(finding(
                    Status::NeedsAttention,
                    "the volume key is not bound to PCR 7: a changed Secure Boot state or key would still unlock it",
                    REMEDY_SEAL,
                ));
            }
            if t.signed_pcr11_key.is_none() && policy.is_some_and(|p| p.signed_pcr11) {
                findings.push(finding(
                    Status::NeedsAttention,
                    "the firmware policy binds the volume key to the signed PCR 11 policy, but the seal does not: any kernel the firmware accepts would unlock it",
                    REMEDY_SEAL,
                ));
            }
            match (t.signed_pcr11_key.is_some(), t.pcr11_signed) {
                (true, Some(false)) => findings.push(finding(
                    Status::Fail,
                    format!("this boot's PCR 11 is not signed by the volume seal's PCR-signing key, so the running kernel image is not one the fleet signed ({})", t.seal_check),
                    REMEDY_IMAGE,
                )),
                (true, None) => findings.push(finding(
                    Status::NeedsAttention,
                    format!("whether this boot's PCR 11 is signed could not be checked: {}", t.seal_check),
                    REMEDY_MEASURE,
                )),
                _ => {}
            }
        }
        Probe::Unavailable { reason } => {
            tpm_values.push(("volume key seal", format!("unavailable: {reason}")));
            findings.push(finding(Status::NeedsAttention, format!("the volume key's TPM seal cannot be read: {reason}"), REMEDY_MEASURE));
        }
    }

    // 3. The firmware policy's pinned keys against the enrolled ones (the config stage's check).
    let policy_check = "the firmware holds exactly the Secure Boot keys the firmware policy pins";
    let policy_how = "read the firmware policy and the firmware's PK, KEK and db (efivarfs), and ran the agent's config-stage key check";
    let policy_values = match &mb.policy {
        Probe::Observed { value: p } => {
            let enrolled = match &p.enrolled_keys {
                Probe::Observed { value } => keys_text(value),
                Probe::Unavailable { reason } => format!("unavailable: {reason}"),
            };
            if p.pinned_keys.is_empty() {
                findings.push(finding(
                    Status::NeedsAttention,
                    "the firmware policy pins no Secure Boot keys: any image signed by a key in the firmware's db boots, so the booted image cannot be tied to the policy",
                    REMEDY_PIN,
                ));
            } else if let Probe::Unavailable { reason } = &p.enrolled_keys {
                findings.push(finding(Status::NeedsAttention, format!("the enrolled Secure Boot keys cannot be read: {reason}"), REMEDY_MEASURE));
            } else if let Some(why) = &p.keys_refused {
                findings.push(finding(Status::Fail, format!("the enrolled Secure Boot keys are not the pinned ones: {why}"), REMEDY_KEYS));
            }
            vec![
                ("firmware policy", p.file.clone()),
                ("Secure Boot required", yes_no(p.secure_boot_required)),
                ("policy binds the volume key to", format!("PCRs {:?}{}", p.pcrs, if p.signed_pcr11 { " + signed PCR 11" } else { "" })),
                ("pinned keys (SHA-256 of the certificate)", keys_text(&p.pinned_keys)),
                ("enrolled keys", enrolled),
                (
                    "key check",
                    match (&p.keys_refused, p.pinned_keys.is_empty()) {
                        (Some(why), _) => format!("refused: {why}"),
                        (None, true) => "nothing pinned".into(),
                        (None, false) if matches!(p.enrolled_keys, Probe::Unavailable { .. }) => "not made".into(),
                        (None, false) => "the enrolled keys are the pinned ones".into(),
                    },
                ),
            ]
        }
        Probe::Unavailable { reason } => {
            findings.push(finding(Status::NeedsAttention, format!("the firmware policy cannot be read: {reason}"), REMEDY_MEASURE));
            vec![("firmware policy", format!("unavailable: {reason}"))]
        }
    };

    // 4. The running root file system: the verified image the signed command line names.
    let root_values = judge_root(&mb.root, &mut findings);

    let ev = vec![
        cx.evidence(firmware_check, firmware_how, firmware_values),
        cx.evidence(image_check, image_how, image_values),
        cx.evidence(
            "PCR 7 and PCR 11 as the TPM holds them, and the volume key's binding",
            "read PCR 7 and 11 (SHA-256 bank) from the TPM that quotes this report (PCR 7 is also in the quote), and the volume's TPM seal",
            tpm_values,
        ),
        cx.evidence(policy_check, policy_how, policy_values),
        cx.evidence(
            "the running root file system is the verified image: opened through dm-verity with the root hash on the signed kernel command line",
            "read the kernel command line (/proc/cmdline: wardbox.verity_root_hash, wardbox.verity_hash_offset), the device / is mounted from (/proc/self/mountinfo), and that device's device-mapper name and UUID (/sys/dev/block/MAJOR:MINOR/dm)",
            root_values,
        ),
    ];

    // The worst finding decides; every finding of that status is named.
    for status in [Status::Fail, Status::NeedsAttention] {
        let worst: Vec<&Finding> = findings.iter().filter(|f| f.status == status).collect();
        if let Some(first) = worst.first() {
            let reason = worst.iter().map(|f| f.reason.as_str()).collect::<Vec<_>>().join("; ");
            return Outcome::new(status, reason, ev).remedy(first.remedy);
        }
    }
    let entry = match &mb.firmware {
        Probe::Observed { value } => value.boot_entry.clone().unwrap_or_default(),
        Probe::Unavailable { .. } => String::new(),
    };
    let signed = match &cx.facts.tpm {
        Probe::Observed { value } if value.pcr11_signed == Some(true) => "; its PCR 11 is signed by the fleet's PCR-signing key",
        _ => "",
    };
    let root = match &mb.root {
        Probe::Observed { value: RootFileSystem { root_hash: Some(hash), .. } } => {
            format!("; its root file system is verified (dm-verity, root hash {})", short_hash(hash))
        }
        _ => String::new(),
    };
    Outcome::new(
        Status::Pass,
        format!("Secure Boot is on and enforcing the pinned keys; the box booted the signed kernel image {entry}{signed}{root}"),
        ev,
    )
}
