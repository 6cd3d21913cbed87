//! Prometheus metrics of one ambassador, served at `/metrics` on the admin port in the text exposition format
//! (the same `prometheus-client` crate as the webhook, with a registry of its own).
//!
//! Every series carries the `upstream` label, so the ambassadors of several upstreams in one Pod (one process
//! each) scrape apart. Counting a request on the hot path hashes and locks nothing: each method and status class
//! resolves its series on first use and keeps it.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

use super::retry::Reason;

/// Methods with a label of their own; any other is counted as `other` (a client cannot grow the series).
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];
/// The protocols counted apart, as the access log names them.
pub const PROTOCOLS: [&str; 4] = [
    super::access_log::HTTP1,
    super::access_log::H2,
    super::access_log::GRPC,
    super::access_log::WEBSOCKET,
];
/// Status classes 1xx to 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    class: &'static str,
}

/// What failed (`upstream_errors`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Why (`retries`, `rejected`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Which protocol (`protocol_requests`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

/// Which gRPC status (`grpc_calls`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// From where (`token_refreshes`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// What failed on the way to the upstream; the `kind` of `upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// DNS or TCP.
    Connect,
    /// The TLS handshake (an untrusted or expired certificate, a refused client certificate).
    Tls,
    /// No answer within `--timeout`.
    Timeout,
}

/// Why the ambassador answered 503 itself; the `reason` of `rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The circuit is open.
    CircuitOpen,
    /// `--max-concurrent` requests were in flight.
    Concurrency,
}

/// Where a credential came from; the `source` of `token_refreshes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// A mounted file (Secret or projected ServiceAccount token) whose contents changed.
    File,
    /// The OAuth2 token endpoint.
    OAuth2,
}

/// The ambassador's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// `requests` by method index (the last is `other`) and class, resolved on first use.
    request_series: [[OnceLock<Counter>; CLASSES.len()]; METHODS.len() + 1],
    latency: Histogram,
    retries: [Counter; 4],
    failures: [Counter; 3],
    rejected: [Counter; 2],
    token_refreshes: [Counter; 2],
    /// Requests by protocol, in the order of [`PROTOCOLS`].
    protocols: [Counter; 4],
    /// gRPC calls by status code (0-16; anything else counts as UNKNOWN).
    grpc_calls: [Counter; 17],
    /// WebSocket relays open now.
    websockets_open: Gauge,
    /// 1 while the circuit is open (or on trial); the breaker sets it.
    pub circuit_open: Gauge,
    /// Times the circuit opened; the breaker counts it.
    pub circuit_opened: Counter,
}

impl Metrics {
    /// The metrics of the ambassador for `upstream` (as shown in logs), every series labelled with it.
    pub fn new(upstream: &str) -> Self {
        let label = std::iter::once((Cow::Borrowed("upstream"), Cow::Owned(upstream.to_owned())));
        let mut registry = Registry::with_prefix_and_labels("entourage_ambassador", label);
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms … ~16 s: a loopback hop takes well under a millisecond, a slow upstream up to `--timeout`.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0005, 2.0, 16,
        ));
        let retries = Family::<ReasonLabels, Counter>::default();
        let failures = Family::<KindLabels, Counter>::default();
        let rejected = Family::<ReasonLabels, Counter>::default();
        let refreshes = Family::<SourceLabels, Counter>::default();
        let circuit_open = Gauge::default();
        let circuit_opened = Counter::default();
        let protocols = Family::<ProtocolLabels, Counter>::default();
        let grpc_calls = Family::<StatusLabels, Counter>::default();
        let websockets_open = Gauge::default();
        registry.register(
            "protocol_requests",
            "Requests answered, by the protocol the app spoke (http/1.1, h2, grpc, websocket)",
            protocols.clone(),
        );
        registry.register(
            "grpc_calls",
            "gRPC calls ended, by grpc-status (the upstream's, or the ambassador's own answer)",
            grpc_calls.clone(),
        );
        registry.register(
            "websockets_open",
            "WebSocket relays open now (each holds a place under --max-concurrent)",
            websockets_open.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by method and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to the response head",
            latency.clone(),
        );
        registry.register("retries", "Upstream attempts retried, by reason", retries.clone());
        registry.register(
            "upstream_errors",
            "Failed upstream attempts, by kind (connect, tls, timeout)",
            failures.clone(),
        );
        registry.register(
            "rejected",
            "Requests answered 503 without calling the upstream, by reason",
            rejected.clone(),
        );
        registry.register(
            "token_refreshes",
            "Credentials replaced, by source (file, oauth2)",
            refreshes.clone(),
        );
        registry.register(
            "circuit_open",
            "1 while the circuit breaker is open or on trial",
            circuit_open.clone(),
        );
        registry.register(
            "circuit_opened",
            "Times the circuit breaker opened",
            circuit_opened.clone(),
        );
        Self {
            registry,
            requests,
            request_series: Default::default(),
            latency,
            retries: Reason::ALL.map(|reason| {
                let labels = ReasonLabels {
                    reason: reason.as_str(),
                };
                retries.get_or_create(&labels).clone()
            }),
            failures: ["connect", "tls", "timeout"].map(|kind| failures.get_or_create(&KindLabels { kind }).clone()),
            rejected: ["circuit_open", "concurrency"]
                .map(|reason| rejected.get_or_create(&ReasonLabels { reason }).clone()),
            token_refreshes: ["file", "oauth2"].map(|source| refreshes.get_or_create(&SourceLabels { source }).clone()),
            protocols: PROTOCOLS.map(|protocol| protocols.get_or_create(&ProtocolLabels { protocol }).clone()),
            grpc_calls: super::grpc_status::STATUS_NAMES
                .map(|status| grpc_calls.get_or_create(&StatusLabels { status }).clone()),
            websockets_open,
            circuit_open,
            circuit_opened,
        }
    }

    /// Counts a request by the protocol the app spoke (one of [`PROTOCOLS`]).
    pub fn protocol(&self, protocol: &str) {
        if let Some(i) = PROTOCOLS.iter().position(|p| *p == protocol) {
            self.protocols[i].inc();
        }
    }

    /// Counts a gRPC call ended with `status`.
    pub fn grpc_call(&self, status: u16) {
        let i = usize::from(status);
        self.grpc_calls[if i < self.grpc_calls.len() { i } else { 2 }].inc();
    }

    /// The gauge of open WebSocket relays.
    pub fn websockets_open(&self) -> &Gauge {
        &self.websockets_open
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts a request answered with `status` after `elapsed`.
    pub fn request(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        let m = METHODS
            .iter()
            .position(|known| known == method)
            .unwrap_or(METHODS.len());
        // A StatusCode is always 100..=999; classes past 5xx do not exist on the wire.
        let c = usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1;
        let counter = self.request_series[m][c].get_or_init(|| {
            let method = METHODS.get(m).map_or("other", Method::as_str);
            let labels = RequestLabels {
                method: static_method(method),
                class: CLASSES[c],
            };
            self.requests.get_or_create(&labels).clone()
        });
        counter.inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts a retry.
    pub fn retry(&self, reason: Reason) {
        self.retries[reason.index()].inc();
    }

    /// Counts a failed upstream attempt.
    pub fn failure(&self, failure: Failure) {
        self.failures[failure as usize].inc();
    }

    /// Counts a request refused without calling the upstream.
    pub fn rejection(&self, rejection: Rejection) {
        self.rejected[rejection as usize].inc();
    }

    /// Counts a credential refresh.
    pub fn token_refresh(&self, source: TokenSource) {
        self.token_refreshes[source as usize].inc();
    }
}

/// The `'static` spelling of a known method name.
fn static_method(name: &str) -> &'static str {
    METHODS
        .iter()
        .map(Method::as_str)
        .find(|known| *known == name)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ').map(str::to_string))
    }

    #[test]
    fn requests_count_by_method_and_status_class_under_the_upstream_label() {
        let metrics = Metrics::new("http://orders:8080");
        metrics.request(&Method::GET, StatusCode::OK, Duration::from_millis(2));
        metrics.request(&Method::GET, StatusCode::NO_CONTENT, Duration::from_millis(2));
        metrics.request(
            &Method::from_bytes(b"PURGE").unwrap(),
            StatusCode::BAD_GATEWAY,
            Duration::ZERO,
        );
        let text = metrics.encode();
        let count = |method: &str, class: &str| {
            sample(
                &text,
                &format!(
                    r#"entourage_ambassador_requests_total{{upstream="http://orders:8080",method="{method}",class="{class}"}}"#
                ),
            )
        };
        assert_eq!(count("GET", "2xx").as_deref(), Some("2"), "{text}");
        assert_eq!(count("other", "5xx").as_deref(), Some("1"), "{text}");
        assert_eq!(count("POST", "2xx"), None, "series appear on first use");
        assert_eq!(
            sample(
                &text,
                r#"entourage_ambassador_request_duration_seconds_count{upstream="http://orders:8080"}"#
            )
            .as_deref(),
            Some("3"),
            "{text}"
        );
    }

    #[test]
    fn retries_errors_rejections_and_refreshes_are_exposed_from_the_start() {
        let metrics = Metrics::new("u");
        metrics.retry(Reason::TooManyRequests);
        metrics.failure(Failure::Tls);
        metrics.rejection(Rejection::Concurrency);
        metrics.token_refresh(TokenSource::OAuth2);
        let text = metrics.encode();
        for (series, value) in [
            (r#"entourage_ambassador_retries_total{upstream="u",reason="429"}"#, "1"),
            (
                r#"entourage_ambassador_retries_total{upstream="u",reason="connect"}"#,
                "0",
            ),
            (
                r#"entourage_ambassador_upstream_errors_total{upstream="u",kind="tls"}"#,
                "1",
            ),
            (
                r#"entourage_ambassador_upstream_errors_total{upstream="u",kind="timeout"}"#,
                "0",
            ),
            (
                r#"entourage_ambassador_rejected_total{upstream="u",reason="concurrency"}"#,
                "1",
            ),
            (
                r#"entourage_ambassador_token_refreshes_total{upstream="u",source="oauth2"}"#,
                "1",
            ),
            (r#"entourage_ambassador_circuit_open{upstream="u"}"#, "0"),
        ] {
            assert_eq!(sample(&text, series).as_deref(), Some(value), "{series} in {text}");
        }
    }
}
