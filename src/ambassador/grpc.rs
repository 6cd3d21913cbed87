//! What the ambassador knows of gRPC (over HTTP/2, <https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>):
//! how to recognise a call, read its deadline (`grpc-timeout`) and status (`grpc-status`), answer a call itself
//! in gRPC's own form (a trailers-only response, so the app's gRPC library reports a status rather than an HTTP
//! error), and log the call when its status arrives in the trailers.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::access_log::{self, AccessLog, Entry};
use super::metrics::Metrics;

pub use super::grpc_status::*;

/// How long past a call's `grpc-timeout` the ambassador still waits before it ends the call itself: the app's
/// gRPC library ends it at the deadline, and its verdict is the one the app should see.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(1);

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
/// The deadline header.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Whether a request is a gRPC call: `content-type: application/grpc` (with `+proto`, `+json`, … suffixes).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` of a header or trailer block.
pub fn status_of(headers: &HeaderMap) -> Option<u16> {
    std::str::from_utf8(headers.get(GRPC_STATUS)?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// Parses `grpc-timeout` (1-8 ASCII digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`); `None` when absent or
/// malformed, which gRPC treats as no deadline.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = text.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Trailers carrying `code` and `message` (percent-encoded as gRPC requires).
pub fn status_trailers(code: u16, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(GRPC_STATUS, HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        trailers.insert(GRPC_MESSAGE, value);
    }
    trailers
}

/// A trailers-only response: HTTP 200 whose headers carry the status and no message follows.
pub fn trailers_only<B>(code: u16, message: &str, body: B) -> Response<B> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.extend(status_trailers(code, message));
    response
}

/// The gRPC status an ambassador-made HTTP error stands for (gRPC's own HTTP-to-status mapping).
pub fn status_for_http(status: StatusCode) -> u16 {
    match status {
        StatusCode::GATEWAY_TIMEOUT => DEADLINE_EXCEEDED,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => UNAVAILABLE,
        StatusCode::TOO_MANY_REQUESTS => RESOURCE_EXHAUSTED,
        StatusCode::BAD_REQUEST => 13,
        _ => UNKNOWN,
    }
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A gRPC call's access-log line and status metric, written when its status arrives.
#[derive(Debug)]
pub struct CallEnd {
    /// Where the line goes.
    pub log: Arc<AccessLog>,
    /// Where the status is counted.
    pub metrics: Arc<Metrics>,
    /// The request method (always POST for a real gRPC client).
    pub method: Method,
    /// The call's path, `/package.Service/Method`.
    pub path: String,
    /// The HTTP status sent.
    pub status: u16,
    /// Time until the response head, in milliseconds.
    pub upstream_ms: f64,
    /// Request body size when declared.
    pub bytes_in: Option<u64>,
    /// Attempts beyond the first.
    pub retries: u32,
}

impl CallEnd {
    /// Logs and counts the call with its final `grpc-status`.
    pub fn finish(self, grpc_status: u16) {
        self.metrics.grpc_call(grpc_status);
        self.log.record(&Entry {
            ts_ms: access_log::now_ms(),
            method: self.method.as_str(),
            path: &self.path,
            protocol: access_log::GRPC,
            status: self.status,
            grpc_status: Some(grpc_status),
            upstream_ms: self.upstream_ms,
            bytes_in: self.bytes_in,
            bytes_out: None,
            retries: self.retries,
            error: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn reads_grpc_timeout_in_every_unit_and_ignores_malformed_ones() {
        for (text, expected) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("5n", Duration::from_nanos(5)),
        ] {
            assert_eq!(timeout(&headers(GRPC_TIMEOUT, text)), Some(expected), "{text}");
        }
        for bad in ["", "S", "123456789S", "1s", "-1S", "1.5S", "10"] {
            assert_eq!(timeout(&headers(GRPC_TIMEOUT, bad)), None, "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn answers_in_grpc_form_with_an_encoded_message() {
        let response = trailers_only(UNAVAILABLE, "upstream unreachable: 100% down\n", ());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(status_of(response.headers()), Some(UNAVAILABLE));
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers()[GRPC_MESSAGE], "upstream unreachable: 100%25 down%0A");
        assert!(is_grpc(&headers("content-type", "application/grpc+proto")));
        assert!(!is_grpc(&headers("content-type", "application/json")));
        assert_eq!(STATUS_NAMES[usize::from(UNAVAILABLE)], "UNAVAILABLE");
        assert_eq!(STATUS_NAMES[usize::from(DEADLINE_EXCEEDED)], "DEADLINE_EXCEEDED");
    }
}
