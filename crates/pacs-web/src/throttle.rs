//! Throttling of password guesses per source address and per account name, in memory.
//!
//! Each failed password (log-in form or HTTP Basic) counts against the address it came from
//! and the name it tried. After [`FREE_FAILURES`] of them, the next attempt from that address
//! or for that name must wait, the wait doubling with each further failure from
//! `ThrottleConfig::delay` up to [`MAX_DELAY`]; an attempt that comes too early is refused
//! without hashing anything. Failures are forgotten once none came for `window`. A name
//! reaching `lockout_failures` is locked for `lockout`: an existing account's lock is
//! persisted in the index by the caller (it survives a restart and an administrator lifts it);
//! a name that is no account is locked here, so both answer alike. Addresses are only delayed,
//! never locked: many users may share one (a NAT, a proxy).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Failures allowed before delays start.
pub const FREE_FAILURES: u32 = 3;
/// Longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Most addresses and names tracked each; beyond, the longest quiet ones are forgotten.
const MAX_KEYS: usize = 10_000;

/// Throttling settings.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    /// Failures in a row after which a name is locked (0: never).
    pub lockout_failures: u32,
    /// Failures are forgotten once none came for this long.
    pub window: Duration,
    /// How long a lock-out lasts.
    pub lockout: Duration,
    /// The first delay (zero: no delays).
    pub delay: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            lockout_failures: 10,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            delay: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failures per key (an address or a name's digest).
struct FailureLog<K> {
    entries: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Copy> FailureLog<K> {
    fn new() -> Self {
        FailureLog {
            entries: HashMap::new(),
        }
    }

    /// How long `key` must still wait, if at all.
    fn wait(&self, key: &K, now: Instant, config: &ThrottleConfig) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        if let Some(until) = entry.locked_until.filter(|until| *until > now) {
            return Some(until - now);
        }
        let delay = delay_after(entry.count, config);
        // No delay is no wait, even when another thread counted a failure at an instant a
        // little later than `now` (taken before the lock).
        let allowed = entry.last + delay;
        (!delay.is_zero() && allowed > now).then(|| allowed - now)
    }

    /// Counts a failure for `key`; returns the failures in a row so far.
    fn fail(&mut self, key: K, now: Instant, config: &ThrottleConfig) -> u32 {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_KEYS {
            self.make_room(now, config);
        }
        let entry = self.entries.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.duration_since(entry.last) > config.window || entry.locked_until.is_some_and(|u| u <= now) {
            *entry = Failures {
                count: 0,
                last: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        entry.last = entry.last.max(now);
        entry.count
    }

    /// Takes back one failure of `key`.
    fn uncount(&mut self, key: &K) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    /// Drops what is over; if everything is live, the half that has been quiet longest.
    fn make_room(&mut self, now: Instant, config: &ThrottleConfig) {
        self.entries.retain(|_, e| {
            now.duration_since(e.last) <= config.window || e.locked_until.is_some_and(|u| u > now)
        });
        if self.entries.len() >= MAX_KEYS {
            let mut lasts: Vec<Instant> = self.entries.values().map(|e| e.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.entries.retain(|_, e| e.last > cut);
        }
    }
}

/// The wait after `count` failures in a row.
fn delay_after(count: u32, config: &ThrottleConfig) -> Duration {
    if count <= FREE_FAILURES || config.delay.is_zero() {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_FAILURES - 1).min(16);
    config.delay.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// An address as throttled: IPv6 by its /64 (what one subscriber usually holds).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)),
        v4 => v4,
    }
}

/// A name as throttled: its digest, so that a long name costs no more memory than a short one.
fn name_key(name: &str) -> [u8; 32] {
    Sha256::digest(name.as_bytes()).into()
}

/// What a wrong password led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    Counted,
    /// The name just reached the lock-out threshold after this many failures in a row.
    LockedOut(u32),
}

/// Password-guess throttling for one server.
///
/// An attempt counts as a failure from the moment it is let through ([`Self::begin`]) until
/// it proves right ([`Self::succeeded`]) or is not checked after all ([`Self::cancel`]): many
/// guesses sent at once for one name or from one address see each other, and all but the
/// first few are refused before any is hashed.
pub(crate) struct LoginThrottle {
    pub(crate) config: ThrottleConfig,
    addresses: Mutex<FailureLog<IpAddr>>,
    names: Mutex<FailureLog<[u8; 32]>>,
}

impl LoginThrottle {
    pub(crate) fn new(config: ThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            config,
            addresses: Mutex::new(FailureLog::new()),
            names: Mutex::new(FailureLog::new()),
        }
    }

    /// Lets an attempt from `peer` for `name` through, counted as a failure until it proves
    /// right, or says how long it must still wait.
    pub(crate) fn begin(&self, peer: IpAddr, name: &str, now: Instant) -> Result<(), Duration> {
        let (peer, name) = (address_key(peer), name_key(name));
        let mut addresses = lock(&self.addresses);
        let mut names = lock(&self.names);
        let address_wait = addresses.wait(&peer, now, &self.config);
        if let Some(wait) = address_wait.max(names.wait(&name, now, &self.config)) {
            return Err(wait);
        }
        addresses.fail(peer, now, &self.config);
        names.fail(name, now, &self.config);
        Ok(())
    }

    /// The attempt's password was wrong. `account` says whether `name` is an account: its
    /// lock-out is then the caller's to persist, and its count starts again here.
    pub(crate) fn failed(&self, name: &str, account: bool, now: Instant) -> Failed {
        let mut names = lock(&self.names);
        let key = name_key(name);
        let Some(entry) = names.entries.get_mut(&key) else {
            return Failed::Counted;
        };
        let count = entry.count;
        if self.config.lockout_failures == 0 || count < self.config.lockout_failures {
            return Failed::Counted;
        }
        if account {
            names.entries.remove(&key);
        } else {
            entry.locked_until = Some(now + self.config.lockout);
        }
        Failed::LockedOut(count)
    }

    /// The attempt's password was right: the name's failures are forgotten, the address's
    /// earlier ones are not (or an attacker could clear them by logging in to an account of
    /// their own now and then).
    pub(crate) fn succeeded(&self, peer: IpAddr, name: &str) {
        lock(&self.names).entries.remove(&name_key(name));
        lock(&self.addresses).uncount(&address_key(peer));
    }

    /// The attempt was refused before its password was checked (a locked account, a full
    /// pool): it does not count.
    pub(crate) fn cancel(&self, peer: IpAddr, name: &str) {
        lock(&self.names).uncount(&name_key(name));
        lock(&self.addresses).uncount(&address_key(peer));
    }

    /// Forgets the failures of `name` (an administrator unlocked it).
    pub(crate) fn forget(&self, name: &str) {
        lock(&self.names).entries.remove(&name_key(name));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delays_double_after_the_free_failures_up_to_the_cap() {
        let config = ThrottleConfig::default();
        let delays: Vec<u64> = (1..=12).map(|n| delay_after(n, &config).as_secs()).collect();
        assert_eq!(delays, [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let off = ThrottleConfig {
            delay: Duration::ZERO,
            ..ThrottleConfig::default()
        };
        assert_eq!(delay_after(50, &off), Duration::ZERO);
    }

    /// One wrong password from `peer` for `name`, if let through.
    fn guess(
        throttle: &LoginThrottle,
        peer: IpAddr,
        name: &str,
        account: bool,
        at: Instant,
    ) -> Result<Failed, Duration> {
        throttle.begin(peer, name, at)?;
        Ok(throttle.failed(name, account, at))
    }

    #[test]
    fn an_address_is_delayed_and_a_name_locked_after_repeated_failures() {
        let throttle = LoginThrottle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        for i in 0..=FREE_FAILURES {
            assert_eq!(
                guess(&throttle, A, &format!("u{i}"), false, t0),
                Ok(Failed::Counted)
            );
        }
        // After the fourth, the address waits a second, whatever the name; another does not.
        assert_eq!(throttle.begin(A, "other", t0), Err(secs(1)));
        assert_eq!(throttle.begin(B, "other", t0), Ok(()));
        throttle.succeeded(B, "other");
        assert_eq!(
            guess(&throttle, A, "u4", false, t0 + secs(1)),
            Ok(Failed::Counted)
        );
        assert_eq!(throttle.begin(A, "other", t0 + secs(1)), Err(secs(2)));
        assert_eq!(throttle.begin(A, "other", t0 + secs(3)), Ok(()));
        throttle.cancel(A, "other");

        // One name tried from many addresses: locked at the tenth failure in a row.
        let mut at = t0;
        for n in 1..=10u8 {
            let peer = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 0, n));
            if let Err(wait) = throttle.begin(peer, "ghost", at) {
                at += wait;
                throttle.begin(peer, "ghost", at).unwrap();
            }
            let expected = if n < 10 {
                Failed::Counted
            } else {
                Failed::LockedOut(10)
            };
            assert_eq!(throttle.failed("ghost", false, at), expected);
        }
        assert_eq!(throttle.begin(B, "ghost", at + secs(60)), Err(secs(14 * 60)));
        assert_eq!(throttle.begin(B, "ghost", at + secs(15 * 60)), Ok(()));

        // An account's lock is the index's: here its count starts again.
        let mut at = t0;
        for n in 1..=10 {
            let peer = IpAddr::V4(std::net::Ipv4Addr::new(172, 16, 0, n));
            if let Err(wait) = throttle.begin(peer, "ana", at) {
                at += wait;
                throttle.begin(peer, "ana", at).unwrap();
            }
            let expected = if n < 10 {
                Failed::Counted
            } else {
                Failed::LockedOut(10)
            };
            assert_eq!(throttle.failed("ana", true, at), expected);
        }
        let fresh = IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(throttle.begin(fresh, "ana", at), Ok(()));
    }

    #[test]
    fn guesses_sent_at_once_see_each_other() {
        let throttle = LoginThrottle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        let let_through = (0..50)
            .filter(|i| throttle.begin(A, &format!("n{i}"), t0).is_ok())
            .count();
        assert_eq!(let_through as u32, FREE_FAILURES + 1);
        let let_through = (0..50).filter(|_| throttle.begin(B, "ana", t0).is_ok()).count();
        assert_eq!(let_through as u32, FREE_FAILURES + 1);
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_window_and_a_success_clears_the_name() {
        let throttle = LoginThrottle::new(ThrottleConfig {
            delay: Duration::ZERO,
            ..ThrottleConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            guess(&throttle, A, "ana", true, t0).unwrap();
        }
        let slow = LoginThrottle::new(ThrottleConfig::default());
        for _ in 0..5 {
            let _ = guess(&slow, A, "ana", true, t0);
        }
        assert!(slow.begin(B, "ana", t0).is_err());
        slow.succeeded(B, "ana");
        assert_eq!(slow.begin(B, "ana", t0), Ok(()));
        assert!(slow.begin(A, "bob", t0).is_err(), "the address still waits");
        let later = t0 + secs(16 * 60);
        assert_eq!(guess(&slow, A, "bob", false, later), Ok(Failed::Counted));
        assert_eq!(
            slow.begin(A, "bob", later),
            Ok(()),
            "a fresh count after the window"
        );
        // Without delays, failures still lead to the lock-out.
        for _ in 5..9 {
            guess(&throttle, A, "ana", true, t0).unwrap();
        }
        assert_eq!(guess(&throttle, A, "ana", true, t0), Ok(Failed::LockedOut(10)));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(one), address_key(other));
        assert_ne!(address_key(one), address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(address_key(mapped), A);
    }

    #[test]
    fn the_tables_stay_bounded() {
        let throttle = LoginThrottle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            let at = t0 + Duration::from_millis(u64::from(i));
            let peer = IpAddr::V4(std::net::Ipv4Addr::from(i));
            guess(&throttle, peer, &format!("name{i}"), false, at).unwrap();
        }
        assert!(lock(&throttle.names).entries.len() <= MAX_KEYS);
    }
}
