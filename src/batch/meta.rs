//! The metadata object of a batch: status, counters, checkpoint and how to read its input.

use serde::{Deserialize, Serialize};

use crate::blob::Stamp;

use super::columns::ColumnMap;
use super::index::PartRef;
use super::scan::Encoding;

/// Where a batch is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Queued,
    Running,
    Done,
    Failed,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// How the stored input is read back: fixed at upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFormat {
    pub encoding: Encoding,
    pub bom: bool,
    pub delimiter: u8,
    pub headers: Vec<String>,
    pub columns: ColumnMap,
    /// ISO 3166 region for national phone numbers, if the uploader gave one.
    pub region: Option<String>,
    pub bytes: u64,
}

/// Everything stored about a batch besides its rows. Written last after every change (the checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub id: String,
    #[serde(flatten)]
    pub stamp: Stamp,
    pub status: BatchStatus,
    pub rows_total: u64,
    /// Input rows processed (written, or dropped because the person opted out).
    pub rows_done: u64,
    pub rows_found: u64,
    /// Rows removed because the person opted out.
    #[serde(default)]
    pub rows_purged: u64,
    /// Checkpoint: parts `1..=parts_done` are complete.
    pub parts_done: u32,
    /// The lease generation the last checkpoint was written under: a job holding another generation
    /// has lost the batch to another replica and must not write it.
    #[serde(default)]
    pub lease_gen: u64,
    /// The generation each complete part was written under (`part_gens[n - 1]` for part `n`): which
    /// part object is the part, when a replica that lost its lease wrote one too.
    #[serde(default)]
    pub part_gens: Vec<u64>,
    /// Input rows per part.
    pub part_rows: u32,
    pub input: InputFormat,
    /// Why the batch failed (a kind, never row contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where to send the completion notice, if the uploader asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// What a tenant sees of a batch (`GET /v1/batches/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    pub id: String,
    pub status: &'static str,
    pub rows_total: u64,
    pub rows_done: u64,
    pub rows_found: u64,
    pub created_at: String,
    pub expires_at: String,
}

impl BatchMeta {
    /// Part `n` as committed, if it is.
    pub fn part(&self, n: u32) -> Option<PartRef> {
        let generation = *self
            .part_gens
            .get(usize::try_from(n).ok()?.checked_sub(1)?)?;
        (n <= self.parts_done).then_some(PartRef {
            part: n,
            generation,
        })
    }

    /// Every committed part, in order.
    pub fn parts(&self) -> impl Iterator<Item = PartRef> + '_ {
        (1..=self.parts_done).filter_map(|n| self.part(n))
    }

    pub fn summary(&self) -> BatchSummary {
        BatchSummary {
            id: self.id.clone(),
            status: self.status.as_str(),
            rows_total: self.rows_total,
            rows_done: self.rows_done,
            rows_found: self.rows_found,
            created_at: humantime::format_rfc3339_seconds(self.stamp.created_at).to_string(),
            expires_at: humantime::format_rfc3339_seconds(self.stamp.expires_at).to_string(),
        }
    }
}
