use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Per-tenant request rate limit (generic cell rate algorithm, via governor).
pub struct TenantLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl TenantLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` if the tenant may go on, else how long until it may.
    pub fn check(&self, tenant: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&tenant.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_per_tenant() {
        let l = TenantLimiter::new(60, 2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l
            .check("a")
            .expect_err("third call in the burst window is refused");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(l.check("b").is_ok(), "tenants are limited separately");
    }
}
