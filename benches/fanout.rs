//! Fan-out overhead benchmark: enrichd against a minimal hyper fan-out proxy, same upstreams, same calls.
//!
//! Run with `cargo bench --bench fanout` (about 90 s). Everything runs in this process on loopback:
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
//! lookup (from `/proc/self/task/*/schedstat`, which is what the ratio comes down to on a shared machine); **open loop** at half the baseline's median saturation
//! rate, alternating again, each request sent at its intended time `t0 + i/rate` from a dedicated
//! scheduler thread and its latency measured from that intended time (coordinated omission included);
//! at most `FANOUT_OPEN_CONNECTIONS` (64) lookups are in flight, like a client with a bounded pool, so
//! a stall queues requests (and counts against their latency) instead of opening thousands of
//! connections and overflowing the listen backlog.
//!
//! The last two lines are the figures tracked by issue 2:
//! `throughput_ratio` (median over rounds of enrichd lookups/s ÷ baseline lookups/s in the same round)
//! and `added_p99_ms` (enrichd p99 − baseline p99 in the open loop, all rounds pooled).
//!
//! Knobs for quick runs and profiling: `FANOUT_CLIENTS`, `FANOUT_WARMUP_SECS`, `FANOUT_SAT_SECS`,
//! `FANOUT_SAT_ROUNDS`, `FANOUT_OPEN_SECS`, `FANOUT_OPEN_ROUNDS`, `FANOUT_OPEN_CONNECTIONS` (64), and `FANOUT_ONLY=enrichd|baseline`
//! (load one system alone at saturation, e.g. under `perf record`, then stop).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};

const JSON: &str = "application/json; charset=utf-8";
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

// ---------------------------------------------------------------------------------------------------
// HTTP/1.1 serving, shared by the fakes and the baseline.

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Serves `handler` on `listener` over HTTP/1.1 keep-alive, one task per connection, until the runtime
/// stops.
async fn serve_http1<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("loopback listener address")
    );
    (listener, url)
}

// ---------------------------------------------------------------------------------------------------
// Upstream fakes: Gravatar v3 and GitHub, real field names and content types, answering at once.

/// Upstream calls received, by endpoint.
#[derive(Default)]
struct Calls {
    gravatar_profiles: AtomicU64,
    github_search: AtomicU64,
    github_users: AtomicU64,
    other: AtomicU64,
}

/// A snapshot of [`Calls`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CallCount {
    profiles: u64,
    search: u64,
    users: u64,
    other: u64,
}

impl Calls {
    fn snapshot(&self) -> CallCount {
        CallCount {
            profiles: self.gravatar_profiles.load(Ordering::Relaxed),
            search: self.github_search.load(Ordering::Relaxed),
            users: self.github_users.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Sub for CallCount {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            profiles: self.profiles - o.profiles,
            search: self.search - o.search,
            users: self.users - o.users,
            other: self.other - o.other,
        }
    }
}

impl CallCount {
    fn per_lookup(&self, lookups: u64) -> String {
        let per = |n: u64| n as f64 / lookups.max(1) as f64;
        format!(
            "{:.2} profile + {:.2} search + {:.2} users (+{} other)",
            per(self.profiles),
            per(self.search),
            per(self.users),
            self.other
        )
    }
}

/// The GitHub login the Gravatar fake reports for a profile hash: new for every email.
fn login_for(hash: &str) -> String {
    format!("b{}", hash.get(..12).unwrap_or(hash))
}

fn gravatar_profile(hash: &str) -> String {
    let login = login_for(hash);
    format!(
        r#"{{"hash":"{hash}","display_name":"Bench Person","profile_url":"https://gravatar.com/{login}","avatar_url":"https://0.gravatar.com/avatar/{hash}","avatar_alt_text":"","location":"London, UK","description":"","job_title":"Principal Engineer","company":"Benchco","verified_accounts":[{{"service_type":"github","service_label":"GitHub","service_icon":"https://gravatar.com/icons/github.svg","url":"https://github.com/{login}","is_hidden":false}}],"pronunciation":"","pronouns":""}}"#
    )
}

const GITHUB_NO_COMMITS: &str = r#"{"total_count":0,"incomplete_results":false,"items":[]}"#;

fn github_user(login: &str) -> String {
    format!(
        r#"{{"login":"{login}","id":1,"node_id":"MDQ6VXNlcjE=","avatar_url":"https://avatars.githubusercontent.com/u/1","html_url":"https://github.com/{login}","type":"User","site_admin":false,"name":"Bench Person","company":"@benchco","blog":"","location":"London","email":null,"hireable":null,"bio":null,"twitter_username":null,"public_repos":3,"public_gists":0,"followers":5,"following":1,"created_at":"2015-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z"}}"#
    )
}

fn not_found() -> Response<Body> {
    reply(
        StatusCode::NOT_FOUND,
        JSON,
        Bytes::from_static(br#"{"message":"Not Found"}"#),
    )
}

async fn gravatar(calls: Arc<Calls>, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path().strip_prefix("/profiles/") {
        Some(hash) if !hash.is_empty() => {
            calls.gravatar_profiles.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, JSON, gravatar_profile(hash))
        }
        _ => {
            calls.other.fetch_add(1, Ordering::Relaxed);
            not_found()
        }
    }
}

async fn github(calls: Arc<Calls>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/search/commits" {
        calls.github_search.fetch_add(1, Ordering::Relaxed);
        return reply(
            StatusCode::OK,
            JSON,
            Bytes::from_static(GITHUB_NO_COMMITS.as_bytes()),
        );
    }
    match path.strip_prefix("/users/") {
        Some(login) if !login.is_empty() => {
            calls.github_users.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::OK, JSON, github_user(login))
        }
        _ => {
            calls.other.fetch_add(1, Ordering::Relaxed);
            not_found()
        }
    }
}

struct Upstreams {
    gravatar: String,
    github: String,
    calls: Arc<Calls>,
}

async fn start_upstreams() -> Upstreams {
    let calls = Arc::new(Calls::default());
    let (gl, gravatar_url) = bind().await;
    let c = calls.clone();
    tokio::spawn(serve_http1(gl, move |req| gravatar(c.clone(), req)));
    let (hl, github_url) = bind().await;
    let c = calls.clone();
    tokio::spawn(serve_http1(hl, move |req| github(c.clone(), req)));
    Upstreams {
        gravatar: gravatar_url,
        github: github_url,
        calls,
    }
}

// ---------------------------------------------------------------------------------------------------
// enrichd, built as tests/it/helpers.rs builds it.

struct Enrichd {
    url: String,
    key: String,
    _data_dir: tempfile::TempDir,
}

fn enrichd_config(up: &Upstreams) -> String {
    let mut c = format!(
        "[server]\nmax_in_flight = 1000000\n\
         [tenants]\nrate_per_minute = 1000000000\nburst = 10000000\n\
         [lookup]\ndefault_timeout_ms = {}\n",
        DEADLINE.as_millis()
    );
    for (name, url) in [("gravatar", &up.gravatar), ("github", &up.github)] {
        c.push_str(&format!(
            "[sources.{name}]\nbase_url = \"{url}\"\ntimeout_ms = 2000\n\
             rate_per_minute = 1000000000\nconcurrency = 1000000\n"
        ));
    }
    // Every other built-in source is off: the bench reaches nothing past loopback.
    for spec in enrichd::sources::registry::BUILTIN {
        if spec.name != "gravatar" && spec.name != "github" {
            c.push_str(&format!("[sources.{}]\nenabled = false\n", spec.name));
        }
    }
    c
}

/// Starts enrichd on the current runtime.
async fn start_enrichd(up: &Upstreams) -> Enrichd {
    let loaded = enrichd::config::Config::from_toml(&enrichd_config(up), &[])
        .expect("bench config is valid");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let app = enrichd::app::App::build(&loaded, data_dir.path()).expect("enrichd builds");
    let key = app
        .state
        .keys
        .create("bench", enrichd::auth::Role::Tenant)
        .expect("tenant key")
        .key;
    let (listener, url) = bind().await;
    tokio::spawn(enrichd::http::serve(
        listener,
        app.router(),
        std::future::pending(),
    ));
    Enrichd {
        url,
        key,
        _data_dir: data_dir,
    }
}

// ---------------------------------------------------------------------------------------------------
// Baseline: a bare hyper server doing the same calls, with no auth, metrics, merge or limits.

struct Baseline {
    http: reqwest::Client,
    gravatar: String,
    github: String,
}

#[derive(Deserialize)]
struct LookupBody {
    email: String,
}

#[derive(Deserialize)]
struct GravatarProfile {
    display_name: Option<String>,
    #[serde(default)]
    verified_accounts: Vec<VerifiedAccount>,
}

#[derive(Deserialize)]
struct VerifiedAccount {
    url: Option<String>,
}

#[derive(Deserialize)]
struct CommitSearch {
    #[serde(default)]
    items: Vec<CommitItem>,
}

#[derive(Deserialize)]
struct CommitItem {
    author: Option<GithubUser>,
}

#[derive(Deserialize)]
struct GithubUser {
    login: String,
    name: Option<String>,
}

impl Baseline {
    async fn get_json<T: DeserializeOwned>(&self, url: String, accept: &'static str) -> Option<T> {
        let resp = self
            .http
            .get(url)
            .header(ACCEPT, accept)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        serde_json::from_slice(&resp.bytes().await.ok()?).ok()
    }

    async fn user(&self, login: &str) -> Option<GithubUser> {
        let url = format!("{}/users/{login}", self.github);
        self.get_json(url, "application/vnd.github+json").await
    }

    /// Gravatar ∥ (GitHub commit search → `/users`), and `/users` for the GitHub account Gravatar
    /// names as soon as Gravatar answers.
    async fn fan_out(&self, email: &str) -> (Option<GravatarProfile>, Option<GithubUser>) {
        let hash = hex::encode(Sha256::digest(email.as_bytes()));
        let via_gravatar = async {
            let url = format!("{}/profiles/{hash}", self.gravatar);
            let profile: Option<GravatarProfile> = self.get_json(url, "application/json").await;
            let login = profile.as_ref().and_then(|p| {
                p.verified_accounts
                    .iter()
                    .filter_map(|a| a.url.as_deref()?.strip_prefix("https://github.com/"))
                    .next()
            });
            let user = match login {
                Some(login) => self.user(login).await,
                None => None,
            };
            (profile, user)
        };
        let via_search = async {
            let q: String =
                url::form_urlencoded::byte_serialize(format!("author-email:{email}").as_bytes())
                    .collect();
            let url = format!("{}/search/commits?q={q}&per_page=5", self.github);
            let search: Option<CommitSearch> =
                self.get_json(url, "application/vnd.github+json").await;
            match search.and_then(|s| s.items.into_iter().find_map(|i| i.author)) {
                Some(author) => self.user(&author.login).await,
                None => None,
            }
        };
        let ((profile, hop_user), search_user) = tokio::join!(via_gravatar, via_search);
        (profile, hop_user.or(search_user))
    }

    async fn lookup(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let Ok(body) = req.into_body().collect().await else {
            return reply(StatusCode::BAD_REQUEST, JSON, "{}");
        };
        let Ok(input) = serde_json::from_slice::<LookupBody>(&body.to_bytes()) else {
            return reply(StatusCode::UNPROCESSABLE_ENTITY, JSON, "{}");
        };
        let email = input.email.trim().to_lowercase();
        let (profile, user) = tokio::time::timeout(DEADLINE, self.fan_out(&email))
            .await
            .unwrap_or((None, None));
        let status = |hit: bool| if hit { "hit" } else { "miss" };
        let answer = serde_json::json!({
            "found": profile.is_some() || user.is_some(),
            "name": user.as_ref().and_then(|u| u.name.clone())
                .or_else(|| profile.as_ref().and_then(|p| p.display_name.clone())),
            "sources": {"gravatar": status(profile.is_some()), "github": status(user.is_some())},
        });
        reply(StatusCode::OK, "application/json", answer.to_string())
    }
}

/// Starts the baseline on the current runtime; answers on any path.
async fn start_baseline(up: &Upstreams) -> String {
    let baseline = Arc::new(Baseline {
        http: reqwest::Client::new(),
        gravatar: up.gravatar.clone(),
        github: up.github.clone(),
    });
    let (listener, url) = bind().await;
    tokio::spawn(serve_http1(listener, move |req| {
        baseline.clone().lookup(req)
    }));
    url
}

// ---------------------------------------------------------------------------------------------------
// Load generator.

/// A system under test as the load generator sees it.
struct Target {
    name: &'static str,
    uri: Uri,
    auth: HeaderValue,
    client: Client<HttpConnector, Body>,
    /// Shared by both targets so that no email is ever sent twice.
    emails: Arc<AtomicU64>,
}

impl Target {
    fn new(name: &'static str, base: &str, key: &str, emails: Arc<AtomicU64>) -> Arc<Self> {
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
    async fn send(&self) -> Result<(StatusCode, Bytes), String> {
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
    async fn lookup(&self) -> Result<(), String> {
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
fn thread_cpu(prefix: &str) -> Duration {
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
struct Saturation {
    per_sec: f64,
    errors: u64,
    first_error: Option<String>,
    calls: CallCount,
    ok: u64,
    /// CPU time of the system-under-test runtime's threads.
    sut_cpu: Duration,
    /// CPU time of the fakes and load generator's threads.
    load_cpu: Duration,
}

impl Saturation {
    fn cpu_us_per_lookup(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }
}

/// `clients` loops sending lookups back to back for `length`; lookups finished inside the window count.
async fn saturate(t: &Arc<Target>, calls: &Calls, clients: u64, length: Duration) -> Saturation {
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
struct OpenLoop {
    latencies: Vec<Duration>,
    send_lag: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Sends `rate` lookups per second for `length`, each at its intended time `t0 + i/rate`, from a
/// dedicated scheduler thread (finer than tokio's 1 ms timer); never waits for answers before
/// scheduling the next. At most `connections` lookups are in flight (so at most that many
/// connections, as a real client pool would); a lookup waiting for a free one is late, and its
/// latency, counted from its intended time, says so.
fn open_loop(
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

// ---------------------------------------------------------------------------------------------------
// Statistics and the run.

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
    if xs.len() % 2 == 0 {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One lookup on each system, checked call by call against the documented scenario.
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

fn main() {
    // Production logs at `info`; the bench pays that filter's cost and throws the lines away.
    enrichd::telemetry::init(Some("info"), false, false, std::io::sink);

    let clients = knob("FANOUT_CLIENTS", 32);
    let connections = knob("FANOUT_OPEN_CONNECTIONS", 64) as usize;
    let warmup = Duration::from_secs(knob("FANOUT_WARMUP_SECS", 2));
    let sat_len = Duration::from_secs(knob("FANOUT_SAT_SECS", 4));
    let sat_rounds = knob("FANOUT_SAT_ROUNDS", 4);
    let open_len = Duration::from_secs(knob("FANOUT_OPEN_SECS", 5));
    let open_rounds = knob("FANOUT_OPEN_ROUNDS", 4);

    let sut = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sut")
        .build()
        .expect("system-under-test runtime");
    let aux = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("load")
        .build()
        .expect("load generator runtime");

    let up = aux.block_on(start_upstreams());
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

    for t in &targets {
        aux.block_on(saturate(t, &up.calls, clients, warmup));
    }
    // Profiling aid: `FANOUT_ONLY=enrichd` (or `baseline`) loads that system alone for the
    // saturation length, then stops.
    if let Ok(only) = std::env::var("FANOUT_ONLY") {
        let t = targets
            .iter()
            .find(|t| t.name == only)
            .expect("FANOUT_ONLY names enrichd or baseline");
        let s = aux.block_on(saturate(t, &up.calls, clients, sat_len));
        println!(
            "{only}: {:.0} lookups/s, CPU/lookup server {:.0} µs, fakes+load {:.0} µs",
            s.per_sec,
            s.cpu_us_per_lookup(s.sut_cpu),
            s.cpu_us_per_lookup(s.load_cpu)
        );
        return;
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

    // Open loop at half the baseline's maximum.
    let rate = (baseline_max / 2.0).max(1.0);
    println!(
        "\nopen loop at {rate:.0} lookups/s ({open_len:?} per system per round, at most {connections} in flight)"
    );
    let mut open: [OpenLoop; 2] = Default::default();
    let mut p99_diffs = Vec::new();
    for round in 0..open_rounds {
        let order: [usize; 2] = if round % 2 == 0 { [1, 0] } else { [0, 1] };
        let mut p99s = [0.0; 2];
        for i in order {
            let r = open_loop(aux.handle(), &targets[i], rate, open_len, connections);
            let mut lat = r.latencies.clone();
            lat.sort();
            println!(
                "  round {round} {:<8} p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
                targets[i].name,
                ms(percentile(&lat, 50.0)),
                ms(percentile(&lat, 99.0)),
                r.errors
            );
            if let Some(e) = &r.first_error {
                println!("    first error: {e}");
            }
            p99s[i] = ms(percentile(&lat, 99.0));
            open[i].latencies.extend(r.latencies);
            open[i].send_lag.extend(r.send_lag);
            open[i].errors += r.errors;
        }
        p99_diffs.push(p99s[0] - p99s[1]);
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
        "  saturation  enrichd {enrichd_max:.0} lookups/s, baseline {baseline_max:.0} lookups/s (medians); per-round ratios {}",
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
            "  open loop   {:<8} p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  ({} ok, {} errors; send lag p99 {:.3} ms, scheduler + wait for a free slot)",
            t.name,
            ms(p[i][0]),
            ms(p[i][1]),
            ms(p[i][2]),
            open[i].latencies.len(),
            open[i].errors,
            ms(p[i][3]),
        );
    }
    println!(
        "  open loop   per-round p99 differences (enrichd − baseline) {} ms, median {:.3} ms",
        p99_diffs
            .iter()
            .map(|d| format!("{d:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(p99_diffs.clone())
    );
    println!("  goals: throughput_ratio >= 0.8, added_p99_ms <= 1.0");
    println!("throughput_ratio={throughput_ratio:.3}");
    println!("added_p99_ms={:.3}", ms(p[0][1]) - ms(p[1][1]));

    sut.shutdown_background();
    aux.shutdown_background();
}
