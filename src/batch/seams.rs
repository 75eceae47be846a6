//! What the batch runner needs from the rest of the service, as traits the running service
//! implements (`bridge.rs`) and tests fake: the lookup ([`Enricher`]) and the completion notice
//! ([`Notifier`]). The opt-out list's seam is [`super::index::RowHasher`].

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::meta::BatchSummary;
use crate::domain::Query;
use crate::pipeline::SpendCap;
use crate::profile::Profile;
use crate::sources::etiquette::Pace;

/// What became of one source for one row: its name and status (`hit`, `miss`, `timeout`, `error`,
/// `rate_limited`, or `capped` for a paid provider the spend cap kept from being asked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSource {
    pub name: String,
    pub status: String,
}

/// What a row's lookup is given besides its query: its pacing, and its batch's spend cap.
#[derive(Clone, Debug)]
pub struct RowContext {
    pub pace: Arc<Pace>,
    pub spend: Option<Arc<SpendCap>>,
}

/// The answer for one row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowOutcome {
    /// `None` for a miss, and for an excluded person: the two must look identical.
    pub profile: Option<Profile>,
    /// The per-row status written in `enrichd_status` (`found`, `not_found`, `error`, ...).
    pub status: String,
    /// Why an `error` row failed, in words that name sources and statuses, never row contents.
    pub reason: Option<String>,
    /// Each source asked and what became of it (skipped sources left out).
    pub sources: Vec<RowSource>,
    /// What the row's paid hits cost.
    pub cost: f64,
}

impl RowOutcome {
    pub fn found(profile: Profile) -> Self {
        Self {
            profile: Some(profile),
            status: "found".into(),
            reason: None,
            sources: Vec::new(),
            cost: 0.0,
        }
    }

    /// A miss; also the answer for an excluded person.
    pub fn miss() -> Self {
        Self {
            profile: None,
            status: "not_found".into(),
            reason: None,
            sources: Vec::new(),
            cost: 0.0,
        }
    }

    /// Every source failed; the row may be retried by a new batch.
    pub fn error(reason: impl Into<String>) -> Self {
        Self {
            profile: None,
            status: "error".into(),
            reason: Some(reason.into()),
            sources: Vec::new(),
            cost: 0.0,
        }
    }
}

/// The lookup pipeline as the batch runner sees it.
pub trait Enricher: Send + Sync + 'static {
    fn enrich(&self, q: Query, ctx: RowContext) -> BoxFuture<'static, RowOutcome>;

    /// The batch part of each rate-limited source's budget on this replica, calls per second: what
    /// a batch's ETA is drawn from. None: the ETA follows the rows' own pace.
    fn budgets(&self) -> Vec<(Arc<str>, f64)> {
        Vec::new()
    }

    /// The sources whose `hit` says nothing about a person (facts about a domain, guesses made
    /// without asking anyone): a row turned into a miss keeps their statuses, as a real miss shows
    /// them.
    fn impersonal_sources(&self) -> Vec<Arc<str>> {
        Vec::new()
    }
}

/// Tells the outside world a batch finished (the completion webhook). Without one, uploads naming a
/// webhook are refused.
pub trait Notifier: Send + Sync + 'static {
    /// Checks a webhook URL at upload time; the error is a sentence for the uploader.
    fn check(&self, url: &str) -> Result<(), String>;

    /// Called once when a batch with a webhook reaches `done` or `failed`. Must not block.
    fn finished(&self, url: String, summary: BatchSummary);
}
