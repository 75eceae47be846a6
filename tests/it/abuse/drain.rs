//! SIGTERM on the real binary: the lookups in progress are answered, new connections are refused,
//! and the process exits 0 — at the latest `server.drain_timeout_ms` after the signal.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::binary::Setup;
use crate::helpers::Upstreams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_lookups_in_progress_then_exits() {
    let s = Setup::new("").await;
    let email = "drain.me@example.com";
    s.up.slow_gravatar_hit(email, "Drain Me", Duration::from_millis(700));
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
