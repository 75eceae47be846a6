//! Running one batch's job: hold its lease, read the stored input part by part, enrich, write each
//! part, checkpoint.
//!
//! Takeover safety: a job runs only under the batch's lease ([`crate::store::lease`]) and writes its
//! lease generation into the metadata before anything else, then every part under a name carrying
//! that generation (`part-NNNNNN-gG`), then the checkpoint (`parts_done`, and the part's generation)
//! as a conditional update that refuses to go on if the metadata names another generation. A replica
//! that takes the job over (the holder died, or stalled past its lease) resumes after the last
//! checkpoint; a part the old holder wrote but never checkpointed is simply not part of the result,
//! and the new holder writes that part again under its own generation. So no row is lost or written
//! twice, whatever the timing.
//!
//! Opt-outs: rows of people on the exclusion list are dropped before a part is written. On a shared
//! store the list is then brought up to date with other replicas' opt-outs and the part checked once
//! more: an opt-out taken elsewhere either sees this part's index in its purge, or is seen here.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use tokio_util::task::AbortOnDropHandle;

use super::columns::row_has_identifier;
use super::error::BatchError;
use super::index::{PartIndex, PartRef};
use super::input::{self, RecordReader, input_identifiers};
use super::meta::{BatchMeta, BatchStatus};
use super::output::{Enrichment, StoredRow};
use super::purge;
use super::scan::RawRecord;
use super::seams::{RowContext, RowOutcome};
use super::spend;
use super::state::{Progress, Running, Shared, job_lease, lock};
use super::stored::{self, INPUT};
use crate::audit::Event;
use crate::blob::{Area, BatchKey, BlobError};
use crate::domain::{Query, Region};
use crate::pipeline::SpendCap;
use crate::sources::etiquette::BatchPace;
use crate::store::lease::Lease;

/// Runs a batch's job to its end if this replica gets its lease (else returns at once: another
/// replica runs it). Failures are recorded in its metadata.
pub(crate) async fn run(shared: &Arc<Shared>, key: &BatchKey) {
    let leases = shared.store.leases().clone();
    let lease = match leases.claim(&job_lease(key)).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(batch = %key.id, error = %e, "Could not claim a batch job; retrying later.");
            return;
        }
    };
    let renewing = leases.keep_renewed(lease.clone());
    let ended = match run_leased(shared, key, &lease).await {
        Ok(()) => true,
        Err(BatchError::NotFound | BatchError::Expired) => {
            tracing::info!(batch = %key.id, "Batch job stopped: the batch is gone.");
            true
        }
        Err(BatchError::LeaseLost) => {
            tracing::info!(batch = %key.id, "Batch job stopped: another replica runs it now.");
            false
        }
        Err(e) if e.kind() == super::error::ErrorKind::Unavailable => {
            tracing::warn!(batch = %key.id, error = %e, "Batch job paused: the store is unavailable; it resumes from its last part.");
            false
        }
        Err(e) => {
            tracing::error!(batch = %key.id, error = %e, "Batch job failed.");
            let reason = format!("{:?}", e.kind());
            let failed = stored::modify_meta(shared.blobs(), key, |m| {
                fence(m, &lease)?;
                m.status = BatchStatus::Failed;
                m.error = Some(reason.clone());
                Ok(())
            })
            .await;
            failed.is_ok()
        }
    };
    drop(renewing);
    if ended {
        notify(shared, key).await;
        // The input is not needed once the batch has ended; an opt-out would have to purge it.
        if let Err(e) = shared.blobs().delete(key, Area::Data, INPUT).await {
            tracing::warn!(batch = %key.id, error = %e, "Could not remove an ended batch's input; the job's marker stays so that purges still look at it.");
            leases.release(&lease).await;
            return;
        }
        shared.store.unmark_job(key).await;
    } else {
        leases.release(&lease).await;
    }
}

/// Tells the notifier that a batch reached `done` or `failed`, if it asked for a webhook.
async fn notify(shared: &Shared, key: &BatchKey) {
    if let Some(notifier) = shared.notifier.get()
        && let Ok(meta) = stored::live_meta(shared.blobs(), key).await
        && matches!(meta.status, BatchStatus::Done | BatchStatus::Failed)
        && let Some(url) = meta.webhook.clone()
    {
        notifier.finished(url, meta.summary());
    }
}

/// Refuses to write metadata that a newer lease generation has taken.
fn fence(meta: &BatchMeta, lease: &Lease) -> Result<(), BatchError> {
    if meta.lease_gen != lease.generation() {
        return Err(BatchError::LeaseLost);
    }
    Ok(())
}

async fn run_leased(shared: &Arc<Shared>, key: &BatchKey, lease: &Lease) -> Result<(), BatchError> {
    let blobs = shared.blobs();
    blobs.check_live(key).await?;
    let (mut meta, finished) = stored::modify_meta(blobs, key, |m| {
        if m.lease_gen > lease.generation() {
            return Err(BatchError::LeaseLost);
        }
        m.lease_gen = lease.generation();
        let finished = matches!(m.status, BatchStatus::Done | BatchStatus::Failed);
        if !finished {
            m.status = BatchStatus::Running;
        }
        Ok(finished)
    })
    .await?;
    if finished {
        return Ok(());
    }
    if meta.parts_done > 0 {
        adopt_parts(shared, key, &meta).await?;
    }
    let region = input::region(&meta);
    let mut reader = RecordReader::open(blobs, key, meta.input.delimiter).await?;
    let part_rows = u64::from(meta.part_rows.max(1));
    let part_bytes = shared.config.part_bytes.max(1);
    let progress = Progress::new(
        Arc::new(BatchPace::default()),
        shared.enricher.budgets(),
        meta.rows_total.saturating_sub(meta.rows_done),
    );
    let running = Running::start(shared, key, progress);
    // The spend cap: what is left of the batch's max_cost and of the tenant's monthly budget.
    let month = spend::month_of(blobs.now());
    let monthly = shared.config.monthly_budgets.get(&key.tenant).copied();
    let month_left = match monthly {
        Some(budget) => {
            let spent = spend::spent(shared.store.objects(), &key.tenant, &month)
                .await
                .map_err(|source| BlobError::Store {
                    batch: key.id.to_string(),
                    source,
                })?;
            Some(budget - spent)
        }
        None => None,
    };
    let batch_left = meta.max_cost.map(|cap| cap - meta.cost);
    let spend = [batch_left, month_left]
        .into_iter()
        .flatten()
        .reduce(f64::min)
        .map(|left| Arc::new(SpendCap::new(left.max(0.0), 0.0)));
    // The header, then every row of the parts already done.
    reader.skip(1 + meta.rows_committed()).await?;
    loop {
        let first_row = meta.rows_committed() + 1;
        // Rows are read until the part is full in rows, or in bytes of input (what its rows will
        // at least take once stored); the enriched rows are cut again at `part_bytes` below.
        let mut records = Vec::new();
        let mut input_bytes = 0u64;
        while (records.len() as u64) < part_rows && input_bytes < part_bytes {
            match reader.next().await? {
                Some(r) => {
                    input_bytes += r.iter().map(|c| c.len() as u64 + 1).sum::<u64>();
                    records.push(r);
                }
                None => break,
            }
        }
        if records.is_empty() {
            break;
        }
        if lease.is_lost() {
            return Err(BatchError::LeaseLost);
        }
        let job = Job {
            progress: &running.progress,
            spend: spend.as_ref(),
        };
        let rows = enrich_part(shared, key, &meta, region, first_row, records, &job).await;
        let eta = running.progress.eta_seconds();
        let cost_before = meta.cost;
        let sizes: Vec<u64> = rows.iter().map(|d| stored::stored_len(&d.row)).collect();
        let mut rows = rows.into_iter();
        for len in cut(&sizes, part_bytes) {
            let part: Vec<Done> = rows.by_ref().take(len).collect();
            meta = commit_part(shared, key, lease, meta.parts_done + 1, part, eta).await?;
        }
        let part_cost = meta.cost - cost_before;
        if monthly.is_some() && part_cost > 0.0 {
            let added = spend::add(shared.store.objects(), &key.tenant, &month, part_cost).await;
            if let Err(e) = added {
                tracing::warn!(batch = %key.id, error = %e, "The tenant's monthly spend could not be updated.");
            }
        }
    }
    let (meta, ()) = stored::modify_meta(blobs, key, |m| {
        fence(m, lease)?;
        m.finish();
        Ok(())
    })
    .await?;
    shared
        .audit
        .record(Event::BatchFinished {
            batch: key.id.to_string(),
            status: meta.status.as_str().to_string(),
            rows: meta.rows_done,
            found: meta.rows_found,
            errors: meta.rows_error,
        })
        .await;
    tracing::info!(
        batch = %key.id,
        status = meta.status.as_str(),
        rows = meta.rows_done,
        found = meta.rows_found,
        failed = meta.rows_error,
        cost = meta.cost,
        upstream_429s = running.progress.pace.upstream_limited(),
        "Batch finished."
    );
    Ok(())
}

/// A row ready to be written, with the keys of the identifiers it holds.
struct Done {
    row: StoredRow,
    keys: Vec<[u8; 16]>,
    /// Why the row could not be enriched, when it could not.
    failure: Option<String>,
    /// What the row's paid hits cost.
    cost: f64,
}

/// What every row of a running job shares: its pacing account and its spend cap.
struct Job<'a> {
    progress: &'a Arc<Progress>,
    spend: Option<&'a Arc<SpendCap>>,
}

/// The note of a row the spend cap kept paid providers from.
const CAPPED_NOTE: &str =
    "paid providers not asked: the batch's max_cost or the tenant's monthly budget was reached";

async fn enrich_part(
    shared: &Arc<Shared>,
    key: &BatchKey,
    meta: &BatchMeta,
    region: Option<Region>,
    first_row: u64,
    records: Vec<RawRecord>,
    job: &Job<'_>,
) -> Vec<Done> {
    let tenant = shared.tenant_permits(&key.tenant);
    let width = shared.config.concurrency.per_tenant.max(1);
    let encoding = meta.input.encoding;
    let columns = &meta.input.columns;
    stream::iter(records.into_iter().enumerate())
        .map(|(i, record)| {
            let cells: Vec<String> = record.iter().map(|c| encoding.decode(c)).collect();
            let input = columns.input(&cells);
            let (tenant, global, shared) = (tenant.clone(), shared.global.clone(), shared.clone());
            let ctx = RowContext {
                pace: Arc::new(job.progress.pace.row()),
                spend: job.spend.cloned(),
            };
            async move {
                let mut warnings = Vec::new();
                let mut sources = Vec::new();
                let mut cost = 0.0;
                let (status, profile, failure) = if !row_has_identifier(&input) {
                    ("skipped".to_string(), None, None)
                } else {
                    match Query::parse_usable(&input, region) {
                        Err(errors) => {
                            let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
                            let why: Vec<&str> =
                                errors.iter().map(|e| e.message.as_str()).collect();
                            (
                                format!("invalid:{}", fields.join(",")),
                                None,
                                Some(why.join("; ")),
                            )
                        }
                        Ok((q, left_out)) => {
                            warnings = left_out
                                .iter()
                                .map(|e| format!("{}; looked up without it", e.message))
                                .collect();
                            let _t = tenant.acquire_owned().await;
                            let _g = global.acquire_owned().await;
                            // Each row's lookup is its own task, so a part's rows use every worker
                            // thread; dropping the part (a deleted batch) aborts them.
                            let pace = Arc::clone(&ctx.pace);
                            let lookup = AbortOnDropHandle::new(tokio::spawn(
                                shared.enricher.enrich(q, ctx),
                            ));
                            let outcome: RowOutcome = lookup.await.unwrap_or_else(|_| {
                                RowOutcome::error("the lookup stopped unexpectedly")
                            });
                            pace.batch().row_done(&pace);
                            if outcome.sources.iter().any(|s| s.status == "capped") {
                                warnings.push(CAPPED_NOTE.to_string());
                            }
                            sources = outcome.sources;
                            cost = outcome.cost;
                            (outcome.status, outcome.profile, outcome.reason)
                        }
                    }
                };
                let note = failure.iter().chain(&warnings).cloned().collect::<Vec<_>>();
                let mut ids = input_identifiers(&input, region);
                if let Some(p) = &profile {
                    ids.extend(p.identifiers());
                }
                let mut keys: Vec<[u8; 16]> = ids
                    .iter()
                    .filter(|id| id.is_personal())
                    .filter_map(|id| shared.hasher.row_keys(id))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                Done {
                    row: StoredRow {
                        row: first_row + i as u64,
                        cells,
                        status,
                        enrichment: profile.as_ref().map(Enrichment::from_profile),
                        note: (!note.is_empty()).then(|| note.join("; ")),
                        sources,
                    },
                    keys,
                    failure,
                    cost,
                }
            }
        })
        .buffered(width)
        .collect()
        .await
}

/// How many rows go in each part, for rows of `sizes` bytes in order: as many as fit in `max_bytes`,
/// and at least one (a row larger than the cap is a part of its own).
fn cut(sizes: &[u64], max_bytes: u64) -> Vec<usize> {
    let mut parts = Vec::new();
    let (mut rows, mut bytes) = (0usize, 0u64);
    for size in sizes {
        if rows > 0 && bytes + size > max_bytes {
            parts.push(rows);
            (rows, bytes) = (0, 0);
        }
        rows += 1;
        bytes += size;
    }
    if rows > 0 {
        parts.push(rows);
    }
    parts
}

/// Writes part `n` (rows of people on the exclusion list dropped), its index, then the checkpoint;
/// returns the metadata as checkpointed.
async fn commit_part(
    shared: &Arc<Shared>,
    key: &BatchKey,
    lease: &Lease,
    n: u32,
    rows: Vec<Done>,
    eta_seconds: Option<u64>,
) -> Result<BatchMeta, BatchError> {
    let blobs = shared.blobs();
    let part = PartRef {
        part: n,
        generation: lease.generation(),
    };
    // The last input row the part covers (rows an opt-out blanked included).
    let Some(end) = rows.last().map(|d| d.row.row) else {
        return Err(BatchError::CorruptPart {
            batch: key.id.to_string(),
            part: n,
            reason: "a part must hold at least one row".into(),
        });
    };
    let commit = shared.commit.lock().await;
    if shared.is_cancelled(key) {
        return Err(BatchError::NotFound);
    }
    // Rows an opt-out blanked in the stored input are dropped: read now, under the commit lock
    // that this replica's purges take too.
    let blanked = stored::read_meta(blobs, key).await?.meta.input_purged;
    let processed = rows.len() as u64;
    let mut kept = Vec::with_capacity(rows.len());
    let mut index = PartIndex::default();
    let mut found = 0;
    let mut purged = 0;
    let mut failures = Vec::new();
    let mut cost = 0.0;
    for mut done in rows {
        if blanked.binary_search(&done.row.row).is_ok() {
            purged += 1;
            continue;
        }
        // An excluded person's row reads like a miss's: the tenant's own input, nothing added
        // (the lookup answered a miss already; this catches an opt-out that landed since).
        if done.keys.iter().any(|k| shared.hasher.is_excluded(k)) {
            done.row.as_miss(&shared.enricher.impersonal_sources());
            done.cost = 0.0;
        }
        cost += done.cost;
        found += u64::from(done.row.enrichment.is_some());
        failures.extend(done.failure);
        index.push(done.row.row, &done.keys);
        kept.push(done.row);
    }
    stored::write_part(blobs, key, part, &kept).await?;
    stored::write_index(blobs, key, part, &index).await?;
    let checkpointed = stored::modify_meta(blobs, key, |m| {
        fence(m, lease)?;
        if m.parts_done != n - 1 {
            return Err(BatchError::LeaseLost);
        }
        m.parts_done = n;
        m.part_gens.truncate((n - 1) as usize);
        m.part_gens.push(part.generation);
        m.set_part_end(n, end);
        m.rows_done += processed;
        m.rows_found += found;
        m.rows_purged += purged;
        m.cost += cost;
        m.eta_seconds = eta_seconds;
        for why in &failures {
            m.count_error(why);
        }
        Ok(())
    })
    .await;
    let meta = match checkpointed {
        Ok((meta, ())) => meta,
        Err(e) => {
            // Never part of the result: remove it rather than leave it for the sweeper.
            let _ = blobs
                .delete(key, Area::Data, &stored::part_object(part))
                .await;
            let _ = blobs.delete(key, Area::Index, &part.suffix()).await;
            return Err(e);
        }
    };
    lock(&shared.index).insert_part(key, part, &index);
    drop(commit);
    if shared.store.is_shared() {
        shared.hasher.catch_up().await;
        purge_listed(shared, key, part, &index).await?;
    }
    Ok(meta)
}

/// Removes from a committed part the rows of people on the list as it is now.
async fn purge_listed(
    shared: &Arc<Shared>,
    key: &BatchKey,
    part: PartRef,
    index: &PartIndex,
) -> Result<(), BatchError> {
    let excluded: Vec<[u8; 16]> = index
        .keys()
        .filter(|k| shared.hasher.is_excluded(k))
        .collect();
    if !excluded.is_empty() {
        let _commit = shared.commit.lock().await;
        purge::purge_part(shared, key, part, &excluded).await?;
    }
    Ok(())
}

/// A job taken up again (after a restart, or from another replica) checks the parts already
/// committed against the list as it is now: an opt-out taken while they were being written (its
/// purge may have been cut short with its process) cannot stay in them. Parts of this batch that
/// are not committed (written before a crash, never checkpointed) are deleted, index and all.
async fn adopt_parts(
    shared: &Arc<Shared>,
    key: &BatchKey,
    meta: &BatchMeta,
) -> Result<(), BatchError> {
    let blobs = shared.blobs();
    let committed: Vec<PartRef> = meta.parts().collect();
    for (area, name) in blobs.names(key).await? {
        let suffix = match area {
            Area::Data => name.strip_prefix("part-"),
            Area::Index => Some(name.as_str()),
            Area::Key => None,
        };
        if let Some(part) = suffix.and_then(PartRef::parse)
            && !committed.contains(&part)
        {
            blobs.delete(key, area, &name).await?;
        }
    }
    shared.hasher.catch_up().await;
    for part in committed {
        let index = match stored::read_index(blobs, key, part).await {
            Ok(index) => index,
            Err(BatchError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        purge_listed(shared, key, part, &index).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn parts_are_cut_at_the_byte_cap_and_hold_at_least_one_row() {
        assert_eq!(cut(&[40, 40, 40, 40, 40], 100), [2, 2, 1]);
        assert_eq!(cut(&[100, 1], 100), [1, 1], "a full part closes");
        assert_eq!(
            cut(&[500, 10, 10], 100),
            [1, 2],
            "a row over the cap is a part alone"
        );
        assert_eq!(cut(&[1; 7], u64::MAX), [7]);
        assert!(cut(&[], 100).is_empty());
    }
}
