//! Upstream sources behind one trait.
//!
//! The fan-out knows nothing about any one source: it asks each registered source whether it
//! [`accepts`](Source::accepts) an identifier and calls [`lookup`](Source::lookup) under a timeout. Adding a
//! source is adding a file here (its [`spec::Spec`]) and one line in [`registry::BUILTIN`].

pub mod dns;
mod error;
pub mod etiquette;
#[cfg(test)]
mod fake;
pub mod finder;
pub mod github;
pub mod gravatar;
mod http;
pub mod keybase;
pub mod openpgp;
pub mod per_host;
pub mod provider;
pub mod rdap;
pub mod registry;
mod set;
pub mod spec;
pub mod ssrf;
pub mod webfinger;
pub mod website;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

pub use error::SourceError;
pub use http::{Fetched, Upstream};
pub use registry::SourceOverrides;
pub use set::{Listed, SourceSet, SourceState};
pub use spec::SourceConfig;

use crate::domain::Identifier;
use crate::profile::Observation;

/// An upstream the fan-out can ask about an identifier.
pub trait Source: Send + Sync {
    /// The configured name (`gravatar`, `github`, ...); used in responses, metrics and logs.
    fn name(&self) -> &str;

    /// Whether this source can look anything up from `id`.
    fn accepts(&self, id: &Identifier) -> bool;

    /// Whether everything this source reports is about a domain (its mail servers, its registration,
    /// its company's site), never about a person, and the question it sends upstream names the
    /// domain only. Such a source is asked even when the person is excluded, so that an excluded
    /// person's answer holds the same domain facts as a miss at that domain.
    fn domain_only(&self) -> bool {
        false
    }

    /// Whether this source answers from the identifier alone and calls nobody (the address finder).
    /// It runs even when the person is excluded: what it derives tells which sources a miss would
    /// have asked.
    fn calls_nobody(&self) -> bool {
        false
    }

    /// Looks `id` up. An empty list is a miss. The fan-out applies the timeout; a source need not.
    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>>;

    /// The same answer, shared: what the fan-out calls. A source that keeps answers (the etiquette
    /// guard's cache) hands them out without copying them for each caller.
    fn lookup_shared<'a>(&'a self, id: &'a Arc<Identifier>) -> BoxFuture<'a, SharedAnswer> {
        Box::pin(async move { self.lookup(id).await.map(Arc::from) })
    }

    /// A batch row's call: waits for the source's batch budget and retries after an upstream's `429`
    /// instead of failing at once (see [`etiquette::pace`]). A source without a guard has no budget
    /// to wait for.
    fn lookup_paced<'a>(
        &'a self,
        id: &'a Arc<Identifier>,
        _pace: &'a etiquette::Pace,
    ) -> BoxFuture<'a, SharedAnswer> {
        self.lookup_shared(id)
    }

    /// A call feigned for a person who opted out, where a miss would have called: nothing is sent
    /// that names the person, the call lasts `latency` (what a miss lasts) and answers a miss. A
    /// source whose host a lookup chooses passes that host's etiquette as a call would
    /// ([`per_host`]). See the pipeline's mirror.
    fn feign<'a>(
        &'a self,
        _id: &'a Identifier,
        latency: Duration,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(Vec::new())
        })
    }

    /// [`Source::feign`] as the fan-out would make the call: the etiquette guard passes it through
    /// its cache, pause, breaker, budget and slots as it would a miss, and in a batch (`pace`) waits
    /// for the budget as a paced call does, so that an excluded person's answer takes the budget,
    /// meets the refusals and is cached as a miss's would.
    fn feign_shared<'a>(
        &'a self,
        id: &'a Arc<Identifier>,
        latency: Duration,
        _pace: Option<&'a etiquette::Pace>,
    ) -> BoxFuture<'a, SharedAnswer> {
        Box::pin(async move { self.feign(id, latency).await.map(Arc::from) })
    }

    /// The bound this source itself puts on every call it answers (the etiquette guard's call timeout;
    /// a caller joining a call in flight waits no longer than that call's bound). `None`: the fan-out
    /// must time the call.
    fn call_bound(&self) -> Option<Duration> {
        None
    }
}

/// An answer shared between the cache, callers coalesced on one call, and the merge.
pub type SharedAnswer = Result<Arc<[Observation]>, SourceError>;

/// A source with the settings the fan-out applies around it.
#[derive(Clone)]
pub struct Registered {
    pub source: Arc<dyn Source>,
    /// The source's name, shared by every report that names it.
    pub label: Arc<str>,
    pub timeout: Duration,
    /// Prior reliability in (0, 1), used by the merge.
    pub weight: f64,
    /// A paid provider: called in the waterfall, one at a time, only while wanted fields are missing.
    pub paid: bool,
    /// What one hit costs (paid providers).
    pub cost_per_hit: f64,
}

impl Registered {
    /// A free source, called concurrently with the others.
    pub fn free(source: Arc<dyn Source>, timeout_ms: u64, weight: f64) -> Self {
        Self {
            label: Arc::from(source.name()),
            source,
            timeout: Duration::from_millis(timeout_ms),
            weight,
            paid: false,
            cost_per_hit: 0.0,
        }
    }

    pub fn name(&self) -> &str {
        &self.label
    }

    /// Whether the source bounds each call by `timeout` or sooner itself, so that the fan-out arms no
    /// timer of its own for it.
    pub fn self_timed(&self) -> bool {
        self.source.call_bound().is_some_and(|b| b <= self.timeout)
    }
}

/// What became of one source during one lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    Hit,
    Miss,
    Timeout,
    Error,
    RateLimited,
    Skipped,
}

impl SourceStatus {
    /// Every status, in declaration order ([`index`](Self::index) is the position here).
    pub const ALL: [Self; 6] = [
        Self::Hit,
        Self::Miss,
        Self::Timeout,
        Self::Error,
        Self::RateLimited,
        Self::Skipped,
    ];

    /// The status's position in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::RateLimited => "rate_limited",
            Self::Skipped => "skipped",
        }
    }

    /// When a source was called several times in one lookup (hops), the status it reports overall.
    pub fn combine(self, other: Self) -> Self {
        use SourceStatus::*;
        let rank = |s: Self| match s {
            Hit => 0,
            Miss => 1,
            RateLimited => 2,
            Timeout => 3,
            Error => 4,
            Skipped => 5,
        };
        if rank(self) <= rank(other) {
            self
        } else {
            other
        }
    }
}
