//! The short-lived answer cache shared by every guarded source.
//!
//! Keys are a per-process keyed blake3 hash of the identifier's kind and canonical form: the cache holds
//! no raw identifier, and the hashes mean nothing outside this process. Values are what the source
//! answered (a miss is an empty list) with the tokio instant they expire at. moka reclaims memory on its
//! own clock; every read also checks the tokio deadline (so tests can pause and advance time) and the
//! invalidation generation (so an answer that raced an [`invalidate_all`](SourceCache::invalidate_all)
//! is never served).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::Expiry;
use tokio::time::Instant;

use crate::domain::Identifier;
use crate::profile::Observation;

/// Entries kept at most, across all sources, unless told otherwise.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// Which source was asked about which identifier (hashed).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub(crate) source: Arc<str>,
    pub(crate) id: [u8; 32],
}

#[derive(Clone)]
struct Cached {
    expires_at: Instant,
    ttl: Duration,
    generation: u64,
    observations: Arc<Vec<Observation>>,
}

/// Lets moka drop each entry after its own TTL.
struct PerEntryTtl;

impl Expiry<CacheKey, Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Cached,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The answer cache. Cheap to clone; clones share entries.
#[derive(Clone)]
pub struct SourceCache {
    entries: moka::future::Cache<CacheKey, Cached>,
    generation: Arc<AtomicU64>,
    hash_key: [u8; 32],
}

impl Default for SourceCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES)
    }
}

impl SourceCache {
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
            generation: Arc::new(AtomicU64::new(0)),
            hash_key: rand::random(),
        }
    }

    /// Forgets every answer from every source, including answers still being fetched. The exclusion
    /// list calls this on each opt-out so no cached answer about that person survives it.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    /// Live entries for one source (walks the cache: for status pages, not hot paths).
    pub fn entries_for(&self, source: &str) -> u64 {
        let now = Instant::now();
        let generation = self.generation();
        let live = self
            .entries
            .iter()
            .filter(|(k, v)| {
                &*k.source == source && v.generation == generation && v.expires_at > now
            })
            .count();
        u64::try_from(live).unwrap_or(u64::MAX)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn key(&self, source: &Arc<str>, id: &Identifier) -> CacheKey {
        let mut h = blake3::Hasher::new_keyed(&self.hash_key);
        h.update(id.kind().as_str().as_bytes());
        h.update(&[0]);
        h.update(id.canonical().as_bytes());
        CacheKey {
            source: Arc::clone(source),
            id: *h.finalize().as_bytes(),
        }
    }

    /// The cached answer, if it is still fresh and from the current generation.
    pub(crate) async fn get(&self, key: &CacheKey) -> Option<Arc<Vec<Observation>>> {
        let cached = self.entries.get(key).await?;
        if cached.expires_at > Instant::now() && cached.generation == self.generation() {
            Some(cached.observations)
        } else {
            self.entries.invalidate(key).await;
            None
        }
    }

    /// Stores an answer fetched during `generation`; a TTL of zero stores nothing.
    pub(crate) async fn insert(
        &self,
        key: CacheKey,
        observations: Arc<Vec<Observation>>,
        ttl: Duration,
        generation: u64,
    ) {
        if ttl.is_zero() || generation != self.generation() {
            return;
        }
        let cached = Cached {
            expires_at: Instant::now() + ttl,
            ttl,
            generation,
            observations,
        };
        self.entries.insert(key, cached).await;
    }
}

/// An opt-out forgets every cached answer: entries are keyed by a keyed hash of the input, so the
/// person's own entries cannot be picked out, and the cache only saves minutes of upstream calls.
impl crate::exclusion::OptOutHook for SourceCache {
    fn name(&self) -> &'static str {
        "source_cache"
    }

    fn opted_out<'a>(
        &'a self,
        _ids: &'a [crate::domain::Identifier],
    ) -> futures::future::BoxFuture<'a, Result<(), crate::exclusion::HookError>> {
        self.invalidate_all();
        Box::pin(std::future::ready(Ok(())))
    }
}
