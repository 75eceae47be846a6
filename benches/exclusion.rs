//! Exclusion list benchmark: membership checks and memory at 10 million entries, and the time to
//! acknowledge one opt-out (append + fsync).
//!
//! Run with `cargo bench --bench exclusion`. The last four lines are the figures tracked by issue 4:
//! `optout_ack_us_p50`, `optout_ack_us_p99`, `exclusion_check_ns`, `exclusion_bytes_per_entry`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use enrichd::domain::{Email, Identifier};
use enrichd::exclusion::set::HashSet128;
use enrichd::exclusion::{
    DEFAULT_RETENTION_DAYS, ExclusionCheck, ExclusionKey, ExclusionList, Origin,
};

const ENTRIES: u64 = 10_000_000;
const CHECKS_PER_RUN: usize = 1_000_000;
const RUNS: usize = 15;
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
fn queries(run: u64, hits_per_mille: u64) -> (Vec<u128>, usize) {
    let mut present = 0;
    let qs = (0..CHECKS_PER_RUN as u64)
        .map(|i| {
            let r = hash_at(0xC0FFEE ^ run, i) as u64;
            if (r >> 40) % 1000 < hits_per_mille {
                present += 1;
                hash_at(PRESENT_SEED, (r >> 1) % ENTRIES)
            } else {
                hash_at(ABSENT_SEED, r >> 1)
            }
        })
        .collect();
    (qs, present)
}

fn bench_set() -> (f64, f64) {
    let before = vm_rss_bytes();
    let built = Instant::now();
    let mut set = HashSet128::new();
    for i in 0..ENTRIES {
        set.insert(hash_at(PRESENT_SEED, i));
    }
    let build_time = built.elapsed();
    let after = vm_rss_bytes();
    let bytes_per_entry = after.saturating_sub(before) as f64 / ENTRIES as f64;
    println!(
        "built {} entries in {:.2}s; table {} bytes ({:.1} bytes/entry), VmRSS {} -> {} bytes",
        set.len(),
        build_time.as_secs_f64(),
        set.table_bytes(),
        set.table_bytes() as f64 / set.len() as f64,
        before,
        after
    );

    let (rare_hits, _) = check_runs(&set, 10);
    println!(
        "set check with 1% hits (most lookups are of people who never opted out): median {rare_hits:.1} ns"
    );
    let (check_ns, min) = check_runs(&set, 500);
    println!(
        "set check over {RUNS} runs of {CHECKS_PER_RUN} (50% hits): median {check_ns:.1} ns, best {min:.1} ns"
    );
    (check_ns, bytes_per_entry)
}

/// Median and best ns per check over `RUNS` batches of `CHECKS_PER_RUN` lookups.
fn check_runs(set: &HashSet128, hits_per_mille: u64) -> (f64, f64) {
    let mut per_check = Vec::with_capacity(RUNS);
    for run in 0..RUNS as u64 {
        let (qs, expected_hits) = queries(run, hits_per_mille);
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
fn bench_full_check(list: &ExclusionList) -> f64 {
    let ids: Vec<Identifier> = (0..1000)
        .filter_map(|i| Email::parse(&format!("person.{i}+tag@gmail.com")).ok())
        .map(Identifier::Email)
        .collect();
    let mut runs = Vec::new();
    for _ in 0..RUNS {
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

fn bench_opt_out() -> Result<(Vec<f64>, f64), Box<dyn std::error::Error>> {
    // On the target's disk, not a tmpfs, so fsync costs what it costs in production.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let key = ExclusionKey::from_bytes([7; 32]);
    let (list, _) = ExclusionList::open(
        dir.path(),
        key,
        DEFAULT_RETENTION_DAYS,
        std::time::SystemTime::now(),
    )?;
    let mut micros = Vec::with_capacity(OPT_OUTS);
    for i in 0..OPT_OUTS {
        let id = Identifier::Email(Email::parse(&format!("opt.out.{i}@example.com"))?);
        let start = Instant::now();
        let receipt = list.add(std::slice::from_ref(&id), Origin::Api)?;
        let took: Duration = start.elapsed();
        assert_eq!(receipt.added, 1);
        micros.push(took.as_secs_f64() * 1e6);
    }
    let full = bench_full_check(&list);
    Ok((micros, full))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (micros, full_ns) = bench_opt_out()?;
    println!(
        "is_excluded on a 200-entry list (normalise + keyed blake3 + lock + probe): median {full_ns:.1} ns"
    );
    let (check_ns, bytes_per_entry) = bench_set();
    println!("optout_ack_us_p50={:.0}", percentile(micros.clone(), 50.0));
    println!("optout_ack_us_p99={:.0}", percentile(micros, 99.0));
    println!("exclusion_check_ns={check_ns:.1}");
    println!("exclusion_bytes_per_entry={bytes_per_entry:.1}");
    Ok(())
}
