//! The blob area: the one place enrichd stores personal data (CSV batch inputs and results).
//!
//! Everything goes through [`object_store::ObjectStore`], so the local filesystem used by default
//! (`<data_dir>/blobs`) can be swapped for S3-compatible storage without touching callers.
//!
//! Invariants:
//! - Object keys are `<tenant-hash>/<batch-id>/<name>`: a keyed hash of the tenant id and a 128-bit random
//!   batch id ([`BatchId`]). No personal data ever appears in a key.
//! - Every batch has a metadata object ([`META`]) holding at least a [`Stamp`] (`created_at`, `expires_at`).
//!   It is written after the objects it describes, so a batch without metadata is never served.
//! - Nothing is served at or after `expires_at` ([`BlobError::Expired`]); [`BlobStore::sweep`] deletes every
//!   object of expired batches, and of abandoned uploads that never got metadata.
//! - Every put is atomic: the local store writes a staging file and renames it.

mod clock;
mod id;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use id::{BatchId, BatchKey, TenantKey};
pub use store::{BlobStore, BlobWriter, META, Stamp, SweepReport};

/// What went wrong in the blob area. Messages name objects by batch id only, never by content.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Unknown batch or object, or another tenant's.
    #[error("batch {0} not found")]
    NotFound(String),
    /// The batch's retention period is over; it must not be served.
    #[error("batch {0} has expired")]
    Expired(String),
    /// The metadata object of a batch cannot be read.
    #[error("metadata of batch {batch} is corrupt: {reason}")]
    CorruptMeta { batch: String, reason: String },
    /// The storage backend failed.
    #[error("blob storage failed on batch {batch}: {source}")]
    Store {
        batch: String,
        #[source]
        source: object_store::Error,
    },
    /// The blob directory cannot be created.
    #[error("cannot create blob directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
