//! The outbound rules the alert and backup destinations open, with real traffic: nothing but
//! each destination's own address, port and protocol leaves through them.
//!
//! The box's configuration names a syslog collector, an SMTP relay and a backup REST server
//! on the clinic's LAN; `Config::parse` turns each into one `allow_out` rule. The test runs
//! `wardbox firewall apply` (as `wardbox-firewall.service` does) inside a network namespace of
//! its own, wired by a veth pair to a second namespace that carries the destinations' addresses
//! and a neighbour's, with listeners on the destinations' ports and the ports next to them.
//! Every probe is first shown to get through without the firewall, so a probe that fails
//! afterwards fails because of the firewall. A rule wider than the destination (address only,
//! port only, or any protocol) lets one of the "blocked" probes through and fails the test.
//!
//! `netns_` tier: needs root, iproute2, nftables and python3 (the listeners and probes run as
//! small programs inside the namespaces); fails loudly, naming what is missing, without them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const IP: &str = "/usr/sbin/ip";
const NFT: &str = "/usr/sbin/nft";

/// The lab's clinic LAN: the box, the three destinations and a neighbour of theirs.
const BOX: &str = "10.1.5.1";
const COLLECTOR: &str = "10.1.5.20";
const NEIGHBOUR: &str = "10.1.5.21";
const RELAY: &str = "10.1.5.25";
const BACKUP: &str = "10.1.5.30";

/// Listeners: every TCP port answers `ok` to a connection, every UDP port echoes, on every
/// address of the namespace. Probes: exit 0 when the answer came back within a second.
const LAB_PY: &str = r#"
import socket, sys, threading
def tcp_server(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    def loop():
        while True:
            c, _ = s.accept()
            try: c.sendall(b"ok")
            finally: c.close()
    threading.Thread(target=loop, daemon=True).start()
def udp_server(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    def loop():
        while True:
            data, peer = s.recvfrom(512); s.sendto(data, peer)
    threading.Thread(target=loop, daemon=True).start()
if sys.argv[1] == "serve":
    for spec in sys.argv[2:]:
        proto, port = spec.split("/")
        (tcp_server if proto == "tcp" else udp_server)(int(port))
    print("ready", flush=True)
    sys.stdin.read()
else:
    proto, host, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    try:
        if proto == "tcp":
            s = socket.create_connection((host, port), timeout=1.0)
            ok = s.recv(2) == b"ok"
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
            s.sendto(b"wardbox-probe", (host, port))
            ok = s.recvfrom(64)[0] == b"wardbox-probe"
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn python() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("netns_ tests here need python3 for their listeners and probes: apt-get install -y python3")
        })
}

fn preflight() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "netns_ tests need root to create network namespaces and load nftables rules; run them \
         as root (`sudo -E cargo test -p wardbox --test alerts_firewall`). Not skipped: a \
         firewall test that cannot run must not count as a pass."
    );
    for (path, package) in [(IP, "iproute2"), (NFT, "nftables")] {
        assert!(Path::new(path).exists(), "netns_ tests need {path}: apt-get install -y {package}");
    }
}

fn ip(args: &[&str]) {
    let out = Command::new(IP).args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), text(&out.stderr));
}

/// A network namespace for this test, deleted on drop (panics included).
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("wbaf-{}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(IP);
        command.args(["netns", "exec", &self.0]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(IP).args(["netns", "del", &self.0]).output();
    }
}

/// The listeners' process; killed on drop, before the namespaces go.
struct Listeners(Child);

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a probe tries: protocol, address, port, and what it stands for.
type Probe = (&'static str, &'static str, u16, &'static str);

/// The destinations themselves, exactly as configured.
const DESTINATIONS: &[Probe] = &[
    ("tcp", COLLECTOR, 6514, "the syslog collector"),
    ("tcp", RELAY, 25, "the SMTP relay"),
    ("tcp", BACKUP, 8000, "the backup REST server"),
];

/// Everything next to them: the rules must not let any of it out.
const OTHERS: &[Probe] = &[
    ("tcp", COLLECTOR, 6515, "another port on the collector's address"),
    ("tcp", COLLECTOR, 25, "the relay's port on the collector's address"),
    ("udp", COLLECTOR, 6514, "UDP to the collector's address and port"),
    ("tcp", NEIGHBOUR, 6514, "the collector's port on another address"),
    ("tcp", RELAY, 26, "another port on the relay's address"),
    ("tcp", RELAY, 6514, "the collector's port on the relay's address"),
    ("udp", RELAY, 25, "UDP to the relay's address and port"),
    ("tcp", NEIGHBOUR, 25, "the relay's port on another address"),
    ("tcp", BACKUP, 8001, "another port on the backup server's address"),
    ("tcp", NEIGHBOUR, 8000, "the backup server's port on another address"),
];

fn reaches(boxns: &Netns, python: &Path, script: &Path, (proto, host, port, _): Probe) -> bool {
    let out = boxns
        .command(python)
        .arg(script)
        .args(["probe", proto, host, &port.to_string()])
        .output()
        .expect("run the probe");
    out.status.success()
}

#[track_caller]
fn assert_probes(boxns: &Netns, python: &Path, script: &Path, probes: &[Probe], answered: bool, when: &str) {
    let wrong: Vec<String> = probes
        .iter()
        .filter(|probe| reaches(boxns, python, script, **probe) != answered)
        .map(|(proto, host, port, what)| format!("{proto} {host}:{port} ({what})"))
        .collect();
    let verb = if answered { "should get through but did not" } else { "should be blocked but got through" };
    assert!(wrong.is_empty(), "{when}: these {verb}: {wrong:#?}");
}

fn wardbox_in(boxns: &Netns, args: &[&str], config: &Path) -> Output {
    boxns.command(Path::new(env!("CARGO_BIN_EXE_wardbox"))).args(args).arg("-c").arg(config).output().expect("run wardbox")
}

#[test]
fn netns_alert_and_backup_destinations_open_exactly_their_address_port_and_protocol() {
    preflight();
    let python = python();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("lab.py");
    std::fs::write(&script, LAB_PY).expect("write lab.py");

    let boxns = Netns::new("box");
    let lan = Netns::new("lan");
    boxns.ip(&["link", "add", "lan0", "type", "veth", "peer", "name", "box0", "netns", &lan.0]);
    boxns.ip(&["addr", "add", &format!("{BOX}/24"), "dev", "lan0"]);
    boxns.ip(&["link", "set", "lan0", "up"]);
    for address in [COLLECTOR, NEIGHBOUR, RELAY, BACKUP] {
        lan.ip(&["addr", "add", &format!("{address}/24"), "dev", "box0"]);
    }
    lan.ip(&["link", "set", "box0", "up"]);

    let mut ports: Vec<String> = DESTINATIONS.iter().chain(OTHERS).map(|(proto, _, port, _)| format!("{proto}/{port}")).collect();
    ports.sort();
    ports.dedup();
    let mut child = lan
        .command(&python)
        .arg(&script)
        .arg("serve")
        .args(&ports)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the listeners");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready).expect("read the listeners");
    let _listeners = Listeners(child);
    assert_eq!(ready.trim(), "ready", "the listeners did not start");

    let config = dir.path().join("wardbox.toml");
    std::fs::write(
        &config,
        format!(
            "profile = \"dev\"\nstate_dir = \"{state}\"\n[volume]\nmode = \"plain-directory\"\ndata_dir = \"{data}\"\n\
             [firewall]\nenabled = true\nclinic_lan = [\"10.1.0.0/16\"]\n\
             [backup]\nrest_url = \"http://{BACKUP}:8000/wardbox/\"\n\
             [alert_delivery]\nadmin_url = \"https://wardbox.clinic.local:8443\"\n\
             [alert_delivery.syslog]\naddress = \"{COLLECTOR}:6514\"\nserver_name = \"syslog.clinic.local\"\nca_file = \"/etc/wardbox/clinic-ca.pem\"\n\
             [alert_delivery.email]\nrelay = \"{RELAY}:25\"\nserver_name = \"mail.clinic.local\"\nca_file = \"/etc/wardbox/clinic-ca.pem\"\n\
             from = \"wardbox@clinic.local\"\nto = [\"privacy@clinic.local\"]\n",
            state = dir.path().join("state").display(),
            data = dir.path().join("data").display(),
        ),
    )
    .expect("write config");

    // The rules come from the configuration, not from this test: the rendered ruleset names
    // each destination's rule.
    let rendered = wardbox_in(&boxns, &["firewall", "render"], &config);
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    for rule in ["alerts-syslog", "alerts-smtp", "backup-rest"] {
        assert!(text(&rendered.stdout).contains(&format!("wardbox:output:allow {rule}")), "{rule} missing from the ruleset");
    }

    assert_probes(&boxns, &python, &script, DESTINATIONS, true, "before the firewall (lab check)");
    assert_probes(&boxns, &python, &script, OTHERS, true, "before the firewall (lab check)");

    let applied = wardbox_in(&boxns, &["firewall", "apply"], &config);
    assert!(applied.status.success(), "apply: {}{}", text(&applied.stdout), text(&applied.stderr));

    assert_probes(&boxns, &python, &script, DESTINATIONS, true, "with the firewall");
    assert_probes(&boxns, &python, &script, OTHERS, false, "with the firewall");

    // The firewall's own verification knows the derived rules: what is live is what it expects.
    let verified = wardbox_in(&boxns, &["firewall", "verify"], &config);
    assert_eq!(verified.status.code(), Some(0), "verify: {}{}", text(&verified.stdout), text(&verified.stderr));
}
