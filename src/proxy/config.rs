//! Pure parsing of the ambassador's settings: durations such as `30s` and the upstream base URL.
//!
//! Nothing here touches the network, the clock or the environment, so the rules are unit-tested in place.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderValue;

/// Why an upstream URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The text is not a URI at all.
    #[error("upstream URL {url:?} is not a valid URI: {source}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What the URI parser said.
        source: http::uri::InvalidUri,
    },
    /// Only plain HTTP and HTTPS upstreams are supported.
    #[error("upstream URL {0:?} must start with http:// or https://")]
    Scheme(String),
    /// A base URL without a host cannot be dialled.
    #[error("upstream URL {0:?} has no host")]
    NoHost(String),
    /// Requests bring their own query; a fixed one could not be merged unambiguously.
    #[error("upstream URL {0:?} must not carry a query string")]
    Query(String),
}

/// The upstream base URL, split once at start-up so the hot path only concatenates.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    host_header: HeaderValue,
    /// Base path without its trailing slash; empty when the URL has none.
    base_path: String,
    display: String,
}

impl Upstream {
    /// Parses `http://host:port[/base]` or `https://…`.
    pub fn parse(url: &str) -> Result<Self, UpstreamError> {
        let uri: Uri = url.parse().map_err(|source| UpstreamError::Invalid {
            url: url.to_owned(),
            source,
        })?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(UpstreamError::Scheme(url.to_owned())),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .cloned()
            .ok_or_else(|| UpstreamError::NoHost(url.to_owned()))?;
        if uri.query().is_some() {
            return Err(UpstreamError::Query(url.to_owned()));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        // An authority is always a valid header value: it was parsed from visible ASCII.
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| UpstreamError::NoHost(url.to_owned()))?;
        Ok(Self {
            display: format!("{scheme}://{authority}{base_path}"),
            scheme,
            authority,
            host_header,
            base_path,
        })
    }

    /// Whether the upstream is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The host to dial and to verify the certificate of (IPv6 addresses without brackets).
    pub fn host(&self) -> &str {
        self.authority.host().trim_start_matches('[').trim_end_matches(']')
    }

    /// The port to dial: explicit, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// The value sent as `Host`: the upstream's authority, since the app addressed the ambassador, not the service.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The upstream as shown in logs and error bodies.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The origin-form target sent upstream: the base path followed by the request's own path and query.
    pub fn uri_for(&self, request: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = match (request.path_and_query(), self.base_path.is_empty()) {
            (Some(pq), true) => pq.clone(),
            (None, true) => PathAndQuery::from_static("/"),
            (pq, false) => {
                let pq = pq.map_or("/", PathAndQuery::as_str);
                let mut joined = String::with_capacity(self.base_path.len() + pq.len());
                joined.push_str(&self.base_path);
                joined.push_str(pq);
                PathAndQuery::try_from(joined)?
            }
        };
        Ok(Uri::from(path_and_query))
    }
}

/// Parses a duration such as `500ms`, `30s`, `2m`, `1h` or a sum like `1m30s` (clap value parser).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 2m, 1h or 1m30s");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Like [`parse_duration`], but zero is refused: a zero timeout would fail every request.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("timeout {text:?} must be greater than zero")),
        d => Ok(d),
    }
}

/// Formats a duration the way the flags take it (`30s`, `500ms`), for messages.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_durations_without_unit_or_number() {
        for bad in ["", "30", "s", "1.5s", "10 s", "3d", "-1s", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn refuses_zero_timeouts() {
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0ms").is_err());
        assert_eq!(parse_timeout("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn formats_durations_like_the_flags() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn appends_request_path_and_query_to_base_path() {
        let up = Upstream::parse("http://svc:8080/api/").unwrap();
        let uri = up.uri_for(&"/users?id=1".parse().unwrap()).unwrap();
        assert_eq!(uri.to_string(), "/api/users?id=1");
        assert_eq!((up.host(), up.port()), ("svc", 8080));
        assert_eq!(up.host_header(), "svc:8080");
        assert_eq!(up.display(), "http://svc:8080/api");
    }

    #[test]
    fn keeps_request_path_without_base_path() {
        let up = Upstream::parse("https://svc").unwrap();
        assert!(up.is_https());
        let uri = up.uri_for(&"/a/b?c".parse().unwrap()).unwrap();
        assert_eq!(uri.to_string(), "/a/b?c");
        assert_eq!((up.host(), up.port()), ("svc", 443));
        let v6 = Upstream::parse("http://[::1]:81").unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 81));
    }

    #[test]
    fn rejects_unusable_upstreams() {
        assert!(matches!(Upstream::parse("ftp://svc"), Err(UpstreamError::Scheme(_))));
        assert!(matches!(Upstream::parse("svc:80"), Err(UpstreamError::Scheme(_))));
        assert!(matches!(Upstream::parse("/just/a/path"), Err(UpstreamError::Scheme(_))));
        assert!(matches!(
            Upstream::parse("http://svc/?a=1"),
            Err(UpstreamError::Query(_))
        ));
        assert!(matches!(
            Upstream::parse("http://a b"),
            Err(UpstreamError::Invalid { .. })
        ));
    }
}
