//! A request body with a minimum pace: after a grace period it must have arrived at an average of
//! at least `min_bytes_per_second`, or reading it fails with [`BodyTooSlow`] (answered 408).
//!
//! One timer per body, set to the moment the bytes received so far stop covering the pace; every
//! frame that arrives moves it on. A client dribbling a byte a second is cut at the end of the grace
//! period, while a large upload on a slow line keeps going as long as it keeps the pace.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::ConnectionLimits;

/// The request body did not keep the minimum pace.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct BodyTooSlow;

pub(super) struct Paced {
    inner: Incoming,
    start: Instant,
    grace: Duration,
    min_bytes_per_second: u64,
    received: u64,
    /// Armed the first time the body is waited for.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Paced {
    pub(super) fn new(inner: Incoming, limits: &ConnectionLimits) -> Self {
        Self {
            inner,
            start: Instant::now(),
            grace: limits.body_grace,
            min_bytes_per_second: limits.body_min_bytes_per_second.max(1),
            received: 0,
            timer: None,
        }
    }

    /// When the bytes received so far stop covering the pace.
    fn deadline(&self) -> Instant {
        let covered =
            Duration::from_secs_f64(self.received as f64 / self.min_bytes_per_second as f64);
        self.start + self.grace + covered
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    let deadline = this.deadline();
                    if let Some(timer) = &mut this.timer {
                        timer.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline();
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
