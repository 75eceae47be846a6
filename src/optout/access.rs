//! Subject access: what an operator may tell a person who asks what enrichd holds about them.
//!
//! Given the person's identifiers (the operator has verified who is asking), the answer says
//! whether they are on the exclusion list and since when (the oldest record of any of their
//! identifiers), and, per stored batch holding them, how many rows and until when. Never the rows,
//! the batches' ids or tenants, what a source said, or which of the identifiers matched: the person
//! learns what is stored about them, not what anyone else uploaded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::batch::{BatchError, BatchService, Held};
use crate::domain::Identifier;
use crate::exclusion::{ExclusionError, ExclusionList, Hashed};

/// What enrichd holds about one person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectAccess {
    /// One of the identifiers is on the exclusion list.
    pub listed: bool,
    /// When the oldest record of them was written (the list keeps the time of each record).
    pub listed_since: Option<SystemTime>,
    /// Stored batches holding the person, soonest expiry first.
    pub stored: Vec<Held>,
}

impl SubjectAccess {
    /// Rows across every stored batch.
    pub fn rows(&self) -> u64 {
        self.stored.iter().map(|h| h.rows).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the exclusion list could not be read")]
    List(#[from] ExclusionError),
    #[error("the stored batches could not be read")]
    Batches(#[from] BatchError),
}

/// Answers a subject access request for `ids` (parsed and normalised).
pub async fn subject_access(
    list: &ExclusionList,
    batches: &BatchService,
    ids: &[Identifier],
) -> Result<SubjectAccess, AccessError> {
    let hashes: Vec<Hashed> = ids
        .iter()
        .filter(|id| id.is_personal())
        .filter_map(|id| list.hash(id))
        .collect();
    let listed = hashes.iter().any(|h| list.contains_hash(h));
    let listed_since = if listed {
        oldest_record(list, &hashes).await?
    } else {
        None
    };
    let keys: Vec<[u8; 16]> = hashes
        .iter()
        .filter_map(|h| h.digest()[..16].try_into().ok())
        .collect();
    let stored = if keys.is_empty() {
        Vec::new()
    } else {
        batches.holding(&keys).await?
    };
    Ok(SubjectAccess {
        listed,
        listed_since,
        stored,
    })
}

/// The time of the oldest record of any of `hashes` (read on a blocking thread: the local list's
/// records are read from its file).
async fn oldest_record(
    list: &ExclusionList,
    hashes: &[Hashed],
) -> Result<Option<SystemTime>, AccessError> {
    let wanted: Vec<u128> = hashes.iter().map(Hashed::set_key).collect();
    let records = list.records().await?;
    let oldest = tokio::task::spawn_blocking(move || {
        records
            .filter_map(Result::ok)
            .filter(|r| wanted.contains(&r.hashed.set_key()))
            .map(|r| r.timestamp)
            .min()
    })
    .await
    .map_err(|e| ExclusionError::Join(e.to_string()))?;
    Ok(oldest.map(|s| UNIX_EPOCH + Duration::from_secs(s)))
}
