//! [`BlobStore`]: batch-scoped objects with expiry, over any [`ObjectStore`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{BatchKey, BlobError, Clock, TenantKey};

/// Name of the metadata object of every batch. Written last: its presence means "complete".
pub const META: &str = "meta.json";

/// An upload that never got its metadata is deleted once it is this old.
const ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Upload chunk size for streamed writes; bounds the memory of one upload.
const WRITE_CHUNK: usize = 1024 * 1024;

/// When a batch was created and when it must be gone. Every metadata object holds these two fields
/// at its top level, as RFC 3339 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    #[serde(with = "rfc3339")]
    pub expires_at: SystemTime,
}

impl Stamp {
    /// A stamp for a batch created at `now` that lives `days` days.
    pub fn new(now: SystemTime, days: u32) -> Self {
        Self {
            created_at: now,
            expires_at: now + Duration::from_secs(u64::from(days) * 24 * 3600),
        }
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

/// Serde helpers: `SystemTime` as RFC 3339 (seconds precision, UTC).
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub batches_removed: usize,
    pub objects_removed: usize,
}

/// Batch-scoped object storage with expiry.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The default: the local filesystem under `<data_dir>/blobs`, created if missing.
    pub fn local(data_dir: &std::path::Path, clock: Arc<dyn Clock>) -> Result<Self, BlobError> {
        let dir = data_dir.join("blobs");
        let dir_err = |source| BlobError::Dir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dir_err)?;
        let fs = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| dir_err(std::io::Error::other(e.to_string())))?
            .with_automatic_cleanup(true);
        Ok(Self::new(Arc::new(fs), clock))
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Writes one object whole, atomically.
    pub async fn put(&self, key: &BatchKey, name: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.store
            .put(&key.object(name), PutPayload::from_bytes(bytes))
            .await
            .map(drop)
            .map_err(|e| store_err(key, e))
    }

    /// Starts a streamed write; the object appears only when [`BlobWriter::finish`] succeeds.
    pub async fn writer(&self, key: &BatchKey, name: &str) -> Result<BlobWriter, BlobError> {
        let upload = self
            .store
            .put_multipart(&key.object(name))
            .await
            .map_err(|e| store_err(key, e))?;
        Ok(BlobWriter {
            key: key.clone(),
            inner: WriteMultipart::new_with_chunk_size(upload, WRITE_CHUNK),
        })
    }

    /// Reads one object whole. Callers check expiry through [`BlobStore::live_meta`] first.
    pub async fn get(&self, key: &BatchKey, name: &str) -> Result<Bytes, BlobError> {
        let got = self
            .store
            .get(&key.object(name))
            .await
            .map_err(|e| not_found_or(key, e))?;
        got.bytes().await.map_err(|e| store_err(key, e))
    }

    /// Streams one object.
    pub async fn get_stream(
        &self,
        key: &BatchKey,
        name: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let got = self
            .store
            .get(&key.object(name))
            .await
            .map_err(|e| not_found_or(key, e))?;
        let key = key.clone();
        Ok(got
            .into_stream()
            .map_err(move |e| store_err(&key, e))
            .boxed())
    }

    /// Writes the metadata object. It must hold a [`Stamp`]'s fields at its top level.
    pub async fn put_meta<T: Serialize>(&self, key: &BatchKey, meta: &T) -> Result<(), BlobError> {
        let json = serde_json::to_vec(meta).map_err(|e| BlobError::CorruptMeta {
            batch: key.id.to_string(),
            reason: e.to_string(),
        })?;
        self.put(key, META, Bytes::from(json)).await
    }

    /// Reads the metadata of a batch that exists and has not expired.
    pub async fn live_meta<T: DeserializeOwned>(&self, key: &BatchKey) -> Result<T, BlobError> {
        let (stamp, meta) = self.meta::<T>(key).await?;
        if stamp.is_expired(self.now()) {
            return Err(BlobError::Expired(key.id.to_string()));
        }
        Ok(meta)
    }

    /// Reads the metadata of a batch whatever its age.
    pub async fn meta<T: DeserializeOwned>(&self, key: &BatchKey) -> Result<(Stamp, T), BlobError> {
        let bytes = self.get(key, META).await?;
        let corrupt = |e: serde_json::Error| BlobError::CorruptMeta {
            batch: key.id.to_string(),
            reason: e.to_string(),
        };
        let stamp: Stamp = serde_json::from_slice(&bytes).map_err(corrupt)?;
        let meta: T = serde_json::from_slice(&bytes).map_err(corrupt)?;
        Ok((stamp, meta))
    }

    /// Deletes every object of a batch, metadata first so a partly deleted batch is never served.
    /// Returns how many objects were removed.
    pub async fn delete_batch(&self, key: &BatchKey) -> Result<usize, BlobError> {
        let meta = key.object(META);
        let mut removed = match self.store.delete(&meta).await {
            Ok(()) => 1,
            Err(object_store::Error::NotFound { .. }) => 0,
            Err(e) => return Err(store_err(key, e)),
        };
        let prefix = key.prefix();
        let paths: Vec<_> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| store_err(key, e))?;
        for path in paths {
            match self.store.delete(&path).await {
                Ok(()) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(key, e)),
            }
        }
        Ok(removed)
    }

    /// The batches that have metadata, of one tenant or of all.
    pub async fn batches(&self, tenant: Option<&TenantKey>) -> Result<Vec<BatchKey>, BlobError> {
        let prefix = tenant.map(TenantKey::prefix);
        let mut out: Vec<BatchKey> = self
            .store
            .list(prefix.as_ref())
            .try_filter_map(|m| async move {
                Ok((m.location.filename() == Some(META))
                    .then(|| BatchKey::from_path(&m.location))
                    .flatten())
            })
            .try_collect()
            .await
            .map_err(|e| BlobError::Store {
                batch: "(listing)".into(),
                source: e,
            })?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Deletes every object of every batch expired at `now`, and abandoned uploads (objects without
    /// metadata, untouched for a day).
    pub async fn sweep(&self, now: SystemTime) -> Result<SweepReport, BlobError> {
        let mut newest: BTreeMap<BatchKey, (SystemTime, bool)> = BTreeMap::new();
        let mut listing = self.store.list(None);
        while let Some(m) = listing.try_next().await.map_err(|e| BlobError::Store {
            batch: "(listing)".into(),
            source: e,
        })? {
            let Some(key) = BatchKey::from_path(&m.location) else {
                continue;
            };
            let modified: SystemTime = m.last_modified.into();
            let entry = newest.entry(key).or_insert((modified, false));
            entry.0 = entry.0.max(modified);
            entry.1 |= m.location.filename() == Some(META);
        }
        let mut report = SweepReport::default();
        for (key, (modified, has_meta)) in newest {
            let doomed = if has_meta {
                match self.meta::<serde::de::IgnoredAny>(&key).await {
                    Ok((stamp, _)) => stamp.is_expired(now),
                    Err(BlobError::NotFound(_)) => false,
                    // Metadata we cannot read cannot prove the batch is still allowed to live.
                    Err(BlobError::CorruptMeta { .. }) => true,
                    Err(e) => return Err(e),
                }
            } else {
                modified + ORPHAN_GRACE <= now
            };
            if doomed {
                report.objects_removed += self.delete_batch(&key).await?;
                report.batches_removed += 1;
            }
        }
        Ok(report)
    }
}

/// A streamed write in progress. Dropping it without [`BlobWriter::finish`] leaves no visible object.
pub struct BlobWriter {
    key: BatchKey,
    inner: WriteMultipart,
}

impl BlobWriter {
    /// Appends bytes, waiting when too many chunks are in flight (bounded memory).
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        self.inner
            .wait_for_capacity(2)
            .await
            .map_err(|e| store_err(&self.key, e))?;
        self.inner.put(bytes);
        Ok(())
    }

    /// Completes the object; only now does it become visible.
    pub async fn finish(self) -> Result<(), BlobError> {
        let key = self.key;
        self.inner
            .finish()
            .await
            .map(drop)
            .map_err(|e| store_err(&key, e))
    }

    /// Gives up; nothing becomes visible.
    pub async fn abort(self) {
        let key = self.key;
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(batch = %key.id, error = %e, "Aborting a blob upload failed.");
        }
    }
}

fn store_err(key: &BatchKey, source: object_store::Error) -> BlobError {
    BlobError::Store {
        batch: key.id.to_string(),
        source,
    }
}

fn not_found_or(key: &BatchKey, e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound(key.id.to_string()),
        e => store_err(key, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BatchId, ManualClock};

    fn store(dir: &std::path::Path, clock: Arc<ManualClock>) -> BlobStore {
        BlobStore::local(dir, clock).expect("blob dir")
    }

    #[tokio::test]
    async fn unfinished_streamed_write_is_invisible_and_abandoned_uploads_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let blobs = store(dir.path(), clock.clone());
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        let mut w = blobs.writer(&key, "input").await.expect("writer");
        w.write(Bytes::from_static(b"email\n"))
            .await
            .expect("write");
        w.abort().await;
        assert!(matches!(
            blobs.get(&key, "input").await,
            Err(BlobError::NotFound(_))
        ));
        blobs
            .put(&key, "input", Bytes::from_static(b"x"))
            .await
            .expect("put");
        assert_eq!(
            blobs
                .sweep(clock.now())
                .await
                .expect("sweep")
                .batches_removed,
            0
        );
        clock.advance(ORPHAN_GRACE + Duration::from_secs(60));
        let report = blobs.sweep(clock.now()).await.expect("sweep");
        assert_eq!(
            report,
            SweepReport {
                batches_removed: 1,
                objects_removed: 1
            }
        );
    }

    #[tokio::test]
    async fn live_meta_refuses_expired_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = Arc::new(ManualClock::new(start));
        let blobs = store(dir.path(), clock.clone());
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        blobs
            .put_meta(&key, &Stamp::new(start, 1))
            .await
            .expect("meta");
        assert!(blobs.live_meta::<Stamp>(&key).await.is_ok());
        clock.advance(Duration::from_secs(24 * 3600));
        assert!(matches!(
            blobs.live_meta::<Stamp>(&key).await,
            Err(BlobError::Expired(_))
        ));
    }
}
