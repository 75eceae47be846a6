//! The short-lived answer cache shared by every guarded source.
//!
//! Keys are a per-process keyed blake3 hash of the source name, the identifier's kind and its canonical
//! form: the cache holds no raw identifier, and the hashes mean nothing outside this process. Values are
//! what the source answered (a miss is an empty list) with the tokio instant they expire at. moka drops
//! entries after the TTL on its own clock; every read also checks the tokio deadline (so tests can pause
//! and advance time) and the invalidation generation (so an answer that raced an
//! [`invalidate_all`](SourceCache::invalidate_all) is never served).
//!
//! Every lookup that reaches an upstream reads and writes here, so the cache is moka's synchronous one
//! (no future per access) with one TTL for all entries (no timer wheel), hashed by [`KeyHasher`]: the
//! keys are already uniformly random, so SipHash over them would only spend time.
//!
//! Once the cache is full, an answer is only offered to moka if its key was asked about before, as
//! remembered by a [`Doorkeeper`]. A full moka cache weighs each newcomer against its eviction victim
//! by frequency (TinyLFU) and turns most one-off keys away, but only after it has taken the entry in:
//! an insert, a removal and its share of a table rehash, a few microseconds each. Under a stream of
//! distinct lookups that was most of what the cache cost. A key asked about twice within the
//! doorkeeper's memory is offered as before.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::Identifier;
use crate::profile::Observation;

/// Entries kept at most, across all sources, unless told otherwise.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// How long answers live when nobody says otherwise (`policies/retention.toml` ships the same).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Which source was asked about which identifier: a keyed hash of both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

#[derive(Clone)]
struct Cached {
    source: Arc<str>,
    expires_at: Instant,
    generation: u64,
    observations: Arc<[Observation]>,
}

/// Hashes a [`CacheKey`] by taking eight of its bytes: they are a keyed blake3 output already.
#[derive(Clone, Copy, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Folds whatever is written; a `CacheKey` writes its 32 bytes (after their length) once.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Which keys were asked about lately, in a fixed table of fingerprints: a slot holds the last key
/// that landed on it, so a key is remembered until another one takes its slot.
struct Doorkeeper {
    slots: Box<[AtomicU32]>,
}

impl Doorkeeper {
    /// Slots in the table (1 MiB): a key is remembered while about a quarter million others arrive.
    const SLOTS: usize = 1 << 18;

    fn new() -> Self {
        Self {
            slots: (0..Self::SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Records `key` and tells whether it was the last key recorded in its slot.
    fn seen_before(&self, key: &CacheKey) -> bool {
        // Bytes other than the eight `KeyHasher` starts with; all of them are keyed blake3 output.
        let [_, _, _, _, _, _, _, _, a, b, c, d, e, f, g, h, ..] = key.0;
        // A fingerprint is never 0, the value of a slot nobody used yet.
        let fingerprint = u32::from_le_bytes([a, b, c, d]) | 1;
        let slot = u32::from_le_bytes([e, f, g, h]) as usize % Self::SLOTS;
        self.slots[slot].swap(fingerprint, Ordering::Relaxed) == fingerprint
    }
}

/// The answer cache. Cheap to clone; clones share entries.
#[derive(Clone)]
pub struct SourceCache {
    entries: moka::sync::Cache<CacheKey, Cached, KeyHasher>,
    doorkeeper: Arc<Doorkeeper>,
    ttl: Duration,
    generation: Arc<AtomicU64>,
    hash_key: [u8; 32],
}

impl Default for SourceCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES, DEFAULT_TTL)
    }
}

impl SourceCache {
    /// At most `max_entries` answers, each kept `ttl` (zero keeps none).
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        let mut builder = moka::sync::Cache::builder().max_capacity(max_entries);
        if !ttl.is_zero() {
            builder = builder.time_to_live(ttl);
        }
        Self {
            entries: builder.build_with_hasher(KeyHasher::default()),
            doorkeeper: Arc::new(Doorkeeper::new()),
            ttl,
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
            .filter(|(_, v)| {
                &*v.source == source && v.generation == generation && v.expires_at > now
            })
            .count();
        u64::try_from(live).unwrap_or(u64::MAX)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn key(&self, source: &str, id: &Identifier) -> CacheKey {
        let mut h = blake3::Hasher::new_keyed(&self.hash_key);
        h.update(source.as_bytes());
        h.update(&[0]);
        h.update(id.kind().as_str().as_bytes());
        h.update(&[0]);
        h.update(id.canonical_str().as_bytes());
        CacheKey(*h.finalize().as_bytes())
    }

    /// The cached answer, if it is still fresh and from the current generation.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<[Observation]>> {
        let cached = self.entries.get(key)?;
        if cached.expires_at > Instant::now() && cached.generation == self.generation() {
            Some(cached.observations)
        } else {
            self.entries.invalidate(key);
            None
        }
    }

    /// Stores `source`'s answer fetched during `generation`; a TTL of zero stores nothing, and a full
    /// cache takes only answers for keys the doorkeeper has seen before.
    pub(crate) fn insert(
        &self,
        key: CacheKey,
        source: &Arc<str>,
        observations: Arc<[Observation]>,
        generation: u64,
    ) {
        if self.ttl.is_zero() || generation != self.generation() {
            return;
        }
        let full = self
            .entries
            .policy()
            .max_capacity()
            .is_some_and(|max| self.entries.entry_count() >= max);
        if full && !self.doorkeeper.seen_before(&key) {
            return;
        }
        let cached = Cached {
            source: Arc::clone(source),
            expires_at: Instant::now() + self.ttl,
            generation,
            observations,
        };
        self.entries.insert(key, cached);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;

    fn id(n: u32) -> Identifier {
        Identifier::Email(Email::parse(&format!("person{n}@example.com")).expect("valid email"))
    }

    fn answer() -> Arc<[Observation]> {
        Arc::from(vec![Observation::new(
            crate::profile::Field::FullName,
            "Ada",
        )])
    }

    #[test]
    fn the_doorkeeper_remembers_a_key_until_another_takes_its_slot() {
        let door = Doorkeeper::new();
        let cache = SourceCache::new(10, DEFAULT_TTL);
        let key = cache.key("gravatar", &id(1));

        assert!(!door.seen_before(&key), "first sighting");
        assert!(door.seen_before(&key), "second sighting");
        // Another key written into the same slot pushes it out.
        let mut rival = key;
        rival.0[8] ^= 0x80;
        assert!(!door.seen_before(&rival));
        assert!(!door.seen_before(&key), "forgotten once its slot was taken");
    }

    #[test]
    fn with_room_every_answer_is_kept() {
        let cache = SourceCache::new(10, DEFAULT_TTL);
        let source: Arc<str> = Arc::from("gravatar");
        let key = cache.key(&source, &id(1));

        cache.insert(key, &source, answer(), cache.generation());

        assert_eq!(cache.get(&key).as_deref(), Some(&answer()[..]));
    }

    #[test]
    fn a_full_cache_takes_only_keys_asked_about_before() {
        let cache = SourceCache::new(2, DEFAULT_TTL);
        let source: Arc<str> = Arc::from("gravatar");
        for n in 0..2 {
            let key = cache.key(&source, &id(n));
            cache.insert(key, &source, answer(), cache.generation());
        }
        cache.entries.run_pending_tasks();
        assert_eq!(cache.entries.entry_count(), 2);

        let newcomer = cache.key(&source, &id(7));
        // Asked about often: TinyLFU would prefer it to a victim asked about once.
        for _ in 0..4 {
            assert!(cache.get(&newcomer).is_none());
        }
        cache.insert(newcomer, &source, answer(), cache.generation());
        cache.entries.run_pending_tasks();
        assert!(
            cache.get(&newcomer).is_none(),
            "a first sighting is turned away"
        );

        cache.insert(newcomer, &source, answer(), cache.generation());
        cache.entries.run_pending_tasks();
        assert!(
            cache.get(&newcomer).is_some(),
            "the second one is offered to moka"
        );
    }
}
