//! Forwarding one request: rewrite the head, send it through the pooled client, retry what is safe to retry,
//! and turn failures into short JSON answers. Bodies stream through untouched in both directions.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Incoming};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::access_log::{self, AccessLog, Entry};
use super::auth::Credential;
use super::body::UpstreamBody;
use super::breaker::{Admission, Breaker};
use super::config::{format_duration, Upstream};
use super::metrics::{Failure, Metrics, Rejection};
use super::oauth2::OAuth2;
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
    metrics: Arc<Metrics>,
    log: Arc<AccessLog>,
}

/// What happened to one request, for the access log.
struct Outcome {
    retries: u32,
    error: Option<String>,
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
        Ok(Self {
            upstreams: Arc::new(upstreams),
            upstream: settings.upstream,
            timeout: settings.timeout,
            retries: settings.retries,
            breaker,
            in_flight: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            credential: settings.credential,
            oauth2: settings.oauth2,
            metrics,
            log,
        })
    }

    /// Proxies one request; never fails and never outlives `--timeout` waiting for the upstream.
    /// `client` is the connection's peer address as formatted by [`forwarded_for`].
    pub async fn handle(&self, request: Request<Incoming>, client: &HeaderValue) -> Response<ProxyBody> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let http::request::Parts {
            method,
            uri,
            mut headers,
            ..
        } = parts;
        let bytes_in = content_length(&headers);
        let mut outcome = Outcome {
            retries: 0,
            error: None,
        };
        let response = match self.upstream.uri_for(&uri) {
            Ok(target) => {
                self.prepare_headers(&mut headers, client);
                self.guarded(&method, target, headers, body, started, &mut outcome)
                    .await
            }
            Err(error) => {
                let message = format!("cannot build upstream URI for {uri}: {error}");
                self.fail(StatusCode::BAD_REQUEST, message, &mut outcome)
            }
        };
        let elapsed = started.elapsed();
        self.metrics.request(&method, response.status(), elapsed);
        self.log.record(&Entry {
            ts_ms: access_log::now_ms(),
            method: method.as_str(),
            path: uri.path(),
            status: response.status().as_u16(),
            upstream_ms: elapsed.as_secs_f64() * 1000.0,
            bytes_in,
            bytes_out: content_length(response.headers()),
            retries: outcome.retries,
            error: outcome.error.as_deref(),
        });
        response
    }

    /// Passes the request through the circuit breaker and the concurrency cap, then to the upstream.
    async fn guarded(
        &self,
        method: &Method,
        target: Uri,
        headers: HeaderMap,
        body: Incoming,
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

    fn relay(&self, response: Response<Incoming>, link: Link, permit: OwnedSemaphorePermit) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = UpstreamBody::new(body, link, Arc::clone(&self.upstreams), self.timeout, permit);
        Response::from_parts(parts, Either::Left(body))
    }

    fn fail(&self, status: StatusCode, message: String, outcome: &mut Outcome) -> Response<ProxyBody> {
        tracing::warn!(upstream = self.upstream.display(), status = status.as_u16(), error = %message, "answering for the upstream");
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
