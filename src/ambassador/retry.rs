//! Which failed attempts are worth another try, and how long to wait first.
//!
//! Only a request that can be sent again unchanged is retried: an idempotent method (RFC 9110 §9.2.2) without a
//! body. A connect error or a 503 is retried with exponential backoff; a 429 or 503 carrying `Retry-After` is
//! retried after the delay the upstream asked for, and a 429 without it is not retried (the upstream did not say
//! when it would accept more). No retry waits past the request's own deadline (`--timeout`): a wait that would end
//! after it returns the upstream's answer to the app at once, which is more useful than a 504 later.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, StatusCode};

/// First pause before a retry without `Retry-After`; each further retry waits twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest backoff between two retries without `Retry-After`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why an attempt is retried; the label of the `retries` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No connection (TCP or TLS) could be made.
    Connect,
    /// 503 Service Unavailable.
    Unavailable,
    /// 429 Too Many Requests with `Retry-After`.
    TooManyRequests,
    /// A gRPC call answered `UNAVAILABLE` before any message.
    GrpcUnavailable,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 4] = [
        Reason::Connect,
        Reason::Unavailable,
        Reason::TooManyRequests,
        Reason::GrpcUnavailable,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::Unavailable => "503",
            Reason::TooManyRequests => "429",
            Reason::GrpcUnavailable => "grpc_unavailable",
        }
    }

    /// The position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Whether an answer asks for a retry, and after how long. `backoff` is the pause to use when the upstream does
/// not say; `now` reads an HTTP-date `Retry-After`.
pub fn after_answer(
    status: StatusCode,
    headers: &HeaderMap,
    backoff: Duration,
    now: SystemTime,
) -> Option<(Reason, Duration)> {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Some((Reason::Unavailable, retry_after(headers, now).unwrap_or(backoff))),
        StatusCode::TOO_MANY_REQUESTS => retry_after(headers, now).map(|wait| (Reason::TooManyRequests, wait)),
        _ => None,
    }
}

/// Whether [`after_answer`] may retry an answer with `status` at all: callers check this first and read the clock
/// only then.
pub fn may_retry(status: StatusCode) -> bool {
    matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS)
}

/// The delay `Retry-After` asks for (RFC 9110 §10.2.3): delay-seconds or an HTTP-date (zero once past).
/// An unreadable value counts as absent.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate; the deadline check refuses them anyway.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The next backoff after `current`.
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, retry_after.parse().unwrap());
        h
    }

    #[test]
    fn reads_retry_after_as_seconds_or_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after(&headers("1"), now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&headers(" 120 "), now), Some(Duration::from_secs(120)));
        // 2015-10-21 07:28:00 is the `now` above; ten seconds later.
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:10 GMT"), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        for bad in ["-1", "1.5", "soon", ""] {
            assert_eq!(retry_after(&headers(bad), now), None, "{bad:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retries_503_always_and_429_only_with_retry_after() {
        let now = SystemTime::now();
        let backoff = Duration::from_millis(50);
        assert_eq!(
            after_answer(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), backoff, now),
            Some((Reason::Unavailable, backoff))
        );
        assert_eq!(
            after_answer(StatusCode::SERVICE_UNAVAILABLE, &headers("3"), backoff, now),
            Some((Reason::Unavailable, Duration::from_secs(3)))
        );
        assert_eq!(
            after_answer(StatusCode::TOO_MANY_REQUESTS, &headers("1"), backoff, now),
            Some((Reason::TooManyRequests, Duration::from_secs(1)))
        );
        assert_eq!(
            after_answer(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), backoff, now),
            None
        );
        assert_eq!(after_answer(StatusCode::BAD_GATEWAY, &headers("1"), backoff, now), None);
        assert_eq!(after_answer(StatusCode::OK, &HeaderMap::new(), backoff, now), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(next_backoff(FIRST_BACKOFF), Duration::from_millis(100));
        assert_eq!(next_backoff(Duration::from_millis(1500)), MAX_BACKOFF);
    }
}
