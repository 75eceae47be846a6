//! The memory phase: what a lookup in flight costs each system in resident memory.
//!
//! Each system runs alone in a child process (this executable again, with `FANOUT_SERVE` naming the
//! system), so that its resident set holds nothing of the fakes or the load generator. The fakes hold
//! every call for [`HOLD`] before answering; `lookups` lookups are sent within about a second and all
//! stay in flight for two holds (the two parallel calls, then the hop). The child's `VmRSS` is read
//! once the warm-up has settled and then every few milliseconds until every lookup has answered; the
//! figure is the peak above the settled level, per lookup.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::load::Target;
use crate::upstreams::Upstreams;

/// How long the fakes hold every call in this phase.
pub const HOLD: Duration = Duration::from_secs(2);

/// Lookups in flight the phase aims for.
pub const TARGET_LOOKUPS: u64 = 10_000;

/// Open files one lookup in flight takes in a server process (its client's connection and two upstream
/// calls at once), and as many again in this process (the client's end and the fakes' ends).
const FILES_PER_LOOKUP: u64 = 3;

/// Open files kept for everything else (listeners, the runtime, the data dir, stdio).
const FILES_SPARE: u64 = 256;

/// What one system's phase measured.
pub struct Memory {
    pub idle_kib: u64,
    pub peak_kib: u64,
    pub lookups: u64,
    pub errors: u64,
}

impl Memory {
    pub fn kib_per_lookup(&self) -> f64 {
        self.peak_kib.saturating_sub(self.idle_kib) as f64 / self.lookups.max(1) as f64
    }
}

/// How many lookups this machine's open-file limit lets the phase hold in flight, at most `wanted`,
/// after raising this process's soft limit to its hard one (a child inherits it).
pub fn lookups_that_fit(wanted: u64) -> (u64, u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
    let files = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fit = files.saturating_sub(FILES_SPARE) / FILES_PER_LOOKUP;
    (wanted.min(fit), files)
}

/// A system under test in a child process; it stops when its standard input closes.
pub struct Served {
    child: Child,
    pub url: String,
    pub key: String,
}

impl Served {
    /// Starts `system` against the fakes `up` and waits for it to listen.
    pub fn start(system: &str, up: &Upstreams) -> Self {
        let exe = std::env::current_exe().expect("the bench's own executable");
        let mut child = Command::new(exe)
            .env("FANOUT_SERVE", system)
            .env("FANOUT_GRAVATAR", &up.gravatar)
            .env("FANOUT_GITHUB", &up.github)
            .env("FANOUT_HOLD_MS", HOLD.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the system under test");
        let stdout = child.stdout.take().expect("child stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the child says where it listens");
        let mut words = line.split_whitespace();
        let (url, key) = match (words.next(), words.next()) {
            (Some(url), Some(key)) => (url.to_string(), key.to_string()),
            _ => panic!("{system} did not start: {line:?}"),
        };
        Self { child, url, key }
    }

    /// Resident memory of the child, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Closes the child's standard input and waits for it to exit.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Serves `system` in this (child) process until standard input closes: prints `URL KEY` on the
/// first line of standard output.
pub fn serve_child(system: &str) {
    let up = Upstreams {
        gravatar: std::env::var("FANOUT_GRAVATAR").expect("FANOUT_GRAVATAR"),
        github: std::env::var("FANOUT_GITHUB").expect("FANOUT_GITHUB"),
        calls: Arc::default(),
    };
    let rt = crate::sut_runtime();
    let (url, key, _guard) = rt.block_on(async {
        match system {
            "enrichd" => {
                let e = crate::systems::start_enrichd(&up).await;
                (e.url.clone(), e.key.clone(), Some(e))
            }
            _ => (
                crate::systems::start_baseline(&up).await,
                "-".to_string(),
                None,
            ),
        }
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{url} {key}");
    let _ = out.flush();
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    rt.shutdown_background();
}

/// Sends `lookups` lookups to `served` (in batches, so the listener's backlog keeps up) while the
/// fakes hold every call, and reads the child's memory until they have all answered.
pub fn measure(aux: &Runtime, served: &Served, name: &'static str, lookups: u64) -> Memory {
    let emails = Arc::new(AtomicU64::new(1 << 40));
    let target = Target::new(name, &served.url, &served.key, emails);
    // Warm-up: lazily built tables, the first connections; then let the allocator settle.
    aux.block_on(async {
        let warm: Vec<_> = (0..16)
            .map(|_| {
                let t = target.clone();
                tokio::spawn(async move { t.send().await })
            })
            .collect();
        for w in warm {
            let _ = w.await;
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let idle_kib = served.rss_kib();
    let (peak_kib, errors) = aux.block_on(async {
        let mut sent = Vec::with_capacity(lookups as usize);
        let mut peak = 0;
        let batch = 500;
        for start in (0..lookups).step_by(batch) {
            for _ in start..(start + batch as u64).min(lookups) {
                let t = target.clone();
                sent.push(tokio::spawn(async move {
                    tokio::time::timeout(6 * HOLD + Duration::from_secs(10), t.send()).await
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak = peak.max(served.rss_kib());
        }
        while sent.iter().any(|s| !s.is_finished()) {
            peak = peak.max(served.rss_kib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut errors = 0;
        for s in sent {
            if !matches!(s.await, Ok(Ok(Ok((hyper::StatusCode::OK, _))))) {
                errors += 1;
            }
        }
        (peak, errors)
    });
    Memory {
        idle_kib,
        peak_kib,
        lookups,
        errors,
    }
}
