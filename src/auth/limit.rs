use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between sweeps of keys whose budget is full again (keeps memory bounded).
const SWEEP_EVERY: u64 = 1024;

/// A keyed GCRA limiter (governor): `per_minute` steady, `burst` at once, per key.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// `Ok` if `key` may go on, else how long until it may.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// A rate limit as the IETF `RateLimit-Policy` field tells it (draft-ietf-httpapi-ratelimit-headers):
/// a name, a quota of `quota` requests per `window` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePolicy {
    pub name: &'static str,
    pub quota: u32,
    pub window_secs: u32,
}

/// Per-tenant request rate limit, keyed by the tenant name the key store shares (no copy per request).
pub struct TenantLimiter(KeyedLimiter<Arc<str>>, RatePolicy);

impl TenantLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let policy = RatePolicy {
            name: "tenant",
            quota: per_minute.max(1),
            window_secs: 60,
        };
        Self(KeyedLimiter::new(per_minute, burst), policy)
    }

    /// The policy every tenant is held to.
    pub fn policy(&self) -> RatePolicy {
        self.1
    }

    /// `Ok` if the tenant may go on, else how long until it may.
    pub fn check(&self, tenant: &Arc<str>) -> Result<(), Duration> {
        self.0.check(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_whose_budget_is_full_again_are_swept_every_sweep_every_checks() {
        // One call a millisecond, burst 1: a key is back to a full budget within a millisecond.
        let l = KeyedLimiter::new(60_000, 1);
        for k in 0..SWEEP_EVERY - 1 {
            assert!(l.check(&k).is_ok());
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            l.limiter.len(),
            (SWEEP_EVERY - 1) as usize,
            "nothing swept before the turn"
        );
        assert!(l.check(&SWEEP_EVERY).is_ok());
        assert!(
            l.limiter.len() <= 1,
            "the turn swept every key whose budget is full: {} left",
            l.limiter.len()
        );
    }

    #[test]
    fn burst_then_refusal_per_tenant() {
        let l = TenantLimiter::new(60, 2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert!(l.check(&a).is_ok());
        assert!(l.check(&Arc::from("a")).is_ok(), "the key is the name");
        let wait = l
            .check(&a)
            .expect_err("third call in the burst window is refused");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(l.check(&b).is_ok(), "tenants are limited separately");
    }
}
