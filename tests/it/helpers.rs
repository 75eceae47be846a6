//! Test harness: the real server on 127.0.0.1:0, upstream fakes over real HTTP on loopback that speak
//! the real APIs' formats and fail the way real services fail, and a log capture.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use enrichd::app::{App, Background};
use enrichd::auth::Role;
use enrichd::blob::Clock;
use enrichd::config::Config;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What a fake answers on one path (path and query, exactly as the real client sends it).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// What the reply waits for before it is sent: the test (or another reply) decides when.
    pub gate: Option<Gate>,
    /// Extra response headers (`Retry-After`, ...).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(body: serde_json::Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json; charset=utf-8",
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
            gate: None,
            headers: Vec::new(),
        }
    }

    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
            gate: None,
            headers: Vec::new(),
        }
    }

    pub fn raw(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
            delay: Duration::ZERO,
            gate: None,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sent only once `gate` is passed (every other party has reached it too).
    pub fn gated(mut self, gate: Arc<tokio::sync::Barrier>) -> Self {
        self.gate = Some(Gate::Barrier(gate));
        self
    }

    /// Sent only once the test opens `latch` (every request waiting on it, and any later, passes).
    pub fn held(mut self, latch: Arc<Latch>) -> Self {
        self.gate = Some(Gate::Latch(latch));
        self
    }
}

/// What a gated reply waits for.
#[derive(Clone, Debug)]
pub enum Gate {
    Barrier(Arc<tokio::sync::Barrier>),
    Latch(Arc<Latch>),
}

/// A gate that stays shut until the test opens it, then stays open.
#[derive(Debug)]
pub struct Latch(tokio::sync::Semaphore);

impl Latch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(tokio::sync::Semaphore::new(0)))
    }

    pub fn open(&self) {
        self.0.close();
    }

    async fn pass(&self) {
        // A closed semaphore answers every acquire at once.
        let _ = self.0.acquire().await;
    }
}

#[derive(Default)]
struct FakeState {
    replies: HashMap<String, Reply>,
    hits: HashMap<String, usize>,
    default: Option<Reply>,
}

/// A loopback HTTP server standing in for one upstream API.
#[derive(Clone)]
pub struct Fake {
    pub url: String,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// Answers `reply` on `path_and_query`.
    pub fn on(&self, path_and_query: &str, reply: Reply) -> &Self {
        self.state
            .lock()
            .expect("fake lock")
            .replies
            .insert(path_and_query.to_string(), reply);
        self
    }

    /// Answers `reply` on every path without a specific reply (default: 404).
    pub fn otherwise(&self, reply: Reply) -> &Self {
        self.state.lock().expect("fake lock").default = Some(reply);
        self
    }

    pub fn hits(&self, path_and_query: &str) -> usize {
        self.state
            .lock()
            .expect("fake lock")
            .hits
            .get(path_and_query)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.state.lock().expect("fake lock").hits.values().sum()
    }
}

async fn answer(State(state): State<Arc<Mutex<FakeState>>>, req: Request) -> Response {
    let key = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let reply = {
        let mut s = state.lock().expect("fake lock");
        *s.hits.entry(key.clone()).or_default() += 1;
        s.replies.get(&key).cloned().or_else(|| s.default.clone())
    };
    let reply = reply.unwrap_or_else(|| Reply::status(404, r#"{"error":"Not Found"}"#));
    tokio::time::sleep(reply.delay).await;
    match &reply.gate {
        Some(Gate::Barrier(b)) => {
            b.wait().await;
        }
        Some(Gate::Latch(l)) => l.pass().await,
        None => {}
    }
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value);
    }
    builder
        .header(header::CONTENT_TYPE, reply.content_type)
        .body(Body::from(reply.body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A loopback port that accepts connections and closes them without answering, like a crashing upstream.
pub async fn closing_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    url
}

/// Gravatar v3 and GitHub fakes with helpers that register real-format answers.
pub struct Upstreams {
    pub gravatar: Fake,
    pub github: Fake,
}

impl Upstreams {
    pub async fn start() -> Self {
        Self {
            gravatar: Fake::start().await,
            github: Fake::start().await,
        }
    }

    pub fn config(&self) -> String {
        self.config_with_timeout(1500)
    }

    /// [`Upstreams::config`] with another source timeout.
    pub fn config_with_timeout(&self, timeout_ms: u64) -> String {
        format!(
            "[sources.gravatar]\nbase_url = \"{}\"\ntimeout_ms = {timeout_ms}\n[sources.github]\nbase_url = \"{}\"\ntimeout_ms = {timeout_ms}\n",
            self.gravatar.url, self.github.url
        )
    }

    pub fn gravatar_path(email: &str) -> String {
        format!(
            "/profiles/{}",
            hex::encode(Sha256::digest(email.trim().to_lowercase().as_bytes()))
        )
    }

    pub fn github_search_path(email: &str) -> String {
        let q: String =
            url::form_urlencoded::byte_serialize(format!("author-email:{email}").as_bytes())
                .collect();
        format!("/search/commits?q={q}&per_page=5")
    }

    /// A Gravatar hit for `email` (company Acme) that answers only after `delay`.
    pub fn slow_gravatar_hit(&self, email: &str, name: &str, delay: Duration) {
        let reply = self.gravatar_profile(email, name, "Acme", None);
        self.gravatar
            .on(&Self::gravatar_path(email), reply.after(delay));
    }

    /// A Gravatar v3 profile as documented (snake_case fields, verified_accounts, contact_info).
    pub fn gravatar_profile(
        &self,
        email: &str,
        name: &str,
        company: &str,
        github_login: Option<&str>,
    ) -> Reply {
        let accounts: Vec<serde_json::Value> = github_login
            .map(|l| serde_json::json!({"service_type": "github", "service_label": "GitHub",
                "service_icon": "https://gravatar.com/icons/github.svg", "url": format!("https://github.com/{l}"), "is_hidden": false}))
            .into_iter()
            .collect();
        let reply = Reply::json(serde_json::json!({
            "hash": hex::encode(Sha256::digest(email.as_bytes())),
            "display_name": name,
            "profile_url": "https://gravatar.com/someone",
            "avatar_url": "https://0.gravatar.com/avatar/abc",
            "avatar_alt_text": "",
            "location": "London, UK",
            "description": "",
            "job_title": "Principal Engineer",
            "company": company,
            "verified_accounts": accounts,
            "pronunciation": "",
            "pronouns": ""
        }));
        self.gravatar.on(&Self::gravatar_path(email), reply.clone());
        reply
    }

    /// GitHub commit search finding `login` for `email`, and the user document.
    pub fn github_user(&self, email: &str, login: &str, name: &str, company: &str) {
        self.github.on(
            &Self::github_search_path(email),
            Reply::json(serde_json::json!({"total_count": 1, "incomplete_results": false, "items": [{
                "url": "https://api.github.com/repos/o/r/commits/abc", "sha": "abc",
                "commit": {"author": {"name": name, "email": email, "date": "2024-01-01T00:00:00Z"}, "message": "m"},
                "author": {"login": login, "id": 1, "type": "User"}, "repository": {"full_name": "o/r"}, "score": 1.0}]})),
        );
        self.github.on(
            &format!("/users/{login}"),
            Self::github_user_doc(login, name, company),
        );
    }

    pub fn github_user_doc(login: &str, name: &str, company: &str) -> Reply {
        Reply::json(serde_json::json!({
            "login": login, "id": 1, "node_id": "MDQ6VXNlcjE=", "avatar_url": "https://avatars.githubusercontent.com/u/1",
            "html_url": format!("https://github.com/{login}"), "type": "User", "site_admin": false,
            "name": name, "company": format!("@{company}"), "blog": "", "location": "London",
            "email": null, "hireable": null, "bio": null, "twitter_username": null,
            "public_repos": 3, "public_gists": 0, "followers": 5, "following": 1,
            "created_at": "2015-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"
        }))
    }
}

/// Where a test server keeps its state: the local directory (the default store) or a shared S3
/// store (moto on loopback, a bucket of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    File,
    S3,
}

/// A shared S3 store for test servers: a fresh bucket on this process's moto, and the exclusion and
/// storage keys in files (a shared store never generates them), passed as the environment.
#[derive(Clone)]
pub struct S3Setup {
    pub url: String,
    pub vars: Vec<(String, String)>,
    _keys: Arc<tempfile::TempDir>,
}

/// The storage (master) key of every test store.
pub const STORAGE_KEY: &str = "9c2e4f6a8b0d1e3f5a7c9e1b3d5f7a9c0e2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c";

impl S3Setup {
    pub async fn new() -> Self {
        let moto = enrichd::testkit::moto();
        let bucket = moto.bucket().await;
        let keys = tempfile::tempdir().expect("key dir");
        let exclusion_key = keys.path().join("exclusion.key");
        let storage_key = keys.path().join("storage.key");
        std::fs::write(&exclusion_key, crate::binary::KEY).expect("exclusion key file");
        std::fs::write(&storage_key, STORAGE_KEY).expect("storage key file");
        let url = format!("s3://{bucket}/enrichd");
        let mut vars = moto.env();
        vars.push(("ENRICHD_STORE__URL".into(), url.clone()));
        vars.push((
            "ENRICHD_STORE__KEY_FILE".into(),
            storage_key.display().to_string(),
        ));
        vars.push((
            "ENRICHD_EXCLUSION__KEY_FILE".into(),
            exclusion_key.display().to_string(),
        ));
        Self {
            url,
            vars,
            _keys: Arc::new(keys),
        }
    }

    /// The store as a test reads it from outside the servers.
    pub fn store(&self) -> enrichd::store::Store {
        let url = enrichd::store::StoreUrl::parse(&self.url).expect("url");
        enrichd::store::Store::open(
            &url,
            &enrichd::testkit::moto().secrets(),
            Arc::new(enrichd::telemetry::Metrics::new()),
        )
        .expect("store")
    }

    /// Every object in the bucket: its name and bytes.
    pub async fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let store = self.store();
        let mut out = Vec::new();
        for top in ["batches", "indexes", "batch-keys", "state", "leases"] {
            let listed = store
                .objects()
                .list(&enrichd::store::ObjectPath::from(top))
                .await
                .expect("list");
            for m in listed {
                // An object may go between the listing and the read (a job deletes its input
                // just after it says `done`): what is gone is not stored.
                match store.objects().get(&m.location).await {
                    Ok(got) => out.push((m.location.to_string(), got.bytes.to_vec())),
                    Err(enrichd::store::StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("get {}: {e}", m.location),
                }
            }
        }
        out
    }
}

/// The real service on 127.0.0.1:0 with its own data dir and one tenant key.
pub struct Server {
    pub url: String,
    /// The operator's listener (`server.metrics_listen`): `/metrics` without a key.
    pub metrics_url: String,
    pub key: String,
    pub admin_key: String,
    pub http: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    /// The running state, for tests that reach below HTTP (the opt-out hooks, the key store).
    pub state: enrichd::http::AppState,
    /// The shared store, when the server runs on one.
    pub s3: Option<S3Setup>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The metrics listener's shutdown and task.
    metrics_task: Option<(
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
    background: Option<Background>,
}

/// A change made to the built app before it serves.
pub type Customize = Box<dyn FnOnce(&mut App)>;

/// How a test server is started.
#[derive(Default)]
pub struct Launch<'a> {
    pub env: &'a [(&'a str, &'a str)],
    /// Reuse a data directory (a restart); a fresh one otherwise.
    pub data_dir: Option<tempfile::TempDir>,
    /// The clock deciding batch expiry; the system clock otherwise.
    pub clock: Option<Arc<dyn Clock>>,
    /// Changes the built app (registers opt-out hooks, ...) before it serves.
    pub customize: Option<Customize>,
    /// The store: the data directory's (default), or a new S3 bucket.
    pub mode: Option<Mode>,
    /// Reuse a shared store (a restart); implies S3.
    pub s3: Option<S3Setup>,
}

impl Server {
    pub async fn start(config: &str) -> Self {
        Self::start_with_env(config, &[]).await
    }

    /// [`Server::start`] on the given store.
    pub async fn start_in(mode: Mode, config: &str) -> Self {
        Self::launch(
            config,
            Launch {
                mode: Some(mode),
                ..Launch::default()
            },
        )
        .await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_custom(config, env, |_| {}).await
    }

    /// Like [`Server::start_with_env`], with a chance to change the built app (register opt-out
    /// hooks, ...) before it serves.
    pub async fn start_custom(
        config: &str,
        env: &[(&str, &str)],
        customize: impl FnOnce(&mut App) + 'static,
    ) -> Self {
        Self::launch(
            config,
            Launch {
                env,
                customize: Some(Box::new(customize)),
                ..Launch::default()
            },
        )
        .await
    }

    /// Starts the service as `enrichd serve` does, background batch workers and sweeper included.
    pub async fn launch(config: &str, how: Launch<'_>) -> Self {
        capture_logs();
        let mut vars: Vec<(String, String)> = how
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s3 = match (how.s3, how.mode) {
            (Some(s3), _) => Some(s3),
            (None, Some(Mode::S3)) => Some(S3Setup::new().await),
            (None, _) => None,
        };
        if let Some(s3) = &s3 {
            vars.extend(s3.vars.iter().cloned());
            // Shared state is followed faster in tests than the default, and leases are short.
            vars.push(("ENRICHD_STORE__REFRESH_MS".into(), "100".into()));
        }
        let loaded =
            Config::from_toml(&loopback_only(config), &vars).expect("test config is valid");
        assert_loopback(&loaded);
        let data_dir = how
            .data_dir
            .unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let clock = how
            .clock
            .unwrap_or_else(|| Arc::new(enrichd::blob::SystemClock));
        let mut app = App::build_with_clock(&loaded, data_dir.path(), clock)
            .await
            .expect("app builds");
        if let Some(customize) = how.customize {
            customize(&mut app);
        }
        let background = app.start_background().await.expect("background starts");
        let key = app
            .state
            .keys
            .create("tenant-a", Role::Tenant)
            .await
            .expect("key")
            .key;
        let admin_key = app
            .state
            .keys
            .create("ops", Role::Admin)
            .await
            .expect("key")
            .key;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let router = app.router();
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics_url = format!("http://{}", metrics.local_addr().expect("addr"));
        let (metrics_tx, metrics_rx) = oneshot::channel::<()>();
        let metrics_task = tokio::spawn(enrichd::http::serve(
            metrics,
            app.metrics_router(),
            async move {
                let _ = metrics_rx.await;
            },
        ));
        let task = tokio::spawn(enrichd::http::serve(listener, router, async move {
            let _ = rx.await;
        }));
        Self {
            url,
            metrics_url,
            key,
            admin_key,
            http: reqwest::Client::new(),
            data_dir,
            state: app.state.clone(),
            s3,
            shutdown: Some(tx),
            task: Some(task),
            metrics_task: Some((metrics_tx, metrics_task)),
            background: Some(background),
        }
    }

    /// A new tenant key for another tenant (isolation tests).
    pub async fn tenant_key(&self, tenant: &str) -> String {
        self.state
            .keys
            .create(tenant, Role::Tenant)
            .await
            .expect("key")
            .key
    }

    /// The exclusion key the server hashes with, as hex.
    pub fn exclusion_key_hex(&self) -> String {
        match &self.s3 {
            Some(_) => crate::binary::KEY.to_string(),
            None => std::fs::read_to_string(self.data_dir.path().join("exclusion.key"))
                .expect("the generated exclusion key"),
        }
    }

    /// `grep -r` over everything the server stored (its data dir, and its bucket if it has one): the
    /// (place, needle) pairs where stored bytes contain a needle, ignoring case.
    pub async fn grep_stored(&self, needles: &[String]) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = grep_dir(self.data_dir.path(), needles)
            .into_iter()
            .map(|(p, n)| (p.display().to_string(), n))
            .collect();
        if let Some(s3) = &self.s3 {
            for (name, bytes) in s3.objects().await {
                let text = String::from_utf8_lossy(&bytes).to_lowercase();
                for n in needles {
                    if text.contains(&n.to_lowercase()) {
                        found.push((name.clone(), n.clone()));
                    }
                }
            }
        }
        found
    }

    /// Every stored object of the batch area (`batches/`, `indexes/`, `batch-keys/`): its name and
    /// bytes, from the directory or the bucket.
    pub async fn batch_objects(&self) -> Vec<(String, Vec<u8>)> {
        match &self.s3 {
            Some(s3) => s3
                .objects()
                .await
                .into_iter()
                .filter(|(name, _)| {
                    ["batches/", "indexes/", "batch-keys/"]
                        .iter()
                        .any(|p| name.starts_with(p))
                })
                .collect(),
            None => ["batches", "indexes", "batch-keys"]
                .iter()
                .flat_map(|area| {
                    let dir = self.data_dir.path().join("blobs").join(area);
                    if dir.exists() {
                        files_under(&dir)
                    } else {
                        Vec::new()
                    }
                })
                .map(|p| {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    (p.display().to_string(), bytes)
                })
                .collect(),
        }
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// Stops the server and its batch workers at once (a crash, as far as batches can tell) and hands
    /// back what a restart needs: its data directory, and its shared store if it has one.
    pub async fn kill_keep_data(mut self) -> (tempfile::TempDir, Option<S3Setup>) {
        drop(self.background.take());
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some((tx, task)) = self.metrics_task.take() {
            let _ = tx.send(());
            task.abort();
            let _ = task.await;
        }
        (self.data_dir, self.s3.take())
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// Uploads `csv` as a batch with the server's own key, waits until it ends (polling slowly
    /// enough to stay within the tenant's rate while rows wait for their sources' budget) and
    /// returns its summary, which must say `done`, and its CSV result.
    pub async fn run_batch(&self, csv: impl Into<reqwest::Body>) -> (serde_json::Value, String) {
        let resp = self
            .post("/v1/batches")
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .expect("upload");
        assert_eq!(resp.status().as_u16(), 202);
        let created: serde_json::Value = resp.json().await.expect("json");
        let id = created["id"].as_str().expect("id").to_string();
        let started = std::time::Instant::now();
        let summary = loop {
            let summary: serde_json::Value = self
                .get(&format!("/v1/batches/{id}"))
                .send()
                .await
                .expect("summary")
                .json()
                .await
                .expect("json");
            if matches!(
                summary["status"].as_str(),
                Some("done" | "failed" | "expired")
            ) {
                break summary;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the batch never finished: {summary}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(summary["status"], "done", "{summary}");
        let csv = self
            .get(&format!("/v1/batches/{id}/result.csv"))
            .send()
            .await
            .expect("result")
            .text()
            .await
            .expect("text");
        (summary, csv)
    }

    /// GET /v1/batches with the server's own key: the tenant's batch list.
    pub async fn batches(&self) -> serde_json::Value {
        self.get("/v1/batches")
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json")
    }

    /// POST /v1/lookup with a JSON body; returns status and JSON.
    pub async fn lookup(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self
            .post("/v1/lookup")
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// Sends a lookup from its own task and waits until `arrived` says it reached its upstream (a
    /// fake's hit count), so that it is in flight.
    pub async fn lookup_in_flight(
        &self,
        body: serde_json::Value,
        arrived: impl FnMut() -> bool,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let task = tokio::spawn(self.post("/v1/lookup").json(&body).send());
        wait_until("the lookup to reach its upstream", arrived).await;
        task
    }

    pub async fn stop(mut self) {
        if let Some(background) = self.background.take() {
            background.stop().await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some((tx, task)) = self.metrics_task.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }
}

/// `config` with every built-in source it does not configure turned off, so no test reaches past loopback.
pub fn loopback_only(config: &str) -> String {
    let mut out = config.to_string();
    for spec in enrichd::sources::registry::BUILTIN {
        if !config.contains(&format!("[sources.{}]", spec.name)) {
            out.push_str(&format!("\n[sources.{}]\nenabled = false\n", spec.name));
        }
    }
    out
}

/// Refuses a test configuration with an enabled source whose base URL is not on loopback.
pub fn assert_loopback(loaded: &enrichd::config::Loaded) {
    for (name, c) in &loaded.sources {
        let local = ["http://127.0.0.1:", "dns://127.0.0.1:", "http://[::1]:"]
            .iter()
            .any(|p| c.base_url.starts_with(p));
        assert!(
            !c.enabled || local || name == &"finder",
            "test config leaves source {name} enabled on {}",
            c.base_url
        );
    }
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once per test binary, a subscriber at `trace` for every crate that writes into a buffer
/// (and to stderr with `TEST_LOG=1`).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        enrichd::telemetry::init(Some("trace"), false, false, move || writer.clone());
        buf
    });
}

/// Everything logged so far by every test in this binary.
pub fn captured_logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.lock().expect("log lock")).into_owned())
        .unwrap_or_default()
}

impl Upstreams {
    /// A Gravatar v3 profile with contact info (as returned with an API key) and verified accounts.
    pub fn gravatar_contact(
        &self,
        email: &str,
        name: &str,
        phones: &[&str],
        contact_email: Option<&str>,
        accounts: &[&str],
    ) {
        let accounts: Vec<serde_json::Value> = accounts
            .iter()
            .map(|url| serde_json::json!({"service_type": "other", "service_label": "Site",
                "service_icon": "https://gravatar.com/icons/link.svg", "url": url, "is_hidden": false}))
            .collect();
        let mut contact = serde_json::Map::new();
        for (key, phone) in ["cell_phone", "work_phone", "home_phone"]
            .iter()
            .zip(phones)
        {
            contact.insert(key.to_string(), serde_json::json!(phone));
        }
        if let Some(e) = contact_email {
            contact.insert("email".into(), serde_json::json!(e));
        }
        let reply = Reply::json(serde_json::json!({
            "hash": hex::encode(Sha256::digest(email.trim().to_lowercase().as_bytes())),
            "display_name": name,
            "profile_url": "https://gravatar.com/someone",
            "avatar_url": "https://0.gravatar.com/avatar/abc",
            "avatar_alt_text": "",
            "location": "Leeds, UK",
            "description": "",
            "job_title": "Analyst",
            "company": "Example Works",
            "verified_accounts": accounts,
            "pronunciation": "",
            "pronouns": "",
            "contact_info": contact
        }));
        self.gravatar.on(&Self::gravatar_path(email), reply);
    }

    pub fn total_hits(&self) -> usize {
        self.gravatar.total_hits() + self.github.total_hits()
    }
}

impl Server {
    /// A request without any key, as the public sends it.
    pub fn anon(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// A request with the admin key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.anon(method, path).bearer_auth(&self.admin_key)
    }

    /// POST /v1/optout (no key) with a JSON body; returns status and JSON.
    pub async fn optout(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self
            .anon(reqwest::Method::POST, "/v1/optout")
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// The Prometheus text exposition, from the operator's listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// GET /v1/admin/exclusions/stats.
    pub async fn exclusion_stats(&self) -> serde_json::Value {
        self.admin(reqwest::Method::GET, "/v1/admin/exclusions/stats")
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json")
    }
}

/// The value of one Prometheus sample line (`name{labels} value`), 0 when absent.
pub fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The row numbers of an NDJSON batch result, in the order served.
pub fn ndjson_rows(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["row"]
                .as_u64()
                .expect("row")
        })
        .collect()
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// `grep -r` over `dir`: the (file, needle) pairs where a file's bytes contain a needle, ignoring case.
pub fn grep_dir(dir: &std::path::Path, needles: &[String]) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    for path in files_under(dir) {
        let text =
            String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).to_lowercase();
        for n in needles {
            if text.contains(&n.to_lowercase()) {
                found.push((path.clone(), n.clone()));
            }
        }
    }
    found
}

/// The status a lookup answer gives `source`, or `absent`.
pub fn status_of<'a>(body: &'a serde_json::Value, source: &str) -> &'a str {
    body["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == source))
        .and_then(|s| s["status"].as_str())
        .unwrap_or("absent")
}

/// Asserts that `body` is a problem document whose `type` names `kind`.
pub fn assert_problem_type(body: &serde_json::Value, kind: &str) {
    assert!(
        body["type"].as_str().is_some_and(|t| t.ends_with(kind)),
        "not a '{kind}' problem: {body}"
    );
}

/// Defines one test per store: `both_stores! { #[tokio::test] async fn name(mode) { ... } }` makes the
/// module `name` with the tests `file` and `s3`, each running the body with its [`Mode`].
#[macro_export]
macro_rules! both_stores {
    ($(#[$attr:meta])* async fn $name:ident($mode:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($mode: $crate::helpers::Mode) $body
            $(#[$attr])*
            async fn file() {
                run($crate::helpers::Mode::File).await
            }
            $(#[$attr])*
            async fn s3() {
                run($crate::helpers::Mode::S3).await
            }
        }
    };
}

pub use enrichd::testkit::silent::Silent;

/// Polls `cond` until it holds; panics naming `what` after a minute (what a loaded 2-core machine
/// may take for something that should happen at once).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
