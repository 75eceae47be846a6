//! The two systems under test: enrichd as the integration tests build it, and the bare baseline.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::ACCEPT;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::upstreams::{Body, JSON, Upstreams, bind, reply, serve_http1};

/// The lookup deadline and each call's timeout, the same for both systems: the bench's defaults, or
/// room for the memory phase's held calls when `FANOUT_HOLD_MS` is set.
#[derive(Clone, Copy)]
pub struct Timing {
    pub deadline: Duration,
    pub call_timeout: Duration,
}

impl Timing {
    pub fn from_env() -> Self {
        match std::env::var("FANOUT_HOLD_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(hold_ms) => Self {
                deadline: Duration::from_millis(3 * hold_ms + 5_000),
                call_timeout: Duration::from_millis(hold_ms + 5_000),
            },
            None => Self {
                deadline: crate::DEADLINE,
                call_timeout: Duration::from_secs(2),
            },
        }
    }
}

/// enrichd, built as tests/it/helpers.rs builds it: its address, a tenant key, and its data dir (removed
/// on drop).
pub struct Enrichd {
    pub url: String,
    pub key: String,
    _data_dir: tempfile::TempDir,
}

/// Only `gravatar` and `github`, on the fakes; no limit of enrichd's own can bind before the CPU does.
fn enrichd_config(up: &Upstreams) -> String {
    let timing = Timing::from_env();
    let mut c = format!(
        "[server]\nmax_in_flight = 1000000\nmax_connections_per_client = 1000000\n\
         [tenants]\nrate_per_minute = 1000000000\nburst = 10000000\n\
         [lookup]\ndefault_timeout_ms = {}\nmax_timeout_ms = {}\n",
        timing.deadline.as_millis(),
        timing.deadline.as_millis().max(15_000)
    );
    let cache_secs = std::env::var("FANOUT_CACHE_SECS").ok();
    let cache_mib = std::env::var("FANOUT_CACHE_MIB").ok();
    if cache_secs.is_some() || cache_mib.is_some() {
        c.push_str("[retention]\nbatch_results_days = 30\nexclusion_days = 1095\n");
        if let Some(secs) = cache_secs {
            c.push_str(&format!("source_cache_seconds = {secs}\n"));
        }
        if let Some(mib) = cache_mib {
            c.push_str(&format!("source_cache_mib = {mib}\n"));
        }
    }
    for (name, url) in [("gravatar", &up.gravatar), ("github", &up.github)] {
        c.push_str(&format!(
            "[sources.{name}]\nbase_url = \"{url}\"\ntimeout_ms = {}\n\
             rate_per_minute = 1000000000\nconcurrency = 1000000\n",
            timing.call_timeout.as_millis()
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
pub async fn start_enrichd(up: &Upstreams) -> Enrichd {
    let loaded = enrichd::config::Config::from_toml(&enrichd_config(up), &[])
        .expect("bench config is valid");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let app = enrichd::app::App::build(&loaded, data_dir.path())
        .await
        .expect("enrichd builds");
    let key = app
        .state
        .keys
        .create("bench", enrichd::auth::Role::Tenant)
        .await
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

struct Baseline {
    http: reqwest::Client,
    deadline: Duration,
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
        let (profile, user) = tokio::time::timeout(self.deadline, self.fan_out(&email))
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
pub async fn start_baseline(up: &Upstreams) -> String {
    let timing = Timing::from_env();
    let baseline = Arc::new(Baseline {
        http: reqwest::Client::builder()
            .timeout(timing.call_timeout)
            .build()
            .expect("baseline HTTP client"),
        deadline: timing.deadline,
        gravatar: up.gravatar.clone(),
        github: up.github.clone(),
    });
    let (listener, url) = bind().await;
    tokio::spawn(serve_http1(listener, move |req| {
        baseline.clone().lookup(req)
    }));
    url
}
