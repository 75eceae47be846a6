//! Stage 6: what the client sees. An answer that was withheld, or whose query named an excluded
//! person, reads like a miss.

use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

use super::fanout::{Answers, millis};
use super::release::Verdict;
use crate::profile::{Facts, Profile};
use crate::sources::{Registered, SourceStatus};

/// What became of one source in one lookup.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SourceReport {
    #[schema(value_type = String)]
    pub name: Arc<str>,
    pub status: SourceStatus,
    pub latency_ms: u64,
}

/// The answer to one lookup, already filtered through the exclusion list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lookup {
    /// Whether a person was found: the profile holds a value about a person. Facts about a domain
    /// never make it true.
    pub found: bool,
    /// Boxed: the answer is moved through every layer on its way out, the profile is large. `None`
    /// unless `found`.
    pub profile: Option<Box<Profile>>,
    /// Facts about the domains the query named (mail servers, registrar, site metadata), reported
    /// apart from the person, every identifier among them checked against the exclusion list. A
    /// miss and an excluded person's answer at the same domain hold the same facts.
    #[schema(value_type = std::collections::BTreeMap<String, crate::profile::Ranked>)]
    pub facts: Facts,
    pub sources: Vec<SourceReport>,
    pub took_ms: u64,
    /// What the paid providers' hits in this lookup cost, in the operator's currency unit.
    pub cost: f64,
    /// What the client can do when the answer is empty for a reason of configuration (no enabled
    /// source takes the identifiers given); omitted when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// Whether the answer was withheld for the exclusion list. Never serialised: an excluded answer
    /// must look exactly like a miss. Used for metrics only.
    #[serde(skip)]
    pub withheld: bool,
    /// Paid providers not asked because the lookup's spend cap would have been passed (batches with
    /// `max_cost`). Not part of the JSON answer.
    #[serde(skip)]
    pub capped: Vec<Arc<str>>,
}

impl Lookup {
    /// The outcome metrics count: `found` or `miss`. An excluded person counts as a miss, so that no
    /// figure moves with one person's opt-out.
    pub(super) fn outcome_label(&self) -> &'static str {
        if self.found { "found" } else { "miss" }
    }
}

/// The answer to a lookup that ran: each source's status and latency, the profile the check released.
/// A withheld answer reads like a miss: no profile, no source claiming a hit, no cost.
pub(crate) fn answer(
    sources: &[Registered],
    answers: &Answers,
    verdict: Verdict,
    facts: Facts,
    started: Instant,
) -> Lookup {
    let (profile, withheld) = match verdict {
        Verdict::Released(profile) => (profile, false),
        Verdict::Withheld => (None, true),
    };
    let reports = sources
        .iter()
        .zip(&answers.runs)
        .map(|(s, run)| SourceReport {
            name: Arc::clone(&s.label),
            status: if withheld && run.status == SourceStatus::Hit && !s.source.domain_only() {
                SourceStatus::Miss
            } else {
                run.status
            },
            latency_ms: match (run.first_start, run.last_end) {
                (Some(a), Some(b)) => millis(b.saturating_duration_since(a)),
                _ => 0,
            },
        })
        .collect();
    Lookup {
        found: profile.is_some(),
        profile,
        facts,
        sources: reports,
        took_ms: millis(started.elapsed()),
        // What was spent is in the metrics; a withheld answer must not hint at a paid hit.
        cost: if withheld { 0.0 } else { answers.cost },
        hints: Vec::new(),
        withheld,
        capped: answers
            .capped
            .iter()
            .map(|&i| Arc::clone(&sources[i].label))
            .collect(),
    }
}
