//! The etiquette layers against an in-memory source that counts calls and fails or waits on command.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use super::*;
use crate::domain::{Email, Identifier};
use crate::profile::{Field, Observation};

type Answer = Result<Vec<Observation>, SourceError>;

/// Answers from a script (then hits), optionally after a delay or once a gate opens.
struct Fake {
    calls: AtomicUsize,
    script: Mutex<VecDeque<Answer>>,
    delay: Duration,
    gate: Option<Semaphore>,
}

impl Fake {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
            delay: Duration::ZERO,
            gate: None,
        }
    }

    fn gated() -> Self {
        Self {
            gate: Some(Semaphore::new(0)),
            ..Self::new()
        }
    }

    fn then(self, answer: Answer) -> Self {
        self.script.lock().expect("test lock").push_back(answer);
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn open_gate(&self) {
        if let Some(g) = &self.gate {
            g.add_permits(1000);
        }
    }
}

fn hit() -> Vec<Observation> {
    vec![Observation::new(Field::FullName, "Ada Lovelace")]
}

impl Source for Fake {
    fn name(&self) -> &str {
        "fake"
    }

    fn accepts(&self, _id: &Identifier) -> bool {
        true
    }

    fn lookup<'a>(&'a self, _id: &'a Identifier) -> BoxFuture<'a, Answer> {
        async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(g) = &self.gate {
                let _open = g.acquire().await;
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let next = self.script.lock().expect("test lock").pop_front();
            next.unwrap_or_else(|| Ok(hit()))
        }
        .boxed()
    }
}

fn email(s: &str) -> Identifier {
    Identifier::Email(Email::parse(s).expect("test email"))
}

fn config() -> GuardConfig {
    GuardConfig {
        rate_per_minute: 60_000,
        batch_share: DEFAULT_BATCH_SHARE,
        concurrency: 8,
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(30),
        call_timeout: Duration::from_secs(3600),
    }
}

fn guard(fake: &Arc<Fake>, cfg: GuardConfig) -> Arc<Guarded> {
    let source: Arc<dyn Source> = Arc::clone(fake) as Arc<dyn Source>;
    Arc::new(Guarded::new(
        source,
        cfg,
        SourceCache::new(1000, Duration::from_secs(60)),
    ))
}

/// Lets spawned tasks run until `cond` holds, without sleeping.
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

fn spawn_lookup(g: &Arc<Guarded>, id: &Identifier) -> tokio::task::JoinHandle<Answer> {
    let (g, id) = (Arc::clone(g), id.clone());
    tokio::spawn(async move { g.lookup(&id).await })
}

/// Lets `callers` settle on the gated call, opens the gate, and checks that each got the hit and that
/// the upstream was called once.
async fn all_get_the_one_call_s_hit(fake: &Fake, callers: Vec<tokio::task::JoinHandle<Answer>>) {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    fake.open_gate();

    for c in callers {
        assert_eq!(c.await.expect("caller ran").expect("hit"), hit());
    }
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn eight_concurrent_identical_lookups_make_one_upstream_call() {
    let fake = Arc::new(Fake::gated());
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    let callers: Vec<_> = (0..8).map(|_| spawn_lookup(&g, &id)).collect();
    until(|| fake.calls() == 1).await;
    all_get_the_one_call_s_hit(&fake, callers).await;
}

#[tokio::test]
async fn a_dropped_first_caller_does_not_cancel_the_shared_call() {
    let fake = Arc::new(Fake::gated());
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    let first = spawn_lookup(&g, &id);
    until(|| fake.calls() == 1).await;
    first.abort();
    assert!(first.await.expect_err("aborted").is_cancelled());
    let others: Vec<_> = (0..7).map(|_| spawn_lookup(&g, &id)).collect();
    all_get_the_one_call_s_hit(&fake, others).await;
}

#[tokio::test]
async fn callers_that_joined_get_the_answer_after_the_first_caller_leaves() {
    let fake = Arc::new(Fake::gated());
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    let first = spawn_lookup(&g, &id);
    until(|| fake.calls() == 1).await;
    let joined: Vec<_> = (0..3).map(|_| spawn_lookup(&g, &id)).collect();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    first.abort();
    assert!(first.await.expect_err("aborted").is_cancelled());

    all_get_the_one_call_s_hit(&fake, joined).await;
}

#[tokio::test]
async fn an_answer_finished_after_every_caller_left_is_still_cached() {
    let fake = Arc::new(Fake::gated());
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    let only = spawn_lookup(&g, &id);
    until(|| fake.calls() == 1).await;
    only.abort();
    fake.open_gate();
    until(|| g.state().cache_entries == 1).await;

    assert_eq!(g.lookup(&id).await.expect("cached hit"), hit());
    assert_eq!(fake.calls(), 1);
}

/// A source with a bug: every call panics.
struct Panicking;

impl Source for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }

    fn accepts(&self, _id: &Identifier) -> bool {
        true
    }

    fn lookup<'a>(&'a self, _id: &'a Identifier) -> BoxFuture<'a, Answer> {
        async { panic!("the source fails on purpose") }.boxed()
    }
}

#[tokio::test]
async fn a_panicking_source_fails_the_call_not_the_caller() {
    let g = Guarded::new(
        Arc::new(Panicking),
        config(),
        SourceCache::new(1000, Duration::from_secs(60)),
    );
    let id = email("ada@example.com");

    let first = g.lookup(&id).await;
    let second = g.lookup(&id).await;

    assert!(
        matches!(first, Err(SourceError::NotAttempted(_))),
        "{first:?}"
    );
    assert!(
        matches!(second, Err(SourceError::NotAttempted(_))),
        "{second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hits_and_misses_are_cached_under_the_canonical_identifier() {
    let fake = Arc::new(Fake::new().then(Ok(Vec::new())));
    let g = guard(&fake, config());

    let miss = g.lookup(&email("Nobody@Example.com")).await.expect("miss");
    let again = g.lookup(&email("nobody@example.COM ")).await.expect("miss");
    let other = g.lookup(&email("ada@example.com")).await.expect("hit");
    let other_again = g.lookup(&email("ada@example.com")).await.expect("hit");

    assert!(miss.is_empty() && again.is_empty());
    assert_eq!(other, other_again);
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_cached() {
    let fake = Arc::new(Fake::new().then(Err(SourceError::Status { status: 500 })));
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    let first = g.lookup(&id).await;
    let second = g.lookup(&id).await;

    assert!(matches!(first, Err(SourceError::Status { status: 500 })));
    assert_eq!(second.expect("retried"), hit());
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn cached_answers_expire_after_the_ttl() {
    let fake = Arc::new(Fake::new());
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    g.lookup(&id).await.expect("hit");
    tokio::time::advance(Duration::from_secs(59)).await;
    g.lookup(&id).await.expect("cached");
    assert_eq!(fake.calls(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    g.lookup(&id).await.expect("fetched again");

    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidate_all_forgets_cached_answers() {
    let fake = Arc::new(Fake::new());
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    g.lookup(&id).await.expect("hit");
    assert_eq!(g.state().cache_entries, 1);
    g.invalidate_all();
    assert_eq!(g.state().cache_entries, 0);
    g.lookup(&id).await.expect("fetched again");

    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn an_answer_in_flight_during_invalidation_is_not_served_later() {
    let fake = Arc::new(Fake::gated());
    let g = guard(&fake, config());
    let id = email("ada@example.com");

    let before = spawn_lookup(&g, &id);
    until(|| fake.calls() == 1).await;
    g.invalidate_all();
    let after = spawn_lookup(&g, &id);
    until(|| fake.calls() == 2).await;
    fake.open_gate();
    before.await.expect("ran").expect("hit");
    after.await.expect("ran").expect("hit");
    g.lookup(&id).await.expect("cached from the second call");

    assert_eq!(
        fake.calls(),
        2,
        "the post-invalidation caller made its own call"
    );
}

#[tokio::test(start_paused = true)]
async fn the_call_past_the_burst_is_rate_limited_without_touching_the_upstream() {
    // 60 per minute: a burst of 10 (ten seconds' share), one more cell every second.
    let fake = Arc::new(Fake::new());
    let g = guard(
        &fake,
        GuardConfig {
            rate_per_minute: 60,
            ..config()
        },
    );

    for i in 0..10 {
        g.lookup(&email(&format!("p{i}@example.com")))
            .await
            .expect("within the burst");
    }
    let over = g.lookup(&email("p10@example.com")).await;
    assert!(
        matches!(over, Err(SourceError::OverBudget { retry_after: Some(d) }) if d <= Duration::from_secs(1)),
        "{over:?}"
    );
    assert_eq!(fake.calls(), 10);

    tokio::time::advance(Duration::from_secs(1)).await;
    g.lookup(&email("p10@example.com"))
        .await
        .expect("a cell was replenished");
    assert_eq!(fake.calls(), 11);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_retry_after_pauses_the_source() {
    let fake = Arc::new(Fake::new().then(Err(SourceError::RateLimited {
        retry_after: Some(Duration::from_secs(20)),
    })));
    let g = guard(&fake, config());

    let first = g.lookup(&email("a@example.com")).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    let during = g.lookup(&email("b@example.com")).await;

    assert!(matches!(first, Err(SourceError::RateLimited { .. })));
    assert!(
        matches!(during, Err(SourceError::OverBudget { retry_after: Some(d) }) if d == Duration::from_secs(15)),
        "{during:?}"
    );
    assert_eq!(fake.calls(), 1);
    assert!(g.state().paused_until.is_some());

    tokio::time::advance(Duration::from_secs(15)).await;
    g.lookup(&email("b@example.com")).await.expect("resumed");
    assert_eq!(fake.calls(), 2);
    assert_eq!(g.state().paused_until, None);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_consecutive_retryable_failures() {
    let fake = Arc::new(
        Fake::new()
            .then(Err(SourceError::Transport("connection failed".into())))
            .then(Err(SourceError::Timeout))
            .then(Err(SourceError::Status { status: 503 })),
    );
    let g = guard(&fake, config());

    for i in 0..3 {
        let r = g.lookup(&email(&format!("p{i}@example.com"))).await;
        assert!(r.is_err());
    }
    let refused = g.lookup(&email("p3@example.com")).await;

    assert!(
        matches!(refused, Err(SourceError::NotAttempted("circuit open"))),
        "{refused:?}"
    );
    assert_eq!(fake.calls(), 3);
    assert_eq!(g.state().breaker, BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_answers_do_not_open_the_breaker() {
    let fake = Arc::new(
        Fake::new()
            .then(Err(SourceError::Malformed("not JSON".into())))
            .then(Err(SourceError::Objected))
            .then(Err(SourceError::Status { status: 400 })),
    );
    let g = guard(&fake, config());

    for i in 0..4 {
        let _ = g.lookup(&email(&format!("p{i}@example.com"))).await;
    }

    assert_eq!(fake.calls(), 4);
    assert_eq!(g.state().breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_and_its_success_closes() {
    let mut fake = Fake::new();
    for _ in 0..3 {
        fake = fake.then(Err(SourceError::Timeout));
    }
    fake.delay = Duration::from_secs(1);
    let fake = Arc::new(fake);
    let g = guard(&fake, config());
    for i in 0..3 {
        let _ = g.lookup(&email(&format!("p{i}@example.com"))).await;
    }
    assert_eq!(g.state().breaker, BreakerState::Open);

    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(g.state().breaker, BreakerState::HalfOpen);
    let probe = spawn_lookup(&g, &email("probe@example.com"));
    until(|| fake.calls() == 4).await;
    let second = g.lookup(&email("other@example.com")).await;

    assert!(matches!(
        second,
        Err(SourceError::NotAttempted("circuit open"))
    ));
    assert_eq!(probe.await.expect("ran").expect("probe succeeded"), hit());
    assert_eq!(g.state().breaker, BreakerState::Closed);
    g.lookup(&email("other@example.com"))
        .await
        .expect("closed again");
    assert_eq!(fake.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_the_circuit() {
    let mut fake = Fake::new();
    for _ in 0..4 {
        fake = fake.then(Err(SourceError::Transport("connection failed".into())));
    }
    let fake = Arc::new(fake);
    let g = guard(&fake, config());
    for i in 0..3 {
        let _ = g.lookup(&email(&format!("p{i}@example.com"))).await;
    }

    tokio::time::advance(Duration::from_secs(30)).await;
    let probe = g.lookup(&email("probe@example.com")).await;
    let after = g.lookup(&email("after@example.com")).await;

    assert!(matches!(probe, Err(SourceError::Transport(_))));
    assert!(matches!(
        after,
        Err(SourceError::NotAttempted("circuit open"))
    ));
    assert_eq!(g.state().breaker, BreakerState::Open);
    assert_eq!(fake.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_bounds_calls_in_flight() {
    let mut fake = Fake::new();
    fake.delay = Duration::from_secs(1);
    let fake = Arc::new(fake);
    let g = guard(
        &fake,
        GuardConfig {
            concurrency: 2,
            ..config()
        },
    );

    let callers: Vec<_> = (0..5)
        .map(|i| spawn_lookup(&g, &email(&format!("p{i}@example.com"))))
        .collect();
    until(|| fake.calls() == 2).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.calls(), 2, "three callers wait for a permit");

    for c in callers {
        c.await.expect("ran").expect("hit");
    }
    assert_eq!(fake.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_outlives_its_deadline_times_out_and_counts_as_a_failure() {
    let mut fake = Fake::new();
    fake.delay = Duration::from_secs(10);
    let fake = Arc::new(fake);
    let g = guard(
        &fake,
        GuardConfig {
            call_timeout: Duration::from_secs(2),
            breaker_failures: 1,
            ..config()
        },
    );

    let r = g.lookup(&email("slow@example.com")).await;

    assert!(matches!(r, Err(SourceError::Timeout)), "{r:?}");
    assert_eq!(g.state().breaker, BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_client_chosen_hosts_retry_after_and_failures_neither_pause_nor_trip_the_source() {
    let host = |e: SourceError| Err(SourceError::Host(Box::new(e)));
    let mut fake = Fake::new().then(host(SourceError::RateLimited {
        retry_after: Some(Duration::from_secs(3600)),
    }));
    for _ in 0..config().breaker_failures + 1 {
        fake = fake.then(host(SourceError::Timeout));
    }
    let fake = Arc::new(fake);
    let g = guard(&fake, config());

    let first = g.lookup(&email("a@bad.example")).await;
    assert_eq!(
        first.err().map(|e| e.status()),
        Some(crate::sources::SourceStatus::RateLimited),
        "the host's own answer is reported as it was"
    );
    for i in 0..config().breaker_failures + 1 {
        let r = g.lookup(&email(&format!("f{i}@flaky.example"))).await;
        assert_eq!(
            r.err().map(|e| e.status()),
            Some(crate::sources::SourceStatus::Timeout)
        );
    }
    let other = g.lookup(&email("b@good.example")).await;

    assert!(other.is_ok(), "{other:?}");
    assert_eq!(
        fake.calls(),
        usize::try_from(config().breaker_failures).unwrap_or(0) + 3,
        "every call was made: no pause, no open breaker"
    );
    assert_eq!(g.state().breaker, BreakerState::Closed);
    assert_eq!(g.state().paused_until, None);
}

/// A paced lookup of `id` for a row of `batch`.
async fn paced(g: &Guarded, batch: &Arc<BatchPace>, id: &Identifier) -> SharedAnswer {
    let row = batch.row();
    let id = Arc::new(id.clone());
    g.lookup_paced(&id, &row).await
}

#[tokio::test(start_paused = true)]
async fn paced_calls_wait_for_the_batch_part_of_the_budget_instead_of_failing() {
    // 60 a minute, 0.8 for batches: 48 a minute (one every 1.25 s), a burst of 3.
    let fake = Arc::new(Fake::new());
    let g = guard(
        &fake,
        GuardConfig {
            rate_per_minute: 60,
            ..config()
        },
    );
    let batch = Arc::new(BatchPace::default());
    let started = Instant::now();

    for i in 0..10 {
        paced(&g, &batch, &email(&format!("p{i}@example.com")))
            .await
            .expect("a paced call waits rather than fails");
    }

    assert_eq!(fake.calls(), 10);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(7 * 1250),
        "three at once, then one every 1.25 s"
    );
    assert_eq!(batch.calls().get("fake"), Some(&10));
    assert_eq!(g.budget().map(|b| b.batch_per_minute), Some(48));
}

#[tokio::test(start_paused = true)]
async fn batches_leave_live_lookups_their_share() {
    let fake = Arc::new(Fake::new());
    let g = guard(
        &fake,
        GuardConfig {
            rate_per_minute: 60,
            ..config()
        },
    );
    let batch = Arc::new(BatchPace::default());
    // A batch that would take every cell it could for a minute.
    let busy = {
        let (g, batch) = (Arc::clone(&g), Arc::clone(&batch));
        tokio::spawn(async move {
            for i in 0..1000 {
                let _ = paced(&g, &batch, &email(&format!("b{i}@example.com"))).await;
            }
        })
    };
    let mut live_ok = 0;
    for i in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if g.lookup(&email(&format!("l{i}@example.com"))).await.is_ok() {
            live_ok += 1;
        }
    }
    busy.abort();

    // A live call a second for a minute: the batch part is 48 a minute, so at least 12 of the
    // 60 cells of that minute (and the burst's ten) were the live lookups'.
    assert!(live_ok >= 12, "live lookups got {live_ok} of 60");
    let batch_calls = batch.calls().get("fake").copied().unwrap_or(0);
    assert!(
        batch_calls <= 3 + 48 + 1,
        "batches took {batch_calls} calls in a minute"
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_429_pauses_paced_calls_and_the_call_is_made_again_after_it() {
    let fake = Arc::new(Fake::new().then(Err(SourceError::RateLimited {
        retry_after: Some(Duration::from_secs(2)),
    })));
    let g = guard(&fake, config());
    let batch = Arc::new(BatchPace::default());
    let started = Instant::now();

    let answer = paced(&g, &batch, &email("a@example.com")).await;

    assert!(answer.is_ok(), "{answer:?}");
    assert_eq!(fake.calls(), 2, "refused once, made again");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a jitter of at most a tenth"
    );
    assert_eq!(batch.upstream_limited(), 1);
    assert_eq!(
        g.state().breaker,
        BreakerState::Closed,
        "a 429 is not a failure"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paced_call_gives_up_after_its_retries() {
    let refusal = || {
        Err(SourceError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        })
    };
    let mut fake = Fake::new();
    for _ in 0..10 {
        fake = fake.then(refusal());
    }
    let fake = Arc::new(fake);
    let g = guard(&fake, config());
    let batch = Arc::new(BatchPace::new(2, Duration::from_secs(600)));

    let answer = paced(&g, &batch, &email("a@example.com")).await;

    assert!(
        matches!(answer, Err(SourceError::RateLimited { .. })),
        "{answer:?}"
    );
    assert_eq!(fake.calls(), 3, "the call and two retries");
}

#[tokio::test(start_paused = true)]
async fn the_budget_shown_falls_with_live_calls_and_refills_with_time() {
    let fake = Arc::new(Fake::new());
    let g = guard(
        &fake,
        GuardConfig {
            rate_per_minute: 60,
            ..config()
        },
    );
    let full = g.budget().expect("a limited source");
    assert_eq!((full.per_minute, full.burst, full.remaining), (60, 10, 10));

    for i in 0..4 {
        g.lookup(&email(&format!("p{i}@example.com")))
            .await
            .expect("within the burst");
    }
    assert_eq!(g.budget().map(|b| b.remaining), Some(6));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(g.budget().map(|b| b.remaining), Some(8));
}

/// A call feigned for an excluded person (see the pipeline's mirror) passes the guard as a miss's
/// would: while the last real call failed it fails the same way, as long, and counts towards the
/// breaker; once a real call succeeds it is a miss, cached as one; it never reaches the source.
#[tokio::test(start_paused = true)]
async fn a_feigned_call_fails_as_the_last_real_call_did_and_is_cached_as_a_miss() {
    let fake = Arc::new(
        Fake::new()
            .then(Err(SourceError::Status { status: 503 }))
            .then(Ok(Vec::new())),
    );
    let g = guard(&fake, config());
    let latency = Duration::from_millis(40);
    let feign = |e: &'static str| {
        let g = Arc::clone(&g);
        async move {
            let started = Instant::now();
            let answer = g.feign_shared(&Arc::new(email(e)), latency, None).await;
            (
                answer.map(|a| a.len()).map_err(|e| e.status()),
                started.elapsed(),
            )
        }
    };

    let failed = g.lookup(&email("down@x.example")).await;
    assert_eq!(
        failed.map_err(|e| e.status()).err(),
        Some(crate::sources::SourceStatus::Error)
    );
    let (answer, _) = feign("gone1@x.example").await;
    assert_eq!(
        answer,
        Err(crate::sources::SourceStatus::Error),
        "an outage reads the same"
    );
    assert_eq!(g.state().cache_entries, 0, "a failure is not cached");

    assert_eq!(
        g.lookup(&email("back@x.example"))
            .await
            .map(|a| a.len())
            .ok(),
        Some(0)
    );
    let (answer, took) = feign("gone2@x.example").await;
    assert_eq!(answer, Ok(0), "a miss once the source answers again");
    assert!(took >= latency, "{took:?}");
    assert_eq!(g.state().cache_entries, 2, "cached as a miss is");
    let (answer, again) = feign("gone2@x.example").await;
    assert_eq!(answer, Ok(0));
    assert!(
        again >= took,
        "replayed from the cache no faster: {again:?}"
    );
    assert_eq!(g.state().cache_entries, 2);
    assert_eq!(
        fake.calls(),
        2,
        "the source was asked by the real lookups only"
    );

    // Feigned failures count towards the breaker as a miss's would.
    let fake = Arc::new(Fake::new().then(Err(SourceError::Timeout)));
    let g = guard(&fake, config());
    assert!(g.lookup(&email("slow@x.example")).await.is_err());
    for i in 1..config().breaker_failures {
        let id = Arc::new(email(&format!("gone{i}@y.example")));
        let r = g.feign_shared(&id, latency, None).await;
        assert_eq!(
            r.err().map(|e| e.status()),
            Some(crate::sources::SourceStatus::Timeout)
        );
    }
    assert_eq!(g.state().breaker, BreakerState::Open);
    let id = Arc::new(email("later@y.example"));
    let r = g.feign_shared(&id, latency, None).await;
    assert_eq!(
        r.err().map(|e| e.status()),
        Some(crate::sources::SourceStatus::Skipped),
        "refused as a miss would be"
    );
    assert_eq!(fake.calls(), 1);
}
