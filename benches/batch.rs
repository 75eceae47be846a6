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

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use enrichd::batch::{BatchOptions, BatchService, BatchStatus, BatchStore, Format};
use enrichd::blob::{BatchId, SystemClock};
use enrichd::config::Config;
use enrichd::store::replicas::ReplicaShare;
use enrichd::telemetry::Metrics;
use futures::StreamExt;

const TENANT: &str = "bench";

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The instant upstream: a Gravatar v3 profile for one hash in sixteen, a 404 for the rest.
async fn gravatar_fake() -> String {
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
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(answer)).await });
    url
}

fn config(gravatar: &str) -> String {
    let mut c = format!(
        "[sources.gravatar]\nbase_url = \"{gravatar}\"\ntimeout_ms = 5000\nrate_per_minute = 100000000\nconcurrency = 64\n\
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
    let meta = loop {
        let m = service.get(TENANT, id).await.expect("get");
        match m.status {
            BatchStatus::Done => break m,
            BatchStatus::Failed => panic!("batch failed: {:?}", m.error),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let took = start.elapsed();
    let t = Instant::now();
    let mut stream = service
        .result(TENANT, id, Format::Csv)
        .await
        .expect("result");
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.expect("chunk").len() as u64;
    }
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
        let gravatar = gravatar_fake().await;
        let loaded = Config::from_toml(&config(&gravatar), &[]).expect("config");
        let metrics = Arc::new(Metrics::new());
        let store = enrichd::app::open_store(&loaded, dir.path(), metrics.clone())
            .await
            .expect("store");
        let exclusion = Arc::new(
            enrichd::app::open_exclusion(&loaded, dir.path(), &store)
                .await
                .expect("exclusion"),
        );
        let pipeline = enrichd::app::pipeline(&loaded, exclusion.clone(), metrics, ReplicaShare::single())
            .expect("pipeline");
        let keyring = enrichd::app::storage_keyring(&loaded, dir.path(), false).expect("storage key");
        let batches = BatchStore::new(
            &store,
            Arc::new(keyring),
            Arc::new(SystemClock),
            Arc::from("bench"),
            Duration::from_secs(30),
        );
        let (service, _) = enrichd::app::batch_service(&loaded, batches, pipeline, exclusion);
        let _workers = service.spawn_workers(None);

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
    });
}
