// Over 500 lines: the router, its handlers and the TLS accept loop with its shutdown share the server state and its timers.
//! The HTTPS admission server: an axum router (built apart from serving it, so tests run it in memory) served
//! over rustls by hyper, with header and handshake timeouts, a connection cap and graceful shutdown.

use std::{
    borrow::Cow,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{header, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use http_body_util::BodyExt;
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use kube::core::admission::Operation;
use serde_json::json;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::{
    core::config::Config,
    core::mutate,
    webhook::conn::{self, Activity, Expired, Watched},
    webhook::metrics::{Metrics, ReasonLabels, ReviewLabels},
    webhook::tls::CertStore,
};

/// The largest request body accepted. The apiserver sets no cap of its own; objects reach ~3 MiB and an UPDATE
/// carries two of them.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Bodies larger than this are decoded on the blocking pool so that one huge Pod cannot stall the others.
const BLOCKING_THRESHOLD: usize = 256 * 1024;

/// What the handlers share.
pub struct AppState {
    /// The config in force; swapped whole on reload.
    pub config: ArcSwap<Config>,
    /// The serving certificate, when serving TLS.
    pub certs: Option<Arc<CertStore>>,
    /// False once shutdown begins, so `/readyz` takes the replica out of the Service.
    pub accepting: AtomicBool,
    /// Metrics.
    pub metrics: Metrics,
    /// The namespaces' LimitRanges, when `--limit-ranges` lists them.
    pub limit_ranges: crate::webhook::limitranges::LimitRanges,
}

impl AppState {
    /// State around a config and, when serving TLS, a certificate store.
    pub fn new(config: Config, certs: Option<Arc<CertStore>>) -> Arc<Self> {
        let metrics = Metrics::default();
        if let Some(expiry) = certs.as_ref().and_then(|c| c.not_after()) {
            metrics.cert_expiry.set(expiry);
        }
        Arc::new(AppState {
            config: ArcSwap::from_pointee(config),
            certs,
            accepting: AtomicBool::new(true),
            metrics,
            limit_ranges: Default::default(),
        })
    }
}

/// The router: `POST /mutate`, `GET /healthz`, `GET /readyz`, `GET /metrics`; JSON 404 and 405 otherwise.
///
/// Every handler writes its request's one log line itself, where what the line says is at hand: a review's
/// decision, a rejection's reason, a probe at debug level. (A logging middleware around every route cost ≈ 5 %
/// of a review's CPU, measured side by side.)
pub fn router(state: Arc<AppState>) -> Router {
    webhook_router(state, true)
}

/// The webhook port's router; `/metrics` only with `with_metrics` (off when a separate `--metrics-listen` port
/// serves it, so that a NetworkPolicy can open the webhook port to the apiserver without opening the metrics).
pub fn webhook_router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/mutate", post(review).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed));
    let router = if with_metrics {
        router.route("/metrics", get(metrics).fallback(method_not_allowed))
    } else {
        router
    };
    router.fallback(not_found).with_state(state)
}

/// The metrics port's router (`--metrics-listen`, plain HTTP): `GET /metrics` only.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(state)
}

/// Microseconds since `started`, for log lines.
fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A JSON error answer, and the request's log line saying why.
fn reject(method: &Method, path: &str, started: Instant, status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::warn!(
        %method,
        path,
        status = status.as_u16(),
        error = message.as_str(),
        latency_us = micros(started),
        "rejected"
    );
    (status, axum::Json(json!({"error": message, "code": status.as_u16()}))).into_response()
}

/// A review refused before it could be decided (its body unreadable, too large, not a review).
fn reject_review(started: Instant, status: StatusCode, message: impl Into<String>) -> Response {
    reject(&Method::POST, MUTATE, started, status, message)
}

/// The log line of a probe (`/healthz`, `/readyz`, `/metrics`), at debug level.
fn probe(method: &Method, path: &str, started: Instant, response: Response) -> Response {
    tracing::debug!(%method, path, status = response.status().as_u16(), latency_us = micros(started), "probe");
    response
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = "no such path; admission reviews go to POST /mutate";
    reject(&method, uri.path(), Instant::now(), StatusCode::NOT_FOUND, message)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = "method not allowed on this path";
    reject(
        &method,
        uri.path(),
        Instant::now(),
        StatusCode::METHOD_NOT_ALLOWED,
        message,
    )
}

async fn healthz(method: Method) -> Response {
    probe(&method, "/healthz", Instant::now(), "ok".into_response())
}

async fn readyz(method: Method, State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    // The config is always valid once loaded (a bad reload keeps the old one), so readiness is: serving, and a
    // certificate is loaded when serving TLS.
    let ready = state.accepting.load(Ordering::Relaxed) && state.certs.as_ref().is_none_or(|c| c.not_after().is_some());
    let response = if ready {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    };
    probe(&method, "/readyz", started, response)
}

async fn metrics(method: Method, State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    let response = (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response();
    probe(&method, "/metrics", started, response)
}

/// The path reviews are posted to.
const MUTATE: &str = "/mutate";

async fn review(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP) {
        return too_large(started);
    }
    let body = match read_body(request.into_body()).await {
        Ok(Some(body)) => body,
        Ok(None) => return too_large(started),
        Err(e) => {
            let message = format!("cannot read the body: {e}");
            return reject_review(started, StatusCode::BAD_REQUEST, message);
        }
    };
    let response = if body.len() > BLOCKING_THRESHOLD {
        let state = state.clone();
        match tokio::task::spawn_blocking(move || answer(&state, &body, started)).await {
            Ok(response) => response,
            Err(_) => reject_review(started, StatusCode::INTERNAL_SERVER_ERROR, "review task failed"),
        }
    } else {
        answer(&state, &body, started)
    };
    state.metrics.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// A body over [`MAX_BODY`] is still read (and dropped) up to this size, so that the client, still sending,
/// receives the 413 instead of a connection reset.
const DRAIN_CAP: usize = 4 * MAX_BODY;

/// Reads the body: `Some` when it fits in [`MAX_BODY`], `None` when it is larger (the rest drained). A body that
/// arrives in one chunk (a typical review does) is handed on as it is, without a copy.
async fn read_body(mut body: axum::body::Body) -> Result<Option<Bytes>, axum::Error> {
    // Invariant: `first` is only set while `buf` is empty.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        seen += data.len();
        if seen > DRAIN_CAP {
            return Ok(None);
        }
        if seen > MAX_BODY {
            continue;
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    buf.reserve(earlier.len() + data.len());
                    buf.extend_from_slice(&earlier);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok((seen <= MAX_BODY).then(|| first.unwrap_or_else(|| buf.freeze())))
}

fn too_large(started: Instant) -> Response {
    let message = format!("body is larger than {} MiB", MAX_BODY / (1024 * 1024));
    let mut response = reject_review(started, StatusCode::PAYLOAD_TOO_LARGE, message);
    response
        .headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

/// Decodes, mutates and encodes one review: the whole synchronous path, and its log line.
fn answer(state: &AppState, body: &Bytes, started: Instant) -> Response {
    let config = state.config.load();
    let review = match crate::admission::decode(body, &config) {
        Ok(review) => review,
        Err(e) => {
            state
                .metrics
                .reviews
                .get_or_create(&labels("", "", "bad-request"))
                .inc();
            return reject_review(started, StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let request = &review.request;
    let mut outcome = mutate::mutate(request, &config);
    if let Some(message) = request
        .namespace
        .as_deref()
        .and_then(|namespace| state.limit_ranges.refusal(namespace, &outcome))
    {
        outcome = mutate::Outcome {
            reason: mutate::Reason::LimitRange,
            ..mutate::Outcome::deny(message, std::mem::take(&mut outcome.warnings))
        };
    }
    let (decision, out) = crate::admission::answer(&review, &mut outcome);
    let warning_count = out.response.warnings.len();
    let decision = decision.as_str();
    let operation = operation_name(&request.operation);
    let m = &state.metrics;
    m.reviews
        .get_or_create(&labels(&request.kind.kind, operation, decision))
        .inc();
    for &pattern in &outcome.injected {
        m.injection(pattern);
    }
    let reason = ReasonLabels {
        reason: outcome.reason.as_str(),
    };
    match decision {
        "denied" => m.denials.get_or_create(&reason).inc(),
        "allowed" => m.skips.get_or_create(&reason).inc(),
        _ => 0,
    };
    tracing::debug!(uid = %request.uid, patch = %serde_json::to_string(&outcome.patch).unwrap_or_default(), "patch");
    let body = out.to_vec();
    let http = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    let generate_name;
    let name = match (request.name.as_str(), outcome.generate_name.as_deref()) {
        ("", Some(g)) => {
            generate_name = format!("{g}*");
            generate_name.as_str()
        }
        (name, _) => name,
    };
    // Here, where the request is at hand: nothing is copied for the line.
    tracing::info!(
        // `&str` fields are recorded as they are; `%` would format each through `Display` first.
        uid = request.uid.as_str(),
        kind = request.kind.kind.as_str(),
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name,
        operation,
        dry_run = request.dry_run.unwrap_or(false),
        decision,
        reason = outcome.reason.as_str(),
        patch_ops = outcome.patch.0.len(),
        warnings = warning_count,
        status = http.status().as_u16(),
        latency_us = micros(started),
        "review"
    );
    http
}

/// The operation as the apiserver spells it, without formatting and upper-casing on every review.
fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn labels(kind: &str, operation: &'static str, decision: &'static str) -> ReviewLabels {
    // The kinds entourage handles are labelled without allocating; any other is copied.
    let kind = match kind {
        "Pod" => Cow::Borrowed("Pod"),
        "Job" => Cow::Borrowed("Job"),
        "CronJob" => Cow::Borrowed("CronJob"),
        other => Cow::Owned(other.to_string()),
    };
    ReviewLabels {
        kind,
        operation,
        decision,
    }
}

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
pub fn shutdown_signal() -> impl Future<Output = ()> {
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
