//! The compliance report made inside the booted appliance, checked on the host.
//!
//! `wardbox-report-probe.service` (switched on by `wardbox.report_probe` on the kernel command
//! line) prints on the console, gzipped and base64-encoded between BEGIN/END lines: the TPM
//! attestation key's public part, a report of the box as it booted, and a report made after
//! the firewall table was flushed. Here the host reads them back from the console transcript
//! and checks, with the host's own `wardbox report verify` (the agent binary the image was
//! built with):
//! - every technical item of the first report passes (real LUKS2, TPM, nftables, TLS);
//! - the second report fails the outbound item with the flushed table as evidence, and says
//!   so first among the changes since the first report;
//! - `verify` accepts both with the guest's attestation key; refuses the first after one byte
//!   is changed; refuses it quoted by another TPM (a software TPM on the host), and refuses the
//!   genuine report checked against that other TPM's key.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::{Vm, clean};

/// What every line of the probe starts with (after the journal's prefix on the console).
const TAG: &str = "wardbox-report-probe: ";

/// The checklist items the box measures itself and that a healthy appliance must pass: HIPAA
/// §164.312 and the go-live checklist's technical lines. Administrative items the box
/// measures (backups, retention, termination, ...) depend on what the clinic has done, not on
/// the image, and are only printed.
pub const TECHNICAL_ITEMS: &[&str] = &[
    "access-unique-user-id",
    "access-emergency-access",
    "access-automatic-logoff",
    "access-encryption-at-rest",
    "audit-every-interaction",
    "integrity-audit-log",
    "integrity-ephi-authentication",
    "authentication-person",
    "transmission-integrity",
    "transmission-encryption",
    "network-engine-unreachable",
    "network-outbound-blocked",
    "physical-usb-storage",
    // Secure Boot enforcing with the pinned keys, a signed Wardbox UKI from systemd-boot, PCR 7
    // and 11 from the quoting TPM, this boot's PCR 11 signed for the volume's seal.
    "integrity-measured-boot",
];

/// The bytes of the file `name` the probe printed in `transcript` (the last copy).
pub fn extract(transcript: &str, name: &str) -> Result<Vec<u8>, String> {
    let text = clean(transcript);
    let begin = format!("{TAG}BEGIN {name}");
    let end = format!("{TAG}END {name}");
    let start = text.rfind(&begin).ok_or_else(|| format!("the console shows no `{begin}`"))?;
    let stop = text[start..].find(&end).map(|i| start + i).ok_or_else(|| format!("the console shows no `{end}` after its BEGIN"))?;
    let marker = format!("{TAG}b64 ");
    let encoded: String = text[start..stop]
        .lines()
        .filter_map(|l| l.split_once(&marker).map(|(_, data)| data.trim()))
        .collect();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| format!("{name}: the console copy is not base64 ({e}); a console line was garbled"))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: the console copy does not gunzip ({e})"))?;
    Ok(bytes)
}

/// The agent binary the image was built with (image/build.sh: `$CARGO_TARGET_DIR/release`).
fn host_wardbox(repo: &Path) -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"));
    let bin = target.join("release/wardbox");
    if bin.is_file() { Ok(bin) } else { Err(format!("no host `wardbox` at {} to run `report verify` with (image/build.sh builds it)", bin.display())) }
}

/// `wardbox report verify FILE --ak AK`: (accepted, output).
fn verify(wardbox: &Path, file: &Path, ak: &Path) -> Result<(bool, String), String> {
    let out = Command::new(wardbox)
        .args(["report", "verify"])
        .arg(file)
        .arg("--ak")
        .arg(ak)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", wardbox.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => Ok((true, text)),
        Some(3) => Ok((false, text)),
        other => Err(format!("`wardbox report verify {}` exited {other:?}:\n{text}", file.display())),
    }
}

fn item<'a>(report: &'a Value, id: &str) -> Result<&'a Value, String> {
    report["report"]["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id))
        .ok_or_else(|| format!("the report has no item {id}"))
}

/// Wait for the probe to finish in this boot, then check its reports on the host (module doc).
/// Files are kept in `work` (`guest-ak.pub`, `guest-report-1.json`, ...).
pub fn check_guest_reports(vm: &mut Vm, work: &Path, repo: &Path, timeout: Duration) -> Result<(), String> {
    vm.expect(&format!("{TAG}done"), &[&format!("{TAG}FAILED"), "Kernel panic"], timeout)?;
    let transcript = vm.transcript();
    let wardbox = host_wardbox(repo)?;
    let ak = work.join("guest-ak.pub");
    let first_path = work.join("guest-report-1.json");
    let second_path = work.join("guest-report-2.json");
    std::fs::write(&ak, extract(&transcript, "ak.pub")?).map_err(|e| e.to_string())?;
    let first_bytes = extract(&transcript, "report-1")?;
    std::fs::write(&first_path, &first_bytes).map_err(|e| e.to_string())?;
    std::fs::write(&second_path, extract(&transcript, "report-2")?).map_err(|e| e.to_string())?;
    let parse = |p: &Path| -> Result<Value, String> {
        serde_json::from_slice(&std::fs::read(p).map_err(|e| e.to_string())?).map_err(|e| format!("{}: {e}", p.display()))
    };
    let (first, second) = (parse(&first_path)?, parse(&second_path)?);

    // 1. Every technical item passes in the booted appliance.
    for i in first["report"]["items"].as_array().ok_or("the first report has no items")? {
        eprintln!("== e2e: report in the guest: {:<34} {:<15} {}", i["id"].as_str().unwrap_or("?"), i["status"].as_str().unwrap_or("?"), i["reason"].as_str().unwrap_or(""));
    }
    let failing: Vec<String> = TECHNICAL_ITEMS
        .iter()
        .filter_map(|id| match item(&first, id) {
            Ok(i) if i["status"] == "pass" => None,
            Ok(i) => Some(format!("{id} is {}: {}\n    evidence: {}", i["status"], i["reason"], i["evidence"])),
            Err(e) => Some(e),
        })
        .collect();
    if !failing.is_empty() {
        return Err(format!("technical items that do not pass in the booted appliance:\n  {}", failing.join("\n  ")));
    }
    if first["report"]["profile"] != "appliance" || first["integrity"].is_null() {
        return Err(format!("the guest's report is not a quoted appliance report: profile {}, integrity {}", first["report"]["profile"], first["integrity"]));
    }

    // 2. The flushed table fails the outbound item, with the evidence, first among the changes.
    let outbound = item(&second, "network-outbound-blocked")?;
    if outbound["status"] != "fail" || !outbound["evidence"].to_string().contains("flushed") {
        return Err(format!("after the firewall table was flushed, network-outbound-blocked is {} with evidence {}", outbound["status"], outbound["evidence"]));
    }
    let changes = second["report"]["changes"].as_array().cloned().unwrap_or_default();
    let regressed: Vec<&Value> = changes.iter().take_while(|c| c["from"] == "pass" && c["to"] == "fail").collect();
    if !regressed.iter().any(|c| c["item"] == "network-outbound-blocked") {
        return Err(format!("the second report's changes do not list network-outbound-blocked pass -> fail among the first: {changes:?}"));
    }
    if second["report"]["previous"]["digest"] != first["integrity"]["digest"] {
        return Err("the second report does not name the first as the one it compares with".into());
    }
    eprintln!("== e2e: report in the guest: firewall flushed -> network-outbound-blocked fail ({})", outbound["reason"]);

    // 3. verify on the host: accepted; one changed byte refused.
    for path in [&first_path, &second_path] {
        let (ok, said) = verify(&wardbox, path, &ak)?;
        if !ok {
            return Err(format!("`wardbox report verify` refused the guest's report {}:\n{said}", path.display()));
        }
    }
    let mut changed = first_bytes.clone();
    let at = changed.len() / 3;
    changed[at] ^= 0x01;
    let changed_path = work.join("guest-report-1.changed.json");
    std::fs::write(&changed_path, &changed).map_err(|e| e.to_string())?;
    let (ok, said) = verify(&wardbox, &changed_path, &ak)?;
    if ok || !said.contains("REFUSED") {
        return Err(format!("`wardbox report verify` accepted the guest's report with byte {at} changed:\n{said}"));
    }

    // 4. Another TPM: the same report quoted by a software TPM on the host is refused with the
    //    guest's key, and the genuine report is refused with that TPM's key.
    let other_state = work.join("other-tpm");
    std::fs::create_dir_all(&other_state).map_err(|e| e.to_string())?;
    let other = wardbox_volume::swtpm::SoftwareTpm::start(&other_state).map_err(|e| format!("the host's software TPM: {e}"))?;
    let mut quoter = wardbox_report::Quoter::connect(&other.tcti()).map_err(|e| e.to_string())?;
    let doc = wardbox_report::json::read(&first_bytes).map_err(|e| e.to_string())?;
    let foreign = wardbox_report::quote::sign_report(&mut quoter, &doc.report).map_err(|e| e.to_string())?;
    let foreign_path = work.join("guest-report-1.other-tpm.json");
    std::fs::write(&foreign_path, &foreign.json).map_err(|e| e.to_string())?;
    let other_ak = work.join("other-tpm-ak.pub");
    std::fs::write(&other_ak, quoter.ak_public().map_err(|e| e.to_string())?.to_pem()).map_err(|e| e.to_string())?;
    let (ok, said) = verify(&wardbox, &foreign_path, &ak)?;
    if ok || !said.contains("REFUSED") {
        return Err(format!("`wardbox report verify` accepted the report quoted by another TPM:\n{said}"));
    }
    let (ok, said) = verify(&wardbox, &first_path, &other_ak)?;
    if ok || !said.contains("REFUSED") {
        return Err(format!("`wardbox report verify` accepted the guest's report with another TPM's key:\n{said}"));
    }
    eprintln!("== e2e: report in the guest: verified on the host; a changed byte and another TPM refused");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// What the probe prints, as the journal forwards it to the console.
    fn console(name: &str, bytes: &[u8]) -> String {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).expect("gzip");
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
        let mut out = format!("[   40.1] report-probe[512]: {TAG}BEGIN {name}\r\n");
        for chunk in b64.as_bytes().chunks(72) {
            out.push_str(&format!("[   40.2] report-probe[512]: {TAG}b64 {}\r\n", std::str::from_utf8(chunk).expect("ascii")));
        }
        out.push_str(&format!("[   40.3] report-probe[512]: {TAG}END {name}\r\n"));
        out
    }

    #[test]
    fn a_file_printed_on_the_console_is_read_back() {
        let report = br#"{"format":"wardbox-report/1","report":{}}"#.repeat(40);
        let text = format!("noise\n{}[ 41.0] kernel line\n{}", console("report-1", &report), console("ak.pub", b"-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(extract(&text, "report-1").expect("report"), report);
        assert_eq!(extract(&text, "ak.pub").expect("ak"), b"-----BEGIN PUBLIC KEY-----\n");
        assert!(extract(&text, "report-2").expect_err("absent").contains("no `wardbox-report-probe: BEGIN report-2`"));
    }

    #[test]
    fn a_garbled_console_line_is_an_error() {
        let text = console("report-1", b"some report bytes").replace(&format!("{TAG}b64 "), &format!("{TAG}b64 #"));
        assert!(extract(&text, "report-1").is_err());
    }
}
