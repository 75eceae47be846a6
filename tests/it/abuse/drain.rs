//! SIGTERM on the real binary: the lookups in progress are answered, new connections are refused,
//! and the process exits 0 — at the latest `server.drain_timeout_ms` after the signal.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::binary::Setup;
use crate::helpers::{Latch, Upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_lookups_in_progress_then_exits() {
    // The upstream is held for as long as the drain takes to begin: no timeout cuts it first.
    let s = Setup::with_source_timeout(
        "[lookup]\ndefault_timeout_ms = 60000\nmax_timeout_ms = 60000\n",
        60_000,
    )
    .await;
    let email = "drain.me@example.com";
    // Gravatar answers only once the test has seen the drain begin, whatever the machine's load.
    let answer = Latch::new();
    let reply = s.up.gravatar_profile(email, "Drain Me", "Acme", None);
    s.up.gravatar
        .on(&Upstreams::gravatar_path(email), reply.held(answer.clone()));
    let mut inst = s.start().await.expect("starts");
    let lookup = {
        let req = s
            .http
            .post(format!("{}/v1/lookup", inst.url))
            .bearer_auth(&s.tenant_key)
            .json(&json!({ "email": email }));
        tokio::spawn(req.send())
    };
    let path = Upstreams::gravatar_path(email);
    super::wait_until("the lookup to reach the upstream", || {
        s.up.gravatar.hits(&path) == 1
    })
    .await;

    let signalled = Instant::now();
    inst.terminate();
    // Draining: a new connection is refused while the lookup is still held upstream.
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match probe.get(format!("{}/healthz", inst.url)).send().await {
            Err(e) if e.is_connect() => break,
            other => assert!(
                Instant::now() < deadline,
                "still accepting connections after SIGTERM: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !lookup.is_finished(),
        "the lookup ended before its upstream answered"
    );
    answer.open();
    let answered = lookup
        .await
        .expect("task")
        .expect("answered during the drain");
    assert_eq!(answered.status(), 200);
    let body: serde_json::Value = answered.json().await.expect("json");
    assert_eq!(body["found"], true, "{body}");
    let code = inst.wait_exit(Duration::from_secs(30)).await;
    let drain_ms = signalled.elapsed().as_millis();

    assert_eq!(code, Some(Some(0)), "exits 0 after the drain");
    let late = s.http.get(format!("{}/healthz", inst.url)).send().await;
    assert!(late.is_err(), "nothing listens any more");
    assert!(inst.stderr().contains("Every connection is closed."));
    eprintln!(
        "drain: the in-progress lookup was answered and the process exited {drain_ms} ms after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_what_outlives_the_drain_deadline() {
    let s = Setup::new("drain_timeout_ms = 300\n[lookup]\nmax_timeout_ms = 15000\n").await;
    let email = "outlives.drain@example.com";
    s.up.slow_gravatar_hit(email, "Out Lives", Duration::from_secs(10));
    let mut inst = s.start().await.expect("starts");
    let lookup = {
        let req = s
            .http
            .post(format!("{}/v1/lookup", inst.url))
            .bearer_auth(&s.tenant_key)
            .json(&json!({ "email": email, "timeout_ms": 15000 }));
        tokio::spawn(req.send())
    };
    let path = Upstreams::gravatar_path(email);
    super::wait_until("the lookup to reach the upstream", || {
        s.up.gravatar.hits(&path) == 1
    })
    .await;

    let signalled = Instant::now();
    inst.terminate();
    let code = inst.wait_exit(Duration::from_secs(8)).await;
    let took = signalled.elapsed();

    assert_eq!(code, Some(Some(0)), "exits 0 at the deadline");
    assert!(
        took < Duration::from_secs(8),
        "long before the 10 s upstream: {took:?}"
    );
    assert!(
        lookup.await.expect("task").is_err(),
        "its connection was closed"
    );
    assert!(inst.stderr().contains("The drain deadline passed"));
}
