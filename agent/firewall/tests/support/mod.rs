//! A small network lab for the `netns_` tests: a "box" namespace wired by veth pairs to three
//! peer namespaces, servers and probes written with plain sockets.
//!
//! How code runs inside a namespace: [`Netns::run`] starts a thread, moves that one thread
//! into the namespace with `setns(2)`, and runs a closure there. Sockets created by the
//! closure live in the namespace, and programs it spawns (the library's own `nft` calls)
//! inherit the thread's namespace. So the tests call the library exactly as the agent does,
//! instead of re-executing the test binary under `ip netns exec`; and no `nc`/`ping`
//! packages are needed. Joining the thread ends it, so the test's own threads never change
//! namespace.
//!
//! Names are unique per test (pid + counter), so tests run in parallel; [`Netns`] deletes its
//! namespace on drop, panics included, which also removes its veth ends.

#![allow(dead_code)] // Each test binary uses a different part of the lab.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub const IP: &str = "/usr/sbin/ip";
pub const NFT: &str = "/usr/sbin/nft";

/// How long a probe waits before calling the peer unreachable. Veth round trips take
/// microseconds; the margin is for a loaded 2-core CI machine.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

static NEXT_NS: AtomicU32 = AtomicU32::new(0);
/// Every probe uses its own source port, so a probe can never ride on a conntrack entry left
/// by an earlier one (which would let it through as "established").
static NEXT_PORT: AtomicU16 = AtomicU16::new(20000);
static NEXT_ICMP_ID: AtomicU16 = AtomicU16::new(1);

/// Fail loudly, never skip, when the lab cannot be built here.
pub fn preflight() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "netns_ tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces \
         and load nftables rules, but run as uid {euid}. Run them as root, e.g. \
         `sudo -E cargo test -p wardbox-firewall --test netns`. They are not skipped: a firewall \
         test that cannot run must not count as a pass."
    );
    for (path, package) in [(IP, "iproute2"), (NFT, "nftables")] {
        assert!(
            std::path::Path::new(path).exists(),
            "netns_ tests need {path}: install the Debian package `{package}` \
             (apt-get install -y iproute2 nftables)"
        );
    }
}

fn run_checked(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr),
        if program == IP && args.first() == Some(&"netns") {
            " (network namespaces need root and a kernel with CONFIG_NET_NS; in a container, \
             run it privileged)"
        } else {
            ""
        }
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A network namespace this test created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let name = format!("wbfw-{}-{n}-{role}", std::process::id());
        run_checked(IP, &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_checked(IP, &all)
    }

    /// Run `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&path);
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Run nft with these arguments inside the namespace (to inject drift); returns stdout.
    pub fn nft(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.run(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_checked(NFT, &refs)
        })
    }
}

fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns({path}): {e}"));
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Not run_checked: a panic inside drop during unwinding would abort the test binary.
        let result = Command::new(IP).args(["netns", "del", &self.name]).output();
        if !matches!(&result, Ok(o) if o.status.success()) {
            eprintln!(
                "warning: could not delete network namespace {}: {result:?}",
                self.name
            );
        }
    }
}

/// A server thread inside a namespace; stopped on drop.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Start a dual-stack server on `[::]:port` in `ns`: TCP answers `ok` to each connection,
/// UDP echoes each datagram.
pub fn serve(ns: &Netns, proto: Proto, port: u16) -> Server {
    let path = format!("/run/netns/{}", ns.name);
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let stop_thread = Arc::clone(&stop);
    let handle = thread::spawn(move || {
        enter(&path);
        let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        match proto {
            Proto::Tcp => {
                let listener = match TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                {
                    Ok(l) => l,
                    Err(e) => return drop(ready_tx.send(Err(format!("bind tcp {addr}: {e}")))),
                };
                let _ = ready_tx.send(Ok(()));
                while !stop_thread.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.write_all(b"ok");
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
            Proto::Udp => {
                let socket =
                    match UdpSocket::bind(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                        Ok(s) => s,
                        Err(e) => return drop(ready_tx.send(Err(format!("bind udp {addr}: {e}")))),
                    };
                let _ = ready_tx.send(Ok(()));
                let mut buf = [0u8; 512];
                while !stop_thread.load(Ordering::Relaxed) {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let _ = socket.send_to(&buf[..n], from);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        }
    });
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("server in {}: {e}", ns.name),
        Err(_) => panic!("server thread in {} died before binding", ns.name),
    }
    Server {
        stop,
        handle: Some(handle),
    }
}

fn client_socket(dst: &SocketAddr, ty: Type, proto: Protocol) -> Socket {
    let socket = Socket::new(Domain::for_address(*dst), ty, Some(proto)).expect("socket");
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    let any: IpAddr = if dst.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&SocketAddr::new(any, port).into())
        .unwrap_or_else(|e| panic!("bind source port {port}: {e}"));
    socket
}

/// Whether a TCP connection to `dst` completes and the server's `ok` arrives. Call from
/// inside a namespace ([`Netns::run`]).
pub fn tcp_reaches(dst: SocketAddr) -> bool {
    let socket = client_socket(&dst, Type::STREAM, Protocol::TCP);
    if socket.connect_timeout(&dst.into(), PROBE_TIMEOUT).is_err() {
        return false;
    }
    let mut stream: std::net::TcpStream = socket.into();
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let mut buf = [0u8; 2];
    stream.read_exact(&mut buf).is_ok() && &buf == b"ok"
}

/// Whether a UDP datagram to `dst` comes back echoed.
pub fn udp_reaches(dst: SocketAddr) -> bool {
    let socket = client_socket(&dst, Type::DGRAM, Protocol::UDP);
    let socket: UdpSocket = socket.into();
    let _ = socket.set_read_timeout(Some(PROBE_TIMEOUT));
    let payload = b"wardbox-probe";
    if socket.send_to(payload, dst).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == payload)
}

/// Send one UDP datagram to `dst` and expect nothing back. Call from inside a namespace.
pub fn udp_send(dst: SocketAddr, payload: &[u8]) {
    let socket: UdpSocket = client_socket(&dst, Type::DGRAM, Protocol::UDP).into();
    // A datagram the ruleset drops fails with EPERM: that is the outcome being probed.
    let _ = socket.send_to(payload, dst);
}

/// A UDP socket in a peer namespace that only records what arrives. It never answers, so it
/// shows that a datagram left the box even where no reply could come back.
#[derive(Debug)]
pub struct Catcher {
    socket: UdpSocket,
}

impl Catcher {
    /// Bind `0.0.0.0:port` inside `ns`.
    pub fn new(ns: &Netns, port: u16) -> Catcher {
        let socket = ns
            .run(move || UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)))
            .unwrap_or_else(|e| panic!("bind udp {port} in {}: {e}", ns.name));
        Catcher { socket }
    }

    /// Whether a datagram carrying exactly `payload` arrives within the probe timeout.
    pub fn caught(&self, payload: &[u8]) -> bool {
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.socket.set_read_timeout(Some(left));
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) if &buf[..n] == payload => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether an ICMP (or ICMPv6) echo request to `dst` gets its echo reply. Raw socket, so
/// it needs root, which these tests have anyway.
pub fn ping(dst: IpAddr) -> bool {
    let id = NEXT_ICMP_ID.fetch_add(1, Ordering::Relaxed);
    let (domain, protocol, request, reply) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol)).expect("raw ICMP socket (root)");
    let mut packet = vec![request, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet.extend_from_slice(b"wardbox-ping");
    if dst.is_ipv4() {
        // The kernel fills in the ICMPv6 checksum itself; ICMPv4's is ours.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let target = SockAddr::from(SocketAddr::new(dst, 0));
    if socket.send_to(&packet, &target).is_err() {
        return false;
    }
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut buf = [0u8; 1500];
    let mut reader = &socket;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = socket.set_read_timeout(Some(left));
        let Ok(n) = reader.read(&mut buf) else {
            return false;
        };
        // A raw IPv4 socket delivers the IP header too; an ICMPv6 one does not.
        let icmp = match dst {
            IpAddr::V4(_) => {
                let header = usize::from(buf[0] & 0x0f) * 4;
                &buf[header.min(n)..n]
            }
            IpAddr::V6(_) => &buf[..n],
        };
        if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes() {
            return true;
        }
    }
}

/// Addresses of the lab. The box has one leg on each peer's subnet; documentation ranges
/// only (RFC 5737, RFC 3849).
pub mod addr {
    use std::net::{IpAddr, SocketAddr};

    pub fn ip(text: &str) -> IpAddr {
        text.parse().expect("lab address")
    }
    pub fn sock(text: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip(text), port)
    }

    /// Clinic LAN: the box and a clinician's workstation (also the internal DNS resolver).
    pub const BOX_LAN4: &str = "192.0.2.1";
    pub const LAN4: &str = "192.0.2.2";
    pub const BOX_LAN6: &str = "2001:db8:1::1";
    pub const LAN6: &str = "2001:db8:1::2";
    /// "The internet": anything not allowed.
    pub const BOX_EXT4: &str = "198.51.100.1";
    pub const EXT4: &str = "198.51.100.2";
    pub const BOX_EXT6: &str = "2001:db8:2::1";
    pub const EXT6: &str = "2001:db8:2::2";
    /// The clinic's internal servers (SIEM, NTP).
    pub const BOX_SRV4: &str = "203.0.113.1";
    pub const SRV4: &str = "203.0.113.2";
    pub const BOX_SRV6: &str = "2001:db8:3::1";
    pub const SRV6: &str = "2001:db8:3::2";
}

/// The box namespace and its three peers. Field order is drop order: servers stop before
/// their namespaces go.
#[derive(Debug)]
pub struct Lab {
    servers: Vec<Server>,
    pub boxns: Netns,
    pub lan: Netns,
    pub ext: Netns,
    pub srv: Netns,
}

impl Lab {
    pub fn new() -> Lab {
        preflight();
        let boxns = Netns::new("box");
        let lan = Netns::new("lan");
        let ext = Netns::new("ext");
        let srv = Netns::new("srv");
        use addr::*;
        for (peer, leg, box4, peer4, box6, peer6) in [
            (&lan, "lan0", BOX_LAN4, LAN4, BOX_LAN6, LAN6),
            (&ext, "ext0", BOX_EXT4, EXT4, BOX_EXT6, EXT6),
            (&srv, "srv0", BOX_SRV4, SRV4, BOX_SRV6, SRV6),
        ] {
            boxns.ip(&[
                "link", "add", leg, "type", "veth", "peer", "name", "box0", "netns", &peer.name,
            ]);
            boxns.ip(&["addr", "add", &format!("{box4}/24"), "dev", leg]);
            boxns.ip(&["addr", "add", &format!("{box6}/64"), "dev", leg, "nodad"]);
            boxns.ip(&["link", "set", leg, "up"]);
            peer.ip(&["addr", "add", &format!("{peer4}/24"), "dev", "box0"]);
            peer.ip(&[
                "addr",
                "add",
                &format!("{peer6}/64"),
                "dev",
                "box0",
                "nodad",
            ]);
            peer.ip(&["link", "set", "box0", "up"]);
        }
        let mut lab = Lab {
            servers: Vec::new(),
            boxns,
            lan,
            ext,
            srv,
        };
        // The box's own services: the UI, SSH, and a stand-in for the engine port.
        for port in [443, 22, 8080] {
            lab.servers.push(serve(&lab.boxns, Proto::Tcp, port));
        }
        // The LAN workstation doubles as the clinic's DNS resolver.
        lab.servers.push(serve(&lab.lan, Proto::Tcp, 80));
        lab.servers.push(serve(&lab.lan, Proto::Udp, 53));
        // The internet side listens on what an exfiltration would use.
        for (proto, port) in [
            (Proto::Tcp, 80),
            (Proto::Tcp, 6514),
            (Proto::Udp, 53),
            (Proto::Udp, 9999),
        ] {
            lab.servers.push(serve(&lab.ext, proto, port));
        }
        // The internal server: SIEM on TCP 6514, NTP on UDP 123, and neighbouring ports.
        for (proto, port) in [
            (Proto::Tcp, 6514),
            (Proto::Tcp, 6515),
            (Proto::Udp, 123),
            (Proto::Udp, 124),
        ] {
            lab.servers.push(serve(&lab.srv, proto, port));
        }
        lab
    }
}

/// A named probe: what it tries, and the attempt (true = the peer answered).
pub type Probe = (&'static str, fn() -> bool);

/// Run probes in parallel inside `ns` (threads spawned there stay in its namespace); return
/// the names of those whose outcome differs from `expect`.
pub fn mismatches(ns: &Netns, probes: &[Probe], expect: bool) -> Vec<&'static str> {
    let probes = probes.to_vec();
    ns.run(move || {
        thread::scope(|scope| {
            let handles: Vec<_> = probes
                .iter()
                .map(|(what, probe)| (*what, scope.spawn(*probe)))
                .collect();
            handles
                .into_iter()
                .filter_map(|(what, handle)| {
                    let answered = handle
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p));
                    (answered != expect).then_some(what)
                })
                .collect()
        })
    })
}
