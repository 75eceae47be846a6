//! The load generator: closed loop at saturation, open loop at a fixed rate, and per-thread CPU time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Handle;

use crate::REQUEST_TIMEOUT;
use crate::upstreams::{Body, CallCount, Calls};

/// A system under test as the load generator sees it.
pub struct Target {
    pub name: &'static str,
    uri: Uri,
    auth: HeaderValue,
    client: Client<HttpConnector, Body>,
    /// Shared by both targets so that no email is ever sent twice.
    emails: Arc<AtomicU64>,
}

impl Target {
    pub fn new(name: &'static str, base: &str, key: &str, emails: Arc<AtomicU64>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Arc::new(Self {
            name,
            uri: format!("{base}/v1/lookup").parse().expect("lookup URI"),
            auth: HeaderValue::from_str(&format!("Bearer {key}")).expect("key is a header value"),
            client: Client::builder(TokioExecutor::new()).build(connector),
            emails,
        })
    }

    /// One lookup of a new email: the status and body, or why it failed.
    pub async fn send(&self) -> Result<(StatusCode, Bytes), String> {
        let n = self.emails.fetch_add(1, Ordering::Relaxed);
        let req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, self.auth.clone())
            .body(Full::new(Bytes::from(format!(
                r#"{{"email":"bench-{n}@example.com"}}"#
            ))))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    }

    /// One lookup that must answer 200 within [`REQUEST_TIMEOUT`]; else why not.
    pub async fn lookup(&self) -> Result<(), String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send()).await {
            Ok(Ok((StatusCode::OK, _))) => Ok(()),
            Ok(Ok((status, _))) => Err(format!("status {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
}

/// CPU time spent so far by this process's threads whose name starts with `prefix`
/// (`/proc/self/task/*/schedstat`, nanoseconds on CPU).
pub fn thread_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// What one closed-loop run measured.
pub struct Saturation {
    pub per_sec: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub calls: CallCount,
    pub ok: u64,
    /// CPU time of the system-under-test runtime's threads.
    pub sut_cpu: Duration,
    /// CPU time of the fakes and load generator's threads.
    pub load_cpu: Duration,
}

impl Saturation {
    pub fn cpu_us_per_lookup(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }
}

/// `clients` loops sending lookups back to back for `length`; lookups finished inside the window count.
pub async fn saturate(
    t: &Arc<Target>,
    calls: &Calls,
    clients: u64,
    length: Duration,
) -> Saturation {
    let before = calls.snapshot();
    let (sut_before, load_before) = (thread_cpu("sut"), thread_cpu("load"));
    let end = tokio::time::Instant::now() + length;
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                while tokio::time::Instant::now() < end {
                    let result = t.lookup().await;
                    if tokio::time::Instant::now() > end {
                        break;
                    }
                    match result {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (ok, errors, first_error)
            })
        })
        .collect();
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for l in loops {
        let (o, e, first) = l.await.expect("client loop");
        ok += o;
        errors += e;
        first_error = first_error.or(first);
    }
    Saturation {
        per_sec: ok as f64 / length.as_secs_f64(),
        errors,
        first_error,
        calls: calls.snapshot() - before,
        ok,
        sut_cpu: thread_cpu("sut") - sut_before,
        load_cpu: thread_cpu("load") - load_before,
    }
}

/// What one open-loop run measured: latencies from the intended send time, how late each lookup was
/// actually sent, and how busy the machine was meanwhile.
#[derive(Default)]
pub struct OpenLoop {
    pub latencies: Vec<Duration>,
    pub send_lag: Vec<Duration>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// CPU time of this whole process (servers, fakes, load) while the lookups ran.
    pub process_cpu: Duration,
    /// Time this machine's CPUs were taken by the hypervisor for others (`steal` in `/proc/stat`).
    pub stolen: Duration,
    pub wall: Duration,
}

impl OpenLoop {
    /// Share of the machine's cores this process kept busy (1.0 = every core, all the time).
    pub fn busy(&self) -> f64 {
        self.share_of_cores(self.process_cpu)
    }

    /// Share of the machine's core time the hypervisor gave to others.
    pub fn stolen_share(&self) -> f64 {
        self.share_of_cores(self.stolen)
    }

    /// `time` as a share of all the machine's core time over the run.
    fn share_of_cores(&self, time: Duration) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        time.as_secs_f64() / (self.wall.as_secs_f64() * cores as f64).max(f64::EPSILON)
    }

    pub fn absorb(&mut self, other: OpenLoop) {
        self.latencies.extend(other.latencies);
        self.send_lag.extend(other.send_lag);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// CPU time stolen from this machine so far: the `steal` column of `/proc/stat`'s `cpu` line, in
/// clock ticks of 10 ms.
fn stolen_so_far() -> Duration {
    let ticks = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()?
                .split_whitespace()
                .nth(8)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Sends `rate` lookups per second for `length`, lookup `i` due at `t0 + i/rate`, and measures each
/// one's latency from that intended time (coordinated omission included).
///
/// `connections` sender tasks on the load runtime take the lookups in order: each claims the next
/// one, sleeps until it is due and sends it, so at most `connections` lookups are in flight, as with
/// a client's bounded pool; a lookup that finds every sender busy goes out late, and its latency says
/// so. The senders wait on tokio's timer, which fires every millisecond for all the lookups due in
/// it: a lookup may go out up to 1 ms after its time, for both systems alike, and that counts in its
/// latency. (A thread of its own sleeping to each send time, as before, cost a wake-up and a
/// cross-thread spawn per lookup, which took CPU from the servers it was meant to measure.)
pub fn open_loop(
    rt: &Handle,
    t: &Arc<Target>,
    rate: f64,
    length: Duration,
    connections: usize,
) -> OpenLoop {
    let n = (rate * length.as_secs_f64()) as u64;
    let (cpu_before, stolen_before) = (thread_cpu(""), stolen_so_far());
    let wall = std::time::Instant::now();
    let mut out = rt.block_on(async {
        let t0 = tokio::time::Instant::now() + Duration::from_millis(2);
        let claimed = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..connections)
            .map(|_| {
                let (t, claimed) = (t.clone(), claimed.clone());
                tokio::spawn(async move {
                    let mut out = OpenLoop::default();
                    loop {
                        let i = claimed.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break out;
                        }
                        let intended = t0 + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(intended).await;
                        out.send_lag.push(intended.elapsed());
                        match t.lookup().await {
                            Ok(()) => out.latencies.push(intended.elapsed()),
                            Err(e) => {
                                out.errors += 1;
                                out.first_error.get_or_insert(e);
                            }
                        }
                    }
                })
            })
            .collect();
        let mut out = OpenLoop::default();
        for s in senders {
            out.absorb(s.await.expect("open-loop sender"));
        }
        out
    });
    out.wall = wall.elapsed();
    out.process_cpu = thread_cpu("") - cpu_before;
    out.stolen = stolen_so_far() - stolen_before;
    out
}
