//! An HTTP/1.1 request upstream: over a pooled keep-alive connection, sent again after a connect error, a 503 or a
//! 429 with `Retry-After` when it is replayable (an idempotent method, no body), within `--timeout`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Method, Response, StatusCode, Uri};
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
        let sent = self.send(
            method,
            target,
            headers,
            body,
            replayable,
            deadline,
            &mut outcome.retries,
        );
        match conn.within(deadline, sent).await {
            Some(Ok((response, link))) => {
                ticket.record(!response.status().is_server_error(), Instant::now());
                self.relay(response, link, permit)
            }
            Some(Err(error)) => {
                ticket.record(false, Instant::now());
                let message = match &error {
                    ExchangeError::Connect(_) => format!("upstream unreachable: {}", error_text::chain(&error)),
                    _ => format!("upstream request failed: {}", error_text::chain(&error)),
                };
                self.fail(StatusCode::BAD_GATEWAY, message, outcome)
            }
            None => {
                ticket.record(false, Instant::now());
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
        let mut backoff = retry::FIRST_BACKOFF;
        loop {
            let request = build_request(method, uri.clone(), headers.clone(), Either::Right(Empty::new()));
            let attempt = self.upstreams.exchange(request).await;
            if let Err(error) = &attempt {
                self.count_error(error);
            }
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
