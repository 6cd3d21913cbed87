//! An HTTP/1.1 request upstream: over a pooled keep-alive connection, sent again after a connect error, a 503 or a
//! 429 with `Retry-After` when it is replayable (an idempotent method, no body), within `--timeout`.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use tokio::sync::OwnedSemaphorePermit;

use super::{build_request, ClientConn, Forwarder, Outcome, ProxyBody};
use crate::ambassador::body::UpstreamBody;
use crate::ambassador::breaker::Ticket;
use crate::ambassador::config::format_duration;
use crate::ambassador::error_text;
use crate::ambassador::headers::{is_idempotent, strip_hop_by_hop};
use crate::ambassador::metrics::Failure;
use crate::ambassador::retry;
use crate::ambassador::upstream::{ExchangeError, Link};

impl Forwarder {
    /// Sends the request and relays the answer; a failure or `--timeout` gets the ambassador's own answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward_http1(
        &self,
        method: &Method,
        target: Uri,
        headers: HeaderMap,
        body: Incoming,
        started: Instant,
        ticket: Ticket<'_>,
        permit: OwnedSemaphorePermit,
        conn: &ClientConn,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let replayable = self.retries > 0 && is_idempotent(method) && body.is_end_stream();
        let deadline = started + self.timeout;
        // Pinned here and lent to the timer, not moved into its future: the send's state is most of this future.
        let answer = {
            let sent = pin!(self.send(
                method,
                target,
                headers,
                body,
                replayable,
                deadline,
                &mut outcome.retries,
            ));
            conn.within(deadline, sent).await
        };
        match answer {
            Some(Ok((response, link))) => {
                ticket.record_now(!response.status().is_server_error());
                self.relay(response, link, permit)
            }
            Some(Err(error)) => {
                ticket.record_now(false);
                let message = match &error {
                    ExchangeError::Connect(_) => format!("upstream unreachable: {}", error_text::chain(&error)),
                    _ => format!("upstream request failed: {}", error_text::chain(&error)),
                };
                self.fail(StatusCode::BAD_GATEWAY, message, outcome)
            }
            None => {
                ticket.record_now(false);
                self.metrics.failure(Failure::Timeout);
                let message = format!("upstream timed out after {}", format_duration(self.timeout));
                self.fail(StatusCode::GATEWAY_TIMEOUT, message, outcome)
            }
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
            if let Err(error) = &attempt {
                self.count_error(error);
            }
            return attempt;
        }
        // The first attempt sends the request as read; a retry sends it again from the copy.
        let resend = Resend::of(&uri, &headers);
        let mut first = Some((uri, headers));
        let mut backoff = retry::FIRST_BACKOFF;
        loop {
            let (uri, headers) = first.take().unwrap_or_else(|| resend.parts());
            let request = build_request(method, uri, headers, Either::Right(Empty::new()));
            let attempt = self.upstreams.exchange(request).await;
            if let Err(error) = &attempt {
                self.count_error(error);
            }
            let decision = match &attempt {
                // Nearly every answer is none of the two a retry follows: no clock read for those.
                Ok((response, _)) if retry::may_retry(response.status()) => {
                    retry::after_answer(response.status(), response.headers(), backoff, SystemTime::now())
                }
                Ok(_) => None,
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
                Err(error) => error_text::chain(error),
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

    fn relay(&self, response: Response<Incoming>, link: Link, permit: OwnedSemaphorePermit) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = UpstreamBody::new(body, link, Arc::clone(&self.upstreams), self.timeout, permit);
        Response::from_parts(parts, Either::Left(body))
    }
}

/// What a replayable request needs to be sent again: the target and the headers copied into one buffer, beside
/// the names. Every GET is replayable, so this is made for most requests and almost never used. A `HeaderMap`
/// clone, as before, takes as many allocations but also two atomic reference-count updates per value (each shares
/// the buffer hyper read the request into) and a full map to drop; the map is rebuilt here only for a retry.
struct Resend {
    /// Each header's name, the end of its value in `bytes`, and whether the value is marked sensitive.
    headers: Vec<(HeaderName, usize, bool)>,
    /// The header values one after another, then the target's path and query.
    bytes: Bytes,
}

impl Resend {
    fn of(uri: &Uri, headers: &HeaderMap) -> Self {
        let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let size = headers.iter().map(|(_, value)| value.len()).sum::<usize>() + target.len();
        let mut bytes = BytesMut::with_capacity(size);
        let mut names = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            bytes.extend_from_slice(value.as_bytes());
            names.push((name.clone(), bytes.len(), value.is_sensitive()));
        }
        bytes.extend_from_slice(target.as_bytes());
        Self {
            headers: names,
            bytes: bytes.freeze(),
        }
    }

    /// The target and headers again, as they were copied.
    fn parts(&self) -> (Uri, HeaderMap) {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        let mut start = 0;
        for (name, end, sensitive) in &self.headers {
            // Copied from valid values, so valid again; a value that were not would be left out, never sent broken.
            if let Ok(mut value) = HeaderValue::from_maybe_shared(self.bytes.slice(start..*end)) {
                value.set_sensitive(*sensitive);
                headers.append(name.clone(), value);
            }
            start = *end;
        }
        let target = PathAndQuery::from_maybe_shared(self.bytes.slice(start..))
            .unwrap_or_else(|_| PathAndQuery::from_static("/"));
        (Uri::from(target), headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_gives_back_the_target_and_every_header_in_order() {
        let uri: Uri = "/api/items?id=7&q=a%20b".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("svc:8080"));
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static(""));
        headers.append("x-multi", HeaderValue::from_static("three"));
        let mut secret = HeaderValue::from_static("Bearer token");
        secret.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, secret);
        headers.insert("x-obs", HeaderValue::from_bytes(b"caf\xe9\tx").unwrap());
        let resend = Resend::of(&uri, &headers);
        for _ in 0..2 {
            let (again_uri, again) = resend.parts();
            assert_eq!(again_uri, uri);
            assert_eq!(again, headers);
            let order = |map: &HeaderMap| map.iter().map(|(n, v)| (n.clone(), v.clone())).collect::<Vec<_>>();
            assert_eq!(order(&again), order(&headers));
            assert!(again[http::header::AUTHORIZATION].is_sensitive());
        }
        let (bare, none) = Resend::of(&Uri::from_static("/"), &HeaderMap::new()).parts();
        assert_eq!(bare, "/");
        assert!(none.is_empty());
    }
}
