//! The per-source rate limit: governor's GCRA on tokio's clock.
//!
//! `rate_per_minute` is the steady rate. The burst is ten seconds' share of it (`rate / 6`), at least
//! [`MIN_BURST`] so that one lookup's hops (a search, then a profile) are not refused by its own limit,
//! and never above the rate: an upstream counting per minute never sees more than `rate_per_minute`
//! plus the burst in any minute, and a spike cannot spend a whole minute's quota at once. A rate of
//! zero means "no limit of our own".

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// The smallest burst: the calls one lookup may make to one source in quick succession.
pub(crate) const MIN_BURST: u32 = 3;

/// governor's clock, read from tokio so `tokio::time::pause` and `advance` drive it in tests.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

pub(crate) struct Limiter(Direct);

impl Limiter {
    /// `None` when `rate_per_minute` is zero.
    pub(crate) fn new(rate_per_minute: u32) -> Option<Self> {
        let rate = NonZeroU32::new(rate_per_minute)?;
        let burst = NonZeroU32::new((rate_per_minute / 6).max(MIN_BURST).min(rate_per_minute))?;
        let quota = Quota::per_minute(rate).allow_burst(burst);
        Some(Self(RateLimiter::direct_with_clock(quota, TokioClock)))
    }

    /// Takes one cell, or says how long until one is free.
    pub(crate) fn check(&self) -> Result<(), Duration> {
        self.0
            .check()
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }
}
