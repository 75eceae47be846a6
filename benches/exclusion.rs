//! Exclusion list benchmark: membership checks and memory at 10 million entries, the time to
//! acknowledge one opt-out in the list (append + fsync), and over HTTP (`POST /v1/optout` to the real
//! router on loopback, request sent to acknowledgement received).
//!
//! Run with `cargo bench --bench exclusion`. The last six lines are the figures tracked by issue 4:
//! `optout_ack_us_p50`, `optout_ack_us_p99`, `optout_http_ack_us_p50`, `optout_http_ack_us_p99`,
//! `exclusion_check_ns`, `exclusion_bytes_per_entry`. Under `cargo test` (no `--bench` argument) the
//! same code runs as a quick smoke test with 100 000 entries, so the test suite stays fast.

use std::hint::black_box;
use std::time::{Duration, Instant};

use enrichd::domain::{Email, Identifier};
use enrichd::exclusion::set::HashSet128;
use enrichd::exclusion::{
    DEFAULT_RETENTION_DAYS, ExclusionCheck, ExclusionKey, ExclusionList, Origin,
};

/// Entries, checks per run and runs: the full figures under `cargo bench`, a smoke test otherwise.
struct Scale {
    entries: u64,
    checks_per_run: usize,
    runs: usize,
}

const FULL: Scale = Scale {
    entries: 10_000_000,
    checks_per_run: 1_000_000,
    runs: 15,
};
const SMOKE: Scale = Scale {
    entries: 100_000,
    checks_per_run: 10_000,
    runs: 3,
};
const OPT_OUTS: usize = 200;
const PRESENT_SEED: u64 = 0x5EED_0001;
const ABSENT_SEED: u64 = 0x5EED_0002;

/// The `i`-th pseudo-random 128-bit hash of a stream (splitmix64 finaliser, stateless so hits can be
/// regenerated without storing the inserted hashes).
fn hash_at(seed: u64, i: u64) -> u128 {
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let b = mix(a ^ seed.rotate_left(17));
    (u128::from(a) << 64) | u128::from(b)
}

/// Resident set size of this process in bytes, from /proc/self/status.
fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (xs.len() - 1) as f64).round() as usize;
    xs[rank.min(xs.len() - 1)]
}

/// `hits_per_mille` random inserted entries per thousand, the rest misses, shuffled by construction.
/// Returns the queries and how many of them are present.
fn queries(scale: &Scale, run: u64, hits_per_mille: u64) -> (Vec<u128>, usize) {
    let mut present = 0;
    let qs = (0..scale.checks_per_run as u64)
        .map(|i| {
            let r = hash_at(0xC0FFEE ^ run, i) as u64;
            if (r >> 40) % 1000 < hits_per_mille {
                present += 1;
                hash_at(PRESENT_SEED, (r >> 1) % scale.entries)
            } else {
                hash_at(ABSENT_SEED, r >> 1)
            }
        })
        .collect();
    (qs, present)
}

fn bench_set(scale: &Scale) -> (f64, f64) {
    let before = vm_rss_bytes();
    let built = Instant::now();
    let mut set = HashSet128::new();
    for i in 0..scale.entries {
        set.insert(hash_at(PRESENT_SEED, i));
    }
    let build_time = built.elapsed();
    let after = vm_rss_bytes();
    let bytes_per_entry = after.saturating_sub(before) as f64 / scale.entries as f64;
    println!(
        "built {} entries in {:.2}s; table {} bytes ({:.1} bytes/entry), VmRSS {} -> {} bytes",
        set.len(),
        build_time.as_secs_f64(),
        set.table_bytes(),
        set.table_bytes() as f64 / set.len() as f64,
        before,
        after
    );

    let (rare_hits, _) = check_runs(scale, &set, 10);
    println!(
        "set check with 1% hits (most lookups are of people who never opted out): median {rare_hits:.1} ns"
    );
    let (check_ns, min) = check_runs(scale, &set, 500);
    println!(
        "set check over {} runs of {} (50% hits): median {check_ns:.1} ns, best {min:.1} ns",
        scale.runs, scale.checks_per_run
    );
    (check_ns, bytes_per_entry)
}

/// Median and best ns per check over `scale.runs` batches of `scale.checks_per_run` lookups.
fn check_runs(scale: &Scale, set: &HashSet128, hits_per_mille: u64) -> (f64, f64) {
    let mut per_check = Vec::with_capacity(scale.runs);
    for run in 0..scale.runs as u64 {
        let (qs, expected_hits) = queries(scale, run, hits_per_mille);
        let start = Instant::now();
        let mut hits = 0usize;
        for q in &qs {
            hits += usize::from(set.contains(black_box(*q)));
        }
        let elapsed = start.elapsed();
        black_box(hits);
        // Every query for an inserted hash must hit; absent ones miss (2^-128 collisions aside).
        assert_eq!(hits, expected_hits);
        per_check.push(elapsed.as_nanos() as f64 / qs.len() as f64);
    }
    let min = per_check.iter().copied().fold(f64::INFINITY, f64::min);
    (median(per_check), min)
}

/// The whole `is_excluded` path on a small list: normalise, keyed blake3, read lock, set probe.
fn bench_full_check(scale: &Scale, list: &ExclusionList) -> f64 {
    let ids: Vec<Identifier> = (0..1000)
        .filter_map(|i| Email::parse(&format!("person.{i}+tag@gmail.com")).ok())
        .map(Identifier::Email)
        .collect();
    let mut runs = Vec::new();
    for _ in 0..scale.runs {
        let start = Instant::now();
        let mut hits = 0usize;
        for _ in 0..100 {
            for id in &ids {
                hits += usize::from(list.is_excluded(black_box(id)));
            }
        }
        black_box(hits);
        runs.push(start.elapsed().as_nanos() as f64 / (100 * ids.len()) as f64);
    }
    median(runs)
}

fn bench_opt_out(scale: &Scale) -> Result<(Vec<f64>, f64), Box<dyn std::error::Error>> {
    // On the target's disk, not a tmpfs, so fsync costs what it costs in production.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let key = ExclusionKey::from_bytes([7; 32]);
    let (list, _) = ExclusionList::open(
        dir.path(),
        key,
        DEFAULT_RETENTION_DAYS,
        std::time::SystemTime::now(),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut micros = Vec::with_capacity(OPT_OUTS);
    for i in 0..OPT_OUTS {
        let id = Identifier::Email(Email::parse(&format!("opt.out.{i}@example.com"))?);
        let start = Instant::now();
        let receipt = rt.block_on(list.add(std::slice::from_ref(&id), Origin::Api))?;
        let took: Duration = start.elapsed();
        assert_eq!(receipt.added, 1);
        micros.push(took.as_secs_f64() * 1e6);
    }
    let full = bench_full_check(scale, &list);
    Ok((micros, full))
}

/// `POST /v1/optout` against the real router on loopback, request sent to acknowledgement received:
/// validation, the per-address limit, the fsynced append, the expansion lookup and the hooks. Every
/// source is disabled (no traffic leaves loopback), so the expansion asks no one: the figure is
/// enrichd's own cost, to which a live deployment adds its slowest source's answer time (bounded by
/// `exclusion.expand_timeout_ms`).
fn bench_http_opt_out() -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let mut config =
        String::from("[exclusion]\noptout_per_minute = 1000000\noptout_burst = 1000000\n");
    for spec in enrichd::sources::registry::BUILTIN {
        config.push_str(&format!("[sources.{}]\nenabled = false\n", spec.name));
    }
    let loaded = enrichd::config::Config::from_toml(&config, &[])?;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let app = enrichd::app::App::build(&loaded, dir.path()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/optout", listener.local_addr()?);
        let server = tokio::spawn(enrichd::http::serve(
            listener,
            app.router(),
            std::future::pending(),
        ));
        let client = reqwest::Client::new();
        let mut micros = Vec::with_capacity(OPT_OUTS);
        for i in 0..OPT_OUTS + 10 {
            let body = format!(r#"{{"email":"http.opt.out.{i}@example.com"}}"#);
            let start = Instant::now();
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            resp.bytes().await?;
            let took = start.elapsed();
            assert_eq!(status, 200);
            // The first few warm the connection pool.
            if i >= 10 {
                micros.push(took.as_secs_f64() * 1e6);
            }
        }
        server.abort();
        Ok::<_, Box<dyn std::error::Error>>(micros)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; `cargo test` runs this binary without it.
    let scale = if std::env::args().any(|a| a == "--bench") {
        &FULL
    } else {
        println!("smoke run (cargo test): figures below are not the benchmark's");
        &SMOKE
    };
    let (micros, full_ns) = bench_opt_out(scale)?;
    println!(
        "is_excluded on a 200-entry list (normalise + keyed blake3 + lock + probe): median {full_ns:.1} ns"
    );
    let http = bench_http_opt_out()?;
    let (check_ns, bytes_per_entry) = bench_set(scale);
    println!("optout_ack_us_p50={:.0}", percentile(micros.clone(), 50.0));
    println!("optout_ack_us_p99={:.0}", percentile(micros, 99.0));
    println!(
        "optout_http_ack_us_p50={:.0}",
        percentile(http.clone(), 50.0)
    );
    println!("optout_http_ack_us_p99={:.0}", percentile(http, 99.0));
    println!("exclusion_check_ns={check_ns:.1}");
    println!("exclusion_bytes_per_entry={bytes_per_entry:.1}");
    Ok(())
}
