//! Batch throughput and memory: a generated CSV (written to a temp file, streamed) enriched through the
//! real `BatchService` and `Pipeline` against an instant loopback Gravatar fake, every other source off.
//!
//! Runs 100,000 rows, then 1,000,000 rows, in one process, and prints the peak resident memory
//! (`VmHWM`) after each, plus the highest `VmRSS` sampled during the large run: if memory grew with
//! the file, the second peak would be far above the first. The last two lines are the headline:
//! `batch_rows_per_s=<x>` (1M-row run, upload + enrichment to `done`) and `batch_rss_mib=<peak MiB>`.
//!
//! `BENCH_ROWS=<n>` replaces the large run's size (the small run is a tenth of it). Without the
//! `--bench` argument that `cargo bench` passes (so under `cargo test --all-targets`), it runs a
//! 2,000-row smoke pass instead, to keep the test suite fast.
//!
//! Then a **paced** phase: a batch of `BENCH_PACED_ROWS` rows (300; 40 in the smoke pass) through a
//! Gravatar whose budget makes it take about `BENCH_PACED_S` seconds (10; 2). It prints
//! `budget_utilisation` (calls the upstream received ÷ calls the batch part of the budget allowed
//! from upload to `done`: its burst plus its rate times the run's length; goal ≥ 0.9) and
//! `eta_error_at_25|50|75` (the ETA at that point of the run against the time that was really left,
//! relative, signed).

mod common;
use common::{mib, status_kib};

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use enrichd::batch::{BatchOptions, BatchService, BatchStatus, BatchStore};
use enrichd::blob::{BatchId, SystemClock};
use enrichd::config::Config;
use enrichd::store::replicas::ReplicaShare;
use enrichd::telemetry::Metrics;

const TENANT: &str = "bench";

/// The instant upstream: a Gravatar v3 profile for one hash in sixteen, a 404 for the rest; and the
/// number of requests it received.
async fn gravatar_fake() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let counting = move |req: axum::extract::Request| {
        counted.fetch_add(1, Ordering::Relaxed);
        answer(req)
    };
    async fn answer(req: axum::extract::Request) -> axum::response::Response {
        let hit = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .is_some_and(|h| h.starts_with('0'));
        if hit {
            (
                [("content-type", "application/json")],
                r#"{"hash":"x","display_name":"Bench Person","profile_url":"https://gravatar.com/b","avatar_url":"https://0.gravatar.com/avatar/x","location":"London","job_title":"Engineer","company":"Bench Co","verified_accounts":[]}"#,
            )
                .into_response()
        } else {
            (
                StatusCode::NOT_FOUND,
                [("content-type", "application/json")],
                r#"{"error":"Profile not found"}"#,
            )
                .into_response()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        async move { axum::serve(listener, axum::Router::new().fallback(counting)).await },
    );
    (url, calls)
}

fn config(gravatar: &str, rate_per_minute: u64) -> String {
    let mut c = format!(
        "[sources.gravatar]\nbase_url = \"{gravatar}\"\ntimeout_ms = 5000\nrate_per_minute = {rate_per_minute}\nconcurrency = 64\n\
         [batches]\nconcurrency_per_tenant = 48\nconcurrency_global = 48\n"
    );
    for spec in enrichd::sources::registry::BUILTIN {
        if spec.name != "gravatar" {
            c.push_str(&format!("[sources.{}]\nenabled = false\n", spec.name));
        }
    }
    c
}

fn write_csv(path: &std::path::Path, rows: u64, run: &str) {
    let file = std::fs::File::create(path).expect("csv");
    let mut w = std::io::BufWriter::with_capacity(1 << 16, file);
    writeln!(w, "Email,First name,Last name,Note").expect("write");
    for i in 0..rows {
        writeln!(
            w,
            "p{i}.{run}@bench{}.example,First{i},Last{i},row {i}",
            i % 997
        )
        .expect("write");
    }
    w.flush().expect("flush");
}

struct Outcome {
    rows: u64,
    found: u64,
    took: Duration,
    download: Duration,
    bytes: u64,
}

async fn run(service: &BatchService, dir: &std::path::Path, rows: u64, run: &str) -> Outcome {
    let csv = dir.join(format!("input-{run}.csv"));
    write_csv(&csv, rows, run);
    let start = Instant::now();
    let file = tokio::fs::File::open(&csv).await.expect("open");
    let meta = service
        .create(
            TENANT,
            tokio_util::io::ReaderStream::with_capacity(file, 1 << 16),
            BatchOptions::default(),
        )
        .await
        .expect("upload");
    std::fs::remove_file(&csv).expect("remove csv");
    let id = BatchId::parse(&meta.id).expect("id");
    let meta = common::wait_done(service, TENANT, id).await;
    let took = start.elapsed();
    let t = Instant::now();
    let bytes = common::download_csv(service, TENANT, id).await;
    let download = t.elapsed();
    service.delete(TENANT, id).await.expect("delete");
    Outcome {
        rows: meta.rows_done,
        found: meta.rows_found,
        took,
        download,
        bytes,
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let large: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 1_000_000 } else { 2_000 });
    let small = (large / 10).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let (gravatar, calls) = gravatar_fake().await;
        let (service, _workers) = service(&dir.path().join("fast"), &gravatar, 100_000_000).await;

        let a = run(&service, dir.path(), small, "a").await;
        let peak_small = status_kib("VmHWM:");
        println!(
            "rows={} found={} enrich_s={:.1} rows_per_s={:.0} download_s={:.2} result_mib={:.1} peak_rss_mib={:.1}",
            a.rows, a.found, a.took.as_secs_f64(), a.rows as f64 / a.took.as_secs_f64(),
            a.download.as_secs_f64(), a.bytes as f64 / 1048576.0, mib(peak_small)
        );

        let sampled = Arc::new(AtomicU64::new(0));
        let sampler = {
            let sampled = sampled.clone();
            tokio::spawn(async move {
                loop {
                    sampled.fetch_max(status_kib("VmRSS:"), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let b = run(&service, dir.path(), large, "b").await;
        sampler.abort();
        let peak_large = status_kib("VmHWM:");
        println!(
            "rows={} found={} enrich_s={:.1} rows_per_s={:.0} download_s={:.2} result_mib={:.1} peak_rss_mib={:.1} max_sampled_rss_mib={:.1}",
            b.rows, b.found, b.took.as_secs_f64(), b.rows as f64 / b.took.as_secs_f64(),
            b.download.as_secs_f64(), b.bytes as f64 / 1048576.0, mib(peak_large),
            mib(sampled.load(Ordering::Relaxed))
        );
        println!(
            "memory: peak {:.1} MiB after {} rows, {:.1} MiB after {} rows ({:+.1} MiB for {}x the rows)",
            mib(peak_small), small, mib(peak_large), large, mib(peak_large) - mib(peak_small), large / small
        );
        println!("batch_rows_per_s={:.0}", b.rows as f64 / b.took.as_secs_f64());
        println!("batch_rss_mib={:.1}", mib(peak_large));

        let paced_rows = env_u64("BENCH_PACED_ROWS", if benching { 300 } else { 40 });
        let paced_s = env_u64("BENCH_PACED_S", if benching { 10 } else { 2 }).max(1) as f64;
        paced(dir.path(), &gravatar, &calls, paced_rows, paced_s).await;
    });
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A batch service on its own directory, over a Gravatar at `rate_per_minute`, its workers running.
async fn service(
    dir: &std::path::Path,
    gravatar: &str,
    rate_per_minute: u64,
) -> (BatchService, tokio::task::JoinHandle<()>) {
    std::fs::create_dir_all(dir).expect("dir");
    let loaded = Config::from_toml(&config(gravatar, rate_per_minute), &[]).expect("config");
    let metrics = Arc::new(Metrics::new());
    let store = enrichd::app::open_store(&loaded, dir, metrics.clone())
        .await
        .expect("store");
    let exclusion = Arc::new(
        enrichd::app::open_exclusion(&loaded, dir, &store)
            .await
            .expect("exclusion"),
    );
    let pipeline =
        enrichd::app::pipeline(&loaded, exclusion.clone(), metrics, ReplicaShare::single())
            .expect("pipeline");
    let keyring = enrichd::app::storage_keyring(&loaded, dir, false).expect("storage key");
    let batches = BatchStore::new(
        &store,
        Arc::new(keyring),
        Arc::new(SystemClock),
        Arc::from("bench"),
        Duration::from_secs(30),
    );
    let (service, _) = enrichd::app::batch_service(&loaded, batches, pipeline, exclusion);
    let workers = service.spawn_workers(None);
    (service, workers)
}

/// The paced phase (see the module docs): `rows` rows of one Gravatar call each, through a budget
/// whose batch part (0.8 of the rate) allows them in about `seconds`.
async fn paced(dir: &std::path::Path, gravatar: &str, calls: &AtomicU64, rows: u64, seconds: f64) {
    // The batch part is 0.8 of the rate, rounded down, in calls a minute.
    let batch_per_minute = ((rows as f64 / seconds) * 60.0).ceil();
    let rate_per_minute = (batch_per_minute / 0.8).ceil() as u64;
    let batch_per_s = ((rate_per_minute as f64 * 0.8).floor()) / 60.0;
    let (service, _workers) = service(&dir.join("paced"), gravatar, rate_per_minute).await;
    let csv = dir.join("input-paced.csv");
    write_csv(&csv, rows, "paced");
    let before = calls.load(Ordering::Relaxed);
    let start = Instant::now();
    let file = tokio::fs::File::open(&csv).await.expect("open");
    let meta = service
        .create(
            TENANT,
            tokio_util::io::ReaderStream::new(file),
            BatchOptions::default(),
        )
        .await
        .expect("upload");
    let id = BatchId::parse(&meta.id).expect("id");
    let mut etas: Vec<(f64, f64)> = Vec::new();
    let mut waiting_max = 0;
    let done = loop {
        if let Some((eta, waiting)) = service.progress(TENANT, id) {
            waiting_max = waiting_max.max(waiting);
            if let Some(eta) = eta {
                etas.push((start.elapsed().as_secs_f64(), eta));
            }
        }
        let m = service.get(TENANT, id).await.expect("get");
        match m.status {
            BatchStatus::Done => break m,
            BatchStatus::Failed => panic!("paced batch failed: {:?}", m.error),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let took = start.elapsed().as_secs_f64();
    let made = calls.load(Ordering::Relaxed) - before;
    // The batch part's burst (3) plus its rate over the run.
    let allowed = 3.0 + batch_per_s * took;
    println!(
        "paced: rows={} errors={} rate_per_minute={rate_per_minute} batch_calls_per_s={batch_per_s:.2} took_s={took:.2} budget_s={:.2} calls={made} max_rows_waiting={waiting_max}",
        done.rows_done,
        done.rows_error,
        (rows as f64 - 3.0).max(0.0) / batch_per_s,
    );
    println!("budget_utilisation={:.3}", made as f64 / allowed);
    for share in [25, 50, 75] {
        let at = took * f64::from(share) / 100.0;
        let nearest = etas
            .iter()
            .min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs()));
        match nearest {
            Some(&(t, eta)) => {
                let left = took - t;
                println!(
                    "eta_error_at_{share}={:+.3} (at {t:.2} s: eta {eta:.2} s, really {left:.2} s)",
                    (eta - left) / left
                );
            }
            None => println!("eta_error_at_{share}=none"),
        }
    }
}
