//! `wardbox report` against a live dev box and a real software TPM: the AK is exported, a
//! report is generated from the running box's facts (its plain directory, missing firewall and
//! plain-HTTP listener fail, with the evidence), quoted, verified, refused after one changed
//! byte, compared with the previous one, and its digest lands in the audit chain.
//! Needs swtpm (fails saying so when it is missing).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn wardbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wardbox")).args(args).output().expect("run wardbox")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn reports(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .expect("read out dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("wardbox-report-") && n.ends_with(".json") && !n.ends_with(".oscal.json")
        })
        .collect();
    found.sort();
    found
}

fn item<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["report"]["items"].as_array().expect("items").iter().find(|i| i["id"] == id).unwrap_or_else(|| panic!("no item {id}"))
}

#[test]
fn report_generate_on_a_live_dev_box_then_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tpm_state = dir.path().join("tpm");
    std::fs::create_dir_all(&tpm_state).expect("mkdir");
    let tpm = match wardbox_volume::swtpm::SoftwareTpm::start(&tpm_state) {
        Ok(t) => t,
        Err(e) => panic!("report_cli needs a software TPM: {e}"),
    };
    let tcti = tpm.tcti();
    let base = dir.path().join("box");
    let out = dir.path().join("reports");
    let config = base.join("wardbox.toml");
    let addr = free_port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wardbox dev");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() || !base.join("state/status.json").exists() {
        if let Ok(Some(status)) = agent.try_wait() {
            let mut err = String::new();
            agent.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("the agent exited with {status} before serving:\n{err}");
        }
        assert!(Instant::now() < deadline, "the dev box did not come up within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The agent's own start-up walk of the chain is recorded as the verified head, so the
    // report below checks incrementally from it.
    let verified = base.join("state/audit-verified.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !verified.exists() {
        assert!(Instant::now() < deadline, "the agent's start-up walk recorded no verified head in {}", verified.display());
        std::thread::sleep(Duration::from_millis(200));
    }
    let head: serde_json::Value = serde_json::from_slice(&std::fs::read(&verified).expect("read")).expect("json");
    assert!(head["full_walk_at"].is_string() && head["seq"].as_u64() > Some(0), "{head}");

    // `wardbox dev --listen` does not write its address into the configuration the operator
    // commands read: put it there, so the live probes reach this box's listener.
    let toml = std::fs::read_to_string(&config).expect("read config");
    assert!(toml.contains("listen = \"127.0.0.1:8443\""), "{toml}");
    let mut toml = toml.replace("listen = \"127.0.0.1:8443\"", &format!("listen = \"{addr}\""));
    // The box's data lives on this machine's disk, shared with everything else on it: the lowest
    // thresholds keep the verdict below about this box, not about how full the build machine is
    // (fault_low_space crosses the thresholds on a volume of its own).
    for (key, value) in [("warn_free_percent", 2), ("critical_free_percent", 1)] {
        let default = format!("{key} = {}\n", if key.starts_with("warn") { 10 } else { 3 });
        assert!(toml.contains(&default), "no `{default}` in the dev configuration: {toml}");
        toml = toml.replace(&default, &format!("{key} = {value}\n"));
    }
    std::fs::write(&config, toml).expect("write config");
    let cfg = config.to_str().expect("utf8");
    let ak = dir.path().join("ak.pub");
    let exported = wardbox(&["report", "export-ak", "-c", cfg, "--out", ak.to_str().expect("utf8"), "--tcti", &tcti]);
    assert!(exported.status.success(), "{}", text(&exported));
    assert!(text(&exported).contains("fingerprint"), "{}", text(&exported));

    // Attestations and waivers, entered at the console, reach the report; bad ones are refused
    // naming the problem.
    let attested = wardbox(&["report", "attest", "-c", cfg, "admin-training", "--document", "Training log 2026, binder B", "--valid-until", "2099-01-01", "--by", "pm.jones"]);
    assert!(attested.status.success(), "{}", text(&attested));
    let waived = wardbox(&["report", "waive", "-c", cfg, "physical-usb-storage", "--approver", "dr.owner", "--justification", "updates by USB stick", "--expires", "2099-01-01"]);
    assert!(waived.status.success(), "{}", text(&waived));
    let measured = wardbox(&["report", "attest", "-c", cfg, "access-automatic-logoff", "--document", "we promise", "--valid-until", "2099-01-01"]);
    assert_eq!(measured.status.code(), Some(1), "{}", text(&measured));
    assert!(text(&measured).contains("never attested"), "{}", text(&measured));
    let expired = wardbox(&["report", "attest", "-c", cfg, "admin-risk-assessment", "--document", "Risk assessment 2020", "--valid-until", "2021-01-01"]);
    assert_eq!(expired.status.code(), Some(1), "{}", text(&expired));
    assert!(text(&expired).contains("not in the future"), "{}", text(&expired));
    let not_waivable = wardbox(&["report", "waive", "-c", cfg, "admin-training", "--approver", "dr.owner", "--justification", "busy", "--expires", "2099-01-01"]);
    assert_eq!(not_waivable.status.code(), Some(1), "{}", text(&not_waivable));
    assert!(text(&not_waivable).contains("cannot be waived"), "{}", text(&not_waivable));

    // A kernel image measured into PCR 11, as systemd-stub does, so the report shows a real,
    // non-zero PCR 11 read from the TPM: SHA-256(zeros || SHA-256(image)).
    let image = b"a unified kernel image";
    let mut volume_tpm = wardbox_volume::Tpm::connect(&tcti).expect("connect to swtpm");
    volume_tpm.extend_pcr(wardbox_volume::PcrBank::Sha256, 11, image).expect("extend PCR 11");
    drop(volume_tpm);
    let expected_pcr11 = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(Sha256::digest(image));
        hex::encode(h.finalize())
    };

    let generated = wardbox(&["report", "generate", "-c", cfg, "--out", out.to_str().expect("utf8"), "--tcti", &tcti]);
    // A dev box fails items (no encryption, no firewall, no TLS): exit 3, each failure named.
    assert_eq!(generated.status.code(), Some(3), "{}", text(&generated));
    let said = text(&generated);
    assert!(said.contains("FAIL access-encryption-at-rest"), "{said}");
    assert!(said.contains("FAIL network-outbound-blocked"), "{said}");
    let files = reports(&out);
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).expect("read report");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let evidence = |id: &str| item(&doc, id)["evidence"].to_string();
    assert!(evidence("access-encryption-at-rest").contains("plain directory (dev profile)"));
    assert!(evidence("transmission-encryption").contains("plain HTTP (dev profile)"), "{}", evidence("transmission-encryption"));
    assert!(evidence("network-outbound-blocked").contains("firewall.enabled is false"));
    assert_eq!(item(&doc, "integrity-audit-log")["status"], "pass", "{}", item(&doc, "integrity-audit-log"));
    assert!(evidence("integrity-audit-log").contains("incremental, from record"), "{}", evidence("integrity-audit-log"));
    assert_eq!(item(&doc, "integrity-ephi-authentication")["status"], "pass", "{}", item(&doc, "integrity-ephi-authentication"));
    assert_eq!(item(&doc, "access-automatic-logoff")["status"], "pass");
    assert_eq!(item(&doc, "admin-contingency-backups")["status"], "fail");
    assert_eq!(item(&doc, "admin-training")["status"], "attested", "{}", item(&doc, "admin-training"));
    assert!(evidence("admin-training").contains("Training log 2026, binder B"), "{}", evidence("admin-training"));
    assert_eq!(item(&doc, "physical-usb-storage")["status"], "not_applicable", "{}", item(&doc, "physical-usb-storage"));
    assert_eq!(item(&doc, "admin-risk-assessment")["status"], "needs_attention");
    // The measured boot: a dev box has no firmware policy and no volume seal (the item could at
    // best need attention), and its host's root file system is not a verified Wardbox root
    // (no dm-verity root hash on this host's command line), which fails the item, naming it;
    // the missing firewall policy is still in the evidence. PCR 7 and 11 are read live from the
    // quoting TPM, and PCR 7 is the value the quote covers.
    let host_cmdline = std::fs::read_to_string("/proc/cmdline").expect("this host's /proc/cmdline");
    assert!(!host_cmdline.contains("wardbox.verity_root_hash="), "this test runs a dev box on a development host, not on a verified appliance");
    let boot = item(&doc, "integrity-measured-boot");
    assert_eq!(boot["status"], "fail", "{boot}");
    assert!(boot["reason"].as_str().is_some_and(|r| r.contains("the root file system is not verified")), "{boot}");
    assert!(boot["remediation"].as_str().is_some_and(|r| r.contains("not a Wardbox release")), "{boot}");
    assert!(boot["evidence"].to_string().contains("no firmware policy"), "{boot}");
    let quoted_pcr7 = doc["integrity"]["pcrs"].as_array().expect("pcrs").iter().find(|p| p["index"] == 7).expect("PCR 7 quoted")["value"].clone();
    let observed = |name: &str| {
        boot["evidence"].as_array().expect("evidence").iter().flat_map(|e| e["values"].as_array().expect("values").clone()).find(|v| v["name"] == name).map(|v| v["value"].clone())
    };
    assert_eq!(observed("PCR 7"), Some(quoted_pcr7), "{boot}");
    assert_eq!(observed("PCR 11"), Some(serde_json::Value::String(expected_pcr11)), "{boot}");
    let root = observed("root file system").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    assert!(root.starts_with("NOT verified: no root hash on the kernel command line, / mounted from "), "{boot}");
    // Live connects to the engine's port on every address, loopback included.
    assert!(evidence("network-engine-unreachable").contains("127.0.0.1:"), "{}", evidence("network-engine-unreachable"));

    // Verify with the exported AK, the HTML rendering too.
    let html = files[0].with_extension("html");
    let report = files[0].to_str().expect("utf8");
    let ak_arg = ak.to_str().expect("utf8");
    let verified = wardbox(&["report", "verify", report, "--ak", ak_arg, "--rendering", html.to_str().expect("utf8")]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("verified"), "{}", text(&verified));

    // One changed byte is refused.
    let changed = dir.path().join("changed.json");
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x01;
    std::fs::write(&changed, &altered).expect("write");
    let refused = wardbox(&["report", "verify", changed.to_str().expect("utf8"), "--ak", ak_arg]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(text(&refused).contains("REFUSED"), "{}", text(&refused));

    // The next report compares itself with this one.
    std::thread::sleep(Duration::from_millis(1100));
    let again = wardbox(&["report", "generate", "-c", cfg, "--out", out.to_str().expect("utf8"), "--tcti", &tcti]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    let files = reports(&out);
    assert_eq!(files.len(), 2);
    let second: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[1]).expect("read")).expect("json");
    assert_eq!(second["report"]["previous"]["digest"], doc["integrity"]["digest"]);

    // The chain, with the two report records appended by the CLI beside the running agent, is
    // still intact.
    let chain = wardbox(&["audit", "verify", "-c", cfg]);
    assert!(chain.status.success(), "{}", text(&chain));
    // Each report's digest is in the chain: read back through a monthly export.
    let exports = dir.path().join("exports");
    let month = doc["report"]["generated_at"].as_str().expect("generated_at")[..7].to_string();
    let exported = wardbox(&["audit", "export", "-c", cfg, "--month", &month, "--out", exports.to_str().expect("utf8")]);
    assert!(exported.status.success(), "{}", text(&exported));
    let mut records = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(exports.join(format!("audit-{month}.jsonl.gz"))).expect("export"))
        .read_to_string(&mut records)
        .expect("gunzip");
    for report in [&doc, &second] {
        let digest = report["integrity"]["digest"].as_str().expect("digest");
        assert!(
            records.lines().any(|l| l.contains("report_generated") && l.contains(digest)),
            "no report_generated record with {digest}"
        );
    }
    // The running agent's counters reached the report: the CLI's own scrape is the only
    // monitoring request, and no patient-data request went unaudited.
    let counters = evidence("audit-every-interaction");
    assert!(counters.contains("patient_data"), "{counters}");
    // And the room left on the data volume for the audit records, judged against [disk].
    assert!(counters.contains("free space") && counters.contains(&base.join("data").display().to_string()), "{counters}");
    assert_eq!(item(&doc, "audit-every-interaction")["status"], "pass", "{}", item(&doc, "audit-every-interaction"));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let _ = agent.wait();
}
