//! Removing an opted-out person's rows from stored results, on whichever replica took the opt-out.
//!
//! The in-memory [`super::index::KeyIndex`] finds the parts that may hold the person. Other replicas
//! commit parts too, and the start-up load may still be under way, so a purge first lists
//! `indexes/` under the commit lock and loads the indexes it has not seen (one listing per thousand
//! stored parts, plus one read per new part). A part is
//! rewritten with a conditional update from the version read, so two replicas purging two people
//! from one part at once both keep their removals.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::error::BatchError;
use super::index::{PartRef, PurgeReport};
use super::input;
use super::meta::BatchStatus;
use super::state::{Shared, lock};
use super::stored;
use crate::blob::{Area, BatchKey, BlobError};

/// A stored batch that holds a person: how many rows, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub rows: u64,
    pub expires_at: SystemTime,
}

/// What a purge needs to know of a row it removes, to correct the batch's counters.
struct Gone {
    row: u64,
    found: bool,
    failed: bool,
}

/// A part rewrite that lost this many races in a row gives up (the opt-out answers 503 and is retried).
const MAX_ATTEMPTS: usize = 20;

/// Removes every stored row holding one of `keys`, within this call: first from the stored inputs of
/// batches still waiting or running (so that their jobs drop those rows), then from stored results.
pub(crate) async fn purge(
    shared: &Arc<Shared>,
    keys: &[[u8; 16]],
) -> Result<PurgeReport, BatchError> {
    let inputs = purge_inputs(shared, keys).await?;
    let mut report = purge_parts(shared, keys).await?;
    report.input_rows_blanked = inputs;
    Ok(report)
}

/// Blanks the rows holding one of `keys` in every stored input (only batches marked as waiting for or
/// in a job still have one); returns how many rows were blanked.
async fn purge_inputs(shared: &Arc<Shared>, keys: &[[u8; 16]]) -> Result<u64, BatchError> {
    let marked = shared.store.marked_jobs().await.map_err(|source| {
        BatchError::from(BlobError::Store {
            batch: "(listing)".into(),
            source,
        })
    })?;
    let mut blanked = 0;
    for key in marked {
        match purge_input(shared, &key, keys).await {
            Ok(n) => blanked += n,
            Err(BatchError::NotFound | BatchError::Expired) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(blanked)
}

async fn purge_input(
    shared: &Arc<Shared>,
    key: &BatchKey,
    keys: &[[u8; 16]],
) -> Result<u64, BatchError> {
    let blobs = shared.blobs();
    let meta = stored::read_meta(blobs, key).await?.meta;
    if matches!(meta.status, BatchStatus::Done | BatchStatus::Failed) {
        // The job ended but could not remove its input: nothing needs it any more.
        blobs.delete(key, Area::Data, stored::INPUT).await?;
        return Ok(0);
    }
    let rows = input::rows_holding(blobs, key, &meta, shared.hasher.as_ref(), keys).await?;
    let fresh: Vec<u64> = rows
        .into_iter()
        .filter(|r| meta.input_purged.binary_search(r).is_err())
        .collect();
    if fresh.is_empty() {
        return Ok(0);
    }
    // The metadata first: from then on the job drops these rows, whichever input it reads.
    let _commit = shared.commit.lock().await;
    let (meta, ()) = stored::modify_meta(blobs, key, |m| {
        m.input_purged.extend(&fresh);
        m.input_purged.sort_unstable();
        m.input_purged.dedup();
        Ok(())
    })
    .await?;
    input::blank_rows(blobs, key, meta.input.delimiter, &meta.input_purged).await?;
    tracing::info!(batch = %key.id, rows = fresh.len(), "Opted-out rows blanked in a stored input.");
    Ok(fresh.len() as u64)
}

/// Removes every stored result row holding one of `keys`.
async fn purge_parts(shared: &Arc<Shared>, keys: &[[u8; 16]]) -> Result<PurgeReport, BatchError> {
    // Under the commit lock, from an index brought up to date: no part is committed between the
    // listing and the search, and none committed before is missed (a purge that comes while the
    // start-up load is still under way, on any store, finds every part).
    let _commit = shared.commit.lock().await;
    sync_index(shared).await?;
    let candidates = lock(&shared.index).candidates(keys);
    let mut report = PurgeReport::default();
    let mut touched: HashSet<BatchKey> = HashSet::new();
    for (key, part) in candidates {
        let removed = purge_part(shared, &key, part, keys).await?;
        if removed > 0 {
            report.rows_removed += removed;
            touched.insert(key);
        }
    }
    report.batches_touched = touched.len();
    Ok(report)
}

/// Per stored batch holding one of `keys`: how many of its rows do (in its committed result parts or,
/// while it waits or runs, its stored input), and when it expires. Nothing else: not the batch, not
/// its tenant, not a row.
pub(crate) async fn holding(
    shared: &Arc<Shared>,
    keys: &[[u8; 16]],
) -> Result<Vec<Held>, BatchError> {
    let candidates = {
        let _commit = shared.commit.lock().await;
        sync_index(shared).await?;
        lock(&shared.index).candidates(keys)
    };
    let mut rows: BTreeMap<BatchKey, BTreeSet<u64>> = BTreeMap::new();
    for (key, part) in candidates {
        match stored::read_index(shared.blobs(), &key, part).await {
            Ok(index) => rows
                .entry(key)
                .or_default()
                .extend(index.rows_holding(keys)),
            Err(BatchError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let marked = shared.store.marked_jobs().await.map_err(|source| {
        BatchError::from(BlobError::Store {
            batch: "(listing)".into(),
            source,
        })
    })?;
    for key in marked {
        let meta = match stored::read_meta(shared.blobs(), &key).await {
            Ok(m) => m.meta,
            Err(BatchError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        match input::rows_holding(shared.blobs(), &key, &meta, shared.hasher.as_ref(), keys).await {
            Ok(found) => rows.entry(key).or_default().extend(
                found
                    .into_iter()
                    .filter(|r| meta.input_purged.binary_search(r).is_err()),
            ),
            Err(BatchError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let mut out = Vec::new();
    for (key, rows) in rows {
        if rows.is_empty() {
            continue;
        }
        let meta = match stored::live_meta(shared.blobs(), &key).await {
            Ok(meta) => meta,
            Err(BatchError::NotFound | BatchError::Expired) => continue,
            Err(e) => return Err(e),
        };
        // Rows of parts a crashed job never committed are not the batch's (and go at its end);
        // the committed parts hold rows 1 to `rows_committed`.
        let committed = meta.rows_committed();
        let counted = rows
            .iter()
            .filter(|r| **r <= committed || meta.status != BatchStatus::Done)
            .count() as u64;
        if counted > 0 {
            out.push(Held {
                rows: counted,
                expires_at: meta.stamp.expires_at,
            });
        }
    }
    out.sort_by_key(|h| h.expires_at);
    Ok(out)
}

/// Loads every index object this replica has not seen and forgets those no longer stored. The caller
/// holds `shared.commit`: a part committed between the listing and the forgetting would otherwise be
/// forgotten while it is stored.
pub(crate) async fn sync_index(shared: &Arc<Shared>) -> Result<(), BatchError> {
    let listed: HashSet<(BatchKey, PartRef)> = shared
        .blobs()
        .index_objects()
        .await?
        .into_iter()
        .filter_map(|(key, name)| Some((key, PartRef::parse(&name)?)))
        .collect();
    for (key, part) in &listed {
        if lock(&shared.index).has(key, *part) {
            continue;
        }
        match stored::read_index(shared.blobs(), key, *part).await {
            Ok(index) => lock(&shared.index).insert_part(key, *part, &index),
            Err(BatchError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    lock(&shared.index).retain_listed(&listed);
    Ok(())
}

/// Rewrites one part without the rows holding any of `keys`; returns how many rows went. The caller
/// holds the commit lock.
pub(crate) async fn purge_part(
    shared: &Arc<Shared>,
    key: &BatchKey,
    part: PartRef,
    keys: &[[u8; 16]],
) -> Result<u64, BatchError> {
    let blobs = shared.blobs();
    for _ in 0..MAX_ATTEMPTS {
        let index = match stored::read_index(blobs, key, part).await {
            Ok(index) => index,
            Err(BatchError::NotFound) => return Ok(0),
            Err(e) => return Err(e),
        };
        let doomed = index.rows_holding(keys);
        if doomed.is_empty() {
            return Ok(0);
        }
        // The part is read row by row and the kept rows sealed as they come: what is held is the
        // rewritten part (at most `part_bytes` and a row), never the part twice.
        let (mut rows, etag) = match stored::PartRows::open(blobs, key, part).await {
            Ok(read) => read,
            Err(BatchError::NotFound) => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut kept = stored::PartWriter::start(blobs, key, part).await?;
        let mut gone: Vec<Gone> = Vec::new();
        while let Some(row) = rows.next().await? {
            if doomed.contains(&row.row) {
                gone.push(Gone {
                    row: row.row,
                    found: row.enrichment.is_some(),
                    failed: row.failed(),
                });
            } else {
                kept.push(&row)?;
            }
        }
        let removed = gone.len() as u64;
        if removed > 0 {
            // The counters first, once per row: a purge cut short after this and taken up again
            // finds the rows counted already.
            let counted = stored::modify_meta(blobs, key, |m| {
                if m.part(part.part) == Some(part) {
                    for r in &gone {
                        if let Err(at) = m.purged_rows.binary_search(&r.row) {
                            m.purged_rows.insert(at, r.row);
                            m.rows_purged += 1;
                            if r.found {
                                m.rows_found = m.rows_found.saturating_sub(1);
                            }
                            if r.failed {
                                m.rows_error = m.rows_error.saturating_sub(1);
                            }
                        }
                    }
                }
                Ok(())
            })
            .await;
            match counted {
                Ok(_) | Err(BatchError::NotFound) => {}
                Err(e) => return Err(e),
            }
            let written = match &etag {
                Some(etag) => kept.update(blobs, etag).await,
                None => kept.put(blobs).await,
            };
            match written {
                Ok(()) => {}
                Err(BlobError::Conflict(_)) => continue,
                Err(BlobError::NotFound(_)) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
        // Part first: if we stop between the two writes, the index still lists the removed rows, which
        // only makes a later purge look at this part again.
        let kept_index = index.without_rows(&doomed);
        stored::write_index(blobs, key, part, &kept_index).await?;
        lock(&shared.index).insert_part(key, part, &kept_index);
        if removed == 0 {
            return Ok(0);
        }
        tracing::info!(batch = %key.id, part = part.part, rows = removed, "Opted-out rows purged.");
        return Ok(removed);
    }
    Err(BlobError::Conflict(key.id.to_string()).into())
}
