//! The upstream's response body on its way to the client; reading it is what keeps the upstream connection
//! moving, and finishing it is what returns the connection to the pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::config::format_duration;
use super::upstream::{Link, Upstreams};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream's response body. Polling it also drives the upstream connection, which goes back to the pool
/// once the body is complete. When no piece arrives within the idle timeout the body fails, so a stalled upstream
/// cannot hold a client forever; the timer exists only while the upstream is actually late.
pub struct UpstreamBody {
    inner: Incoming,
    link: Option<Link>,
    pool: Arc<Upstreams>,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    /// The request's place under `--max-concurrent`, given back when the body is done or dropped.
    permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// The upstream stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no body data for {0}")]
struct BodyStalled(String);

impl UpstreamBody {
    /// Wraps a response body together with the connection it arrives on.
    pub fn new(
        inner: Incoming,
        link: Link,
        pool: Arc<Upstreams>,
        idle: Duration,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let mut body = Self {
            inner,
            link: Some(link),
            pool,
            idle,
            timer: None,
            armed: false,
            permit: Some(permit),
        };
        if body.inner.is_end_stream() {
            body.release_unpolled();
        }
        body
    }

    fn release(&mut self, cx: &mut Context<'_>) {
        self.permit = None;
        if let Some(link) = self.link.take() {
            self.pool.checkin(link, cx);
        }
    }

    /// Releases where no task is polling (construction, drop): nothing needs waking for the pooled connection,
    /// and the next checkout polls it again with a real waker.
    fn release_unpolled(&mut self) {
        self.release(&mut Context::from_waker(std::task::Waker::noop()));
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A finished body (or one the server never polls, as for HEAD) leaves a reusable connection; an
        // abandoned one does not, and dropping the link closes it.
        if self.inner.is_end_stream() {
            self.release_unpolled();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut drove = false;
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.armed = false;
                    this.release(cx);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    this.armed = false;
                    if this.inner.is_end_stream() {
                        this.release(cx);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(error))) => {
                    this.link = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Pending => {}
            }
            // The body is fed by the connection, so let it read; then look at the body once more.
            match &mut this.link {
                Some(link) if !drove => {
                    drove = true;
                    if link.poll_conn(cx).is_ready() {
                        this.link = None;
                    }
                }
                _ => break,
            }
        }
        if !this.armed {
            let deadline = tokio::time::Instant::now() + this.idle;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.armed = true;
        }
        let expired = this
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            this.armed = false;
            this.link = None;
            let stalled = BodyStalled(format_duration(this.idle));
            tracing::warn!(error = %stalled, "aborting response");
            return Poll::Ready(Some(Err(stalled.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
