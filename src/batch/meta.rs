//! The metadata object of a batch: status, counters, checkpoint and how to read its input.

use std::collections::BTreeMap;

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
    /// The stored rows a purge removed from the result (sorted): counted once each, however often a
    /// purge cut short by a crash is taken up again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purged_rows: Vec<u64>,
    /// Rows that could not be enriched: every source asked failed (`error`), or no identifier in the
    /// row was valid (`invalid:<fields>`).
    #[serde(default)]
    pub rows_error: u64,
    /// How many of those rows failed for each reason; at most [`MAX_REASONS`] reasons are told apart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_reasons: BTreeMap<String, u64>,
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
    /// Input rows per part, at most.
    pub part_rows: u32,
    /// The last input row of each complete part (`part_ends[n - 1]` for part `n`): a part closes at
    /// `part_rows` rows or `part_bytes` bytes, whichever comes first, so parts differ in rows. Empty
    /// for batches written before parts had a byte cap, whose part `n` ends at `n × part_rows`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part_ends: Vec<u64>,
    /// Input rows an opt-out's purge blanked in the stored input (sorted): the job drops them and
    /// counts them in `rows_purged`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_purged: Vec<u64>,
    pub input: InputFormat,
    /// Why the batch failed (a kind, never row contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where to send the completion notice, if the uploader asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The most the batch's paid hits may cost, if the uploader set a cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    /// What the checkpointed rows' paid hits cost.
    #[serde(default)]
    pub cost: f64,
    /// The job's estimate of the seconds left, as of the last checkpoint: what replicas that do not
    /// run the job report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

/// A cost as shown: to a millionth of the unit, so that float sums do not print as 0.30000000000000004.
fn round_cost(c: f64) -> f64 {
    (c * 1e6).round() / 1e6
}

/// Distinct row failure reasons a batch counts; later ones are counted under [`OTHER_REASONS`], so
/// that a file whose every row fails differently cannot grow its metadata without bound.
pub const MAX_REASONS: usize = 16;
const OTHER_REASONS: &str = "other reasons";

/// What a tenant sees of a batch (`GET /v1/batches/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchSummary {
    pub id: String,
    pub status: &'static str,
    pub rows_total: u64,
    pub rows_done: u64,
    pub rows_found: u64,
    /// Rows that could not be enriched (see [`BatchMeta::rows_error`]).
    pub rows_error: u64,
    /// The commonest reason those rows failed, when some did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_error_reason: Option<String>,
    /// Why the batch failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds until the batch should be done, drawn from the rows left and the budgets of the
    /// sources they need; absent before the first rows tell how many calls a row takes, and once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// Rows whose lookups are waiting for a source's budget (or an upstream's pause) right now.
    pub rows_waiting_for_budget: u64,
    /// What the paid providers' hits cost so far.
    pub cost: f64,
    /// `cost ÷ rows_found`; absent while nothing was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_found: Option<f64>,
    /// The cap on `cost` the uploader set, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
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

    /// The last input row of part `n` (0 for `n` = 0).
    pub fn part_end(&self, n: u32) -> u64 {
        let Some(i) = usize::try_from(n).ok().and_then(|n| n.checked_sub(1)) else {
            return 0;
        };
        match self.part_ends.get(i) {
            Some(end) => *end,
            None => (u64::from(n) * u64::from(self.part_rows.max(1))).min(self.rows_total),
        }
    }

    /// The input rows the committed parts hold (rows `1..=rows_committed()`): a job taken up again
    /// resumes after them.
    pub fn rows_committed(&self) -> u64 {
        self.part_end(self.parts_done)
    }

    /// Records that part `n` ends at input row `end` (parts before it keep the ends they had).
    pub fn set_part_end(&mut self, n: u32, end: u64) {
        let before = usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX);
        self.part_ends.truncate(before);
        while self.part_ends.len() < before {
            let next = u32::try_from(self.part_ends.len() + 1).unwrap_or(u32::MAX);
            self.part_ends.push(self.part_end(next));
        }
        self.part_ends.push(end);
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
            rows_error: self.rows_error,
            rows_error_reason: (self.rows_error > 0)
                .then(|| self.commonest_reason().map(str::to_string))
                .flatten(),
            error: (self.status == BatchStatus::Failed).then(|| {
                self.error
                    .clone()
                    .unwrap_or_else(|| "the batch could not be processed".into())
            }),
            eta_seconds: (self.status == BatchStatus::Running)
                .then_some(self.eta_seconds)
                .flatten(),
            rows_waiting_for_budget: 0,
            cost: round_cost(self.cost),
            cost_per_found: (self.rows_found > 0)
                .then(|| round_cost(self.cost / self.rows_found as f64)),
            max_cost: self.max_cost,
            created_at: humantime::format_rfc3339_seconds(self.stamp.created_at).to_string(),
            expires_at: humantime::format_rfc3339_seconds(self.stamp.expires_at).to_string(),
        }
    }

    /// Counts one row that could not be enriched, and why.
    pub fn count_error(&mut self, reason: &str) {
        self.rows_error += 1;
        let key =
            if self.error_reasons.contains_key(reason) || self.error_reasons.len() < MAX_REASONS {
                reason
            } else {
                OTHER_REASONS
            };
        *self.error_reasons.entry(key.to_string()).or_default() += 1;
    }

    /// The reason most failed rows share (the first in order among equals).
    pub fn commonest_reason(&self) -> Option<&str> {
        self.error_reasons
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(reason, _)| reason.as_str())
    }

    /// Ends a batch whose every row has been processed: `failed` when not one row could be enriched,
    /// so that a run against unreachable sources or a file of unusable values does not read as a
    /// success; `done` otherwise.
    pub fn finish(&mut self) {
        if self.rows_done > 0 && self.rows_error == self.rows_done {
            self.status = BatchStatus::Failed;
            self.error = Some(format!(
                "no row could be enriched; the commonest reason: {}",
                self.commonest_reason().unwrap_or("unknown")
            ));
        } else {
            self.status = BatchStatus::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BatchMeta {
        let now = std::time::SystemTime::UNIX_EPOCH;
        BatchMeta {
            id: "b".into(),
            stamp: Stamp::new(now, 30),
            status: BatchStatus::Running,
            rows_total: 3,
            rows_done: 3,
            rows_found: 0,
            rows_purged: 0,
            purged_rows: Vec::new(),
            rows_error: 0,
            error_reasons: BTreeMap::new(),
            parts_done: 1,
            lease_gen: 0,
            part_gens: vec![0],
            part_rows: 10,
            part_ends: Vec::new(),
            input_purged: Vec::new(),
            input: InputFormat {
                encoding: Encoding::Utf8,
                bom: false,
                delimiter: b',',
                headers: Vec::new(),
                columns: ColumnMap {
                    by_index: Vec::new(),
                },
                region: None,
                bytes: 0,
            },
            error: None,
            webhook: None,
            max_cost: None,
            cost: 0.0,
            eta_seconds: None,
        }
    }

    #[test]
    fn parts_end_where_they_were_cut_and_older_batches_at_part_rows() {
        let mut m = meta();
        m.rows_total = 25;
        // Written before parts had a byte cap: part n ends at n × part_rows, the last at the end.
        assert_eq!((m.part_end(0), m.part_end(1), m.part_end(3)), (0, 10, 25));
        assert_eq!(m.rows_committed(), 10);

        // Taken up by a job that cuts parts by bytes too: earlier ends are kept as they were.
        m.set_part_end(2, 13);
        m.parts_done = 2;
        assert_eq!(m.part_ends, [10, 13]);
        assert_eq!(m.rows_committed(), 13);
        // A part written again (a takeover) replaces its end and forgets those after it.
        m.set_part_end(2, 12);
        assert_eq!(m.part_ends, [10, 12]);
    }

    #[test]
    fn a_batch_whose_every_row_failed_ends_failed_with_the_commonest_reason() {
        let mut m = meta();
        m.count_error("every source asked failed (gravatar error)");
        m.count_error("every source asked failed (gravatar error)");
        m.count_error("phone is not a phone number");

        m.finish();

        let s = m.summary();
        assert_eq!(s.status, "failed");
        assert_eq!(s.rows_error, 3);
        assert_eq!(
            s.error.as_deref(),
            Some(
                "no row could be enriched; the commonest reason: every source asked failed \
                 (gravatar error)"
            )
        );
    }

    #[test]
    fn a_batch_with_some_failed_rows_is_done_and_says_why_they_failed() {
        let mut m = meta();
        m.count_error("every source asked failed (gravatar timeout)");

        m.finish();

        let s = m.summary();
        assert_eq!((s.status, s.rows_error), ("done", 1));
        assert_eq!(
            s.rows_error_reason.as_deref(),
            Some("every source asked failed (gravatar timeout)")
        );
        assert!(s.error.is_none());
    }

    #[test]
    fn reasons_beyond_the_limit_are_counted_together() {
        let mut m = meta();
        for i in 0..(MAX_REASONS + 5) {
            m.count_error(&format!("reason {i}"));
        }
        assert_eq!(m.error_reasons.len(), MAX_REASONS + 1);
        assert_eq!(m.error_reasons[OTHER_REASONS], 5);
    }
}
