//! The timing rule for an excluded person's answer: nobody is asked about them, yet the answer must
//! not come back sooner than a miss of the same shape would.
//!
//! Every real call that ends in a miss records its latency in its source's window of the last
//! [`WINDOW`] misses. An excluded lookup draws one quantile at random ([`MissTimes::quantile`]) and,
//! for each call a miss would have made, takes that quantile of the source's window (of every
//! source's windows pooled while that one is still empty); it reports it as that call's latency,
//! sends the call's progress event when it has passed, and releases the answer no sooner than the
//! longest of them. So an excluded answer's timing follows the distribution of recent misses of the
//! same sources, source by source. One quantile for the whole lookup, not one draw per source: the
//! sources of one real miss are slow or fast together (the machine's and the network's load), and
//! the longest of independent draws would come out slower than a real miss. Only before any miss at
//! all has been seen since the start is nothing held.
//!
//! Latencies only are kept: no identifier, no time of day.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// How many recent misses each source's window holds.
pub(crate) const WINDOW: usize = 64;

/// Each source's recent miss latencies, by its position among the sources.
pub(crate) struct MissTimes {
    windows: Vec<Mutex<Window>>,
}

#[derive(Default)]
struct Window {
    latencies: Vec<Duration>,
    /// Where the next latency goes once the window is full.
    next: usize,
}

impl MissTimes {
    pub(crate) fn new(sources: usize) -> Self {
        Self {
            windows: (0..sources).map(|_| Mutex::default()).collect(),
        }
    }

    /// One real call of source `source` ended in a miss after `latency`.
    pub(crate) fn record(&self, source: usize, latency: Duration) {
        let Some(window) = self.windows.get(source) else {
            return;
        };
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        if w.latencies.len() < WINDOW {
            w.latencies.push(latency);
        } else {
            let at = w.next;
            w.latencies[at] = latency;
        }
        w.next = (w.next + 1) % WINDOW;
    }

    /// A quantile in [0, 1), drawn once per excluded lookup.
    pub(crate) fn quantile() -> f64 {
        rand::rng().random_range(0.0..1.0)
    }

    /// The `q` quantile of source `source`'s recent misses, or of every source's while it has none;
    /// zero before any miss was seen.
    pub(crate) fn at(&self, source: usize, q: f64) -> Duration {
        let read = |w: &Mutex<Window>| {
            w.lock()
                .unwrap_or_else(|p| p.into_inner())
                .latencies
                .clone()
        };
        let mut sample = self.windows.get(source).map(read).unwrap_or_default();
        if sample.is_empty() {
            sample = self.windows.iter().flat_map(read).collect();
        }
        if sample.is_empty() {
            return Duration::ZERO;
        }
        sample.sort_unstable();
        // A window holds at most WINDOW latencies: the rank fits, and truncating picks one in 0..len.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * sample.len() as f64) as usize).min(sample.len() - 1);
        sample[rank]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_of_a_sources_recent_misses_is_one_of_them() {
        let times = MissTimes::new(2);
        for ms in [60, 40, 50] {
            times.record(0, Duration::from_millis(ms));
        }
        times.record(1, Duration::from_millis(900));
        let at = |q| times.at(0, q).as_millis();
        assert_eq!([at(0.0), at(0.5), at(0.99)], [40, 50, 60]);
        for _ in 0..50 {
            let q = MissTimes::quantile();
            assert!((0.0..1.0).contains(&q), "{q}");
        }
    }

    #[test]
    fn the_window_keeps_only_the_latest_misses() {
        let times = MissTimes::new(1);
        for _ in 0..WINDOW {
            times.record(0, Duration::from_millis(5));
        }
        for _ in 0..WINDOW {
            times.record(0, Duration::from_millis(70));
        }
        for q in [0.0, 0.5, 0.99] {
            assert_eq!(times.at(0, q), Duration::from_millis(70));
        }
    }

    #[test]
    fn a_source_without_misses_draws_from_the_others_and_nothing_is_held_before_any() {
        let times = MissTimes::new(2);
        assert_eq!(times.at(1, 0.5), Duration::ZERO, "no miss seen yet");
        times.record(0, Duration::from_millis(30));
        assert_eq!(times.at(1, 0.5), Duration::from_millis(30));
    }
}
