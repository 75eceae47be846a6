//! The purge journal: an opt-out's purge of stored batches, made durable before the opt-out is
//! acknowledged and worked off by a task that no request owns.
//!
//! An entry is one object, `state/purges/<millis>-<random>`, holding the row keys to purge (the first
//! 16 bytes of the exclusion list's keyed hashes, as hex: never an identifier). It is created before
//! the opt-out answers; a task of its own (spawned, so a client that disconnects cannot cancel it)
//! claims the entry's lease (`leases/purge.<name>`, as batch jobs do), purges stored inputs and
//! results, and deletes the entry. An entry left by a crash or a failure is taken up again: by the
//! same process after a pause, by any process at start ([`resume`]), and on a shared store by any
//! replica that sees it in the `state/` listing once its lease has lapsed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::error::BatchError;
use super::index::PurgeReport;
use super::purge;
use super::state::{Shared, lock};
use crate::blob::BlobError;
use crate::store::{ObjectPath, StoreError};

/// Where entries live (under `state/`, so every replica's listing sees them).
const DIR: &str = "state/purges";
/// The first retry of a failed purge waits this long, doubling up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Entry {
    /// Row keys, 32 hex characters each.
    keys: Vec<String>,
}

fn path(name: &str) -> ObjectPath {
    ObjectPath::from(format!("{DIR}/{name}"))
}

fn lease_name(name: &str) -> String {
    format!("purge.{name}")
}

fn store_error(source: StoreError) -> BatchError {
    BatchError::from(BlobError::Store {
        batch: "(purge journal)".into(),
        source,
    })
}

/// Writes an entry for `keys`; returns its name. Durable once this returns.
async fn record(shared: &Shared, keys: &[[u8; 16]]) -> Result<String, BatchError> {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let name = format!("{millis:013}-{:016x}", rand::random::<u64>());
    let entry = Entry {
        keys: keys.iter().map(hex::encode).collect(),
    };
    let body = serde_json::to_vec(&entry).map_err(|e| {
        BatchError::from(BlobError::Corrupt {
            batch: "(purge journal)".into(),
            reason: e.to_string(),
        })
    })?;
    shared
        .store
        .objects()
        .create(&path(&name), Bytes::from(body))
        .await
        .map_err(store_error)?;
    Ok(name)
}

/// Records an entry for `keys` and works it off, both in a task of its own, so that a caller that
/// goes away (a client hanging up drops its request) cancels neither. `Err` when the entry could not
/// be written; otherwise the first attempt's outcome (see [`spawn`]).
pub(crate) async fn purge(
    shared: Arc<Shared>,
    keys: Vec<[u8; 16]>,
) -> Result<Option<PurgeReport>, BatchError> {
    let (recorded_tx, recorded) = oneshot::channel();
    tokio::spawn(async move {
        let started = match record(&shared, &keys).await {
            Ok(name) => Ok(spawn(shared, name)),
            Err(e) => Err(e),
        };
        let _ = recorded_tx.send(started);
    });
    let started = recorded.await.map_err(|_| {
        BatchError::from(BlobError::Corrupt {
            batch: "(purge journal)".into(),
            reason: "the journal task stopped".into(),
        })
    })??;
    match started {
        Some(first) => Ok(first.await.ok().flatten()),
        None => Ok(None),
    }
}

/// Works `name` off in a task of its own, unless this process works on it already. The receiver
/// gets the first attempt's outcome: a report once done, `None` when the attempt failed (the task
/// goes on retrying) or another replica holds the entry.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    name: String,
) -> Option<oneshot::Receiver<Option<PurgeReport>>> {
    if !lock(&shared.purging).insert(name.clone()) {
        return None;
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut first = Some(tx);
        let mut pause = FIRST_PAUSE;
        loop {
            match attempt(&shared, &name).await {
                Ok(report) => {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(report);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(entry = %name, error = %e, "An opt-out's purge of stored batches failed; it is retried.");
                    if let Some(tx) = first.take() {
                        let _ = tx.send(None);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
        lock(&shared.purging).remove(&name);
    });
    Some(rx)
}

/// One attempt: `None` when another replica holds the entry's lease now.
async fn attempt(shared: &Arc<Shared>, name: &str) -> Result<Option<PurgeReport>, BatchError> {
    let leases = shared.store.leases();
    let Some(lease) = leases.claim(&lease_name(name)).await.map_err(store_error)? else {
        return Ok(None);
    };
    let renewing = leases.keep_renewed(lease.clone());
    let outcome = work(shared, name).await;
    drop(renewing);
    match &outcome {
        Ok(_) => {
            if let Err(e) = leases.forget(&lease_name(name)).await {
                tracing::debug!(entry = %name, error = %e, "Could not remove a finished purge's lease.");
            }
        }
        Err(_) => leases.release(&lease).await,
    }
    outcome.map(Some)
}

async fn work(shared: &Arc<Shared>, name: &str) -> Result<PurgeReport, BatchError> {
    let objects = shared.store.objects();
    let entry = match objects.get(&path(name)).await {
        Ok(v) => v,
        Err(StoreError::NotFound { .. }) => return Ok(PurgeReport::default()),
        Err(e) => return Err(store_error(e)),
    };
    let entry: Entry = serde_json::from_slice(&entry.bytes).map_err(|e| {
        BatchError::from(BlobError::Corrupt {
            batch: "(purge journal)".into(),
            reason: e.to_string(),
        })
    })?;
    let keys: Vec<[u8; 16]> = entry
        .keys
        .iter()
        .filter_map(|k| {
            let mut key = [0u8; 16];
            hex::decode_to_slice(k, &mut key).ok()?;
            Some(key)
        })
        .collect();
    let report = purge::purge(shared, &keys).await?;
    objects.delete(&path(name)).await.map_err(store_error)?;
    tracing::info!(
        entry = %name,
        batches = report.batches_touched,
        rows = report.rows_removed,
        input_rows = report.input_rows_blanked,
        "Opt-out purge of stored batches done."
    );
    Ok(report)
}

/// Takes up every entry left in the journal (at start).
pub(crate) async fn resume(shared: &Arc<Shared>) -> Result<usize, BatchError> {
    let listed = shared
        .store
        .objects()
        .list(&ObjectPath::from(DIR))
        .await
        .map_err(store_error)?;
    let mut taken = 0;
    for m in listed {
        if let Some(name) = m.location.filename() {
            taken += usize::from(spawn(shared.clone(), name.to_string()).is_some());
        }
    }
    Ok(taken)
}

/// How many entries the journal holds: purges not yet done.
pub(crate) async fn pending(shared: &Shared) -> Result<usize, BatchError> {
    let listed = shared
        .store
        .objects()
        .list(&ObjectPath::from(DIR))
        .await
        .map_err(store_error)?;
    Ok(listed.len())
}
