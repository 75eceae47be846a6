//! Overload: more slow lookups than slots. Each is answered 200, or refused at once with 429/503 and
//! `Retry-After`; a streamed lookup holds its slot until its last event.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::rss_kib;
use crate::helpers::{Server, Upstreams};

const LOOKUPS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_concurrent_slow_lookups_are_answered_or_refused_with_retry_after() {
    let up = Upstreams::start().await;
    let email = "overload@example.com";
    up.slow_gravatar_hit(email, "Over Load", Duration::from_millis(300));
    // One client address sends all 600 at once: the per-address cap is raised so that the
    // in-flight limit is what sheds.
    let server = Server::start(&format!(
        "[server]\nmax_in_flight = 100\nmax_connections_per_client = 2000\n\
         [tenants]\nrate_per_minute = 100000\nburst = 100000\n{}",
        up.config()
    ))
    .await;
    let rss_before = rss_kib();

    let requests = (0..LOOKUPS).map(|_| {
        let req = server.post("/v1/lookup").json(&json!({ "email": email }));
        async move {
            let resp = req.send().await.expect("every request is answered");
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: serde_json::Value = resp.json().await.expect("a JSON body");
            (status, retry, body)
        }
    });
    let answers = futures::future::join_all(requests).await;

    let mut ok = 0;
    for (status, retry, body) in &answers {
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["found"], true, "{body}");
                assert_eq!(body["profile"]["name"]["value"], "Over Load");
            }
            429 | 503 => {
                assert!(
                    retry.is_some_and(|s| s >= 1),
                    "{status} without Retry-After"
                );
                assert!(body["type"].as_str().is_some(), "a problem body: {body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok >= 100, "at least the in-flight limit was served: {ok}");
    let rss_growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        rss_growth_mib < 256,
        "{LOOKUPS} lookups cost {rss_growth_mib} MiB"
    );
    let after = server.get("/v1/sources").send().await.expect("sources");
    assert_eq!(after.status(), 200, "every slot came back");
    eprintln!("overload: {ok} of {LOOKUPS} answered 200, the rest refused with Retry-After");
    server.stop().await;
}

#[tokio::test]
async fn a_streamed_lookup_holds_its_slot_until_its_last_event() {
    let up = Upstreams::start().await;
    let email = "stream.slot@example.com";
    up.slow_gravatar_hit(email, "Stream Slot", Duration::from_millis(800));
    let server = Server::start(&format!("[server]\nmax_in_flight = 1\n{}", up.config())).await;

    let resp = server
        .post("/v1/lookup")
        .header("accept", "application/x-ndjson")
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("stream starts");
    assert_eq!(resp.status(), 200);
    let during = server.get("/v1/sources").send().await.expect("sources");
    assert_eq!(during.status(), 503, "the stream still holds the only slot");

    let mut events = String::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        events.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    assert!(events.contains("\"type\":\"result\""), "{events}");
    let after = server.get("/v1/sources").send().await.expect("sources");
    assert_eq!(
        after.status(),
        200,
        "the slot came back with the last event"
    );
    server.stop().await;
}
