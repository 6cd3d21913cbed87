//! One connection's two deadlines: the header timeout (a request's headers must arrive soon after its first
//! byte, or after the connection opens) and the idle timeout (how long a kept-alive connection may sit between
//! requests).
//!
//! hyper has only the first, and it also runs while a connection is idle, so it closed kept-alive connections
//! after 10 s. The apiserver's client keeps idle connections for 90 s and reuses them; when a server closes one
//! just as the client sends a POST on it, the request fails with `EOF`, Go does not retry a POST, and with
//! `failurePolicy: Fail` the user's Pod is refused. So the idle timeout is longer than the client's: the client
//! is always the side that closes an idle connection.
//!
//! [`Watched`] notes, below hyper, when the first byte of a request arrives; [`Activity::busy`] and
//! [`Activity::idle`] are called around each request by the service; [`expired`] resolves when the deadline of the
//! state the connection is in has passed.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// Just opened, nothing received: the first request's headers are due.
const NEW: u8 = 3;
/// Bytes of a request have arrived, its headers are not complete.
const HEAD: u8 = 0;
/// A request is being answered.
const BUSY: u8 = 1;
/// Kept alive between requests, nothing received.
const IDLE: u8 = 2;

/// What a connection is doing, and since when (milliseconds after it was opened).
pub struct Activity {
    opened: Instant,
    state: AtomicU8,
    since_ms: AtomicU64,
}

impl Activity {
    /// A connection just opened: its first request's headers are due within the header timeout.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            state: AtomicU8::new(NEW),
            since_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, state: u8) {
        // `since` first: a reader that sees the new state sees a time at least as recent.
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }

    /// A request's headers have been read: no deadline of ours while it is answered.
    pub fn busy(&self) {
        self.set(BUSY);
    }

    /// The response has been produced: the connection is idle until the next request's first byte.
    pub fn idle(&self) {
        self.set(IDLE);
    }

    /// Bytes arrived: on an idle connection they are the next request's, whose headers are now due.
    fn received(&self) {
        match self.state.load(Ordering::Relaxed) {
            IDLE => self.set(HEAD),
            // A new connection keeps its deadline, counted from its opening.
            NEW => self.state.store(HEAD, Ordering::Release),
            _ => {}
        }
    }

    /// Whether part of a request has arrived but not its whole head. hyper still counts such a connection as
    /// idle, and would close it at shutdown with the request unanswered.
    pub fn reading_head(&self) -> bool {
        self.state.load(Ordering::Acquire) == HEAD
    }
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request headers within the header timeout.
    Header,
    /// Idle for the idle timeout.
    Idle,
}

/// Resolves when the connection has been in one state past that state's deadline; never while it is busy.
pub async fn expired(activity: &Activity, header_timeout: Duration, idle_timeout: Duration) -> Expired {
    loop {
        let state = activity.state.load(Ordering::Acquire);
        let since = activity.since_ms.load(Ordering::Relaxed);
        let (limit, why) = match state {
            NEW | HEAD => (header_timeout, Expired::Header),
            IDLE => (idle_timeout, Expired::Idle),
            // Busy: the request's own time is bounded elsewhere (the grace period at shutdown); look again later,
            // counted from now (a deadline counted from `since` would be past, and the loop would spin).
            _ => {
                tokio::time::sleep(header_timeout).await;
                continue;
            }
        };
        let due = activity.opened + Duration::from_millis(since) + limit;
        tokio::time::sleep_until(due).await;
        let unchanged =
            activity.state.load(Ordering::Acquire) == state && activity.since_ms.load(Ordering::Relaxed) == since;
        if unchanged {
            return why;
        }
    }
}

/// The connection's stream, noting when bytes arrive.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// Wraps `inner`, reporting to `activity`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout_not_the_header_timeout() {
        let a = Activity::new();
        a.busy();
        a.idle();
        let started = Instant::now();
        let why = expired(&a, Duration::from_secs(10), Duration::from_secs(120)).await;
        assert_eq!(why, Expired::Idle);
        assert_eq!(started.elapsed().as_secs(), 120);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_without_a_request_expires_after_the_header_timeout() {
        let a = Activity::new();
        let why = expired(&a, Duration::from_secs(10), Duration::from_secs(120)).await;
        assert_eq!(why, Expired::Header);
        assert_eq!(a.opened.elapsed().as_secs(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_the_next_request_starts_the_header_timeout() {
        let a = Activity::new();
        a.busy();
        a.idle();
        tokio::time::sleep(Duration::from_secs(100)).await;
        a.received();
        let why = expired(&a, Duration::from_secs(10), Duration::from_secs(120)).await;
        assert_eq!(why, Expired::Header);
        assert_eq!(a.opened.elapsed().as_secs(), 110);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_of_a_new_connection_is_due_within_the_header_timeout_of_its_opening() {
        let a = Activity::new();
        tokio::time::sleep(Duration::from_secs(4)).await;
        a.received();
        assert!(a.reading_head());
        let why = expired(&a, Duration::from_secs(10), Duration::from_secs(120)).await;
        assert_eq!(why, Expired::Header);
        assert_eq!(a.opened.elapsed().as_secs(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_expires() {
        let a = Activity::new();
        a.busy();
        let result = tokio::time::timeout(
            Duration::from_secs(1000),
            expired(&a, Duration::from_secs(10), Duration::from_secs(120)),
        )
        .await;
        assert!(result.is_err(), "expired while busy");
    }
}
