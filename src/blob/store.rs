//! [`BlobStore`]: sealed, batch-scoped objects with expiry, on the shared [`Store`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::{Area, BatchKey, BlobError, Clock, TenantKey};
use crate::seal::{DataKey, Keyring, Opener, SealError, Sealer, WrappedKey};
use crate::store::{ObjectWriter, Objects, Store, StoreError};

/// Name of the metadata object of every batch. Written after its input: its presence means "complete".
pub const META: &str = "meta";

/// An upload that never got its metadata, and objects left without a key, are deleted once this old.
const ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Unwrapped data keys are kept this long, so a running job or a status poll does not fetch the key
/// for every object. A delete on this replica forgets the key at once; every other replica within
/// this time, after which a copy of the batch's objects (a restored backup) reads as not found there
/// too.
const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// When a batch was created and when it must be gone, as RFC 3339 text.
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

/// The object under `batch-keys/`: no personal data, and the only way to read the batch.
#[derive(Debug, Serialize, Deserialize)]
struct KeyRecord {
    #[serde(flatten)]
    stamp: Stamp,
    #[serde(flatten)]
    wrapped: WrappedKey,
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub batches_removed: usize,
    pub objects_removed: usize,
}

/// What `enrichd store rewrap` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Batch keys looked at.
    pub checked: usize,
    /// Keys that were under an older master key and now are under the current one.
    pub rewrapped: usize,
}

struct Unwrapped {
    key: DataKey,
    stamp: Stamp,
}

/// Batch-scoped sealed objects with expiry. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    objects: Objects,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    keys: moka::sync::Cache<BatchKey, Arc<Unwrapped>>,
}

impl BlobStore {
    pub fn new(store: &Store, keyring: Arc<Keyring>, clock: Arc<dyn Clock>) -> Self {
        Self {
            objects: store.blob_objects().clone(),
            keyring,
            clock,
            keys: moka::sync::Cache::builder()
                .max_capacity(4096)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
        }
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Starts a batch: a fresh data key, wrapped, stored with the batch's stamp. The batch's other
    /// objects can only be written after this.
    pub async fn create_batch(&self, key: &BatchKey, stamp: Stamp) -> Result<(), BlobError> {
        let data = DataKey::random().map_err(|e| BlobError::Corrupt {
            batch: key.id.to_string(),
            reason: e.to_string(),
        })?;
        let record = KeyRecord {
            stamp,
            wrapped: self.keyring.wrap(&data, &key.name()),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| corrupt(key, e))?;
        self.objects
            .create(&key.key_object(), Bytes::from(bytes))
            .await
            .map_err(|e| store_err(key, e))?;
        self.keys
            .insert(key.clone(), Arc::new(Unwrapped { key: data, stamp }));
        Ok(())
    }

    async fn record(&self, key: &BatchKey) -> Result<KeyRecord, BlobError> {
        let got = self
            .objects
            .get(&key.key_object())
            .await
            .map_err(|e| not_found_or(key, e))?;
        serde_json::from_slice(&got.bytes).map_err(|e| corrupt(key, e))
    }

    async fn unwrapped(&self, key: &BatchKey) -> Result<Arc<Unwrapped>, BlobError> {
        if let Some(k) = self.keys.get(key) {
            return Ok(k);
        }
        let record = self.record(key).await?;
        let data = self
            .keyring
            .unwrap(&record.wrapped, &key.name())
            .map_err(|source| BlobError::Unreadable {
                batch: key.id.to_string(),
                source,
            })?;
        let unwrapped = Arc::new(Unwrapped {
            key: data,
            stamp: record.stamp,
        });
        self.keys.insert(key.clone(), unwrapped.clone());
        Ok(unwrapped)
    }

    /// The batch's stamp, whatever its age. Read without unwrapping its key, so that a process given
    /// the wrong master key can still tell what has expired, and never takes a batch for expired.
    pub async fn stamp(&self, key: &BatchKey) -> Result<Stamp, BlobError> {
        if let Some(k) = self.keys.get(key) {
            return Ok(k.stamp);
        }
        Ok(self.record(key).await?.stamp)
    }

    /// Refuses a keyring that unwraps none of the stored batch keys (looking at one): started with the
    /// wrong `ENRICHD_STORAGE_KEY`, every batch would read as unreadable.
    pub async fn check_keyring(&self) -> Result<(), BlobError> {
        let listed = self
            .objects
            .list(&Path::from(Area::Key.dir()))
            .await
            .map_err(listing_err)?;
        let Some((_, key)) = listed.iter().find_map(|m| BatchKey::from_path(&m.location)) else {
            return Ok(());
        };
        match self.record(&key).await {
            Ok(record) => self
                .keyring
                .unwrap(&record.wrapped, &key.name())
                .map(drop)
                .map_err(|source| BlobError::Unreadable {
                    batch: key.id.to_string(),
                    source,
                }),
            Err(BlobError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Fails with [`BlobError::NotFound`] or [`BlobError::Expired`] unless the batch may be served.
    pub async fn check_live(&self, key: &BatchKey) -> Result<(), BlobError> {
        if self.stamp(key).await?.is_expired(self.now()) {
            return Err(BlobError::Expired(key.id.to_string()));
        }
        Ok(())
    }

    async fn object_key(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
    ) -> Result<[u8; 32], BlobError> {
        Ok(self
            .unwrapped(key)
            .await?
            .key
            .object_key(&format!("{}/{name}", area.dir())))
    }

    async fn sealed(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
        plain: &[u8],
    ) -> Result<Bytes, BlobError> {
        let okey = self.object_key(key, area, name).await?;
        crate::seal::seal(&okey, plain)
            .map(Bytes::from)
            .map_err(|source| BlobError::Unreadable {
                batch: key.id.to_string(),
                source,
            })
    }

    /// Writes one object whole, sealed, replacing any there. Returns its version.
    pub async fn put(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
        plain: &[u8],
    ) -> Result<Option<String>, BlobError> {
        let bytes = self.sealed(key, area, name, plain).await?;
        self.objects
            .put(&key.object(area, name), bytes)
            .await
            .map_err(|e| store_err(key, e))
    }

    /// Writes one object whole, sealed, only if none exists.
    pub async fn create(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
        plain: &[u8],
    ) -> Result<Option<String>, BlobError> {
        let bytes = self.sealed(key, area, name, plain).await?;
        self.objects
            .create(&key.object(area, name), bytes)
            .await
            .map_err(|e| store_err(key, e))
    }

    /// Replaces one object only if it is still at `etag` ([`BlobError::Conflict`] otherwise; a deleted
    /// object is [`BlobError::NotFound`]).
    pub async fn update(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
        plain: &[u8],
        etag: &str,
    ) -> Result<Option<String>, BlobError> {
        let bytes = self.sealed(key, area, name, plain).await?;
        self.update_sealed(key, area, name, bytes, etag).await
    }

    async fn update_sealed(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
        bytes: Bytes,
        etag: &str,
    ) -> Result<Option<String>, BlobError> {
        match self
            .objects
            .update(&key.object(area, name), bytes, etag)
            .await
        {
            Ok(etag) => Ok(etag),
            Err(StoreError::Conflict { .. }) => {
                match self.objects.get(&key.object(area, name)).await {
                    Err(StoreError::NotFound { .. }) => {
                        Err(BlobError::NotFound(key.id.to_string()))
                    }
                    _ => Err(BlobError::Conflict(key.id.to_string())),
                }
            }
            Err(e) => Err(store_err(key, e)),
        }
    }

    /// Reads and opens one object whole, with the version it was read at.
    pub async fn get(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
    ) -> Result<(Vec<u8>, Option<String>), BlobError> {
        let okey = self.object_key(key, area, name).await?;
        let got = self
            .objects
            .get(&key.object(area, name))
            .await
            .map_err(|e| not_found_or(key, e))?;
        let plain =
            crate::seal::open(&okey, &got.bytes).map_err(|source| BlobError::Unreadable {
                batch: key.id.to_string(),
                source,
            })?;
        Ok((plain, got.etag))
    }

    /// Streams one object, opened chunk by chunk (each authenticated before it is passed on).
    pub async fn get_stream(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        Ok(self.get_stream_versioned(key, area, name).await?.0)
    }

    /// [`BlobStore::get_stream`], with the version being streamed (for a conditional rewrite).
    pub async fn get_stream_versioned(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
    ) -> Result<(BoxStream<'static, Result<Bytes, BlobError>>, Option<String>), BlobError> {
        let okey = self.object_key(key, area, name).await?;
        let (sealed, etag) = self
            .objects
            .get_stream_versioned(&key.object(area, name))
            .await
            .map_err(|e| not_found_or(key, e))?;
        let id = key.id;
        let unreadable = move |source: SealError| BlobError::Unreadable {
            batch: id.to_string(),
            source,
        };
        let batch = key.clone();
        let state = (sealed, Some(Opener::new(&okey)));
        let opened = futures::stream::try_unfold(state, move |(mut sealed, mut opener)| {
            let batch = batch.clone();
            async move {
                loop {
                    let Some(open) = opener.as_mut() else {
                        return Ok(None);
                    };
                    match sealed.next().await {
                        Some(chunk) => {
                            let chunk = chunk.map_err(|e| store_err(&batch, e))?;
                            let plain = open.push(&chunk).map_err(&unreadable)?;
                            if !plain.is_empty() {
                                return Ok(Some((Bytes::from(plain), (sealed, opener))));
                            }
                        }
                        None => {
                            let last = opener
                                .take()
                                .map(Opener::finish)
                                .transpose()
                                .map_err(&unreadable)?;
                            return Ok(Some((
                                Bytes::from(last.unwrap_or_default()),
                                (sealed, None),
                            )));
                        }
                    }
                }
            }
        })
        .boxed();
        Ok((opened, etag))
    }

    /// Starts an object sealed into memory, to be written whole by [`BlobStore::put_buffer`] or
    /// [`BlobStore::update_buffer`]: for an object rewritten under a version check (which a streamed
    /// write cannot make), built without a plaintext copy beside the sealed one.
    pub async fn buffer(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
    ) -> Result<SealedBuffer, BlobError> {
        let okey = self.object_key(key, area, name).await?;
        Ok(SealedBuffer {
            key: key.clone(),
            area,
            name: name.to_string(),
            sealer: Sealer::new(&okey),
            sealed: Vec::new(),
        })
    }

    /// Writes a sealed buffer whole, replacing any object there.
    pub async fn put_buffer(&self, buffer: SealedBuffer) -> Result<Option<String>, BlobError> {
        let (key, area, name) = (buffer.key.clone(), buffer.area, buffer.name.clone());
        let bytes = buffer.finish()?;
        self.objects
            .put(&key.object(area, &name), bytes)
            .await
            .map_err(|e| store_err(&key, e))
    }

    /// Writes a sealed buffer only if the object is still at `etag` (see [`BlobStore::update`]).
    pub async fn update_buffer(
        &self,
        buffer: SealedBuffer,
        etag: &str,
    ) -> Result<Option<String>, BlobError> {
        let (key, area, name) = (buffer.key.clone(), buffer.area, buffer.name.clone());
        let bytes = buffer.finish()?;
        self.update_sealed(&key, area, &name, bytes, etag).await
    }

    /// The bytes stored for a tenant's batches (inputs, result parts, indexes and metadata, sealed),
    /// as the store lists them now.
    pub async fn tenant_usage(&self, tenant: &TenantKey) -> Result<u64, BlobError> {
        let mut total = 0;
        for area in [Area::Data, Area::Index] {
            let prefix = Path::from_iter([area.dir(), tenant.as_str()]);
            total += self
                .objects
                .size_under(&prefix)
                .await
                .map_err(listing_err)?;
        }
        Ok(total)
    }

    /// Starts a streamed, sealed write; the object appears only when [`BlobWriter::finish`] succeeds.
    pub async fn writer(
        &self,
        key: &BatchKey,
        area: Area,
        name: &str,
    ) -> Result<BlobWriter, BlobError> {
        let okey = self.object_key(key, area, name).await?;
        let inner = self
            .objects
            .writer(&key.object(area, name))
            .await
            .map_err(|e| store_err(key, e))?;
        Ok(BlobWriter {
            key: key.clone(),
            sealer: Sealer::new(&okey),
            inner,
        })
    }

    /// Deletes one object; `false` when there was none.
    pub async fn delete(&self, key: &BatchKey, area: Area, name: &str) -> Result<bool, BlobError> {
        self.objects
            .delete(&key.object(area, name))
            .await
            .map_err(|e| store_err(key, e))
    }

    /// Deletes a batch: its key first, so that whatever is left (or copied) can no longer be read,
    /// then every object of it. Returns how many objects were removed.
    pub async fn delete_batch(&self, key: &BatchKey) -> Result<usize, BlobError> {
        self.keys.invalidate(key);
        let mut removed = usize::from(
            self.objects
                .delete(&key.key_object())
                .await
                .map_err(|e| store_err(key, e))?,
        );
        self.keys.invalidate(key);
        for area in [Area::Data, Area::Index] {
            let listed = self
                .objects
                .list(&key.prefix(area))
                .await
                .map_err(|e| store_err(key, e))?;
            for m in listed {
                if self
                    .objects
                    .delete(&m.location)
                    .await
                    .map_err(|e| store_err(key, e))?
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The names of a batch's objects under `batches/` and `indexes/`, with their area.
    pub async fn names(&self, key: &BatchKey) -> Result<Vec<(Area, String)>, BlobError> {
        let mut out = Vec::new();
        for area in [Area::Data, Area::Index] {
            let listed = self
                .objects
                .list(&key.prefix(area))
                .await
                .map_err(|e| store_err(key, e))?;
            out.extend(
                listed
                    .iter()
                    .filter_map(|m| Some((area, m.location.filename()?.to_string()))),
            );
        }
        Ok(out)
    }

    /// The batches that have a key, of one tenant or of all.
    pub async fn batches(&self, tenant: Option<&TenantKey>) -> Result<Vec<BatchKey>, BlobError> {
        let prefix = tenant.map_or_else(|| Path::from(Area::Key.dir()), TenantKey::keys_prefix);
        let listed = self.objects.list(&prefix).await.map_err(listing_err)?;
        let mut out: Vec<BatchKey> = listed
            .iter()
            .filter_map(|m| BatchKey::from_path(&m.location))
            .map(|(_, k)| k)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every index object: its batch and its name.
    pub async fn index_objects(&self) -> Result<Vec<(BatchKey, String)>, BlobError> {
        let listed = self
            .objects
            .list(&Path::from(Area::Index.dir()))
            .await
            .map_err(listing_err)?;
        Ok(listed
            .iter()
            .filter_map(|m| {
                let (_, key) = BatchKey::from_path(&m.location)?;
                Some((key, m.location.filename()?.to_string()))
            })
            .collect())
    }

    /// Deletes, as of `now`, what no batch owns any more: uploads abandoned before their metadata was
    /// written and objects left without a key (a delete cut short), once a day old; and objects of the
    /// layout before batches were sealed (`<tenant>/<batch>/...` at the top) once `legacy_days` old.
    /// Expired batches are the caller's to delete, through [`BlobStore::delete_batch`].
    pub async fn sweep_orphans(
        &self,
        now: SystemTime,
        legacy_days: u32,
    ) -> Result<SweepReport, BlobError> {
        let mut report = SweepReport::default();
        let keyed = self
            .objects
            .list(&Path::from(Area::Key.dir()))
            .await
            .map_err(listing_err)?;
        let live: BTreeMap<BatchKey, SystemTime> = keyed
            .iter()
            .filter_map(|m| Some((BatchKey::from_path(&m.location)?.1, m.last_modified.into())))
            .collect();
        // Per batch with objects: the newest change, and whether its metadata exists.
        let mut seen: BTreeMap<BatchKey, (SystemTime, bool)> = BTreeMap::new();
        for area in [Area::Data, Area::Index] {
            for m in self
                .objects
                .list(&Path::from(area.dir()))
                .await
                .map_err(listing_err)?
            {
                let Some((area, key)) = BatchKey::from_path(&m.location) else {
                    continue;
                };
                let entry = seen.entry(key).or_insert((SystemTime::UNIX_EPOCH, false));
                entry.0 = entry.0.max(m.last_modified.into());
                entry.1 |= area == Area::Data && m.location.filename() == Some(META);
            }
        }
        let old = |t: SystemTime| t + ORPHAN_GRACE <= now;
        let mut orphans: BTreeSet<BatchKey> = BTreeSet::new();
        for (key, (newest, has_meta)) in &seen {
            match live.get(key) {
                None if old(*newest) => {
                    orphans.insert(key.clone());
                }
                Some(created) if !has_meta && old(*created) && old(*newest) => {
                    orphans.insert(key.clone());
                }
                _ => {}
            }
        }
        for key in &live_without_objects(&live, &seen, now) {
            orphans.insert(key.clone());
        }
        for key in orphans {
            report.objects_removed += self.delete_batch(&key).await?;
            report.batches_removed += 1;
        }
        report.objects_removed += self.sweep_legacy(now, legacy_days).await?;
        Ok(report)
    }

    /// Objects of the unsealed layout (`<tenant-hash>/<batch-id>/...` at the top), once `days` old.
    async fn sweep_legacy(&self, now: SystemTime, days: u32) -> Result<usize, BlobError> {
        let listing = self.objects.list_top().await.map_err(listing_err)?;
        let mut removed = 0;
        for top in listing {
            if TenantKey::from_segment(&top).is_none() {
                continue;
            }
            for m in self
                .objects
                .list(&Path::from(top.as_str()))
                .await
                .map_err(listing_err)?
            {
                let modified: SystemTime = m.last_modified.into();
                if modified + Duration::from_secs(u64::from(days) * 24 * 3600) <= now
                    && self
                        .objects
                        .delete(&m.location)
                        .await
                        .map_err(listing_err)?
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Re-wraps every batch key that is under an older master key with the current one.
    pub async fn rewrap(&self) -> Result<RewrapReport, BlobError> {
        let mut report = RewrapReport::default();
        for m in self
            .objects
            .list(&Path::from(Area::Key.dir()))
            .await
            .map_err(listing_err)?
        {
            let Some((_, key)) = BatchKey::from_path(&m.location) else {
                continue;
            };
            report.checked += 1;
            let got = match self.objects.get(&m.location).await {
                Ok(got) => got,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(store_err(&key, e)),
            };
            let mut record: KeyRecord =
                serde_json::from_slice(&got.bytes).map_err(|e| corrupt(&key, e))?;
            if !self.keyring.is_stale(&record.wrapped) {
                continue;
            }
            let data = self
                .keyring
                .unwrap(&record.wrapped, &key.name())
                .map_err(|source| BlobError::Unreadable {
                    batch: key.id.to_string(),
                    source,
                })?;
            record.wrapped = self.keyring.wrap(&data, &key.name());
            let bytes = serde_json::to_vec(&record).map_err(|e| corrupt(&key, e))?;
            let Some(etag) = got.etag else { continue };
            // A batch deleted meanwhile stays deleted: the update from the version read fails.
            match self
                .objects
                .update(&m.location, Bytes::from(bytes), &etag)
                .await
            {
                Ok(_) => report.rewrapped += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(store_err(&key, e)),
            }
        }
        Ok(report)
    }
}

/// Batches with a key but no other object at all, a day after the key was written: an upload that
/// broke off before its input was stored.
fn live_without_objects(
    live: &BTreeMap<BatchKey, SystemTime>,
    seen: &BTreeMap<BatchKey, (SystemTime, bool)>,
    now: SystemTime,
) -> Vec<BatchKey> {
    live.iter()
        .filter(|(key, created)| !seen.contains_key(*key) && **created + ORPHAN_GRACE <= now)
        .map(|(key, _)| key.clone())
        .collect()
}

/// An object being sealed into memory (see [`BlobStore::buffer`]).
pub struct SealedBuffer {
    key: BatchKey,
    area: Area,
    name: String,
    sealer: Sealer,
    sealed: Vec<u8>,
}

impl SealedBuffer {
    /// Appends plaintext; only its sealed form is kept.
    pub fn push(&mut self, plain: &[u8]) -> Result<(), BlobError> {
        let sealed = self.sealer.push(plain).map_err(unreadable(&self.key))?;
        self.sealed.extend_from_slice(&sealed);
        Ok(())
    }

    fn finish(mut self) -> Result<Bytes, BlobError> {
        let last = self.sealer.finish().map_err(unreadable(&self.key))?;
        self.sealed.extend_from_slice(&last);
        Ok(Bytes::from(self.sealed))
    }
}

/// What a failed sealing step of one of `key`'s objects is reported as.
fn unreadable(key: &BatchKey) -> impl FnOnce(SealError) -> BlobError + use<> {
    let batch = key.id.to_string();
    move |source| BlobError::Unreadable { batch, source }
}

/// A streamed, sealed write in progress. Dropping it without [`BlobWriter::finish`] leaves no object.
pub struct BlobWriter {
    key: BatchKey,
    sealer: Sealer,
    inner: ObjectWriter,
}

impl BlobWriter {
    /// Appends bytes, waiting when too many parts are in flight (bounded memory).
    pub async fn write(&mut self, plain: &[u8]) -> Result<(), BlobError> {
        let sealed = self.sealer.push(plain).map_err(unreadable(&self.key))?;
        self.inner
            .write(&sealed)
            .await
            .map_err(|e| store_err(&self.key, e))
    }

    /// Completes the object; only now does it become visible.
    pub async fn finish(mut self) -> Result<(), BlobError> {
        let key = self.key;
        let last = self
            .sealer
            .finish()
            .map_err(|source| BlobError::Unreadable {
                batch: key.id.to_string(),
                source,
            })?;
        self.inner
            .write(&last)
            .await
            .map_err(|e| store_err(&key, e))?;
        self.inner.finish().await.map_err(|e| store_err(&key, e))
    }

    /// Gives up; nothing becomes visible.
    pub async fn abort(self) {
        self.inner.abort().await;
    }
}

fn corrupt(key: &BatchKey, e: serde_json::Error) -> BlobError {
    BlobError::Corrupt {
        batch: key.id.to_string(),
        reason: e.to_string(),
    }
}

fn store_err(key: &BatchKey, source: StoreError) -> BlobError {
    BlobError::Store {
        batch: key.id.to_string(),
        source,
    }
}

fn listing_err(source: StoreError) -> BlobError {
    BlobError::Store {
        batch: "(listing)".into(),
        source,
    }
}

fn not_found_or(key: &BatchKey, e: StoreError) -> BlobError {
    match e {
        StoreError::NotFound { .. } => BlobError::NotFound(key.id.to_string()),
        e => store_err(key, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BatchId, ManualClock};
    use crate::seal::MasterKey;

    fn blobs(dir: &std::path::Path, clock: Arc<ManualClock>) -> BlobStore {
        let store = Store::local(dir).expect("store");
        let keyring = Keyring::new(MasterKey::from_bytes([3; 32]), Vec::new());
        BlobStore::new(&store, Arc::new(keyring), clock)
    }

    #[tokio::test]
    async fn objects_are_sealed_at_rest_and_unreadable_once_the_batch_key_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let b = blobs(dir.path(), Arc::new(ManualClock::new(now)));
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&key, Stamp::new(now, 30))
            .await
            .expect("key");
        b.put(&key, Area::Data, "part-000001-g1", b"ada@example.org")
            .await
            .expect("put");
        let mut w = b.writer(&key, Area::Data, "input").await.expect("writer");
        w.write(b"email\nada@example.org\n").await.expect("write");
        w.finish().await.expect("finish");
        assert!(
            crate::testkit::grep_files(dir.path(), "ada@").is_empty(),
            "plaintext at rest"
        );
        let copy = std::fs::read(
            dir.path()
                .join("blobs")
                .join(key.object(Area::Data, "input").as_ref()),
        )
        .expect("sealed input");

        assert_eq!(
            b.delete_batch(&key).await.expect("delete"),
            3,
            "its key, the part and the input"
        );
        assert_eq!(b.delete_batch(&key).await.expect("again"), 0);
        // A copy put back (a backup restored) cannot be read: its key is gone.
        let restored = blobs(dir.path(), Arc::new(ManualClock::new(now)));
        std::fs::create_dir_all(
            dir.path()
                .join("blobs")
                .join(key.prefix(Area::Data).as_ref()),
        )
        .expect("dir");
        std::fs::write(
            dir.path()
                .join("blobs")
                .join(key.object(Area::Data, "input").as_ref()),
            copy,
        )
        .expect("restore");
        assert!(matches!(
            restored.get(&key, Area::Data, "input").await,
            Err(BlobError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn the_sweep_removes_keyless_objects_abandoned_uploads_and_the_old_layout_after_their_grace()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = SystemTime::now();
        let clock = Arc::new(ManualClock::new(start));
        let b = blobs(dir.path(), clock.clone());
        let live = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&live, Stamp::new(start, 30))
            .await
            .expect("key");
        b.put(&live, Area::Data, META, b"{}").await.expect("meta");
        let abandoned = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&abandoned, Stamp::new(start, 30))
            .await
            .expect("key");
        b.put(&abandoned, Area::Data, "input", b"x")
            .await
            .expect("input");
        let keyless = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&keyless, Stamp::new(start, 30))
            .await
            .expect("key");
        b.put(&keyless, Area::Index, "000001-g1", b"x")
            .await
            .expect("index");
        b.objects
            .delete(&keyless.key_object())
            .await
            .expect("key gone");
        // An upload that broke off before its input was stored: a key and nothing else.
        let key_only = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&key_only, Stamp::new(start, 30))
            .await
            .expect("key");
        let legacy = dir
            .path()
            .join("blobs")
            .join(TenantKey::of("old").as_str())
            .join("b");
        std::fs::create_dir_all(&legacy).expect("legacy dir");
        std::fs::write(legacy.join("part-000001"), b"rows").expect("legacy object");

        assert_eq!(
            b.sweep_orphans(clock.now(), 30).await.expect("sweep"),
            SweepReport::default()
        );
        // The grace is a day: an upload abandoned 23 hours ago may still be under way.
        clock.advance(Duration::from_secs(23 * 3600));
        assert_eq!(
            b.sweep_orphans(clock.now(), 30).await.expect("sweep"),
            SweepReport::default()
        );
        clock.advance(Duration::from_secs(3600 + 60));
        let report = b.sweep_orphans(clock.now(), 30).await.expect("sweep");
        assert_eq!(
            report,
            SweepReport {
                batches_removed: 3,
                // The abandoned upload's key and input, the keyless index, the lone key.
                objects_removed: 4,
            }
        );
        assert!(matches!(
            b.stamp(&key_only).await,
            Err(BlobError::NotFound(_))
        ));
        assert!(
            b.get(&live, Area::Data, META).await.is_ok(),
            "a complete batch stays"
        );
        assert!(
            legacy.join("part-000001").exists(),
            "the old layout waits for its retention"
        );
        clock.advance(Duration::from_secs(30 * 24 * 3600));
        let report = b.sweep_orphans(clock.now(), 30).await.expect("sweep");
        assert_eq!(report.objects_removed, 1);
        assert!(!legacy.join("part-000001").exists());
    }

    #[tokio::test]
    async fn a_keyring_that_unwraps_no_stored_batch_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let b = blobs(dir.path(), Arc::new(ManualClock::new(now)));
        b.check_keyring()
            .await
            .expect("an empty store takes any key");
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&key, Stamp::new(now, 30))
            .await
            .expect("key");
        b.check_keyring()
            .await
            .expect("the key the batch was made with");
        let store = Store::local(dir.path()).expect("store");
        let wrong = BlobStore::new(
            &store,
            Arc::new(Keyring::new(MasterKey::from_bytes([4; 32]), Vec::new())),
            Arc::new(ManualClock::new(now)),
        );
        assert!(matches!(
            wrong.check_keyring().await,
            Err(BlobError::Unreadable { .. })
        ));
    }

    /// An object of many sealed blocks streams back whole, block after block.
    #[tokio::test]
    async fn a_large_object_streams_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let b = blobs(dir.path(), Arc::new(ManualClock::new(now)));
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&key, Stamp::new(now, 30))
            .await
            .expect("key");
        let plain: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = b.writer(&key, Area::Data, "input").await.expect("writer");
        for chunk in plain.chunks(10_000) {
            w.write(chunk).await.expect("write");
        }
        w.finish().await.expect("finish");
        let (mut stream, etag) = b
            .get_stream_versioned(&key, Area::Data, "input")
            .await
            .expect("stream");
        assert!(etag.is_some());
        let mut read = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            chunks += usize::from(!chunk.is_empty());
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read.len(), plain.len());
        assert!(read == plain, "the same bytes in the same order");
        assert!(chunks > 1, "streamed, not read whole: {chunks} chunk(s)");
    }

    /// A rewrite under a version check tells "someone changed it" (worth a retry) from "it is gone"
    /// (a purge or a delete came first).
    #[tokio::test]
    async fn a_rewrite_of_an_object_deleted_meanwhile_is_not_found_not_a_conflict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let b = blobs(dir.path(), Arc::new(ManualClock::new(now)));
        let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
        b.create_batch(&key, Stamp::new(now, 30))
            .await
            .expect("key");
        let first = b
            .put(&key, Area::Data, "part", b"one")
            .await
            .expect("put")
            .expect("etag");
        let second = b
            .update(&key, Area::Data, "part", b"two", &first)
            .await
            .expect("update")
            .expect("etag");
        assert!(matches!(
            b.update(&key, Area::Data, "part", b"three", &first).await,
            Err(BlobError::Conflict(_))
        ));
        assert!(b.delete(&key, Area::Data, "part").await.expect("delete"));
        assert!(matches!(
            b.update(&key, Area::Data, "part", b"four", &second).await,
            Err(BlobError::NotFound(_))
        ));
    }

    /// What the storage quota counts: every sealed byte of the tenant's batches and indexes, and
    /// nothing of another tenant's.
    #[tokio::test]
    async fn a_tenants_usage_is_the_sealed_bytes_of_its_batches_and_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let b = blobs(dir.path(), Arc::new(ManualClock::new(now)));
        let (t, other) = (TenantKey::of("t"), TenantKey::of("u"));
        let key = BatchKey::new(t.clone(), BatchId::random());
        b.create_batch(&key, Stamp::new(now, 30))
            .await
            .expect("key");
        assert_eq!(b.tenant_usage(&t).await.expect("usage"), 0);
        b.put(&key, Area::Data, "input", &[7; 5000])
            .await
            .expect("input");
        b.put(&key, Area::Index, "000001-g1", &[8; 3000])
            .await
            .expect("index");
        let on_disk = |area: Area| -> u64 {
            let root = dir.path().join("blobs").join(area.dir()).join(t.as_str());
            walk(&root)
        };
        fn walk(p: &std::path::Path) -> u64 {
            std::fs::read_dir(p)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| match e.file_type() {
                            Ok(ft) if ft.is_dir() => walk(&e.path()),
                            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        let (data, index) = (on_disk(Area::Data), on_disk(Area::Index));
        assert!(data > 5000 && index > 3000, "{data} {index}");
        assert_eq!(b.tenant_usage(&t).await.expect("usage"), data + index);
        assert_eq!(b.tenant_usage(&other).await.expect("usage"), 0);
    }

    /// Rotating the master key: batch keys under the old one are re-wrapped under the new one (the
    /// objects stay readable without the old key afterwards), keys already current are left alone.
    #[tokio::test]
    async fn rewrap_moves_batch_keys_under_an_old_master_key_to_the_current_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let store = Store::local(dir.path()).expect("store");
        let with = |current: u8, previous: &[u8]| {
            let keyring = Keyring::new(
                MasterKey::from_bytes([current; 32]),
                previous
                    .iter()
                    .map(|&p| MasterKey::from_bytes([p; 32]))
                    .collect(),
            );
            BlobStore::new(&store, Arc::new(keyring), Arc::new(ManualClock::new(now)))
        };
        let old = with(3, &[]);
        let mut keys = Vec::new();
        for content in [&b"first"[..], b"second"] {
            let key = BatchKey::new(TenantKey::of("t"), BatchId::random());
            old.create_batch(&key, Stamp::new(now, 30))
                .await
                .expect("key");
            old.put(&key, Area::Data, "input", content)
                .await
                .expect("input");
            keys.push((key, content));
        }
        let rotated = with(5, &[3]);
        let current = BatchKey::new(TenantKey::of("t"), BatchId::random());
        rotated
            .create_batch(&current, Stamp::new(now, 30))
            .await
            .expect("a batch made under the new key");
        assert_eq!(
            rotated.rewrap().await.expect("rewrap"),
            RewrapReport {
                checked: 3,
                rewrapped: 2,
            }
        );
        assert_eq!(
            rotated.rewrap().await.expect("rewrap again"),
            RewrapReport {
                checked: 3,
                rewrapped: 0,
            },
            "nothing is left under the old key"
        );
        let new_only = with(5, &[]);
        new_only
            .check_keyring()
            .await
            .expect("every batch key opens with the new key alone");
        for (key, content) in &keys {
            let read = new_only.get(key, Area::Data, "input").await.expect("read");
            assert_eq!(&read.0[..], *content);
        }
        assert!(matches!(
            with(3, &[]).get(&keys[0].0, Area::Data, "input").await,
            Err(BlobError::Unreadable { .. })
        ));
    }

    #[test]
    fn only_a_store_that_failed_is_unavailable() {
        let failed = BlobError::Store {
            batch: "b".into(),
            source: StoreError::Failed {
                path: "p".into(),
                source: object_store::Error::Generic {
                    store: "test",
                    source: "connection refused".into(),
                },
            },
        };
        assert!(failed.is_unavailable());
        let missing = BlobError::Store {
            batch: "b".into(),
            source: StoreError::NotFound { path: "p".into() },
        };
        assert!(!missing.is_unavailable());
        assert!(!BlobError::NotFound("b".into()).is_unavailable());
    }
}
