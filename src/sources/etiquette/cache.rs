//! The short-lived answer cache shared by every guarded source.
//!
//! Keys are a per-process keyed blake3 hash of the cache's generation, the source name, the
//! identifier's kind and its canonical form: the cache holds no raw identifier, and the hashes mean
//! nothing outside this process. Values are what the source answered (a miss is an empty list) with
//! the tokio instant they expire at. moka admits, evicts and expires entries (one TTL for all); every
//! read also checks the tokio deadline, so that tests can pause and advance time.
//!
//! moka also coalesces the calls: [`SourceCache::get_or_fetch`] runs one fetch for all the callers
//! that miss the same key at once, shares its answer with them and caches it; an error is shared with
//! the callers waiting at the time and never cached.
//!
//! The cache is bounded in bytes, not entries (`retention.source_cache_mib`, 16 MiB by default): what it
//! holds is personal data, and a profile weighs ten times a miss.
//!
//! An opt-out forgets the answers about its person only ([`SourceCache::invalidate_about`]): each
//! entry carries a keyed hash of the identifier it answers. Forgetting everything would itself tell
//! every tenant, by the lookups that turn slow at once, that somebody opted out.
//! [`invalidate_all`](SourceCache::invalidate_all) moves the generation on: answers fetched before
//! are under keys nobody asks for any more, and a call in flight then is never joined after it.
//!
//! Each entry keeps how long its call took, and a caller served from the cache is answered no
//! sooner than that: so a lookup's timing never tells whether somebody else (of
//! any tenant) asked about the same person within the TTL. The cache still spares the upstreams
//! the calls and the rate budget; what it no longer gives is speed, which is what would leak.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::super::SourceError;
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

/// Which source was asked about which identifier, in which generation: a keyed hash of the three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

#[derive(Clone)]
pub(crate) struct Cached {
    source: Arc<str>,
    expires_at: Instant,
    generation: u64,
    /// The keyed hash of the identifier the answer is about (see [`SourceCache::about`]).
    about: [u8; 32],
    /// How long the call that fetched the answer took; a cached answer is replayed no faster.
    pub(crate) took: Duration,
    pub(crate) observations: Arc<[Observation]>,
}

/// Roughly the bytes an answer keeps alive in the cache: [`ENTRY_BYTES`], then each observation with the
/// text it owns.
fn weight(observations: &[Observation]) -> u32 {
    let owned: usize = observations
        .iter()
        .map(|o| {
            std::mem::size_of::<Observation>()
                + o.value.text().len()
                + o.detail.as_ref().map_or(0, String::len)
        })
        .sum();
    u32::try_from(owned)
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_BYTES)
}

/// The answer cache. Cheap to clone; clones share entries.
#[derive(Clone)]
pub struct SourceCache {
    entries: moka::future::Cache<CacheKey, Cached>,
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
    /// budget of zero keeps none (calls are still coalesced).
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let ttl = if max_bytes == 0 { Duration::ZERO } else { ttl };
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &CacheKey, v: &Cached| weight(&v.observations))
            .time_to_live(ttl)
            .support_invalidation_closures()
            .build();
        Self {
            entries,
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

    /// Forgets every source's answers about any of `ids`, and nothing else.
    pub fn invalidate_about(&self, ids: &[Identifier]) {
        let about: Vec<[u8; 32]> = ids.iter().map(|id| self.about(id)).collect();
        // Only fails when the cache was built without closures, which `new` always asks for.
        if self
            .entries
            .invalidate_entries_if(move |_, v| about.contains(&v.about))
            .is_err()
        {
            self.invalidate_all();
        }
    }

    /// The keyed hash of `id` alone, whichever source answered about it.
    fn about(&self, id: &Identifier) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.hash_key);
        h.update(b"about\0");
        h.update(id.kind().as_str().as_bytes());
        h.update(&[0]);
        h.update(id.canonical_str().as_bytes());
        *h.finalize().as_bytes()
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
    pub async fn held_bytes(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.weighted_size()
    }

    /// The budget it was built with.
    pub fn max_bytes(&self) -> u64 {
        self.entries.policy().max_capacity().unwrap_or(0)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The key for `source`'s answer about `id` in the current generation.
    pub(crate) fn key(&self, source: &str, id: &Identifier) -> CacheKey {
        let mut h = blake3::Hasher::new_keyed(&self.hash_key);
        h.update(&self.generation().to_le_bytes());
        h.update(source.as_bytes());
        h.update(&[0]);
        h.update(id.kind().as_str().as_bytes());
        h.update(&[0]);
        h.update(id.canonical_str().as_bytes());
        CacheKey(*h.finalize().as_bytes())
    }

    /// The cached answer, if it is still fresh, with how long its call took.
    pub(crate) async fn get(&self, key: &CacheKey) -> Option<(Arc<[Observation]>, Duration)> {
        let cached = self.entries.get(key).await?;
        if cached.expires_at > Instant::now() {
            Some((cached.observations, cached.took))
        } else {
            self.entries.invalidate(key).await;
            None
        }
    }

    /// The cached answer for `key`, or the one `fetch` gets, which is then cached. Callers that miss
    /// the same key at once share one fetch.
    pub(crate) async fn get_or_fetch(
        &self,
        key: CacheKey,
        source: &Arc<str>,
        id: &Identifier,
        fetch: impl Future<Output = Result<Vec<Observation>, SourceError>>,
    ) -> Result<Arc<[Observation]>, Arc<SourceError>> {
        let generation = self.generation();
        let ttl = self.ttl;
        let about = self.about(id);
        let cached = self
            .entries
            .try_get_with(key, async move {
                let began = Instant::now();
                let observations = Arc::from(fetch.await?);
                Ok(Cached {
                    source: Arc::clone(source),
                    expires_at: Instant::now() + ttl,
                    generation,
                    about,
                    took: began.elapsed(),
                    observations,
                })
            })
            .await?;
        if generation != self.generation() {
            // Fetched across an opt-out: it may be about that person, and nobody can ask for it again.
            self.entries.invalidate(&key).await;
        }
        Ok(cached.observations)
    }
}

/// An opt-out forgets every source's answers about the person's identifiers (given and expanded),
/// and nothing else. Answers about others that mention the person are still cached; every lookup
/// checks what it releases against the list.
impl crate::exclusion::OptOutHook for SourceCache {
    fn name(&self) -> &'static str {
        "source_cache"
    }

    fn opted_out<'a>(
        &'a self,
        ids: &'a [crate::domain::Identifier],
    ) -> futures::future::BoxFuture<'a, Result<(), crate::exclusion::HookError>> {
        self.invalidate_about(ids);
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

    fn answer() -> Vec<Observation> {
        vec![Observation::new(crate::profile::Field::FullName, "Ada")]
    }

    /// Stores `observations` under `key` as a fetch that answered them would (about `id(0)`).
    async fn store(cache: &SourceCache, key: CacheKey, observations: Vec<Observation>) {
        let source: Arc<str> = Arc::from("gravatar");
        cache
            .get_or_fetch(key, &source, &id(0), async { Ok(observations) })
            .await
            .expect("the fetch answers");
    }

    #[tokio::test]
    async fn an_opt_out_forgets_the_answers_about_its_person_and_nothing_else() {
        let cache = SourceCache::default();
        let source: Arc<str> = Arc::from("gravatar");
        for n in [1, 2] {
            let key = cache.key("gravatar", &id(n));
            cache
                .get_or_fetch(key, &source, &id(n), async { Ok(answer()) })
                .await
                .expect("the fetch answers");
        }

        cache.invalidate_about(&[id(1)]);
        cache.entries.run_pending_tasks().await;

        assert!(cache.get(&cache.key("gravatar", &id(1))).await.is_none());
        assert!(cache.get(&cache.key("gravatar", &id(2))).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_answer_keeps_how_long_its_call_took() {
        let cache = SourceCache::default();
        let source: Arc<str> = Arc::from("gravatar");
        let key = cache.key("gravatar", &id(1));
        cache
            .get_or_fetch(key, &source, &id(1), async {
                tokio::time::sleep(Duration::from_millis(80)).await;
                Ok(answer())
            })
            .await
            .expect("the fetch answers");

        let (_, took) = cache.get(&key).await.expect("cached");

        assert_eq!(took, Duration::from_millis(80));
    }

    #[tokio::test]
    async fn with_room_every_answer_is_kept() {
        let cache = SourceCache::default();
        let key = cache.key("gravatar", &id(1));

        store(&cache, key, answer()).await;

        let got = cache.get(&key).await.map(|(a, _)| a);
        assert_eq!(got.as_deref(), Some(&answer()[..]));
    }

    #[tokio::test]
    async fn the_budget_is_in_bytes_and_a_profile_takes_more_of_it_than_a_miss() {
        let profile: Vec<Observation> = (0..8)
            .map(|n| {
                Observation::new(
                    crate::profile::Field::Bio,
                    format!("{n} {}", "x".repeat(100)),
                )
            })
            .collect();
        assert_eq!(weight(&[]), ENTRY_BYTES);
        assert!(
            weight(&profile) > 4 * weight(&[]),
            "{} vs {}",
            weight(&profile),
            weight(&[])
        );

        let budget = 20 * u64::from(weight(&profile));
        let cache = SourceCache::new(budget, DEFAULT_TTL);
        for n in 0..200 {
            store(&cache, cache.key("gravatar", &id(n)), profile.clone()).await;
        }
        cache.entries.run_pending_tasks().await;
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

    #[tokio::test]
    async fn a_budget_of_zero_keeps_nothing() {
        let cache = SourceCache::new(0, DEFAULT_TTL);
        let key = cache.key("gravatar", &id(1));
        store(&cache, key, answer()).await;
        cache.entries.run_pending_tasks().await;
        assert!(cache.get(&key).await.is_none());
        assert_eq!(cache.entries.entry_count(), 0);
    }
}
