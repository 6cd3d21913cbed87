//! A WebSocket upstream: the HTTP/1.1 upgrade request goes on a connection of its own, and after the 101 a task
//! copies bytes both ways until either side closes. Each open relay is held in [`Relays`], so that shutdown lets
//! it finish as it lets a connection finish.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::{Forwarder, Outcome, ProxyBody};
use crate::ambassador::body::UpstreamBody;
use crate::ambassador::breaker::Ticket;
use crate::ambassador::config::format_duration;
use crate::ambassador::error_text;
use crate::ambassador::headers::strip_hop_by_hop;
use crate::ambassador::metrics::Failure;
use crate::ambassador::upstream::OutBody;

/// The WebSocket relays open now. After the 101 a relay is no HTTP connection any more, so the server's graceful
/// shutdown does not see it; shutdown waits for these as well ([`Relays::closed`]).
#[derive(Debug)]
pub struct Relays {
    /// Each open relay holds a receiver; the sender sees when none is left.
    open: watch::Sender<()>,
}

impl Default for Relays {
    fn default() -> Self {
        Self {
            open: watch::channel(()).0,
        }
    }
}

impl Relays {
    /// How many relays are open.
    pub fn count(&self) -> usize {
        self.open.receiver_count()
    }

    /// Resolves once no relay is open (at once if none is).
    pub async fn closed(&self) {
        self.open.closed().await;
    }

    /// A place held by one relay until it is dropped.
    fn hold(&self) -> watch::Receiver<()> {
        self.open.subscribe()
    }
}

impl Forwarder {
    /// Relays a WebSocket: the upgrade request goes upstream on a connection of its own; once the upstream
    /// answers 101 the app gets the same 101, and a task copies bytes both ways until either side closes. The
    /// relay keeps its place under `--max-concurrent` for as long as it is open.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upgrade(
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
                ticket.record_now(false);
                self.count_error(&error);
                let message = format!("upstream unreachable: {}", error_text::chain(&error));
                return self.fail(StatusCode::BAD_GATEWAY, message, outcome);
            }
            Err(_) => {
                ticket.record_now(false);
                self.metrics.failure(Failure::Timeout);
                let message = format!("upstream timed out after {}", format_duration(self.timeout));
                return self.fail(StatusCode::GATEWAY_TIMEOUT, message, outcome);
            }
        };
        ticket.record_now(!response.status().is_server_error());
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
        let held = self.relays.hold();
        tokio::spawn(async move {
            let (_permit, _held) = (permit, held);
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

    /// The WebSocket relays open now.
    pub fn relays(&self) -> &Relays {
        &self.relays
    }
}
