//! The figures of the shared store, from real `enrichd serve` processes on one moto bucket (loopback):
//!
//! - `optout_propagation_p50_ms`, `optout_propagation_p99_ms`: from replica A's acknowledgement of an
//!   opt-out to the first lookup at replica B that answers like a miss (B polled every 5 ms), over
//!   120 opt-outs one after another, each after a random pause (not in step with B's listing);
//! - `s3_requests_per_optout`, `s3_requests_per_1000_rows`: store requests of both replicas (their
//!   `enrichd_store_requests_total`) during the opt-outs, and during a batch from upload to `done`,
//!   less what the replicas ask anyway in as long idle (following the store, heartbeats);
//! - `takeover_s`: from SIGKILL of the replica running a batch to the first new row done at the other
//!   (default 5 s lease), median of three;
//! - `lookups_per_s_file`, `lookups_per_s_s3`, `lookup_ratio_s3_vs_file`: closed-loop lookups (32 at a
//!   time) against one replica on the local store and one on S3, in alternating rounds of one run.
//!
//! Without the `--bench` argument that `cargo bench` passes (so under `cargo test --all-targets`) it
//! runs a short smoke pass, to keep the test suite fast.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use enrichd::testkit::Served;
use serde_json::{Value, json};

const EXCLUSION_KEY: &str = "6b1f0a4c9d2e8f7a3b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f70";
const STORAGE_KEY: &str = "9c2e4f6a8b0d1e3f5a7c9e1b3d5f7a9c0e2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c";

struct Scale {
    opt_outs: usize,
    batch_rows: usize,
    takeovers: usize,
    load_rounds: usize,
    round: Duration,
    lease_ms: u64,
}

/// A Gravatar fake: a profile for every address, after `delay`.
async fn gravatar(delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        (
            [("content-type", "application/json")],
            r#"{"hash":"x","display_name":"Bench Person","profile_url":"https://gravatar.com/b","avatar_url":"https://0.gravatar.com/avatar/x","location":"London","job_title":"Engineer","company":"Bench Co","verified_accounts":[]}"#,
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

struct Replica {
    _served: Served,
    url: String,
    metrics_url: String,
    _data: tempfile::TempDir,
}

/// Where replicas keep their state, and their shared configuration.
struct Cluster {
    config: tempfile::TempDir,
    store: Option<String>,
    lease_ms: u64,
}

impl Cluster {
    fn new(gravatar: &str, store: Option<String>, lease_ms: u64, part_rows: u32) -> Self {
        let mut text = format!(
            "[server]\nlog_format = \"json\"\nmax_in_flight = 4096\n\
             [tenants]\nrate_per_minute = 100000000\nburst = 1000000\n\
             [exclusion]\noptout_per_minute = 1000000\noptout_burst = 100000\n\
             [batches]\npart_rows = {part_rows}\nconcurrency_per_tenant = 32\n\
             [sources.gravatar]\nbase_url = \"{gravatar}\"\ntimeout_ms = 5000\nrate_per_minute = 100000000\nconcurrency = 64\n"
        );
        for spec in enrichd::sources::registry::BUILTIN {
            if spec.name != "gravatar" {
                text.push_str(&format!("[sources.{}]\nenabled = false\n", spec.name));
            }
        }
        let config = tempfile::tempdir().expect("config dir");
        std::fs::write(config.path().join("enrichd.toml"), text).expect("config");
        Self {
            config,
            store,
            lease_ms,
        }
    }

    fn command(&self, data: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_enrichd"));
        cmd.args(args)
            .arg("--config")
            .arg(self.config.path().join("enrichd.toml"))
            .arg("--data-dir")
            .arg(data)
            .env_clear()
            .env("ENRICHD_EXCLUSION_KEY", EXCLUSION_KEY)
            .env("ENRICHD_STORAGE_KEY", STORAGE_KEY)
            .env("ENRICHD_STORE__LEASE_MS", self.lease_ms.to_string())
            .env("ENRICHD_LOG", "warn");
        if let Some(url) = &self.store {
            cmd.env("ENRICHD_STORE__URL", url)
                .envs(enrichd::testkit::moto().env());
        }
        cmd
    }

    /// A key made with `enrichd keys new` on this cluster's store (a throwaway data dir for S3).
    fn key(&self, data: &std::path::Path) -> String {
        let out = self
            .command(data, &["keys", "new", "--tenant", "bench"])
            .output()
            .expect("keys new");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("key")
            .to_string()
    }

    fn start(&self, data: tempfile::TempDir) -> Replica {
        let mut cmd = self.command(data.path(), &["serve", "--listen", "127.0.0.1:0"]);
        cmd.env("ENRICHD_LOG", "info");
        let served = Served::spawn(cmd, None, Duration::from_secs(60))
            .unwrap_or_else(|(code, stderr)| panic!("enrichd exited ({code:?}): {stderr}"));
        Replica {
            url: served.url.clone(),
            metrics_url: served.metrics_url.clone(),
            _served: served,
            _data: data,
        }
    }
}

async fn lookup(http: &reqwest::Client, r: &Replica, key: &str, email: &str) -> Value {
    http.post(format!("{}/v1/lookup", r.url))
        .bearer_auth(key)
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json")
}

async fn status(http: &reqwest::Client, r: &Replica, key: &str, id: &str) -> Value {
    http.get(format!("{}/v1/batches/{id}", r.url))
        .bearer_auth(key)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

/// Store requests a replica has made so far (every operation).
async fn store_requests(http: &reqwest::Client, r: &Replica) -> f64 {
    let text = http
        .get(format!("{}/metrics", r.metrics_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with("enrichd_store_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn all_requests(http: &reqwest::Client, rs: &[&Replica]) -> f64 {
    let mut total = 0.0;
    for r in rs {
        total += store_requests(http, r).await;
    }
    total
}

/// The requests `rs` make while idle for `d`.
async fn idle_requests(http: &reqwest::Client, rs: &[&Replica], d: Duration) -> f64 {
    let before = all_requests(http, rs).await;
    tokio::time::sleep(d).await;
    all_requests(http, rs).await - before
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn upload(http: &reqwest::Client, r: &Replica, key: &str, rows: usize, tag: &str) -> String {
    let mut csv = String::from("email\n");
    for i in 0..rows {
        csv.push_str(&format!("p{i}.{tag}@bench.example\n"));
    }
    let created: Value = http
        .post(format!("{}/v1/batches", r.url))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    created["id"].as_str().expect("id").to_string()
}

/// Waits for `done`, asking once a second (each question is two store reads at the replica).
async fn wait_done(http: &reqwest::Client, r: &Replica, key: &str, id: &str) {
    loop {
        if status(http, r, key, id).await["status"] == "done" {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Propagation of opt-outs from A to B, and the store requests they cost.
async fn propagation(scale: &Scale, http: &reqwest::Client) -> (Vec<f64>, f64, f64) {
    let gravatar = gravatar(Duration::ZERO).await;
    let bucket = enrichd::testkit::moto().bucket().await;
    let c = Cluster::new(
        &gravatar,
        Some(format!("s3://{bucket}/bench")),
        scale.lease_ms,
        1000,
    );
    let scratch = tempfile::tempdir().expect("scratch");
    let key = c.key(scratch.path());
    let a = c.start(tempfile::tempdir().expect("data"));
    let b = c.start(tempfile::tempdir().expect("data"));
    // Both replicas know the key (made before they started) and have warmed their clients.
    assert_eq!(
        lookup(http, &b, &key, "warm@bench.example").await["found"],
        true
    );

    let start = Instant::now();
    let before = all_requests(http, &[&a, &b]).await;
    let mut millis = Vec::with_capacity(scale.opt_outs);
    for i in 0..scale.opt_outs {
        // Opt-outs arrive at random moments, not in step with B's listing of the store.
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 600)).await;
        let email = format!("gone{i}@bench.example");
        let resp = http
            .post(format!("{}/v1/optout", a.url))
            .json(&json!({ "email": email }))
            .send()
            .await
            .expect("opt-out");
        assert_eq!(resp.status().as_u16(), 200);
        let acked = Instant::now();
        while lookup(http, &b, &key, &email).await["found"] != false {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        millis.push(acked.elapsed().as_secs_f64() * 1e3);
    }
    let phase = start.elapsed();
    let during = all_requests(http, &[&a, &b]).await - before;
    let idle = idle_requests(http, &[&a, &b], phase).await;
    let per_optout = (during - idle).max(0.0) / scale.opt_outs as f64;

    let start = Instant::now();
    let before = all_requests(http, &[&a, &b]).await;
    let id = upload(http, &a, &key, scale.batch_rows, "rows").await;
    wait_done(http, &b, &key, &id).await;
    let phase = start.elapsed();
    let during = all_requests(http, &[&a, &b]).await - before;
    let idle = idle_requests(http, &[&a, &b], phase).await;
    let per_1000_rows = (during - idle).max(0.0) * 1000.0 / scale.batch_rows as f64;
    (millis, per_optout, per_1000_rows)
}

/// Seconds from SIGKILL of the replica running a batch to the first new row done elsewhere.
async fn takeover(scale: &Scale, http: &reqwest::Client) -> f64 {
    let gravatar = gravatar(Duration::from_millis(20)).await;
    let bucket = enrichd::testkit::moto().bucket().await;
    let c = Cluster::new(
        &gravatar,
        Some(format!("s3://{bucket}/takeover")),
        scale.lease_ms,
        50,
    );
    let scratch = tempfile::tempdir().expect("scratch");
    let key = c.key(scratch.path());
    let a = c.start(tempfile::tempdir().expect("data"));
    let b = c.start(tempfile::tempdir().expect("data"));
    let id = upload(http, &a, &key, 4000, "takeover").await;
    loop {
        if status(http, &a, &key, &id).await["rows_done"].as_u64() >= Some(100) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(a);
    let killed = Instant::now();
    let at_kill = status(http, &b, &key, &id).await["rows_done"]
        .as_u64()
        .unwrap_or(0);
    loop {
        if status(http, &b, &key, &id).await["rows_done"]
            .as_u64()
            .unwrap_or(0)
            > at_kill
        {
            return killed.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lookups done in `round` by 32 concurrent clients against `r`.
async fn load(http: &reqwest::Client, r: &Replica, key: &str, round: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + round;
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (http, url, key, done) = (http.clone(), r.url.clone(), key.to_string(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < until {
                    let resp = http
                        .post(format!("{url}/v1/lookup"))
                        .bearer_auth(&key)
                        .json(&json!({ "email": format!("load{}@bench.example", (c * 7919 + i) % 2000) }))
                        .send()
                        .await
                        .expect("lookup");
                    assert!(resp.status().is_success());
                    resp.bytes().await.expect("body");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
    done.load(Ordering::Relaxed)
}

/// Lookups per second of one replica on the local store and one on S3, alternating rounds.
async fn lookups(scale: &Scale, http: &reqwest::Client) -> (f64, f64) {
    let gravatar = gravatar(Duration::ZERO).await;
    let file = Cluster::new(&gravatar, None, scale.lease_ms, 1000);
    let file_data = tempfile::tempdir().expect("data");
    let file_key = file.key(file_data.path());
    let on_file = file.start(file_data);
    let bucket = enrichd::testkit::moto().bucket().await;
    let s3 = Cluster::new(
        &gravatar,
        Some(format!("s3://{bucket}/load")),
        scale.lease_ms,
        1000,
    );
    let scratch = tempfile::tempdir().expect("scratch");
    let s3_key = s3.key(scratch.path());
    let on_s3 = s3.start(tempfile::tempdir().expect("data"));
    // Warm both: connection pools, answer caches.
    load(http, &on_file, &file_key, Duration::from_secs(1)).await;
    load(http, &on_s3, &s3_key, Duration::from_secs(1)).await;
    let (mut file_done, mut s3_done) = (0, 0);
    for round in 0..scale.load_rounds {
        // Alternate which goes first, so neither always follows the other.
        if round % 2 == 0 {
            file_done += load(http, &on_file, &file_key, scale.round).await;
            s3_done += load(http, &on_s3, &s3_key, scale.round).await;
        } else {
            s3_done += load(http, &on_s3, &s3_key, scale.round).await;
            file_done += load(http, &on_file, &file_key, scale.round).await;
        }
    }
    let secs = scale.round.as_secs_f64() * scale.load_rounds as f64;
    (file_done as f64 / secs, s3_done as f64 / secs)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let scale = if benching {
        Scale {
            opt_outs: 120,
            batch_rows: 5000,
            takeovers: 3,
            load_rounds: 6,
            round: Duration::from_secs(5),
            lease_ms: 5000,
        }
    } else {
        Scale {
            opt_outs: 5,
            batch_rows: 200,
            takeovers: 1,
            load_rounds: 2,
            round: Duration::from_millis(300),
            lease_ms: 1000,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        let (mut millis, per_optout, per_1000_rows) = propagation(&scale, &http).await;
        millis.sort_by(f64::total_cmp);
        let mut takeovers = Vec::new();
        for _ in 0..scale.takeovers {
            takeovers.push(takeover(&scale, &http).await);
        }
        takeovers.sort_by(f64::total_cmp);
        let (file, s3) = lookups(&scale, &http).await;
        println!("optout_count={}", millis.len());
        println!("optout_propagation_p50_ms={:.1}", percentile(&millis, 0.50));
        println!("optout_propagation_p99_ms={:.1}", percentile(&millis, 0.99));
        println!("optout_propagation_max_ms={:.1}", percentile(&millis, 1.0));
        println!("s3_requests_per_optout={per_optout:.1}");
        println!("s3_requests_per_1000_rows={per_1000_rows:.1}");
        println!(
            "takeover_s={:.2} (lease {} ms; all: {:?})",
            percentile(&takeovers, 0.5),
            scale.lease_ms,
            takeovers
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
        );
        println!("lookups_per_s_file={file:.0}");
        println!("lookups_per_s_s3={s3:.0}");
        println!("lookup_ratio_s3_vs_file={:.3}", s3 / file);
    });
}
