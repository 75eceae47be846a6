//! [`ExclusionList`]: the in-memory set and its durable half behind one shareable handle.
//!
//! The durable half is the fsynced log file on a local store, or segment objects on a shared S3 store
//! ([`super::remote`]); callers see one API. An opt-out is written durably first, and only then
//! inserted into the set, so an acknowledged opt-out survives a crash and a check never reports an
//! entry that could be lost. On a shared store, [`ExclusionList::follow`] applies what other replicas
//! add, so that every replica enforces an opt-out within about a second; checks never wait on the
//! store.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ExclusionCheck;
use super::entry::{Hashed, Origin};
use super::key::{ExclusionKey, Subkeys};
use super::log::{ExclusionLog, LOG_FILE_NAME, LogError, Record, Records};
use super::normalize::exclusion_text;
use super::remote::{COMPACT_AT, Remote, RemoteError};
use super::set::HashSet128;
use crate::domain::Identifier;
use crate::store::Store;
use crate::store::watch::{self, Follower};

/// Retention of exclusion entries when the policy gives none: three years.
pub const DEFAULT_RETENTION_DAYS: u32 = 1095;
const SECS_PER_DAY: u64 = 86_400;

/// Why the list could not be opened or changed.
#[derive(Debug, thiserror::Error)]
pub enum ExclusionError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("the exclusion log's writer thread stopped: {0}")]
    Join(String),
}

impl ExclusionError {
    /// Whether another process holds the log (a running server).
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Log(LogError::Locked { .. }))
    }

    /// The store could not be reached: nothing was recorded, and a retry later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Remote(e) if e.is_unavailable())
    }
}

/// What [`ExclusionList::open`] found. Log `torn_records` loudly when it is not zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The log did not exist and was created empty.
    pub created: bool,
    /// Valid records in the log.
    pub records: u64,
    /// Distinct entries now excluded.
    pub entries: usize,
    /// Records past their retention, not loaded (a later [`ExclusionList::compact`] drops them).
    pub expired: u64,
    /// Records of a torn final write, truncated away (never acknowledged).
    pub torn_records: u64,
    pub torn_bytes: u64,
}

/// The acknowledgement of an opt-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// 128 random bits as 32 hex characters; not stored, and not derived from the identifiers.
    pub id: String,
    /// Entries that were not on the list before.
    pub added: usize,
    /// Entries already on the list; they were written again so their retention restarts.
    pub already_present: usize,
}

/// Counts for the admin statistics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    /// Entries by identifier kind (`email`, `phone`, ...), by the record that first added them.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Entries by origin (`public_form`, `api`, ...).
    pub by_origin: BTreeMap<&'static str, u64>,
    pub log_bytes: u64,
}

type Clock = Box<dyn Fn() -> SystemTime + Send + Sync>;

/// Where the list is durable.
enum Durable {
    /// The fsynced log file; its mutex also serialises local writers.
    File(Arc<Mutex<ExclusionLog>>),
    /// Segment objects on a shared store.
    Store(Remote),
}

/// Every record in the durable half, oldest first (for the audit export).
pub enum AllRecords {
    File(Records),
    Store(std::vec::IntoIter<Record>),
}

impl Iterator for AllRecords {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::File(r) => r.next(),
            Self::Store(r) => r.next().map(Ok),
        }
    }
}

#[derive(Default)]
struct Counts {
    by_kind: BTreeMap<&'static str, u64>,
    by_origin: BTreeMap<&'static str, u64>,
}

impl Counts {
    fn count(&mut self, record: &Record) {
        *self.by_kind.entry(record.kind().as_str()).or_default() += 1;
        *self.by_origin.entry(record.origin.as_str()).or_default() += 1;
    }
}

/// The opt-out exclusion list. `Send + Sync`: share it as `Arc<ExclusionList>`.
///
/// Checks ([`ExclusionCheck::is_excluded`], [`ExclusionList::contains_hash`]) are in memory and take
/// a read lock only. [`ExclusionList::add`], [`ExclusionList::add_hashes`] and
/// [`ExclusionList::compact`] write durably before they return (fsync on a blocking thread, or a
/// store request).
pub struct ExclusionList {
    subkeys: Subkeys,
    key_version: u16,
    key_id: String,
    retention_days: u32,
    clock: Clock,
    set: RwLock<HashSet128>,
    /// Bumped after every add that puts a new entry in the set: see [`ExclusionCheck::version`].
    version: AtomicU64,
    counts: Mutex<Counts>,
    durable: Durable,
}

impl std::fmt::Debug for ExclusionList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExclusionList")
            .field("entries", &self.read_set().len())
            .field("key_version", &self.key_version)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

/// Loads records into a set, counting each entry once; records past `cutoff` are counted as expired.
struct Loader {
    cutoff: u64,
    set: HashSet128,
    counts: Counts,
    expired: u64,
}

impl Loader {
    fn new(cutoff: u64, capacity: usize) -> Self {
        Self {
            cutoff,
            set: HashSet128::with_capacity(capacity),
            counts: Counts::default(),
            expired: 0,
        }
    }

    fn visit(&mut self, record: Record) {
        if record.timestamp < self.cutoff {
            self.expired += 1;
        } else if self.set.insert(record.hashed.set_key()) {
            self.counts.count(&record);
        }
    }
}

impl ExclusionList {
    fn build(key: &ExclusionKey, retention_days: u32, loader: Loader, durable: Durable) -> Self {
        Self {
            subkeys: key.subkeys(),
            key_version: key.version(),
            key_id: key.key_id_hex(),
            retention_days,
            clock: Box::new(SystemTime::now),
            set: RwLock::new(loader.set),
            version: AtomicU64::new(0),
            counts: Mutex::new(loader.counts),
            durable,
        }
    }

    /// Opens (or creates) the log in `dir`, refusing a log written with another key, truncating a torn
    /// final write and loading every entry younger than `retention_days` at `now`.
    pub fn open(
        dir: &Path,
        key: ExclusionKey,
        retention_days: u32,
        now: SystemTime,
    ) -> Result<(Self, OpenReport), ExclusionError> {
        // Size the set for the records on disk up front: one allocation instead of repeated growth.
        let on_disk = std::fs::metadata(dir.join(LOG_FILE_NAME)).map_or(0, |m| m.len());
        let mut loader = Loader::new(
            cutoff(now, retention_days),
            usize::try_from(on_disk / 56).unwrap_or(0),
        );
        let (log, opened) = ExclusionLog::open(dir, key.key_id(), |r| loader.visit(r))?;
        let report = OpenReport {
            created: opened.created,
            records: opened.records,
            entries: loader.set.len(),
            expired: loader.expired,
            torn_records: opened.torn_records,
            torn_bytes: opened.torn_bytes,
        };
        let list = Self::build(
            &key,
            retention_days,
            loader,
            Durable::File(Arc::new(Mutex::new(log))),
        );
        Ok((list, report))
    }

    /// Opens the list kept on a shared store, loading every entry younger than `retention_days` at
    /// `now`. Refuses a stored list written with another key.
    pub async fn open_store(
        store: &Store,
        key: ExclusionKey,
        retention_days: u32,
        now: SystemTime,
    ) -> Result<(Self, OpenReport), ExclusionError> {
        let remote = Remote::new(store.objects().clone(), key.key_id());
        let mut loader = Loader::new(cutoff(now, retention_days), 0);
        let read = remote.load(|r| loader.visit(r)).await?;
        let report = OpenReport {
            created: read.objects == 0,
            records: read.records,
            entries: loader.set.len(),
            expired: loader.expired,
            torn_records: 0,
            torn_bytes: 0,
        };
        Ok((
            Self::build(&key, retention_days, loader, Durable::Store(remote)),
            report,
        ))
    }

    /// Whether the list is kept on a store other replicas share (and so must be followed).
    pub fn is_shared(&self) -> bool {
        matches!(self.durable, Durable::Store(_))
    }

    /// Replaces the clock that timestamps new entries (tests inject one; the default is the system's).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The keyed hash of `id`, or `None` for a non-personal identifier (a bare domain).
    pub fn hash(&self, id: &Identifier) -> Option<Hashed> {
        let text = exclusion_text(id)?;
        let digest = self.subkeys.hash(id.kind(), &text)?;
        Hashed::full(id.kind(), digest)
    }

    /// The first 8 hex characters of `id`'s keyed hash, for log lines; `-` for a non-personal one.
    pub fn hash_prefix(&self, id: &Identifier) -> String {
        self.hash(id)
            .map_or_else(|| "-".to_string(), |h| h.prefix())
    }

    /// Adds the personal identifiers among `ids` (bare domains are skipped), durably, before returning.
    pub async fn add(&self, ids: &[Identifier], origin: Origin) -> Result<Receipt, ExclusionError> {
        let hashed: Vec<Hashed> = ids.iter().filter_map(|id| self.hash(id)).collect();
        self.add_hashes(&hashed, origin).await
    }

    /// Adds pre-computed hashes (admin bulk import; see [`super::parse_hash_lines`] for the text form).
    /// Duplicates within `entries` count once.
    pub async fn add_hashes(
        &self,
        entries: &[Hashed],
        origin: Origin,
    ) -> Result<Receipt, ExclusionError> {
        let timestamp = unix_secs((self.clock)());
        let mut in_batch = HashSet::with_capacity(entries.len());
        let records: Vec<Record> = entries
            .iter()
            .filter(|h| in_batch.insert(h.set_key()))
            .map(|hashed| Record {
                key_version: self.key_version,
                hashed: *hashed,
                origin,
                timestamp,
            })
            .collect();
        let added = match &self.durable {
            Durable::File(log) => {
                let (log, batch) = (log.clone(), records.clone());
                tokio::task::spawn_blocking(move || lock(&log).append(&batch))
                    .await
                    .map_err(|e| ExclusionError::Join(e.to_string()))??;
                self.insert(&records)
            }
            Durable::Store(remote) => {
                remote.append(&records).await?;
                self.insert(&records)
            }
        };
        Ok(Receipt {
            id: format!("{:032x}", rand::random::<u128>()),
            added,
            already_present: records.len() - added,
        })
    }
    /// Puts durably recorded entries into the set; returns how many were new. A reader that sees the
    /// new version sees them too.
    fn insert(&self, records: &[Record]) -> usize {
        let mut fresh = Vec::new();
        {
            let mut set = self.write_set();
            set.reserve(records.len());
            for record in records {
                if set.insert(record.hashed.set_key()) {
                    fresh.push(record);
                }
            }
        }
        if !fresh.is_empty() {
            self.version.fetch_add(1, Ordering::SeqCst);
            let mut counts = lock(&self.counts);
            for record in &fresh {
                counts.count(record);
            }
        }
        fresh.len()
    }

    /// Applies other replicas' opt-outs from the shared listing until it stops. Does nothing on a local
    /// store, where this process is the only writer.
    pub async fn follow(&self, mut follower: Follower) {
        let Durable::Store(remote) = &self.durable else {
            return;
        };
        let mut failing = false;
        while let Some(listing) = watch::next(&mut follower).await {
            let cutoff = cutoff((self.clock)(), self.retention_days);
            let mut fresh = Vec::new();
            let mut visit = |r: Record| {
                if r.timestamp >= cutoff {
                    fresh.push(r);
                }
            };
            match remote.follow(listing.under("exclusion"), &mut visit).await {
                Ok(_) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "Reading other replicas' opt-outs failed; retrying.");
                    }
                    failing = true;
                }
            }
            let added = self.insert(&fresh);
            if added > 0 {
                tracing::debug!(added, "Opt-outs from other replicas applied.");
            }
            let segments = listing
                .under("exclusion")
                .filter(|(n, _)| n.starts_with("segment-"))
                .count();
            if segments > COMPACT_AT
                && let Err(e) = self.compact((self.clock)()).await
            {
                tracing::warn!(error = %e, "Compacting the stored exclusion list failed; retrying later.");
            }
        }
    }

    /// Applies every opt-out acknowledged anywhere so far, reading the store now (on a local store
    /// there is nothing to catch up with). Returns how many entries were new.
    pub async fn catch_up(&self) -> Result<usize, ExclusionError> {
        let Durable::Store(remote) = &self.durable else {
            return Ok(0);
        };
        let cutoff = cutoff((self.clock)(), self.retention_days);
        let mut fresh = Vec::new();
        remote
            .catch_up(&mut |r: Record| {
                if r.timestamp >= cutoff {
                    fresh.push(r);
                }
            })
            .await?;
        Ok(self.insert(&fresh))
    }

    /// The non-secret fingerprint of the key the list is written with (16 hex characters).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key version stored with each new record.
    pub fn key_version(&self) -> u16 {
        self.key_version
    }

    /// Days an entry stays on the list after it was last recorded.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// Every durable record now, oldest first, for the audit export. On a local store the records are
    /// read from the file as the iterator goes (blocking reads: drive it on a blocking thread).
    pub async fn records(&self) -> Result<AllRecords, ExclusionError> {
        match &self.durable {
            Durable::File(log) => {
                let log = log.clone();
                let records = tokio::task::spawn_blocking(move || lock(&log).records())
                    .await
                    .map_err(|e| ExclusionError::Join(e.to_string()))??;
                Ok(AllRecords::File(records))
            }
            Durable::Store(remote) => {
                let mut records = remote.records().await?;
                records.sort_by_key(|r| r.timestamp);
                Ok(AllRecords::Store(records.into_iter()))
            }
        }
    }

    /// Whether this hash is on the list (only its first 16 bytes take part).
    pub fn contains_hash(&self, hashed: &Hashed) -> bool {
        self.read_set().contains(hashed.set_key())
    }

    pub async fn stats(&self) -> Stats {
        let log_bytes = match &self.durable {
            Durable::File(log) => lock(log).len_bytes(),
            Durable::Store(remote) => remote.bytes().await,
        };
        let counts = lock(&self.counts);
        Stats {
            entries: self.read_set().len() as u64,
            by_kind: counts.by_kind.clone(),
            by_origin: counts.by_origin.clone(),
            log_bytes,
        }
    }

    /// Drops every record older than the retention at `now` from the durable half (rewriting the log
    /// atomically, or writing a new snapshot), and rebuilds the set from what is kept. Returns the
    /// number of records removed.
    pub async fn compact(&self, now: SystemTime) -> Result<u64, ExclusionError> {
        let cutoff = cutoff(now, self.retention_days);
        let (kept, removed) = match &self.durable {
            Durable::File(log) => {
                let log = log.clone();
                tokio::task::spawn_blocking(move || {
                    let mut kept = Vec::new();
                    let done = lock(&log).compact(|r| r.timestamp >= cutoff, |r| kept.push(r))?;
                    Ok::<_, ExclusionError>((kept, done.removed))
                })
                .await
                .map_err(|e| ExclusionError::Join(e.to_string()))??
            }
            Durable::Store(remote) => match remote.compact(|r| r.timestamp >= cutoff).await? {
                Some(done) => done,
                None => return Ok(0),
            },
        };
        let mut loader = Loader::new(0, kept.len());
        kept.into_iter().for_each(|r| loader.visit(r));
        *self.write_set() = loader.set;
        *lock(&self.counts) = loader.counts;
        Ok(removed)
    }

    // A panic while holding a lock cannot leave the set half-changed (inserts do not panic) and the
    // log guards itself, so a poisoned lock's data is still sound: take it rather than fail open.
    fn read_set(&self) -> std::sync::RwLockReadGuard<'_, HashSet128> {
        self.set.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_set(&self) -> std::sync::RwLockWriteGuard<'_, HashSet128> {
        self.set.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ExclusionCheck for ExclusionList {
    fn is_excluded(&self, id: &Identifier) -> bool {
        self.hash(id).is_some_and(|h| self.contains_hash(&h))
    }

    fn version(&self) -> Option<u64> {
        Some(self.version.load(Ordering::SeqCst))
    }
}

/// A read-only copy of the list, for a process that only checks it (`enrichd lookup`) while a server
/// may own the log: loaded without the writer lock, and nothing on disk is created or repaired.
pub struct ExclusionSnapshot {
    subkeys: Subkeys,
    set: HashSet128,
}

impl ExclusionSnapshot {
    /// Loads every entry younger than `retention_days` at `now` from the log in `dir`; an absent log is
    /// an empty list. Corruption and a log written with another key are refused as by
    /// [`ExclusionList::open`].
    pub fn load(
        dir: &Path,
        key: &ExclusionKey,
        retention_days: u32,
        now: SystemTime,
    ) -> Result<(Self, OpenReport), ExclusionError> {
        let cutoff = cutoff(now, retention_days);
        let mut set = HashSet128::new();
        let mut report = OpenReport::default();
        let opened = ExclusionLog::read_only(dir, key.key_id(), |record| {
            if record.timestamp < cutoff {
                report.expired += 1;
            } else {
                set.insert(record.hashed.set_key());
            }
        })?;
        if let Some(opened) = opened {
            report.records = opened.records;
            report.torn_records = opened.torn_records;
            report.torn_bytes = opened.torn_bytes;
        }
        report.entries = set.len();
        let snapshot = Self {
            subkeys: key.subkeys(),
            set,
        };
        Ok((snapshot, report))
    }
}

impl ExclusionCheck for ExclusionSnapshot {
    fn is_excluded(&self, id: &Identifier) -> bool {
        exclusion_text(id)
            .and_then(|text| self.subkeys.hash(id.kind(), &text))
            .and_then(|digest| Hashed::full(id.kind(), digest))
            .is_some_and(|h| self.set.contains(h.set_key()))
    }

    /// A snapshot never changes.
    fn version(&self) -> Option<u64> {
        Some(0)
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The oldest timestamp still within retention at `now`.
fn cutoff(now: SystemTime, retention_days: u32) -> u64 {
    unix_secs(now).saturating_sub(u64::from(retention_days) * SECS_PER_DAY)
}
