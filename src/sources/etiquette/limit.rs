//! The per-source rate limit: governor's GCRA on tokio's clock.
//!
//! `rate_per_minute` is the steady rate. The burst is ten seconds' share of it (`rate / 6`), at least
//! [`MIN_BURST`] so that one lookup's hops (a search, then a profile) are not refused by its own limit,
//! and never above the rate: an upstream counting per minute never sees more than `rate_per_minute`
//! plus the burst in any minute, and a spike cannot spend a whole minute's quota at once. A rate of
//! zero means "no limit of our own".
//!
//! **Live and batch**: every call takes a cell of the source's whole budget. A batch call first takes
//! a cell of the batch part, `batch_share` of the rate (burst [`MIN_BURST`]), and *waits* for both
//! ([`Limiter::until_batch_ready`]); a live call only checks the whole budget and is refused at once
//! when it is spent ([`Limiter::check_live`]). So batches never use more than `batch_share` of the
//! budget, and at least `1 - batch_share` of it is always left to live lookups, which may also use
//! whatever the batches leave.
//!
//! `rate_per_minute` is the budget of the whole deployment: with several replicas on one store, each
//! enforces its share ([`ReplicaShare::share_of`]), and rebuilds its limiters when the number of live
//! replicas changes.

use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::store::replicas::ReplicaShare;

/// The smallest burst: the calls one lookup may make to one source in quick succession.
pub(crate) const MIN_BURST: u32 = 3;

/// The default share of a source's budget that batches may use; the rest is kept for live lookups.
pub const DEFAULT_BATCH_SHARE: f64 = 0.8;

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
/// The whole budget's limiter, which tells what is left after each call (for `GET /v1/sources`).
type Told = RateLimiter<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;

/// The limiters for one number of live replicas.
struct Current {
    replicas: u32,
    total: Told,
    /// This replica's whole budget and burst, calls per minute and calls.
    per_minute: u32,
    burst: u32,
    batch: Direct,
    /// The batch part's rate on this replica, calls per minute.
    batch_per_minute: u32,
}

pub(crate) struct Limiter {
    rate_per_minute: u32,
    batch_share: f64,
    share: ReplicaShare,
    current: RwLock<Current>,
    /// Cells of the whole budget left after the last call, and when: what is left now follows from
    /// the rate (governor cannot be asked without taking a cell).
    left: std::sync::Mutex<Option<(u32, tokio::time::Instant)>>,
}

fn quota(rate_per_minute: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate_per_minute)?;
    let burst = NonZeroU32::new(burst.min(rate_per_minute).max(1))?;
    Some(Quota::per_minute(rate).allow_burst(burst))
}

fn direct(rate_per_minute: u32, burst: u32) -> Option<Direct> {
    Some(RateLimiter::direct_with_clock(
        quota(rate_per_minute, burst)?,
        TokioClock,
    ))
}

/// The batch part of a replica's rate: `batch_share` of it, at least one call a minute.
pub(crate) fn batch_part(per_minute: u32, batch_share: f64) -> u32 {
    let part = (f64::from(per_minute) * batch_share.clamp(0.0, 1.0)).floor();
    // In 0..=per_minute: the cast cannot truncate.
    (part as u32).max(1)
}

fn build(rate_per_minute: u32, batch_share: f64, share: &ReplicaShare) -> Option<Current> {
    let replicas = share.replicas();
    let mine = share.share_of(rate_per_minute);
    let batch_per_minute = batch_part(mine, batch_share);
    let burst = (mine / 6).max(MIN_BURST).min(mine);
    Some(Current {
        replicas,
        total: RateLimiter::direct_with_clock(quota(mine, burst)?, TokioClock)
            .with_middleware::<StateInformationMiddleware>(),
        per_minute: mine,
        burst,
        batch: direct(batch_per_minute, MIN_BURST)?,
        batch_per_minute,
    })
}

impl Limiter {
    /// `None` when `rate_per_minute` is zero.
    pub(crate) fn new(rate_per_minute: u32, batch_share: f64, share: ReplicaShare) -> Option<Self> {
        let current = build(rate_per_minute, batch_share, &share)?;
        Some(Self {
            rate_per_minute,
            batch_share,
            share,
            current: RwLock::new(current),
            left: std::sync::Mutex::new(None),
        })
    }

    /// Runs `f` on the limiters for the current number of live replicas, rebuilding them first when
    /// it changed.
    fn with<T>(&self, f: impl FnOnce(&Current) -> T) -> T {
        let replicas = self.share.replicas();
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.replicas == replicas {
                return f(&current);
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.replicas != replicas
            && let Some(rebuilt) = build(self.rate_per_minute, self.batch_share, &self.share)
        {
            *current = rebuilt;
        }
        f(&current)
    }

    /// A live call: takes one cell of the whole budget, or says how long until one is free.
    pub(crate) fn check_live(&self) -> Result<(), Duration> {
        let now = tokio::time::Instant::now();
        let taken = self.with(|c| {
            c.total
                .check()
                .map(|snapshot| snapshot.remaining_burst_capacity())
                .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
        });
        let left = *taken.as_ref().unwrap_or(&0);
        *self.left.lock().unwrap_or_else(|p| p.into_inner()) = Some((left, now));
        taken.map(drop)
    }

    /// This replica's whole budget for the source: calls per minute, the burst, and the calls a live
    /// lookup could make at once now (the cells left after the last call, plus those the rate has
    /// added since, up to the burst).
    pub(crate) fn budget(&self) -> (u32, u32, u32) {
        let (per_minute, burst) = self.with(|c| (c.per_minute, c.burst));
        let left = *self.left.lock().unwrap_or_else(|p| p.into_inner());
        let now_left = match left {
            None => burst,
            Some((left, at)) => {
                let since = tokio::time::Instant::now().duration_since(at).as_secs_f64();
                let added = (since * f64::from(per_minute) / 60.0).floor();
                // At most the burst: the cast cannot truncate.
                (f64::from(left) + added).min(f64::from(burst)) as u32
            }
        };
        (per_minute, burst, now_left)
    }

    /// A batch call: waits for a cell of the batch part, then for one of the whole budget (which live
    /// calls may be using). Cancelled by dropping; a batch cell taken then is lost, never over-spent.
    pub(crate) async fn until_batch_ready(&self) {
        while let Err(wait) = self.with(|c| take(&c.batch)) {
            tokio::time::sleep(wait).await;
        }
        while let Err(wait) = self.check_live() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The batch part's steady rate on this replica, calls per second.
    pub(crate) fn batch_per_second(&self) -> f64 {
        self.with(|c| f64::from(c.batch_per_minute) / 60.0)
    }
}

fn take(limiter: &Direct) -> Result<(), Duration> {
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn with_three_replicas_each_takes_a_third_of_the_budget() {
        let share = ReplicaShare::single();
        let limiter = Limiter::new(60, DEFAULT_BATCH_SHARE, share.clone()).expect("a rate");
        let burst = |l: &Limiter| (0..100).take_while(|_| l.check_live().is_ok()).count();
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
