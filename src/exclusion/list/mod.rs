//! [`ExclusionList`]: the in-memory set and the durable log behind one shareable handle.
//!
//! An opt-out is written to the log and fsynced first, and only then inserted into the set, so an
//! acknowledged opt-out survives a crash and a check never reports an entry that could be lost.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ExclusionCheck;
use super::entry::{Hashed, Origin};
use super::key::{ExclusionKey, Subkeys};
use super::log::{ExclusionLog, LOG_FILE_NAME, LogError, Record, Records};
use super::normalize::exclusion_text;
use super::set::HashSet128;
use crate::domain::Identifier;

/// Retention of exclusion entries when the policy gives none: three years.
pub const DEFAULT_RETENTION_DAYS: u32 = 1095;
const SECS_PER_DAY: u64 = 86_400;

/// Why the list could not be opened or changed.
#[derive(Debug, thiserror::Error)]
pub enum ExclusionError {
    #[error(transparent)]
    Log(#[from] LogError),
}

impl ExclusionError {
    /// Whether another process holds the log (a running server).
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Log(LogError::Locked { .. }))
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

/// The opt-out exclusion list. `Send + Sync`: share it as `Arc<ExclusionList>`.
///
/// Checks ([`ExclusionCheck::is_excluded`], [`ExclusionList::contains_hash`]) are in memory and take
/// a read lock only. [`ExclusionList::add`], [`ExclusionList::add_hashes`] and
/// [`ExclusionList::compact`] do blocking file I/O with fsync: async callers run them in
/// `tokio::task::spawn_blocking`.
pub struct ExclusionList {
    subkeys: Subkeys,
    key_version: u16,
    key_id: String,
    retention_days: u32,
    clock: Clock,
    set: RwLock<HashSet128>,
    /// Bumped after every add that puts a new entry in the set: see [`ExclusionCheck::version`].
    version: AtomicU64,
    /// The log and the counts; also serialises writers so the set check and insert do not race.
    state: Mutex<State>,
}

struct State {
    log: ExclusionLog,
    by_kind: BTreeMap<&'static str, u64>,
    by_origin: BTreeMap<&'static str, u64>,
}

impl State {
    fn count(&mut self, record: &Record) {
        *self.by_kind.entry(record.kind().as_str()).or_default() += 1;
        *self.by_origin.entry(record.origin.as_str()).or_default() += 1;
    }
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

impl ExclusionList {
    /// Opens (or creates) the log in `dir`, refusing a log written with another key, truncating a torn
    /// final write and loading every entry younger than `retention_days` at `now`.
    pub fn open(
        dir: &Path,
        key: ExclusionKey,
        retention_days: u32,
        now: SystemTime,
    ) -> Result<(Self, OpenReport), ExclusionError> {
        let cutoff = cutoff(now, retention_days);
        // Size the set for the records on disk up front: one allocation instead of repeated growth.
        let on_disk = std::fs::metadata(dir.join(LOG_FILE_NAME)).map_or(0, |m| m.len());
        let mut set = HashSet128::with_capacity(usize::try_from(on_disk / 56).unwrap_or(0));
        let mut report = OpenReport::default();
        let mut counted = Vec::new();
        let (log, opened) = ExclusionLog::open(dir, key.key_id(), |record| {
            if record.timestamp < cutoff {
                report.expired += 1;
            } else if set.insert(record.hashed.set_key()) {
                counted.push((record.kind().as_str(), record.origin.as_str()));
            }
        })?;
        let mut state = State {
            log,
            by_kind: BTreeMap::new(),
            by_origin: BTreeMap::new(),
        };
        for (kind, origin) in counted {
            *state.by_kind.entry(kind).or_default() += 1;
            *state.by_origin.entry(origin).or_default() += 1;
        }
        report.created = opened.created;
        report.records = opened.records;
        report.torn_records = opened.torn_records;
        report.torn_bytes = opened.torn_bytes;
        report.entries = set.len();
        let list = Self {
            subkeys: key.subkeys(),
            key_version: key.version(),
            key_id: key.key_id_hex(),
            retention_days,
            clock: Box::new(SystemTime::now),
            set: RwLock::new(set),
            version: AtomicU64::new(0),
            state: Mutex::new(state),
        };
        Ok((list, report))
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
    /// Blocking: see the type's docs.
    pub fn add(&self, ids: &[Identifier], origin: Origin) -> Result<Receipt, ExclusionError> {
        let hashed: Vec<Hashed> = ids.iter().filter_map(|id| self.hash(id)).collect();
        self.add_hashes(&hashed, origin)
    }

    /// Adds pre-computed hashes (admin bulk import; see [`super::parse_hash_lines`] for the text form).
    /// Duplicates within `entries` count once. Blocking: see the type's docs.
    pub fn add_hashes(
        &self,
        entries: &[Hashed],
        origin: Origin,
    ) -> Result<Receipt, ExclusionError> {
        let timestamp = unix_secs((self.clock)());
        let mut state = self.lock_state();
        let mut in_batch = HashSet::with_capacity(entries.len());
        let mut records = Vec::with_capacity(entries.len());
        let mut fresh = Vec::new();
        {
            let set = self.read_set();
            for hashed in entries {
                let key = hashed.set_key();
                if !in_batch.insert(key) {
                    continue;
                }
                let record = Record {
                    key_version: self.key_version,
                    hashed: *hashed,
                    origin,
                    timestamp,
                };
                if !set.contains(key) {
                    fresh.push(record);
                }
                records.push(record);
            }
        }
        state.log.append(&records)?;
        {
            let mut set = self.write_set();
            set.reserve(fresh.len());
            for record in &fresh {
                set.insert(record.hashed.set_key());
            }
        }
        // After the entries are in the set: a reader that sees the new version sees them too.
        if !fresh.is_empty() {
            self.version.fetch_add(1, Ordering::SeqCst);
        }
        for record in &fresh {
            state.count(record);
        }
        Ok(Receipt {
            id: format!("{:032x}", rand::random::<u128>()),
            added: fresh.len(),
            already_present: records.len() - fresh.len(),
        })
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

    /// Every record in the log now, oldest first, for the audit export. Holds the writer lock only while
    /// the reader is set up; reading is blocking file I/O (run it in `spawn_blocking`).
    pub fn records(&self) -> Result<Records, ExclusionError> {
        Ok(self.lock_state().log.records()?)
    }

    /// Whether this hash is on the list (only its first 16 bytes take part).
    pub fn contains_hash(&self, hashed: &Hashed) -> bool {
        self.read_set().contains(hashed.set_key())
    }

    pub fn stats(&self) -> Stats {
        let state = self.lock_state();
        Stats {
            entries: self.read_set().len() as u64,
            by_kind: state.by_kind.clone(),
            by_origin: state.by_origin.clone(),
            log_bytes: state.log.len_bytes(),
        }
    }

    /// Drops every record older than the retention at `now`, rewriting the log atomically, and removes
    /// entries left without records from the set. Returns the number of records removed. Blocking.
    pub fn compact(&self, now: SystemTime) -> Result<u64, ExclusionError> {
        let cutoff = cutoff(now, self.retention_days);
        let mut state = self.lock_state();
        let mut set = HashSet128::with_capacity(self.read_set().len());
        let mut counted = Vec::new();
        let done = state.log.compact(
            |record| record.timestamp >= cutoff,
            |record| {
                if set.insert(record.hashed.set_key()) {
                    counted.push(record);
                }
            },
        )?;
        *self.write_set() = set;
        state.by_kind.clear();
        state.by_origin.clear();
        for record in &counted {
            state.count(record);
        }
        Ok(done.removed)
    }

    // A panic while holding a lock cannot leave the set half-changed (inserts do not panic) and the
    // log guards itself, so a poisoned lock's data is still sound: take it rather than fail open.
    fn read_set(&self) -> std::sync::RwLockReadGuard<'_, HashSet128> {
        self.set.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_set(&self) -> std::sync::RwLockWriteGuard<'_, HashSet128> {
        self.set.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
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
