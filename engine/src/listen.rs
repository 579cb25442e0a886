//! Where the engine may listen: a Unix socket, and optionally a loopback TCP address. Never an
//! external interface: the engine has no authentication of its own, so reachability is its
//! access control.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

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
}
