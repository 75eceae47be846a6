//! The opt-out purge seam: per-part indexes of row hashes, and an in-memory map to find them fast.
//!
//! For every part object `part-NNNNNN-gG` a small index object (`indexes/<tenant>/<batch>/NNNNNN-gG`)
//! lists, per row, the keyed hashes ([`RowHasher`]) of the identifiers the row holds: its input
//! identifiers and the emails, phones and profiles found. The service loads these into [`KeyIndex`]:
//! per part, a sorted array of 8-byte hash prefixes (8 bytes a key, nothing else). A purge looks its
//! keys up there, reads only the indexes of candidate parts, confirms with the full 16-byte keys, and
//! rewrites those parts without the rows.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::blob::BatchKey;
use crate::domain::Identifier;

/// The exclusion list's keyed hash, as the batch store needs it.
pub trait RowHasher: Send + Sync + 'static {
    /// The keyed hash of an identifier, or `None` for identifiers that are never excluded.
    fn row_keys(&self, id: &Identifier) -> Option<[u8; 16]>;

    /// Whether a key is on the exclusion list now. Rows holding such a key are dropped before a part is
    /// written, so a person who opts out while a batch runs is not written after the purge.
    fn is_excluded(&self, _key: &[u8; 16]) -> bool {
        false
    }

    /// Brings the list up to date with opt-outs other replicas took (a shared store); the default has
    /// nothing to catch up with. A part is checked against the list once more after this, so that an
    /// opt-out taken elsewhere while the part was written is purged from it (see `job.rs`).
    fn catch_up(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What a purge changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub batches_touched: usize,
    pub rows_removed: u64,
    /// Rows blanked in the stored inputs of batches still waiting or running.
    pub input_rows_blanked: u64,
}

/// The index object of one part: for each row, the hex of its keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartIndex {
    pub rows: Vec<(u64, Vec<String>)>,
}

impl PartIndex {
    pub fn push(&mut self, row: u64, keys: &[[u8; 16]]) {
        if !keys.is_empty() {
            self.rows
                .push((row, keys.iter().map(hex::encode).collect()));
        }
    }

    /// The rows holding any of `keys`.
    pub fn rows_holding(&self, keys: &[[u8; 16]]) -> Vec<u64> {
        let wanted: Vec<String> = keys.iter().map(hex::encode).collect();
        self.rows
            .iter()
            .filter(|(_, ks)| ks.iter().any(|k| wanted.contains(k)))
            .map(|(row, _)| *row)
            .collect()
    }

    /// Every key the part's rows hold.
    pub fn keys(&self) -> impl Iterator<Item = [u8; 16]> + '_ {
        self.rows.iter().flat_map(|(_, ks)| {
            ks.iter().filter_map(|k| {
                let mut key = [0u8; 16];
                hex::decode_to_slice(k, &mut key).ok()?;
                Some(key)
            })
        })
    }

    pub fn without_rows(&self, rows: &[u64]) -> Self {
        Self {
            rows: self
                .rows
                .iter()
                .filter(|(r, _)| !rows.contains(r))
                .cloned()
                .collect(),
        }
    }

    fn prefixes(&self) -> Box<[u64]> {
        let mut out: Vec<u64> = self
            .rows
            .iter()
            .flat_map(|(_, ks)| ks.iter().filter_map(|k| prefix_of_hex(k)))
            .collect();
        out.sort_unstable();
        out.dedup();
        out.into_boxed_slice()
    }
}

/// The rows of a part's index object (its JSON, as [`PartIndex`] writes it) holding a key for which
/// `pred` holds, read entry by entry: what is held is the object's text and the rows found, never
/// the index itself (whose keys, as strings, take several times the text). What a download screens
/// its rows with.
pub fn rows_where(json: &[u8], pred: &dyn Fn(&[u8; 16]) -> bool) -> serde_json::Result<Vec<u64>> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(json);
    let rows = Listed(pred).deserialize(&mut de)?;
    de.end()?;
    Ok(rows)
}

/// The visitor of [`rows_where`]: the object, then its `rows` entry by entry.
struct Listed<'a>(&'a dyn Fn(&[u8; 16]) -> bool);

impl<'de> serde::de::DeserializeSeed<'de> for Listed<'_> {
    type Value = Vec<u64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<u64>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Listed<'_> {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a part index")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<u64>, A::Error> {
        let mut out = Vec::new();
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name == "rows" {
                out = map.next_value_seed(Entries(self.0))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

struct Entries<'a>(&'a dyn Fn(&[u8; 16]) -> bool);

impl<'de> serde::de::DeserializeSeed<'de> for Entries<'_> {
    type Value = Vec<u64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<u64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Entries<'_> {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the rows of a part index")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        let mut out = Vec::new();
        while let Some((row, keys)) =
            seq.next_element::<(u64, Vec<std::borrow::Cow<'de, str>>)>()?
        {
            let listed = keys.iter().any(|k| {
                let mut key = [0u8; 16];
                hex::decode_to_slice(k.as_bytes(), &mut key).is_ok() && (self.0)(&key)
            });
            if listed {
                out.push(row);
            }
        }
        Ok(out)
    }
}

fn prefix(key: &[u8; 16]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    u64::from_be_bytes(first)
}

fn prefix_of_hex(k: &str) -> Option<u64> {
    let mut key = [0u8; 16];
    hex::decode_to_slice(k, &mut key).ok()?;
    Some(prefix(&key))
}

/// One part as written under one lease generation: what a part object and its index are named by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartRef {
    pub part: u32,
    pub generation: u64,
}

impl PartRef {
    /// `NNNNNN-gG`: the index object's name, and the part object's after `part-`.
    pub fn suffix(&self) -> String {
        format!("{:06}-g{}", self.part, self.generation)
    }

    /// Reads [`PartRef::suffix`] back.
    pub fn parse(s: &str) -> Option<Self> {
        let (part, generation) = s.split_once("-g")?;
        Some(Self {
            part: part.parse().ok()?,
            generation: generation.parse().ok()?,
        })
    }
}

/// In-memory map from key prefixes to the parts that may hold them.
#[derive(Default)]
pub struct KeyIndex {
    parts: HashMap<BatchKey, BTreeMap<PartRef, Box<[u64]>>>,
}

impl KeyIndex {
    pub fn insert_part(&mut self, batch: &BatchKey, part: PartRef, index: &PartIndex) {
        self.parts
            .entry(batch.clone())
            .or_default()
            .insert(part, index.prefixes());
    }

    pub fn remove_batch(&mut self, batch: &BatchKey) {
        self.parts.remove(batch);
    }

    /// Whether this part's index is loaded.
    pub fn has(&self, batch: &BatchKey, part: PartRef) -> bool {
        self.parts.get(batch).is_some_and(|p| p.contains_key(&part))
    }

    /// Forgets every part not in `listed` (their batches were deleted elsewhere).
    pub fn retain_listed(&mut self, listed: &HashSet<(BatchKey, PartRef)>) {
        for (batch, parts) in &mut self.parts {
            parts.retain(|part, _| listed.contains(&(batch.clone(), *part)));
        }
        self.parts.retain(|_, parts| !parts.is_empty());
    }

    /// Parts that may hold one of `keys` (prefix matches; confirm with the part's index object).
    pub fn candidates(&self, keys: &[[u8; 16]]) -> Vec<(BatchKey, PartRef)> {
        let wanted: Vec<u64> = keys.iter().map(prefix).collect();
        let mut out = Vec::new();
        for (batch, parts) in &self.parts {
            for (part, prefixes) in parts {
                if wanted.iter().any(|w| prefixes.binary_search(w).is_ok()) {
                    out.push((batch.clone(), *part));
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BatchId, TenantKey};

    #[test]
    fn candidates_are_the_parts_holding_a_key() {
        let batch = BatchKey::new(TenantKey::of("t"), BatchId::random());
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let mut p1 = PartIndex::default();
        p1.push(1, &[a]);
        let mut p2 = PartIndex::default();
        p2.push(2, &[b]);
        let (r1, r2) = (
            PartRef {
                part: 1,
                generation: 1,
            },
            PartRef {
                part: 2,
                generation: 3,
            },
        );
        let mut idx = KeyIndex::default();
        idx.insert_part(&batch, r1, &p1);
        idx.insert_part(&batch, r2, &p2);
        assert_eq!(idx.candidates(&[b]), [(batch.clone(), r2)]);
        assert_eq!(PartRef::parse(&r2.suffix()), Some(r2));
        idx.retain_listed(&HashSet::from([(batch.clone(), r1)]));
        assert!(idx.candidates(&[b]).is_empty() && idx.has(&batch, r1));
        assert_eq!(p2.rows_holding(&[b]), [2]);
        let mut both = p1.clone();
        both.push(7, &[[9u8; 16], b]);
        let json = serde_json::to_vec(&both).expect("json");
        assert_eq!(rows_where(&json, &|k| *k == b).expect("read"), [7]);
        assert_eq!(rows_where(&json, &|k| *k == a).expect("read"), [1]);
        assert!(rows_where(b"{\"rows\":[[1,", &|_| true).is_err());
        assert!(idx.candidates(&[[3u8; 16]]).is_empty());
        idx.remove_batch(&batch);
        assert!(idx.candidates(&[a]).is_empty());
    }
}
