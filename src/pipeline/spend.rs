//! Spend caps: what paid providers' hits may cost a batch (its `max_cost`). The waterfall reserves a
//! provider's `cost_per_hit` before asking it and does not ask when the reservation would pass the
//! cap; a hit keeps the reservation as spent, anything else hands it back. So concurrent rows never
//! spend past the cap together, and a cap reached only stops the asking: rows are still answered by
//! the free sources.

use std::sync::{Mutex, PoisonError};

/// A cap on what paid hits may cost, shared by the rows it covers.
#[derive(Debug)]
pub struct SpendCap {
    limit: f64,
    /// (spent, reserved for calls in flight)
    state: Mutex<(f64, f64)>,
}

impl SpendCap {
    /// A cap of `limit`, of which `spent` is spent already (a batch resumed after a checkpoint).
    pub fn new(limit: f64, spent: f64) -> Self {
        Self {
            limit,
            state: Mutex::new((spent.max(0.0), 0.0)),
        }
    }

    /// Reserves `cost` for one call, unless spent and reserved would then pass the cap.
    pub fn try_reserve(&self, cost: f64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // A little slack for float sums: ten calls of 0.1 fit a cap of 1.0.
        if s.0 + s.1 + cost > self.limit + 1e-9 {
            return false;
        }
        s.1 += cost;
        true
    }

    /// Ends a reservation: spent when the call was a hit, handed back otherwise.
    pub fn settle(&self, cost: f64, hit: bool) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.1 = (s.1 - cost).max(0.0);
        if hit {
            s.0 += cost;
        }
    }

    /// What was spent under this cap, `spent` given at creation included.
    pub fn spent(&self) -> f64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_cap_and_misses_hand_theirs_back() {
        let cap = SpendCap::new(1.0, 0.0);
        assert!(cap.try_reserve(0.4));
        assert!(cap.try_reserve(0.4));
        assert!(!cap.try_reserve(0.4), "0.4 + 0.4 + 0.4 would pass 1.0");
        cap.settle(0.4, false);
        assert!(cap.try_reserve(0.4), "a miss handed its reservation back");
        cap.settle(0.4, true);
        cap.settle(0.4, true);
        assert!((cap.spent() - 0.8).abs() < 1e-9);
        assert!(cap.try_reserve(0.2));
        assert!(!cap.try_reserve(0.1));
    }

    #[test]
    fn what_was_spent_before_a_resume_counts() {
        let cap = SpendCap::new(1.0, 0.9);
        assert!(!cap.try_reserve(0.2));
        assert!(cap.try_reserve(0.1));
    }
}
