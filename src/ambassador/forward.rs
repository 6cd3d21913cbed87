//! Forwarding one request: rewrite the head, send it through the pooled client, retry what is safe to retry,
//! and turn failures into short JSON answers (gRPC status answers for a gRPC call). Bodies and trailers stream
//! through untouched in both directions.
//!
//! One file for now, because retries, the breaker and the error answers are shared by every protocol and a split
//! by protocol would cut through them; it is due to be split (per protocol, beside a shared retry/answer module)
//! with the rest of the code-layout work.
//!
//! The upstream protocol follows the app's ([`Route`]): an HTTP/1.1 request goes over a pooled HTTP/1.1
//! connection, an HTTP/2 one (h2c from the app, gRPC) over the upstream's multiplexed HTTP/2 connection, and an
//! HTTP/1.1 `Upgrade: websocket` over a connection of its own that becomes a byte relay after the 101.
//! `--upstream-protocol` may force HTTP/1.1 or HTTP/2 for every request instead.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::access_log::{self, AccessLog, Entry};
use super::auth::Credential;
use super::body::{GrpcCall, UpstreamBody};
use super::breaker::{Admission, Breaker, Ticket};
use super::config::{format_duration, Upstream};
use super::grpc::{self, CallEnd};
use super::metrics::{Failure, Metrics, Rejection};
use super::oauth2::OAuth2;
use super::replay::{Replay, ReplayBody};
use super::retry;
use super::tls::SharedTls;
use super::upstream::{DialError, ExchangeError, InvalidServerName, Link, OutBody, Upstreams};

/// The body the ambassador answers with: the upstream's stream, or a short body of its own.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// How many names [`HOP_BY_HOP`] lists.
const HOPS: usize = 9;
/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the legacy ones still seen.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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
        })
    }

    /// Proxies one request; never fails and never outlives `--timeout` waiting for the upstream (a gRPC call:
    /// its own deadline). `client` is the connection's peer address as formatted by [`forwarded_for`].
    pub async fn handle(&self, mut request: Request<Incoming>, client: &HeaderValue) -> Response<ProxyBody> {
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
                self.prepare_headers(&mut headers, client);
                self.guarded(&method, target, headers, body, route, started, &mut outcome)
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
            Route::Http1 => {}
            Route::Http2 { grpc, te_trailers } => {
                let request = H2Request {
                    method,
                    target,
                    headers,
                    body,
                    grpc,
                    te_trailers,
                };
                return self.forward_h2(request, started, ticket, permit, outcome).await;
            }
            Route::Upgrade(value, on_upgrade) => {
                let request = build_request(method, target, headers, Either::Right(Empty::new()));
                return self
                    .upgrade(request, value, on_upgrade, started, ticket, permit, outcome)
                    .await;
            }
        }
        let replayable = self.retries > 0 && is_idempotent(method) && body.is_end_stream();
        let deadline = started + self.timeout;
        let sent = self.send(
            method,
            target,
            headers,
            body,
            replayable,
            deadline,
            &mut outcome.retries,
        );
        match tokio::time::timeout_at(deadline.into(), sent).await {
            Ok(Ok((response, link))) => {
                ticket.record(!response.status().is_server_error(), Instant::now());
                self.relay(response, link, permit)
            }
            Ok(Err(error)) => {
                ticket.record(false, Instant::now());
                let message = match &error {
                    ExchangeError::Connect(_) => format!("upstream unreachable: {}", error_chain(&error)),
                    _ => format!("upstream request failed: {}", error_chain(&error)),
                };
                self.fail(StatusCode::BAD_GATEWAY, message, outcome)
            }
            Err(_) => {
                ticket.record(false, Instant::now());
                self.metrics.failure(Failure::Timeout);
                let message = format!("upstream timed out after {}", format_duration(self.timeout));
                self.fail(StatusCode::GATEWAY_TIMEOUT, message, outcome)
            }
        }
    }

    fn prepare_headers(&self, headers: &mut HeaderMap, client: &HeaderValue) {
        strip_hop_by_hop(headers);
        headers.insert(header::HOST, self.upstream.host_header().clone());
        // Appending keeps the chain an upstream may already trust; the app is its first entry here.
        let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
            Some(prior) => {
                let mut joined = Vec::with_capacity(prior.len() + 2 + client.len());
                joined.extend_from_slice(prior.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(client.as_bytes());
                HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone())
            }
            None => client.clone(),
        };
        headers.insert(X_FORWARDED_FOR, forwarded_for);
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(credential) = &self.credential {
            // `insert` replaces every value the client sent under the same name.
            headers.insert(credential.header().clone(), credential.value());
        }
    }

    /// Sends the request, retrying a replayable one as [`retry`] allows while `deadline` leaves time to wait.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: &Method,
        uri: Uri,
        headers: HeaderMap,
        body: Incoming,
        replayable: bool,
        deadline: Instant,
        retries: &mut u32,
    ) -> Result<(Response<Incoming>, Link), ExchangeError> {
        if !replayable {
            let request = build_request(method, uri, headers, Either::Left(body));
            let attempt = self.upstreams.exchange(request).await;
            self.count_failure(&attempt);
            return attempt;
        }
        let mut backoff = retry::FIRST_BACKOFF;
        loop {
            let request = build_request(method, uri.clone(), headers.clone(), Either::Right(Empty::new()));
            let attempt = self.upstreams.exchange(request).await;
            self.count_failure(&attempt);
            let decision = match &attempt {
                Ok((response, _)) => {
                    retry::after_answer(response.status(), response.headers(), backoff, SystemTime::now())
                }
                Err(ExchangeError::Connect(_)) => Some((retry::Reason::Connect, backoff)),
                Err(_) => None,
            };
            let Some((reason, wait)) = decision else {
                return attempt;
            };
            // Past the last retry, or a wait the deadline cannot afford: the app gets this answer now.
            if *retries >= self.retries || Instant::now() + wait >= deadline {
                return attempt;
            }
            let why = match &attempt {
                Ok((response, _)) => format!("upstream answered {}", response.status().as_u16()),
                Err(error) => error_chain(error),
            };
            // The unread answer closes its connection when dropped; a new one is dialled if needed.
            drop(attempt);
            *retries += 1;
            self.metrics.retry(reason);
            tracing::info!(
                upstream = self.upstream.display(),
                reason = %why,
                retry = *retries,
                wait_ms = wait.as_millis() as u64,
                "retrying upstream request"
            );
            tokio::time::sleep(wait).await;
            backoff = retry::next_backoff(backoff);
        }
    }

    fn count_failure(&self, attempt: &Result<(Response<Incoming>, Link), ExchangeError>) {
        match attempt {
            Err(ExchangeError::Connect(DialError::Tls { .. })) => self.metrics.failure(Failure::Tls),
            Err(ExchangeError::Connect(_)) => self.metrics.failure(Failure::Connect),
            _ => {}
        }
    }

    /// Sends a request over the multiplexed HTTP/2 connection. A gRPC call may be sent again only while that is
    /// safe: its whole request is recorded ([`Replay`]), and the attempt either never reached the upstream (a
    /// connect error) or was answered `UNAVAILABLE` before any message. Other HTTP/2 requests follow the HTTP/1.1
    /// rule (idempotent, no body).
    async fn forward_h2(
        &self,
        request: H2Request<'_>,
        started: Instant,
        ticket: Ticket<'_>,
        permit: OwnedSemaphorePermit,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let H2Request {
            method,
            target,
            mut headers,
            body,
            grpc,
            te_trailers,
        } = request;
        // A gRPC deadline bounds the whole call, in place of `--timeout` (a long call may be legitimately slow).
        // The app's library and the server enforce it; the ambassador stops waiting a grace period later, so that
        // the app sees its own library's verdict, as without the ambassador, and the ambassador's only if the
        // app's never comes.
        let call_timeout = if grpc {
            grpc::timeout(&headers).map(|t| t + grpc::DEADLINE_GRACE)
        } else {
            None
        };
        let deadline = started + call_timeout.unwrap_or(self.timeout);
        headers.remove(header::HOST);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let mut parts = target.into_parts();
        parts.scheme = Some(self.h2_scheme.clone());
        parts.authority = self.h2_authority.clone();
        let uri = match Uri::from_parts(parts) {
            Ok(uri) => uri,
            Err(error) => {
                ticket.record(true, Instant::now());
                return self.fail(
                    StatusCode::BAD_REQUEST,
                    format!("cannot build upstream URI: {error}"),
                    outcome,
                );
            }
        };
        let may_retry = self.retries > 0 && (grpc || (is_idempotent(method) && body.is_end_stream()));
        let (replay, mut direct) = if may_retry {
            (Some(Replay::record(body)), None)
        } else {
            (None, Some(body))
        };
        let mut backoff = retry::FIRST_BACKOFF;
        let mut headers = Some(headers);
        let answer = loop {
            let (out, head) = match (&replay, direct.take()) {
                (Some(replay), _) => (replay.attempt(), headers.clone()),
                (None, Some(body)) => (ReplayBody::direct(body), headers.take()),
                (None, None) => unreachable!("a request without a recording is sent once"),
            };
            let mut request = Request::new(out);
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri.clone();
            *request.version_mut() = Version::HTTP_2;
            *request.headers_mut() = head.unwrap_or_default();
            let attempt = match tokio::time::timeout_at(deadline.into(), self.upstreams.exchange_h2(request)).await {
                Ok(attempt) => attempt,
                Err(_) => break Err(None),
            };
            if let Err(error) = &attempt {
                self.count_error(error);
            }
            let replayable = replay.as_ref().is_some_and(Replay::replayable) && outcome.retries < self.retries;
            let mut peeked = None;
            let decision = match (attempt, replayable) {
                (Err(error @ ExchangeError::Connect(_)), true) => (Err(error), Some(retry::Reason::Connect)),
                (Err(error), _) => (Err(error), None),
                (Ok(response), false) => (Ok(response), None),
                (Ok(mut response), true) if grpc => {
                    let unavailable = match grpc::status_of(response.headers()) {
                        Some(status) => status == grpc::UNAVAILABLE,
                        // Not trailers-only: whether a message comes before the status decides, so look at the
                        // first frame (only for a call the app has finished sending, as a unary call has).
                        None if replay.as_ref().is_some_and(Replay::complete) => {
                            match tokio::time::timeout_at(deadline.into(), response.body_mut().frame()).await {
                                Ok(Some(Ok(frame))) => {
                                    let status = frame.trailers_ref().and_then(grpc::status_of);
                                    peeked = Some(frame);
                                    status == Some(grpc::UNAVAILABLE)
                                }
                                Ok(_) => false,
                                Err(_) => break Err(None),
                            }
                        }
                        None => false,
                    };
                    (Ok(response), unavailable.then_some(retry::Reason::GrpcUnavailable))
                }
                (Ok(response), true) => {
                    let again = retry::after_answer(response.status(), response.headers(), backoff, SystemTime::now());
                    let reason = again.map(|(reason, wait)| {
                        backoff = backoff.max(wait);
                        reason
                    });
                    (Ok(response), reason)
                }
            };
            let (attempt, reason) = decision;
            let Some(reason) = reason else {
                break attempt.map(|response| (response, peeked)).map_err(Some);
            };
            if Instant::now() + backoff >= deadline {
                break attempt.map(|response| (response, peeked)).map_err(Some);
            }
            drop(attempt);
            outcome.retries += 1;
            self.metrics.retry(reason);
            tracing::info!(
                upstream = self.upstream.display(),
                reason = reason.as_str(),
                retry = outcome.retries,
                wait_ms = backoff.as_millis() as u64,
                "retrying upstream call"
            );
            tokio::time::sleep(backoff).await;
            backoff = retry::next_backoff(backoff);
        };
        match answer {
            Ok((response, peeked)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let head_status = if grpc { grpc::status_of(&parts.headers) } else { None };
                let failed = parts.status.is_server_error() || head_status == Some(grpc::UNAVAILABLE);
                ticket.record(!failed, Instant::now());
                outcome.grpc_status = head_status;
                let mut body = UpstreamBody::detached(body, Arc::clone(&self.upstreams), self.timeout, permit);
                if grpc && head_status.is_none() {
                    body = body.into_grpc(GrpcCall {
                        deadline: call_timeout.map(|t| (started + t).into()),
                        end: None,
                        expired: false,
                    });
                }
                if let Some(frame) = peeked {
                    body.unread(frame);
                }
                Response::from_parts(parts, Either::Left(body))
            }
            Err(Some(error)) => {
                ticket.record(false, Instant::now());
                let message = match &error {
                    ExchangeError::Connect(_) => format!("upstream unreachable: {}", error_chain(&error)),
                    _ => format!("upstream request failed: {}", error_chain(&error)),
                };
                self.fail(StatusCode::BAD_GATEWAY, message, outcome)
            }
            Err(None) => {
                ticket.record(false, Instant::now());
                self.metrics.failure(Failure::Timeout);
                let message = match call_timeout {
                    Some(limit) => format!(
                        "deadline exceeded: no answer within grpc-timeout {} (and a grace of {})",
                        format_duration(limit - grpc::DEADLINE_GRACE),
                        format_duration(grpc::DEADLINE_GRACE)
                    ),
                    None => format!("upstream timed out after {}", format_duration(self.timeout)),
                };
                self.fail(StatusCode::GATEWAY_TIMEOUT, message, outcome)
            }
        }
    }

    /// Relays a WebSocket: the upgrade request goes upstream on a connection of its own; once the upstream
    /// answers 101 the app gets the same 101, and a task copies bytes both ways until either side closes. The
    /// relay keeps its place under `--max-concurrent` for as long as it is open.
    #[allow(clippy::too_many_arguments)]
    async fn upgrade(
        &self,
        mut request: Request<OutBody>,
        value: HeaderValue,
        on_upgrade: hyper::upgrade::OnUpgrade,
        started: Instant,
        ticket: Ticket<'_>,
        permit: OwnedSemaphorePermit,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        // The hop-by-hop headers were stripped; these two are the ones an upgrade is made of.
        let headers = request.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
        let deadline = started + self.timeout;
        let mut response = match tokio::time::timeout_at(deadline.into(), self.upstreams.upgrade(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                ticket.record(false, Instant::now());
                self.count_error(&error);
                let message = format!("upstream unreachable: {}", error_chain(&error));
                return self.fail(StatusCode::BAD_GATEWAY, message, outcome);
            }
            Err(_) => {
                ticket.record(false, Instant::now());
                self.metrics.failure(Failure::Timeout);
                let message = format!("upstream timed out after {}", format_duration(self.timeout));
                return self.fail(StatusCode::GATEWAY_TIMEOUT, message, outcome);
            }
        };
        ticket.record(!response.status().is_server_error(), Instant::now());
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Refused (a 4xx for a bad handshake, say): an ordinary answer.
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = UpstreamBody::detached(body, Arc::clone(&self.upstreams), self.timeout, permit);
            return Response::from_parts(parts, Either::Left(body));
        }
        let upstream_side = hyper::upgrade::on(&mut response);
        let open = self.metrics.websockets_open().clone();
        open.inc();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::try_join!(on_upgrade, upstream_side) {
                Ok((app, upstream)) => {
                    let (mut app, mut upstream) = (TokioIo::new(app), TokioIo::new(upstream));
                    if let Err(error) = tokio::io::copy_bidirectional(&mut app, &mut upstream).await {
                        tracing::debug!(%error, "websocket relay ended with an error");
                    }
                }
                Err(error) => tracing::debug!(%error, "websocket upgrade did not complete"),
            }
            open.dec();
        });
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
    }

    fn count_error(&self, error: &ExchangeError) {
        match error {
            ExchangeError::Connect(DialError::Tls { .. }) => self.metrics.failure(Failure::Tls),
            ExchangeError::Connect(_) => self.metrics.failure(Failure::Connect),
            _ => {}
        }
    }

    fn relay(&self, response: Response<Incoming>, link: Link, permit: OwnedSemaphorePermit) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = UpstreamBody::new(body, link, Arc::clone(&self.upstreams), self.timeout, permit);
        Response::from_parts(parts, Either::Left(body))
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

/// An HTTP/2 request on its way upstream.
struct H2Request<'a> {
    method: &'a Method,
    target: Uri,
    headers: HeaderMap,
    body: Incoming,
    grpc: bool,
    te_trailers: bool,
}

/// The `Upgrade` value of an HTTP/1.1 WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`).
fn websocket_upgrade<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    // Most requests carry no `Upgrade`: one lookup and done.
    let upgrade = headers.get(header::UPGRADE)?;
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let websocket = upgrade.to_str().ok()?.split(',').any(|p| {
        p.trim()
            .split('/')
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("websocket"))
    });
    (connection_upgrade && websocket).then(|| upgrade.clone())
}

/// Whether the app sent `TE: trailers`, the one `TE` HTTP/2 allows and gRPC servers require.
fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
}

/// The client's address as an `X-Forwarded-For` entry, formatted once per connection rather than per request.
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Only methods RFC 9110 calls idempotent may be sent twice.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Removes the hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the message's few names finds which of the nine are present; only those are looked up again.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if present[0] {
        debug_assert_eq!(HOP_BY_HOP[0], header::CONNECTION);
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `keep-alive` and the like are removed below anyway.
            .filter(|token| !HOP_BY_HOP.iter().any(|hop| token.eq_ignore_ascii_case(hop.as_str())))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `outer: inner: innermost`, so that "connection error" also says which one.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        // Wrappers often repeat their source's message; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Private"));
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn keeps_end_to_end_headers_and_strips_hop_by_hop_ones_without_a_connection_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert("x-request-id", HeaderValue::from_static("1"));
        let untouched = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, untouched);

        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("Proxy-Connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, untouched);
    }

    #[test]
    fn recognises_a_websocket_handshake_only_with_both_upgrade_headers() {
        let request = |connection: &str, upgrade: Option<&str>, version: Version| {
            let mut builder = Request::get("/")
                .version(version)
                .header(header::CONNECTION, connection);
            if let Some(upgrade) = upgrade {
                builder = builder.header(header::UPGRADE, upgrade);
            }
            builder.body(()).unwrap()
        };
        let upgrade = websocket_upgrade(&request("keep-alive, Upgrade", Some("WebSocket"), Version::HTTP_11));
        assert_eq!(upgrade.unwrap(), "WebSocket");
        // `Upgrade` without `Connection: upgrade` is a hop-by-hop header to strip, not a handshake.
        assert!(websocket_upgrade(&request("keep-alive", Some("websocket"), Version::HTTP_11)).is_none());
        assert!(websocket_upgrade(&request("upgrade", None, Version::HTTP_11)).is_none());
        assert!(websocket_upgrade(&request("upgrade", Some("h2c"), Version::HTTP_11)).is_none());
        assert!(websocket_upgrade(&request("upgrade", Some("websocket"), Version::HTTP_10)).is_none());
    }

    #[test]
    fn keeps_te_trailers_apart_from_other_te_values() {
        let te = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::TE, HeaderValue::from_str(value).unwrap());
            te_trailers(&headers)
        };
        assert!(te("trailers"));
        assert!(te("gzip, Trailers"));
        assert!(!te("gzip"));
        assert!(!te_trailers(&HeaderMap::new()));
    }

    #[test]
    fn retries_only_idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
