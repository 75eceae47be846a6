//! What else must forget a person when they opt out: caches, stored batch results.
//!
//! The opt-out handlers call every registered [`OptOutHook`] after the list has durably recorded the
//! identifiers and before they answer, so the opt-out is effective everywhere once acknowledged.

use futures::future::BoxFuture;

use crate::domain::Identifier;

/// Why a hook could not finish; the opt-out itself is already durable when this is returned.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct HookError {
    pub what: &'static str,
    pub detail: String,
}

/// A part of the service that holds data derived from upstream answers and must drop a person's.
pub trait OptOutHook: Send + Sync {
    /// Short name for logs and errors (`source_cache`, `batches`).
    fn name(&self) -> &'static str;

    /// Drops everything this part holds about any of `ids` (already normalised and on the list).
    fn opted_out<'a>(&'a self, ids: &'a [Identifier]) -> BoxFuture<'a, Result<(), HookError>>;
}
