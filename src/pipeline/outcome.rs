use std::sync::Arc;

use serde::Serialize;

use crate::profile::Profile;
use crate::sources::SourceStatus;

/// What became of one source in one lookup.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SourceReport {
    #[schema(value_type = String)]
    pub name: Arc<str>,
    pub status: SourceStatus,
    pub latency_ms: u64,
}

/// A progress event: which source finished, how, how fast, how many values. Never the values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceEvent {
    pub name: Arc<str>,
    pub status: SourceStatus,
    pub latency_ms: u64,
    pub fields: usize,
}

/// The answer to one lookup, already filtered through the exclusion list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lookup {
    pub found: bool,
    /// Boxed, so that moving the answer moves a pointer rather than the profile's 1.8 KB.
    pub profile: Option<Box<Profile>>,
    pub sources: Vec<SourceReport>,
    pub took_ms: u64,
    /// What the paid providers' hits in this lookup cost, in the operator's currency unit.
    pub cost: f64,
    /// Whether the answer was withheld for the exclusion list. Never serialised: an excluded answer
    /// must look exactly like a miss. Used for metrics only.
    #[serde(skip)]
    pub withheld: bool,
}

impl Lookup {
    /// Appends the answer as JSON to `out`: the same bytes as `serde_json::to_writer`, written faster
    /// (see [`super::json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        super::json::write_lookup(self, out);
    }

    pub(super) fn outcome_label(&self) -> &'static str {
        match (self.withheld, self.found) {
            (true, _) => "excluded",
            (false, true) => "found",
            (false, false) => "miss",
        }
    }
}
