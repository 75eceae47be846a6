//! The lookup pipeline's own work, with no network: what enrichd spends per lookup beyond its HTTP
//! server and client. Run with `cargo bench --bench pipeline`.
//!
//! Two in-memory sources answer at once with what the fan-out bench's fakes describe (a Gravatar hit
//! naming a GitHub account; GitHub empty for the email, a hit for the account), so each lookup makes the
//! same three source calls, one of them a hop, then merges, checks the exclusion seam and serialises the
//! answer as `/v1/lookup` does. Every email is new, as in the fan-out bench, so no cache answers.
//!
//! Measured on one thread (a current-thread runtime), in rounds:
//! - **bare**: the sources called directly;
//! - **guarded**: each behind its etiquette guard (cache, coalescing, breaker, bulkhead) sharing one
//!   answer cache with the shipped 16 MiB budget, first while it fills, then once it is full.
//!
//! The last lines print the medians as `pipeline_bare_us=` and `pipeline_guarded_full_us=`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use enrichd::domain::{Identifier, ProfileUrl, Query, QueryInput};
use enrichd::pipeline::{Limits, LookupOptions, Pipeline};
use enrichd::profile::{Field, Observation};
use enrichd::sources::etiquette::{GuardConfig, Guarded, SourceCache};
use enrichd::sources::{Registered, Source, SourceError, SourceSet};
use futures::FutureExt;
use futures::future::BoxFuture;

/// Answers like the bench's Gravatar fake: a profile with a verified GitHub account new for each email.
struct Gravatar;

impl Source for Gravatar {
    fn name(&self) -> &str {
        "gravatar"
    }

    fn accepts(&self, id: &Identifier) -> bool {
        matches!(id, Identifier::Email(_))
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let Identifier::Email(e) = id else {
                return Ok(Vec::new());
            };
            let hash = blake3::hash(e.as_str().as_bytes()).to_hex();
            let login = format!("b{}", &hash[..12]);
            let mut out = vec![
                Observation::new(Field::FullName, "Bench Person"),
                Observation::new(Field::JobTitle, "Principal Engineer"),
                Observation::new(Field::CompanyName, "Benchco"),
                Observation::new(Field::Location, "London, UK"),
                Observation::new(
                    Field::Photo,
                    format!("https://0.gravatar.com/avatar/{hash}"),
                ),
            ];
            if let Ok(account) = ProfileUrl::parse(&format!("https://github.com/{login}")) {
                out.push(Observation::profile(account));
            }
            Ok(out)
        }
        .boxed()
    }
}

/// Answers like the bench's GitHub fake: nothing for an email, a user for a profile.
struct Github;

impl Source for Github {
    fn name(&self) -> &str {
        "github"
    }

    fn accepts(&self, id: &Identifier) -> bool {
        matches!(id, Identifier::Email(_) | Identifier::Profile(_))
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let Identifier::Profile(p) = id else {
                return Ok(Vec::new());
            };
            Ok(vec![
                Observation::new(Field::FullName, "Bench Person"),
                Observation::new(Field::CompanyName, "@benchco"),
                Observation::new(Field::Location, "London"),
                Observation::new(Field::Website, "https://bench.example"),
                Observation::profile(p.clone()),
            ])
        }
        .boxed()
    }
}

fn pipeline(guarded: bool, cache: &SourceCache) -> Pipeline {
    let wrap = |s: Arc<dyn Source>| -> Arc<dyn Source> {
        if guarded {
            let cfg = GuardConfig::new(0, 1_000, Duration::from_secs(2));
            Arc::new(Guarded::new(s, cfg, cache.clone()))
        } else {
            s
        }
    };
    let sources = SourceSet::unguarded(vec![
        Registered::free(wrap(Arc::new(Gravatar)), 2_000, 0.7),
        Registered::free(wrap(Arc::new(Github)), 2_000, 0.7),
    ]);
    let limits = Limits {
        default_timeout: Duration::from_secs(3),
        max_timeout: Duration::from_secs(10),
        max_hops: 2,
        default_want: Vec::new(),
    };
    Pipeline::new(
        sources,
        Arc::new(enrichd::exclusion::NoExclusions),
        limits,
        Arc::new(enrichd::telemetry::Metrics::new()),
    )
}

/// Microseconds per lookup over `n` lookups of new emails (numbered from `*next`).
async fn round(p: &Pipeline, n: u64, next: &mut u64) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        *next += 1;
        let input = QueryInput {
            email: Some(format!("bench-{next}@example.com")),
            ..QueryInput::default()
        };
        let query = Query::parse(&input, None).expect("bench email is valid");
        let lookup = p.lookup(&query, LookupOptions::default()).await;
        assert!(lookup.found, "the bench sources always find the person");
        let body = serde_json::to_vec(&lookup).expect("a lookup serialises");
        std::hint::black_box(body);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` one short round checks that it runs.
    let benching = std::env::args().any(|a| a == "--bench");
    // The shipped budget when benching; a small one for the smoke run, so that it fills too.
    let (n, rounds, cache_bytes) = if benching {
        (20_000, 7, enrichd::sources::etiquette::DEFAULT_MAX_BYTES)
    } else {
        (200, 2, 64 << 10)
    };
    let cache = SourceCache::new(cache_bytes, Duration::from_secs(300));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut next = 0;
        let bare = pipeline(false, &cache);
        let guarded = pipeline(true, &cache);
        let mut bare_us = Vec::new();
        let mut filling_us = Vec::new();
        let mut full_us = Vec::new();
        for _ in 0..rounds {
            bare_us.push(round(&bare, n, &mut next).await);
            // A round counts as "full" when the cache had no room for another profile as it began.
            let full = cache.held_bytes().await + 4096 > cache.max_bytes();
            let us = round(&guarded, n, &mut next).await;
            if full {
                full_us.push(us)
            } else {
                filling_us.push(us)
            }
        }
        println!("pipeline bench: {n} lookups per round, {rounds} rounds, one thread");
        println!(
            "  bare     {:.2} µs/lookup (median)",
            median(bare_us.clone())
        );
        println!(
            "  guarded  {:.2} µs/lookup while the cache fills, {:.2} once full ({} KiB)",
            median(filling_us),
            median(full_us.clone()),
            cache_bytes >> 10
        );
        println!("pipeline_bare_us={:.2}", median(bare_us));
        println!("pipeline_guarded_full_us={:.2}", median(full_us));
    });
}
