//! The enabled sources, built and guarded, and what `enrichd sources` lists about every configured one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::Registered;
use super::etiquette::{Budget, GuardConfig, Guarded, SourceCache};
use super::provider::ProviderSource;
use super::registry::BUILTIN;
use super::spec::{Deps, SourceConfig};
use crate::store::replicas::ReplicaShare;

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
    /// This replica's rate budget for the source and what is left of it now; absent when the source
    /// is off or has no limit of our own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
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

    /// The sources whose `hit` says nothing about a person: domain-only ones and those that call
    /// nobody.
    pub fn impersonal(&self) -> Vec<Arc<str>> {
        self.sources
            .iter()
            .filter(|r| r.source.domain_only() || r.source.calls_nobody())
            .map(|r| Arc::clone(&r.label))
            .collect()
    }

    /// The batch part of each rate-limited source's budget on this replica, calls per second.
    pub fn batch_budgets(&self) -> Vec<(Arc<str>, f64)> {
        self.sources
            .iter()
            .zip(&self.guards)
            .filter_map(|(r, g)| Some((Arc::clone(&r.label), g.batch_per_second()?)))
            .collect()
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
                    budget: guard.and_then(|g| g.budget()),
                    listed: l.clone(),
                    breaker: state.as_ref().map(|s| s.breaker.as_str().to_string()),
                    paused: state.as_ref().is_some_and(|s| s.paused_until.is_some()),
                    cache_entries: state.map_or(0, |s| s.cache_entries),
                }
            })
            .collect()
    }
}
