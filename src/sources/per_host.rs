//! Etiquette per host, for sources whose host a client chooses (a company's web site, a WebFinger
//! server).
//!
//! The guard around every source ([`super::etiquette`]) paces and protects the *source*: its pause,
//! breaker, rate and slots are shared by every lookup. A host that a client named must not be able to
//! use them against everyone else (answer `Retry-After: 3600` and pause the source, fail on purpose and
//! open its breaker, hang and hold its slots), and each such host must itself be asked politely. So
//! such a source keeps, per host:
//!
//! - a **pause** set by the host's own `429`/`Retry-After` (at most [`MAX_PAUSE`]);
//! - a **breaker**: [`FAILURES_TO_OPEN`] failures in a row (timeouts, resets, 5xx) stop calls to the
//!   host for [`COOL_DOWN`];
//! - a **rate**: [`RATE_PER_MINUTE`] calls a minute (burst [`BURST`]);
//! - a **concurrency cap**: [`CONCURRENCY`] calls at once; more wait, within the source's timeout.
//!
//! What the host does reaches the shared guard as [`SourceError::Host`], which reports the host's own
//! status (`rate_limited`, `timeout`, `error`) but neither pauses the source nor counts against its
//! breaker. State is kept for at most [`MAX_HOSTS`] hosts, each forgotten after [`IDLE`] unused.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::SourceError;
use super::etiquette::limit::TokioClock;

/// Calls a minute to one host.
pub const RATE_PER_MINUTE: u32 = 30;
/// Calls to one host in quick succession.
pub const BURST: u32 = 5;
/// Calls to one host at once.
pub const CONCURRENCY: usize = 4;
/// Failures in a row that stop calls to a host.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long a failing host is left alone.
pub const COOL_DOWN: Duration = Duration::from_secs(60);
/// The longest pause a host's `Retry-After` can impose on itself.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);
/// Hosts remembered at once.
pub const MAX_HOSTS: u64 = 10_000;
/// A host unused this long is forgotten.
pub const IDLE: Duration = Duration::from_secs(30 * 60);

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// The per-host state of one source.
pub struct PerHost {
    hosts: moka::sync::Cache<String, Arc<Host>>,
}

struct Host {
    slots: Semaphore,
    rate: Direct,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// No call before this instant (the host's `Retry-After`, or its breaker open).
    resting_until: Option<Instant>,
    failures: u32,
}

impl Default for PerHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PerHost {
    pub fn new() -> Self {
        Self {
            hosts: moka::sync::Cache::builder()
                .max_capacity(MAX_HOSTS)
                .time_to_idle(IDLE)
                .build(),
        }
    }

    /// Runs `call` against `host` if the host's pause, breaker, rate and slots allow it. The host's
    /// failures come back as [`SourceError::Host`]; a refusal before any request is
    /// [`SourceError::NotAttempted`] or a host-level `rate_limited`.
    pub async fn call<T>(
        &self,
        host: &str,
        call: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let state = self.hosts.get_with(host.to_ascii_lowercase(), || {
            let per_minute = NonZeroU32::new(RATE_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN);
            Arc::new(Host {
                slots: Semaphore::new(CONCURRENCY),
                rate: RateLimiter::direct_with_clock(
                    Quota::per_minute(per_minute).allow_burst(burst),
                    TokioClock,
                ),
                health: Mutex::default(),
            })
        });
        if state
            .lock()
            .resting_until
            .is_some_and(|until| until > Instant::now())
        {
            return Err(SourceError::NotAttempted(
                "the host asked for a pause or keeps failing",
            ));
        }
        if let Err(not_until) = state.rate.check() {
            let wait = not_until.wait_time_from(TokioClock.now());
            return Err(SourceError::Host(Box::new(SourceError::RateLimited {
                retry_after: Some(wait),
            })));
        }
        let _slot = state
            .slots
            .acquire()
            .await
            .map_err(|_| SourceError::NotAttempted("source is shut down"))?;
        let result = call.await;
        let now = Instant::now();
        let mut health = state.lock();
        match result {
            Ok(answer) => {
                health.failures = 0;
                Ok(answer)
            }
            Err(SourceError::RateLimited { retry_after }) => {
                let pause = retry_after.unwrap_or(COOL_DOWN).min(MAX_PAUSE);
                health.resting_until = Some(now + pause);
                Err(SourceError::Host(Box::new(SourceError::RateLimited {
                    retry_after,
                })))
            }
            Err(e) if e.retryable() => {
                health.failures += 1;
                if health.failures >= FAILURES_TO_OPEN {
                    health.failures = 0;
                    health.resting_until = Some(now + COOL_DOWN);
                }
                Err(SourceError::Host(Box::new(e)))
            }
            Err(e) => Err(e),
        }
    }
}

impl Host {
    /// Short critical sections only, never across an `.await`.
    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::sources::SourceStatus;

    fn counted(
        calls: &AtomicUsize,
        answer: Result<u8, SourceError>,
    ) -> impl Future<Output = Result<u8, SourceError>> + '_ {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { answer }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hosts_retry_after_rests_that_host_only_and_for_as_long_as_it_asked() {
        let hosts = PerHost::new();
        let calls = AtomicUsize::new(0);
        let slow_down = SourceError::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
        };

        let first = hosts
            .call("bad.example", counted(&calls, Err(slow_down)))
            .await;
        assert!(
            matches!(&first, Err(SourceError::Host(inner)) if matches!(**inner, SourceError::RateLimited { .. }))
        );
        assert_eq!(
            first.err().map(|e| e.status()),
            Some(SourceStatus::RateLimited)
        );
        // The host rests; the call is not made.
        let calls_before = calls.load(Ordering::SeqCst);
        let rested = hosts
            .call("BAD.example", async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            })
            .await;
        assert!(matches!(rested, Err(SourceError::NotAttempted(_))));
        assert_eq!(calls.load(Ordering::SeqCst), calls_before);
        // Another host is asked as usual.
        assert_eq!(
            hosts
                .call("good.example", counted(&calls, Ok(7)))
                .await
                .ok(),
            Some(7)
        );
        // After the pause, the host is asked again.
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(
            hosts.call("bad.example", counted(&calls, Ok(3))).await.ok(),
            Some(3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_open_the_hosts_breaker_and_a_success_resets_the_count() {
        let hosts = PerHost::new();
        let calls = AtomicUsize::new(0);
        // Each call a rate cell later, so that the host's rate never refuses one.
        let spaced = || tokio::time::advance(Duration::from_secs(u64::from(60 / RATE_PER_MINUTE)));
        for _ in 0..FAILURES_TO_OPEN - 1 {
            spaced().await;
            let r = hosts
                .call("flaky.example", counted(&calls, Err(SourceError::Timeout)))
                .await;
            assert!(matches!(r, Err(SourceError::Host(_))), "{r:?}");
        }
        spaced().await;
        assert!(
            hosts
                .call("flaky.example", counted(&calls, Ok(1)))
                .await
                .is_ok()
        );
        for _ in 0..FAILURES_TO_OPEN {
            spaced().await;
            let r = hosts
                .call("flaky.example", counted(&calls, Err(SourceError::Timeout)))
                .await;
            assert_eq!(r.err().map(|e| e.status()), Some(SourceStatus::Timeout));
        }
        spaced().await;
        let open = hosts.call("flaky.example", counted(&calls, Ok(1))).await;
        assert!(
            matches!(open, Err(SourceError::NotAttempted(_))),
            "{open:?}"
        );
        tokio::time::advance(COOL_DOWN).await;
        assert!(
            hosts
                .call("flaky.example", counted(&calls, Ok(1)))
                .await
                .is_ok()
        );
        // A non-retryable answer (a 404, a malformed page) is the host's answer, not a failure.
        spaced().await;
        let r = hosts
            .call(
                "flaky.example",
                counted(&calls, Err(SourceError::Status { status: 404 })),
            )
            .await;
        assert!(matches!(r, Err(SourceError::Status { status: 404 })));
    }

    #[tokio::test(start_paused = true)]
    async fn one_host_gets_its_rate_and_no_more_while_others_are_unaffected() {
        let hosts = PerHost::new();
        let calls = AtomicUsize::new(0);
        let mut answered = 0;
        for _ in 0..BURST + 3 {
            if hosts
                .call("busy.example", counted(&calls, Ok(1)))
                .await
                .is_ok()
            {
                answered += 1;
            }
        }
        assert_eq!(answered, BURST);
        let refused = hosts.call("busy.example", counted(&calls, Ok(1))).await;
        assert_eq!(
            refused.err().map(|e| e.status()),
            Some(SourceStatus::RateLimited)
        );
        assert!(
            hosts
                .call("quiet.example", counted(&calls, Ok(1)))
                .await
                .is_ok()
        );
        // The rate refills: one call every 60 / RATE_PER_MINUTE seconds.
        tokio::time::advance(Duration::from_secs(u64::from(60 / RATE_PER_MINUTE) + 1)).await;
        assert!(
            hosts
                .call("busy.example", counted(&calls, Ok(1)))
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_host_holds_at_most_its_slots() {
        let hosts = Arc::new(PerHost::new());
        let (release, released) = tokio::sync::watch::channel(false);
        let running = Arc::new(AtomicUsize::new(0));
        let mut held = Vec::new();
        // More callers than slots, within the host's burst so that its rate refuses none.
        let callers = usize::try_from(BURST).unwrap_or(0);
        assert!(callers > CONCURRENCY);
        for _ in 0..callers {
            let (hosts, running, mut released) = (hosts.clone(), running.clone(), released.clone());
            held.push(tokio::spawn(async move {
                hosts
                    .call("slow.example", async {
                        running.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Ok(1)
                    })
                    .await
            }));
        }
        // Let every task run as far as it can.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(running.load(Ordering::SeqCst), CONCURRENCY);
        let calls = AtomicUsize::new(0);
        assert!(
            hosts
                .call("other.example", counted(&calls, Ok(2)))
                .await
                .is_ok()
        );
        let _ = release.send(true);
        for h in held {
            assert!(matches!(h.await, Ok(Ok(1))));
        }
        assert_eq!(running.load(Ordering::SeqCst), callers);
    }
}
