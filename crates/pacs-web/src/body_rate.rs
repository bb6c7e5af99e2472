//! A minimum transfer rate for request bodies: a body that delivers fewer than `min_bytes` in a
//! window of `window` while we wait for it fails with [`BodyTooSlow`], so that a client
//! dripping a huge declared body cannot hold a connection (and a STOW-RS temporary file) open
//! indefinitely. Applied to every request by [`layer`]; the handler that reads the body sees the
//! error (STOW-RS answers 408 and removes what it had written).
//!
//! The window is checked when we are waiting for the client: a handler that stops reading for
//! a while (waiting for the disk) is not the client's fault, and the bytes it sent meanwhile
//! are waiting in buffers when reading resumes, so a window that ended while data flows just
//! starts the next one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::Router;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The minimum rate: at least `min_bytes` in every `window` spent waiting for the body.
#[derive(Clone, Copy, Debug)]
pub struct BodyRate {
    pub window: Duration,
    pub min_bytes: u64,
}

impl Default for BodyRate {
    fn default() -> Self {
        BodyRate {
            window: Duration::from_secs(30),
            min_bytes: 16 * 1024,
        }
    }
}

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
#[error("request body too slow: {received} bytes in {window_secs} s, at least {min_bytes} needed")]
pub struct BodyTooSlow {
    pub received: u64,
    pub window_secs: u64,
    pub min_bytes: u64,
}

/// Whether `error`, or any error it wraps, is a [`BodyTooSlow`].
pub(crate) fn is_too_slow(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTooSlow>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Wraps the body of every request `router` serves in a [`MinRateBody`].
pub(crate) fn layer(router: Router, rate: BodyRate) -> Router {
    router.layer(axum::middleware::map_request_with_state(rate, limit_body))
}

async fn limit_body(State(rate): State<BodyRate>, request: Request) -> Request {
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|body| Body::new(MinRateBody::new(body, rate)))
}

/// A body that fails when it delivers less than its [`BodyRate`] while we wait for it.
struct MinRateBody {
    inner: Body,
    rate: BodyRate,
    /// Bytes received in the current window; the window ends when `timer` fires.
    received: u64,
    /// Started on the first poll, so that time spent before the handler reads the body
    /// (authentication, say) does not count.
    timer: Option<Pin<Box<Sleep>>>,
}

impl MinRateBody {
    fn new(inner: Body, rate: BodyRate) -> MinRateBody {
        MinRateBody {
            inner,
            rate,
            received: 0,
            timer: None,
        }
    }

    fn new_window(&mut self) {
        self.received = 0;
        let end = Instant::now() + self.rate.window;
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(end),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(end))),
        }
    }
}

impl HttpBody for MinRateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.timer.is_none() {
            this.new_window();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                if this.timer.as_ref().is_some_and(|t| t.is_elapsed()) {
                    this.new_window();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                loop {
                    let Some(timer) = this.timer.as_mut() else {
                        return Poll::Pending;
                    };
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if this.received < this.rate.min_bytes {
                        let slow = BodyTooSlow {
                            received: this.received,
                            window_secs: this.rate.window.as_secs(),
                            min_bytes: this.rate.min_bytes,
                        };
                        tracing::info!(error = %slow, "request body cut");
                        metrics::counter!(crate::http_metrics::BODIES_CUT).increment(1);
                        return Poll::Ready(Some(Err(axum::Error::new(slow))));
                    }
                    // Enough came in this window: the next one starts (and its timer is
                    // registered by the next turn of the loop).
                    this.new_window();
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
