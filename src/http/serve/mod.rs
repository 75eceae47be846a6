//! The accept loop: HTTP/1.1 connections served by hyper, each on its own task, bounded in number,
//! in time and per client, and drained within a deadline on shutdown.
//!
//! `axum::serve` would do for the happy path, but it pays per request for things this service does
//! not use (HTTP/2 sniffing, upgrades, a shutdown channel every connection polls behind one lock) and
//! bounds nothing. Here a connection polls its own one-shot stop signal, which takes no lock, and its
//! socket has `TCP_NODELAY` set: streamed answers go out one small frame at a time, and Nagle's
//! algorithm would hold each one back until the client acknowledges the last.
//!
//! What a hostile or broken client can hold, and for how long (`[server]` keys):
//! - a connection: at most `max_connections` in all and `max_connections_per_client` per address
//!   (a trusted proxy's connections are not counted per address; its forwarded clients are counted
//!   per request in [`super::guard`]). Over either cap the connection is answered 503 or 429 with
//!   `Retry-After` and closed, by a small pool of its own; past that pool it is closed unanswered.
//! - a request head: `header_read_timeout_ms`, counted from the moment the connection is ready for a
//!   request (hyper's own timer).
//! - silence: `idle_timeout_ms` with nothing being worked on and no byte moving, or with an answer
//!   the client does not read ([`conn`]).
//! - a request body: `body_grace_ms`, then it must keep up `body_min_bytes_per_second` on average,
//!   else 408 ([`paced`]). The in-flight slot is taken only once the body is in ([`super::guard`]).

mod conn;
mod io;
mod paced;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

pub use paced::BodyTooSlow;

use super::AppState;
use super::client::TrustedProxies;
use crate::auth::{ClientSlot, ClientSlots};
use crate::config::ServerConfig;

/// How long the loop waits after an accept error that is not about one connection (such as running
/// out of file descriptors) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections being answered "too many" at once; past this a refused connection is closed at once.
const REFUSALS_AT_ONCE: usize = 256;

/// The time and rate limits of one connection, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_grace: Duration,
    pub body_min_bytes_per_second: u64,
    pub drain_timeout: Duration,
}

/// The shared state of every connection: the caps, who is trusted, what is open.
pub struct Connections {
    pub limits: ConnectionLimits,
    max_connections: usize,
    pub trusted: TrustedProxies,
    /// What each client address holds open: connections, or requests through a trusted proxy.
    pub per_client: Arc<ClientSlots>,
    /// Batch uploads being received.
    pub uploads: Arc<Semaphore>,
    open: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
}

impl Connections {
    /// From a validated `[server]` section.
    pub fn new(c: &ServerConfig) -> Self {
        Self {
            max_connections: c.max_connections,
            limits: ConnectionLimits {
                header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
                idle_timeout: Duration::from_millis(c.idle_timeout_ms),
                body_grace: Duration::from_millis(c.body_grace_ms),
                body_min_bytes_per_second: c.body_min_bytes_per_second,
                drain_timeout: Duration::from_millis(c.drain_timeout_ms),
            },
            // Validated with the rest of the configuration.
            trusted: TrustedProxies::parse(&c.trusted_proxies).unwrap_or_default(),
            per_client: ClientSlots::new(c.max_connections_per_client),
            uploads: Arc::new(Semaphore::new(c.max_uploads)),
            open: Arc::new(Semaphore::new(c.max_connections)),
            refusing: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
        }
    }

    /// Lets a connection from `peer` in, or says why not.
    fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let open = self
            .open
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let client = if self.trusted.contains(peer) {
            None
        } else {
            Some(self.per_client.try_take(peer).ok_or(Refusal::PerClient)?)
        };
        Ok(Admitted {
            _open: open,
            _client: client,
        })
    }
}

/// What an admitted connection holds until it closes.
struct Admitted {
    _open: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `max_connections` are open.
    Full,
    /// The client's address holds `max_connections_per_client`.
    PerClient,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::PerClient => "per_client",
        }
    }
}

/// The router and the state its connections are bounded by: what [`serve`] runs.
pub struct Served {
    router: Router,
    state: AppState,
}

impl Served {
    pub fn new(router: Router, state: AppState) -> Self {
        Self { router, state }
    }
}

/// Serves on `listener` until `shutdown` completes; then stops accepting, asks every open connection
/// to finish the request it is serving (idle ones close at once) and returns when all have, or when
/// `drain_timeout` has passed, closing those still open. Each request carries its peer address
/// (`ConnectInfo<SocketAddr>`) for the per-address limits.
pub async fn serve(
    listener: TcpListener,
    served: Served,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Served { router, state } = served;
    let conns = state.connections.clone();
    io::raise_open_file_limit(conns.max_connections);
    let connections = TaskTracker::new();
    let mut open: Vec<(oneshot::Sender<()>, AbortHandle)> = Vec::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "Accepting a connection failed; retrying shortly.");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Only a socket that is already gone refuses this; its connection fails on its own.
        let _ = stream.set_nodelay(true);
        let admitted = match conns.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                state.metrics.connection_refused(refusal.label());
                refuse(&conns, stream, refusal);
                continue;
            }
        };
        // Forget the signals of connections that have ended, whenever the list has doubled.
        if open.len() == open.capacity() {
            open.retain(|(stop, _)| !stop.is_closed());
        }
        let (stop, stopped) = oneshot::channel();
        let task = connections.spawn(conn::run(
            stream,
            peer,
            router.clone(),
            state.clone(),
            stopped,
            admitted,
        ));
        open.push((stop, task.abort_handle()));
    }
    drop(listener);
    let draining = Instant::now();
    let (stops, tasks): (Vec<_>, Vec<_>) = open.into_iter().unzip();
    for stop in stops {
        let _ = stop.send(());
    }
    connections.close();
    let deadline = conns.limits.drain_timeout;
    if tokio::time::timeout(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            drain_timeout_ms = deadline.as_millis() as u64,
            "The drain deadline passed; closing the connections still open."
        );
        for task in &tasks {
            task.abort();
        }
        connections.wait().await;
    }
    tracing::info!(
        took_ms = draining.elapsed().as_millis() as u64,
        "Every connection is closed."
    );
    Ok(())
}

/// Answers a connection that was not let in (503 or 429, `Retry-After`, then closed) on a pool of its
/// own, so that refusing never holds what admitted connections need; past that pool it is closed.
fn refuse(conns: &Connections, stream: TcpStream, refusal: Refusal) {
    let Ok(permit) = conns.refusing.clone().try_acquire_owned() else {
        return;
    };
    let header_read_timeout = conns.limits.header_read_timeout;
    tokio::spawn(async move {
        conn::refuse(stream, refusal, header_read_timeout).await;
        drop(permit);
    });
}

/// Errors about one connection that was reset before it could be accepted: the next accept is fine.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// `ConnectInfo` as the router sees it.
pub(super) type Peer = axum::extract::ConnectInfo<SocketAddr>;
