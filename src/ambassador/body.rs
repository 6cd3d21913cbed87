//! The upstream's response body on its way to the client; reading it is what keeps the upstream connection
//! moving, and finishing it is what returns the connection to the pool. Trailers pass through as they come
//! (gRPC's status travels in them); for a gRPC call the body also enforces the call's deadline and reports the
//! status it ended with.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::config::format_duration;
use super::grpc::{self, CallEnd};
use super::upstream::{Link, Upstreams};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream's response body. Polling it also drives the upstream connection, which goes back to the pool
/// once the body is complete. When no piece arrives within the idle timeout the body fails, so a stalled upstream
/// cannot hold a client forever; the timer exists only while the upstream is actually late.
pub struct UpstreamBody {
    inner: Incoming,
    /// The pooled HTTP/1.1 connection the body arrives on; `None` over HTTP/2, whose connection has its own task.
    link: Option<Link>,
    pool: Arc<Upstreams>,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    /// The request's place under `--max-concurrent`, given back when the body is done or dropped.
    permit: Option<OwnedSemaphorePermit>,
    /// A frame read ahead (to see whether a gRPC call failed before its first message), sent first.
    first: Option<Frame<Bytes>>,
    /// Set for a gRPC call: its deadline replaces the idle bound, and its end is logged with the status.
    call: Option<GrpcCall>,
}

/// What a gRPC call's response body tracks.
#[derive(Debug)]
pub struct GrpcCall {
    /// When `grpc-timeout` runs out; `None` for a call without a deadline (a stream may idle for as long as the
    /// app keeps it open).
    pub deadline: Option<tokio::time::Instant>,
    /// The log line and metrics written when the call ends; taken when done.
    pub end: Option<CallEnd>,
    /// The deadline passed and the ambassador has answered `DEADLINE_EXCEEDED`.
    pub expired: bool,
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
            first: None,
            call: None,
        };
        if body.inner.is_end_stream() {
            body.release_unpolled();
        }
        body
    }

    /// A response body whose connection is driven elsewhere (the multiplexed HTTP/2 connection's task, or an
    /// upgrade connection's): nothing goes back to the pool.
    pub fn detached(inner: Incoming, pool: Arc<Upstreams>, idle: Duration, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            link: None,
            pool,
            idle,
            timer: None,
            armed: false,
            permit: Some(permit),
            first: None,
            call: None,
        }
    }

    /// Makes this the body of a gRPC call.
    pub fn into_grpc(mut self, call: GrpcCall) -> Self {
        self.call = Some(call);
        self
    }

    /// The gRPC call this body belongs to, if any.
    pub fn grpc_mut(&mut self) -> Option<&mut GrpcCall> {
        self.call.as_mut()
    }

    /// Puts back a frame read ahead of the client.
    pub fn unread(&mut self, frame: Frame<Bytes>) {
        self.first = Some(frame);
    }

    /// Ends a gRPC call's bookkeeping with the status found in `trailers` (or what its absence means).
    fn finish_call(&mut self, trailers: Option<&HeaderMap>, fallback: u16) {
        if let Some(end) = self.call.as_mut().and_then(|call| call.end.take()) {
            end.finish(trailers.and_then(grpc::status_of).unwrap_or(fallback));
        }
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
        // The client went away before the call ended: for gRPC that is a cancellation.
        self.finish_call(None, grpc::CANCELLED);
        // A finished body (or one the server never polls, as for HEAD) leaves a reusable connection; an
        // abandoned one does not, and dropping the link closes it.
        if self.inner.is_end_stream() {
            self.release_unpolled();
        }
    }
}

impl UpstreamBody {
    /// Notes a frame on its way to the client: trailers end a gRPC call.
    fn passed(&mut self, frame: Frame<Bytes>) -> Frame<Bytes> {
        if self.call.is_some() && frame.is_trailers() {
            self.finish_call(frame.trailers_ref(), grpc::UNKNOWN);
        }
        frame
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(this.passed(frame))));
        }
        if this.call.as_ref().is_some_and(|call| call.expired) {
            return Poll::Ready(None);
        }
        // Over HTTP/1.1 the body is fed by the connection: both are polled together.
        let polled = match &mut this.link {
            Some(link) => {
                let inner = &mut this.inner;
                match link.drive(cx, |cx| Pin::new(&mut *inner).poll_frame(cx)) {
                    Poll::Ready(Some(polled)) => Poll::Ready(polled),
                    Poll::Ready(None) => {
                        // The connection ended before the body did; hyper fails the body on its next poll.
                        this.link = None;
                        Pin::new(&mut this.inner).poll_frame(cx)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match polled {
            Poll::Ready(None) => {
                this.armed = false;
                this.release(cx);
                // A gRPC response without trailers carries no status: the client sees an error.
                this.finish_call(None, grpc::UNKNOWN);
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                if this.inner.is_end_stream() {
                    this.release(cx);
                }
                return Poll::Ready(Some(Ok(this.passed(frame))));
            }
            Poll::Ready(Some(Err(error))) => {
                this.link = None;
                this.finish_call(None, grpc::UNAVAILABLE);
                return Poll::Ready(Some(Err(error.into())));
            }
            Poll::Pending => {}
        }
        if let Some(call) = &mut this.call {
            // gRPC: no idle bound, only the call's own deadline.
            let Some(deadline) = call.deadline else {
                return Poll::Pending;
            };
            if !this.armed {
                match &mut this.timer {
                    Some(timer) => timer.as_mut().reset(deadline),
                    None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                this.armed = true;
            }
            if this
                .timer
                .as_mut()
                .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
            {
                // What the app's own gRPC library would report; dropping the body cancels the upstream stream.
                call.expired = true;
                this.link = None;
                this.permit = None;
                let trailers = grpc::status_trailers(grpc::DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)");
                this.finish_call(Some(&trailers), grpc::DEADLINE_EXCEEDED);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Pending;
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
        self.first.is_none() && (self.inner.is_end_stream() || self.call.as_ref().is_some_and(|call| call.expired))
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
