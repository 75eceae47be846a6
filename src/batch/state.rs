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
