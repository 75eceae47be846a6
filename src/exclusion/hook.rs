//! What else must forget a person when they opt out: caches, stored batch results.
//!
//! The opt-out handlers call every registered [`OptOutHook`] after the list has durably recorded the
//! identifiers and before they answer, so the opt-out is effective everywhere once acknowledged.

use futures::future::BoxFuture;

use super::Hashed;
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

    /// Drops everything this part holds under any of these keyed hashes: an admin imported hashes, so
    /// no identifier is known. Only the first 16 bytes of a hash are certain ([`Hashed::set_key`]).
    /// The default does nothing, which is right for parts keyed by something else (a cache whose
    /// `opted_out` clears everything should clear everything here too); a part that indexes stored
    /// data by these hashes (batch results) must override it.
    fn opted_out_hashes<'a>(
        &'a self,
        hashes: &'a [Hashed],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        let _ = hashes;
        Box::pin(async { Ok(()) })
    }
}
