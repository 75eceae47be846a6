//! The exclusion list's durable half on a shared S3 store: immutable segments and compacted snapshots.
//!
//! ```text
//! state/exclusion/segment-<unix ms, 20 digits>-<16 hex random>   one opt-out's records
//! state/exclusion/snapshot-<generation, 20 digits>               every record, compacted
//! ```
//!
//! Both hold the log's byte layout ([`super::log::format`]): a header naming the key id, then
//! 56-byte checksummed records. A snapshot is preceded by its **covers**: a 4-byte little-endian length
//! and a JSON list of the segment names it includes.
//!
//! - An opt-out is acknowledged once its segment is created (`If-None-Match: *`, never overwritten):
//!   writers never contend, and none can lose another's records.
//! - Every replica lists `state/` about twice a second ([`crate::store::watch`]) and reads the
//!   segments it has not applied yet, so an opt-out is enforced everywhere within about a second.
//!   Lookups read the in-memory set only; they never wait on the bucket.
//! - Compaction (when segments pile up, and for retention) writes snapshot `generation + 1` with a
//!   create: of two replicas compacting at once one wins, the other stops and deletes nothing. The
//!   winner deletes exactly the segments it included, then older snapshots; a segment written after it
//!   listed is not included and not deleted, so no record is ever lost. A replica that sees a new
//!   snapshot reads its covers only (one ranged read); it reads the whole snapshot only if the
//!   snapshot includes a segment it never applied (compacted away before it looked).

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::log::format::{self, HEADER_LEN, RECORD_LEN, Record};
use crate::store::{ObjectMeta, ObjectPath, Objects, StoreError};

const DIR: &str = "state/exclusion";
/// The covers of a snapshot are read with one ranged read of this many bytes (more if they are longer).
/// Tests read 64 bytes first, so that a snapshot including two segments already takes the second read.
const COVERS_READ: u64 = if cfg!(test) { 64 } else { 64 * 1024 };
/// Fresh segment names tried before an opt-out fails (one collision in 2^64 per millisecond is
/// already unheard of).
pub(super) const CREATE_ATTEMPTS: u32 = 4;
/// A follower compacts once this many segments are listed.
pub(super) const COMPACT_AT: usize = 256;

/// Why the stored list cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the exclusion list in the store ({object}) was written with exclusion key id {found}, but the \
         configured key has id {expected}; starting with another key would silently un-exclude \
         everyone, so set ENRICHD_EXCLUSION_KEY to the original key on every replica"
    )]
    KeyMismatch {
        object: String,
        found: String,
        expected: String,
    },
    #[error("the exclusion list object {object} is corrupt: {what}")]
    Corrupt { object: String, what: String },
}

impl RemoteError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_unavailable())
    }
}

/// What a read of stored objects found.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Read {
    pub records: u64,
    pub objects: usize,
}

#[derive(Default)]
struct Seen {
    /// Segments whose records are in the set.
    applied: HashSet<String>,
    /// The newest snapshot whose records (or all of whose covers) are in the set.
    snapshot: Option<String>,
    /// Bytes of every object listed at the last refresh.
    bytes: u64,
}

/// The stored list of one replica: what it has applied, and how to read and write more.
pub(super) struct Remote {
    objects: Objects,
    key_id: [u8; 8],
    seen: tokio::sync::Mutex<Seen>,
    /// Where new segment names come from: [`segment_name`] (tests make names collide).
    names: fn() -> String,
}

fn segment_name() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("segment-{ms:020}-{:016x}", rand::random::<u64>())
}

fn snapshot_name(generation: u64) -> String {
    format!("snapshot-{generation:020}")
}

fn generation_of(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?.parse().ok()
}

fn path(name: &str) -> ObjectPath {
    ObjectPath::from(format!("{DIR}/{name}"))
}

/// Splits a listing of `state/exclusion/` into snapshots (by generation) and segments (by name).
fn split<'a>(
    listed: impl Iterator<Item = (&'a str, &'a ObjectMeta)>,
) -> (BTreeMap<u64, String>, Vec<String>, u64) {
    let mut snapshots = BTreeMap::new();
    let mut segments = Vec::new();
    let mut bytes = 0;
    for (name, meta) in listed {
        bytes += meta.size;
        if let Some(generation) = generation_of(name) {
            snapshots.insert(generation, name.to_string());
        } else if name.starts_with("segment-") {
            segments.push(name.to_string());
        }
    }
    segments.sort();
    (snapshots, segments, bytes)
}

impl Remote {
    pub(super) fn new(objects: Objects, key_id: [u8; 8]) -> Self {
        Self {
            objects,
            key_id,
            seen: tokio::sync::Mutex::default(),
            names: segment_name,
        }
    }

    /// A remote whose new segments are named by `names` (to make names collide).
    #[cfg(test)]
    pub(super) fn with_names(mut self, names: fn() -> String) -> Self {
        self.names = names;
        self
    }

    async fn list(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        self.objects.list(&ObjectPath::from(DIR)).await
    }

    /// Reads everything stored (the newest snapshot and every segment it does not cover), passing each
    /// record to `visit`. Used at start.
    pub(super) async fn load(&self, mut visit: impl FnMut(Record)) -> Result<Read, RemoteError> {
        let listed = self.list().await?;
        let entries = listed
            .iter()
            .filter_map(|m| Some((m.location.as_ref().strip_prefix(DIR)?.strip_prefix('/')?, m)));
        self.apply(entries, &mut visit, true).await
    }

    /// Applies what a listing shows that this replica has not applied yet.
    pub(super) async fn follow<'a>(
        &self,
        listed: impl Iterator<Item = (&'a str, &'a ObjectMeta)>,
        visit: &mut impl FnMut(Record),
    ) -> Result<Read, RemoteError> {
        self.apply(listed, visit, false).await
    }

    /// Lists the stored list now and applies what is new: for callers that must see every opt-out
    /// acknowledged so far.
    pub(super) async fn catch_up(
        &self,
        visit: &mut impl FnMut(Record),
    ) -> Result<Read, RemoteError> {
        let listed = self.list().await?;
        let entries = listed
            .iter()
            .filter_map(|m| Some((m.location.as_ref().strip_prefix(DIR)?.strip_prefix('/')?, m)));
        self.apply(entries, visit, false).await
    }

    async fn apply<'a>(
        &self,
        listed: impl Iterator<Item = (&'a str, &'a ObjectMeta)>,
        visit: &mut impl FnMut(Record),
        whole: bool,
    ) -> Result<Read, RemoteError> {
        let (snapshots, segments, bytes) = split(listed);
        let mut seen = self.seen.lock().await;
        seen.bytes = bytes;
        let mut read = Read::default();
        if let Some((generation, newest)) = snapshots.iter().next_back()
            && seen.snapshot.as_ref() != Some(newest)
        {
            let covers = self.covers(newest).await?;
            // Covers name only the segments compacted since the snapshot before: after a skipped
            // generation, segments covered by the skipped one may have been missed too.
            let previous = seen
                .snapshot
                .as_deref()
                .and_then(generation_of)
                .unwrap_or(0);
            let missed = whole
                || previous + 1 != *generation
                || covers.iter().any(|c| !seen.applied.contains(c));
            if missed {
                let records = self.read_snapshot(newest).await?;
                read.records += records.len() as u64;
                records.into_iter().for_each(&mut *visit);
                read.objects += 1;
            }
            seen.applied.extend(covers);
            seen.snapshot = Some(newest.clone());
        }
        for name in segments {
            if seen.applied.contains(&name) {
                continue;
            }
            match self.read_object(&name, 0).await {
                Ok(records) => {
                    read.records += records.len() as u64;
                    records.into_iter().for_each(&mut *visit);
                    read.objects += 1;
                    seen.applied.insert(name);
                }
                // Compacted away since the listing: the next snapshot covers it.
                Err(RemoteError::Store(StoreError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(read)
    }

    /// The segment names a snapshot includes.
    async fn covers(&self, name: &str) -> Result<Vec<String>, RemoteError> {
        let head = self.objects.get_range(&path(name), 0..COVERS_READ).await;
        let head = match head {
            Ok(head) => head,
            // A snapshot shorter than the read (ranged reads past the end are refused by some stores).
            Err(StoreError::Failed { .. }) => self.objects.get(&path(name)).await?.bytes,
            Err(e) => return Err(e.into()),
        };
        let corrupt = |what: &str| RemoteError::Corrupt {
            object: name.to_string(),
            what: what.to_string(),
        };
        let len = head
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| corrupt("shorter than its covers' length"))? as u64;
        let json = if 4 + len <= head.len() as u64 {
            head.slice(4..4 + len as usize)
        } else {
            self.objects.get_range(&path(name), 4..4 + len).await?
        };
        serde_json::from_slice(&json).map_err(|e| corrupt(&e.to_string()))
    }

    async fn read_snapshot(&self, name: &str) -> Result<Vec<Record>, RemoteError> {
        let bytes = self.objects.get(&path(name)).await?.bytes;
        let len = bytes
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| RemoteError::Corrupt {
                object: name.to_string(),
                what: "shorter than its covers' length".into(),
            })? as usize;
        self.decode(name, bytes.slice((4 + len).min(bytes.len())..))
    }

    async fn read_object(&self, name: &str, skip: usize) -> Result<Vec<Record>, RemoteError> {
        let bytes = self.objects.get(&path(name)).await?.bytes;
        self.decode(name, bytes.slice(skip.min(bytes.len())..))
    }

    /// A header naming this list's key, then whole, valid records. Objects are written whole, so
    /// anything else is corruption (or another key), never a torn write.
    fn decode(&self, name: &str, bytes: Bytes) -> Result<Vec<Record>, RemoteError> {
        let corrupt = |what: String| RemoteError::Corrupt {
            object: name.to_string(),
            what,
        };
        let header: [u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| corrupt("shorter than a header".into()))?;
        let key_id =
            format::decode_header(&header).map_err(|p| corrupt(format!("bad header: {p:?}")))?;
        if key_id != self.key_id {
            return Err(RemoteError::KeyMismatch {
                object: name.to_string(),
                found: hex::encode(key_id),
                expected: hex::encode(self.key_id),
            });
        }
        let body = &bytes[HEADER_LEN..];
        if !body.len().is_multiple_of(RECORD_LEN) {
            return Err(corrupt(format!(
                "{} bytes of records is not whole records",
                body.len()
            )));
        }
        body.chunks_exact(RECORD_LEN)
            .map(|chunk| {
                let chunk: &[u8; RECORD_LEN] = chunk
                    .try_into()
                    .map_err(|_| corrupt("record size".into()))?;
                format::decode_record(chunk).map_err(|p| corrupt(format!("bad record: {p:?}")))
            })
            .collect()
    }

    fn encode(&self, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + records.len() * RECORD_LEN);
        out.extend_from_slice(&format::encode_header(self.key_id));
        for record in records {
            out.extend_from_slice(&format::encode_record(record));
        }
        out
    }

    /// Stores `records` as a new segment; returns once the store has it.
    pub(super) async fn append(&self, records: &[Record]) -> Result<(), RemoteError> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes = Bytes::from(self.encode(records));
        let mut attempts = 0;
        loop {
            let name = (self.names)();
            attempts += 1;
            match self.objects.create(&path(&name), bytes.clone()).await {
                Ok(_) => {
                    let mut seen = self.seen.lock().await;
                    seen.applied.insert(name);
                    seen.bytes += bytes.len() as u64;
                    return Ok(());
                }
                // 64 random bits collided within one millisecond: pick another name. Again and again
                // only from a store that refuses every create: fail rather than ask it forever.
                Err(StoreError::AlreadyExists { .. }) if attempts < CREATE_ATTEMPTS => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every stored record now (for the export), from a fresh read.
    pub(super) async fn records(&self) -> Result<Vec<Record>, RemoteError> {
        let mut out = Vec::new();
        let fresh = Self::new(self.objects.clone(), self.key_id);
        fresh.load(|r| out.push(r)).await?;
        Ok(out)
    }

    /// Bytes of every stored object at the last look.
    pub(super) async fn bytes(&self) -> u64 {
        self.seen.lock().await.bytes
    }

    /// Writes a new snapshot of every stored record `keep` accepts (the newest record per entry) and
    /// deletes what it includes. `None` when another replica compacted first (nothing was changed).
    pub(super) async fn compact(
        &self,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<Option<(Vec<Record>, u64)>, RemoteError> {
        let listed = self.list().await?;
        let entries = listed
            .iter()
            .filter_map(|m| Some((m.location.as_ref().strip_prefix(DIR)?.strip_prefix('/')?, m)));
        let (snapshots, segments, _) = split(entries);
        let mut newest: BTreeMap<u128, Record> = BTreeMap::new();
        let mut take = |r: Record| {
            let entry = newest.entry(r.hashed.set_key()).or_insert(r);
            if r.timestamp > entry.timestamp {
                *entry = r;
            }
        };
        let base = snapshots.iter().next_back();
        if let Some((_, name)) = base {
            self.read_snapshot(name)
                .await?
                .into_iter()
                .for_each(&mut take);
        }
        let mut covers = Vec::new();
        for name in &segments {
            match self.read_object(name, 0).await {
                Ok(records) => {
                    records.into_iter().for_each(&mut take);
                    covers.push(name.clone());
                }
                Err(RemoteError::Store(StoreError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let total = newest.len() as u64;
        let kept: Vec<Record> = newest.into_values().filter(|r| keep(r)).collect();
        let removed = total - kept.len() as u64;
        let generation = base.map_or(1, |(g, _)| g + 1);
        let covers_json = serde_json::to_vec(&covers).unwrap_or_default();
        let mut bytes =
            Vec::with_capacity(4 + covers_json.len() + HEADER_LEN + kept.len() * RECORD_LEN);
        bytes.extend_from_slice(&(covers_json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&covers_json);
        bytes.extend(self.encode(&kept));
        let name = snapshot_name(generation);
        match self.objects.create(&path(&name), Bytes::from(bytes)).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        {
            let mut seen = self.seen.lock().await;
            seen.applied.extend(covers.iter().cloned());
            seen.snapshot = Some(name);
        }
        for segment in &covers {
            self.objects.delete(&path(segment)).await?;
        }
        for (g, old) in &snapshots {
            if *g < generation {
                self.objects.delete(&path(old)).await?;
            }
        }
        Ok(Some((kept, removed)))
    }
}
