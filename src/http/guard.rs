//! The layer around every route: decides what a request may hold while it is served, refuses at once
//! with 503 (or 429) when that is not available, and records request metrics by route template (never
//! by raw path, which may hold an identifier).
//!
//! What a request holds depends on its route ([`admission`]):
//! - cheap pages and probes (`/healthz`, `/readyz`, the opt-out form page, ...) hold nothing, so
//!   that they answer whatever else is going on;
//! - large uploads (batches, the admin import) hold one of `server.max_uploads` upload slots while
//!   their body streams in;
//! - everything else holds one of `server.max_in_flight` in-flight slots, taken only once the body
//!   (at most `server.max_json_bytes`) has arrived, so a slow client dribbling its body holds a
//!   connection but never a slot. A streamed answer keeps its slot until its last event.
//!
//! A request forwarded by a trusted proxy also holds one of its client's
//! `server.max_connections_per_client` slots, as a direct connection does.
//!
//! A tower layer rather than `axum::middleware::from_fn`: that one boxes a future per request and
//! clones the rest of the router into its `Next`, and this runs on every request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tower_service::Service;

use super::body::body_failure;
use super::client::{Via, client_of};
use super::optout::ClientAddr;
use super::serve::Peer;
use super::{ApiError, AppState};
use crate::auth::ClientSlot;

/// What a request holds while it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Nothing: it answers from memory at once.
    Free,
    /// An upload slot; the handler streams the body itself.
    Upload,
    /// An in-flight slot, once its body (at most `limit` bytes) is in.
    Work { limit: usize },
}

/// The admission of a request to `route` with `method`.
pub(crate) fn admission(state: &AppState, route: Option<&str>, method: &Method) -> Admission {
    match (route, method) {
        (Some("/healthz" | "/readyz" | "/openapi.json" | "/metrics"), _)
        | (Some("/privacy" | "/privacy.json" | "/app" | "/optout"), &Method::GET) => {
            Admission::Free
        }
        (Some("/v1/batches" | "/v1/admin/exclusions"), &Method::POST) => Admission::Upload,
        _ => Admission::Work {
            limit: state.max_json_bytes,
        },
    }
}

/// Wraps each route in a [`Guarded`] service.
#[derive(Clone)]
pub(crate) struct GuardLayer(pub AppState);

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            state: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Guarded<S> {
    state: AppState,
    inner: S,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Unpin + Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        // `MatchedPath` shares its template: cloning it allocates nothing.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let admission = admission(
            &self.state,
            route.as_ref().map(MatchedPath::as_str),
            req.method(),
        );
        let record = Record {
            state: self.state.clone(),
            route,
            method: req.method().clone(),
            start,
        };
        let client = match self.client(&mut req, admission) {
            Ok(client) => client,
            Err(refusal) => return GuardedFuture::refused(record, refusal),
        };
        match admission {
            Admission::Free => GuardedFuture::Serving {
                inner: self.inner.call(req),
                slot: Some(Slot::new(record, Hold::Nothing, client)),
            },
            Admission::Upload => match self.state.connections.uploads.clone().try_acquire_owned() {
                Ok(permit) => GuardedFuture::Serving {
                    inner: self.inner.call(req),
                    slot: Some(Slot::new(record, Hold::Upload { _permit: permit }, client)),
                },
                Err(_) => {
                    self.state.metrics.overloaded();
                    GuardedFuture::refused(record, ApiError::Overloaded)
                }
            },
            Admission::Work { .. } if req.body().is_end_stream() => match in_flight(record, client)
            {
                Ok(slot) => GuardedFuture::Serving {
                    inner: self.inner.call(req),
                    slot: Some(slot),
                },
                Err(record) => GuardedFuture::refused(record, ApiError::Overloaded),
            },
            Admission::Work { limit } => {
                // The ready service goes with the request; a clone is left for the next one.
                let inner = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, inner);
                GuardedFuture::Buffering(Box::pin(buffered(ready, req, limit, record, client)))
            }
        }
    }
}

impl<S> Guarded<S> {
    /// Records who the client is for the handlers ([`ClientAddr`]) and, for a request forwarded by a
    /// trusted proxy, takes one of that client's slots.
    fn client(
        &self,
        req: &mut Request,
        admission: Admission,
    ) -> Result<Option<ClientSlot>, ApiError> {
        let conns = &self.state.connections;
        let Some(peer) = req.extensions().get::<Peer>().map(|p| p.0.ip()) else {
            return Ok(None);
        };
        let (client, via) = client_of(peer, req.headers(), &conns.trusted);
        req.extensions_mut().insert(ClientAddr(client));
        if via == Via::Peer || admission == Admission::Free {
            return Ok(None);
        }
        conns
            .per_client
            .try_take(client)
            .map(Some)
            .ok_or(ApiError::TooManyConnections)
    }
}

/// Reads the body (up to `limit` bytes, at the pace the connection enforces), then takes an
/// in-flight slot and serves the request.
async fn buffered<S>(
    mut inner: S,
    req: Request,
    limit: usize,
    record: Record,
    client: Option<ClientSlot>,
) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let (parts, body) = req.into_parts();
    if body.size_hint().lower() > limit as u64 {
        return Ok(refuse(&record, ApiError::TooLarge { limit }));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Ok(refuse(&record, body_failure(&*e, limit))),
    };
    let slot = match in_flight(record, client) {
        Ok(slot) => slot,
        Err(record) => return Ok(refuse(&record, ApiError::Overloaded)),
    };
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    let Ok(resp) = inner
        .call(Request::from_parts(parts, Body::from(bytes)))
        .await;
    Ok(slot.answered(resp))
}

/// An in-flight slot for the request; its record back when none is free.
fn in_flight(record: Record, client: Option<ClientSlot>) -> Result<Slot, Record> {
    let taken = record
        .state
        .in_flight
        .try_acquire()
        .map(|p| p.forget())
        .is_ok();
    if !taken {
        record.state.metrics.overloaded();
        return Err(record);
    }
    record.state.metrics.in_flight(1);
    Ok(Slot::new(record, Hold::InFlight, client))
}

fn refuse(record: &Record, error: ApiError) -> Response {
    let resp = error.into_response();
    record.finish(resp.status().as_u16());
    resp
}

/// What a finished request records, whichever way it ends.
struct Record {
    state: AppState,
    route: Option<MatchedPath>,
    method: Method,
    start: Instant,
}

impl Record {
    fn finish(&self, status: u16) {
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        self.state
            .metrics
            .http_request(route, &self.method, status, self.start.elapsed());
    }
}

/// The pool a request's slot came from.
enum Hold {
    Nothing,
    /// An in-flight permit, forgotten when taken and given back by [`Slot`]'s drop, so a request
    /// dropped half way (its client went away) frees its slot and leaves the gauge right too.
    InFlight,
    Upload {
        _permit: OwnedSemaphorePermit,
    },
}

/// What one request holds until its answer is ready (a streamed answer: until its last event) or it
/// is dropped.
pub(crate) struct Slot {
    record: Record,
    hold: Hold,
    _client: Option<ClientSlot>,
}

impl Slot {
    fn new(record: Record, hold: Hold, client: Option<ClientSlot>) -> Self {
        Self {
            record,
            hold,
            _client: client,
        }
    }

    /// Records the answer; a streamed answer (one whose length is not known) carries the slot in its
    /// body until the stream ends.
    fn answered(self, resp: Response) -> Response {
        self.record.finish(resp.status().as_u16());
        if matches!(self.hold, Hold::InFlight) && resp.body().size_hint().exact().is_none() {
            resp.map(|body| {
                Body::new(Streaming {
                    body,
                    slot: Some(self),
                })
            })
        } else {
            resp
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Hold::InFlight = self.hold {
            self.record.state.metrics.in_flight(-1);
            self.record.state.in_flight.add_permits(1);
        }
    }
}

/// A streamed answer's body, holding its request's slot until the last frame.
struct Streaming {
    body: Body,
    slot: Option<Slot>,
}

impl hyper::body::Body for Streaming {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none() {
            this.slot = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub(crate) enum GuardedFuture<F> {
    Refused(std::future::Ready<Result<Response, Infallible>>),
    Serving { inner: F, slot: Option<Slot> },
    Buffering(Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>),
}

impl<F> GuardedFuture<F> {
    fn refused(record: Record, error: ApiError) -> Self {
        Self::Refused(std::future::ready(Ok(refuse(&record, error))))
    }
}

impl<F> Future for GuardedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            GuardedFuture::Refused(answer) => Pin::new(answer).poll(cx),
            GuardedFuture::Buffering(serving) => serving.as_mut().poll(cx),
            GuardedFuture::Serving { inner, slot } => {
                let Ok(resp) = std::task::ready!(Pin::new(inner).poll(cx));
                Poll::Ready(Ok(match slot.take() {
                    Some(slot) => slot.answered(resp),
                    None => resp,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use axum::body::Body;
    use tower_layer::Layer;

    use super::*;

    /// A route whose answer never comes: a request stuck upstream.
    #[derive(Clone)]
    struct Stuck;

    impl Service<Request> for Stuck {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            std::future::pending()
        }
    }

    async fn state(max_in_flight: usize) -> (AppState, tempfile::TempDir) {
        let config = format!("[server]\nmax_in_flight = {max_in_flight}\n");
        let loaded = crate::config::Config::from_toml(&config, &[]).expect("valid config");
        let dir = tempfile::tempdir().expect("temp dir");
        let app = crate::app::App::build(&loaded, dir.path())
            .await
            .expect("app builds");
        (app.state, dir)
    }

    fn request() -> Request {
        Request::builder()
            .uri("/v1/lookup")
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn a_request_dropped_half_way_gives_its_slot_back() {
        let (state, _dir) = state(1).await;
        let mut guarded = GuardLayer(state.clone()).layer(Stuck);
        let mut cx = Context::from_waker(Waker::noop());

        let mut first = guarded.call(request());
        assert!(Pin::new(&mut first).poll(&mut cx).is_pending());
        assert_eq!(state.in_flight.available_permits(), 0);

        let Poll::Ready(Ok(refused)) = Pin::new(&mut guarded.call(request())).poll(&mut cx) else {
            panic!("a request over the limit is answered at once");
        };
        assert_eq!(refused.status(), 503);

        drop(first);
        assert_eq!(
            state.in_flight.available_permits(),
            1,
            "the slot is free again"
        );
        let metrics = state.metrics.render();
        assert!(
            metrics.contains("http_in_flight_requests 0"),
            "the gauge is back to zero: {metrics}"
        );
        let mut third = guarded.call(request());
        assert!(
            Pin::new(&mut third).poll(&mut cx).is_pending(),
            "the next request is let in"
        );
    }
}
