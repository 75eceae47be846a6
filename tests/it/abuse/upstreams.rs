//! Upstreams that fail the ways real services fail, all in one lookup: one hangs, one resets the
//! connection, one trickles its body, one sends 200 MB, one sends bytes that are not UTF-8, one
//! answers 429 with a long `Retry-After` (Keybase and WebFinger asked about the accounts the working
//! source links). The source that works still answers, within the deadline,
//! and the 200 MB body costs neither the memory nor the time to read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tokio::net::TcpListener;

use super::rss_kib;
use crate::helpers::{Reply, Server, Upstreams, closing_upstream};
use crate::optout::statuses;

/// Serves `app` on a loopback port; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Reads requests and never answers, holding every connection open.
async fn hanging_upstream(held: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            held.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(120)).await;
                drop(stream);
            });
        }
    });
    url
}

/// 200 with the content type OpenPGP key servers send, then one byte every 200 ms.
async fn trickling_upstream() -> String {
    serve(axum::Router::new().fallback(|| async {
        let bytes = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (n < 600).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b" ")), n + 1))
        });
        Response::builder()
            .header("content-type", "application/pgp-keys")
            .body(Body::from_stream(bytes))
            .unwrap_or_else(|_| ().into_response())
    }))
    .await
}

/// 200 MB of JSON-looking bytes in 64 KiB chunks, no length declared; counts what was taken.
async fn huge_upstream(sent: Arc<AtomicU64>) -> String {
    const TOTAL: u64 = 200 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    serve(axum::Router::new().fallback(move || {
        let sent = sent.clone();
        async move {
            let chunk = Bytes::from(vec![b'['; CHUNK]);
            let bytes = futures::stream::unfold(0u64, move |at| {
                let (chunk, sent) = (chunk.clone(), sent.clone());
                async move {
                    (at < TOTAL).then(|| {
                        sent.fetch_add(CHUNK as u64, Ordering::SeqCst);
                        (Ok::<_, std::io::Error>(chunk), at + CHUNK as u64)
                    })
                }
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(bytes))
                .unwrap_or_else(|_| ().into_response())
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_upstream_at_once_leaves_the_working_one_answering_within_the_deadline() {
    let up = Upstreams::start().await;
    let email = "ada@broken.example";
    // Gravatar works, and links a GitHub and a Mastodon account, which Keybase and WebFinger are
    // then asked about.
    up.gravatar.on(
        &Upstreams::gravatar_path(email),
        Reply::json(json!({
            "hash": "0", "display_name": "Ada Working", "profile_url": "https://gravatar.com/ada",
            "avatar_url": "https://0.gravatar.com/avatar/0", "location": "London, UK",
            "job_title": "Engineer", "company": "Acme",
            "verified_accounts": [
                {"service_type": "github", "service_label": "GitHub", "url": "https://github.com/adaw", "is_hidden": false},
                {"service_type": "mastodon", "service_label": "Mastodon", "url": "https://mastodon.social/@adaw", "is_hidden": false}
            ]
        })),
    );
    let held = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let hanging = hanging_upstream(held.clone()).await;
    let resetting = closing_upstream().await;
    let trickling = trickling_upstream().await;
    let huge = huge_upstream(sent.clone()).await;
    let not_utf8 = serve(axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            b"\xff\xfe{\"them\": \"\xc3\x28\"}".to_vec(),
        )
    }))
    .await;
    let slow_down = serve(axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "3600"), ("content-type", "text/html")],
            "<h1>Too Many Requests</h1>",
        )
    }))
    .await;
    let deadline_ms = 2_500;
    let server = Server::start(&format!(
        "[lookup]\ndefault_timeout_ms = {deadline_ms}\n\
         [sources.gravatar]\nbase_url = \"{}\"\ntimeout_ms = 2000\n\
         [sources.github]\nbase_url = \"{resetting}\"\ntimeout_ms = 2000\n\
         [sources.openpgp]\nbase_url = \"{trickling}\"\ntimeout_ms = 1000\n\
         [sources.rdap]\nbase_url = \"{huge}\"\ntimeout_ms = 2000\n\
         [sources.keybase]\nbase_url = \"{not_utf8}\"\ntimeout_ms = 2000\n\
         [sources.website]\nbase_url = \"{slow_down}/{{domain}}\"\ntimeout_ms = 2000\n\
         [sources.webfinger]\nbase_url = \"{hanging}\"\ntimeout_ms = 1000\n",
        up.gravatar.url
    ))
    .await;
    let rss_before = rss_kib();

    let (status, answer) = server.lookup(json!({ "email": email })).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["found"], true, "{answer}");
    assert_eq!(answer["profile"]["name"]["value"], "Ada Working");
    let took = answer["took_ms"].as_u64().expect("took_ms");
    assert!(took <= deadline_ms + 250, "answered after {took} ms");
    let got = statuses(&answer);
    let status_of = |name: &str| {
        got.iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_str())
            .unwrap_or("absent")
    };
    assert_eq!(status_of("gravatar"), "hit", "{got:?}");
    assert_eq!(status_of("github"), "error", "a reset connection: {got:?}");
    assert_eq!(status_of("openpgp"), "timeout", "a trickled body: {got:?}");
    assert_eq!(status_of("rdap"), "error", "a body past the cap: {got:?}");
    assert_eq!(
        status_of("keybase"),
        "error",
        "bytes that are not UTF-8: {got:?}"
    );
    assert_eq!(
        status_of("webfinger"),
        "timeout",
        "a server that never answers: {got:?}"
    );
    assert!(
        held.load(Ordering::SeqCst) >= 1,
        "the hanging server was asked"
    );
    assert_eq!(status_of("website"), "rate_limited", "{got:?}");
    // The 200 MB body was read no further than the cap (and what the sockets buffer).
    let taken = sent.load(Ordering::SeqCst);
    assert!(taken > 0, "the huge upstream was asked");
    assert!(
        taken < 32 * 1024 * 1024,
        "{taken} bytes were pulled from it"
    );
    // Other tests share this process, so the bound is loose; holding the body would pass it.
    let grown_kib = rss_kib().saturating_sub(rss_before);
    eprintln!(
        "200 MB upstream: {taken} bytes pulled, process grew by {grown_kib} KiB during the lookup"
    );
    assert!(
        grown_kib < 150 * 1024,
        "the process grew by {grown_kib} KiB"
    );

    // The service still answers, and the paused site is not asked again while its Retry-After runs.
    let health = server.get("/healthz").send().await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let (status, again) = server
        .lookup(json!({ "email": "bob@broken.example" }))
        .await;
    assert_eq!(status, 200, "{again}");
    let got = statuses(&again);
    assert!(
        got.iter()
            .any(|(n, s)| n == "website" && s == "rate_limited"),
        "{got:?}"
    );
}
