//! What the batch runner needs from the rest of the service, as traits the running service
//! implements (`bridge.rs`) and tests fake: the lookup ([`Enricher`]) and the completion notice
//! ([`Notifier`]). The opt-out list's seam is [`super::index::RowHasher`].

use futures::future::BoxFuture;

use super::meta::BatchSummary;
use crate::domain::Query;
use crate::profile::Profile;

/// The answer for one row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowOutcome {
    /// `None` for a miss, and for an excluded person: the two must look identical.
    pub profile: Option<Profile>,
    /// The per-row status written in `enrichd_status` (`found`, `not_found`, `error`, ...).
    pub status: String,
}

impl RowOutcome {
    pub fn found(profile: Profile) -> Self {
        Self {
            profile: Some(profile),
            status: "found".into(),
        }
    }

    /// A miss; also the answer for an excluded person.
    pub fn miss() -> Self {
        Self {
            profile: None,
            status: "not_found".into(),
        }
    }

    /// Every source failed; the row may be retried by a new batch.
    pub fn error() -> Self {
        Self {
            profile: None,
            status: "error".into(),
        }
    }
}

/// The lookup pipeline as the batch runner sees it.
pub trait Enricher: Send + Sync + 'static {
    fn enrich(&self, q: Query) -> BoxFuture<'static, RowOutcome>;
}

/// Tells the outside world a batch finished (the completion webhook). Without one, uploads naming a
/// webhook are refused.
pub trait Notifier: Send + Sync + 'static {
    /// Checks a webhook URL at upload time; the error is a sentence for the uploader.
    fn check(&self, url: &str) -> Result<(), String>;

    /// Called once when a batch with a webhook reaches `done` or `failed`. Must not block.
    fn finished(&self, url: String, summary: BatchSummary);
}
