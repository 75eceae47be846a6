//! [`BatchService`]: the batch API the HTTP layer and the CLI call.
//!
//! Objects of a batch (`<tenant-hash>/<batch-id>/`): `input` (the upload as received), `part-NNNNNN`
//! (result rows as JSON lines, [`StoredRow`]), `index-NNNNNN` (row hashes for the purge) and
//! [`crate::blob::META`] (status, counters and the checkpoint). Another tenant's id is looked up under
//! the caller's tenant hash, so it is simply not found: the same answer as an unknown id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};

use crate::blob::{BatchId, BatchKey, BlobStore, Stamp, SweepReport, TenantKey};
use crate::domain::{Query, Region};
use crate::profile::Profile;

use super::meta::{BatchMeta, BatchStatus, BatchSummary};
#[cfg(test)]
use super::output::StoredRow;
use super::output::{Format, Renderer};
use super::purge::{KeyIndex, PurgeReport, RowHasher};
use super::scan::{BatchLimits, Encoding};
use super::{BatchError, job};

/// Object name of the stored upload.
pub(crate) const INPUT: &str = "input";

pub(crate) fn part_name(n: u32) -> String {
    format!("part-{n:06}")
}

pub(crate) fn index_name(n: u32) -> String {
    format!("index-{n:06}")
}

/// The answer for one row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowOutcome {
    /// `None` for a miss, and for an excluded person: the two must look identical.
    pub profile: Option<Profile>,
    /// The per-row status written in `enrichd_status` (`found`, `not_found`, `error`, ...).
    pub status: String,
    /// Why an `error` row failed, in words that name sources and statuses, never row contents.
    pub reason: Option<String>,
}

impl RowOutcome {
    pub fn found(profile: Profile) -> Self {
        Self {
            profile: Some(profile),
            status: "found".into(),
            reason: None,
        }
    }

    /// A miss; also the answer for an excluded person.
    pub fn miss() -> Self {
        Self {
            profile: None,
            status: "not_found".into(),
            reason: None,
        }
    }

    /// Every source failed; the row may be retried by a new batch.
    pub fn error(reason: impl Into<String>) -> Self {
        Self {
            profile: None,
            status: "error".into(),
            reason: Some(reason.into()),
        }
    }
}

/// The lookup pipeline as the batch runner sees it. Implemented by the lead for the real pipeline.
pub trait Enricher: Send + Sync + 'static {
    fn enrich(&self, q: Query) -> BoxFuture<'static, RowOutcome>;
}

/// Concurrency bounds, shared by all jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concurrency {
    /// Rows being looked up at once, all tenants together.
    pub global: usize,
    /// Rows being looked up at once for one tenant.
    pub per_tenant: usize,
    /// Jobs running at once.
    pub jobs: usize,
}

impl Default for Concurrency {
    fn default() -> Self {
        BatchConfig::default().concurrency
    }
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    pub limits: BatchLimits,
    pub concurrency: Concurrency,
    /// Days a batch lives (`batch_results_days`); kept within 1..=30.
    pub results_days: u32,
    /// Input rows per part object (the checkpoint granularity).
    pub part_rows: u32,
}

impl BatchConfig {
    /// The service's settings from `[batches]`, with how many days results live.
    pub fn from_settings(b: &crate::config::BatchesConfig, results_days: u32) -> Self {
        Self {
            limits: BatchLimits {
                max_bytes: b.max_bytes,
                max_rows: b.max_rows,
                max_columns: b.max_columns,
                max_field_bytes: b.max_field_bytes,
            },
            concurrency: Concurrency {
                global: b.concurrency_global,
                per_tenant: b.concurrency_per_tenant,
                jobs: b.max_jobs,
            },
            results_days,
            part_rows: b.part_rows,
        }
    }
}

/// The embedded defaults of `[batches]` and the retention policy: one place holds the numbers.
impl Default for BatchConfig {
    fn default() -> Self {
        Self::from_settings(
            &crate::config::BatchesConfig::default(),
            crate::config::Retention::default().batch_results_days,
        )
    }
}

/// Options of one upload.
#[derive(Clone, Debug, Default)]
pub struct BatchOptions {
    /// Header -> field (`email`, `phone`, `profile_url`, `first_name`, `last_name`, `name`, `company`,
    /// `domain`, or `ignore`).
    pub columns: BTreeMap<String, String>,
    /// ISO 3166 region for phone numbers written without a country code.
    pub region: Option<String>,
    /// URL told when the batch is done or failed (see [`Notifier`]).
    pub webhook: Option<String>,
}

/// Tells the outside world a batch finished (the completion webhook). Set with
/// [`BatchService::set_notifier`]; without one, uploads naming a webhook are refused.
pub trait Notifier: Send + Sync + 'static {
    /// Checks a webhook URL at upload time; the error is a sentence for the uploader.
    fn check(&self, url: &str) -> Result<(), String>;

    /// Called once when a batch with a webhook reaches `done` or `failed`. Must not block.
    fn finished(&self, url: String, summary: BatchSummary);
}

pub(crate) struct Inner {
    pub(crate) blobs: BlobStore,
    pub(crate) enricher: Arc<dyn Enricher>,
    pub(crate) hasher: Arc<dyn RowHasher>,
    pub(crate) config: BatchConfig,
    pub(crate) global: Arc<Semaphore>,
    tenants: Mutex<HashMap<TenantKey, Arc<Semaphore>>>,
    queue_tx: mpsc::UnboundedSender<BatchKey>,
    queue_rx: Mutex<Option<mpsc::UnboundedReceiver<BatchKey>>>,
    pub(crate) index: Mutex<KeyIndex>,
    /// Serialises part commits with deletes, sweeps and purges.
    pub(crate) commit: tokio::sync::Mutex<()>,
    /// Batches deleted while a job may still hold them; their jobs stop at the next commit.
    pub(crate) cancelled: Mutex<HashSet<BatchKey>>,
    running: Mutex<HashSet<BatchKey>>,
    pub(crate) notifier: std::sync::OnceLock<Arc<dyn Notifier>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn tenant_permits(&self, tenant: &TenantKey) -> Arc<Semaphore> {
        lock(&self.tenants)
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.concurrency.per_tenant.max(1))))
            .clone()
    }

    pub(crate) fn is_cancelled(&self, key: &BatchKey) -> bool {
        lock(&self.cancelled).contains(key)
    }
}

/// CSV batches: upload, process, download, delete, purge. Cheap to clone.
#[derive(Clone)]
pub struct BatchService {
    pub(crate) inner: Arc<Inner>,
}

impl BatchService {
    pub fn new(
        blobs: BlobStore,
        enricher: Arc<dyn Enricher>,
        hasher: Arc<dyn RowHasher>,
        mut config: BatchConfig,
    ) -> Self {
        config.results_days = config.results_days.clamp(1, 30);
        config.part_rows = config.part_rows.max(1);
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                blobs,
                enricher,
                hasher,
                global: Arc::new(Semaphore::new(config.concurrency.global.max(1))),
                config,
                tenants: Mutex::default(),
                queue_tx,
                queue_rx: Mutex::new(Some(queue_rx)),
                index: Mutex::default(),
                commit: tokio::sync::Mutex::new(()),
                cancelled: Mutex::default(),
                running: Mutex::default(),
                notifier: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Installs the completion notifier (once; later calls are ignored).
    pub fn set_notifier(&self, notifier: Arc<dyn Notifier>) {
        let _ = self.inner.notifier.set(notifier);
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
        let inner = &self.inner;
        if let Some(url) = &options.webhook {
            let notifier = inner
                .notifier
                .get()
                .ok_or_else(|| BatchError::InvalidWebhook {
                    reason: "webhooks are not enabled on this server".into(),
                })?;
            notifier
                .check(url)
                .map_err(|reason| BatchError::InvalidWebhook { reason })?;
        }
        let key = Self::key(tenant, BatchId::random());
        let mut writer = inner.blobs.writer(&key, INPUT).await?;
        let ingested =
            match super::ingest::ingest(body, &mut writer, inner.config.limits, &options).await {
                Ok(ok) => ok,
                Err(e) => {
                    writer.abort().await;
                    return Err(e);
                }
            };
        writer.finish().await?;
        let meta = BatchMeta {
            id: key.id.to_string(),
            stamp: Stamp::new(inner.blobs.now(), inner.config.results_days),
            status: BatchStatus::Queued,
            rows_total: ingested.rows,
            rows_done: 0,
            rows_found: 0,
            rows_purged: 0,
            rows_error: 0,
            error_reasons: BTreeMap::new(),
            parts_done: 0,
            part_rows: inner.config.part_rows,
            input: ingested.format,
            error: None,
            webhook: options.webhook.clone(),
        };
        if let Err(e) = inner.blobs.put_meta(&key, &meta).await {
            let _ = inner.blobs.delete_batch(&key).await;
            return Err(e.into());
        }
        tracing::info!(batch = %key.id, rows = meta.rows_total, "Batch stored and queued.");
        let _ = inner.queue_tx.send(key);
        Ok(meta)
    }

    /// One of the tenant's batches.
    pub async fn get(&self, tenant: &str, id: BatchId) -> Result<BatchMeta, BatchError> {
        Ok(self.inner.blobs.live_meta(&Self::key(tenant, id)).await?)
    }

    /// The tenant's live batches, newest first.
    pub async fn list(&self, tenant: &str) -> Result<Vec<BatchSummary>, BatchError> {
        let tenant = TenantKey::of(tenant);
        let mut out = Vec::new();
        for key in self.inner.blobs.batches(Some(&tenant)).await? {
            match self.inner.blobs.live_meta::<BatchMeta>(&key).await {
                Ok(meta) => out.push(meta),
                Err(crate::blob::BlobError::NotFound(_) | crate::blob::BlobError::Expired(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.stamp.created_at));
        Ok(out.iter().map(BatchMeta::summary).collect())
    }

    /// Erases every object of the batch now; a running job stops at its next part.
    pub async fn delete(&self, tenant: &str, id: BatchId) -> Result<(), BatchError> {
        let key = Self::key(tenant, id);
        match self.inner.blobs.meta::<serde::de::IgnoredAny>(&key).await {
            Ok(_) | Err(crate::blob::BlobError::CorruptMeta { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.erase(&key).await?;
        tracing::info!(batch = %key.id, "Batch deleted.");
        Ok(())
    }

    async fn erase(&self, key: &BatchKey) -> Result<usize, BatchError> {
        let _commit = self.inner.commit.lock().await;
        lock(&self.inner.cancelled).insert(key.clone());
        lock(&self.inner.index).remove_batch(key);
        Ok(self.inner.blobs.delete_batch(key).await?)
    }

    /// The result, streamed: a header, then each part's rows. Only for a finished batch.
    pub async fn result(
        &self,
        tenant: &str,
        id: BatchId,
        format: Format,
    ) -> Result<BoxStream<'static, Result<Bytes, BatchError>>, BatchError> {
        let key = Self::key(tenant, id);
        let meta: BatchMeta = self.inner.blobs.live_meta(&key).await?;
        if meta.status != BatchStatus::Done {
            return Err(BatchError::NotReady {
                status: meta.status.as_str(),
            });
        }
        let input = &meta.input;
        let renderer = Arc::new(Renderer::new(
            format,
            input.delimiter,
            input.headers.clone(),
        ));
        let bom = input.bom || input.encoding == Encoding::Windows1252;
        let head = renderer.head(bom);
        let blobs = self.inner.blobs.clone();
        let parts = stream::iter(1..=meta.parts_done).then(move |n| {
            let (blobs, key, renderer) = (blobs.clone(), key.clone(), renderer.clone());
            async move {
                let rows = job::read_part(&blobs, &key, n).await?;
                Ok(renderer.rows(&rows))
            }
        });
        Ok(stream::once(async move { Ok(head) })
            .chain(parts)
            .filter(|chunk: &Result<Bytes, BatchError>| {
                std::future::ready(chunk.as_ref().map_or(true, |b| !b.is_empty()))
            })
            .boxed())
    }

    /// Starts the dispatcher that runs queued jobs (at most `concurrency.jobs` at once). Aborting the
    /// returned handle stops the dispatcher and every job it runs. Call once.
    pub fn spawn_workers(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let rx = lock(&inner.queue_rx).take();
        tokio::spawn(async move {
            let Some(mut rx) = rx else {
                tracing::error!("Batch workers were started twice; the second start does nothing.");
                return;
            };
            let slots = Arc::new(Semaphore::new(inner.config.concurrency.jobs.max(1)));
            let mut jobs = tokio::task::JoinSet::new();
            while let Some(key) = rx.recv().await {
                while jobs.try_join_next().is_some() {}
                if !lock(&inner.running).insert(key.clone()) {
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let inner = inner.clone();
                jobs.spawn(async move {
                    job::run(&inner, &key).await;
                    lock(&inner.running).remove(&key);
                    drop(slot);
                });
            }
        })
    }

    /// At start: loads every stored index into memory and queues every unfinished batch.
    /// Returns how many batches were queued.
    pub async fn resume_all(&self) -> Result<usize, BatchError> {
        let inner = &self.inner;
        let mut queued = 0;
        for key in inner.blobs.batches(None).await? {
            let meta: BatchMeta = match inner.blobs.live_meta(&key).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(batch = %key.id, error = %e, "Batch skipped at start.");
                    continue;
                }
            };
            for n in 1..=meta.parts_done {
                if let Ok(index) = job::read_index(&inner.blobs, &key, n).await {
                    lock(&inner.index).insert_part(&key, n, &index);
                }
            }
            if matches!(meta.status, BatchStatus::Queued | BatchStatus::Running) {
                let _ = inner.queue_tx.send(key);
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Deletes every expired batch (and abandoned uploads) as of the clock's now.
    pub async fn sweep(&self) -> Result<SweepReport, BatchError> {
        let blobs = &self.inner.blobs;
        let now = blobs.now();
        let mut report = SweepReport::default();
        for key in blobs.batches(None).await? {
            let expired = match blobs.meta::<serde::de::IgnoredAny>(&key).await {
                Ok((stamp, _)) => stamp.is_expired(now),
                Err(crate::blob::BlobError::NotFound(_)) => false,
                Err(crate::blob::BlobError::CorruptMeta { .. }) => true,
                Err(e) => return Err(e.into()),
            };
            if expired {
                report.objects_removed += self.erase(&key).await?;
                report.batches_removed += 1;
            }
        }
        let orphans = blobs.sweep(now).await?;
        report.objects_removed += orphans.objects_removed;
        report.batches_removed += orphans.batches_removed;
        if report.batches_removed > 0 {
            tracing::info!(batches = report.batches_removed, "Expired batches swept.");
        }
        Ok(report)
    }

    /// Removes every stored row holding one of `keys` (an opt-out), within this call.
    pub async fn purge(&self, keys: &[[u8; 16]]) -> Result<PurgeReport, BatchError> {
        let inner = &self.inner;
        let _commit = inner.commit.lock().await;
        let candidates = lock(&inner.index).candidates(keys);
        let mut report = PurgeReport::default();
        let mut touched: HashSet<BatchKey> = HashSet::new();
        for (key, n) in candidates {
            let removed = job::purge_part(inner, &key, n, keys).await?;
            if removed > 0 {
                report.rows_removed += removed;
                touched.insert(key);
            }
        }
        report.batches_touched = touched.len();
        Ok(report)
    }
}

/// Rows already rendered, for tests.
#[cfg(test)]
pub(crate) async fn stored_rows(svc: &BatchService, tenant: &str, id: BatchId) -> Vec<StoredRow> {
    let key = BatchService::key(tenant, id);
    let meta: BatchMeta = svc.inner.blobs.live_meta(&key).await.expect("meta");
    let mut out = Vec::new();
    for n in 1..=meta.parts_done {
        out.extend(
            job::read_part(&svc.inner.blobs, &key, n)
                .await
                .expect("part"),
        );
    }
    out
}
