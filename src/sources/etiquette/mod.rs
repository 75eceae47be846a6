//! Upstream etiquette: a [`Guarded`] source wraps any [`Source`] and is itself one, so the fan-out does
//! not change.
//!
//! Layers, in call order:
//! 1. **cache + coalescing** ([`SourceCache`]): a fresh answer (hit or miss) is served from memory;
//!    concurrent identical lookups share one upstream call. The first caller drives that call itself
//!    (no task per call, and nothing shared is built unless someone joins); a caller that joins waits
//!    on a one-shot channel the call answers when it ends. When the first caller goes away before the
//!    end, the call is handed to a tokio task and finishes there, so a caller that leaves cannot
//!    cancel it, those who joined still get the answer, and it is still cached. Errors are shared
//!    with the callers waiting at the time, never cached.
//! 2. **pause**: after an upstream `429`/`Retry-After`, calls fail fast as `RateLimited` until then.
//! 3. **circuit breaker**: after `breaker_failures` consecutive retryable failures, calls fail fast
//!    with `NotAttempted("circuit open")` for `breaker_cooldown`; then one probe decides.
//! 4. **rate limit** (governor, see [`limit`]): over `rate_per_minute`, `RateLimited` without a call.
//! 5. **bulkhead**: at most `concurrency` calls in flight; others wait for a permit.
//! 6. the upstream call itself, bounded by `call_timeout`.
//!
//! The breaker is consulted before the rate limiter so that an open circuit spends no rate budget; a
//! probe refused by the limiter hands its slot back. All time is tokio time (`tokio::time::pause` in
//! tests).

mod breaker;
mod cache;
mod limit;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

pub use breaker::BreakerState;
pub use cache::{DEFAULT_MAX_BYTES, DEFAULT_TTL, SourceCache};

use self::breaker::{Admission, Breaker, Health};
use self::cache::{CacheKey, KeyHasher};
use self::limit::Limiter;
use super::registry::SourceConfig;
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
            concurrency,
            breaker_failures: Self::DEFAULT_BREAKER_FAILURES,
            breaker_cooldown: Self::DEFAULT_BREAKER_COOLDOWN,
            call_timeout,
        }
    }

    /// A built-in source's guard: its rate, concurrency and timeout.
    pub fn for_source(c: &SourceConfig) -> Self {
        Self::new(
            c.rate_per_minute,
            c.concurrency,
            Duration::from_millis(c.timeout_ms),
        )
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

/// A source behind the etiquette layers. See the module docs.
pub struct Guarded {
    inner: Arc<Inner>,
}

/// What a shared upstream call ends with; errors are shared by reference and rebuilt per caller.
type Outcome = Result<Arc<[Observation]>, Arc<SourceError>>;

/// An upstream call in flight, in the flight table under its cache key and the cache's generation
/// when it started (a call started before an invalidation is never joined after it).
#[derive(Default)]
struct Flight {
    /// Callers that joined after the call started; each is sent the outcome when it ends.
    joined: Vec<oneshot::Sender<Outcome>>,
}

/// A flight's place in the table.
type FlightKey = (CacheKey, u64);

struct Inner {
    source: Arc<dyn Source>,
    name: Arc<str>,
    cfg: GuardConfig,
    cache: SourceCache,
    flights: Mutex<HashMap<FlightKey, Flight, KeyHasher>>,
    limiter: Option<Limiter>,
    paused_until: Mutex<Option<Instant>>,
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
            limiter: Limiter::new(cfg.rate_per_minute, share),
            bulkhead: Semaphore::new(cfg.concurrency.max(1)),
            breaker: Mutex::new(Breaker::new(cfg.breaker_failures, cfg.breaker_cooldown)),
            paused_until: Mutex::new(None),
            flights: Mutex::new(HashMap::default()),
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
}

impl Source for Guarded {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        self.inner.source.accepts(id)
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
        async move {
            let key = self.inner.cache.key(&self.inner.name, id);
            if let Some(answer) = self.inner.cache.get(&key) {
                return Ok(answer);
            }
            let outcome = match Inner::join_or_start(&self.inner, key, id) {
                Joined::First(call) => call.await,
                Joined::Later(answer) => answer.await.unwrap_or_else(|_| {
                    Err(Arc::new(SourceError::NotAttempted(
                        "the shared call was abandoned",
                    )))
                }),
            };
            outcome.map_err(|e| duplicate(&e))
        }
        .boxed()
    }

    fn call_bound(&self) -> Option<Duration> {
        Some(self.inner.cfg.call_timeout)
    }
}

impl Inner {
    /// Joins the call in flight for `key`, or starts one.
    fn join_or_start(this: &Arc<Self>, key: CacheKey, id: &Arc<Identifier>) -> Joined {
        let flight = (key, this.cache.generation());
        let mut flights = lock(&this.flights);
        if let Some(f) = flights.get_mut(&flight) {
            let (tx, rx) = oneshot::channel();
            f.joined.push(tx);
            return Joined::Later(rx);
        }
        flights.insert(flight, Flight::default());
        drop(flights);
        let call = Self::fetch(Arc::clone(this), flight, Arc::clone(id)).boxed();
        Joined::First(Leading {
            call: Some(call),
            inner: Arc::clone(this),
            flight,
        })
    }

    /// The shared upstream call: runs the guards, caches a success, then leaves the flight table and
    /// sends the outcome to every caller that joined.
    async fn fetch(this: Arc<Self>, flight: FlightKey, id: Arc<Identifier>) -> Outcome {
        // A panicking source fails its callers' call, not their tasks.
        let result = AssertUnwindSafe(this.guarded_call(&id))
            .catch_unwind()
            .await
            .unwrap_or(Err(SourceError::NotAttempted("the source failed")));
        let outcome = match result {
            Ok(observations) => {
                let observations: Arc<[Observation]> = Arc::from(observations);
                let (key, generation) = flight;
                this.cache
                    .insert(key, &this.name, Arc::clone(&observations), generation);
                Ok(observations)
            }
            Err(e) => Err(Arc::new(e)),
        };
        for caller in this.leave(flight) {
            // A caller that went away no longer listens; that is all a failed send means.
            let _ = caller.send(outcome.clone());
        }
        outcome
    }

    /// Takes `flight` out of the table; returns the callers that joined it.
    fn leave(&self, flight: FlightKey) -> Vec<oneshot::Sender<Outcome>> {
        lock(&self.flights)
            .remove(&flight)
            .map(|f| f.joined)
            .unwrap_or_default()
    }

    async fn guarded_call(&self, id: &Identifier) -> Result<Vec<Observation>, SourceError> {
        let start = Instant::now();
        let deadline = start + self.cfg.call_timeout;
        if let Some(until) = self.paused_until(start) {
            return Err(SourceError::RateLimited {
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
        if let Some(limiter) = &self.limiter {
            limiter.check().map_err(|wait| SourceError::RateLimited {
                retry_after: Some(wait),
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
        let result = tokio::time::timeout_at(deadline, self.source.lookup(id))
            .await
            .unwrap_or(Err(SourceError::Timeout));
        let now = Instant::now();
        if let Err(SourceError::RateLimited { retry_after }) = &result {
            let pause = retry_after
                .unwrap_or(self.cfg.breaker_cooldown)
                .min(MAX_PAUSE);
            *lock(&self.paused_until) = Some(now + pause);
            tracing::info!(source = %self.name, pause_s = pause.as_secs(), "The upstream asked us to slow down; pausing the source.");
        }
        let health = match &result {
            Err(e) if e.retryable() => Health::Failing,
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

/// How a caller takes part in an upstream call: it drives the call, or it joined one in flight.
enum Joined {
    First(Leading),
    Later(oneshot::Receiver<Outcome>),
}

/// The first caller's hold on the call, which it polls itself. Dropped before the call ends (its
/// client went away), it hands the call to a tokio task, where it finishes, is cached and answers
/// those who joined.
struct Leading {
    call: Option<BoxFuture<'static, Outcome>>,
    inner: Arc<Inner>,
    flight: FlightKey,
}

impl Future for Leading {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(Err(Arc::new(SourceError::NotAttempted(
                "the call was already awaited",
            ))));
        };
        let outcome = std::task::ready!(call.poll_unpin(cx));
        self.call = None;
        Poll::Ready(outcome)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(call)),
            // No runtime to finish it: the call ends here, and so does the wait of whoever joined.
            Err(_) => drop(self.inner.leave(self.flight)),
        }
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

/// A copy of a shared error for one caller (`SourceError` is not `Clone`).
fn duplicate(e: &SourceError) -> SourceError {
    match e {
        SourceError::Timeout => SourceError::Timeout,
        SourceError::RateLimited { retry_after } => SourceError::RateLimited {
            retry_after: *retry_after,
        },
        SourceError::Status { status } => SourceError::Status { status: *status },
        SourceError::Malformed(m) => SourceError::Malformed(m.clone()),
        SourceError::Transport(m) => SourceError::Transport(m.clone()),
        SourceError::Objected => SourceError::Objected,
        SourceError::NotAttempted(why) => SourceError::NotAttempted(why),
    }
}
