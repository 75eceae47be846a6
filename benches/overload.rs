//! Overload and shutdown, on loopback against the real server (`App::build`, `enrichd::http::serve`):
//!
//! - `overload_*`: rounds of 600 concurrent lookups against 64 in-flight slots, the upstream answering
//!   after 200 ms. How many are shed (answered 429/503 with `Retry-After` at once), and the p99
//!   latency of those served and of those shed.
//! - `slow_body_*`: 2,000 connections dribbling opt-out bodies, then `/healthz` and a lookup timed
//!   while they are open.
//! - `drain_ms`: from the shutdown signal to `serve` returning, with 50 lookups in progress (each
//!   one's upstream call made) whose upstream takes 500 ms; `drain_answered`: how many got a 200.
//!
//! - `stuffed_page_*`: lookups whose company site is a 460 KiB page of 40,000 addresses, alternating
//!   with lookups whose site is a small home page (`small_page_*`), one at a time: the median lookup
//!   time of each and their ratio (extraction is capped and runs off the async workers).
//!
//! Prints `name=value` lines. Times are one machine's; compare figures from one run. Without the
//! `--bench` argument that `cargo bench` passes (so under `cargo test --all-targets`) it runs a small
//! smoke pass instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};

const IN_FLIGHT: usize = 64;

/// How much each scenario does: the benchmark's figures, or a smoke pass under `cargo test`.
#[derive(Clone, Copy)]
struct Scale {
    rounds: usize,
    concurrent: usize,
    slow_bodies: usize,
    probes: usize,
    drain_lookups: usize,
    pages: usize,
}

const FULL: Scale = Scale {
    rounds: 3,
    concurrent: 600,
    slow_bodies: 2_000,
    probes: 200,
    drain_lookups: 50,
    pages: 30,
};

const SMOKE: Scale = Scale {
    rounds: 1,
    concurrent: 100,
    slow_bodies: 200,
    probes: 20,
    drain_lookups: 10,
    pages: 2,
};

/// A Gravatar v3 stand-in that answers every profile after `delay`, counting requests.
async fn upstream(delay: Duration, hits: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"hash":"x","display_name":"Over Load","company":"Acme"}"#,
            )
                .into_response()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn config(upstream: &str) -> String {
    let mut c = format!(
        "[server]\nmax_in_flight = {IN_FLIGHT}\nmax_connections_per_client = 100000\n\
         [tenants]\nrate_per_minute = 100000000\nburst = 10000000\n\
         [exclusion]\noptout_per_minute = 100000000\noptout_burst = 10000000\n\
         [sources.gravatar]\nbase_url = \"{upstream}\"\ntimeout_ms = 2000\n"
    );
    for spec in enrichd::sources::registry::BUILTIN {
        if spec.name != "gravatar" {
            c.push_str(&format!("[sources.{}]\nenabled = false\n", spec.name));
        }
    }
    c
}

struct Running {
    url: String,
    key: String,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(upstream: &str) -> Running {
    let loaded = enrichd::config::Config::from_toml(&config(upstream), &[]).expect("config");
    start_with(&loaded).await
}

async fn start_with(loaded: &enrichd::config::Loaded) -> Running {
    let dir = tempfile::tempdir().expect("data dir");
    let app = enrichd::app::App::build(loaded, dir.path())
        .await
        .expect("app builds");
    let key = app
        .state
        .keys
        .create("bench", enrichd::auth::Role::Tenant)
        .await
        .expect("key")
        .key;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(enrichd::http::serve(listener, app.router(), async move {
        let _ = stopped.await;
    }));
    Running {
        url,
        key,
        stop,
        served,
        _dir: dir,
    }
}

fn p99(mut ms: Vec<f64>) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() as f64) * 0.99).ceil() as usize - 1]
}

async fn lookup(http: &reqwest::Client, s: &Running) -> (u16, bool, f64) {
    let started = Instant::now();
    let resp = http
        .post(format!("{}/v1/lookup", s.url))
        .bearer_auth(&s.key)
        .json(&serde_json::json!({ "email": "over.load@example.com" }))
        .send()
        .await
        .expect("answered");
    let status = resp.status().as_u16();
    let retry = resp.headers().contains_key("retry-after");
    let _ = resp.bytes().await;
    (status, retry, started.elapsed().as_secs_f64() * 1000.0)
}

async fn overload(http: &reqwest::Client, scale: Scale) {
    let up = upstream(Duration::from_millis(200), Arc::default()).await;
    let s = start(&up).await;
    let (mut served, mut shed) = (Vec::new(), Vec::new());
    for _ in 0..scale.rounds {
        let answers =
            futures::future::join_all((0..scale.concurrent).map(|_| lookup(http, &s))).await;
        for (status, retry, ms) in answers {
            match status {
                200 => served.push(ms),
                429 | 503 if retry => shed.push(ms),
                other => panic!("unexpected answer {other} (Retry-After: {retry})"),
            }
        }
    }
    let total = (served.len() + shed.len()) as f64;
    println!("overload_requests={total}");
    println!("overload_shed_rate={:.3}", shed.len() as f64 / total);
    println!("overload_served_p99_ms={:.1}", p99(served));
    println!("overload_shed_p99_ms={:.1}", p99(shed));
    let _ = s.stop.send(());
    let _ = s.served.await;
}

async fn slow_bodies(http: &reqwest::Client, scale: Scale) {
    let up = upstream(Duration::from_millis(20), Arc::default()).await;
    let s = start(&up).await;
    let target: SocketAddr = s.url.trim_start_matches("http://").parse().expect("addr");
    let mut held = Vec::with_capacity(scale.slow_bodies);
    for i in 0..scale.slow_bodies {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8);
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(from), 0))
            .expect("bind");
        let mut stream = socket.connect(target).await.expect("connect");
        let head = "POST /v1/optout HTTP/1.1\r\nhost: b\r\ncontent-type: application/json\r\n\
                    content-length: 4096\r\n\r\n{";
        stream.write_all(head.as_bytes()).await.expect("head");
        held.push(stream);
    }
    let mut health = Vec::new();
    for _ in 0..scale.probes {
        let started = Instant::now();
        let resp = http
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .expect("healthz");
        assert_eq!(resp.status(), 200);
        health.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut lookups = Vec::new();
    for _ in 0..50 {
        let (status, _, ms) = lookup(http, &s).await;
        assert_eq!(status, 200, "lookups are served during the flood");
        lookups.push(ms);
    }
    println!("slow_body_connections={}", held.len());
    println!("slow_body_healthz_p99_ms={:.2}", p99(health));
    println!("slow_body_lookup_p99_ms={:.1}", p99(lookups));
    drop(held);
    let _ = s.stop.send(());
    let _ = s.served.await;
}

async fn drain(http: &reqwest::Client, scale: Scale) {
    let hits = Arc::new(AtomicUsize::new(0));
    let up = upstream(Duration::from_millis(500), hits.clone()).await;
    // A budget and slots for all of them at once: every lookup reaches the upstream.
    let roomy = config(&up).replacen(
        "timeout_ms = 2000\n",
        "timeout_ms = 2000\nrate_per_minute = 6000000\nconcurrency = 64\n",
        1,
    );
    let loaded = enrichd::config::Config::from_toml(&roomy, &[]).expect("config");
    let s = start_with(&loaded).await;
    let pending: Vec<_> = (0..scale.drain_lookups)
        .map(|i| {
            let (http, url, key) = (http.clone(), s.url.clone(), s.key.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/lookup"))
                    .bearer_auth(&key)
                    .json(&serde_json::json!({ "email": format!("drain{i}@example.com") }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Every lookup is in progress (its upstream call made) before the signal: one still
    // connecting when the listener closes is refused, which is not what this figure measures.
    while hits.load(Ordering::Relaxed) < scale.drain_lookups {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signalled = Instant::now();
    let _ = s.stop.send(());
    let _ = s.served.await;
    let drain_ms = signalled.elapsed().as_secs_f64() * 1000.0;
    let mut answered = 0;
    for p in pending {
        if matches!(p.await, Ok(Ok(200))) {
            answered += 1;
        }
    }
    println!("drain_ms={drain_ms:.1}");
    println!("drain_answered={answered}/{}", scale.drain_lookups);
}

/// A company site on loopback: `/stuffed*` paths get 40,000 addresses, others a small home page.
async fn site() -> String {
    let mut stuffed = String::from("<html><head><title>Stuffed</title></head><body><pre>\n");
    for i in 0..40_000 {
        stuffed.push_str(&format!("p{i}@s.io\n"));
    }
    stuffed.push_str("</pre></body></html>");
    let stuffed: Arc<str> = Arc::from(stuffed);
    let small = "<html><head><title>Small Co</title></head><body>Write to hello@small.io \
                 or call +44 20 7946 0018.</body></html>";
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let body = if uri.path().starts_with("/stuffed") {
            stuffed.to_string()
        } else {
            small.to_string()
        };
        async move { ([(axum::http::header::CONTENT_TYPE, "text/html")], body).into_response() }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind site");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// One lookup of `email`: the time it took, and whether the website source answered `hit`.
async fn timed_lookup(http: &reqwest::Client, s: &Running, email: &str) -> (f64, bool) {
    let started = Instant::now();
    let body: serde_json::Value = http
        .post(format!("{}/v1/lookup", s.url))
        .bearer_auth(&s.key)
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON answer");
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let hit = body["sources"].as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["name"] == "website" && s["status"] == "hit")
    });
    (took, hit)
}

async fn pages(http: &reqwest::Client, scale: Scale) {
    let site = site().await;
    let mut config = format!(
        "[tenants]\nrate_per_minute = 100000000\nburst = 10000000\n\
         [sources.website]\nbase_url = \"{site}/{{domain}}\"\nrate_per_minute = 100000000\n"
    );
    for spec in enrichd::sources::registry::BUILTIN {
        if spec.name != "website" {
            config.push_str(&format!("[sources.{}]\nenabled = false\n", spec.name));
        }
    }
    let loaded = enrichd::config::Config::from_toml(&config, &[]).expect("config");
    let s = start_with(&loaded).await;
    let (mut stuffed, mut small) = (Vec::new(), Vec::new());
    for i in 0..scale.pages {
        // A new domain each time: the answer cache must not serve the page.
        let (ms, hit) = timed_lookup(http, &s, &format!("a@stuffed{i}.example")).await;
        assert!(hit, "the stuffed page is read");
        stuffed.push(ms);
        let (ms, hit) = timed_lookup(http, &s, &format!("a@small{i}.example")).await;
        assert!(hit, "the small page is read");
        small.push(ms);
    }
    let (stuffed, small) = (median(stuffed), median(small));
    println!("stuffed_page_addresses=40000");
    println!("stuffed_page_lookup_ms={stuffed:.1}");
    println!("small_page_lookup_ms={small:.1}");
    println!("stuffed_vs_small_ratio={:.2}", stuffed / small);
    let _ = s.stop.send(());
    let _ = s.served.await;
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let scale = if std::env::args().any(|a| a == "--bench") {
        FULL
    } else {
        println!("smoke run (cargo test): figures below are not the benchmark's");
        SMOKE
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(scale.concurrent)
            .build()
            .expect("client");
        overload(&http, scale).await;
        slow_bodies(&http, scale).await;
        drain(&http, scale).await;
        pages(&http, scale).await;
    });
}
