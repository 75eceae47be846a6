//! The lookup pipeline. [`Pipeline::lookup`] is its stages, each a function from one typed value to the
//! next:
//!
//! 1. the query's identifiers ([`Query::identifiers`], parsed when the query was);
//! 2. the exclusion pre-check ([`precheck`]): [`Precheck::Cleared`], or [`Precheck::Excluded`] and
//!    nobody is asked about the person: [`mirror`] answers what a miss would, timed by [`hold`];
//! 3. the fan-out ([`fanout`]): every source's answers and status, hops included;
//! 4. the merge ([`release::merge`]) of those answers into one profile;
//! 5. the check of every identifier in that profile before release ([`release::release`]);
//! 6. the answer ([`answer`]): what the client sees, a miss when the person is excluded.
//!
//! Handlers, the CLI and batch rows call [`Pipeline::lookup`]; the opt-out's expansion calls
//! [`Pipeline::expand`], stages 1, 3 and 4 of the same pipeline. Nothing else calls an upstream.

mod answer;
mod fanout;
mod hints;
mod hold;
mod mirror;
mod precheck;
mod release;
mod spend;
mod want;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

pub use answer::{Lookup, SourceReport};
pub use fanout::SourceEvent;
pub use spend::SpendCap;
pub use want::Want;

use self::fanout::{Everything, Fanout, Ids, Unlisted};
use self::hold::MissTimes;
use self::precheck::{Precheck, precheck};
use crate::domain::Query;
use crate::exclusion::ExclusionCheck;
use crate::sources::etiquette::Pace;
use crate::sources::{Registered, SourceSet, SourceState, SourceStatus};
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
    /// A batch row's pacing: its calls wait for the batch part of each source's budget instead of
    /// being refused, and the deadline is extended by as long as they may wait.
    pub pace: Option<Arc<Pace>>,
    /// A cap on what paid hits may cost (a batch's `max_cost`), shared by the lookups it covers.
    pub spend: Option<Arc<SpendCap>>,
}

/// The shared lookup pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    sources: SourceSet,
    exclusion: Arc<dyn ExclusionCheck>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Each source's metric handles, by its position in `sources`.
    source_metrics: Vec<SourceMetrics>,
    /// Each source's recent miss latencies: the timing rule of excluded answers.
    misses: MissTimes,
}

impl Pipeline {
    pub fn new(
        sources: SourceSet,
        exclusion: Arc<dyn ExclusionCheck>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let source_metrics = sources
            .sources
            .iter()
            .map(|s| metrics.source(s.name()))
            .collect();
        let misses = MissTimes::new(sources.sources.len());
        Self {
            inner: Arc::new(Inner {
                misses,
                sources,
                exclusion,
                limits,
                metrics,
                source_metrics,
            }),
        }
    }

    /// Names of the enabled sources, in fan-out order.
    pub fn source_names(&self) -> Vec<String> {
        self.inner.sources.names().map(str::to_string).collect()
    }

    /// The sources whose `hit` says nothing about a person (domain-only sources, and those that call
    /// nobody): an excluded person's answer shows them as a miss of the same shape does.
    pub fn impersonal_sources(&self) -> Vec<Arc<str>> {
        self.inner.sources.impersonal()
    }

    /// The batch part of each rate-limited source's budget on this replica, calls per second, in
    /// fan-out order.
    pub fn batch_budgets(&self) -> Vec<(Arc<str>, f64)> {
        self.inner.sources.batch_budgets()
    }

    /// The answer cache shared by the sources' guards.
    pub fn source_cache(&self) -> crate::sources::etiquette::SourceCache {
        self.inner.sources.cache().clone()
    }

    /// Every configured source and provider with its live state (breaker, pause, cache).
    pub fn source_states(&self) -> Vec<SourceState> {
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
        let started = Instant::now();
        let inner = &*self.inner;
        let exclusion = &*inner.exclusion;
        let wanted = opts.want.as_deref().unwrap_or(&inner.limits.default_want);
        let mut plan = inner.plan(opts.timeout, opts.sources.as_deref(), wanted, opts.events);
        if let Some(pace) = &opts.pace {
            plan.deadline += pace.batch().max_wait;
            plan.pace = Some(pace);
        }
        plan.spend = opts.spend.as_deref();
        let mut lookup = match precheck(exclusion, identifiers(query)) {
            Precheck::Excluded(ids) => mirror::excluded(plan, ids, exclusion, started).await,
            Precheck::Cleared(cleared) => {
                let follow = Unlisted(exclusion);
                let answers = fanout::run(plan, cleared.ids(), &follow).await;
                let merged = release::merge(inner.sources(), &answers);
                let (verdict, facts) =
                    release::release(merged, exclusion, &cleared, &answers, inner.sources());
                answer::answer(inner.sources(), &answers, verdict, facts, started)
            }
        };
        if lookup
            .sources
            .iter()
            .all(|s| s.status == SourceStatus::Skipped)
        {
            lookup
                .hints
                .push(hints::nothing_asked(&query.identifiers()));
        }
        inner.metrics.lookup_finished(lookup.outcome_label());
        lookup
    }

    /// The identifiers sources bound to the query's own through a verified link
    /// ([`crate::profile::Observation::verified`]), in the order the sources are listed, each once,
    /// the query's own left out: for the opt-out's expansion only, whose person is on the list
    /// already, and whose answers are hashed onto it and dropped, never released. Only the query's
    /// own identifiers are looked up (no hops: a link is taken only when it binds to them), by free
    /// sources only (no paid call is wanted); not counted in `enrichd_lookups_total`.
    pub async fn expand(&self, query: &Query, timeout: Duration) -> Vec<crate::domain::Identifier> {
        let inner = &*self.inner;
        let mut plan = inner.plan(Some(timeout), None, &[], None);
        plan.max_hops = 0;
        let own = identifiers(query);
        let answers = fanout::run(plan, own.clone(), &Everything).await;
        if answers.withheld {
            // A source objected to being asked about this person: nothing it said is used.
            return Vec::new();
        }
        let mut out: Vec<crate::domain::Identifier> = Vec::new();
        let linked = answers
            .runs
            .iter()
            .flat_map(|run| run.answers.iter().flat_map(|a| a.iter()))
            .filter(|o| o.verified)
            .filter_map(|o| o.identifier());
        for id in linked {
            if id.is_personal() && !own.iter().any(|o| **o == *id) && !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }
}

impl Inner {
    fn sources(&self) -> &[Registered] {
        &self.sources.sources
    }

    /// What a fan-out needs besides the identifiers: the sources selected, the deadline, the fields the
    /// paid waterfall looks for.
    fn plan<'a>(
        &'a self,
        timeout: Option<Duration>,
        only: Option<&[String]>,
        wanted: &'a [Want],
        events: Option<mpsc::UnboundedSender<SourceEvent>>,
    ) -> Fanout<'a> {
        let timeout = timeout
            .unwrap_or(self.limits.default_timeout)
            .min(self.limits.max_timeout);
        Fanout {
            sources: self.sources(),
            selected: self
                .sources()
                .iter()
                .map(|s| only.is_none_or(|names| names.iter().any(|n| n == s.name())))
                .collect(),
            source_metrics: &self.source_metrics,
            metrics: &self.metrics,
            deadline: Instant::now() + timeout,
            max_hops: self.limits.max_hops,
            wanted,
            events,
            misses: &self.misses,
            pace: None,
            spend: None,
        }
    }
}

/// Stage 1: the identifiers the query can be looked up by, each shared from here on.
fn identifiers(query: &Query) -> Ids {
    query.identifiers().into_iter().map(Arc::new).collect()
}
