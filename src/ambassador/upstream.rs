//! Connections to the upstream: dialled (TCP, then TLS for `https://`), kept in a pool, and driven by the very
//! task that serves the client rather than by a task of their own.
//!
//! A general-purpose client spawns one task per connection and passes every request and response between tasks.
//! An ambassador does nothing but relay, so here the upstream connection is polled by the request future until
//! the response head arrives and then by the response body while it streams; once the body is done the
//! connection goes back to the pool. That saves a cross-task hand-off (and a pool lookup by key) on every request.
//!
//! HTTP/2 requests (the app's h2c, gRPC) go over one multiplexed connection per upstream instead ([`H2Upstream`]):
//! h2c with prior knowledge to an `http://` upstream, ALPN `h2` to an `https://` one. Its streams belong to many
//! requests at once, so that connection is driven by a task of its own. A WebSocket upgrade gets a fresh HTTP/1.1
//! connection that is never pooled ([`Upstreams::upgrade`]): after the 101 it is a byte pipe owned by the relay.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::config::{format_duration, Upstream};
use super::drive::Wakers;
use super::replay::ReplayBody;
use super::tls::SharedTls;

/// The body sent upstream: the client's stream, or nothing when the request is replayable.
pub type OutBody = Either<Incoming, Empty<Bytes>>;

/// Any byte stream an upstream connection can run over (plain TCP or TLS).
pub(super) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Conn = http1::Connection<TokioIo<Box<dyn Stream>>, OutBody>;

/// Idle connections kept for reuse; more than the app's concurrency is never useful.
const MAX_IDLE: usize = 512;
/// Idle connections older than this are closed rather than reused, ahead of common server keep-alive limits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// A connection checked in less than this long ago is taken without polling it first: it was polled (and found
/// idle and open) when it came back. Under load that is nearly every request, and the poll is a full turn of
/// hyper's connection state machine. A close that arrived meanwhile is still noticed before the request leaves:
/// hyper reads before it writes, and hands back a request it did not send, which goes to the next connection.
const FRESH: Duration = Duration::from_millis(100);

/// Why no connection to the upstream could be made. Every variant counts as a connect error (retryable).
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// DNS did not answer.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The upstream host.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// DNS answered with nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
    /// The TCP connection was refused or failed.
    #[error("tcp connect to {addr} failed: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// TCP and TLS set-up took longer than `--connect-timeout`.
    #[error("connecting to {target} took longer than {limit}")]
    Timeout {
        /// `host:port`.
        target: String,
        /// The connect timeout.
        limit: String,
    },
    /// The TLS handshake failed, typically an untrusted or mismatched certificate.
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        /// The name verified.
        host: String,
        /// What rustls said.
        source: std::io::Error,
    },
    /// hyper could not start HTTP/1.1 or HTTP/2 on the connection.
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
}

/// The upstream host cannot be checked against a certificate.
#[derive(Debug, thiserror::Error)]
#[error("upstream host {0:?} is neither a DNS name nor an IP address a certificate could name")]
pub struct InvalidServerName(pub String);

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] DialError),
    /// The connection broke or the upstream answered with something that is not HTTP.
    #[error("{0}")]
    Request(hyper::Error),
    /// The connection ended before the response head arrived.
    #[error("the upstream closed the connection before answering")]
    Closed,
}

/// An upstream connection: the request sender and the connection state machine that must be polled.
pub struct Link {
    sender: http1::SendRequest<OutBody>,
    conn: Pin<Box<Conn>>,
    /// The connection future has completed (closed or failed); it must not be polled again.
    done: bool,
    idle_since: Instant,
    /// The TLS generation it was dialled under; an older one is not reused after a reload.
    generation: u64,
    /// What the connection and what is read from it are polled with.
    wakers: Wakers,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("done", &self.done).finish_non_exhaustive()
    }
}

impl Link {
    /// Lets the connection read and write; `Ready` means it has ended.
    pub(super) fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        match self.wakers.poll_conn(cx, &mut self.conn) {
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection ended");
                }
                self.done = true;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Polls `read`, something the connection feeds (the response body), together with the connection; see
    /// [`Wakers`]. `Ready(None)` when the connection has ended and `read` could not finish.
    pub(super) fn drive<T>(
        &mut self,
        cx: &Context<'_>,
        read: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<Option<T>> {
        self.wakers.drive(cx, &mut self.conn, &mut self.done, read)
    }

    fn reusable(&self) -> bool {
        !self.done && !self.sender.is_closed()
    }

    /// Lets the connection finish the exchange; true when it is idle and could take the next request. A
    /// connection still writing a request body the upstream did not wait for is not, and must be closed.
    fn settle(&mut self, cx: &mut Context<'_>) -> bool {
        self.poll_conn(cx).is_pending() && self.reusable() && self.sender.is_ready()
    }
}

/// Drives `fut` and the connection together; `None` when the connection ended and `fut` could not finish.
async fn drive<F: Future>(wakers: &Wakers, conn: &mut Pin<Box<Conn>>, done: &mut bool, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| wakers.drive(cx, conn, done, |cx| fut.as_mut().poll(cx))).await
}

/// Dials new connections to the upstream.
struct Dialer {
    host: String,
    port: u16,
    tls: Option<(SharedTls, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Dialer {
    /// The TLS generation new connections are dialled under (0 for plain HTTP).
    fn generation(&self) -> u64 {
        self.tls.as_ref().map_or(0, |(tls, _)| tls.load().generation)
    }

    async fn dial(&self) -> Result<Link, DialError> {
        let (stream, generation) = self.stream(false).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(DialError::Handshake)?;
        Ok(Link {
            sender,
            conn: Box::pin(conn),
            done: false,
            idle_since: Instant::now(),
            generation,
            wakers: Wakers::new(),
        })
    }

    /// A byte stream to the upstream (TCP, then TLS offering `h2` or `http/1.1` by ALPN), within
    /// `--connect-timeout`, and the TLS generation it was made under.
    pub(super) async fn stream(&self, h2: bool) -> Result<(Box<dyn Stream>, u64), DialError> {
        match tokio::time::timeout(self.connect_timeout, self.stream_unbounded(h2)).await {
            Ok(result) => result,
            Err(_) => Err(DialError::Timeout {
                target: format!("{}:{}", self.host, self.port),
                limit: format_duration(self.connect_timeout),
            }),
        }
    }

    async fn stream_unbounded(&self, h2: bool) -> Result<(Box<dyn Stream>, u64), DialError> {
        let tcp = self.connect_tcp().await?;
        // Small request heads must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        Ok(match &self.tls {
            Some((tls, name)) => {
                let state = tls.load_full();
                let connector = if h2 { &state.h2_connector } else { &state.connector };
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| DialError::Tls {
                        host: self.host.clone(),
                        source,
                    })?;
                (Box::new(tls), state.generation)
            }
            None => (Box::new(tcp), 0),
        })
    }

    async fn connect_tcp(&self) -> Result<TcpStream, DialError> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|source| DialError::Resolve {
                    host: self.host.clone(),
                    source,
                })?
                .collect(),
        };
        let mut last = DialError::NoAddress(self.host.clone());
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(source) => last = DialError::Connect { addr, source },
            }
        }
        Err(last)
    }
}

/// Pooled keep-alive connections to one upstream.
#[derive(Debug)]
pub struct Upstreams {
    dialer: Dialer,
    idle: Mutex<VecDeque<Link>>,
    h2: H2Upstream,
}

impl Upstreams {
    /// Prepares dialling; `tls` is used only for an `https://` upstream.
    pub fn new(upstream: &Upstream, tls: SharedTls, connect_timeout: Duration) -> Result<Self, InvalidServerName> {
        let host = upstream.host().to_owned();
        let tls = if upstream.is_https() {
            let name = ServerName::try_from(host.clone()).map_err(|_| InvalidServerName(host.clone()))?;
            Some((tls, name))
        } else {
            None
        };
        Ok(Self {
            dialer: Dialer {
                host,
                port: upstream.port(),
                tls,
                connect_timeout,
            },
            idle: Mutex::new(VecDeque::new()),
            h2: H2Upstream::default(),
        })
    }

    /// Sends one request over the upstream's multiplexed HTTP/2 connection, dialled on first use and again
    /// whenever the last one has closed (or was made before a TLS reload). The response body is fed by that
    /// connection's own task.
    pub async fn exchange_h2(&self, request: Request<ReplayBody>) -> Result<Response<Incoming>, ExchangeError> {
        let mut request = request;
        loop {
            let (mut sender, fresh) = self.h2.sender(&self.dialer).await?;
            let failure = match std::future::poll_fn(|cx| sender.poll_ready(cx)).await {
                Ok(()) => match sender.try_send_request(request).await {
                    Ok(response) => return Ok(response),
                    Err(mut error) => match error.take_message() {
                        Some(unsent) => {
                            request = unsent;
                            ExchangeError::Request(error.into_error())
                        }
                        None => return Err(ExchangeError::Request(error.into_error())),
                    },
                },
                Err(error) => ExchangeError::Request(error),
            };
            // A connection that closed (GOAWAY, idle timeout) before this request left: dial once more.
            self.h2.forget(&sender);
            if fresh {
                return Err(failure);
            }
        }
    }

    /// Sends an HTTP/1.1 upgrade request (WebSocket) on a connection of its own, which hyper hands over as a byte
    /// stream once the upstream answers 101.
    pub async fn upgrade(&self, request: Request<OutBody>) -> Result<Response<Incoming>, ExchangeError> {
        let (stream, _) = self.dialer.stream(false).await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ExchangeError::Connect(DialError::Handshake(error)))?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended");
            }
        });
        sender.send_request(request).await.map_err(ExchangeError::Request)
    }

    /// Sends one request on a live pooled connection or a new one. The connection comes back with the response:
    /// whoever reads the response body must keep driving it (see [`UpstreamBody`](super::body::UpstreamBody)).
    pub async fn exchange(&self, mut request: Request<OutBody>) -> Result<(Response<Incoming>, Link), ExchangeError> {
        loop {
            let (mut link, reused) = match std::future::poll_fn(|cx| Poll::Ready(self.checkout(cx))).await {
                Some(link) => (link, true),
                // Boxed: dialling is rare once the pool is warm, and its future (TCP and TLS set-up, ~1.3 KB) would
                // otherwise make every request's future that much larger to create and move.
                None => (Box::pin(self.dialer.dial()).await?, false),
            };
            // A pooled connection is nearly always ready at once; only one that is not is driven until it is.
            let ready = if link.sender.is_ready() {
                Some(Ok(()))
            } else {
                drive(&link.wakers, &mut link.conn, &mut link.done, link.sender.ready()).await
            };
            let failure = match ready {
                Some(Ok(())) => {
                    // Handing the request over wakes the connection, which the drive below polls next anyway.
                    let sender = &mut link.sender;
                    let mut sent = pin!(link.wakers.quietly(|| sender.try_send_request(request)));
                    let mut error = match drive(&link.wakers, &mut link.conn, &mut link.done, sent.as_mut()).await {
                        Some(Ok(response)) => return Ok((response, link)),
                        Some(Err(error)) => error,
                        // The connection ended (the upstream had closed it) with the request still queued: dropping
                        // the connection hands the request back unsent, to go to the next one.
                        None => {
                            drop(link);
                            match sent.await {
                                Ok(_) => return Err(ExchangeError::Closed),
                                Err(error) => error,
                            }
                        }
                    };
                    match error.take_message() {
                        Some(unsent) => {
                            request = unsent;
                            ExchangeError::Request(error.into_error())
                        }
                        None => return Err(ExchangeError::Request(error.into_error())),
                    }
                }
                Some(Err(error)) => ExchangeError::Request(error),
                None => ExchangeError::Closed,
            };
            // A pooled connection the upstream closed while idle: the request never left, so try the next one.
            if !reused {
                return Err(failure);
            }
        }
    }

    /// Takes the most recently used connection that is still open.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<Link> {
        let now = Instant::now();
        loop {
            let mut link = {
                let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                while idle
                    .front()
                    .is_some_and(|l| now.saturating_duration_since(l.idle_since) > IDLE_TIMEOUT)
                {
                    idle.pop_front();
                }
                idle.pop_back()?
            };
            if link.generation != self.dialer.generation() {
                continue;
            }
            if now.saturating_duration_since(link.idle_since) < FRESH {
                if link.reusable() {
                    return Some(link);
                }
                continue;
            }
            // Polling a connection idle for longer notices a close the upstream sent while nobody was looking.
            if link.poll_conn(cx).is_pending() && link.reusable() {
                return Some(link);
            }
        }
    }

    /// Returns a connection whose response has been read in full; one that cannot take another request is closed.
    pub(super) fn checkin(&self, mut link: Link, cx: &mut Context<'_>) {
        if !link.settle(cx) || link.generation != self.dialer.generation() {
            return;
        }
        link.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push_back(link);
        }
    }
}

/// The one multiplexed HTTP/2 connection to the upstream.
#[derive(Debug, Default)]
struct H2Upstream {
    /// The live connection's sender and the TLS generation it was dialled under.
    current: Mutex<Option<(http2::SendRequest<ReplayBody>, u64)>>,
    /// Held while dialling, so that a burst of first requests makes one connection, not one each.
    dialling: tokio::sync::Mutex<()>,
}

impl H2Upstream {
    fn live(&self, generation: u64) -> Option<http2::SendRequest<ReplayBody>> {
        let current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*current {
            Some((sender, made_under)) if !sender.is_closed() && *made_under == generation => Some(sender.clone()),
            _ => None,
        }
    }

    /// The live connection's sender, or a new connection's; `true` when it was dialled for this request.
    async fn sender(&self, dialer: &Dialer) -> Result<(http2::SendRequest<ReplayBody>, bool), DialError> {
        if let Some(sender) = self.live(dialer.generation()) {
            return Ok((sender, false));
        }
        let _dialling = self.dialling.lock().await;
        if let Some(sender) = self.live(dialer.generation()) {
            return Ok((sender, false));
        }
        let (stream, generation) = Box::pin(dialer.stream(true)).await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            // Pings notice an upstream that vanished without closing, which a long gRPC stream would wait on.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let (sender, conn) = builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(DialError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "upstream HTTP/2 connection ended");
            }
        });
        *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((sender.clone(), generation));
        Ok((sender, true))
    }

    /// Drops the connection `used` if it is still the current one (it failed to take a request).
    fn forget(&self, used: &http2::SendRequest<ReplayBody>) {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if used.is_closed() && current.as_ref().is_some_and(|(sender, _)| sender.is_closed()) {
            *current = None;
        }
    }
}
