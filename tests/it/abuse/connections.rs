//! What one connection may hold, and for how long: slow bodies, slow heads, silence, answers left
//! unread, and the caps on connections per address and in all.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{
    addr_of, closed_within, connect_from, loopback, read_head, rss_kib, start_slow_optout,
    wait_until,
};
use crate::both_stores;
use crate::helpers::{Server, Upstreams};

const FLOOD: usize = 2_000;
/// Flooding addresses 127.0.0.2 ..= 127.0.0.9: 250 connections each, under the default cap of 256.
const FLOOD_ADDRESSES: u8 = 8;

both_stores! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_thousand_slow_bodies_hold_no_slot_and_the_service_still_answers(mode) {
        let up = Upstreams::start().await;
        let email = "flood.survivor@example.com";
        up.gravatar_profile(email, "Flo Survivor", "Acme", None);
        // Fewer in-flight slots than slow clients: if a dribbled body held one, nothing would pass.
        let server = Server::start_in(mode, &format!(
            "[server]\nmax_in_flight = 64\n[exclusion]\noptout_per_minute = 1000\noptout_burst = 1000\n{}",
            up.config()
        ))
        .await;
        let target = addr_of(&server.url);
        let entries_before = server.exclusion_stats().await["entries"].as_u64();
        let rss_before = rss_kib();

        let mut flood = Vec::with_capacity(FLOOD);
        for i in 0..FLOOD {
            let from = loopback(2 + (i % FLOOD_ADDRESSES as usize) as u8);
            let mut stream = connect_from(from, target).await;
            start_slow_optout(&mut stream, 4096).await;
            flood.push(stream);
        }
        let slots = server.state.connections.per_client.clone();
        wait_until("every slow connection to be admitted", || {
            (2..2 + FLOOD_ADDRESSES)
                .map(|n| slots.held(IpAddr::V4(loopback(n))))
                .sum::<usize>()
                == FLOOD
        })
        .await;

        let health = server
            .http
            .get(format!("{}/healthz", server.url))
            .send()
            .await;
        assert_eq!(health.expect("healthz").status(), 200);
        let ready = server
            .http
            .get(format!("{}/readyz", server.url))
            .send()
            .await;
        assert_eq!(ready.expect("readyz").status(), 200, "no slot is taken");
        let form = server
            .http
            .get(format!("{}/optout", server.url))
            .send()
            .await;
        assert_eq!(form.expect("form").status(), 200);
        let (status, body) = server.lookup(json!({ "email": email })).await;
        assert_eq!(status, 200);
        assert_eq!(body["found"], true, "{body}");
        let (status, _) = server
            .optout(json!({ "email": "flood.optout@example.com" }))
            .await;
        assert_eq!(status, 200, "an opt-out is taken during the flood");
        let rss_growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
        assert!(
            rss_growth_mib < 256,
            "{FLOOD} slow connections cost {rss_growth_mib} MiB"
        );

        drop(flood);
        let after = server.exclusion_stats().await["entries"].as_u64();
        assert_eq!(
            after,
            entries_before.map(|n| n + 1),
            "only the one complete opt-out was recorded"
        );
        eprintln!("slow-body flood: {FLOOD} connections, rss growth {rss_growth_mib} MiB");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_body_dribbled_below_the_minimum_pace_is_answered_408_and_changes_nothing() {
    let server = Server::start(
        "[server]\nbody_grace_ms = 300\nbody_min_bytes_per_second = 1000\nidle_timeout_ms = 60000\n",
    )
    .await;
    let before = server.exclusion_stats().await["entries"].as_u64();
    let stream = connect_from(loopback(1), addr_of(&server.url)).await;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    start_slow_optout(&mut writer, 5000).await;
    let body = br#""email":"slow.body@example.com"}"#;
    let dribble = async {
        for byte in body {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // The dribble is cut before it ends, or sends everything and the rest never comes.
    let (answer, ()) = tokio::join!(read_head(&mut reader), dribble);
    let (status, head) = answer.expect("an answer before the close");

    assert_eq!(status, 408, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the grace period"
    );
    assert_eq!(server.exclusion_stats().await["entries"].as_u64(), before);
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_per_address_cap_are_answered_429_and_closed() {
    let server = Server::start("[server]\nmax_connections_per_client = 4\n").await;
    let target = addr_of(&server.url);
    let crowd = loopback(3);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(crowd, target).await);
    }
    let slots = server.state.connections.per_client.clone();
    wait_until("four connections from one address", || {
        slots.held(IpAddr::V4(crowd)) == 4
    })
    .await;

    let mut fifth = connect_from(crowd, target).await;
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: enrichd\r\n\r\n")
        .await
        .expect("send");
    let (status, head) = read_head(&mut fifth).await.expect("an answer");
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut fifth, Duration::from_secs(10)).await);

    let mut other = connect_from(loopback(4), target).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: enrichd\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(
        read_head(&mut other).await.map(|h| h.0),
        Some(200),
        "another address"
    );
    drop(held.pop());
    wait_until("a slot to come back", || slots.held(IpAddr::V4(crowd)) == 3).await;
    let again = reqwest::Client::builder()
        .local_address(IpAddr::V4(crowd))
        .build()
        .expect("client")
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        again.status(),
        200,
        "a freed slot lets the address in again"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"enrichd_connections_refused_total{reason="per_client"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_total_cap_are_answered_503_and_closed() {
    let server = Server::start("[server]\nmax_connections = 3\n").await;
    let target = addr_of(&server.url);
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(connect_from(loopback(10 + n), target).await);
    }
    let slots = server.state.connections.per_client.clone();
    wait_until("three connections", || {
        (10..13)
            .map(|n| slots.held(IpAddr::V4(loopback(n))))
            .sum::<usize>()
            == 3
    })
    .await;

    let mut late = connect_from(loopback(20), target).await;
    late.write_all(b"GET /healthz HTTP/1.1\r\nhost: enrichd\r\n\r\n")
        .await
        .expect("send");
    let (status, head) = read_head(&mut late).await.expect("an answer");

    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert_eq!(slots.held(IpAddr::V4(loopback(20))), 0, "it holds nothing");
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let up = Upstreams::start().await;
    let email = "idle.check@example.com";
    up.slow_gravatar_hit(email, "Idle Check", Duration::from_millis(900));
    let server = Server::start(&format!(
        "[server]\nidle_timeout_ms = 300\nheader_read_timeout_ms = 60000\n{}",
        up.config()
    ))
    .await;
    let target = addr_of(&server.url);

    let mut silent = connect_from(loopback(1), target).await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(20)).await,
        "a connection that never sends is closed"
    );

    let mut kept_alive = connect_from(loopback(1), target).await;
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: enrichd\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(read_head(&mut kept_alive).await.map(|h| h.0), Some(200));
    assert!(
        closed_within(&mut kept_alive, Duration::from_secs(20)).await,
        "an idle keep-alive connection is closed"
    );

    // A lookup that takes three idle periods to answer is being worked on, not idle.
    let (status, body) = server.lookup(json!({ "email": email })).await;
    assert_eq!(status, 200);
    assert_eq!(body["found"], true, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_head_dribbled_past_the_header_timeout_is_closed() {
    let server =
        Server::start("[server]\nheader_read_timeout_ms = 400\nidle_timeout_ms = 60000\n").await;
    let stream = connect_from(loopback(1), addr_of(&server.url)).await;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let dribble = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nhost: enrichd\r\nx-slow: "
            .iter()
            .cycle()
            .take(2000)
        {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // The dribble would take 40 s: a close within 30 s came while the head was still arriving.
    assert!(closed_within(&mut reader, Duration::from_secs(30)).await);
    assert!(started.elapsed() >= Duration::from_millis(400));
    dribble.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_cut_off() {
    let server = Server::start("[server]\nidle_timeout_ms = 300\n").await;
    let reader_addr = loopback(5);
    let mut stream = connect_from(reader_addr, addr_of(&server.url)).await;
    // Many pipelined requests for the largest public document, never read: the answers fill the
    // socket buffers and the server's writes stall.
    let request = b"GET /openapi.json HTTP/1.1\r\nhost: enrichd\r\n\r\n";
    let pipelined: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * 2000)
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&pipelined)).await;
    let slots = server.state.connections.per_client.clone();

    wait_until("the stalled connection to be closed", || {
        slots.held(IpAddr::V4(reader_addr)) == 0
    })
    .await;
    let health = server
        .http
        .get(format!("{}/healthz", server.url))
        .send()
        .await;
    assert_eq!(health.expect("healthz").status(), 200);
    drop(stream);
    server.stop().await;
}
