//! Fan-out overhead benchmark: enrichd against a minimal hyper fan-out proxy, same upstreams, same calls.
//!
//! Run with `cargo bench --bench fanout` (about 80 s). Everything runs in this process on loopback.
//! The files: `upstreams.rs` (fakes), `systems.rs` (enrichd and the baseline), `load.rs` (load generator),
//! this one (the run and the statistics).
//!
//! - **upstream fakes**: a Gravatar v3 and a GitHub API server (bare hyper, prebuilt answers, counters);
//! - **enrichd**: the real service built as the integration tests build it (`Config::from_toml`,
//!   `App::build`, a tenant key, `enrichd::http::serve` on `127.0.0.1:0`), with only `gravatar` and
//!   `github` enabled and every limit (tenant rate, in-flight cap, per-source rate and concurrency) raised
//!   out of the way; logging as production at `info`, written to a sink;
//! - **baseline**: a bare hyper server that parses the same request, makes the same upstream calls with
//!   a pooled reqwest client, follows the same hop and answers a small JSON — the floor cost of "an HTTP
//!   proxy that fans out";
//! - **load generator**: a hyper client pool sending `POST /v1/lookup {"email": ...}` with a bearer key.
//!
//! The two servers run on their own tokio runtime (default worker count); fakes and load generator share
//! another. Only one server is loaded at a time.
//!
//! **What each lookup does** (checked exactly before measuring, counted again during every phase): the
//! email is new for every lookup (`bench-<n>@example.com`), so no cache can answer. Three upstream calls,
//! two of them in parallel and one hop:
//! 1. `GET /profiles/{sha256(email)}` on Gravatar: a hit, a v3 profile whose verified accounts include a
//!    GitHub account `https://github.com/b<12 hex of the hash>`;
//! 2. at the same time `GET /search/commits?q=author-email:<email>&per_page=5` on GitHub: no commit,
//!    `{"total_count":0,...,"items":[]}`, so no second `/users` call can race the hop;
//! 3. once Gravatar has answered, `GET /users/b<12 hex>` on GitHub (the hop): a hit.
//!
//! The answer is `found: true` with both sources `hit`. (Calls per lookup printed for each phase are
//! slightly above 1 because lookups still in flight at the window's edges make calls too.)
//!
//! Phases: warm-up of both; **saturation**, closed loop with `FANOUT_CLIENTS` (32) clients, alternating
//! enrichd and baseline over several rounds, with the CPU time each server's runtime threads spent per
//! lookup (from `/proc/self/task/*/schedstat`: steadier than lookups/s on a shared machine, and what the
//! ratio comes down to); **open loop** at half the lower of the two systems' median saturation rates
//! (so that both run at most half loaded and the p99 measures added latency, not queueing), alternating
//! again: lookup `i` is due at `t0 + i/rate` and its latency is measured from that intended time
//! (coordinated omission included). `FANOUT_OPEN_CONNECTIONS` (64) sender tasks on the load runtime
//! take the lookups in turn, like a client with a bounded pool: a stall queues lookups (and counts
//! against their latency) instead of opening thousands of connections. Each open-loop round also
//! prints how busy the machine was (this process's CPU ÷ cores) and how much the hypervisor stole: a
//! round near 1.0 busy is queueing, and its p99 says more about capacity than about overhead.
//!
//! **memory** (`memory.rs`): each system alone in a child process, 10,000 lookups in flight (fewer when
//! the open-file limit cannot hold three connections each) against fakes that hold every call 2 s; the
//! child's resident memory above its settled level, per lookup in flight.
//!
//! The last three lines are the figures tracked:
//! `throughput_ratio` (median over rounds of enrichd lookups/s ÷ baseline lookups/s in the same round),
//! `added_p99_ms` (median over rounds of enrichd p99 − baseline p99 in the same open-loop round;
//! paired like the ratio because one neighbour's stall on this shared machine moves a pooled p99 by
//! tens of milliseconds for whichever system it hits; the pooled p99s are printed above it) and
//! `inflight_memory_ratio` (enrichd's memory per lookup in flight ÷ the baseline's).
//!
//! Knobs for quick runs and profiling: `FANOUT_CLIENTS`, `FANOUT_WARMUP_SECS`, `FANOUT_SAT_SECS`,
//! `FANOUT_SAT_ROUNDS`, `FANOUT_OPEN_SECS`, `FANOUT_OPEN_ROUNDS`, `FANOUT_OPEN_CONNECTIONS` (64),
//! `FANOUT_SHOW_ANSWER=1` (print each system's answer to the scenario), and
//! `FANOUT_ONLY=enrichd|baseline` (load one system alone at saturation, e.g. under `perf record`, then
//! stop), `FANOUT_SUT_THREADS` (worker threads of the servers' runtime; tokio's default, one per core,
//! otherwise), and `FANOUT_CACHE_SECS` (enrichd's `retention.source_cache_seconds`; `0` turns the answer
//! cache off, to see what the cache costs when, as here, it never answers), and `FANOUT_CACHE_MIB`
//! (`retention.source_cache_mib`: the instruction meter makes it small so that the cache is full, as
//! it is through nearly all of a full run, within its short warm-up).

mod load;
mod memory;
mod systems;
mod upstreams;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper::StatusCode;
use tokio::runtime::Runtime;

use load::{OpenLoop, Target, open_loop, saturate};
use systems::{start_baseline, start_enrichd};
use upstreams::{CallCount, Calls, start_upstreams};

/// Lookup deadline, for enrichd's config and the baseline alike.
const DEADLINE: Duration = Duration::from_secs(3);
/// How long the load generator waits for one answer before counting an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A tunable read from the environment (for quick runs while profiling), else its default.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One lookup on each system, checked call by call against the documented scenario; prints the size
/// of each answer (and the answer itself with `FANOUT_SHOW_ANSWER=1`).
fn check_scenario(aux: &Runtime, calls: &Calls, targets: &[Arc<Target>; 2]) {
    let expected = CallCount {
        profiles: 1,
        search: 1,
        users: 1,
        other: 0,
    };
    for t in targets {
        let before = calls.snapshot();
        let (status, body) = aux
            .block_on(t.send())
            .unwrap_or_else(|e| panic!("{} lookup failed: {e}", t.name));
        // Let a call made after the answer (there must be none) reach the fakes before counting.
        std::thread::sleep(Duration::from_millis(50));
        let made = calls.snapshot() - before;
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
        assert_eq!(status, StatusCode::OK, "{}: {answer}", t.name);
        assert_eq!(answer["found"], true, "{}: {answer}", t.name);
        assert_eq!(made, expected, "{} made other upstream calls", t.name);
        println!("{} answers {} bytes", t.name, body.len());
        if std::env::var_os("FANOUT_SHOW_ANSWER").is_some() {
            println!("{}", String::from_utf8_lossy(&body));
        }
        if t.name == "enrichd" {
            let statuses: Vec<_> = answer["sources"]
                .as_array()
                .expect("sources")
                .iter()
                .map(|s| format!("{}={}", s["name"], s["status"]))
                .collect();
            assert_eq!(
                statuses,
                [r#""gravatar"="hit""#, r#""github"="hit""#],
                "enrichd: {answer}"
            );
        }
    }
}

/// The servers' runtime: tokio's default worker count, or `FANOUT_SUT_THREADS`.
pub fn sut_runtime() -> Runtime {
    let mut sut = tokio::runtime::Builder::new_multi_thread();
    if let Ok(n) = std::env::var("FANOUT_SUT_THREADS") {
        sut.worker_threads(n.parse().expect("FANOUT_SUT_THREADS is a count"));
    }
    sut.enable_all()
        .thread_name("sut")
        .build()
        .expect("system-under-test runtime")
}

fn main() {
    // Production logs at `info`; the bench pays that filter's cost and throws the lines away.
    enrichd::telemetry::init(Some("info"), false, false, std::io::sink);
    // The memory phase runs each system in a child process: this executable, told which system.
    if let Ok(system) = std::env::var("FANOUT_SERVE") {
        memory::serve_child(&system);
        return;
    }

    // `cargo bench` passes `--bench`; under `cargo test --all-targets` (an unoptimised build, no
    // `--bench`) one short round of each phase checks that the bench still runs end to end.
    let benching = std::env::args().any(|a| a == "--bench");
    let full_or_smoke = |full: u64, smoke: u64| if benching { full } else { smoke };
    let clients = knob("FANOUT_CLIENTS", 32);
    let connections = knob("FANOUT_OPEN_CONNECTIONS", 64) as usize;
    let warmup = Duration::from_secs(knob("FANOUT_WARMUP_SECS", full_or_smoke(2, 1)));
    let sat_len = Duration::from_secs(knob("FANOUT_SAT_SECS", full_or_smoke(2, 1)));
    let sat_rounds = knob("FANOUT_SAT_ROUNDS", full_or_smoke(8, 1));
    let open_len = Duration::from_secs(knob("FANOUT_OPEN_SECS", full_or_smoke(3, 1)));
    let open_rounds = knob("FANOUT_OPEN_ROUNDS", full_or_smoke(6, 1));

    let sut = sut_runtime();
    let aux = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("load")
        .build()
        .expect("load generator runtime");

    let up = aux.block_on(start_upstreams(None));
    let enrichd = sut.block_on(start_enrichd(&up));
    let baseline_url = sut.block_on(start_baseline(&up));
    let emails = Arc::new(AtomicU64::new(0));
    let targets = [
        Target::new("enrichd", &enrichd.url, &enrichd.key, emails.clone()),
        Target::new("baseline", &baseline_url, &enrichd.key, emails.clone()),
    ];

    check_scenario(&aux, &up.calls, &targets);
    println!(
        "fanout bench: {clients} clients, sut runtime on {} cores",
        { std::thread::available_parallelism().map_or(0, |n| n.get()) }
    );
    println!(
        "each lookup: new email; Gravatar /profiles hit ∥ GitHub /search/commits empty, then hop GitHub /users hit"
    );

    // Profiling aid: `FANOUT_ONLY=enrichd` (or `baseline`) warms up and loads that system alone for
    // the saturation length, then stops. The last line counts every lookup this run sent (the
    // scenario check's two included), for `scripts/fanout-instructions`.
    if let Ok(only) = std::env::var("FANOUT_ONLY") {
        let t = targets
            .iter()
            .find(|t| t.name == only)
            .expect("FANOUT_ONLY names enrichd or baseline");
        aux.block_on(saturate(t, &up.calls, clients, warmup));
        let s = aux.block_on(saturate(t, &up.calls, clients, sat_len));
        println!(
            "{only}: {:.0} lookups/s, CPU/lookup server {:.0} µs, fakes+load {:.0} µs",
            s.per_sec,
            s.cpu_us_per_lookup(s.sut_cpu),
            s.cpu_us_per_lookup(s.load_cpu)
        );
        println!(
            "lookups_sent={}",
            emails.load(std::sync::atomic::Ordering::Relaxed)
        );
        // Out without tearing down: dropping what the load left behind (enrichd's answer cache holds
        // more entries the longer the run) is not a lookup's cost, and the instruction meter would
        // charge it to each lookup of the longer run.
        std::process::exit(0);
    }
    for t in &targets {
        aux.block_on(saturate(t, &up.calls, clients, warmup));
    }

    // Saturation, alternating which system goes first.
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut cpu: [Vec<f64>; 2] = Default::default();
    let mut ratios = Vec::new();
    println!("\nsaturation (closed loop, {clients} clients, {sat_len:?} per system per round)");
    for round in 0..sat_rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut this = [0.0; 2];
        for i in order {
            let s = aux.block_on(saturate(&targets[i], &up.calls, clients, sat_len));
            println!(
                "  round {round} {:<8} {:>6.0} lookups/s  errors {}  CPU/lookup: server {:>4.0} µs, fakes+load {:>4.0} µs  calls/lookup {}",
                targets[i].name,
                s.per_sec,
                s.errors,
                s.cpu_us_per_lookup(s.sut_cpu),
                s.cpu_us_per_lookup(s.load_cpu),
                s.calls.per_lookup(s.ok)
            );
            if let Some(e) = &s.first_error {
                println!("    first error: {e}");
            }
            this[i] = s.per_sec;
            rates[i].push(s.per_sec);
            cpu[i].push(s.cpu_us_per_lookup(s.sut_cpu));
        }
        ratios.push(this[0] / this[1]);
    }
    let [enrichd_rates, baseline_rates] = rates;
    let baseline_max = median(baseline_rates);
    let enrichd_max = median(enrichd_rates);
    let throughput_ratio = median(ratios.clone());

    // Open loop at half the lower of the two maximums: both systems at most half loaded.
    let rate = (baseline_max.min(enrichd_max) / 2.0).max(1.0);
    println!(
        "\nopen loop at {rate:.0} lookups/s ({open_len:?} per system per round, at most {connections} in flight)"
    );
    let mut open: [OpenLoop; 2] = Default::default();
    let mut busy: [Vec<f64>; 2] = Default::default();
    let mut p99_diffs = Vec::new();
    for round in 0..open_rounds {
        let order: [usize; 2] = if round % 2 == 0 { [1, 0] } else { [0, 1] };
        let mut p99s = [0.0; 2];
        for i in order {
            let r = open_loop(aux.handle(), &targets[i], rate, open_len, connections);
            let mut lat = r.latencies.clone();
            lat.sort();
            println!(
                "  round {round} {:<8} p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}  machine busy {:.2}, stolen {:.2}",
                targets[i].name,
                ms(percentile(&lat, 50.0)),
                ms(percentile(&lat, 99.0)),
                r.errors,
                r.busy(),
                r.stolen_share()
            );
            if let Some(e) = &r.first_error {
                println!("    first error: {e}");
            }
            p99s[i] = ms(percentile(&lat, 99.0));
            busy[i].push(r.busy());
            open[i].absorb(r);
        }
        p99_diffs.push(p99s[0] - p99s[1]);
    }
    // Memory: each system alone in a child process, every upstream call held.
    let (in_flight, files) = memory::lookups_that_fit(full_or_smoke(memory::TARGET_LOOKUPS, 200));
    println!(
        "\nmemory ({in_flight} lookups in flight, upstreams hold every call {:?}; open-file limit {files})",
        memory::HOLD
    );
    let held = aux.block_on(start_upstreams(Some(memory::HOLD)));
    let mut mem = Vec::new();
    for name in ["enrichd", "baseline"] {
        let served = memory::Served::start(name, &held);
        let m = memory::measure(&aux, &served, name, in_flight);
        served.stop();
        println!(
            "  {name:<8} settled {:.1} MiB, peak {:.1} MiB: {:.2} KiB per lookup in flight ({} errors)",
            m.idle_kib as f64 / 1024.0,
            m.peak_kib as f64 / 1024.0,
            m.kib_per_lookup(),
            m.errors
        );
        mem.push(m.kib_per_lookup());
    }

    let mut p = [[Duration::ZERO; 4]; 2];
    for (i, o) in open.iter_mut().enumerate() {
        o.latencies.sort();
        o.send_lag.sort();
        p[i] = [
            percentile(&o.latencies, 50.0),
            percentile(&o.latencies, 99.0),
            percentile(&o.latencies, 99.9),
            percentile(&o.send_lag, 99.0),
        ];
    }

    println!("\nsummary");
    println!(
        "  saturation  enrichd {enrichd_max:.0} lookups/s, baseline {baseline_max:.0} lookups/s (medians; the open loop ran at half the lower, {rate:.0}/s); per-round ratios {}",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let [enrichd_cpu, baseline_cpu] = cpu;
    println!(
        "  CPU per lookup (server runtime threads, medians): enrichd {:.0} µs, baseline {:.0} µs",
        median(enrichd_cpu),
        median(baseline_cpu)
    );
    for (i, t) in targets.iter().enumerate() {
        println!(
            "  open loop   {:<8} p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  ({} ok, {} errors; send lag p99 {:.3} ms: timer + wait for a free sender)",
            t.name,
            ms(p[i][0]),
            ms(p[i][1]),
            ms(p[i][2]),
            open[i].latencies.len(),
            open[i].errors,
            ms(p[i][3]),
        );
    }
    let [enrichd_busy, baseline_busy] = busy;
    println!(
        "  open loop   machine busy (process CPU ÷ cores, medians): enrichd {:.2}, baseline {:.2}",
        median(enrichd_busy),
        median(baseline_busy)
    );
    println!(
        "  open loop   per-round p99 differences (enrichd − baseline) {} ms; pooled {:.3} ms",
        p99_diffs
            .iter()
            .map(|d| format!("{d:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        ms(p[0][1]) - ms(p[1][1])
    );
    println!(
        "  memory      {in_flight} lookups in flight: enrichd {:.2} KiB each, baseline {:.2} KiB each",
        mem[0], mem[1]
    );
    println!("inflight_kib_per_lookup_enrichd={:.2}", mem[0]);
    println!("inflight_kib_per_lookup_baseline={:.2}", mem[1]);
    println!(
        "  goals: throughput_ratio >= 0.8, added_p99_ms <= 1.0, inflight_memory_ratio <= 1.25"
    );
    println!("throughput_ratio={throughput_ratio:.3}");
    println!("added_p99_ms={:.3}", median(p99_diffs));
    println!(
        "inflight_memory_ratio={:.3}",
        mem[0] / mem[1].max(f64::EPSILON)
    );

    sut.shutdown_background();
    aux.shutdown_background();
}
