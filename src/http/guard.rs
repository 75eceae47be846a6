//! The layer around every route: refuses at once with 503 when too many requests are in flight, and
//! records request metrics by route template (never by raw path, which may hold an identifier).
//!
//! A tower layer rather than `axum::middleware::from_fn`: that one boxes a future per request and
//! clones the rest of the router into its `Next`, and this runs on every request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use tower_service::Service;

use super::{ApiError, AppState};

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
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let start = Instant::now();
        // `MatchedPath` shares its template: cloning it allocates nothing.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let record = Record {
            state: self.state.clone(),
            route,
            method: req.method().clone(),
            start,
        };
        // The permit is given back by `Record`'s drop, so a request dropped half way (its client went
        // away) frees its slot and leaves the in-flight gauge right too.
        match self.state.in_flight.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                self.state.metrics.overloaded();
                let resp = ApiError::Overloaded.into_response();
                record.finish(resp.status().as_u16());
                return GuardedFuture::Refused(std::future::ready(Ok(resp)));
            }
        }
        self.state.metrics.in_flight(1);
        GuardedFuture::Serving {
            inner: self.inner.call(req),
            slot: Some(Slot(record)),
        }
    }
}

/// What a finished request records, whichever way it ends.
struct Record {
    state: AppState,
    route: Option<MatchedPath>,
    method: http::Method,
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

/// One request's place among those in flight, held until its response is ready or it is dropped.
pub(crate) struct Slot(Record);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.state.metrics.in_flight(-1);
        self.0.state.in_flight.add_permits(1);
    }
}

pub(crate) enum GuardedFuture<F> {
    Refused(std::future::Ready<Result<Response, Infallible>>),
    Serving { inner: F, slot: Option<Slot> },
}

impl<F> Future for GuardedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            GuardedFuture::Refused(answer) => Pin::new(answer).poll(cx),
            GuardedFuture::Serving { inner, slot } => {
                let Ok(resp) = std::task::ready!(Pin::new(inner).poll(cx));
                if let Some(slot) = slot.take() {
                    slot.0.finish(resp.status().as_u16());
                }
                Poll::Ready(Ok(resp))
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
