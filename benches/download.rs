//! Download memory: how much a result download adds to a process's resident memory, for one stored
//! batch of 200,000 rows kept as a single part (`part_rows` and `part_bytes` past the batch's size)
//! and the same batch cut at the default caps (1,000 rows, 4 MiB), measured paired in one run.
//!
//! Each batch is built by the real `BatchService` (upload streamed, job, parts and their indexes of
//! row keys sealed in a local store) with an enricher that answers at once, so what is measured is
//! the store and the download, not the upstreams. Each download then runs in a child process of its own (this binary again, with
//! `--download`), so that memory the job used and freed cannot hide the download's: the child
//! opens the store, notes its `VmRSS`, resets its peak (`/proc/self/clear_refs`), streams the CSV
//! result into a counter, and prints `download_rss_growth_mib` (peak during the download minus the
//! resident memory before it) and `peak_rss_mib` (`VmHWM`).
//!
//! `BENCH_DOWNLOAD_ROWS=<n>` replaces the 200,000 rows; without `--bench` (under
//! `cargo test --all-targets`) it runs 2,000 rows.

mod common;
use common::{mib, status_kib};

use std::hash::{Hash, Hasher};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enrichd::batch::{
    BatchConfig, BatchOptions, BatchService, BatchStore, Enricher, RowContext, RowHasher,
    RowOutcome,
};
use enrichd::blob::{BatchId, SystemClock};
use enrichd::domain::{Identifier, Query};
use enrichd::seal::{Keyring, MasterKey};
use enrichd::store::Store;
use futures::StreamExt;
use futures::future::BoxFuture;

const TENANT: &str = "bench";

/// Answers every row at once with a miss: rows as stored carry the tenant's input and statuses.
struct Instant;

impl Enricher for Instant {
    fn enrich(&self, _q: Query, _ctx: RowContext) -> BoxFuture<'static, RowOutcome> {
        Box::pin(async { RowOutcome::miss() })
    }
}

/// Keys every identifier (as the exclusion list's keyed hash would, so that each part has a full
/// index to screen its rows with); nobody is on the list.
struct Nobody;

impl RowHasher for Nobody {
    fn row_keys(&self, id: &Identifier) -> Option<[u8; 16]> {
        let half = |seed: u8| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, id).hash(&mut h);
            h.finish().to_be_bytes()
        };
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&half(1));
        key[8..].copy_from_slice(&half(2));
        Some(key)
    }
}

/// A batch service on `dir` with the given part caps, no workers started.
fn service(dir: &std::path::Path, part_rows: u32, part_bytes: u64) -> BatchService {
    let store = Store::local(dir).expect("store");
    let keyring = Keyring::new(MasterKey::from_bytes([7; 32]), Vec::new());
    let batches = BatchStore::new(
        &store,
        Arc::new(keyring),
        Arc::new(SystemClock),
        Arc::from("bench"),
        Duration::from_secs(30),
    );
    let config = BatchConfig {
        part_rows,
        part_bytes,
        ..BatchConfig::default()
    };
    BatchService::new(batches, Arc::new(Instant), Arc::new(Nobody), config)
}

/// `rows` CSV rows of about 200 bytes, generated as the upload streams.
fn csv(rows: u64) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let header = futures::stream::once(async {
        Ok(Bytes::from_static(
            b"Email,First name,Last name,Company,Note\n",
        ))
    });
    let body = futures::stream::iter((0..rows).step_by(1000)).map(move |from| {
        let mut chunk = String::new();
        for i in from..(from + 1000).min(rows) {
            chunk.push_str(&format!(
                "person{i}@company{}.example,First{i},Last{i},Company {} Ltd,{}\n",
                i % 997,
                i % 997,
                "a note that the tenant keeps with the row ".repeat(3)
            ));
        }
        Ok(Bytes::from(chunk))
    });
    header.chain(body)
}

/// Builds the stored batch; its id.
async fn build(dir: &std::path::Path, rows: u64, part_rows: u32, part_bytes: u64) -> String {
    let service = service(dir, part_rows, part_bytes);
    let workers = service.spawn_workers(None);
    let meta = service
        .create(TENANT, csv(rows), BatchOptions::default())
        .await
        .expect("upload");
    let id = BatchId::parse(&meta.id).expect("id");
    let done = common::wait_done(&service, TENANT, id).await;
    workers.abort();
    assert_eq!(done.rows_done, rows);
    println!(
        "built: part_rows={part_rows} part_bytes={part_bytes} rows={} parts={}",
        done.rows_done, done.parts_done
    );
    meta.id
}

/// The child: downloads the batch and prints what its memory did.
async fn download(dir: &std::path::Path, id: &str) {
    let service = service(dir, 1, 1);
    let id = BatchId::parse(id).expect("id");
    // Open the store and read the batch once before measuring: keys and metadata are not the
    // download's cost.
    service.get(TENANT, id).await.expect("meta");
    let before = status_kib("VmRSS:");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let bytes = common::download_csv(&service, TENANT, id).await;
    let peak = status_kib("VmHWM:");
    println!(
        "download_rss_growth_mib={:.1} peak_rss_mib={:.1} result_mib={:.1}",
        mib(peak.saturating_sub(before)),
        mib(peak),
        bytes as f64 / 1048576.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(at) = args.iter().position(|a| a == "--download") {
        let (dir, id) = (&args[at + 1], &args[at + 2]);
        rt.block_on(download(std::path::Path::new(dir), id));
        return;
    }
    let benching = args.iter().any(|a| a == "--bench");
    let rows: u64 = std::env::var("BENCH_DOWNLOAD_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 200_000 } else { 2_000 });
    let tmp = tempfile::tempdir().expect("tempdir");
    let defaults = BatchConfig::default();
    let configs = [
        ("one_part", u32::MAX, u64::MAX),
        ("default_caps", defaults.part_rows, defaults.part_bytes),
    ];
    for (label, part_rows, part_bytes) in configs {
        let dir = tmp.path().join(label);
        let id = rt.block_on(build(&dir, rows, part_rows, part_bytes));
        let out = Command::new(std::env::current_exe().expect("this binary"))
            .arg("--download")
            .arg(&dir)
            .arg(&id)
            .output()
            .expect("the download child runs");
        assert!(
            out.status.success(),
            "download child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{label}: {}", String::from_utf8_lossy(&out.stdout));
    }
}
