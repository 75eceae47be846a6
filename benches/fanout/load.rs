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

/// What one open-loop run measured: latencies from the intended send time, and how late the scheduler
/// actually sent.
#[derive(Default)]
pub struct OpenLoop {
    pub latencies: Vec<Duration>,
    pub send_lag: Vec<Duration>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Sends `rate` lookups per second for `length`, each at its intended time `t0 + i/rate`, from a
/// dedicated scheduler thread (finer than tokio's 1 ms timer); never waits for answers before
/// scheduling the next. At most `connections` lookups are in flight (so at most that many
/// connections, as a real client pool would); a lookup waiting for a free one is late, and its
/// latency, counted from its intended time, says so.
pub fn open_loop(
    rt: &Handle,
    t: &Arc<Target>,
    rate: f64,
    length: Duration,
    connections: usize,
) -> OpenLoop {
    let slots = Arc::new(tokio::sync::Semaphore::new(connections));
    let n = (rate * length.as_secs_f64()) as u64;
    let t0 = std::time::Instant::now() + Duration::from_millis(2);
    let mut pending = Vec::with_capacity(n as usize);
    for i in 0..n {
        let intended = t0 + Duration::from_secs_f64(i as f64 / rate);
        let now = std::time::Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let (t, slots) = (t.clone(), slots.clone());
        pending.push(rt.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("slots stay open");
            let lag = intended.elapsed();
            let result = t.lookup().await;
            (result, intended.elapsed(), lag)
        }));
    }
    rt.block_on(async {
        let mut out = OpenLoop::default();
        for p in pending {
            let (result, latency, lag) = p.await.expect("open-loop request");
            out.send_lag.push(lag);
            match result {
                Ok(()) => out.latencies.push(latency),
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
            }
        }
        out
    })
}
