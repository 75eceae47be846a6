//! Paced calls: how a batch row asks a source. Where a live lookup is refused at once when a source's
//! budget is spent, a paced call waits for the batch part of the budget ([`super::limit`]), waits out
//! an upstream's `Retry-After` pause (shared by every call to that source), and is made again after an
//! upstream `429`, at most [`BatchPace::max_retries`] times, each after the pause and a random jitter
//! so that the waiting rows do not all call at the same instant. Every wait is cancelled with the
//! row's task, and bounded by [`BatchPace::max_wait`] in all.
//!
//! A [`BatchPace`] is one running batch's account: which rows are waiting for budget now, how many
//! upstream calls each source made for it (the ETA is drawn from them), how many `429`s it met.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upstream `429`s one paced call survives before its row reports the source `rate_limited`.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// The longest one paced call waits for budget and pauses in all before it gives up.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// One batch's pacing account, shared by its rows.
#[derive(Debug)]
pub struct BatchPace {
    pub max_retries: u32,
    pub max_wait: Duration,
    rows_waiting: AtomicU64,
    upstream_limited: AtomicU64,
    /// Upstream calls made for this batch (answers from the cache not counted), by source.
    calls: Mutex<BTreeMap<Arc<str>, u64>>,
    /// The same, for the rows whose lookups have ended only, and how many rows those are: how many
    /// calls a row takes, which the ETA is drawn from.
    finished: Mutex<(u64, BTreeMap<Arc<str>, u64>)>,
}

impl Default for BatchPace {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RETRIES, DEFAULT_MAX_WAIT)
    }
}

impl BatchPace {
    pub fn new(max_retries: u32, max_wait: Duration) -> Self {
        Self {
            max_retries,
            max_wait,
            rows_waiting: AtomicU64::new(0),
            upstream_limited: AtomicU64::new(0),
            calls: Mutex::default(),
            finished: Mutex::default(),
        }
    }

    /// A row of this batch.
    pub fn row(self: &Arc<Self>) -> Pace {
        Pace {
            batch: Arc::clone(self),
            waiting: AtomicU32::new(0),
            calls: Mutex::default(),
        }
    }

    /// A row's lookup ended: its calls count towards the calls a row takes.
    pub fn row_done(&self, row: &Pace) {
        let calls = std::mem::take(&mut *row.calls.lock().unwrap_or_else(PoisonError::into_inner));
        let mut f = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        f.0 += 1;
        for (source, n) in calls {
            *f.1.entry(source).or_default() += n;
        }
    }

    /// Rows whose lookups ended, and the calls they made by source.
    pub fn finished(&self) -> (u64, BTreeMap<Arc<str>, u64>) {
        self.finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rows with at least one call waiting for budget or for an upstream's pause now.
    pub fn rows_waiting(&self) -> u64 {
        self.rows_waiting.load(Ordering::Relaxed)
    }

    /// Upstream `429`s met so far (each followed by a wait and a retry, or by the row giving up).
    pub fn upstream_limited(&self) -> u64 {
        self.upstream_limited.load(Ordering::Relaxed)
    }

    /// Upstream calls made so far, by source.
    pub fn calls(&self) -> BTreeMap<Arc<str>, u64> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn called(&self, source: &Arc<str>) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        *calls.entry(Arc::clone(source)).or_default() += 1;
    }

    pub(super) fn limited_upstream(&self) {
        self.upstream_limited.fetch_add(1, Ordering::Relaxed);
    }
}

/// One batch row's calls: paced, and counted in its batch's account.
#[derive(Debug)]
pub struct Pace {
    batch: Arc<BatchPace>,
    /// This row's calls waiting now.
    waiting: AtomicU32,
    /// This row's upstream calls, by source.
    calls: Mutex<BTreeMap<Arc<str>, u64>>,
}

impl Pace {
    pub fn batch(&self) -> &BatchPace {
        &self.batch
    }

    /// One upstream call made for the row.
    pub(super) fn called(&self, source: &Arc<str>) {
        self.batch.called(source);
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        *calls.entry(Arc::clone(source)).or_default() += 1;
    }

    /// Marks one of the row's calls as waiting until the guard is dropped.
    pub(super) fn waiting(&self) -> Waiting<'_> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            self.batch.rows_waiting.fetch_add(1, Ordering::Relaxed);
        }
        Waiting(self)
    }
}

/// A call of the row waiting for budget; the row stops counting as waiting when its last one ends.
pub(super) struct Waiting<'a>(&'a Pace);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.batch.rows_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A random extra wait after a pause, up to a tenth of it (at least 50 ms, at most 1 s), so that the
/// rows a pause held do not all call the moment it ends.
pub(super) fn jitter(pause: Duration) -> Duration {
    let cap = (pause / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let millis = u64::try_from(cap.as_millis()).unwrap_or(1000).max(1);
    Duration::from_millis(rand::random_range(0..millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_counts_as_waiting_while_any_of_its_calls_waits() {
        let batch = Arc::new(BatchPace::default());
        let (a, b) = (batch.row(), batch.row());

        let first = a.waiting();
        let second = a.waiting();
        let other = b.waiting();
        assert_eq!(batch.rows_waiting(), 2);
        drop(first);
        assert_eq!(batch.rows_waiting(), 2, "row a still has a call waiting");
        drop(second);
        drop(other);
        assert_eq!(batch.rows_waiting(), 0);
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_pause() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(2)) < Duration::from_millis(200));
            assert!(jitter(Duration::from_secs(3600)) < Duration::from_secs(1));
        }
    }
}
