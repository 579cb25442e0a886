//! Throttling of failed sign-ins (pure: every decision takes `now`, nothing here reads a clock
//! or touches the store).
//!
//! Two rules, so that the account lock stops being a denial-of-service tool:
//!
//! - **Per client address.** The first few failures from an address cost nothing (typos). After
//!   that each further attempt must wait longer (1, 2, 4, 8... seconds after the last failure);
//!   an attempt that comes too early is refused without checking the password. After
//!   `block_after` failures the address is refused for `block_secs`. One address guessing at one
//!   account (or at every account) never locks an account: it only slows and then stops itself.
//!   Only failures count: one address can be many people (a terminal server, the clinic's NAT)
//!   who sign in together, so attempts whose password is still being checked are not held
//!   against it. They are bounded instead: at most `max_pending` at once while the address is
//!   within its free failures, one at a time after that; and failures of attempts that were
//!   already running when the address was paused lengthen the pause by their share of it
//!   (`block_secs / block_after` each), so guesses sent in parallel buy no more guesses per
//!   period than guesses sent one after another.
//! - **Per account, for distributed guessing.** Failures against one account are counted with
//!   the addresses they came from; the account locks when `lock_threshold` failures within
//!   `lock_window_secs` came from at least `lock_addresses` different addresses. While it is
//!   locked, addresses from which the person signed in successfully in the last
//!   [`KNOWN_ADDRESS_SECS`] still get through (still throttled per address), so the person at
//!   their usual workstation keeps working while guessers from elsewhere are refused.
//!
//! Addresses are counted by IPv4 address and by IPv6 /64 prefix (one machine can use a whole
//! /64 of privacy addresses). The state is in memory: a restart of the agent forgets the
//! counters and the known addresses; the account lock itself is kept in the store.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};

/// How long an address where an account signed in successfully stays "known" for it.
pub const KNOWN_ADDRESS_SECS: i64 = 30 * 86400;

/// Longest wait between two attempts from one address before it is blocked outright.
const MAX_DELAY_SECS: i64 = 300;

/// Tracked addresses and accounts above which expired entries are swept on each failure, so an
/// attacker rotating addresses cannot grow the tables without bound.
const SWEEP_ABOVE: usize = 4096;

/// The rules' numbers (from `[web]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures from one address before attempts from it are spaced out.
    pub free_failures: u32,
    /// Failures from one address after which it is refused for `block_secs`.
    pub block_after: u32,
    /// How long a blocked address is refused; also how long an address's failures are
    /// remembered after its last one.
    pub block_secs: i64,
    /// Failures against one account (from `lock_addresses` or more addresses) that lock it.
    pub lock_threshold: u32,
    /// Different addresses the failures must come from before the account locks.
    pub lock_addresses: u32,
    /// The period over which failures against an account are counted.
    pub lock_window_secs: i64,
    /// Attempts from one address whose password may be checked at the same time (the people
    /// behind one terminal server signing in together).
    pub max_pending: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self { free_failures: 3, block_after: 10, block_secs: 900, lock_threshold: 5, lock_addresses: 3, lock_window_secs: 3600, max_pending: 64 }
    }
}

/// Why an attempt is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too soon after the last failure from this address: try again in `retry_after` seconds.
    Wait { retry_after: i64 },
    /// This address is paused for `retry_after` more seconds.
    Blocked { retry_after: i64 },
    /// `max_pending` attempts from this address are being checked already: try again in a
    /// second (no failure is implied).
    Crowded,
}

impl Refused {
    pub fn retry_after(self) -> i64 {
        match self {
            Refused::Wait { retry_after } | Refused::Blocked { retry_after } => retry_after,
            Refused::Crowded => 1,
        }
    }
}

/// What one failure set off; each is audited and raised as an alert by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureEffects {
    /// This failure paused sign-in from its address for `block_secs`.
    pub address_blocked: bool,
    /// This failure locked the account: failures from this many different addresses.
    pub account_locked: Option<u32>,
}

#[derive(Debug, Default)]
struct AddressState {
    /// Failures not yet forgotten (the count resets when the address signs in or is blocked).
    failures: u32,
    last_failure: i64,
    /// Attempts admitted whose outcome is not known yet. They are not failures (the people of
    /// one terminal server sign in together); `admit` bounds them instead.
    in_flight: u32,
    blocked_until: i64,
}

#[derive(Debug, Default)]
struct AccountState {
    /// Recent failures: when, and the address key.
    failures: Vec<(i64, IpAddr)>,
    /// Address key -> last successful sign-in from it.
    known: HashMap<IpAddr, i64>,
}

/// The throttle's state: per address and per account.
#[derive(Debug, Default)]
pub struct SignInThrottle {
    policy: ThrottlePolicy,
    addresses: HashMap<IpAddr, AddressState>,
    accounts: HashMap<String, AccountState>,
}

/// The key an address is counted under: IPv4 as it is (also when mapped into IPv6), IPv6 by
/// its /64 prefix. `None` (the server did not record the peer) is one shared key.
pub fn address_key(addr: Option<IpAddr>) -> IpAddr {
    match addr {
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How much one failure past the pause lengthens it: the pause is `block_secs` for
/// `block_after` failures, so each one is worth its share.
fn pause_share(policy: &ThrottlePolicy) -> i64 {
    (policy.block_secs / i64::from(policy.block_after.max(1))).max(1)
}

/// The wait after `failures` failures from one address (0 while still free).
pub fn delay_after(policy: &ThrottlePolicy, failures: u32) -> i64 {
    if failures < policy.free_failures {
        return 0;
    }
    let step = (failures - policy.free_failures).min(20);
    (1i64 << step).min(MAX_DELAY_SECS)
}

impl SignInThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy, ..Self::default() }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Before a password is checked: admit the attempt (until [`Self::succeeded`],
    /// [`Self::failed`] or [`Self::abandoned`] settles it), or refuse it.
    pub fn admit(&mut self, addr: Option<IpAddr>, now: i64) -> Result<(), Refused> {
        let policy = self.policy;
        let state = self.addresses.entry(address_key(addr)).or_default();
        if state.blocked_until > now {
            return Err(Refused::Blocked { retry_after: state.blocked_until - now });
        }
        if state.failures > 0 && now - state.last_failure >= policy.block_secs {
            // Quiet for a whole period: the address starts afresh.
            state.failures = 0;
        }
        if state.in_flight >= policy.max_pending {
            return Err(Refused::Crowded);
        }
        let wait = delay_after(&policy, state.failures);
        if wait > 0 {
            // Past the free failures only one attempt at a time, each after its wait.
            let ready_at = if state.in_flight > 0 { now + wait } else { state.last_failure + wait };
            if ready_at > now {
                return Err(Refused::Wait { retry_after: ready_at - now });
            }
        }
        state.in_flight += 1;
        Ok(())
    }

    /// The admitted attempt signed in: the address starts afresh and becomes known for the
    /// account.
    pub fn succeeded(&mut self, addr: Option<IpAddr>, account: &str, now: i64) {
        let key = address_key(addr);
        if let Some(state) = self.addresses.get_mut(&key) {
            state.in_flight = state.in_flight.saturating_sub(1);
            state.failures = 0;
        }
        self.accounts.entry(account.to_string()).or_default().known.insert(key, now);
    }

    /// The admitted attempt failed. `account` is the existing account it was against (none for
    /// an unknown user name: there is nothing to lock).
    pub fn failed(&mut self, addr: Option<IpAddr>, account: Option<&str>, now: i64) -> FailureEffects {
        let policy = self.policy;
        let key = address_key(addr);
        let mut effects = FailureEffects::default();
        let state = self.addresses.entry(key).or_default();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.blocked_until > now {
            // Admitted before the address was paused (sent in parallel with the failure that
            // paused it): the pause grows by this failure's share.
            state.blocked_until += pause_share(&policy);
        } else {
            state.failures += 1;
            state.last_failure = now;
            if state.failures >= policy.block_after {
                state.blocked_until = now + policy.block_secs;
                state.failures = 0;
                effects.address_blocked = true;
            }
        }
        if let Some(account) = account {
            let acc = self.accounts.entry(account.to_string()).or_default();
            acc.failures.retain(|(at, _)| now - at < policy.lock_window_secs);
            acc.failures.push((now, key));
            let addresses: HashSet<IpAddr> = acc.failures.iter().map(|(_, a)| *a).collect();
            if acc.failures.len() >= policy.lock_threshold as usize && addresses.len() >= policy.lock_addresses as usize {
                // Counted once: the next burst has to reach the threshold again.
                acc.failures.clear();
                effects.account_locked = Some(addresses.len() as u32);
            }
        }
        if self.addresses.len() + self.accounts.len() > SWEEP_ABOVE {
            self.sweep(now);
        }
        effects
    }

    /// The admitted attempt ended without a verdict on the password (the directory or the
    /// store failed): it does not count.
    pub fn abandoned(&mut self, addr: Option<IpAddr>) {
        if let Some(state) = self.addresses.get_mut(&address_key(addr)) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// Whether the account signed in successfully from this address recently: such an address
    /// passes an account lock (it is still throttled as an address).
    pub fn is_known(&self, account: &str, addr: Option<IpAddr>, now: i64) -> bool {
        self.accounts
            .get(account)
            .and_then(|a| a.known.get(&address_key(addr)))
            .is_some_and(|at| now - at < KNOWN_ADDRESS_SECS)
    }

    /// Forget an account's failures (an administrator unlocked it).
    pub fn clear_account(&mut self, account: &str) {
        if let Some(a) = self.accounts.get_mut(account) {
            a.failures.clear();
        }
    }

    /// Drop what no rule will look at again.
    fn sweep(&mut self, now: i64) {
        let policy = self.policy;
        self.addresses.retain(|_, s| {
            s.in_flight > 0 || s.blocked_until > now || (s.failures > 0 && now - s.last_failure < policy.block_secs)
        });
        self.accounts.retain(|_, a| {
            a.failures.retain(|(at, _)| now - at < policy.lock_window_secs);
            a.known.retain(|_, at| now - *at < KNOWN_ADDRESS_SECS);
            !a.failures.is_empty() || !a.known.is_empty()
        });
    }

    /// Addresses and accounts tracked (for tests of the sweep).
    pub fn tracked(&self) -> usize {
        self.addresses.len() + self.accounts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    /// An injected clock: the tests move time, nothing sleeps.
    struct Clock(i64);
    impl Clock {
        fn now(&self) -> i64 {
            self.0
        }
        fn advance(&mut self, secs: i64) {
            self.0 += secs;
        }
    }

    fn fail(t: &mut SignInThrottle, addr: Option<IpAddr>, account: Option<&str>, now: i64) -> FailureEffects {
        t.admit(addr, now).expect("admitted");
        t.failed(addr, account, now)
    }

    #[test]
    fn delays_grow_after_the_free_failures_then_the_address_is_blocked() {
        let policy = ThrottlePolicy::default();
        let mut t = SignInThrottle::new(policy);
        let mut clock = Clock(1_000);
        let attacker = ip("10.0.0.66");
        for _ in 0..3 {
            assert_eq!(fail(&mut t, attacker, Some("it.admin"), clock.now()), FailureEffects::default());
        }
        // After the free failures: 1, 2, 4... seconds after the last one.
        for (n, wait) in [(3u32, 1i64), (4, 2), (5, 4), (6, 8), (7, 16), (8, 32)] {
            assert_eq!(delay_after(&policy, n), wait);
            assert_eq!(t.admit(attacker, clock.now()), Err(Refused::Wait { retry_after: wait }), "after {n} failures");
            clock.advance(wait - 1);
            assert_eq!(t.admit(attacker, clock.now()), Err(Refused::Wait { retry_after: 1 }));
            clock.advance(1);
            let effects = fail(&mut t, attacker, Some("it.admin"), clock.now());
            assert!(!effects.address_blocked && effects.account_locked.is_none());
        }
        clock.advance(64);
        let effects = fail(&mut t, attacker, Some("it.admin"), clock.now());
        assert!(effects.address_blocked, "the 10th failure blocks the address");
        assert_eq!(effects.account_locked, None, "one address never locks the account");
        assert_eq!(t.admit(attacker, clock.now()), Err(Refused::Blocked { retry_after: 900 }));
        clock.advance(899);
        assert_eq!(t.admit(attacker, clock.now()), Err(Refused::Blocked { retry_after: 1 }));
        // Another address is not affected at any point.
        assert_eq!(t.admit(ip("10.0.0.5"), clock.now()), Ok(()));
        clock.advance(1);
        assert_eq!(t.admit(attacker, clock.now()), Ok(()), "the block runs out");
    }

    #[test]
    fn parallel_attempts_are_not_failures_but_at_most_max_pending_run_at_once() {
        let mut t = SignInThrottle::new(ThrottlePolicy { max_pending: 20, ..ThrottlePolicy::default() });
        let terminal = ip("10.0.0.40");
        // Sixteen people behind one terminal server sign in together.
        for _ in 0..16 {
            t.admit(terminal, 50).expect("an attempt in progress is not a failure");
        }
        for i in 0..16 {
            t.succeeded(terminal, &format!("dr.{i}"), 51);
        }
        // A flood: twenty at once, the next is refused until one of them settles.
        let flooder = ip("10.66.0.3");
        for _ in 0..20 {
            t.admit(flooder, 60).expect("within max_pending");
        }
        assert_eq!(t.admit(flooder, 60), Err(Refused::Crowded));
        assert_eq!(Refused::Crowded.retry_after(), 1);
        t.abandoned(flooder);
        t.admit(flooder, 60).expect("a place came free");
    }

    #[test]
    fn past_the_free_failures_parallel_attempts_go_one_at_a_time() {
        let mut t = SignInThrottle::new(ThrottlePolicy::default());
        let a = ip("10.0.0.66");
        for _ in 0..3 {
            fail(&mut t, a, None, 50);
        }
        t.admit(a, 51).expect("after the wait");
        assert_eq!(t.admit(a, 51), Err(Refused::Wait { retry_after: 1 }), "a second one while the first is checked");
    }

    #[test]
    fn failures_of_a_parallel_burst_past_the_pause_lengthen_it_by_their_share() {
        let policy = ThrottlePolicy::default();
        let mut t = SignInThrottle::new(policy);
        let a = ip("10.66.0.3");
        for _ in 0..20 {
            t.admit(a, 100).expect("free and within max_pending");
        }
        let blocks: Vec<bool> = (0..20).map(|_| t.failed(a, Some("it.admin"), 101).address_blocked).collect();
        assert_eq!(blocks.iter().filter(|b| **b).count(), 1, "one pause, one alert: {blocks:?}");
        assert!(blocks[9], "the tenth failure pauses the address");
        // 900 s for the first ten, 90 s for each of the ten after.
        assert_eq!(t.admit(a, 101), Err(Refused::Blocked { retry_after: 1800 }));
        // Twenty guesses in 1800 s: the rate of ten in a row and a 900 s pause.
        assert_eq!(t.admit(a, 1901), Ok(()));
    }

    #[test]
    fn a_success_resets_the_address_and_makes_it_known() {
        let mut t = SignInThrottle::new(ThrottlePolicy::default());
        let a = ip("192.168.1.20");
        for _ in 0..3 {
            fail(&mut t, a, Some("dr.a"), 100);
        }
        assert!(t.admit(a, 100).is_err());
        t.admit(a, 101).expect("after the wait");
        t.succeeded(a, "dr.a", 101);
        assert!(t.is_known("dr.a", a, 102));
        assert!(!t.is_known("dr.b", a, 102));
        assert!(!t.is_known("dr.a", ip("192.168.1.21"), 102));
        assert!(!t.is_known("dr.a", a, 101 + KNOWN_ADDRESS_SECS), "known addresses expire");
        for _ in 0..3 {
            assert_eq!(fail(&mut t, a, Some("dr.a"), 200), FailureEffects::default(), "free failures again");
        }
    }

    #[test]
    fn an_address_is_forgotten_after_a_quiet_period() {
        let mut t = SignInThrottle::new(ThrottlePolicy::default());
        let a = ip("10.1.1.1");
        for _ in 0..3 {
            fail(&mut t, a, None, 10);
        }
        assert!(t.admit(a, 10).is_err());
        // Quiet for block_secs: the next failures are free again.
        for _ in 0..3 {
            assert_eq!(fail(&mut t, a, None, 910), FailureEffects::default());
        }
        assert!(t.admit(a, 910).is_err());
    }

    #[test]
    fn the_account_locks_only_when_failures_come_from_several_addresses() {
        let policy = ThrottlePolicy::default();
        let mut t = SignInThrottle::new(policy);
        let mut clock = Clock(5_000);
        // Five failures from two addresses: not enough addresses.
        for addr in ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.2"] {
            assert_eq!(fail(&mut t, ip(addr), Some("it.admin"), clock.now()).account_locked, None);
            clock.advance(10);
        }
        // The third address: the account locks.
        assert_eq!(fail(&mut t, ip("10.0.0.3"), Some("it.admin"), clock.now()).account_locked, Some(3));
        // Counted once; other accounts are not touched.
        assert_eq!(fail(&mut t, ip("10.0.0.4"), Some("it.admin"), clock.now()).account_locked, None);
        assert_eq!(fail(&mut t, ip("10.0.0.4"), Some("dr.a"), clock.now()).account_locked, None);
    }

    #[test]
    fn account_failures_outside_the_window_do_not_count() {
        let policy = ThrottlePolicy { lock_window_secs: 600, ..ThrottlePolicy::default() };
        let mut t = SignInThrottle::new(policy);
        for (i, addr) in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].into_iter().enumerate() {
            assert_eq!(fail(&mut t, ip(addr), Some("dr.a"), i as i64 * 300).account_locked, None);
        }
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), address_key(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(address_key(ip("2001:db8:1:2::1")), address_key(ip("2001:db8:1:3::1")));
        assert_eq!(address_key(ip("::ffff:10.0.0.7")), address_key(ip("10.0.0.7")));
        assert_eq!(address_key(None), address_key(None));
    }

    #[test]
    fn an_abandoned_attempt_does_not_count() {
        let mut t = SignInThrottle::new(ThrottlePolicy::default());
        let a = ip("10.0.0.9");
        for _ in 0..10 {
            t.admit(a, 1).expect("admitted");
            t.abandoned(a);
        }
        assert!(t.admit(a, 1).is_ok());
    }

    #[test]
    fn rotating_addresses_do_not_grow_the_tables_without_bound() {
        let mut t = SignInThrottle::new(ThrottlePolicy::default());
        for i in 0..20_000u32 {
            let addr = Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            let now = i64::from(i);
            t.admit(addr, now).expect("new address");
            t.failed(addr, None, now);
        }
        assert!(t.tracked() <= SWEEP_ABOVE + 1000, "{} entries kept", t.tracked());
    }
}
