//! Forwarding one request: rewrite the head, send it through the pooled client, retry what is safe to retry,
//! and turn failures into short JSON answers. Bodies stream through untouched in both directions.

use std::error::Error as StdError;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::access_log::{self, AccessLog, Entry};
use super::auth::Credential;
use super::config::{format_duration, Upstream};

/// The body the ambassador answers with: the upstream's stream, or a short body of its own.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// The body sent upstream: the client's stream, or nothing when the request is replayable.
type OutBody = Either<Incoming, Empty<Bytes>>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// First pause before a retry; each further retry waits twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Idle upstream connections are closed before typical server-side keep-alive limits would close them under us.
const POOL_IDLE: Duration = Duration::from_secs(50);

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the legacy ones still seen.
const HOP_BY_HOP: [HeaderName; 9] = [
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
    /// Bound on the wait for the response head, and on each wait for the next piece of the response body.
    pub timeout: Duration,
    /// Bound on establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Retries allowed for replayable requests.
    pub retries: u32,
    /// The header added to every request, if any.
    pub credential: Option<Credential>,
}

/// The proxy's request handler; one per process, shared by every connection.
#[derive(Debug)]
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, OutBody>,
    upstream: Upstream,
    timeout: Duration,
    retries: u32,
    credential: Option<Credential>,
    log: Arc<AccessLog>,
}

/// What happened to one request, for the access log.
struct Outcome {
    retries: u32,
    error: Option<String>,
}

impl Forwarder {
    /// Builds the pooled client once: every request reuses its keep-alive connections.
    pub fn new(settings: Settings, tls: rustls::ClientConfig, log: Arc<AccessLog>) -> Self {
        let mut http = HttpConnector::new();
        // The connector must also dial for `https://`; TLS is layered on top by hyper-rustls.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(https);
        Self {
            client,
            upstream: settings.upstream,
            timeout: settings.timeout,
            retries: settings.retries,
            credential: settings.credential,
            log,
        }
    }

    /// Proxies one request; never fails and never outlives `--timeout` waiting for the upstream.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client_ip: IpAddr,
    ) -> Response<ProxyBody> {
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
                self.prepare_headers(&mut headers, client_ip);
                let replayable = self.retries > 0 && is_idempotent(&method) && body.is_end_stream();
                let sent = self.send(
                    &method,
                    target,
                    headers,
                    body,
                    replayable,
                    &mut outcome.retries,
                );
                match tokio::time::timeout(self.timeout, sent).await {
                    Ok(Ok(response)) => self.relay(response),
                    Ok(Err(error)) => {
                        let message = if error.is_connect() {
                            format!("upstream unreachable: {}", error_chain(&error))
                        } else {
                            format!("upstream request failed: {}", error_chain(&error))
                        };
                        self.fail(StatusCode::BAD_GATEWAY, message, &mut outcome)
                    }
                    Err(_) => {
                        let message =
                            format!("upstream timed out after {}", format_duration(self.timeout));
                        self.fail(StatusCode::GATEWAY_TIMEOUT, message, &mut outcome)
                    }
                }
            }
            Err(error) => {
                let message = format!("cannot build upstream URI for {uri}: {error}");
                self.fail(StatusCode::BAD_REQUEST, message, &mut outcome)
            }
        };
        self.log.record(&Entry {
            ts_ms: access_log::now_ms(),
            method: method.as_str(),
            path: uri.path(),
            status: response.status().as_u16(),
            upstream_ms: started.elapsed().as_secs_f64() * 1000.0,
            bytes_in,
            bytes_out: content_length(response.headers()),
            retries: outcome.retries,
            error: outcome.error.as_deref(),
        });
        response
    }

    fn prepare_headers(&self, headers: &mut HeaderMap, client_ip: IpAddr) {
        strip_hop_by_hop(headers);
        headers.insert(header::HOST, self.upstream.host_header().clone());
        // Appending keeps the chain an upstream may already trust; the app is its first entry here.
        let ip = client_ip.to_string();
        let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::try_from(format!("{prior}, {ip}")),
            None => HeaderValue::try_from(ip),
        };
        if let Ok(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(credential) = &self.credential {
            // `insert` replaces every value the client sent under the same name.
            headers.insert(credential.header().clone(), credential.value());
        }
    }

    /// Sends the request, retrying a replayable one on connect errors and 503 answers.
    async fn send(
        &self,
        method: &Method,
        uri: Uri,
        headers: HeaderMap,
        body: Incoming,
        replayable: bool,
        retries: &mut u32,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if !replayable {
            let request = build_request(method, uri, headers, Either::Left(body));
            return self.client.request(request).await;
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *retries >= self.retries {
                let request = build_request(method, uri, headers, Either::Right(Empty::new()));
                return self.client.request(request).await;
            }
            let request = build_request(
                method,
                uri.clone(),
                headers.clone(),
                Either::Right(Empty::new()),
            );
            let reason = match self.client.request(request).await {
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    "upstream answered 503".to_owned()
                }
                Err(error) if error.is_connect() => error_chain(&error),
                other => return other,
            };
            *retries += 1;
            tracing::info!(upstream = self.upstream.display(), %reason, retry = *retries, backoff_ms = backoff.as_millis() as u64, "retrying upstream request");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn relay(&self, response: Response<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // The client's connection has its own version; the server side frames the answer for it.
        parts.version = Version::HTTP_11;
        Response::from_parts(parts, Either::Left(UpstreamBody::new(body, self.timeout)))
    }

    fn fail(
        &self,
        status: StatusCode,
        message: String,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        tracing::warn!(upstream = self.upstream.display(), status = status.as_u16(), error = %message, "answering for the upstream");
        let body = serde_json::json!({ "error": message, "upstream": self.upstream.display() });
        outcome.error = Some(message);
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

fn build_request(method: &Method, uri: Uri, headers: HeaderMap, body: OutBody) -> Request<OutBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    // HTTP/1.1 lets the pool pick either version; HTTP/2 would demand an h2 connection the upstream may not offer.
    *request.version_mut() = Version::HTTP_11;
    request
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
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `outer: inner: innermost`, since the client error alone says only "client error (Connect)".
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    let mut next = error.source();
    while let Some(cause) = next {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    if text.is_empty() {
        text = error.to_string();
    }
    text
}

/// The upstream's response body, cut off when no piece arrives within the timeout so a stalled upstream cannot
/// hold a client forever. The timer exists only while the upstream is actually late.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

/// The upstream stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no body data for {0}")]
struct BodyStalled(String);

impl UpstreamBody {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
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
                    let stalled = BodyStalled(format_duration(this.idle));
                    tracing::warn!(error = %stalled, "aborting response");
                    return Poll::Ready(Some(Err(stalled.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::ACCEPT));
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
