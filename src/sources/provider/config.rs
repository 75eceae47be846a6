//! `[[providers]]` entries as written, and their validation into a [`Compiled`] provider.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::mapping::{FieldMap, Pointers};
use super::template::{BodyTemplate, Placeholder, Template, Values, percent_encode};
use crate::sources::registry::BUILTIN;

/// One bring-your-own-key HTTP provider, as written under `[[providers]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name: `[a-z0-9_-]`, shown in responses and metrics.
    pub name: String,
    #[serde(default)]
    pub enabled: bool,
    /// Absolute http(s) URL with `{placeholder}` slots (values are percent-encoded). The scheme, host
    /// and port must be literal.
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// JSON body template (a TOML table, or a string holding JSON); string values may hold slots.
    pub body: Option<serde_json::Value>,
    /// Fixed, non-secret request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header that carries the key, e.g. `X-API-KEY` or `Authorization`.
    pub auth_header: Option<String>,
    /// Text before the key in that header, e.g. `"Bearer "`.
    #[serde(default)]
    pub auth_prefix: String,
    /// Env var holding the key. When it is unset the provider is disabled, with that reason.
    pub auth_env: Option<String>,
    /// Profile field -> JSON pointer(s) into the answer.
    #[serde(default)]
    pub fields: BTreeMap<String, Pointers>,
    /// HTTP status code -> what it means, over the defaults (404 miss, 451 excluded,
    /// 402 out_of_credits, 429 rate_limited).
    #[serde(default)]
    pub status: BTreeMap<String, StatusAction>,
    #[serde(default = "default_rate")]
    pub rate_per_minute: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// What one hit costs, in the operator's currency unit.
    #[serde(default)]
    pub cost_per_hit: f64,
    /// Prior reliability in (0, 1), used by the merge.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Position in the paid waterfall: lower runs first.
    #[serde(default = "default_order")]
    pub order: u32,
}

fn default_rate() -> u32 {
    60
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_concurrency() -> usize {
    4
}
fn default_weight() -> f64 {
    0.8
}
fn default_order() -> u32 {
    100
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum HttpMethod {
    #[default]
    #[serde(alias = "get")]
    GET,
    #[serde(alias = "post")]
    POST,
}

/// What an HTTP status from a provider means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusAction {
    /// Nothing known about this person.
    Miss,
    /// The person objected to processing at the provider: the whole result is withheld.
    Excluded,
    /// Slow down; `Retry-After` is honoured.
    RateLimited,
    /// The account has no credits left: the source pauses like a rate limit (an hour unless
    /// `Retry-After` says otherwise).
    OutOfCredits,
    Error,
}

/// Why `[[providers]]` is refused. Each message names the provider and the key.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("[[providers]] '{name}': {key} {problem}")]
    Invalid {
        name: String,
        key: String,
        problem: String,
    },
    #[error("[[providers]] name '{0}' is used by more than one provider")]
    Duplicate(String),
}

/// A validated provider, before keys and the HTTP client are attached.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub name: String,
    pub enabled: bool,
    pub url: Template,
    /// Scheme, host and port of `url` (the template's literal part), for listings.
    pub endpoint: String,
    pub method: HttpMethod,
    pub body: Option<BodyTemplate>,
    pub headers: HeaderMap,
    pub auth: Option<(HeaderName, String, String)>,
    pub fields: Vec<FieldMap>,
    pub status: BTreeMap<u16, StatusAction>,
    pub placeholders: BTreeSet<Placeholder>,
    pub rate_per_minute: u32,
    pub timeout: Duration,
    pub concurrency: usize,
    pub cost_per_hit: f64,
    pub weight: f64,
    pub order: u32,
}

const DEFAULT_STATUS: [(u16, StatusAction); 4] = [
    (404, StatusAction::Miss),
    (451, StatusAction::Excluded),
    (402, StatusAction::OutOfCredits),
    (429, StatusAction::RateLimited),
];

/// Checks every entry and that names are unique.
pub fn validate(cfgs: &[ProviderConfig]) -> Result<Vec<Compiled>, ProviderError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(cfgs.len());
    for c in cfgs {
        if !seen.insert(c.name.as_str()) {
            return Err(ProviderError::Duplicate(c.name.clone()));
        }
        out.push(compile(c)?);
    }
    Ok(out)
}

fn compile(c: &ProviderConfig) -> Result<Compiled, ProviderError> {
    let invalid = |key: &str, problem: String| ProviderError::Invalid {
        name: c.name.clone(),
        key: key.to_string(),
        problem,
    };
    let name_ok = !c.name.is_empty()
        && c.name.len() <= 40
        && c.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(invalid(
            "name",
            "must be 1 to 40 characters of a-z, 0-9, '_' or '-'".into(),
        ));
    }
    if BUILTIN.iter().any(|s| s.name == c.name) {
        return Err(invalid("name", "is the name of a built-in source".into()));
    }

    let url = Template::parse(&c.url).map_err(|p| invalid("url", p))?;
    check_url(&url).map_err(|p| invalid("url", p))?;
    let body = c
        .body
        .as_ref()
        .map(|b| {
            let json = match b {
                serde_json::Value::String(text) => {
                    serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?
                }
                other => other.clone(),
            };
            BodyTemplate::parse(&json)
        })
        .transpose()
        .map_err(|p| invalid("body", p))?;
    if body.is_some() && c.method == HttpMethod::GET {
        return Err(invalid("body", "needs method = \"POST\"".into()));
    }
    let mut placeholders: BTreeSet<Placeholder> = url.placeholders().collect();
    if let Some(b) = &body {
        b.placeholders(&mut placeholders);
    }
    if placeholders.is_empty() {
        return Err(invalid(
            "url",
            "uses no placeholder, so it would ask the same thing for everyone".into(),
        ));
    }

    let mut headers = HeaderMap::new();
    for (k, v) in &c.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid("headers", format!("'{k}' is not a valid header name")))?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            invalid(
                "headers",
                format!("'{k}' has a value not allowed in a header"),
            )
        })?;
        headers.insert(name, value);
    }
    let auth = match (&c.auth_header, &c.auth_env) {
        (None, None) => None,
        (Some(h), Some(env)) => {
            let header = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| invalid("auth_header", format!("'{h}' is not a valid header name")))?;
            if env.is_empty() {
                return Err(invalid("auth_env", "is empty".into()));
            }
            Some((header, c.auth_prefix.clone(), env.clone()))
        }
        (Some(_), None) => return Err(invalid("auth_env", "is required with auth_header".into())),
        (None, Some(_)) => return Err(invalid("auth_header", "is required with auth_env".into())),
    };

    if c.fields.is_empty() {
        return Err(invalid("fields", "maps no profile field".into()));
    }
    let fields = c
        .fields
        .iter()
        .map(|(name, ps)| FieldMap::parse(name, ps))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid("fields", p))?;

    let mut status: BTreeMap<u16, StatusAction> = DEFAULT_STATUS.into_iter().collect();
    for (code, action) in &c.status {
        let n = code
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
            .ok_or_else(|| invalid("status", format!("'{code}' is not an HTTP status code")))?;
        status.insert(n, *action);
    }

    if c.timeout_ms == 0 {
        return Err(invalid("timeout_ms", "must be above 0".into()));
    }
    if c.concurrency == 0 {
        return Err(invalid("concurrency", "must be above 0".into()));
    }
    if !(c.weight > 0.0 && c.weight < 1.0) {
        return Err(invalid(
            "weight",
            "must be between 0 and 1, exclusive".into(),
        ));
    }
    if !(c.cost_per_hit.is_finite() && c.cost_per_hit >= 0.0) {
        return Err(invalid(
            "cost_per_hit",
            "must be a number of 0 or more".into(),
        ));
    }

    Ok(Compiled {
        name: c.name.clone(),
        enabled: c.enabled,
        endpoint: endpoint_of(&c.url),
        url,
        method: c.method,
        body,
        headers,
        auth,
        fields,
        status,
        placeholders,
        rate_per_minute: c.rate_per_minute,
        timeout: Duration::from_millis(c.timeout_ms),
        concurrency: c.concurrency,
        cost_per_hit: c.cost_per_hit,
        weight: c.weight,
        order: c.order,
    })
}

/// The URL must be absolute http(s) whatever the values, and no value may choose the host: filling
/// with two different values must give the same origin.
fn check_url(url: &Template) -> Result<(), String> {
    let origin = |fill: &str| -> Result<(String, String, Option<u16>), String> {
        let mut values = Values::default();
        for p in Placeholder::ALL {
            values.set(p, fill);
        }
        let text = url
            .fill(&values, percent_encode)
            .ok_or_else(|| "cannot be filled".to_string())?;
        let parsed = url::Url::parse(&text).map_err(|_| "is not an absolute URL".to_string())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        Ok((
            parsed.scheme().to_string(),
            parsed.host_str().unwrap_or_default().to_string(),
            parsed.port(),
        ))
    };
    if origin("a")? != origin("b")? {
        return Err("must not have a placeholder in its scheme, host or port".into());
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL template whose scheme, host and port are literal.
fn endpoint_of(raw: &str) -> String {
    let cut = raw
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| raw[start..].find(['/', '?', '{']).map(|end| start + end))
        .unwrap_or(raw.len());
    raw[..cut].to_string()
}
