//! Leases: which replica runs a piece of work (a batch job, the expiry sweep) now.
//!
//! A lease is one object, `leases/<name>`, holding the holder's replica id, a **generation** and a
//! renewal counter. It is claimed with a create (`If-None-Match: *`) and renewed, released or taken
//! over with an update from the version last read (`If-Match`), so two replicas never both win.
//!
//! No wall clock is compared between machines: an observer decides that a lease is abandoned when its
//! object has not changed for the lease's time-to-live *as measured on the observer's own monotonic
//! clock* since it first saw that version. A holder renews three times per time-to-live; one that was
//! paused past it finds its next renewal refused and stops. The generation is the fencing token: the
//! work carries it in every write it makes (a batch's metadata and part names), so writes of a holder
//! that lost its lease are refused or ignored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{ObjectPath, Objects, StoreError};

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// The holder's replica id; empty once released.
    holder: String,
    generation: u64,
    /// Changes at every renewal so that the object's version changes (an S3 ETag is a digest of the
    /// content).
    renewal: u64,
}

/// Claims, renews and releases leases for one replica.
pub struct Leases {
    objects: Objects,
    replica: Arc<str>,
    ttl: Duration,
    /// The only process on this store (a local directory, guarded by the exclusion log's lock): a
    /// lease found there was left by an earlier run and is taken over at once.
    exclusive: bool,
    /// Per lease, the version last seen and when (on this replica's clock) it was first seen.
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

/// A lease this replica holds.
#[derive(Debug)]
pub struct Lease {
    path: ObjectPath,
    generation: u64,
    state: Mutex<(String, u64)>,
    lost: AtomicBool,
}

impl Lease {
    /// The fencing token: write it with everything done under this lease.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a renewal was refused: someone else holds it now.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Leases {
    pub fn new(objects: Objects, replica: Arc<str>, ttl: Duration, exclusive: bool) -> Self {
        Self {
            objects,
            replica,
            ttl,
            exclusive,
            seen: Mutex::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn path(name: &str) -> ObjectPath {
        ObjectPath::from(format!("leases/{name}"))
    }

    fn body(&self, generation: u64, renewal: u64) -> Bytes {
        let body = Body {
            holder: self.replica.to_string(),
            generation,
            renewal,
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Takes the lease `name` if it is free, released, or abandoned; `None` while another replica holds
    /// it (call again later: an abandoned lease is recognised after its time-to-live of silence).
    pub async fn claim(&self, name: &str) -> Result<Option<Arc<Lease>>, StoreError> {
        let path = Self::path(name);
        let current = match self.objects.get(&path).await {
            Ok(v) => v,
            Err(StoreError::NotFound { .. }) => {
                return match self.objects.create(&path, self.body(1, 0)).await {
                    Ok(etag) => Ok(Some(self.granted(path, 1, etag))),
                    Err(StoreError::AlreadyExists { .. }) => Ok(None),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let Some(etag) = current.etag.clone() else {
            return Ok(None);
        };
        let body: Option<Body> = serde_json::from_slice(&current.bytes).ok();
        let generation = body.as_ref().map_or(0, |b| b.generation);
        let free = body.as_ref().is_none_or(|b| b.holder.is_empty()) || self.exclusive;
        if !free && !self.silent_for_ttl(&path, &etag) {
            return Ok(None);
        }
        match self
            .objects
            .update(&path, self.body(generation + 1, 0), &etag)
            .await
        {
            Ok(etag) => {
                if !free {
                    tracing::info!(
                        lease = name,
                        generation = generation + 1,
                        "Took over an abandoned lease."
                    );
                }
                Ok(Some(self.granted(path, generation + 1, etag)))
            }
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `etag` has been the lease's version for a whole time-to-live on this replica's clock.
    fn silent_for_ttl(&self, path: &ObjectPath, etag: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = seen
            .entry(path.to_string())
            .or_insert_with(|| (etag.to_string(), now));
        if entry.0 != etag {
            *entry = (etag.to_string(), now);
        }
        now.duration_since(entry.1) >= self.ttl
    }

    fn granted(&self, path: ObjectPath, generation: u64, etag: Option<String>) -> Arc<Lease> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path.as_ref());
        Arc::new(Lease {
            path,
            generation,
            state: Mutex::new((etag.unwrap_or_default(), 0)),
            lost: AtomicBool::new(false),
        })
    }

    /// Renews `lease`; once refused it stays lost.
    pub async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        if lease.is_lost() {
            return Err(StoreError::Conflict {
                path: lease.path.to_string(),
            });
        }
        let (etag, renewal) = lease
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let body = self.body(lease.generation, renewal + 1);
        match self.objects.update(&lease.path, body, &etag).await {
            Ok(etag) => {
                *lease.state.lock().unwrap_or_else(|p| p.into_inner()) =
                    (etag.unwrap_or_default(), renewal + 1);
                Ok(())
            }
            Err(e @ StoreError::Conflict { .. }) => {
                lease.lost.store(true, Ordering::SeqCst);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps renewing `lease` every third of its time-to-live until the returned task is dropped or
    /// the lease is lost. A renewal the store could not answer is retried at the next tick; if none
    /// succeeds for a whole time-to-live the lease is treated as lost, since others may take it.
    pub fn keep_renewed(
        self: &Arc<Self>,
        lease: Arc<Lease>,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        let leases = self.clone();
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let every = leases.ttl / 3;
            let mut last_ok = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match leases.renew(&lease).await {
                    Ok(()) => last_ok = Instant::now(),
                    Err(StoreError::Conflict { .. }) => {
                        tracing::warn!(lease = %lease.path, "Lost a lease: another replica holds it now.");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %lease.path, error = %e, "Renewing a lease failed; retrying.");
                        if last_ok.elapsed() >= leases.ttl {
                            lease.lost.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        }))
    }

    /// Gives the lease back so another replica may claim it at once.
    pub async fn release(&self, lease: &Lease) {
        if lease.is_lost() {
            return;
        }
        let etag = lease
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        let body = Body {
            holder: String::new(),
            generation: lease.generation,
            renewal: 0,
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        if let Err(e) = self.objects.update(&lease.path, bytes, &etag).await {
            tracing::debug!(lease = %lease.path, error = %e, "Releasing a lease failed; it lapses instead.");
        }
        lease.lost.store(true, Ordering::SeqCst);
    }

    /// Deletes the lease object of finished or deleted work.
    pub async fn forget(&self, name: &str) -> Result<(), StoreError> {
        self.objects.delete(&Self::path(name)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn leases(store: &Store, replica: &str, exclusive: bool) -> Arc<Leases> {
        Arc::new(Leases::new(
            store.objects().clone(),
            Arc::from(replica),
            Duration::from_secs(5),
            exclusive,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lease_is_refused_until_silent_for_its_ttl_and_the_old_holder_is_fenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        let (a, b) = (leases(&store, "a", false), leases(&store, "b", false));
        let held = a.claim("job").await.expect("claim").expect("free lease");
        assert_eq!(held.generation(), 1);
        assert!(b.claim("job").await.expect("claim").is_none(), "held");
        tokio::time::advance(Duration::from_secs(4)).await;
        a.renew(&held).await.expect("renewed");
        assert!(
            b.claim("job").await.expect("claim").is_none(),
            "a new version resets the clock"
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(
            b.claim("job").await.expect("claim").is_none(),
            "4 s of silence is not 5"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let taken = b.claim("job").await.expect("claim").expect("abandoned");
        assert_eq!(taken.generation(), 2);
        assert!(matches!(
            a.renew(&held).await,
            Err(StoreError::Conflict { .. })
        ));
        assert!(held.is_lost());
        b.release(&taken).await;
        let again = a
            .claim("job")
            .await
            .expect("claim")
            .expect("released leases are free");
        assert_eq!(again.generation(), 3);
    }

    #[tokio::test]
    async fn the_only_process_on_a_directory_takes_a_leftover_lease_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::local(dir.path()).expect("store");
        let before = leases(&store, "old", true);
        let _left = before.claim("job").await.expect("claim").expect("free");
        let after = leases(&store, "new", true);
        let lease = after
            .claim("job")
            .await
            .expect("claim")
            .expect("taken at once");
        assert_eq!(lease.generation(), 2);
    }
}
