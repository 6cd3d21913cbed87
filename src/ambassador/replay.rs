//! The request body of an HTTP/2 call, recorded so that a gRPC call can be sent again.
//!
//! A gRPC call is a POST with a body, so the ambassador's retry rule for body-less idempotent requests never
//! applies to it. gRPC's own rule does: a call that failed with `UNAVAILABLE` before the server sent any message
//! was not processed and may be retried. To send it again the ambassador needs the request messages, which have
//! already streamed upstream; so while they pass, the first [`RECORD_LIMIT`] bytes are kept. A call whose
//! request outgrows that (a long client stream) stops being recorded and is never retried, which bounds the
//! memory a call can pin. Each attempt reads the recording first and then the app's stream where it left off;
//! attempts never overlap (the previous one is dropped before the next starts).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Request bytes recorded per call at most; a unary call's message is usually far smaller.
pub const RECORD_LIMIT: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Recording {
    /// The app's body, until it has ended.
    source: Option<Incoming>,
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    bytes: usize,
    /// The app's body has ended: the recording (if not `overflowed`) is the whole request.
    ended: bool,
    /// More than [`RECORD_LIMIT`] passed, or the app's body failed: the call cannot be replayed.
    overflowed: bool,
}

/// A call's request body as recorded so far; shared by its attempts.
#[derive(Debug, Clone, Default)]
pub struct Replay(Option<Arc<Mutex<Recording>>>);

impl Replay {
    /// Records `body` as it is read.
    pub fn record(body: Incoming) -> Self {
        Self(Some(Arc::new(Mutex::new(Recording {
            source: Some(body),
            ..Recording::default()
        }))))
    }

    fn lock(&self) -> Option<MutexGuard<'_, Recording>> {
        self.0
            .as_ref()
            .map(|shared| shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Whether another attempt could send the same request again from the start.
    pub fn replayable(&self) -> bool {
        self.lock().is_some_and(|r| !r.overflowed)
    }

    /// Whether the app has sent its whole request (and it was recorded).
    pub fn complete(&self) -> bool {
        self.lock().is_some_and(|r| r.ended && !r.overflowed)
    }

    /// A body for the next attempt, starting from the first byte.
    pub fn attempt(&self) -> ReplayBody {
        ReplayBody {
            inner: Inner::Replay {
                shared: self.clone(),
                next: 0,
                trailers_sent: false,
            },
        }
    }
}

/// The body sent upstream over HTTP/2: the app's stream as is, or an attempt of a recorded call.
#[derive(Debug)]
pub struct ReplayBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Direct(Incoming),
    Replay {
        shared: Replay,
        /// The next recorded piece this attempt sends.
        next: usize,
        trailers_sent: bool,
    },
}

impl ReplayBody {
    /// The app's body, not recorded (a call that is never retried).
    pub fn direct(body: Incoming) -> Self {
        Self {
            inner: Inner::Direct(body),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let (shared, next, trailers_sent) = match &mut this.inner {
            Inner::Direct(body) => return Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::Replay {
                shared,
                next,
                trailers_sent,
            } => (shared, next, trailers_sent),
        };
        let Some(mut rec) = shared.lock() else {
            return Poll::Ready(None);
        };
        if let Some(piece) = rec.data.get(*next) {
            *next += 1;
            return Poll::Ready(Some(Ok(Frame::data(piece.clone()))));
        }
        if rec.ended {
            if *trailers_sent {
                return Poll::Ready(None);
            }
            *trailers_sent = true;
            return Poll::Ready(rec.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let Some(source) = rec.source.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                rec.ended = true;
                rec.source = None;
                *trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                rec.overflowed = true;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !rec.overflowed && rec.bytes + data.len() <= RECORD_LIMIT {
                        rec.bytes += data.len();
                        rec.data.push(data.clone());
                        // This attempt is the one reading the app: it is at the end of the recording.
                        *next = rec.data.len();
                    } else {
                        rec.overflowed = true;
                        // Nothing may be replayed any more; give the memory back.
                        rec.data = Vec::new();
                        *next = 0;
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    rec.trailers = Some(trailers.clone());
                    rec.ended = true;
                    rec.source = None;
                    *trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Direct(body) => body.is_end_stream(),
            Inner::Replay {
                shared,
                next,
                trailers_sent,
            } => shared.lock().is_none_or(|rec| match &rec.source {
                Some(source) => rec.data.len() <= *next && source.is_end_stream(),
                None => rec.ended && rec.data.len() <= *next && (*trailers_sent || rec.trailers.is_none()),
            }),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Direct(body) => body.size_hint(),
            Inner::Replay { .. } => SizeHint::default(),
        }
    }
}
