//! Declarative bring-your-own-key HTTP providers (`[[providers]]` in the config).
//!
//! Each entry describes a paid enrichment API in data: a URL template (and optional JSON body) filled
//! from the identifier, the header that carries the operator's key (read from an env var, never from the
//! TOML), where each profile field sits in the answer (JSON pointers), what each HTTP status means, and
//! the rate, timeout, cost and waterfall position. See `examples/providers.toml` for Hunter, People Data
//! Labs and Apollo.
//!
//! Keys travel only in their header (marked sensitive); URLs never hold them, and no error or `Debug`
//! output shows them.

mod config;
pub mod examples;
mod mapping;
mod template;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::header::{HeaderName, HeaderValue};

pub use config::{HttpMethod, ProviderConfig, ProviderError, StatusAction, validate};
pub use mapping::{FIELD_NAMES, Pointers};
pub use template::Placeholder;

use self::config::Compiled;
use self::template::{Values, percent_encode};
use super::etiquette::GuardConfig;
use super::http::retry_after;
use super::{Registered, Source, SourceError};
use crate::domain::Identifier;
use crate::profile::Observation;

/// Answers above this are refused as malformed.
const MAX_BODY: usize = 1024 * 1024;

/// How long an out-of-credits answer pauses a provider when it sends no `Retry-After`.
pub const OUT_OF_CREDITS_PAUSE: Duration = Duration::from_secs(3600);

/// A configured provider, built: the source and what the fan-out and the waterfall need around it.
#[derive(Clone)]
pub struct ProviderSource {
    pub name: String,
    pub source: Arc<dyn Source>,
    pub timeout: Duration,
    pub weight: f64,
    pub cost_per_hit: f64,
    /// Position in the paid waterfall: lower runs first.
    pub order: u32,
    /// Providers are paid: they run in the waterfall, not with the free sources.
    pub paid: bool,
    pub rate_per_minute: u32,
    pub concurrency: usize,
    /// Why the provider is not called (`enabled = false`, key missing); `None` when it is active.
    pub disabled: Option<String>,
    /// Scheme, host and port of the URL template, for listings (never a key or a filled value).
    pub endpoint: String,
    /// `present`, `missing` (unset or unusable), or `none` for a provider that takes no key.
    pub key: &'static str,
}

impl ProviderSource {
    pub fn is_active(&self) -> bool {
        self.disabled.is_none()
    }

    /// The fan-out's view of this provider.
    pub fn registered(&self) -> Registered {
        Registered {
            label: Arc::from(self.source.name()),
            source: Arc::clone(&self.source),
            timeout: self.timeout,
            weight: self.weight,
            paid: self.paid,
            cost_per_hit: self.cost_per_hit,
        }
    }

    /// The etiquette guard for this provider.
    pub fn guard_config(&self) -> GuardConfig {
        GuardConfig::new(self.rate_per_minute, self.concurrency, self.timeout)
    }
}

impl fmt::Debug for ProviderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSource")
            .field("name", &self.name)
            .field("order", &self.order)
            .field("cost_per_hit", &self.cost_per_hit)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Validates and builds every configured provider, active or not (`enrichd sources` lists them all;
/// the fan-out takes those where [`ProviderSource::is_active`]). Keys are read through `env`.
pub fn build_providers(
    cfgs: &[ProviderConfig],
    http: reqwest::Client,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ProviderSource>, ProviderError> {
    let compiled = validate(cfgs)?;
    let mut out = Vec::with_capacity(compiled.len());
    for c in compiled {
        let mut disabled = (!c.enabled).then(|| "enabled = false".to_string());
        let auth = match &c.auth {
            None => None,
            Some((header, prefix, var)) => match env(var).filter(|k| !k.trim().is_empty()) {
                None => {
                    disabled.get_or_insert_with(|| format!("the key variable {var} is not set"));
                    None
                }
                Some(key) => match HeaderValue::from_str(&format!("{prefix}{}", key.trim())) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        Some((header.clone(), value))
                    }
                    Err(_) => {
                        disabled.get_or_insert_with(|| {
                            format!("the key in {var} has characters not allowed in a header")
                        });
                        None
                    }
                },
            },
        };
        let key = match (&c.auth, &auth) {
            (None, _) => "none",
            (Some(_), Some(_)) => "present",
            (Some(_), None) => "missing",
        };
        let provider = Provider {
            http: http.clone(),
            auth,
            spec: c,
        };
        let spec = &provider.spec;
        out.push(ProviderSource {
            name: spec.name.clone(),
            timeout: spec.timeout,
            weight: spec.weight,
            cost_per_hit: spec.cost_per_hit,
            order: spec.order,
            paid: true,
            rate_per_minute: spec.rate_per_minute,
            concurrency: spec.concurrency,
            disabled,
            endpoint: spec.endpoint.clone(),
            key,
            source: Arc::new(provider),
        });
    }
    Ok(out)
}

/// One declarative provider behind the [`Source`] trait.
struct Provider {
    spec: Compiled,
    http: reqwest::Client,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl Source for Provider {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        Values::of(id).has_all(&self.spec.placeholders)
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move { self.call(id).await }.boxed()
    }
}

impl Provider {
    async fn call(&self, id: &Identifier) -> Result<Vec<Observation>, SourceError> {
        const UNFILLED: SourceError = SourceError::NotAttempted("the identifier lacks a value");
        let values = Values::of(id);
        let url = self
            .spec
            .url
            .fill(&values, percent_encode)
            .ok_or(UNFILLED)?;
        let mut req = match self.spec.method {
            HttpMethod::GET => self.http.get(url),
            HttpMethod::POST => self.http.post(url),
        }
        .headers(self.spec.headers.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(self.spec.timeout);
        if let Some((name, value)) = &self.auth {
            req = req.header(name.clone(), value.clone());
        }
        if let Some(body) = &self.spec.body {
            req = req.json(&body.fill(&values).ok_or(UNFILLED)?);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if let Some(action) = self.spec.status.get(&status) {
            return act(*action, status, resp.headers());
        }
        if !resp.status().is_success() {
            return Err(SourceError::Status { status });
        }
        let body = read_capped(resp).await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| SourceError::invalid_json(&e))?;
        Ok(mapping::observations(&self.spec.fields, &doc))
    }
}

/// What a mapped status becomes.
fn act(
    action: StatusAction,
    status: u16,
    headers: &reqwest::header::HeaderMap,
) -> Result<Vec<Observation>, SourceError> {
    match action {
        StatusAction::Miss => Ok(Vec::new()),
        StatusAction::Excluded => Err(SourceError::Objected),
        StatusAction::RateLimited => Err(SourceError::RateLimited {
            retry_after: retry_after(headers),
        }),
        StatusAction::OutOfCredits => Err(SourceError::RateLimited {
            retry_after: Some(retry_after(headers).unwrap_or(OUT_OF_CREDITS_PAUSE)),
        }),
        StatusAction::Error => Err(SourceError::Status { status }),
    }
}

async fn read_capped(resp: reqwest::Response) -> Result<Vec<u8>, SourceError> {
    let too_big = || SourceError::Malformed(format!("body larger than {MAX_BODY} bytes"));
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(transport)?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's errors print the URL, which holds identifiers: keep only the kind.
fn transport(e: reqwest::Error) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout
    } else if e.is_connect() {
        SourceError::Transport("connection failed".into())
    } else if e.is_body() || e.is_decode() {
        SourceError::Transport("body interrupted".into())
    } else {
        SourceError::Transport("request failed".into())
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.spec.name)
            .field("has_key", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}
