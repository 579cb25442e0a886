//! The firewall as the box uses it: the `wardbox` binary's `firewall` commands (run by
//! `wardbox-firewall.service` before the network comes up) and the boot stage failing closed.
//!
//! `netns_` tests need root, iproute2 and nftables: each runs the binary inside a network
//! namespace of its own (`ip netns exec`: here the code under test is a separate program, so
//! running it in the namespace is exactly how the box runs it) and fails loudly without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const IP: &str = "/usr/sbin/ip";
const NFT: &str = "/usr/sbin/nft";

fn wardbox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wardbox"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A dev-profile configuration with the firewall enabled and the given extra `[firewall]` keys.
fn config(dir: &Path, firewall: &str) -> PathBuf {
    let path = dir.join("wardbox.toml");
    let body = format!(
        "profile = \"dev\"\nstate_dir = \"{state}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{data}\"\n\
         [firewall]\nenabled = true\n{firewall}\n",
        state = dir.join("state").display(),
        data = dir.join("data").display(),
    );
    std::fs::write(&path, body).expect("write config");
    path
}

const POLICY: &str = "clinic_lan = [\"192.0.2.0/24\"]\n\
    [[firewall.allow_out]]\nname = \"siem\"\ndest = \"192.0.2.20\"\nprotocol = \"tcp\"\nport = 6514\n";

#[test]
fn render_prints_the_ruleset_without_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), POLICY);
    let out = wardbox().args(["firewall", "render", "-c"]).arg(&cfg).output().expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("{\"table\":{\"family\":\"inet\",\"name\":\"wardbox\"}}\n"), "{stdout}");
    assert!(stdout.contains("\"comment\":\"wardbox:output:allow siem\""), "{stdout}");
    assert!(stdout.contains("{\"counter\":\"blocked_out\"},{\"drop\":null}"), "{stdout}");
}

#[test]
fn a_policy_that_opens_the_internet_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        "clinic_lan = [\"192.0.2.0/24\"]\n[[firewall.allow_out]]\nname = \"all\"\ndest = \"0.0.0.0/0\"\nprotocol = \"tcp\"\nport = 443\n",
    );
    for args in [&["firewall", "render"][..], &["config", "check"][..], &["firewall", "apply"][..]] {
        let out = wardbox().args(args).arg("-c").arg(&cfg).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("`firewall.allow_out[0].dest`: `0.0.0.0/0` matches every address and would open the box to the internet"),
            "{args:?}: {stderr}"
        );
    }
}

/// The boot stage fails closed: without nft the agent does not get to the store or the web
/// server, even in the dev profile once the firewall is enabled.
#[test]
fn boot_halts_at_the_firewall_stage_when_nft_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &format!("nft_path = \"/nonexistent/nft\"\n{POLICY}"));
    let out = wardbox().args(["serve", "-c"]).arg(&cfg).output().expect("run");
    assert!(!out.status.success(), "the agent must not serve without its firewall");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("firewall"), "{stderr}");
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/status.json")).expect("status file"))
            .expect("status JSON");
    assert_eq!(status["state"], "failed");
    let stages = status["stages"].as_array().expect("stages");
    let stage = |name: &str| stages.iter().find(|s| s["stage"] == name).cloned().unwrap_or_default();
    assert_eq!(stage("firewall")["outcome"], "failed");
    let reason = stage("firewall")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("nft not found at `/nonexistent/nft`"), "{reason}");
    for later in ["store", "gpu", "engine"] {
        assert_eq!(stage(later)["outcome"], "not_run", "{later}");
    }
    assert_ne!(stage("serve")["outcome"], "ok", "the web server never started");
}

/// A network namespace for one test, deleted on drop (panics included).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "netns_ tests need root to create network namespaces and load nftables rules; run \
             them as root (`sudo -E cargo test -p wardbox --test firewall_cli`). Not skipped: a \
             firewall test that cannot run must not count as a pass."
        );
        for (path, package) in [(IP, "iproute2"), (NFT, "nftables")] {
            assert!(Path::new(path).exists(), "netns_ tests need {path}: apt-get install -y {package}");
        }
        let name = format!("wbcli-{}-{}", std::process::id(), rand_suffix());
        let out = Command::new(IP).args(["netns", "add", &name]).output().expect("run ip");
        assert!(out.status.success(), "ip netns add {name}: {}", text(&out.stderr));
        Netns(name)
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(IP).args(["netns", "exec", &self.0, program]).args(args).output().expect("run in namespace")
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(IP).args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn netns_cli_apply_verify_status_and_repair() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), POLICY);
    let bin = env!("CARGO_BIN_EXE_wardbox");
    let c = cfg.to_str().expect("utf8 path");
    let cli = |args: &[&str]| {
        let mut all = vec!["firewall"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-c", c]);
        ns.run(bin, &all)
    };

    let out = cli(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "nothing applied yet: drift");
    assert!(text(&out.stdout).contains("DRIFT: table inet wardbox is missing"), "{}", text(&out.stdout));

    let out = cli(&["apply"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("applied: table inet wardbox enforced"), "{}", text(&out.stdout));

    let out = cli(&["apply"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("unchanged: "), "idempotent: {}", text(&out.stdout));

    let out = cli(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Tamper: an accept at the top of output.
    let out = ns.run(NFT, &["insert", "rule", "inet", "wardbox", "output", "accept"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["enforced"], false);
    assert_eq!(status["drift"][0]["drift"], "rule_unexpected");
    assert_eq!(status["drift"][0]["chain"], "output");

    let out = cli(&["apply"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("repaired: unexpected rule"), "{}", text(&out.stdout));
    let out = cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).starts_with("enforced: yes\n"), "{}", text(&out.stdout));
}

/// The review's finding through the operator's command: a foreign `netdev` table that forwards
/// loopback traffic out of a device, and a reset of the drop counters, both invisible to a
/// verifier that only compared our own table. `verify` must name them and exit 3; `apply`
/// must remove the table and restore the counters.
#[test]
fn netns_cli_verify_names_foreign_tables_and_counter_resets() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), POLICY);
    let bin = env!("CARGO_BIN_EXE_wardbox");
    let c = cfg.to_str().expect("utf8 path");
    let cli = |args: &[&str]| {
        let mut all = vec!["firewall"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-c", c]);
        ns.run(bin, &all)
    };
    let nft = |args: &[&str]| {
        let out = ns.run(NFT, args);
        assert!(out.status.success(), "nft {args:?}: {}", text(&out.stderr));
    };
    assert!(cli(&["apply"]).status.success());

    nft(&["add", "table", "netdev", "exfil"]);
    nft(&["add", "chain", "netdev", "exfil", "lo_in", "{ type filter hook ingress device lo priority 0; policy drop; }"]);
    nft(&["add", "rule", "netdev", "exfil", "lo_in", "ip", "daddr", "127.0.0.1", "fwd", "to", "lo"]);
    let out = cli(&["verify"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("DRIFT: table netdev exfil: rule (handle "), "{stdout}");
    assert!(stdout.contains("in chain lo_in forwards packets out of a device (`fwd`)"), "{stdout}");
    let out = cli(&["apply"]);
    assert!(text(&out.stdout).contains("repaired: table netdev exfil"), "{}", text(&out.stdout));
    assert_eq!(cli(&["verify"]).status.code(), Some(0));

    // Something for the counters to count: a datagram to a LAN address, dropped on its way out.
    for args in [
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"][..],
        &["addr", "add", "192.0.2.1/24", "dev", "d0"],
        &["link", "set", "d1", "up"],
        &["link", "set", "d0", "up"],
    ] {
        let out = Command::new(IP).args(["-n", &ns.0]).args(args).output().expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
    }
    // bash's /dev/udp: the send fails (EPERM from the drop), which is the point.
    let _ = ns.run("/bin/bash", &["-c", "echo x > /dev/udp/192.0.2.9/9"]);
    let out = cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let blocked = status["counters"]["blocked_out"]["packets"].as_u64().unwrap_or(0);
    assert!(blocked >= 1, "the drop was counted: {status}");

    nft(&["reset", "counters", "table", "inet", "wardbox"]);
    let out = cli(&["verify"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(&format!("DRIFT: counter blocked_out went down from {blocked} packets")),
        "{stdout}"
    );
    let out = cli(&["apply"]);
    assert!(text(&out.stdout).contains("repaired: counter blocked_out went down"), "{}", text(&out.stdout));
    let out = cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(status["counters"]["blocked_out"]["packets"].as_u64().unwrap_or(0) >= blocked, "the evidence is back: {status}");
}
