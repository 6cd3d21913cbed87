//! An HTTP/2 request upstream (the app's h2c, gRPC): over the upstream's one multiplexed connection. A gRPC call
//! is sent again only while that is safe ([`Replay`]); its `grpc-timeout` bounds it in place of `--timeout`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body, Incoming};
use tokio::sync::OwnedSemaphorePermit;

use super::{Forwarder, Outcome, ProxyBody};
use crate::ambassador::body::{GrpcCall, UpstreamBody};
use crate::ambassador::breaker::Ticket;
use crate::ambassador::config::format_duration;
use crate::ambassador::error_text;
use crate::ambassador::grpc;
use crate::ambassador::headers::{is_idempotent, strip_hop_by_hop};
use crate::ambassador::metrics::Failure;
use crate::ambassador::replay::{Replay, ReplayBody};
use crate::ambassador::retry;
use crate::ambassador::upstream::ExchangeError;

/// An HTTP/2 request on its way upstream.
pub(super) struct H2Request<'a> {
    pub(super) method: &'a Method,
    pub(super) target: Uri,
    pub(super) headers: HeaderMap,
    pub(super) body: Incoming,
    pub(super) grpc: bool,
    pub(super) te_trailers: bool,
}

impl Forwarder {
    /// Sends a request over the multiplexed HTTP/2 connection. A gRPC call may be sent again only while that is
    /// safe: its whole request is recorded ([`Replay`]), and the attempt either never reached the upstream (a
    /// connect error) or was answered `UNAVAILABLE` before any message. Other HTTP/2 requests follow the HTTP/1.1
    /// rule (idempotent, no body).
    pub(super) async fn forward_h2(
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
                ticket.record_now(true);
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
                ticket.record_now(!failed);
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
                ticket.record_now(false);
                let message = match &error {
                    ExchangeError::Connect(_) => format!("upstream unreachable: {}", error_text::chain(&error)),
                    _ => format!("upstream request failed: {}", error_text::chain(&error)),
                };
                self.fail(StatusCode::BAD_GATEWAY, message, outcome)
            }
            Err(None) => {
                ticket.record_now(false);
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
}
