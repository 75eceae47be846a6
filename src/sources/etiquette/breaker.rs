//! The circuit breaker, as a pure state machine: every transition takes `now` from the caller.
//!
//! Closed counts consecutive retryable failures; at the threshold it opens for the cooldown. After the
//! cooldown the first caller is admitted as the single half-open probe: its success closes the circuit,
//! its failure re-opens it for another cooldown. Answers that prove the upstream is alive (a hit, a miss,
//! a non-retryable refusal) count as success.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The breaker's state as `enrichd sources` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// How one admitted call was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
}

/// What one upstream call says about the upstream's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Alive,
    Failing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: State,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: State::Closed { failures: 0 },
        }
    }

    /// Lets a call through, or refuses it while the circuit is open or a probe is already out.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<Admission> {
        match self.state {
            State::Closed { .. } => Some(Admission::Normal),
            State::Open { until } if now < until => None,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Some(Admission::Probe)
            }
            State::HalfOpen { probing: true } => None,
        }
    }

    /// Records how an admitted call went.
    pub(crate) fn record(&mut self, admission: Admission, health: Health, now: Instant) {
        self.state = match (admission, self.state, health) {
            (Admission::Probe, State::HalfOpen { .. }, Health::Alive) => {
                State::Closed { failures: 0 }
            }
            (Admission::Probe, State::HalfOpen { .. }, Health::Failing) => State::Open {
                until: now + self.cooldown,
            },
            (Admission::Normal, State::Closed { .. }, Health::Alive) => {
                State::Closed { failures: 0 }
            }
            (Admission::Normal, State::Closed { failures }, Health::Failing) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    State::Open {
                        until: now + self.cooldown,
                    }
                } else {
                    State::Closed { failures }
                }
            }
            // A call admitted before the circuit changed state reports late: it changes nothing.
            (_, state, _) => state,
        };
    }

    /// An admitted call that never reached the upstream (refused by the rate limiter, timed out
    /// waiting for a permit): a probe slot is handed back.
    pub(crate) fn cancel(&mut self, admission: Admission) {
        if admission == Admission::Probe && self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn failed(b: &mut Breaker, now: Instant, times: u32) {
        for _ in 0..times {
            let a = b.admit(now).expect("admitted while closed");
            b.record(a, Health::Failing, now);
        }
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let now = Instant::now();
        let mut b = Breaker::new(3, COOLDOWN);
        failed(&mut b, now, 2);
        assert_eq!(b.state(now), BreakerState::Closed);
        failed(&mut b, now, 1);
        assert_eq!(b.state(now), BreakerState::Open);
        assert_eq!(b.admit(now + Duration::from_secs(29)), None);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let now = Instant::now();
        let mut b = Breaker::new(3, COOLDOWN);
        failed(&mut b, now, 2);
        let a = b.admit(now).expect("closed");
        b.record(a, Health::Alive, now);
        failed(&mut b, now, 2);
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_exactly_one_probe() {
        let now = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        failed(&mut b, now, 1);
        let later = now + COOLDOWN;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.admit(later), Some(Admission::Probe));
        assert_eq!(b.admit(later), None, "second caller while probing");
    }

    #[test]
    fn probe_outcome_closes_or_reopens() {
        let cases = [
            (Health::Alive, BreakerState::Closed),
            (Health::Failing, BreakerState::Open),
        ];
        for (health, expected) in cases {
            let now = Instant::now();
            let mut b = Breaker::new(1, COOLDOWN);
            failed(&mut b, now, 1);
            let later = now + COOLDOWN;
            let probe = b.admit(later).expect("probe");
            b.record(probe, health, later);
            assert_eq!(b.state(later), expected, "{health:?}");
        }
    }

    #[test]
    fn cancelled_probe_frees_the_slot() {
        let now = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        failed(&mut b, now, 1);
        let later = now + COOLDOWN;
        let probe = b.admit(later).expect("probe");
        b.cancel(probe);
        assert_eq!(b.admit(later), Some(Admission::Probe));
    }

    #[test]
    fn late_reports_from_before_opening_change_nothing() {
        let now = Instant::now();
        let mut b = Breaker::new(1, COOLDOWN);
        let early = b.admit(now).expect("closed");
        failed(&mut b, now, 1);
        b.record(early, Health::Alive, now);
        assert_eq!(b.state(now), BreakerState::Open);
    }
}
