//! Where the engine may listen: a Unix socket, and optionally a loopback TCP address. Never an
//! external interface: the engine has no authentication of its own, so reachability is its
//! access control.
//!
//! Reachability alone is not enough on TCP: a web page in a browser on the same machine can
//! point a domain it controls at 127.0.0.1 (DNS rebinding) and then talk to the engine as a
//! "same-origin" site. Such requests carry the attacker's domain in `Host`, so the TCP listener
//! accepts only loopback host names there ([`is_loopback_host`]). The Unix socket needs no such
//! check: a browser cannot reach it, and its clients send whatever placeholder host their URL has.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// A TCP address that is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ListenError {
    /// Does not parse as host:port.
    #[error("invalid TCP listen address {0:?}: expected 127.0.0.1:PORT or [::1]:PORT")]
    Parse(String),
    /// Parses, but is not loopback.
    #[error("refusing to listen on {0}: the engine only listens on loopback (127.0.0.0/8 or ::1); use the Unix socket or a loopback address")]
    NotLoopback(String),
}

/// Parse a TCP listen address and accept it only if every address it names is loopback.
/// `localhost` is resolved; an unspecified address (`0.0.0.0`, `::`) is refused.
pub fn tcp_addr(text: &str) -> Result<SocketAddr, ListenError> {
    let addrs: Vec<SocketAddr> = match text.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => text
            .to_socket_addrs()
            .map_err(|_| ListenError::Parse(text.to_owned()))?
            .collect(),
    };
    let first = *addrs.first().ok_or_else(|| ListenError::Parse(text.to_owned()))?;
    if addrs.iter().all(|a| is_loopback(a.ip())) {
        Ok(first)
    } else {
        Err(ListenError::NotLoopback(text.to_owned()))
    }
}

/// Whether an HTTP `Host` value (or a URI authority) names this machine's loopback: `localhost`
/// (any case) or a loopback IP literal (`127.0.0.0/8`, `[::1]`), with or without a port.
/// Anything else, including names that merely resolve to 127.0.0.1, is refused: those are
/// exactly what a rebinding attack uses.
pub fn is_loopback_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        let Some((inner, after)) = rest.split_once(']') else { return false };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        return port.is_none_or(valid_port) && inner.parse::<Ipv6Addr>().is_ok_and(|ip| is_loopback(IpAddr::V6(ip)));
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if !port.is_none_or(valid_port) {
        return false;
    }
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        for ok in ["127.0.0.1:11434", "127.1.2.3:0", "[::1]:8080", "[::ffff:127.0.0.1]:1", "localhost:11434"] {
            assert!(tcp_addr(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in ["0.0.0.0:11434", "[::]:11434", "10.0.0.5:11434", "192.168.1.1:80", "[fe80::1]:80"] {
            assert_eq!(tcp_addr(bad), Err(ListenError::NotLoopback(bad.into())), "{bad}");
        }
        for junk in ["", "11434", "127.0.0.1", "http://127.0.0.1:1"] {
            assert!(matches!(tcp_addr(junk), Err(ListenError::Parse(_))), "{junk}");
        }
    }

    #[test]
    fn only_loopback_host_names() {
        for ok in [
            "localhost", "LocalHost", "localhost:11434", "127.0.0.1", "127.0.0.1:11435", "127.8.9.10:1",
            "[::1]", "[::1]:11434", "[::ffff:127.0.0.1]:80",
        ] {
            assert!(is_loopback_host(ok), "{ok} should be accepted");
        }
        for bad in [
            "", "evil.example", "evil.example:11434", "127.0.0.1.nip.io", "localhost.evil.example",
            "evil.localhost", "localhost.", "10.0.0.5", "0.0.0.0:11434", "[::]:80", "[fe80::1]", "::1",
            "[::1", "[::1]x", "[::1]:", "localhost:", "localhost:99999", "localhost:80:80",
            "127.0.0.1:+80", "127.1", "2130706433", "user@localhost",
        ] {
            assert!(!is_loopback_host(bad), "{bad:?} should be refused");
        }
    }
}
