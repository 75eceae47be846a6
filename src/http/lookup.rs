//! `POST /v1/lookup` (JSON) and `GET /v1/lookup` (query string): one answer, or a stream of progress
//! events then the result when the client accepts `application/x-ndjson` or `text/event-stream`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::api::{BodyErrors, Invalid, KeyErrors};
use super::body::{JsonBody, query};
use super::{ApiError, AppState, Tenant};
use crate::domain::{Query, QueryInput};
use crate::pipeline::{Lookup, LookupOptions, Want};

/// The JSON body of `POST /v1/lookup`: the person (an email, a phone, a profile URL, or a name with a
/// company or domain) and how to look them up.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    #[serde(flatten)]
    person: QueryInput,
    /// Only these enabled sources (all of them by default).
    sources: Option<Vec<String>>,
    /// The lookup's deadline, at most `lookup.max_timeout_ms`.
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
    /// Fields the paid waterfall looks for (`["email", "phone"]`).
    want: Option<Vec<String>>,
}

/// What a lookup request asks besides the person: which sources, how long, which fields.
#[derive(Debug, Default)]
pub struct Asked {
    pub sources: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
    pub want: Option<Vec<String>>,
}

/// The query string of `GET /v1/lookup`: the same fields, `sources` and `want` comma-separated.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LookupParams {
    email: Option<String>,
    /// International (`+44 20 7946 0958`), or national with `lookup.default_region` set.
    phone: Option<String>,
    /// A LinkedIn, GitHub, X or Keybase profile.
    profile_url: Option<String>,
    name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    company: Option<String>,
    domain: Option<String>,
    sources: Option<String>,
    #[param(value_type = Option<u64>, minimum = 1)]
    timeout_ms: Option<String>,
    want: Option<String>,
}

/// Looks a person up across every enabled source, concurrently.
#[utoipa::path(
    post,
    path = "/v1/lookup",
    tag = "lookup",
    request_body(content = LookupRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The merged, filtered answer; with `Accept: application/x-ndjson` \
          or `text/event-stream`, one event per finished source and the answer last.",
         content((Lookup = "application/json"), (String = "application/x-ndjson"),
                 (String = "text/event-stream"))),
        Invalid, BodyErrors, KeyErrors,
    )
)]
pub async fn post(
    State(state): State<AppState>,
    Tenant(_): Tenant,
    Accepts(framing): Accepts,
    JsonBody(req): JsonBody<LookupRequest>,
) -> Result<Response, ApiError> {
    let asked = Asked {
        sources: req.sources,
        timeout_ms: req.timeout_ms,
        want: req.want,
    };
    answer(&state, framing, &req.person, asked).await
}

/// The same lookup from query parameters.
#[utoipa::path(
    get,
    path = "/v1/lookup",
    tag = "lookup",
    params(LookupParams),
    responses(
        (status = 200, description = "As `POST /v1/lookup`.",
         content((Lookup = "application/json"), (String = "application/x-ndjson"),
                 (String = "text/event-stream"))),
        Invalid, KeyErrors,
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Tenant(_): Tenant,
    Accepts(framing): Accepts,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p: LookupParams = query(raw.as_deref())?;
    let timeout_ms = timeout_param(p.timeout_ms.as_deref())?;
    let list = |s: String| {
        s.split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    };
    let asked = Asked {
        sources: p.sources.map(list),
        timeout_ms,
        want: p.want.map(list),
    };
    // Query parameters are declared one by one so that the document states each (a flattened
    // struct is one opaque parameter there).
    let person = QueryInput {
        email: p.email,
        phone: p.phone,
        profile_url: p.profile_url,
        name: p.name,
        first_name: p.first_name,
        last_name: p.last_name,
        company: p.company,
        domain: p.domain,
    };
    answer(&state, framing, &person, asked).await
}

/// A `timeout_ms` query parameter: empty is none, else a whole number of milliseconds.
pub fn timeout_param(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::invalid(
                "timeout_ms",
                "timeout_ms must be a whole number of milliseconds",
            )
        }),
    }
}

async fn answer(
    state: &AppState,
    framing: Option<Framing>,
    input: &QueryInput,
    asked: Asked,
) -> Result<Response, ApiError> {
    let (query, opts) = validate(state, input, asked)?;
    match framing {
        None => json_answer(&state.pipeline.lookup(&query, opts).await),
        Some(framing) => Ok(stream(state, query, opts, framing)),
    }
}

/// How the client asked to be answered: one JSON body (`None`), or a stream (its `Accept` names
/// `application/x-ndjson` or `text/event-stream`). Reads the one header instead of copying them all.
pub struct Accepts(Option<Framing>);

impl<S: Sync> FromRequestParts<S> for Accepts {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(Self(if accept.contains("application/x-ndjson") {
            Some(Framing::Ndjson)
        } else if accept.contains("text/event-stream") {
            Some(Framing::Sse)
        } else {
            None
        }))
    }
}

/// The answer as one JSON body.
fn json_answer(lookup: &Lookup) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(lookup).map_err(ApiError::internal)?;
    let json = HeaderValue::from_static("application/json");
    Ok(([(header::CONTENT_TYPE, json)], body).into_response())
}

/// Parses the person and the options; every invalid field is named in one 422.
pub fn validate(
    state: &AppState,
    input: &QueryInput,
    asked: Asked,
) -> Result<(Query, LookupOptions), ApiError> {
    let Asked {
        sources,
        timeout_ms,
        want,
    } = asked;
    let (query, mut errors) = match Query::parse(input, state.region) {
        Ok(q) => (Some(q), Vec::new()),
        Err(errors) => (None, errors),
    };
    if let Some(ms) = timeout_ms
        && (ms == 0 || ms > state.max_timeout_ms)
    {
        errors.push(crate::domain::FieldError::new(
            "timeout_ms",
            format!("timeout_ms must be between 1 and {}", state.max_timeout_ms),
        ));
    }
    if let Some(names) = &sources {
        let known = state.pipeline.source_names();
        if let Some(bad) = names.iter().find(|n| !known.contains(n)) {
            let bad: String = bad.chars().take(40).collect();
            errors.push(crate::domain::FieldError::new(
                "sources",
                format!(
                    "sources names '{bad}', which is not an enabled source ({})",
                    known.join(", ")
                ),
            ));
        }
    }
    let want = match want.as_deref().map(Want::parse_all) {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(bad)) => {
            let bad: String = bad.chars().take(40).collect();
            errors.push(crate::domain::FieldError::new(
                "want",
                format!("want names '{bad}'; known fields are {}", Want::names()),
            ));
            None
        }
    };
    let query = match query {
        Some(q) if errors.is_empty() => q,
        _ => return Err(ApiError::Invalid(errors)),
    };
    Ok((
        query,
        LookupOptions {
            timeout: timeout_ms.map(Duration::from_millis),
            sources,
            want,
            ..LookupOptions::default()
        },
    ))
}

#[derive(Clone, Copy)]
pub enum Framing {
    Ndjson,
    Sse,
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

fn frame<T: Serialize>(framing: Framing, kind: &'static str, value: &T) -> Bytes {
    let json =
        serde_json::to_string(&Tagged { kind, inner: value }).unwrap_or_else(|_| "{}".into());
    Bytes::from(match framing {
        Framing::Ndjson => format!("{json}\n"),
        Framing::Sse => format!("event: {kind}\ndata: {json}\n\n"),
    })
}

/// Aborts the fan-out when the response body is dropped (the client went away).
struct AbortOnDrop(JoinHandle<Lookup>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn stream(state: &AppState, query: Query, mut opts: LookupOptions, framing: Framing) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    opts.events = Some(tx);
    let pipeline = state.pipeline.clone();
    let task = AbortOnDrop(tokio::spawn(
        async move { pipeline.lookup(&query, opts).await },
    ));
    let body = futures::stream::unfold(Some((rx, task)), move |st| async move {
        let (mut rx, mut task) = st?;
        match rx.recv().await {
            Some(event) => Some((
                Ok::<_, Infallible>(frame(framing, "source", &event)),
                Some((rx, task)),
            )),
            // The sender is dropped when the lookup ends: the merged, filtered result comes last.
            None => match (&mut task.0).await {
                Ok(lookup) => Some((Ok(frame(framing, "result", &lookup)), None)),
                Err(err) => {
                    tracing::error!(error = %err, "Streaming lookup task failed.");
                    None
                }
            },
        }
    });
    let content_type = match framing {
        Framing::Ndjson => "application/x-ndjson",
        Framing::Sse => "text/event-stream",
    };
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
