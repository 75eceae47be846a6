//! The built-in sources, their configuration and how a set of them is built.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::store::replicas::ReplicaShare;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::etiquette::{GuardConfig, Guarded, SourceCache};
use super::provider::ProviderSource;
use super::{
    Registered, Source, dns, finder, github, gravatar, keybase, openpgp, rdap, webfinger, website,
};

/// One built-in source: its name, its defaults, and how to build it from its resolved config.
pub struct Spec {
    pub name: &'static str,
    /// URL schemes `base_url` may use ([`HTTP`] for web APIs); `{placeholders}` in it are allowed.
    /// Empty for a source that calls nothing (its `base_url` is ignored).
    pub schemes: &'static [&'static str],
    pub defaults: fn() -> SourceConfig,
    pub build: fn(&SourceConfig, &Deps) -> Arc<dyn Source>,
}

/// The schemes of an HTTP API's `base_url`.
pub const HTTP: &[&str] = &["http", "https"];

/// The built-in sources. Adding one is adding its file and one line here.
pub const BUILTIN: &[Spec] = &[
    gravatar::SPEC,
    github::SPEC,
    dns::SPEC,
    website::SPEC,
    openpgp::SPEC,
    rdap::SPEC,
    keybase::SPEC,
    webfinger::SPEC,
    finder::SPEC,
];

/// What a source may need to build itself.
pub struct Deps {
    pub http: reqwest::Client,
    /// This replica's share of each source's budget (see [`crate::store::replicas`]).
    pub share: ReplicaShare,
}

/// A source's resolved settings (`[sources.<name>]` over the source's defaults).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub enabled: bool,
    pub base_url: String,
    pub timeout_ms: u64,
    pub rate_per_minute: u32,
    pub concurrency: usize,
    pub weight: f64,
    /// Name of the env var that holds the API key, if the source takes one.
    pub api_key_env: Option<String>,
    /// The key itself, read from `api_key_env` at load time.
    pub api_key: Option<SecretString>,
}

impl SourceConfig {
    pub fn new(base_url: &str, timeout_ms: u64, rate_per_minute: u32, weight: f64) -> Self {
        Self {
            enabled: true,
            base_url: base_url.to_string(),
            timeout_ms,
            rate_per_minute,
            concurrency: 32,
            weight,
            api_key_env: None,
            api_key: None,
        }
    }

    pub fn with_key_env(mut self, var: &str) -> Self {
        self.api_key_env = Some(var.to_string());
        self
    }
}

/// `[sources.<name>]` as written in the TOML: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOverrides {
    pub enabled: Option<bool>,
    pub base_url: Option<String>,
    pub timeout_ms: Option<u64>,
    pub rate_per_minute: Option<u32>,
    pub concurrency: Option<usize>,
    pub weight: Option<f64>,
    pub api_key_env: Option<String>,
}

/// Why the sources' configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceConfigError {
    #[error("[sources.{0}] is not a known source; known sources are: {1}")]
    Unknown(String, String),
    #[error("[sources.{name}] {key} {problem}")]
    Invalid {
        name: String,
        key: &'static str,
        problem: String,
    },
}

/// Resolves every built-in source's config from the overrides and the environment.
pub fn resolve(
    overrides: &BTreeMap<String, SourceOverrides>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<&'static str, SourceConfig>, SourceConfigError> {
    if let Some(unknown) = overrides
        .keys()
        .find(|k| !BUILTIN.iter().any(|s| s.name == k.as_str()))
    {
        let known: Vec<&str> = BUILTIN.iter().map(|s| s.name).collect();
        return Err(SourceConfigError::Unknown(
            unknown.clone(),
            known.join(", "),
        ));
    }
    let mut out = BTreeMap::new();
    for spec in BUILTIN {
        let mut c = (spec.defaults)();
        if let Some(o) = overrides.get(spec.name) {
            apply(&mut c, o);
        }
        let invalid = |key, problem: &str| SourceConfigError::Invalid {
            name: spec.name.to_string(),
            key,
            problem: problem.to_string(),
        };
        if !base_url_allowed(&c.base_url, spec.schemes) {
            return Err(invalid(
                "base_url",
                &format!(
                    "must be an absolute URL with scheme {}",
                    spec.schemes.join(" or ")
                ),
            ));
        }
        if c.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be above 0"));
        }
        if c.concurrency == 0 {
            return Err(invalid("concurrency", "must be above 0"));
        }
        if !(c.weight > 0.0 && c.weight < 1.0) {
            return Err(invalid("weight", "must be between 0 and 1, exclusive"));
        }
        c.api_key = c
            .api_key_env
            .as_deref()
            .and_then(env)
            .filter(|k| !k.is_empty())
            .map(SecretString::from);
        out.insert(spec.name, c);
    }
    Ok(out)
}

/// Whether `base` parses as an absolute URL with one of `schemes` once `{placeholders}` are filled in.
fn base_url_allowed(base: &str, schemes: &[&str]) -> bool {
    if schemes.is_empty() {
        return true;
    }
    let filled = base
        .replace("{domain}", "example.com")
        .replace("{host}", "example.com");
    url::Url::parse(&filled).is_ok_and(|u| schemes.contains(&u.scheme()) && u.has_host())
}

fn apply(c: &mut SourceConfig, o: &SourceOverrides) {
    if let Some(v) = o.enabled {
        c.enabled = v;
    }
    if let Some(v) = &o.base_url {
        c.base_url.clone_from(v);
    }
    if let Some(v) = o.timeout_ms {
        c.timeout_ms = v;
    }
    if let Some(v) = o.rate_per_minute {
        c.rate_per_minute = v;
    }
    if let Some(v) = o.concurrency {
        c.concurrency = v;
    }
    if let Some(v) = o.weight {
        c.weight = v;
    }
    if let Some(v) = &o.api_key_env {
        c.api_key_env = Some(v.clone());
    }
}

/// The enabled sources, built, each behind its etiquette guard and ready for the fan-out.
#[derive(Clone, Default)]
pub struct SourceSet {
    /// Free built-in sources in [`BUILTIN`] order, then active paid providers in waterfall order.
    pub sources: Vec<Registered>,
    /// The guard around each entry of `sources`, same index.
    guards: Vec<Arc<Guarded>>,
    /// Every configured source and provider, enabled or not, for `enrichd sources`.
    listed: Vec<Listed>,
    /// The answer cache shared by every guard.
    cache: SourceCache,
    /// This replica's share of each source's budget.
    share: ReplicaShare,
}

/// One configured source as `enrichd sources` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub name: String,
    /// `free` (built-in OSINT source) or `paid` (bring-your-own-key provider).
    pub kind: &'static str,
    pub enabled: bool,
    /// Why it is off, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    /// `present`, `missing`, or `none` for sources that take no key.
    pub key: &'static str,
    /// Base URL (built-ins) with no secrets; providers show their host only.
    pub endpoint: String,
    pub rate_per_minute: u32,
    pub timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_hit: Option<f64>,
}

/// A listed source with its guard's live state.
#[derive(Debug, Clone, Serialize)]
pub struct SourceState {
    #[serde(flatten)]
    pub listed: Listed,
    /// `closed`, `open` or `half_open`; absent when the source is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    pub paused: bool,
    pub cache_entries: u64,
}

impl SourceSet {
    /// Builds every enabled built-in source and every active provider, each behind a [`Guarded`] sharing
    /// one answer cache.
    pub fn build(
        configs: &BTreeMap<&'static str, SourceConfig>,
        providers: Vec<ProviderSource>,
        deps: &Deps,
        cache: SourceCache,
    ) -> Self {
        let mut set = Self {
            cache: cache.clone(),
            share: deps.share.clone(),
            ..Self::default()
        };
        for spec in BUILTIN {
            let Some(c) = configs.get(spec.name) else {
                continue;
            };
            set.listed.push(Listed {
                name: spec.name.to_string(),
                kind: "free",
                enabled: c.enabled,
                disabled: (!c.enabled).then(|| "enabled = false".to_string()),
                key: match (&c.api_key_env, &c.api_key) {
                    (None, _) => "none",
                    (Some(_), Some(_)) => "present",
                    (Some(_), None) => "missing",
                },
                endpoint: c.base_url.clone(),
                rate_per_minute: c.rate_per_minute,
                timeout_ms: c.timeout_ms,
                order: None,
                cost_per_hit: None,
            });
            if c.enabled {
                let guard = GuardConfig::for_source(c);
                set.push(
                    Registered::free((spec.build)(c, deps), c.timeout_ms, c.weight),
                    guard,
                );
            }
        }
        let mut providers = providers;
        providers.sort_by_key(|p| p.order);
        for p in providers {
            set.listed.push(Listed {
                name: p.name.clone(),
                kind: "paid",
                enabled: p.is_active(),
                disabled: p.disabled.clone(),
                key: p.key,
                endpoint: p.endpoint.clone(),
                rate_per_minute: p.rate_per_minute,
                timeout_ms: u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX),
                order: Some(p.order),
                cost_per_hit: Some(p.cost_per_hit),
            });
            if p.is_active() {
                let guard = p.guard_config();
                set.push(p.registered(), guard);
            }
        }
        set
    }

    pub(crate) fn push(&mut self, registered: Registered, guard: GuardConfig) {
        let guarded = Arc::new(Guarded::with_share(
            registered.source.clone(),
            guard,
            self.cache.clone(),
            self.share.clone(),
        ));
        self.sources.push(Registered {
            source: guarded.clone(),
            ..registered
        });
        self.guards.push(guarded);
    }

    /// A set of already-built sources without guards, for tests and tools that need none.
    pub fn unguarded(sources: Vec<Registered>) -> Self {
        Self {
            sources,
            ..Self::default()
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(Registered::name)
    }

    /// The shared answer cache (the opt-out purges it).
    pub fn cache(&self) -> &SourceCache {
        &self.cache
    }

    /// Every configured source and provider with its live state.
    pub fn states(&self) -> Vec<SourceState> {
        self.listed
            .iter()
            .map(|l| {
                let guard = self
                    .sources
                    .iter()
                    .position(|r| r.name() == l.name)
                    .and_then(|i| self.guards.get(i));
                let state = guard.map(|g| g.state());
                SourceState {
                    listed: l.clone(),
                    breaker: state.as_ref().map(|s| s.breaker.as_str().to_string()),
                    paused: state.as_ref().is_some_and(|s| s.paused_until.is_some()),
                    cache_entries: state.map_or(0, |s| s.cache_entries),
                }
            })
            .collect()
    }
}
