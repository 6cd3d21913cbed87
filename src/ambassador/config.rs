//! Pure parsing of the ambassador's settings: the upstream base URL (durations: `support::duration`).
//!
//! Nothing here touches the network, the clock or the environment, so the rules are unit-tested in place.

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
