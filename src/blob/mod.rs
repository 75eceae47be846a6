//! The blob area: the one place enrichd stores personal data (CSV batch inputs, results and their
//! indexes), on the [`crate::store::Store`] (a local directory or S3).
//!
//! Invariants:
//! - Object names are `<area>/<tenant-hash>/<batch-id>/<name>`: a keyed hash of the tenant id and a
//!   128-bit random batch id ([`BatchId`]). No personal data ever appears in a name.
//! - Every object of a batch is sealed ([`crate::seal`]) with a key derived from the batch's data
//!   key; the data key is stored only wrapped by the master key, in `batch-keys/<tenant>/<batch>`,
//!   beside the batch's [`Stamp`] (`created_at`, `expires_at`). It is written before anything else of
//!   the batch and deleted before anything else (crypto-shredding): once it is gone, no copy of the
//!   batch's objects can be read.
//! - Nothing is served at or after `expires_at` ([`BlobError::Expired`]); [`BlobStore::sweep`] deletes
//!   expired batches, uploads abandoned before their metadata was written, and objects left without a
//!   key.
//! - Every put is atomic (a local staging file renamed, or one S3 PUT); streamed writes appear only
//!   when finished.

mod clock;
mod id;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use id::{Area, BatchId, BatchKey, TenantKey};
pub use store::{
    BlobStore, BlobWriter, META, RewrapReport, SealedBuffer, Stamp, SweepReport, rfc3339,
};

use crate::seal::SealError;
use crate::store::StoreError;

/// What went wrong in the blob area. Messages name objects by batch id only, never by content.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Unknown batch or object, or another tenant's, or a batch whose key was destroyed.
    #[error("batch {0} not found")]
    NotFound(String),
    /// The batch's retention period is over; it must not be served.
    #[error("batch {0} has expired")]
    Expired(String),
    /// An object was changed by another writer since it was read (a conditional update lost).
    #[error("an object of batch {0} was changed by another writer")]
    Conflict(String),
    /// An object of the batch decrypts but does not parse.
    #[error("an object of batch {batch} is corrupt: {reason}")]
    Corrupt { batch: String, reason: String },
    /// An object of the batch does not decrypt with its key.
    #[error("an object of batch {batch} cannot be decrypted: {source}")]
    Unreadable {
        batch: String,
        #[source]
        source: SealError,
    },
    /// The store failed.
    #[error("blob storage failed on batch {batch}: {source}")]
    Store {
        batch: String,
        #[source]
        source: StoreError,
    },
}

impl BlobError {
    /// The store could not be reached: worth a 503 and a retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store { source, .. } if source.is_unavailable())
    }
}
