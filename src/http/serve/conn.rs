//! One connection: served by hyper with a header-read timer, its request bodies paced, closed when
//! silent, drained when asked; and the short answer given to a connection that was not let in.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower_service::Service;

use super::io::{Activity, Busy, Watched};
use super::paced::Paced;
use super::{Admitted, Refusal};
use crate::http::{ApiError, AppState};

/// The longest a refused connection may take to send its request head.
const REFUSAL_HEAD: Duration = Duration::from_secs(2);
/// The longest a refused connection is kept in all, its lingering close included.
const REFUSAL_TIME: Duration = Duration::from_secs(3);
/// After the refusal is sent, how long and how much of the rest of the request is read and thrown
/// away, so that closing with unread bytes does not reset the connection before the client has read
/// the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Serves one admitted connection until the client closes it, it falls silent, or `stopped` fires;
/// then the request in progress, if any, is answered and the connection closed.
pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    state: AppState,
    stopped: oneshot::Receiver<()>,
    admitted: Admitted,
) {
    let limits = state.connections.limits;
    let activity = Activity::new();
    let watched = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let busy = Busy::new(&watched);
        let req = req.map(|body| {
            if hyper::body::Body::is_end_stream(&body) {
                Body::new(body)
            } else {
                Body::new(Paced::new(body, &limits))
            }
        });
        let answer = router.clone().call(req);
        async move {
            let Ok(resp) = answer.await;
            Ok::<_, Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(
        TokioIo::new(Watched::new(stream, activity.clone())),
        service,
    );
    let mut conn = pin!(conn);
    let mut stopped = pin!(stopped);
    let idle = limits.idle_timeout;
    let mut watchdog = pin!(tokio::time::sleep(idle));
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                log_connection_end(result);
                drop(admitted);
                return;
            }
            _ = &mut stopped => break,
            () = &mut watchdog => {
                let now = Instant::now();
                let last = activity.last_io();
                let quiet = now.saturating_duration_since(last);
                if quiet >= idle && activity.closable() {
                    tracing::debug!("Closed a connection that stayed silent.");
                    return;
                }
                watchdog.as_mut().reset(if quiet >= idle { now + idle } else { last + idle });
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    log_connection_end(conn.await);
    drop(admitted);
}

/// An answer's body, holding its request's [`Busy`] mark until hyper has sent it all or dropped it.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Answers the first request of a connection that was not let in, then closes it.
pub(super) async fn refuse(stream: TcpStream, refusal: Refusal, header_read_timeout: Duration) {
    let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| {
        let error = match refusal {
            Refusal::Full => ApiError::Overloaded,
            Refusal::PerClient => ApiError::TooManyConnections,
        };
        let mut resp = error.into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        std::future::ready(Ok::<_, Infallible>(resp))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout.min(REFUSAL_HEAD))
        .keep_alive(false);
    let answered = builder
        .serve_connection(TokioIo::new(stream), service)
        .without_shutdown();
    let Ok(Ok(parts)) = tokio::time::timeout(REFUSAL_TIME, answered).await else {
        return;
    };
    let mut stream = parts.io.into_inner();
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // A client that goes away mid-request is routine, not an operator's concern.
        tracing::debug!(error = %e, "A connection ended with an error.");
    }
}
