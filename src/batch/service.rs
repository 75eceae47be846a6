//! [`BatchService`]: the batch API the HTTP layer and the CLI call.
//!
//! Objects of a batch: its key in `batch-keys/`, and under `batches/<tenant-hash>/<batch-id>/` the
//! `input` (the upload as received), the `part-NNNNNN-gG` result parts (JSON lines, [`StoredRow`]) and
//! the `meta` (status, counters, checkpoint); the parts' row hashes under `indexes/` (see
//! [`crate::store`] for the layout). Another tenant's id is looked up under the caller's tenant hash,
//! so it is simply not found: the same answer as an unknown id.
//!
//! Any replica may take an upload, answer for its status, serve its result or delete it; the job runs
//! on whichever replica holds its lease (see `job.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, Stream, StreamExt};

use super::download;
use super::error::{BatchError, Limit};
use super::fair::FairQueue;
use super::index::{PurgeReport, RowHasher};
use super::ingest;
use super::job;
use super::journal;
use super::meta::{BatchMeta, BatchStatus, BatchSummary};
#[cfg(test)]
use super::output::StoredRow;
use super::output::{Format, Renderer};
use super::purge::{self, Held};
use super::scan::Encoding;
use super::seams::{Enricher, Notifier};
use super::settings::{BatchConfig, BatchOptions};
use super::state::{BatchStore, Shared, lock};
use super::stored::{self, INPUT};
use crate::audit::Event;
use crate::blob::{Area, BatchId, BatchKey, BlobError, Stamp, SweepReport, TenantKey};
use crate::domain::Region;
use crate::store::watch::{self, Follower};

/// A tenant's storage quota and what its stored batches take, in bytes.
#[derive(Clone, Copy)]
struct Room {
    used: u64,
    quota: u64,
}

/// The lease of the expiry sweep: one replica sweeps at a time.
const SWEEPER_LEASE: &str = "sweeper";

/// CSV batches: upload, process, download, delete, purge. Cheap to clone.
#[derive(Clone)]
pub struct BatchService {
    pub(crate) shared: Arc<Shared>,
}

impl BatchService {
    pub fn new(
        store: BatchStore,
        enricher: Arc<dyn Enricher>,
        hasher: Arc<dyn RowHasher>,
        config: BatchConfig,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(store, enricher, hasher, config)),
        }
    }

    /// Installs the completion notifier (once; later calls are ignored).
    pub fn set_notifier(&self, notifier: Arc<dyn Notifier>) {
        let _ = self.shared.notifier.set(notifier);
    }

    fn key(tenant: &str, id: BatchId) -> BatchKey {
        BatchKey::new(TenantKey::of(tenant), id)
    }

    /// Stores an upload and queues it. Answers once the input and its metadata are durably stored.
    pub async fn create<S, E>(
        &self,
        tenant: &str,
        body: S,
        options: BatchOptions,
    ) -> Result<BatchMeta, BatchError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(r) = &options.region {
            r.parse::<Region>()
                .map_err(|_| BatchError::InvalidRegion { value: r.clone() })?;
        }
        let shared = &self.shared;
        if let Some(url) = &options.webhook {
            let notifier = shared
                .notifier
                .get()
                .ok_or_else(|| BatchError::InvalidWebhook {
                    reason: "webhooks are not enabled on this server".into(),
                })?;
            notifier
                .check(url)
                .map_err(|reason| BatchError::InvalidWebhook { reason })?;
        }
        let blobs = shared.blobs();
        let key = Self::key(tenant, BatchId::random());
        let room = self.room(&key.tenant).await?;
        let stamp = Stamp::new(blobs.now(), shared.config.results_days);
        blobs.create_batch(&key, stamp).await?;
        let stored = self.store_upload(&key, stamp, body, &options, room).await;
        let meta = match stored {
            Ok(meta) => meta,
            Err(e) => {
                let _ = blobs.delete_batch(&key).await;
                return Err(e);
            }
        };
        tracing::info!(batch = %key.id, rows = meta.rows_total, "Batch stored and queued.");
        shared
            .audit
            .record(Event::BatchCreated {
                batch: key.id.to_string(),
                rows: meta.rows_total,
            })
            .await;
        shared.enqueue(key);
        Ok(meta)
    }

    /// What is left of the tenant's storage quota: [`BatchError::QuotaExceeded`] when nothing is.
    /// The stored bytes are listed at each upload, so every replica counts the same objects; two
    /// uploads at once may each fit alone and pass the quota together (by at most one upload).
    async fn room(&self, tenant: &TenantKey) -> Result<Room, BatchError> {
        let quota = self.shared.config.quota_of(tenant);
        let used = self.shared.blobs().tenant_usage(tenant).await?;
        if used >= quota {
            return Err(BatchError::QuotaExceeded { used, quota });
        }
        Ok(Room { used, quota })
    }

    /// The input, then the metadata, then the job marker: the batch exists for readers once its
    /// metadata does, and for every replica's job scan once its marker does. An upload larger than
    /// `room` stops there (507); one larger than `batches.max_bytes` is too large whatever the
    /// quota (413).
    async fn store_upload<S, E>(
        &self,
        key: &BatchKey,
        stamp: Stamp,
        body: S,
        options: &BatchOptions,
        room: Room,
    ) -> Result<BatchMeta, BatchError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shared = &self.shared;
        let mut writer = shared.blobs().writer(key, Area::Data, INPUT).await?;
        let mut limits = shared.config.limits;
        let left = room.quota.saturating_sub(room.used);
        let quota_binds = left < limits.max_bytes;
        limits.max_bytes = limits.max_bytes.min(left);
        let ingested = match ingest::ingest(body, &mut writer, limits, options).await {
            Ok(ok) => ok,
            Err(e) => {
                writer.abort().await;
                return Err(match e {
                    BatchError::TooLarge(Limit::Bytes(_)) if quota_binds => {
                        BatchError::QuotaExceeded {
                            used: room.used,
                            quota: room.quota,
                        }
                    }
                    e => e,
                });
            }
        };
        writer.finish().await?;
        let meta = BatchMeta {
            id: key.id.to_string(),
            stamp,
            status: BatchStatus::Queued,
            rows_total: ingested.rows,
            rows_done: 0,
            rows_found: 0,
            rows_purged: 0,
            purged_rows: Vec::new(),
            rows_error: 0,
            error_reasons: BTreeMap::new(),
            parts_done: 0,
            lease_gen: 0,
            part_gens: Vec::new(),
            part_rows: shared.config.part_rows,
            part_ends: Vec::new(),
            input_purged: Vec::new(),
            input: ingested.format,
            error: None,
            webhook: options.webhook.clone(),
            max_cost: options.max_cost.filter(|c| c.is_finite() && *c >= 0.0),
            cost: 0.0,
            eta_seconds: None,
        };
        stored::create_meta(shared.blobs(), key, &meta).await?;
        shared.store.mark_job(key).await.map_err(|source| {
            BatchError::from(BlobError::Store {
                batch: key.id.to_string(),
                source,
            })
        })?;
        Ok(meta)
    }

    /// One of the tenant's batches.
    pub async fn get(&self, tenant: &str, id: BatchId) -> Result<BatchMeta, BatchError> {
        stored::live_meta(self.shared.blobs(), &Self::key(tenant, id)).await
    }

    /// One of the tenant's batches as the tenant sees it, with the live progress of its job when
    /// this replica runs it (the ETA and the rows waiting for budget).
    pub async fn summary(&self, tenant: &str, id: BatchId) -> Result<BatchSummary, BatchError> {
        let key = Self::key(tenant, id);
        let meta = stored::live_meta(self.shared.blobs(), &key).await?;
        Ok(self.with_progress(&key, &meta))
    }

    /// A batch's job as it runs on this replica: its ETA in seconds (unrounded; `None` before a row
    /// is done) and the rows waiting for budget now. `None` when this replica does not run it.
    pub fn progress(&self, tenant: &str, id: BatchId) -> Option<(Option<f64>, u64)> {
        let running = lock(&self.shared.running)
            .get(&Self::key(tenant, id))
            .cloned()?;
        Some((running.eta(), running.pace.rows_waiting()))
    }

    fn with_progress(&self, key: &BatchKey, meta: &BatchMeta) -> BatchSummary {
        let mut summary = meta.summary();
        let running = lock(&self.shared.running).get(key).cloned();
        if let Some(p) = running.filter(|_| meta.status == BatchStatus::Running) {
            summary.eta_seconds = p.eta_seconds().or(summary.eta_seconds);
            summary.rows_waiting_for_budget = p.pace.rows_waiting();
        }
        summary
    }

    /// The tenant's live batches, newest first.
    pub async fn list(&self, tenant: &str) -> Result<Vec<BatchSummary>, BatchError> {
        let blobs = self.shared.blobs();
        let tenant = TenantKey::of(tenant);
        let mut out = Vec::new();
        for key in blobs.batches(Some(&tenant)).await? {
            match stored::live_meta(blobs, &key).await {
                Ok(meta) => out.push((key, meta)),
                Err(BatchError::NotFound | BatchError::Expired) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|(_, m)| std::cmp::Reverse(m.stamp.created_at));
        Ok(out
            .iter()
            .map(|(key, meta)| self.with_progress(key, meta))
            .collect())
    }

    /// Erases the batch now (its key first); a running job stops at its next part.
    pub async fn delete(&self, tenant: &str, id: BatchId) -> Result<(), BatchError> {
        let key = Self::key(tenant, id);
        self.shared.blobs().stamp(&key).await?;
        self.erase(&key).await?;
        tracing::info!(batch = %key.id, "Batch deleted.");
        self.shared
            .audit
            .record(Event::BatchDeleted {
                batch: key.id.to_string(),
            })
            .await;
        Ok(())
    }

    async fn erase(&self, key: &BatchKey) -> Result<usize, BatchError> {
        let shared = &self.shared;
        let _commit = shared.commit.lock().await;
        lock(&shared.cancelled).insert(key.clone());
        lock(&shared.index).remove_batch(key);
        let removed = shared.blobs().delete_batch(key).await?;
        shared.store.unmark_job(key).await;
        Ok(removed)
    }

    /// The result, streamed: a header, then each part's rows. Only for a finished batch.
    pub async fn result(
        &self,
        tenant: &str,
        id: BatchId,
        format: Format,
    ) -> Result<BoxStream<'static, Result<Bytes, BatchError>>, BatchError> {
        let key = Self::key(tenant, id);
        let meta = stored::live_meta(self.shared.blobs(), &key).await?;
        if meta.status != BatchStatus::Done {
            return Err(BatchError::NotReady {
                status: meta.status.as_str(),
            });
        }
        self.shared
            .audit
            .record(Event::BatchDownloaded {
                batch: key.id.to_string(),
                format: format.as_str().to_string(),
            })
            .await;
        let input = &meta.input;
        let renderer = Arc::new(Renderer::new(
            format,
            input.delimiter,
            input.headers.clone(),
        ));
        let bom = input.bom || input.encoding == Encoding::Windows1252;
        let head = renderer.head(bom);
        let source = download::Source {
            blobs: self.shared.blobs().clone(),
            key,
            renderer,
            hasher: self.shared.hasher.clone(),
            impersonal: self.shared.enricher.impersonal_sources().into(),
        };
        let rows = download::rows(source, meta.parts().collect());
        Ok(stream::once(async move { Ok(head) })
            .chain(rows)
            .filter(|chunk: &Result<Bytes, BatchError>| {
                std::future::ready(chunk.as_ref().map_or(true, |b| !b.is_empty()))
            })
            .boxed())
    }

    /// Starts the dispatcher that runs queued jobs (at most `concurrency.jobs` at once, at most
    /// `concurrency.jobs_per_tenant` of one tenant, the next one taken fairly across tenants: see
    /// `fair.rs`), and, given the shared listing of a store other replicas use, a follower that
    /// queues every batch waiting for a job there (a job whose lease another replica holds is only
    /// looked at). Aborting the returned handle stops both and every job they run. Call once.
    pub fn spawn_workers(&self, jobs: Option<Follower>) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        let rx = lock(&shared.queue_rx).take();
        tokio::spawn(async move {
            let Some(mut rx) = rx else {
                tracing::error!("Batch workers were started twice; the second start does nothing.");
                return;
            };
            let _scan = jobs.map(|follower| {
                tokio_util::task::AbortOnDropHandle::new(tokio::spawn(follow_jobs(
                    shared.clone(),
                    follower,
                )))
            });
            let slots = shared.config.concurrency.jobs.max(1);
            let per_tenant = shared.config.concurrency.jobs_per_tenant.max(1);
            let mut queue: FairQueue<TenantKey, BatchKey> = FairQueue::default();
            let mut running = tokio::task::JoinSet::new();
            let mut started: HashMap<tokio::task::Id, BatchKey> = HashMap::new();
            loop {
                while running.len() < slots
                    && let Some((_, key)) = queue.next(per_tenant)
                {
                    let job_shared = shared.clone();
                    let job_key = key.clone();
                    let handle = running.spawn(async move {
                        job::run(&job_shared, &job_key).await;
                    });
                    started.insert(handle.id(), key);
                }
                tokio::select! {
                    queued = rx.recv() => match queued {
                        Some(key) => queue.push(key.tenant.clone(), key),
                        None => return,
                    },
                    Some(ended) = running.join_next_with_id() => {
                        let id = match &ended {
                            Ok((id, ())) => *id,
                            Err(e) => e.id(),
                        };
                        if let Err(e) = &ended {
                            tracing::error!(error = %e, "A batch job stopped unexpectedly; it is taken up again at the next start.");
                        }
                        if let Some(key) = started.remove(&id) {
                            shared.dequeued(&key);
                            queue.finished(&key.tenant);
                        }
                    }
                }
            }
        })
    }

    /// At start: loads every stored index into memory and queues every batch waiting for a job.
    /// Returns how many batches were queued.
    pub async fn resume_all(&self) -> Result<usize, BatchError> {
        let shared = &self.shared;
        {
            let _commit = shared.commit.lock().await;
            purge::sync_index(shared).await?;
        }
        let purges = journal::resume(shared).await?;
        if purges > 0 {
            tracing::info!(
                entries = purges,
                "Opt-out purges left unfinished are taken up again."
            );
        }
        let marked = shared.store.marked_jobs().await.map_err(|source| {
            BatchError::from(BlobError::Store {
                batch: "(listing)".into(),
                source,
            })
        })?;
        let mut queued = 0;
        for key in marked {
            queued += usize::from(shared.enqueue(key));
        }
        Ok(queued)
    }

    /// Deletes every expired batch (and abandoned uploads) as of the clock's now, if no other replica
    /// is sweeping.
    pub async fn sweep(&self) -> Result<SweepReport, BatchError> {
        let shared = &self.shared;
        let leases = shared.store.leases();
        let Some(lease) = leases.claim(SWEEPER_LEASE).await.map_err(|source| {
            BatchError::from(BlobError::Store {
                batch: "(sweep)".into(),
                source,
            })
        })?
        else {
            return Ok(SweepReport::default());
        };
        let _renewing = leases.keep_renewed(lease.clone());
        let swept = self.sweep_leased().await;
        leases.release(&lease).await;
        swept
    }

    async fn sweep_leased(&self) -> Result<SweepReport, BatchError> {
        let shared = &self.shared;
        let blobs = shared.blobs();
        let now = blobs.now();
        let mut report = SweepReport::default();
        for key in blobs.batches(None).await? {
            let expired = match blobs.stamp(&key).await {
                Ok(stamp) => stamp.is_expired(now),
                Err(BlobError::NotFound(_)) => false,
                Err(BlobError::Corrupt { .. } | BlobError::Unreadable { .. }) => true,
                Err(e) => return Err(e.into()),
            };
            if expired {
                report.objects_removed += self.erase(&key).await?;
                report.batches_removed += 1;
                shared
                    .audit
                    .record(Event::BatchExpired {
                        batch: key.id.to_string(),
                    })
                    .await;
            }
        }
        let rest = blobs.sweep_orphans(now, shared.config.results_days).await?;
        report.objects_removed += rest.objects_removed;
        report.batches_removed += rest.batches_removed;
        if let Ok(marked) = shared.store.marked_jobs().await {
            for key in marked {
                if matches!(blobs.stamp(&key).await, Err(BlobError::NotFound(_))) {
                    shared.store.unmark_job(&key).await;
                }
            }
        }
        if report.batches_removed > 0 {
            tracing::info!(batches = report.batches_removed, "Expired batches swept.");
        }
        Ok(report)
    }

    /// Removes every stored row holding one of `keys` (an opt-out) from stored results and inputs,
    /// through the purge journal (`journal.rs`): `Err` when the journal entry could not be written
    /// (nothing will happen), otherwise the entry is durable and a task that this call does not own
    /// works it off. Waits for that task's first attempt: `Some` once the purge is done, `None` when
    /// it is left to the retries (or another replica).
    pub async fn purge(&self, keys: &[[u8; 16]]) -> Result<Option<PurgeReport>, BatchError> {
        journal::purge(self.shared.clone(), keys.to_vec()).await
    }

    /// For a subject access request: per stored batch holding one of `keys`, how many rows and
    /// until when (see [`purge::holding`]).
    pub async fn holding(&self, keys: &[[u8; 16]]) -> Result<Vec<Held>, BatchError> {
        purge::holding(&self.shared, keys).await
    }

    /// How many purge journal entries are not worked off yet.
    pub async fn purges_pending(&self) -> Result<usize, BatchError> {
        journal::pending(&self.shared).await
    }
}

/// Queues every batch the shared listing marks as waiting for a job and this replica does not run.
async fn follow_jobs(shared: Arc<Shared>, mut follower: Follower) {
    while let Some(listing) = watch::next(&mut follower).await {
        for (name, _) in listing.under("jobs") {
            if let Some(key) = BatchKey::parse_dotted(name) {
                shared.enqueue(key);
            }
        }
        // Purges another replica left (it died, or its attempts fail): the lease says who works on
        // one; a live holder's entry is only looked at.
        for (name, _) in listing.under("purges") {
            let _ = journal::spawn(shared.clone(), name.to_string());
        }
    }
}

/// Rows already rendered, for tests.
#[cfg(test)]
pub(crate) async fn stored_rows(svc: &BatchService, tenant: &str, id: BatchId) -> Vec<StoredRow> {
    let key = BatchService::key(tenant, id);
    let meta = stored::live_meta(svc.shared.blobs(), &key)
        .await
        .expect("meta");
    let mut out = Vec::new();
    for part in meta.parts() {
        out.extend(
            stored::read_part(svc.shared.blobs(), &key, part)
                .await
                .expect("part"),
        );
    }
    out
}
