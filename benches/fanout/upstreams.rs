//! Loopback upstream fakes speaking Gravatar v3 and GitHub, and the bare HTTP/1.1 serving they share
//! with the baseline.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const JSON: &str = "application/json; charset=utf-8";

pub type Body = Full<Bytes>;

pub fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Serves `handler` on `listener` over HTTP/1.1 keep-alive, one task per connection, until the runtime
/// stops.
pub async fn serve_http1<F, Fut>(listener: TcpListener, handler: F)
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

pub async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("loopback listener address")
    );
    (listener, url)
}

/// Upstream calls received, by endpoint; and how long the fakes hold each before answering.
#[derive(Default)]
pub struct Calls {
    gravatar_profiles: AtomicU64,
    github_search: AtomicU64,
    github_users: AtomicU64,
    other: AtomicU64,
    hold: Option<std::time::Duration>,
}

/// A snapshot of [`Calls`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CallCount {
    pub profiles: u64,
    pub search: u64,
    pub users: u64,
    pub other: u64,
}

impl Calls {
    pub fn snapshot(&self) -> CallCount {
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
    pub fn per_lookup(&self, lookups: u64) -> String {
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
    if let Some(hold) = calls.hold {
        tokio::time::sleep(hold).await;
    }
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
    if let Some(hold) = calls.hold {
        tokio::time::sleep(hold).await;
    }
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

pub struct Upstreams {
    pub gravatar: String,
    pub github: String,
    pub calls: Arc<Calls>,
}

/// The fakes; `hold` delays every answer by that long.
pub async fn start_upstreams(hold: Option<std::time::Duration>) -> Upstreams {
    let calls = Arc::new(Calls {
        hold,
        ..Calls::default()
    });
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
