//! The short-lived answer cache shared by every guarded source.
//!
//! Keys are a per-process keyed blake3 hash of the source name, the identifier's kind and its canonical
//! form: the cache holds no raw identifier, and the hashes mean nothing outside this process. Values are
//! what the source answered (a miss is an empty list) with the tokio instant they expire at. moka drops
//! entries after the TTL on its own clock; every read also checks the tokio deadline (so tests can pause
//! and advance time) and the invalidation generation (so an answer that raced an
//! [`invalidate_all`](SourceCache::invalidate_all) is never served).
//!
//! The cache is bounded in bytes, not entries (`retention.source_cache_mib`, 16 MiB by default): what it
//! holds is personal data, and a profile weighs ten times a miss. Under a stream of distinct lookups a
//! cache bounded at 100 000 entries grew the service by about 100 MB and slowed every lookup down with
//! it, for answers nobody asked for again.
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
//!
//! Reads go through a [`Stored`] filter first: under that same stream of distinct lookups almost
//! every read is for a key that was never stored, and moka's read path for a miss (its hash table,
//! an entry in its read log, the frequency sketch that log feeds) cost more than the rest of the
//! cache. The filter answers those misses from one word per bank without touching moka.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::Identifier;
use crate::profile::Observation;

/// Memory the cache may hold, across all sources, unless told otherwise (`retention.source_cache_mib`).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// What an entry weighs before its observations: the key, moka's bookkeeping for it (hash table slot,
/// deque nodes, frequency counters) and [`Cached`] itself. A miss (an empty answer) weighs this much,
/// so a budget of `b` bytes holds at most `b / ENTRY_BYTES` entries.
const ENTRY_BYTES: u32 = 256;

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

/// Roughly the bytes an answer keeps alive in the cache: [`ENTRY_BYTES`], then each observation with the
/// text it owns (once more when it also parsed as an identifier, which keeps its own canonical copy).
fn weight(observations: &[Observation]) -> u32 {
    let owned: usize = observations
        .iter()
        .map(|o| {
            let copies = if o.identifier().is_some() { 2 } else { 1 };
            std::mem::size_of::<Observation>()
                + copies * o.value.len()
                + o.detail.as_ref().map_or(0, String::len)
        })
        .sum();
    u32::try_from(owned)
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_BYTES)
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

/// Which keys were stored lately, as a Bloom filter in two banks: a key not in either was not
/// stored since the older bank was last cleared, so moka need not be asked about it.
///
/// A bank takes `per_bank` stored keys, then the other bank is cleared and takes the next ones; so a
/// key is remembered for at least `per_bank` and at most twice that many later stores. A key older
/// than that reads as a miss even if moka still holds it (a full cache turns most newcomers away,
/// so it can keep an entry longer): the answer is fetched and stored again, and a key read from
/// the cache is marked again in the current bank, so entries in use stay visible. The filter never
/// makes a read return anything moka would not.
struct Stored {
    banks: [Box<[AtomicU64]>; 2],
    /// Keys stored so far: the `n`th goes to bank `(n / per_bank) % 2`.
    stores: AtomicU64,
    per_bank: u64,
}

impl Stored {
    fn new(max_entries: u64) -> Self {
        let per_bank = max_entries.max(64);
        // About ten bits per key: with four bits set per key in one word, about 2 % of the keys never
        // stored still read as "may be stored" (and go on to moka).
        let words = usize::try_from(per_bank.saturating_mul(10) / 64)
            .unwrap_or(usize::MAX)
            .next_power_of_two();
        let bank = || (0..words).map(|_| AtomicU64::new(0)).collect();
        Self {
            banks: [bank(), bank()],
            stores: AtomicU64::new(0),
            per_bank,
        }
    }

    /// The word of a bank that `key` lives in and its four bits there: taken from key bytes that
    /// neither [`KeyHasher`] nor the [`Doorkeeper`] reads.
    fn place(&self, key: &CacheKey) -> (usize, u64) {
        let [.., w0, w1, w2, w3, b0, b1, b2, b3] = key.0;
        let word = u32::from_le_bytes([w0, w1, w2, w3]) as usize % self.banks[0].len();
        let mask = [b0, b1, b2, b3].iter().fold(0u64, |m, b| m | 1 << (b & 63));
        (word, mask)
    }

    /// The bank that takes the `n`th stored key.
    fn bank(&self, n: u64) -> &[AtomicU64] {
        &self.banks[usize::from((n / self.per_bank) % 2 == 1)]
    }

    /// Records that `key` was stored.
    fn stored(&self, key: &CacheKey) {
        let n = self.stores.fetch_add(1, Ordering::Relaxed);
        let bank = self.bank(n);
        if n > 0 && n.is_multiple_of(self.per_bank) {
            // This store opens a bank: forget the keys it held, stored two banks ago.
            for w in bank.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        let (word, mask) = self.place(key);
        bank[word].fetch_or(mask, Ordering::Relaxed);
    }

    /// Keeps a key that was just read from the cache in the current bank.
    fn used(&self, key: &CacheKey) {
        let (word, mask) = self.place(key);
        let slot = &self.bank(self.stores.load(Ordering::Relaxed))[word];
        // No write when the bits are there already: a hot key costs no shared cache line.
        if slot.load(Ordering::Relaxed) & mask != mask {
            slot.fetch_or(mask, Ordering::Relaxed);
        }
    }

    /// False only if `key` was not stored lately.
    fn may_hold(&self, key: &CacheKey) -> bool {
        let (word, mask) = self.place(key);
        self.banks
            .iter()
            .any(|bank| bank[word].load(Ordering::Relaxed) & mask == mask)
    }
}

/// The answer cache. Cheap to clone; clones share entries.
#[derive(Clone)]
pub struct SourceCache {
    entries: moka::sync::Cache<CacheKey, Cached, KeyHasher>,
    stored: Arc<Stored>,
    doorkeeper: Arc<Doorkeeper>,
    ttl: Duration,
    generation: Arc<AtomicU64>,
    hash_key: [u8; 32],
}

impl Default for SourceCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES, DEFAULT_TTL)
    }
}

impl SourceCache {
    /// Answers weighing at most `max_bytes` in all (see [`weight`]), each kept `ttl`; a TTL or a
    /// budget of zero keeps none.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let ttl = if max_bytes == 0 { Duration::ZERO } else { ttl };
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &CacheKey, v: &Cached| weight(&v.observations));
        if !ttl.is_zero() {
            builder = builder.time_to_live(ttl);
        }
        Self {
            entries: builder.build_with_hasher(KeyHasher::default()),
            stored: Arc::new(Stored::new(max_bytes / u64::from(ENTRY_BYTES))),
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

    /// The bytes held, as [`weight`] counts them, once moka has applied its pending writes
    /// (for status pages and benches, not hot paths).
    pub fn held_bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// The budget it was built with.
    pub fn max_bytes(&self) -> u64 {
        self.entries.policy().max_capacity().unwrap_or(0)
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
        if !self.stored.may_hold(key) {
            return None;
        }
        let cached = self.entries.get(key)?;
        if cached.expires_at > Instant::now() && cached.generation == self.generation() {
            self.stored.used(key);
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
        let full = self.entries.policy().max_capacity().is_some_and(|max| {
            self.entries.weighted_size() + u64::from(weight(&observations)) > max
        });
        if full {
            if !self.doorkeeper.seen_before(&key) {
                return;
            }
            // moka admits a newcomer to a full cache if it was asked for more often than its
            // victim, counting misses; the filter kept this key's two misses from moka, so replay them.
            for _ in 0..2 {
                let _ = self.entries.get(&key);
            }
        }
        self.stored.stored(&key);
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

    /// A fixed, hash-like key: the tests of the filter must not depend on a random cache key.
    fn fixed(n: u32) -> CacheKey {
        CacheKey(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn the_filter_knows_stored_keys_and_forgets_them_two_banks_later() {
        let stored = Stored::new(64);
        let key = fixed(0);
        assert!(!stored.may_hold(&key), "nothing stored yet");
        stored.stored(&key);
        assert!(stored.may_hold(&key));

        let never: usize = (1_000..2_000)
            .filter(|&n| stored.may_hold(&fixed(n)))
            .count();
        assert!(
            never < 20,
            "{never} of 1000 keys never stored read as stored"
        );

        // 63 more fill the first bank, 64 the second: the key is still there.
        for n in 1..128 {
            stored.stored(&fixed(n));
        }
        assert!(
            stored.may_hold(&key),
            "kept while its bank is the older one"
        );
        // The next store clears the first bank for its new keys.
        stored.stored(&fixed(128));
        assert!(!stored.may_hold(&key), "forgotten two banks later");
    }

    #[test]
    fn a_key_read_from_the_cache_stays_in_the_filter() {
        let stored = Stored::new(64);
        let key = fixed(0);
        stored.stored(&key);
        for n in 1..100 {
            stored.stored(&fixed(n));
        }
        // Read while its bank is the older one: marked in the current bank.
        stored.used(&key);
        for n in 100..140 {
            stored.stored(&fixed(n));
        }
        assert!(
            stored.may_hold(&key),
            "its first bank was cleared, the second has it"
        );
    }

    #[test]
    fn the_doorkeeper_remembers_a_key_until_another_takes_its_slot() {
        let door = Doorkeeper::new();
        let cache = SourceCache::default();
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
        let cache = SourceCache::default();
        let source: Arc<str> = Arc::from("gravatar");
        let key = cache.key(&source, &id(1));

        cache.insert(key, &source, answer(), cache.generation());

        assert_eq!(cache.get(&key).as_deref(), Some(&answer()[..]));
    }

    #[test]
    fn the_budget_is_in_bytes_and_a_profile_takes_more_of_it_than_a_miss() {
        let miss: Arc<[Observation]> = Arc::from(Vec::new());
        let profile: Arc<[Observation]> = Arc::from(
            (0..8)
                .map(|n| {
                    Observation::new(
                        crate::profile::Field::Bio,
                        format!("{n} {}", "x".repeat(100)),
                    )
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(weight(&miss), ENTRY_BYTES);
        assert!(
            weight(&profile) > 4 * weight(&miss),
            "{} vs {}",
            weight(&profile),
            weight(&miss)
        );

        let budget = 20 * u64::from(weight(&profile));
        let cache = SourceCache::new(budget, DEFAULT_TTL);
        let source: Arc<str> = Arc::from("gravatar");
        for n in 0..200 {
            let key = cache.key(&source, &id(n));
            // Each key twice, so the doorkeeper lets every one be offered once the cache is full.
            cache.insert(key, &source, Arc::clone(&profile), cache.generation());
            cache.insert(key, &source, Arc::clone(&profile), cache.generation());
        }
        cache.entries.run_pending_tasks();
        assert!(
            cache.entries.weighted_size() <= budget,
            "{} bytes held over a budget of {budget}",
            cache.entries.weighted_size()
        );
        assert!(
            cache.entries.entry_count() <= 20,
            "{} entries",
            cache.entries.entry_count()
        );
    }

    #[test]
    fn a_budget_of_zero_keeps_nothing() {
        let cache = SourceCache::new(0, DEFAULT_TTL);
        let source: Arc<str> = Arc::from("gravatar");
        let key = cache.key(&source, &id(1));
        cache.insert(key, &source, answer(), cache.generation());
        cache.entries.run_pending_tasks();
        assert!(cache.get(&key).is_none());
        assert_eq!(cache.entries.entry_count(), 0);
    }

    #[test]
    fn a_full_cache_takes_only_keys_asked_about_before() {
        let cache = SourceCache::new(2 * u64::from(weight(&answer())), DEFAULT_TTL);
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
