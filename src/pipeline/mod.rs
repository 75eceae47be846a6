//! The lookup pipeline: exclusion check, concurrent fan-out with hops, in-memory merge, final filter.
//!
//! Handlers, the CLI and batch jobs all call [`Pipeline::lookup`]; none of them calls an upstream directly.

mod fanout;
mod json;
mod outcome;
mod want;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use outcome::{Lookup, SourceEvent, SourceReport};
pub use want::Want;

use crate::domain::Query;
use crate::exclusion::{ExclusionCheck, NoExclusions};
use crate::sources::{Registered, SourceSet};
use crate::telemetry::{Metrics, SourceMetrics};

/// Deadline and hop limits for every lookup.
#[derive(Debug, Clone)]
pub struct Limits {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub max_hops: u32,
    /// Fields the paid waterfall looks for when a lookup names none.
    pub default_want: Vec<Want>,
}

/// Per-lookup options.
#[derive(Debug, Default)]
pub struct LookupOptions {
    /// Overall deadline; clamped to the configured maximum.
    pub timeout: Option<Duration>,
    /// Restrict the fan-out to these sources (validated by the caller against [`Pipeline::source_names`]).
    pub sources: Option<Vec<String>>,
    /// Progress events, one per finished source call, carrying no values.
    pub events: Option<mpsc::UnboundedSender<SourceEvent>>,
    /// Fields the paid waterfall stops at; the configured default when `None`.
    pub want: Option<Vec<Want>>,
    /// Skips the exclusion list, before fan-out and after merge. Only for the lookup that expands an
    /// opt-out ([`crate::optout`]): the person is already on the list, so a checked lookup would find
    /// nothing. Its result must never leave the process: it is hashed onto the list and dropped. Such
    /// lookups are not counted in `enrichd_lookups_total`.
    pub bypass_exclusion_for_optout_expansion: bool,
}

/// The shared lookup pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
    /// The same sources without the exclusion list, for opt-out expansion only.
    unchecked: Arc<Inner>,
}

struct Inner {
    sources: SourceSet,
    exclusion: Arc<dyn ExclusionCheck>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Each source's metric handles, by its position in `sources`.
    source_metrics: Vec<SourceMetrics>,
}

impl Pipeline {
    pub fn new(
        sources: SourceSet,
        exclusion: Arc<dyn ExclusionCheck>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let source_metrics: Vec<SourceMetrics> = sources
            .sources
            .iter()
            .map(|s| metrics.source(s.name()))
            .collect();
        let unchecked = Arc::new(Inner {
            sources: sources.clone(),
            exclusion: Arc::new(NoExclusions),
            limits: limits.clone(),
            metrics: metrics.clone(),
            source_metrics: source_metrics.clone(),
        });
        Self {
            inner: Arc::new(Inner {
                sources,
                exclusion,
                limits,
                metrics,
                source_metrics,
            }),
            unchecked,
        }
    }

    /// Names of the enabled sources, in fan-out order.
    pub fn source_names(&self) -> Vec<String> {
        self.inner.sources.names().map(str::to_string).collect()
    }

    /// The answer cache shared by the sources' guards.
    pub fn source_cache(&self) -> crate::sources::etiquette::SourceCache {
        self.inner.sources.cache().clone()
    }

    /// Every configured source and provider with its live state (breaker, pause, cache).
    pub fn source_states(&self) -> Vec<crate::sources::SourceState> {
        self.inner.sources.states()
    }

    pub fn exclusion(&self) -> &Arc<dyn ExclusionCheck> {
        &self.inner.exclusion
    }

    /// The enabled sources with their settings, in fan-out order (the privacy notice lists them).
    pub fn sources(&self) -> &[Registered] {
        &self.inner.sources.sources
    }

    /// Looks a person up. Never fails: sources that fail are reported with their status, and a query or
    /// result that touches the exclusion list answers exactly like a miss.
    pub async fn lookup(&self, query: &Query, opts: LookupOptions) -> Lookup {
        let expansion = opts.bypass_exclusion_for_optout_expansion;
        let inner = if expansion {
            &self.unchecked
        } else {
            &self.inner
        };
        let limits = &inner.limits;
        let timeout = opts
            .timeout
            .unwrap_or(limits.default_timeout)
            .min(limits.max_timeout);
        let lookup = fanout::run(
            inner,
            query,
            timeout,
            opts.sources.as_deref(),
            opts.events,
            opts.want.as_deref().unwrap_or(&limits.default_want),
        )
        .await;
        if !expansion {
            inner.metrics.lookup_finished(lookup.outcome_label());
        }
        lookup
    }
}
