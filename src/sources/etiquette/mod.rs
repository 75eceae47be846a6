//! Upstream etiquette: a [`Guarded`] source wraps any [`Source`] and is itself one, so the fan-out does
//! not change.
//!
//! Layers, in call order:
//! 1. **cache + coalescing** ([`SourceCache`], on moka): a fresh answer (hit or miss) is served from
//!    memory; concurrent identical lookups share one upstream call. A call runs in a tokio task of its
//!    own, so a caller that leaves cannot cancel it: those who joined still get the answer, and it is
//!    still cached. Errors are shared with the callers waiting at the time, never cached.
//! 2. **pause**: after an upstream `429`/`Retry-After`, calls fail fast as `OverBudget` until then.
//! 3. **circuit breaker**: after `breaker_failures` consecutive retryable failures, calls fail fast
//!    with `NotAttempted("circuit open")` for `breaker_cooldown`; then one probe decides.
//! 4. **rate limit** (governor, see [`limit`]): over `rate_per_minute`, `OverBudget` without a call.
//! 5. **bulkhead**: at most `concurrency` calls in flight; others wait for a permit.
//! 6. the upstream call itself, bounded by `call_timeout`.
//!
//! The breaker is consulted before the rate limiter so that an open circuit spends no rate budget; a
//! probe refused by the limiter hands its slot back. An upstream's `429` pauses the source but is not
//! a failure for the breaker: the upstream is alive, it only asks us to slow down. All time is tokio
//! time (`tokio::time::pause` in tests).
//!
//! A batch row's call is *paced* ([`Guarded::lookup_paced`], [`pace`]): instead of failing at steps 2
//! and 4 it waits (for the pause to end, for the batch part of the budget), and after an upstream
//! `429` it waits and calls again. Cached answers never wait.

mod breaker;
mod cache;
pub(crate) mod limit;
pub mod pace;
#[cfg(test)]
mod tests;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use breaker::BreakerState;
pub use cache::{DEFAULT_MAX_BYTES, DEFAULT_TTL, SourceCache};
pub use limit::DEFAULT_BATCH_SHARE;
pub use pace::{BatchPace, Pace};

use self::breaker::{Admission, Breaker, Health};
use self::limit::Limiter;
use super::spec::SourceConfig;
use super::{SharedAnswer, Source, SourceError};
use crate::domain::Identifier;
use crate::profile::Observation;
use crate::store::replicas::ReplicaShare;

/// The longest an upstream's `Retry-After` may pause a source: a broken header must not silence it for
/// days.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// How one source is guarded.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Steady calls per minute; 0 means no limit of our own.
    pub rate_per_minute: u32,
    /// The share of `rate_per_minute` batches may use; the rest is kept for live lookups.
    pub batch_share: f64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Consecutive retryable failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls; also the pause after a `429` without `Retry-After`.
    pub breaker_cooldown: Duration,
    /// Bound on one upstream call including the wait for a permit; the spawned call outlives its
    /// callers, so it needs its own deadline.
    pub call_timeout: Duration,
}

impl GuardConfig {
    pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
    pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

    pub fn new(rate_per_minute: u32, concurrency: usize, call_timeout: Duration) -> Self {
        Self {
            rate_per_minute,
            batch_share: DEFAULT_BATCH_SHARE,
            concurrency,
            breaker_failures: Self::DEFAULT_BREAKER_FAILURES,
            breaker_cooldown: Self::DEFAULT_BREAKER_COOLDOWN,
            call_timeout,
        }
    }

    /// A built-in source's guard: its rate, concurrency and timeout.
    pub fn for_source(c: &SourceConfig) -> Self {
        Self {
            batch_share: c.batch_share,
            ..Self::new(
                c.rate_per_minute,
                c.concurrency,
                Duration::from_millis(c.timeout_ms),
            )
        }
    }
}

/// A guarded source's state, for `enrichd sources`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardState {
    pub breaker: BreakerState,
    /// Until when an upstream `Retry-After` pauses the source.
    pub paused_until: Option<Instant>,
    /// Live cached answers for this source.
    pub cache_entries: u64,
}

/// A source's rate budget on this replica (its share of `rate_per_minute` when replicas share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Budget {
    /// Calls per minute this replica may make.
    pub per_minute: u32,
    /// Calls it may make at once.
    pub burst: u32,
    /// Calls a live lookup could make at once now.
    pub remaining: u32,
    /// The part of `per_minute` batches may use (`batch_share`).
    pub batch_per_minute: u32,
}

/// What a guarded call asks of the source: a real lookup, or a call feigned for an excluded person
/// (the source's [`Source::feign`]) that passes the same layers — cache, pause, breaker, budget,
/// slots — as a miss would, and is cached as one.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Lookup,
    Feign(Duration),
}

/// A source behind the etiquette layers. See the module docs.
pub struct Guarded {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn Source>,
    name: Arc<str>,
    cfg: GuardConfig,
    cache: SourceCache,
    limiter: Option<Limiter>,
    paused_until: Mutex<Option<Instant>>,
    /// How the last real call failed and how long it took, while no real call has succeeded since.
    last_failure: Mutex<Option<(SourceError, Duration)>>,
    bulkhead: Semaphore,
    breaker: Mutex<Breaker>,
}

impl Guarded {
    pub fn new(source: Arc<dyn Source>, cfg: GuardConfig, cache: SourceCache) -> Self {
        Self::with_share(source, cfg, cache, ReplicaShare::single())
    }

    /// A guard whose rate limit is this replica's `share` of the source's budget.
    pub fn with_share(
        source: Arc<dyn Source>,
        cfg: GuardConfig,
        cache: SourceCache,
        share: ReplicaShare,
    ) -> Self {
        let name: Arc<str> = Arc::from(source.name());
        let inner = Inner {
            name,
            limiter: Limiter::new(cfg.rate_per_minute, cfg.batch_share, share),
            bulkhead: Semaphore::new(cfg.concurrency.max(1)),
            breaker: Mutex::new(Breaker::new(cfg.breaker_failures, cfg.breaker_cooldown)),
            paused_until: Mutex::new(None),
            last_failure: Mutex::new(None),
            source,
            cfg,
            cache,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn state(&self) -> GuardState {
        let now = Instant::now();
        GuardState {
            breaker: lock(&self.inner.breaker).state(now),
            paused_until: self.inner.paused_until(now),
            cache_entries: self.inner.cache.entries_for(&self.inner.name),
        }
    }

    /// Forgets every cached answer (of every source sharing this cache) and every call in flight.
    pub fn invalidate_all(&self) {
        self.inner.cache.invalidate_all();
    }

    pub fn config(&self) -> &GuardConfig {
        &self.inner.cfg
    }

    /// The batch part of this replica's budget for the source, calls per second; `None` when the
    /// source has no limit of our own.
    pub fn batch_per_second(&self) -> Option<f64> {
        self.inner.limiter.as_ref().map(Limiter::batch_per_second)
    }

    /// This replica's budget for the source as `GET /v1/sources` shows it; `None` when the source
    /// has no limit of our own.
    pub fn budget(&self) -> Option<Budget> {
        let limiter = self.inner.limiter.as_ref()?;
        let (per_minute, burst, remaining) = limiter.budget();
        Some(Budget {
            per_minute,
            burst,
            remaining,
            batch_per_minute: (limiter.batch_per_second() * 60.0).round() as u32,
        })
    }

    /// The shared call: the cache, coalescing, and the guarded call in a task of its own.
    async fn shared_call(&self, id: &Arc<Identifier>, admitted: bool, ask: Ask) -> SharedAnswer {
        let inner = &self.inner;
        let asked = Instant::now();
        let key = inner.cache.key(&inner.name, id);
        if let Some((answer, took)) = inner.cache.get(&key).await {
            // Replayed no faster than it was fetched: see the cache's module docs.
            tokio::time::sleep_until(asked + took).await;
            return Ok(answer);
        }
        // The call and its coalescing run in a task of their own: a caller that leaves (its client
        // went away) does not cancel the call that others joined.
        let (this, id) = (Arc::clone(inner), Arc::clone(id));
        let call = tokio::spawn(async move {
            // A panicking source fails its callers' call, not their tasks.
            let fetch = AssertUnwindSafe(this.guarded_call(&id, admitted, ask))
                .catch_unwind()
                .map(|r| r.unwrap_or(Err(SourceError::NotAttempted("the source failed"))));
            this.cache.get_or_fetch(key, &this.name, &id, fetch).await
        });
        match call.await {
            Ok(answer) => answer.map_err(|e| SourceError::clone(&e)),
            Err(_) => Err(SourceError::NotAttempted("the shared call was abandoned")),
        }
    }

    /// A paced call (see [`pace`]): waits for budget unless the answer is cached, and after an
    /// upstream `429` waits and asks again.
    async fn paced(&self, id: &Arc<Identifier>, pace: &Pace, ask: Ask) -> SharedAnswer {
        let until = Instant::now() + pace.batch().max_wait;
        let mut retries = 0;
        loop {
            let cached = self.is_cached(id).await;
            if !cached && !self.wait_for_budget(pace, until).await {
                return Err(SourceError::OverBudget { retry_after: None });
            }
            // Admitted only with a cell in hand: an answer evicted from the cache since it was
            // seen makes a live-checked call instead (refused, it is waited for again).
            let result = self.shared_call(id, !cached, ask).await;
            match &result {
                // The upstream's own refusal: the guard paused the source; wait and call again.
                Err(SourceError::RateLimited { .. }) => {
                    pace.batch().limited_upstream();
                    if retries >= pace.batch().max_retries {
                        return result;
                    }
                    retries += 1;
                }
                // A pause another call started between our wait and our call: wait it out.
                Err(SourceError::OverBudget { .. }) => {}
                Ok(_) | Err(_) => {
                    if !cached {
                        pace.called(&self.inner.name);
                    }
                    return result;
                }
            }
        }
    }

    /// Whether `id`'s answer is cached: a paced call then needs no budget.
    async fn is_cached(&self, id: &Identifier) -> bool {
        let key = self.inner.cache.key(&self.inner.name, id);
        self.inner.cache.get(&key).await.is_some()
    }

    /// Waits until a paced call may be made: an upstream's pause over (plus a jitter), a cell of the
    /// batch part taken. `false` when that would pass `until`.
    async fn wait_for_budget(&self, pace: &Pace, until: Instant) -> bool {
        let inner = &self.inner;
        let _waiting = pace.waiting();
        let waited = async {
            while let Some(end) = inner.paused_until(Instant::now()) {
                let pause = end - Instant::now();
                tokio::time::sleep_until(end + pace::jitter(pause)).await;
            }
            if let Some(limiter) = &inner.limiter {
                limiter.until_batch_ready().await;
            }
        };
        tokio::time::timeout_at(until, waited).await.is_ok()
    }
}

impl Source for Guarded {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        self.inner.source.accepts(id)
    }

    fn domain_only(&self) -> bool {
        self.inner.source.domain_only()
    }

    fn calls_nobody(&self) -> bool {
        self.inner.source.calls_nobody()
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let id = Arc::new(id.clone());
            self.lookup_shared(&id).await.map(|a| a.to_vec())
        }
        .boxed()
    }

    fn lookup_shared<'a>(&'a self, id: &'a Arc<Identifier>) -> BoxFuture<'a, SharedAnswer> {
        self.shared_call(id, false, Ask::Lookup).boxed()
    }

    fn lookup_paced<'a>(
        &'a self,
        id: &'a Arc<Identifier>,
        pace: &'a Pace,
    ) -> BoxFuture<'a, SharedAnswer> {
        self.paced(id, pace, Ask::Lookup).boxed()
    }

    fn feign_shared<'a>(
        &'a self,
        id: &'a Arc<Identifier>,
        latency: Duration,
        pace: Option<&'a Pace>,
    ) -> BoxFuture<'a, SharedAnswer> {
        let ask = Ask::Feign(latency);
        match pace {
            Some(pace) => self.paced(id, pace, ask).boxed(),
            None => self.shared_call(id, false, ask).boxed(),
        }
    }

    fn call_bound(&self) -> Option<Duration> {
        Some(self.inner.cfg.call_timeout)
    }
}

impl Inner {
    /// One guarded upstream call. `admitted`: a paced call that took its cell of the budget already.
    async fn guarded_call(
        &self,
        id: &Identifier,
        admitted: bool,
        ask: Ask,
    ) -> Result<Vec<Observation>, SourceError> {
        let start = Instant::now();
        let deadline = start + self.cfg.call_timeout;
        if let Some(until) = self.paused_until(start) {
            return Err(SourceError::OverBudget {
                retry_after: Some(until - start),
            });
        }
        let admission = lock(&self.breaker)
            .admit(start)
            .ok_or(SourceError::NotAttempted("circuit open"))?;
        let ticket = Ticket {
            breaker: &self.breaker,
            admission: Some(admission),
        };
        if let Some(limiter) = self.limiter.as_ref().filter(|_| !admitted) {
            limiter.check_live().map_err(|wait| {
                tracing::debug!(source = %self.name, "Our own budget for the source is spent; the live call is refused.");
                SourceError::OverBudget {
                    retry_after: Some(wait),
                }
            })?;
        }
        // Usually a permit is free: take it without arming a timer.
        let _permit = match self.bulkhead.try_acquire() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout_at(deadline, self.bulkhead.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(SourceError::NotAttempted("source is shut down")),
                Err(_) => return Err(SourceError::Timeout),
            },
        };
        let called = Instant::now();
        let call = match ask {
            Ask::Lookup => self.source.lookup(id),
            // While the source's last real call failed, a feigned one fails as it did and takes as
            // long: during an outage, until the breaker opens, a miss and an excluded person read
            // the same (and both count towards opening it).
            Ask::Feign(latency) => match lock(&self.last_failure).clone() {
                Some((error, took)) => async move {
                    tokio::time::sleep(took).await;
                    Err(error)
                }
                .boxed(),
                None => self.source.feign(id, latency),
            },
        };
        let result = tokio::time::timeout_at(deadline, call)
            .await
            .unwrap_or(Err(SourceError::Timeout));
        let now = Instant::now();
        if let Ask::Lookup = ask {
            match &result {
                Ok(_) => *lock(&self.last_failure) = None,
                Err(e) if e.counts_against_source() => {
                    *lock(&self.last_failure) = Some((e.clone(), now - called));
                }
                Err(_) => {}
            }
        }
        if let Err(SourceError::RateLimited { retry_after }) = &result {
            let pause = retry_after
                .unwrap_or(self.cfg.breaker_cooldown)
                .min(MAX_PAUSE);
            *lock(&self.paused_until) = Some(now + pause);
            tracing::info!(source = %self.name, pause_s = pause.as_secs(), "The upstream asked us to slow down; pausing the source.");
        }
        let health = match &result {
            Err(SourceError::RateLimited { .. }) => Health::Alive,
            Err(e) if e.counts_against_source() => Health::Failing,
            _ => Health::Alive,
        };
        let (before, after) = ticket.record(health, now);
        if before != after {
            tracing::warn!(source = %self.name, from = ?before, to = ?after, "The circuit breaker changed state.");
        }
        result
    }

    fn paused_until(&self, now: Instant) -> Option<Instant> {
        lock(&self.paused_until).filter(|until| *until > now)
    }
}

/// An admitted breaker slot: recorded once, or handed back when dropped unrecorded.
struct Ticket<'a> {
    breaker: &'a Mutex<Breaker>,
    admission: Option<Admission>,
}

impl Ticket<'_> {
    /// Records the outcome; returns the breaker's state before and after.
    fn record(mut self, health: Health, now: Instant) -> (BreakerState, BreakerState) {
        let mut breaker = lock(self.breaker);
        let before = breaker.state(now);
        if let Some(a) = self.admission.take() {
            breaker.record(a, health, now);
        }
        (before, breaker.state(now))
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            lock(self.breaker).cancel(a);
        }
    }
}

/// Short critical sections only, never across an `.await`; a panic elsewhere does not poison them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
