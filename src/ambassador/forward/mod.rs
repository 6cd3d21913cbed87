//! Forwarding one request: the [`Forwarder`] reads what the app spoke and picks the route upstream (`Route`),
//! rewrites the head, passes the request through the OAuth2 token, the breaker and the concurrency cap, and logs
//! and counts the answer. The routes live beside it: `http1.rs` (pooled connections, retried as `retry` allows),
//! `http2.rs` (the multiplexed connection, gRPC with `replay`) and `websocket.rs` (a byte relay after the 101).
//! Failures become short answers of the ambassador's own: JSON, or a gRPC status for a gRPC call. Bodies and
//! trailers stream through untouched in both directions.
//!
//! `--upstream-protocol` may force HTTP/1.1 or HTTP/2 for every request instead of the app's protocol.

mod http1;
mod http2;
mod websocket;

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use self::http2::H2Request;
pub use self::websocket::Relays;
use super::access_log::{self, AccessLog, Entry};
use super::auth::Credential;
use super::body::UpstreamBody;
use super::breaker::{Admission, Breaker};
use super::config::{format_duration, Upstream};
use super::grpc::{self, CallEnd};
use super::headers::{
    content_length, strip_hop_by_hop, te_trailers, websocket_upgrade, X_FORWARDED_FOR, X_FORWARDED_PROTO,
};
use super::metrics::{Failure, Metrics, Rejection};
use super::oauth2::OAuth2;
use super::tls::SharedTls;
use super::upstream::{DialError, ExchangeError, InvalidServerName, OutBody, Upstreams};

/// The body the ambassador answers with: the upstream's stream, or a short body of its own.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// Everything the forwarder needs, validated.
#[derive(Debug)]
pub struct Settings {
    /// Where requests go.
    pub upstream: Upstream,
    /// Bound on the wait for the response head (retries included), and on each wait for the next piece of the
    /// response body.
    pub timeout: Duration,
    /// Bound on establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Retries allowed for replayable requests.
    pub retries: u32,
    /// Consecutive failures that open the circuit (0: never).
    pub breaker_failures: u32,
    /// How long an open circuit answers 503 before one trial request.
    pub breaker_cooldown: Duration,
    /// Requests in flight to the upstream past which new ones get a 503.
    pub max_concurrent: usize,
    /// The header added to every request, if any.
    pub credential: Option<Credential>,
    /// OAuth2 client credentials, if any: the `Authorization` header of every request.
    pub oauth2: Option<OAuth2>,
    /// The protocol spoken upstream: the app's (`auto`), or always one.
    pub protocol: UpstreamProtocol,
}

pub use crate::support::protocol::UpstreamProtocol;

/// How one request goes upstream.
enum Route {
    /// A pooled HTTP/1.1 connection.
    Http1,
    /// The multiplexed HTTP/2 connection; `grpc` for a gRPC call, `te_trailers` when the app sent `TE: trailers`
    /// (which gRPC servers require, and which HTTP/2 allows as the one `TE` value).
    Http2 { grpc: bool, te_trailers: bool },
    /// A WebSocket: the `Upgrade` value to send on, and the app's side of the connection once answered 101.
    Upgrade(HeaderValue, hyper::upgrade::OnUpgrade),
}

/// What the forwarder keeps about one client connection.
#[derive(Debug)]
pub struct ClientConn {
    /// The peer's address as an `X-Forwarded-For` entry.
    forwarded_for: HeaderValue,
    /// The timer that bounds the wait for an HTTP/1.1 answer, kept from one request of the connection to the next.
    /// Moving a registered timer's deadline later is one atomic store, where a timer per request is registered
    /// with the runtime's timer wheel and removed again every time (see docs/performance.md).
    upstream_timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl ClientConn {
    /// A connection from `peer`.
    pub fn new(peer: std::net::IpAddr) -> Self {
        Self {
            forwarded_for: super::headers::forwarded_for(peer),
            upstream_timer: Mutex::new(None),
        }
    }

    /// Runs `fut` until `deadline`; `None` when the deadline came first. HTTP/1.1 requests of one connection come
    /// one after another, so they share the timer; should two ever overlap, the second makes its own.
    async fn within<F: Future>(&self, deadline: Instant, fut: F) -> Option<F::Output> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let kept = self.slot().take();
        let mut timer = match kept {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let mut fut = pin!(fut);
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await;
        *self.slot() = Some(timer);
        out
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Pin<Box<Sleep>>>> {
        self.upstream_timer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The proxy's request handler; one per process, shared by every connection.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Arc<Upstreams>,
    upstream: Upstream,
    timeout: Duration,
    retries: u32,
    breaker: Breaker,
    /// One permit per request in flight; a response body holds its permit until it is done.
    in_flight: Arc<Semaphore>,
    max_concurrent: usize,
    credential: Option<Credential>,
    oauth2: Option<OAuth2>,
    protocol: UpstreamProtocol,
    /// The scheme and authority of every HTTP/2 request's target (HTTP/2 sends them as `:scheme` and
    /// `:authority`, where HTTP/1.1 sends `Host`).
    h2_scheme: Scheme,
    h2_authority: Option<Authority>,
    metrics: Arc<Metrics>,
    log: Arc<AccessLog>,
    /// The WebSocket relays open now, which shutdown waits for.
    relays: Relays,
}

/// What happened to one request, for the access log.
struct Outcome {
    retries: u32,
    error: Option<String>,
    /// The request is a gRPC call: the ambassador's own answers take gRPC's form.
    grpc: bool,
    /// The gRPC status already known when the head is sent (a trailers-only answer).
    grpc_status: Option<u16>,
}

impl Forwarder {
    /// Prepares the connection pool once: every request reuses its keep-alive connections.
    pub fn new(
        settings: Settings,
        tls: SharedTls,
        metrics: Arc<Metrics>,
        log: Arc<AccessLog>,
    ) -> Result<Self, InvalidServerName> {
        let upstreams = Upstreams::new(&settings.upstream, tls, settings.connect_timeout)?;
        let breaker = Breaker::new(
            settings.breaker_failures,
            settings.breaker_cooldown,
            metrics.circuit_open.clone(),
            metrics.circuit_opened.clone(),
        );
        let max_concurrent = settings.max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        let h2_scheme = if settings.upstream.is_https() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let h2_authority = Authority::try_from(settings.upstream.host_header().as_bytes()).ok();
        Ok(Self {
            upstreams: Arc::new(upstreams),
            upstream: settings.upstream,
            timeout: settings.timeout,
            retries: settings.retries,
            breaker,
            in_flight: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            h2_scheme,
            h2_authority,
            credential: settings.credential,
            oauth2: settings.oauth2,
            protocol: settings.protocol,
            metrics,
            log,
            relays: Relays::default(),
        })
    }

    /// Proxies one request; never fails and never outlives `--timeout` waiting for the upstream (a gRPC call:
    /// its own deadline). `conn` is what is kept about the client connection it came on.
    pub async fn handle(&self, mut request: Request<Incoming>, conn: &ClientConn) -> Response<ProxyBody> {
        let started = Instant::now();
        let version = request.version();
        let upgrade = websocket_upgrade(&request).map(|value| (value, hyper::upgrade::on(&mut request)));
        let (parts, body) = request.into_parts();
        let http::request::Parts {
            method,
            uri,
            mut headers,
            ..
        } = parts;
        let bytes_in = content_length(&headers);
        let from_h2 = version == Version::HTTP_2;
        let grpc = from_h2 && grpc::is_grpc(&headers);
        let route = match upgrade {
            Some((value, on_upgrade)) => Route::Upgrade(value, on_upgrade),
            None => match self.protocol {
                UpstreamProtocol::Http2 => Route::Http2 {
                    grpc,
                    te_trailers: te_trailers(&headers),
                },
                UpstreamProtocol::Auto if from_h2 => Route::Http2 {
                    grpc,
                    te_trailers: te_trailers(&headers),
                },
                _ => Route::Http1,
            },
        };
        let protocol = match &route {
            Route::Upgrade(..) => access_log::WEBSOCKET,
            _ if grpc => access_log::GRPC,
            _ if from_h2 => access_log::H2,
            _ => access_log::HTTP1,
        };
        let mut outcome = Outcome {
            retries: 0,
            error: None,
            grpc,
            grpc_status: None,
        };
        let mut response = match self.upstream.uri_for(&uri) {
            Ok(target) => {
                self.prepare_headers(&mut headers, &conn.forwarded_for);
                self.guarded(&method, target, headers, body, route, started, conn, &mut outcome)
                    .await
            }
            Err(error) => {
                let message = format!("cannot build upstream URI for {uri}: {error}");
                self.fail(StatusCode::BAD_REQUEST, message, &mut outcome)
            }
        };
        // The answer goes back in the app's own protocol version, whatever the upstream spoke.
        *response.version_mut() = version;
        let elapsed = started.elapsed();
        self.metrics.request(&method, response.status(), elapsed);
        self.metrics.protocol(protocol);
        let status = response.status().as_u16();
        if grpc && outcome.grpc_status.is_none() {
            if let Either::Left(body) = response.body_mut() {
                if let Some(call) = body.grpc_mut() {
                    // The status comes in the trailers: the line is written when they pass.
                    call.end = Some(CallEnd {
                        log: Arc::clone(&self.log),
                        metrics: Arc::clone(&self.metrics),
                        method,
                        path: uri.path().to_owned(),
                        status,
                        upstream_ms: elapsed.as_secs_f64() * 1000.0,
                        bytes_in,
                        retries: outcome.retries,
                    });
                    return response;
                }
            }
        }
        if let Some(status) = outcome.grpc_status {
            self.metrics.grpc_call(status);
        }
        self.log.record(&Entry {
            ts_ms: access_log::now_ms(),
            method: method.as_str(),
            path: uri.path(),
            protocol,
            status: response.status().as_u16(),
            grpc_status: outcome.grpc_status,
            upstream_ms: elapsed.as_secs_f64() * 1000.0,
            bytes_in,
            bytes_out: content_length(response.headers()),
            retries: outcome.retries,
            error: outcome.error.as_deref(),
        });
        response
    }

    /// Passes the request through the circuit breaker and the concurrency cap, then to the upstream.
    #[allow(clippy::too_many_arguments)]
    async fn guarded(
        &self,
        method: &Method,
        target: Uri,
        headers: HeaderMap,
        body: Incoming,
        route: Route,
        started: Instant,
        conn: &ClientConn,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let mut headers = headers;
        if let Some(oauth2) = &self.oauth2 {
            // Before the breaker: a token endpoint outage says nothing about the upstream's health.
            match oauth2.header().await {
                Ok(value) => {
                    headers.insert(header::AUTHORIZATION, value);
                }
                Err(error) => return self.fail(StatusCode::BAD_GATEWAY, error.to_string(), outcome),
            }
        }
        let ticket = match self.breaker.admit(started) {
            Admission::Pass(ticket) => ticket,
            Admission::Refuse { retry_in } => {
                self.metrics.rejection(Rejection::CircuitOpen);
                let failures = self.breaker.threshold();
                let message = if retry_in.is_zero() {
                    format!("circuit open after {failures} consecutive upstream failures; a trial request is in flight")
                } else {
                    format!(
                        "circuit open after {failures} consecutive upstream failures; the next trial request goes through in {}",
                        format_duration(Duration::from_millis(retry_in.as_millis() as u64))
                    )
                };
                let mut response = self.fail(StatusCode::SERVICE_UNAVAILABLE, message, outcome);
                // Whole seconds, rounded up (at least 1): the app's own client may honour it.
                let seconds = (retry_in.as_secs() + u64::from(retry_in.subsec_nanos() > 0)).max(1);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
        };
        // No queue: a request past the cap is refused at once, so a slow upstream cannot pile up memory here.
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            self.metrics.rejection(Rejection::Concurrency);
            let message = format!(
                "{} requests are already in flight to the upstream (--max-concurrent); not queued",
                self.max_concurrent
            );
            return self.fail(StatusCode::SERVICE_UNAVAILABLE, message, outcome);
        };
        match route {
            Route::Http1 => {
                self.forward_http1(method, target, headers, body, started, ticket, permit, conn, outcome)
                    .await
            }
            Route::Http2 { grpc, te_trailers } => {
                let request = H2Request {
                    method,
                    target,
                    headers,
                    body,
                    grpc,
                    te_trailers,
                };
                self.forward_h2(request, started, ticket, permit, outcome).await
            }
            Route::Upgrade(value, on_upgrade) => {
                let request = build_request(method, target, headers, Either::Right(Empty::new()));
                self.upgrade(request, value, on_upgrade, started, ticket, permit, outcome)
                    .await
            }
        }
    }

    fn prepare_headers(&self, headers: &mut HeaderMap, client: &HeaderValue) {
        strip_hop_by_hop(headers);
        headers.insert(header::HOST, self.upstream.host_header().clone());
        // Appending keeps the chain an upstream may already trust; the app is its first entry here. One lookup: the
        // entry either takes the joined chain in place of every prior value, or the client's address.
        match headers.entry(X_FORWARDED_FOR) {
            header::Entry::Occupied(mut prior) => {
                let first = prior.get();
                let mut joined = Vec::with_capacity(first.len() + 2 + client.len());
                joined.extend_from_slice(first.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(client.as_bytes());
                let forwarded_for = HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone());
                prior.insert(forwarded_for);
            }
            header::Entry::Vacant(slot) => {
                slot.insert(client.clone());
            }
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(credential) = &self.credential {
            // `insert` replaces every value the client sent under the same name.
            headers.insert(credential.header().clone(), credential.value());
        }
    }

    fn count_error(&self, error: &ExchangeError) {
        match error {
            ExchangeError::Connect(DialError::Tls { .. }) => self.metrics.failure(Failure::Tls),
            ExchangeError::Connect(_) => self.metrics.failure(Failure::Connect),
            _ => {}
        }
    }

    fn fail(&self, status: StatusCode, message: String, outcome: &mut Outcome) -> Response<ProxyBody> {
        tracing::warn!(upstream = self.upstream.display(), status = status.as_u16(), error = %message, "answering for the upstream");
        if outcome.grpc {
            // In gRPC's own form, so that the app's library reports a status and its message.
            let code = grpc::status_for_http(status);
            let response = grpc::trailers_only(code, &message, Either::Right(Full::new(Bytes::new())));
            outcome.grpc_status = Some(code);
            outcome.error = Some(message);
            return response;
        }
        let body = serde_json::json!({ "error": message, "upstream": self.upstream.display() });
        outcome.error = Some(message);
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

fn build_request(method: &Method, uri: Uri, headers: HeaderMap, body: OutBody) -> Request<OutBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}
