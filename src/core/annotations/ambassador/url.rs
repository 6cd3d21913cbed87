//! The grammar of an upstream URL: the webhook checks `entourage.dev/ambassador-upstream(s)` with it, and the
//! ambassador (`entourage ambassador --upstream`) builds its upstream from what it returns, so a URL the webhook
//! admits is one the ambassador starts with.

use http::uri::{Authority, Uri};
use rustls_pki_types::ServerName;

/// Why an upstream URL was refused; the text follows the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URI at all.
    #[error("is not a URL ({0})")]
    Invalid(String),
    /// A scheme other than `http` and `https`.
    #[error("has scheme {0}; only http and https are proxied")]
    Scheme(String),
    /// No scheme (`orders:8080`, a bare path).
    #[error("has no scheme; write http://host:port")]
    NoScheme,
    /// No host to dial.
    #[error("has no host")]
    NoHost,
    /// A port outside 1-65535: it would be dialled as another port, or not at all.
    #[error("has port {0:?}; a port is 1-65535")]
    Port(String),
    /// `user:password@`: a credential in a URL ends up in logs and in the Pod spec.
    #[error("carries credentials; put them in a Secret named by entourage.dev/ambassador-auth-secret")]
    Credentials,
    /// Requests bring their own query; a fixed one could not be merged unambiguously.
    #[error("has a query; the app's own query is forwarded")]
    Query,
    /// An `https://` host that no certificate could name, so TLS could never verify it.
    #[error("has host {0:?}, which is neither a DNS name nor an IP address a certificate could name")]
    ServerName(String),
}

/// An upstream URL, split into what the ambassador dials and sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `https://` rather than `http://`.
    pub https: bool,
    /// Host and port as written (sent as `Host`).
    pub authority: Authority,
    /// The base path without its trailing slash; empty when the URL has none.
    pub base_path: String,
}

impl UpstreamUrl {
    /// The host to dial and to verify the certificate of (IPv6 addresses without brackets).
    pub fn host(&self) -> &str {
        self.authority.host().trim_start_matches('[').trim_end_matches(']')
    }
}

/// Parses `http://host[:port][/base]` or `https://…`.
pub fn parse_upstream_url(url: &str) -> Result<UpstreamUrl, UrlError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| UrlError::Invalid(e.to_string()))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => return Err(UrlError::Scheme(other.to_owned())),
        None => return Err(UrlError::NoScheme),
    };
    let authority = uri.authority().ok_or(UrlError::NoHost)?.clone();
    if authority.as_str().contains('@') {
        return Err(UrlError::Credentials);
    }
    if authority.host().is_empty() {
        return Err(UrlError::NoHost);
    }
    // `http::Uri` takes `svc:99999` and then reports no port at all: it would be dialled on the scheme's default.
    let text = authority.as_str();
    let after_host = &text[text.rfind(']').map_or(0, |i| i + 1)..];
    if let Some((_, port)) = after_host.rsplit_once(':') {
        if !port.is_empty() && !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(UrlError::Port(port.to_owned()));
        }
    }
    if uri.query().is_some() {
        return Err(UrlError::Query);
    }
    let parsed = UpstreamUrl {
        https,
        base_path: uri.path().trim_end_matches('/').to_owned(),
        authority,
    };
    if https && ServerName::try_from(parsed.host()).is_err() {
        return Err(UrlError::ServerName(parsed.host().to_owned()));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_scheme_authority_and_base_path() {
        let url = parse_upstream_url("https://pay.payments.svc:8443/api/").unwrap();
        assert!(url.https);
        assert_eq!(url.authority.as_str(), "pay.payments.svc:8443");
        assert_eq!(url.base_path, "/api");
        assert_eq!(parse_upstream_url("http://[::1]:81").unwrap().host(), "::1");
    }

    #[test]
    fn refuses_what_the_ambassador_could_not_start_with() {
        for (url, error) in [
            ("ftp://h", UrlError::Scheme("ftp".into())),
            ("orders:8080", UrlError::NoScheme),
            ("/just/a/path", UrlError::NoScheme),
            ("http://user@h", UrlError::Credentials),
            ("http://user:pw@h:80/x", UrlError::Credentials),
            ("http://h/?q=1", UrlError::Query),
            ("https://a!b", UrlError::ServerName("a!b".into())),
        ] {
            assert_eq!(parse_upstream_url(url), Err(error), "{url}");
        }
        assert!(matches!(parse_upstream_url("http://a b"), Err(UrlError::Invalid(_))));
        // Never dialled as another port.
        for url in ["http://svc:0", "http://svc:99999", "https://svc:65536/x"] {
            assert!(parse_upstream_url(url).is_err(), "{url}");
        }
    }
}
