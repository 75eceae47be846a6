//! The batch store's three seams, implemented for the running service: [`PipelineEnricher`] (the lookup
//! pipeline), [`ExclusionRowHasher`] (the opt-out list's keyed hash) and [`PurgeHook`] (an opt-out
//! purges stored results before it is acknowledged).
//!
//! # Row keys
//! The purge index stores, per row, 16-byte keys of the identifiers the row holds. A row key is the
//! first 16 bytes of the exclusion list's keyed blake3 hash of the normalised identifier: exactly the
//! 128 bits the list's in-memory set compares. So the index holds no personal data (without the
//! exclusion key, which never enters the blob area, a key cannot be tied to an identifier), an opt-out
//! finds its rows by computing the same hash, and a row can be checked against the list with no
//! further hashing. Rotating the exclusion key makes existing indexes unmatchable; results still
//! expire within 30 days.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::index::RowHasher;
use super::seams::{Enricher, RowContext, RowOutcome, RowSource};
use super::service::BatchService;
use crate::domain::{Identifier, Query};
use crate::exclusion::{ExclusionList, Hashed, HookError, OptOutHook};
use crate::pipeline::{Lookup, LookupOptions, Pipeline};
use crate::sources::SourceStatus;

/// Enriches batch rows through the same [`Pipeline`] as `POST /v1/lookup`. An excluded person comes
/// back from the pipeline exactly like a miss, and is written as one.
#[derive(Clone)]
pub struct PipelineEnricher {
    pipeline: Pipeline,
}

impl PipelineEnricher {
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }
}

impl Enricher for PipelineEnricher {
    fn enrich(&self, q: Query, ctx: RowContext) -> BoxFuture<'static, RowOutcome> {
        let pipeline = self.pipeline.clone();
        Box::pin(async move {
            let opts = LookupOptions {
                pace: Some(ctx.pace),
                spend: ctx.spend,
                ..LookupOptions::default()
            };
            let lookup = pipeline.lookup(&q, opts).await;
            row_outcome(lookup)
        })
    }

    fn budgets(&self) -> Vec<(Arc<str>, f64)> {
        self.pipeline.batch_budgets()
    }

    fn impersonal_sources(&self) -> Vec<Arc<str>> {
        self.pipeline.impersonal_sources()
    }
}

/// A row's outcome from its lookup: found, or a miss, or `error` when every source asked failed
/// (a source's `rate_limited` here is an upstream that kept refusing after the retries: batch calls
/// wait for our own budget and are never refused by it). Every source asked is listed with its
/// status; paid providers the spend cap kept from being asked are `capped`, and the note says so.
fn row_outcome(lookup: Lookup) -> RowOutcome {
    let mut sources: Vec<RowSource> = lookup
        .sources
        .iter()
        .filter(|s| s.status != SourceStatus::Skipped)
        .map(|s| RowSource {
            name: s.name.to_string(),
            status: s.status.as_str().to_string(),
        })
        .collect();
    sources.extend(lookup.capped.iter().map(|name| RowSource {
        name: name.to_string(),
        status: "capped".into(),
    }));
    let asked: Vec<_> = lookup
        .sources
        .iter()
        .filter(|s| s.status != SourceStatus::Skipped)
        .collect();
    let failed = |s: &SourceStatus| {
        matches!(
            s,
            SourceStatus::Error | SourceStatus::Timeout | SourceStatus::RateLimited
        )
    };
    let mut out = match lookup.profile {
        Some(profile) if lookup.found => RowOutcome::found(*profile),
        _ if !asked.is_empty() && asked.iter().all(|s| failed(&s.status)) => {
            let each: Vec<String> = asked
                .iter()
                .map(|s| format!("{} {}", s.name, s.status.as_str()))
                .collect();
            RowOutcome::error(format!("every source asked failed ({})", each.join(", ")))
        }
        _ => RowOutcome::miss(),
    };
    out.sources = sources;
    out.cost = lookup.cost;
    out
}

/// Row keys from the exclusion list's keyed hash (see the module doc).
#[derive(Clone)]
pub struct ExclusionRowHasher {
    list: Arc<ExclusionList>,
}

impl ExclusionRowHasher {
    pub fn new(list: Arc<ExclusionList>) -> Self {
        Self { list }
    }
}

impl RowHasher for ExclusionRowHasher {
    fn row_keys(&self, id: &Identifier) -> Option<[u8; 16]> {
        let hashed = self.list.hash(id)?;
        let mut key = [0u8; 16];
        key.copy_from_slice(&hashed.digest()[..16]);
        Some(key)
    }

    fn is_excluded(&self, key: &[u8; 16]) -> bool {
        // Membership uses the first 16 bytes only, whatever the kind: any personal kind will do.
        Hashed::truncated(crate::domain::IdentifierKind::Email, *key)
            .is_some_and(|h| self.list.contains_hash(&h))
    }
}

/// Purges an opted-out person's rows from every stored batch result and input: durably recorded
/// before the opt-out is acknowledged, carried out by a task the request does not own.
pub struct PurgeHook {
    batches: BatchService,
    hasher: Arc<dyn RowHasher>,
}

impl PurgeHook {
    pub fn new(batches: BatchService, hasher: Arc<dyn RowHasher>) -> Self {
        Self { batches, hasher }
    }
}

impl OptOutHook for PurgeHook {
    fn name(&self) -> &'static str {
        "batches"
    }

    fn opted_out<'a>(&'a self, ids: &'a [Identifier]) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async move {
            let keys: Vec<[u8; 16]> = ids
                .iter()
                .filter(|id| id.is_personal())
                .filter_map(|id| self.hasher.row_keys(id))
                .collect();
            self.purge(&keys).await
        })
    }

    /// Admin hash imports: a row key is the first 16 bytes of the keyed hash, which is all a truncated
    /// imported hash holds too.
    fn opted_out_hashes<'a>(
        &'a self,
        hashes: &'a [Hashed],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async move {
            let keys: Vec<[u8; 16]> = hashes
                .iter()
                .filter_map(|h| h.digest()[..16].try_into().ok())
                .collect();
            self.purge(&keys).await
        })
    }
}

impl PurgeHook {
    async fn purge(&self, keys: &[[u8; 16]]) -> Result<(), HookError> {
        if keys.is_empty() {
            return Ok(());
        }
        // Once the journal entry is written the purge happens, whatever becomes of this request.
        match self.batches.purge(keys).await.map_err(|e| HookError {
            what: "batches",
            detail: e.to_string(),
        })? {
            Some(report) if report.rows_removed + report.input_rows_blanked > 0 => {
                tracing::info!(
                    batches = report.batches_touched,
                    rows = report.rows_removed,
                    input_rows = report.input_rows_blanked,
                    "Opt-out purged rows from stored batch results and inputs."
                );
            }
            Some(_) => {}
            None => tracing::warn!(
                "An opt-out's purge of stored batches did not finish at once; its journal entry is retried."
            ),
        }
        Ok(())
    }
}
