//! Pure parsing of the ambassador's settings: the upstream base URL (durations: `support::duration`).
//!
//! Nothing here touches the network, the clock or the environment, so the rules are unit-tested in place.

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderValue;

use crate::core::annotations::{parse_upstream_url, UpstreamUrl, UrlError};

/// Why an upstream URL was refused: by the rule the webhook checks the annotation with.
#[derive(Debug, thiserror::Error)]
#[error("upstream URL {url:?} {rule}")]
pub struct UpstreamError {
    /// The URL as given.
    pub url: String,
    /// The rule it breaks.
    pub rule: UrlError,
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
    /// Parses `http://host:port[/base]` or `https://…` with the core's grammar ([`parse_upstream_url`]).
    pub fn parse(url: &str) -> Result<Self, UpstreamError> {
        let UpstreamUrl {
            https,
            authority,
            base_path,
        } = parse_upstream_url(url).map_err(|rule| UpstreamError {
            url: url.to_owned(),
            rule,
        })?;
        let scheme = if https { Scheme::HTTPS } else { Scheme::HTTP };
        // An authority is always a valid header value: it was parsed from visible ASCII.
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|_| UpstreamError {
            url: url.to_owned(),
            rule: UrlError::NoHost,
        })?;
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

pub use crate::support::duration::format_duration;

#[cfg(test)]
mod tests {
    use super::*;

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
        let rule = |url: &str| Upstream::parse(url).map(drop).map_err(|e| e.rule);
        assert_eq!(rule("ftp://svc"), Err(UrlError::Scheme("ftp".into())));
        assert_eq!(rule("svc:80"), Err(UrlError::NoScheme));
        assert_eq!(rule("/just/a/path"), Err(UrlError::NoScheme));
        assert_eq!(rule("http://svc/?a=1"), Err(UrlError::Query));
        assert!(matches!(rule("http://a b"), Err(UrlError::Invalid(_))));
        // The webhook refuses credentials in the annotation; the ambassador refuses them in the flag.
        assert_eq!(rule("http://user@svc"), Err(UrlError::Credentials));
    }
}
