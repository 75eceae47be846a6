//! One listing of `state/` per tick, shared by everything that follows it (keys, the exclusion list,
//! jobs, replicas): one request instead of one per follower, and no follower waits on the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{ObjectMeta, ObjectPath, Objects};

/// What `state/` held at one tick, in key order, and when the listing was asked for.
#[derive(Clone, Debug)]
pub struct Listing(Arc<Vec<ObjectMeta>>, Instant);

impl Listing {
    /// When the listing was asked for: anything this process wrote after it may be missing from it.
    pub fn started(&self) -> Instant {
        self.1
    }

    /// A listing as if asked for at `started`, for tests that hold one back while writes go on.
    #[cfg(test)]
    pub(crate) fn at(objects: Vec<ObjectMeta>, started: Instant) -> Self {
        Self(Arc::new(objects), started)
    }

    /// A follower that sees this one listing, then the end of the watch (tests drive one round).
    #[cfg(test)]
    pub(crate) fn once(self) -> Follower {
        let (tx, mut rx) = watch::channel(Some(self));
        drop(tx);
        rx.mark_changed();
        rx
    }

    /// The objects under `state/<sub>/`, with the name below it.
    pub fn under<'a>(
        &'a self,
        sub: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a ObjectMeta)> + 'a {
        self.0.iter().filter_map(move |m| {
            let rest = m.location.as_ref().strip_prefix("state/")?;
            let name = rest.strip_prefix(sub)?.strip_prefix('/')?;
            Some((name, m))
        })
    }
}

/// A follower's end: wait for [`Follower::next`], read the listing.
pub type Follower = watch::Receiver<Option<Listing>>;

/// Waits for the next listing; `None` when the watch stopped.
pub async fn next(follower: &mut Follower) -> Option<Listing> {
    follower.changed().await.ok()?;
    follower.borrow_and_update().clone()
}

/// The running watch: hand out followers, stop it by dropping the task handle it returned.
#[derive(Clone)]
pub struct Watch {
    tx: Arc<watch::Sender<Option<Listing>>>,
}

impl Watch {
    /// Starts listing `state/` every `every`. A failed listing is logged once per outage; followers
    /// keep what they had.
    pub fn spawn(objects: Objects, every: Duration) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, _) = watch::channel(None);
        let tx = Arc::new(tx);
        let sender = tx.clone();
        let task = tokio::spawn(async move {
            let prefix = ObjectPath::from("state");
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let started = Instant::now();
                match objects.list(&prefix).await {
                    Ok(list) => {
                        if failing {
                            tracing::info!("The store answers again.");
                            failing = false;
                        }
                        sender.send_replace(Some(Listing(Arc::new(list), started)));
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "The store cannot be listed; keys, opt-outs and jobs from other replicas wait until it answers.");
                            failing = true;
                        }
                    }
                }
            }
        });
        (Self { tx }, task)
    }

    pub fn follow(&self) -> Follower {
        self.tx.subscribe()
    }
}
