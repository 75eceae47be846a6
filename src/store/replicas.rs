//! How many replicas share the store, and so each one's share of a source's budget.
//!
//! Each replica rewrites `state/replicas/<id>` every few seconds (a heartbeat) and reads the others'
//! from the shared listing ([`super::watch`]). A replica counts as live while its heartbeat is at most
//! three intervals older than this replica's own latest one: both times are the store's, so clocks of
//! the machines never meet. A replica that stops cleanly deletes its heartbeat; one that dies drops
//! out after three intervals and its object is removed by the others after ten minutes.
//!
//! **Budget sharing**: every source's `rate_per_minute` is the budget of the whole deployment, and
//! each replica enforces `rate_per_minute ÷ live replicas` ([`ReplicaShare::share_of`]). Behind a
//! load balancer the replicas see about the same traffic, so the shares add up to the budget without
//! any request waiting on the store; when a replica joins or leaves, the others adjust within a few
//! seconds. A shared token bucket in the store would cost a request per upstream call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::watch::{self, Follower};
use super::{ObjectPath, Objects};
use crate::telemetry::Metrics;

/// The number of live replicas, shared with every rate limiter. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReplicaShare(Arc<AtomicU32>);

impl Default for ReplicaShare {
    fn default() -> Self {
        Self::single()
    }
}

impl PartialEq for ReplicaShare {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ReplicaShare {
    /// One replica: the whole budget.
    pub fn single() -> Self {
        Self(Arc::new(AtomicU32::new(1)))
    }

    /// Live replicas, this one included (at least 1).
    pub fn replicas(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    pub fn set(&self, live: u32) {
        self.0.store(live.max(1), Ordering::Relaxed);
    }

    /// This replica's share of a budget of `per_minute` calls: the budget divided by the live
    /// replicas, rounded down but at least 1. A budget of 0 (no limit of our own) stays 0.
    pub fn share_of(&self, per_minute: u32) -> u32 {
        if per_minute == 0 {
            return 0;
        }
        (per_minute / self.replicas()).max(1)
    }
}

/// Heartbeats older than this, relative to this replica's own, are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Runs this replica's heartbeat and keeps `share` up to date. Stop it with [`Heartbeat::stop`] to
/// remove the heartbeat at once.
pub struct Heartbeat {
    objects: Objects,
    path: ObjectPath,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    pub fn spawn(
        objects: Objects,
        replica: &str,
        every: Duration,
        mut follower: Follower,
        share: ReplicaShare,
        metrics: Arc<Metrics>,
    ) -> Self {
        let path = ObjectPath::from(format!("state/replicas/{replica}"));
        let (o, p, me) = (objects.clone(), path.clone(), replica.to_string());
        let task = tokio::spawn(async move {
            let mut beat = tokio::time::interval(every);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        if let Err(e) = o.put(&p, Bytes::from_static(b"{}")).await {
                            tracing::debug!(error = %e, "Heartbeat not written; retrying.");
                        }
                    }
                    listing = watch::next(&mut follower) => {
                        let Some(listing) = listing else { return };
                        let beats: Vec<_> = listing.under("replicas").collect();
                        let Some(mine) = beats.iter().find(|(id, _)| *id == me).map(|(_, m)| at(m)) else {
                            continue;
                        };
                        let live = beats
                            .iter()
                            .filter(|(_, m)| at(m) + every * 3 >= mine)
                            .count() as u32;
                        if live != share.replicas() {
                            tracing::info!(replicas = live, "Replicas sharing the store changed; source budgets are shared among them.");
                        }
                        share.set(live);
                        metrics.replicas(share.replicas());
                        for (_, m) in &beats {
                            if at(m) + FORGET_AFTER < mine {
                                let _ = o.delete(&m.location).await;
                            }
                        }
                    }
                }
            }
        });
        Self {
            objects,
            path,
            task,
        }
    }

    /// Stops beating and removes the heartbeat, so the others count one replica fewer at once.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.objects.delete(&self.path).await;
    }
}

/// When the store last wrote an object, by the store's clock.
fn at(m: &super::ObjectMeta) -> std::time::SystemTime {
    m.last_modified.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_takes_an_equal_share_of_a_budget() {
        let share = ReplicaShare::single();
        assert_eq!(share.share_of(30), 30);
        share.set(3);
        assert_eq!(share.share_of(30), 10);
        assert_eq!(share.share_of(2), 1, "never below one call");
        assert_eq!(share.share_of(0), 0, "no limit stays no limit");
        share.set(0);
        assert_eq!(share.replicas(), 1);
    }
}
