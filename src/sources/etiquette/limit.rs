//! The per-source rate limit: governor's GCRA on tokio's clock.
//!
//! `rate_per_minute` is the steady rate. The burst is ten seconds' share of it (`rate / 6`), at least
//! [`MIN_BURST`] so that one lookup's hops (a search, then a profile) are not refused by its own limit,
//! and never above the rate: an upstream counting per minute never sees more than `rate_per_minute`
//! plus the burst in any minute, and a spike cannot spend a whole minute's quota at once. A rate of
//! zero means "no limit of our own".
//!
//! `rate_per_minute` is the budget of the whole deployment: with several replicas on one store, each
//! enforces its share ([`ReplicaShare::share_of`]), and rebuilds its limiter when the number of live
//! replicas changes.

use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::store::replicas::ReplicaShare;

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

pub(crate) struct Limiter {
    rate_per_minute: u32,
    share: ReplicaShare,
    /// The limiter for this many live replicas.
    current: RwLock<(u32, Direct)>,
}

fn direct(rate_per_minute: u32) -> Option<Direct> {
    let rate = NonZeroU32::new(rate_per_minute)?;
    let burst = NonZeroU32::new((rate_per_minute / 6).max(MIN_BURST).min(rate_per_minute))?;
    let quota = Quota::per_minute(rate).allow_burst(burst);
    Some(RateLimiter::direct_with_clock(quota, TokioClock))
}

impl Limiter {
    /// `None` when `rate_per_minute` is zero.
    pub(crate) fn new(rate_per_minute: u32, share: ReplicaShare) -> Option<Self> {
        let replicas = share.replicas();
        let limiter = direct(share.share_of(rate_per_minute))?;
        Some(Self {
            rate_per_minute,
            share,
            current: RwLock::new((replicas, limiter)),
        })
    }

    /// Takes one cell, or says how long until one is free.
    pub(crate) fn check(&self) -> Result<(), Duration> {
        let replicas = self.share.replicas();
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.0 == replicas {
                return Self::take(&current.1);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.0 != replicas
            && let Some(limiter) = direct(self.share.share_of(self.rate_per_minute))
        {
            *current = (replicas, limiter);
        }
        Self::take(&current.1)
    }

    fn take(limiter: &Direct) -> Result<(), Duration> {
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn with_three_replicas_each_takes_a_third_of_the_budget() {
        let share = ReplicaShare::single();
        let limiter = Limiter::new(60, share.clone()).expect("a rate");
        let burst = |l: &Limiter| (0..100).take_while(|_| l.check().is_ok()).count();
        assert_eq!(burst(&limiter), 10, "60/min: a burst of ten seconds' share");
        share.set(3);
        assert_eq!(burst(&limiter), 3, "20/min each: the smallest burst");
        tokio::time::advance(Duration::from_secs(60)).await;
        let mut calls = burst(&limiter);
        for _ in 0..60 {
            tokio::time::advance(Duration::from_secs(1)).await;
            calls += burst(&limiter);
        }
        assert!(
            (20..=24).contains(&calls),
            "about 20 calls a minute plus the burst: {calls}"
        );
    }
}
