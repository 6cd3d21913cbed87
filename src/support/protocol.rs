//! The upstream protocol an ambassador speaks: one grammar for the `ambassador-protocol` annotation the webhook
//! reads and the `--upstream-protocol` flag it writes for the runtime to parse.

/// Which protocol the ambassador speaks to its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// The app's: HTTP/2 (h2c, gRPC) goes up as HTTP/2, HTTP/1.1 as HTTP/1.1 (the default).
    #[default]
    Auto,
    /// Always HTTP/1.1, for an upstream that speaks nothing else (the app's HTTP/2 requests are translated).
    Http1,
    /// Always HTTP/2 (h2c with prior knowledge to `http://`, ALPN h2 to `https://`), for an HTTP/2-only upstream.
    Http2,
}

impl UpstreamProtocol {
    /// Every value, as written.
    pub const VALUES: [&'static str; 3] = ["auto", "http1", "http2"];

    /// Parses `auto`, `http1` or `http2`; the error is the rule, for a message that names the value itself.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(Self::Auto),
            "http1" => Ok(Self::Http1),
            "http2" => Ok(Self::Http2),
            _ => Err(format!(
                "is not an upstream protocol; use one of {}",
                Self::VALUES.join(", ")
            )),
        }
    }

    /// The value as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Http1 => "http1",
            Self::Http2 => "http2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_value_it_writes_and_names_them_when_refusing() {
        for text in UpstreamProtocol::VALUES {
            assert_eq!(UpstreamProtocol::parse(text).unwrap().as_str(), text);
        }
        let error = UpstreamProtocol::parse("h2").unwrap_err();
        assert!(error.contains("auto, http1, http2"), "{error}");
        assert_eq!(UpstreamProtocol::default(), UpstreamProtocol::Auto);
    }
}
