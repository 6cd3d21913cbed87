//! Serving the router over TLS: the accept loop (rustls, then hyper's HTTP/1.1 or h2 by ALPN), with the
//! handshake, header and idle timeouts, a connection cap, and the graceful drain at shutdown.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{http::header, Router};
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::webhook::{
    conn::{self, Activity, Expired, Watched},
    server::AppState,
};

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time a client has to send a request's headers, from the connection's opening or the request's first byte.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may stay idle between requests: longer than the apiserver keeps its idle
    /// connections (90 s), so that the client always closes first (see [`crate::webhook::conn`]).
    pub idle_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// In-flight requests get this long to finish after a shutdown signal.
    pub grace_period: Duration,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then drains in-flight requests.
///
/// At shutdown, idle connections are closed at once, and each in-flight request is answered with
/// `Connection: close`, so the client opens its next connection elsewhere (to the new replica, in an upgrade).
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    state: Arc<AppState>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    // The protocol comes from ALPN, never from sniffing the first bytes: hyper-util's sniffing has no timeout, so
    // a client silent after the handshake held its connection (and a --max-connections slot) for ever. HTTP/1.1
    // unless the client negotiated h2 (the apiserver forces http/1.1), each served by hyper's own builder: the
    // `auto` wrapper's extra layer of buffering cost ≈ 3 % of a review's CPU (`make bench`). hyper's own header
    // timeout is off: it also ran on idle connections; `conn` keeps the two deadlines apart.
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    let (h1, h2) = (Arc::new(h1), Arc::new(h2));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = options.max_connections, "connection refused: too many connections");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (h1, h2) = (h1.clone(), h2.clone());
        let service = service.clone();
        let stopping = stopping.clone();
        let state = state.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return log_handshake_failure(peer, &e.to_string()),
                Err(_) => return log_handshake_failure(peer, "handshake timed out"),
            };
            let result = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_h2(&h2, tls, service, peer, options.header_timeout, stopping).await
            } else {
                serve_h1(&h1, tls, service, peer, &options, state, stopping).await
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    state.accepting.store(false, Ordering::Relaxed);
    drop(listener);
    tracing::info!(
        grace_period_s = options.grace_period.as_secs_f64(),
        "shutting down: draining in-flight requests"
    );
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all slots free means all connections are closed.
    let all = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.grace_period, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
type Service = TowerToHyperService<Router>;

/// Serves one HTTP/1.1 connection with the header and idle deadlines of [`crate::webhook::conn`].
async fn serve_h1(
    h1: &http1::Builder,
    tls: Tls,
    service: Service,
    peer: SocketAddr,
    options: &ServeOptions,
    state: Arc<AppState>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    let activity = Activity::new();
    let marked = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            activity.busy();
            let call = hyper::service::Service::call(&service, request);
            let (activity, state) = (activity.clone(), state.clone());
            async move {
                let mut response = call.await?;
                if !state.accepting.load(Ordering::Relaxed) {
                    // Shutting down: this connection closes after this answer; the client must not reuse it.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                }
                activity.idle();
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let conn = h1.serve_connection(TokioIo::new(Watched::new(tls, activity.clone())), marked);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        why = conn::expired(&activity, options.header_timeout, options.idle_timeout) => match why {
            // Idle: closed the way hyper closes any idle connection (with TLS close_notify); a request that
            // arrived meanwhile is answered first.
            Expired::Idle => {
                tracing::debug!(%peer, idle_timeout_s = options.idle_timeout.as_secs_f64(), "idle connection closed");
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            Expired::Header => {
                tracing::info!(%peer, "connection closed: no request headers within the header timeout");
                Ok(())
            }
        },
        _ = stopped(&mut stopping) => {
            // A request whose first bytes have arrived is let in and answered (with `Connection: close`); hyper
            // would close the connection under it, since it still counts as idle until the head is read.
            let deadline = tokio::time::Instant::now() + options.header_timeout;
            while activity.reading_head() && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    result = conn.as_mut() => return result,
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                }
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Serves one h2 connection; one that never sends a request is closed after the header timeout.
async fn serve_h2(
    h2: &http2::Builder<TokioExecutor>,
    tls: Tls,
    service: Service,
    peer: SocketAddr,
    header_timeout: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    let asked = Arc::new(AtomicBool::new(false));
    let marked = {
        let asked = asked.clone();
        hyper::service::service_fn(move |request| {
            asked.store(true, Ordering::Relaxed);
            hyper::service::Service::call(&service, request)
        })
    };
    let conn = h2.serve_connection(TokioIo::new(tls), marked);
    tokio::pin!(conn);
    // hyper has no deadline for an h2 client that never sends a request. Without one, silent h2 clients would
    // hold --max-connections slots for ever.
    tokio::select! {
        result = conn.as_mut() => result,
        _ = silent_for(header_timeout, &asked) => {
            tracing::info!(%peer, "h2 connection closed: no request within the header timeout");
            Ok(())
        }
        _ = stopped(&mut stopping) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Resolves once shutdown has begun (or the server is gone).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Resolves after `timeout` unless a request has been seen by then (then never).
async fn silent_for(timeout: Duration, asked: &AtomicBool) {
    tokio::time::sleep(timeout).await;
    if asked.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

fn log_handshake_failure(peer: SocketAddr, error: &str) {
    tracing::info!(%peer, error, "TLS handshake failed");
}

/// Resolves on SIGTERM or SIGINT, logging which (see [`crate::support::shutdown`]); if the handlers cannot be
/// installed, it logs why and never resolves (stop with SIGKILL).
pub fn logged_shutdown_signal() -> impl Future<Output = ()> {
    let signal = crate::support::shutdown::shutdown_signal();
    async move {
        match signal {
            Ok(signal) => {
                let name = signal.await;
                tracing::info!(signal = name, "shutdown requested");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
                std::future::pending::<()>().await
            }
        }
    }
}
