//! What the proxy reads and rewrites in a message's headers: the hop-by-hop headers it strips (RFC 9110 §7.6.1),
//! `X-Forwarded-For`, the WebSocket handshake and `TE: trailers` it recognises, the declared length it logs, and
//! which methods may be sent twice.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};

/// How many names [`HOP_BY_HOP`] lists.
const HOPS: usize = 9;
/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the legacy ones still seen.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The `Upgrade` value of an HTTP/1.1 WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`).
pub(super) fn websocket_upgrade<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    // Most requests carry no `Upgrade`: one lookup and done.
    let upgrade = headers.get(header::UPGRADE)?;
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let websocket = upgrade.to_str().ok()?.split(',').any(|p| {
        p.trim()
            .split('/')
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("websocket"))
    });
    (connection_upgrade && websocket).then(|| upgrade.clone())
}

/// Whether the app sent `TE: trailers`, the one `TE` HTTP/2 allows and gRPC servers require.
pub(super) fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
}

/// The client's address as an `X-Forwarded-For` entry, formatted once per connection rather than per request.
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Only methods RFC 9110 calls idempotent may be sent twice.
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Which entry of [`HOP_BY_HOP`] `name` is. Header names are stored lowercase, so one `match` on the text decides:
/// it compares lengths first, and most names are rejected on that alone. Nine `HeaderName` comparisons per name
/// (two messages of a request, each header) cost more than the rest of the stripping.
fn hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Whether a `Connection` token names nothing to remove beyond the fixed list: `close`, or a hop-by-hop name.
fn names_nothing_more(token: &str) -> bool {
    // Tokens are case-insensitive; the few that are not short lowercase words take the slow way.
    let mut lower = [0u8; 24];
    let Some(buf) = lower.get_mut(..token.len()) else {
        return false;
    };
    for (out, byte) in buf.iter_mut().zip(token.bytes()) {
        *out = byte.to_ascii_lowercase();
    }
    match std::str::from_utf8(buf) {
        Ok(lower) => lower == "close" || hop_index(lower).is_some(),
        Err(_) => false,
    }
}

/// Removes the hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the message's few names finds which of the nine are present; only those are looked up again.
    let mut present = [false; HOPS];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_index(name.as_str()) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        debug_assert_eq!(HOP_BY_HOP[0], header::CONNECTION);
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                // `keep-alive` and the like are removed below anyway; `close` names no header.
                if token.is_empty() || names_nothing_more(token) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// The `Content-Length` a message declares, if any.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Private"));
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn hop_index_finds_every_listed_name_and_no_other() {
        for (i, hop) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(hop.as_str()), Some(i), "{hop}");
            assert!(names_nothing_more(&hop.as_str().to_ascii_uppercase()), "{hop}");
        }
        for other in ["accept", "host", "x-private", "connectio", "upgrades", "t", ""] {
            assert_eq!(hop_index(other), None, "{other}");
        }
        assert!(names_nothing_more("Close"));
        assert!(!names_nothing_more("X-Private"));
        assert!(!names_nothing_more("a-header-name-longer-than-the-buffer"));
    }

    #[test]
    fn strips_headers_a_connection_close_or_upgrade_names_too() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Close, Upgrade, x-a-header-name-longer-than-24"),
        );
        headers.insert("x-a-header-name-longer-than-24", HeaderValue::from_static("1"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn keeps_end_to_end_headers_and_strips_hop_by_hop_ones_without_a_connection_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert("x-request-id", HeaderValue::from_static("1"));
        let untouched = headers.clone();
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, untouched);

        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("Proxy-Connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers, untouched);
    }

    #[test]
    fn recognises_a_websocket_handshake_only_with_both_upgrade_headers() {
        let request = |connection: &str, upgrade: Option<&str>, version: Version| {
            let mut builder = Request::get("/")
                .version(version)
                .header(header::CONNECTION, connection);
            if let Some(upgrade) = upgrade {
                builder = builder.header(header::UPGRADE, upgrade);
            }
            builder.body(()).unwrap()
        };
        let upgrade = websocket_upgrade(&request("keep-alive, Upgrade", Some("WebSocket"), Version::HTTP_11));
        assert_eq!(upgrade.unwrap(), "WebSocket");
        // `Upgrade` without `Connection: upgrade` is a hop-by-hop header to strip, not a handshake.
        assert!(websocket_upgrade(&request("keep-alive", Some("websocket"), Version::HTTP_11)).is_none());
        assert!(websocket_upgrade(&request("upgrade", None, Version::HTTP_11)).is_none());
        assert!(websocket_upgrade(&request("upgrade", Some("h2c"), Version::HTTP_11)).is_none());
        assert!(websocket_upgrade(&request("upgrade", Some("websocket"), Version::HTTP_10)).is_none());
    }

    #[test]
    fn keeps_te_trailers_apart_from_other_te_values() {
        let te = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::TE, HeaderValue::from_str(value).unwrap());
            te_trailers(&headers)
        };
        assert!(te("trailers"));
        assert!(te("gzip, Trailers"));
        assert!(!te("gzip"));
        assert!(!te_trailers(&HeaderMap::new()));
    }

    #[test]
    fn retries_only_idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
