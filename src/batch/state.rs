//! What every part of the batch runner shares on one replica: where batches are stored, the seams to
//! the rest of the service, the concurrency bounds, the queue and the in-memory purge index.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use super::index::{KeyIndex, RowHasher};
use super::seams::{Enricher, Notifier};
use super::settings::BatchConfig;
use crate::audit::AuditLog;
use crate::blob::{BatchKey, BlobStore, Clock, TenantKey};
use crate::seal::Keyring;
use crate::sources::etiquette::BatchPace;
use crate::store::lease::Leases;
use crate::store::{ObjectPath, Objects, Store, StoreError};

/// Where batches are kept, and how this replica coordinates with others on them. Cheap to clone.
#[derive(Clone)]
pub struct BatchStore {
    pub blobs: BlobStore,
    objects: Objects,
    leases: Arc<Leases>,
    /// Other replicas share the store: jobs are found by listing, indexes are synced before purges.
    shared: bool,
}

impl BatchStore {
    /// Batches on `store`, sealed under `keyring`, expiring by `clock`, leased as `replica`.
    pub fn new(
        store: &Store,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        replica: Arc<str>,
        lease_ttl: Duration,
    ) -> Self {
        let shared = store.is_shared();
        Self {
            blobs: BlobStore::new(store, keyring, clock),
            objects: store.objects().clone(),
            leases: Arc::new(Leases::new(
                store.objects().clone(),
                replica,
                lease_ttl,
                !shared,
            )),
            shared,
        }
    }

    pub(crate) fn objects(&self) -> &Objects {
        &self.objects
    }

    pub(crate) fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    fn marker(key: &BatchKey) -> ObjectPath {
        ObjectPath::from(format!("state/jobs/{}", key.dotted()))
    }

    /// Marks a batch as waiting for (or in) a job, for every replica to see.
    pub(crate) async fn mark_job(&self, key: &BatchKey) -> Result<(), StoreError> {
        self.objects
            .put(&Self::marker(key), Bytes::new())
            .await
            .map(drop)
    }

    /// The batch needs no job any more (done, failed, deleted).
    pub(crate) async fn unmark_job(&self, key: &BatchKey) {
        if let Err(e) = self.objects.delete(&Self::marker(key)).await {
            tracing::warn!(batch = %key.id, error = %e, "Could not remove a finished job's marker; the sweeper will.");
        }
        if let Err(e) = self.leases.forget(&job_lease(key)).await {
            tracing::debug!(batch = %key.id, error = %e, "Could not remove a finished job's lease.");
        }
    }

    /// Every batch marked as waiting for or in a job.
    pub(crate) async fn marked_jobs(&self) -> Result<Vec<BatchKey>, StoreError> {
        let listed = self.objects.list(&ObjectPath::from("state/jobs")).await?;
        Ok(listed
            .iter()
            .filter_map(|m| BatchKey::parse_dotted(m.location.filename()?))
            .collect())
    }
}

/// The lease name of a batch's job.
pub(crate) fn job_lease(key: &BatchKey) -> String {
    format!("job.{}", key.dotted())
}

pub(crate) struct Shared {
    pub(crate) store: BatchStore,
    pub(crate) enricher: Arc<dyn Enricher>,
    pub(crate) hasher: Arc<dyn RowHasher>,
    pub(crate) config: BatchConfig,
    pub(crate) global: Arc<Semaphore>,
    tenants: Mutex<HashMap<TenantKey, Arc<Semaphore>>>,
    queue_tx: mpsc::UnboundedSender<BatchKey>,
    pub(crate) queue_rx: Mutex<Option<mpsc::UnboundedReceiver<BatchKey>>>,
    /// Batches queued or running on this replica: queued once only.
    queued: Mutex<HashSet<BatchKey>>,
    pub(crate) index: Mutex<KeyIndex>,
    /// Serialises this replica's part commits with its purges and deletes.
    pub(crate) commit: tokio::sync::Mutex<()>,
    /// Batches deleted on this replica while a job may still hold them; their jobs stop at the next
    /// commit.
    pub(crate) cancelled: Mutex<HashSet<BatchKey>>,
    /// Purge journal entries a task of this replica works on.
    pub(crate) purging: Mutex<HashSet<String>>,
    pub(crate) notifier: OnceLock<Arc<dyn Notifier>>,
    /// Batch events (created, finished, downloaded, deleted, expired): ids and counts only.
    pub(crate) audit: AuditLog,
    /// The jobs running on this replica, with their progress.
    pub(crate) running: Mutex<HashMap<BatchKey, Arc<Progress>>>,
}

/// A running job's progress on this replica: what its ETA and `rows_waiting_for_budget` are drawn
/// from.
pub(crate) struct Progress {
    pub(crate) pace: Arc<BatchPace>,
    /// The batch part of each rate-limited source's budget, calls per second.
    budgets: Vec<(Arc<str>, f64)>,
    /// Rows this job had left to do when it started.
    rows_left: u64,
    started: tokio::time::Instant,
}

impl Progress {
    pub(crate) fn new(pace: Arc<BatchPace>, budgets: Vec<(Arc<str>, f64)>, rows_left: u64) -> Self {
        Self {
            pace,
            budgets,
            rows_left,
            started: tokio::time::Instant::now(),
        }
    }

    /// Seconds until every row is done, rounded up; `None` until a row is.
    pub(crate) fn eta_seconds(&self) -> Option<u64> {
        // Finite and non-negative by construction; rounded up so that 0 means done.
        self.eta().map(|secs| secs.ceil() as u64)
    }

    /// Seconds until every row is done; `None` until a row is.
    pub(crate) fn eta(&self) -> Option<f64> {
        let (finished, calls) = self.pace.finished();
        let remaining = self.rows_left.saturating_sub(finished);
        eta(
            remaining,
            finished,
            self.started.elapsed().as_secs_f64(),
            &calls,
            &self.budgets,
        )
    }
}

/// The seconds `remaining` rows need: the slowest source's, each taking as many calls a row as the
/// `finished` rows took (`calls`) at its batch budget (`budgets`, calls per second). Rows that need
/// no budgeted source go at the pace the finished ones went (`elapsed` seconds for them). `None`
/// before a row is finished.
pub(crate) fn eta(
    remaining: u64,
    finished: u64,
    elapsed: f64,
    calls: &std::collections::BTreeMap<Arc<str>, u64>,
    budgets: &[(Arc<str>, f64)],
) -> Option<f64> {
    if finished == 0 {
        return None;
    }
    let (remaining, finished) = (remaining as f64, finished as f64);
    let paced = budgets
        .iter()
        .filter(|(_, rate)| *rate > 0.0)
        .filter_map(|(name, rate)| {
            let per_row = *calls.get(name)? as f64 / finished;
            Some(remaining * per_row / rate)
        })
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    Some(paced.unwrap_or(elapsed / finished * remaining).max(0.0))
}

/// Registers a job's progress for as long as it runs.
pub(crate) struct Running<'a> {
    shared: &'a Shared,
    key: BatchKey,
    pub(crate) progress: Arc<Progress>,
}

impl<'a> Running<'a> {
    pub(crate) fn start(shared: &'a Shared, key: &BatchKey, progress: Progress) -> Self {
        let progress = Arc::new(progress);
        lock(&shared.running).insert(key.clone(), Arc::clone(&progress));
        Self {
            shared,
            key: key.clone(),
            progress,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(&self.shared.running).remove(&self.key);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(
        store: BatchStore,
        enricher: Arc<dyn Enricher>,
        hasher: Arc<dyn RowHasher>,
        mut config: BatchConfig,
    ) -> Self {
        config.results_days = config.results_days.clamp(1, 30);
        config.part_rows = config.part_rows.max(1);
        config.part_bytes = config.part_bytes.max(1);
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let audit = AuditLog::new(store.objects().clone());
        Self {
            audit,
            store,
            enricher,
            hasher,
            global: Arc::new(Semaphore::new(config.concurrency.global.max(1))),
            config,
            tenants: Mutex::default(),
            queue_tx,
            queue_rx: Mutex::new(Some(queue_rx)),
            queued: Mutex::default(),
            index: Mutex::default(),
            commit: tokio::sync::Mutex::new(()),
            cancelled: Mutex::default(),
            purging: Mutex::default(),
            notifier: OnceLock::new(),
            running: Mutex::default(),
        }
    }

    pub(crate) fn blobs(&self) -> &BlobStore {
        &self.store.blobs
    }

    pub(crate) fn tenant_permits(&self, tenant: &TenantKey) -> Arc<Semaphore> {
        lock(&self.tenants)
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.concurrency.per_tenant.max(1))))
            .clone()
    }

    pub(crate) fn is_cancelled(&self, key: &BatchKey) -> bool {
        lock(&self.cancelled).contains(key)
    }

    /// Queues a batch for a job on this replica, unless it is queued or running here already.
    pub(crate) fn enqueue(&self, key: BatchKey) -> bool {
        if !lock(&self.queued).insert(key.clone()) {
            return false;
        }
        self.queue_tx.send(key).is_ok()
    }

    /// The job of `key` on this replica ended (or never started): it may be queued again.
    pub(crate) fn dequeued(&self, key: &BatchKey) {
        lock(&self.queued).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_eta_is_the_slowest_budget_s_time_for_the_calls_left() {
        let budgets = vec![(Arc::from("gravatar"), 2.0), (Arc::from("github"), 1.0)];
        let calls: BTreeMap<Arc<str>, u64> =
            [(Arc::from("gravatar"), 10), (Arc::from("github"), 20)].into();
        // 10 rows took 2 github calls each: 90 rows left need 180 calls at 1 a second.
        let secs = eta(90, 10, 5.0, &calls, &budgets).expect("rows were finished");
        assert!((secs - 180.0).abs() < 1e-9, "{secs}");
        assert_eq!(eta(90, 0, 5.0, &calls, &budgets), None);
    }

    #[test]
    fn rows_that_need_no_budget_go_at_the_pace_seen_so_far() {
        let secs = eta(30, 10, 5.0, &BTreeMap::new(), &[]).expect("rows were finished");
        assert!((secs - 15.0).abs() < 1e-9, "{secs}");
    }
}
