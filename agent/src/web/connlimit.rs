//! Open connections per client address: one workstation (or one attacker on the LAN) cannot
//! hold every connection the box can serve.
//!
//! The serving loop asks for a [`ConnectionPermit`] right after `accept`, before any TLS work;
//! a refused connection is closed at once, so the refusal costs the box no handshake. The
//! permit gives its place back when the connection ends (dropped), however it ends.
//! Addresses are counted under the same key as failed sign-ins (`throttle::address_key`:
//! IPv4 as it is, IPv6 by /64 prefix), so privacy addresses do not multiply the allowance.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::throttle::address_key;

/// Counts the open connections of every client address against one limit.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_per_address: u32,
    open: Mutex<HashMap<IpAddr, Open>>,
}

#[derive(Debug, Default)]
struct Open {
    connections: u32,
    /// A refusal was already reported since the address last had a free place, so a flood of
    /// refused connections makes one log line, not one each.
    reported: bool,
}

/// A connection that was let in. Dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    inner: Arc<Inner>,
    key: IpAddr,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// The address key whose connections are all in use.
    pub key: IpAddr,
    /// The limit it reached.
    pub limit: u32,
    /// The first refusal since the address last had a free place (worth a log line).
    pub first: bool,
}

impl ConnectionLimiter {
    pub fn new(max_per_address: u32) -> Self {
        Self { inner: Arc::new(Inner { max_per_address, open: Mutex::new(HashMap::new()) }) }
    }

    /// A place for one more connection from `peer`, or the limit it is over.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnectionPermit, OverLimit> {
        let key = address_key(Some(peer));
        let mut open = self.inner.open.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = open.entry(key).or_default();
        if entry.connections >= self.inner.max_per_address {
            let first = !entry.reported;
            entry.reported = true;
            return Err(OverLimit { key, limit: self.inner.max_per_address, first });
        }
        entry.connections += 1;
        Ok(ConnectionPermit { inner: self.inner.clone(), key })
    }

    /// How many connections `peer`'s address key holds now.
    pub fn open_from(&self, peer: IpAddr) -> u32 {
        let open = self.inner.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&address_key(Some(peer))).map_or(0, |o| o.connections)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = open.get_mut(&self.key) {
            entry.connections = entry.connections.saturating_sub(1);
            entry.reported = false;
            // Forget idle addresses, so the map stays as small as the set of open connections.
            if entry.connections == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn the_extra_connection_of_one_address_is_refused_and_others_are_not() {
        let limiter = ConnectionLimiter::new(2);
        let a = limiter.admit(ip("10.0.0.5")).expect("first");
        let _b = limiter.admit(ip("10.0.0.5")).expect("second");
        assert_eq!(limiter.admit(ip("10.0.0.5")).expect_err("over the limit"), OverLimit { key: ip("10.0.0.5"), limit: 2, first: true });
        assert!(!limiter.admit(ip("10.0.0.5")).expect_err("still over").first, "a flood of refusals is reported once");
        limiter.admit(ip("10.0.0.6")).expect("another address is not affected");
        drop(a);
        assert_eq!(limiter.open_from(ip("10.0.0.5")), 1);
        limiter.admit(ip("10.0.0.5")).expect("a closed connection frees its place");
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_ipv4_as_ipv4() {
        let limiter = ConnectionLimiter::new(1);
        let _p = limiter.admit(ip("2001:db8:1:2::10")).expect("first");
        assert!(limiter.admit(ip("2001:db8:1:2::99")).is_err(), "the same /64 is one address");
        limiter.admit(ip("2001:db8:1:3::10")).expect("another /64");
        let _v4 = limiter.admit(ip("10.0.0.7")).expect("v4");
        assert!(limiter.admit(ip("::ffff:10.0.0.7")).is_err(), "mapped IPv4 is the same address");
    }

    #[test]
    fn an_address_with_nothing_open_is_forgotten() {
        let limiter = ConnectionLimiter::new(3);
        drop(limiter.admit(ip("10.0.0.8")).expect("admit"));
        assert!(limiter.inner.open.lock().expect("lock").is_empty());
    }
}
