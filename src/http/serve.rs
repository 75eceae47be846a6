//! The accept loop: HTTP/1.1 connections served by hyper, each on its own task, drained on shutdown.
//!
//! `axum::serve` would do, but it pays per request for things this service does not use: its
//! connection builder sniffs for HTTP/2 (the `http1` feature is the only one built) and keeps upgrades
//! possible, its connect-info layer re-wraps every request, and every poll of every connection also
//! polls one shutdown channel that all connections share, behind one lock. Here a connection polls
//! its own one-shot stop signal, which takes no lock, and its socket has `TCP_NODELAY` set: streamed
//! answers go out one small frame at a time, and Nagle's algorithm would hold each one back until
//! the client acknowledges the last.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// How long the loop waits after an accept error that is not about one connection (such as running
/// out of file descriptors) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, asks every open
/// connection to finish the request it is serving (idle ones close at once) and returns when all
/// have. Each request carries its peer address (`ConnectInfo<SocketAddr>`, read by
/// [`super::ClientAddr`]) for the per-address limits of the public endpoints.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    let mut stops: Vec<oneshot::Sender<()>> = Vec::new();
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
        // Forget the stop signals of connections that have ended, whenever the list has doubled.
        if stops.len() == stops.capacity() {
            stops.retain(|stop| !stop.is_closed());
        }
        let (stop, stopped) = oneshot::channel();
        stops.push(stop);
        connections.spawn(connection(stream, peer, router.clone(), stopped));
    }
    drop(listener);
    for stop in stops {
        let _ = stop.send(());
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection until the client closes it or `stopped` fires; then the request in progress, if
/// any, is answered and the connection closed.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    stopped: oneshot::Receiver<()>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(req.map(Body::new))
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut conn = pin!(conn);
    let mut stopped = pin!(stopped);
    tokio::select! {
        biased;
        result = conn.as_mut() => {
            log_connection_end(result);
            return;
        }
        _ = &mut stopped => {}
    }
    conn.as_mut().graceful_shutdown();
    log_connection_end(conn.await);
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // A client that goes away mid-request is routine, not an operator's concern.
        tracing::debug!(error = %e, "A connection ended with an error.");
    }
}

/// Errors about one connection that was reset before it could be accepted: the next accept is fine.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
