//! The ambassador's annotations: upstreams, ports, and what each upstream is told about identity (auth Secret,
//! client certificate, CA, workload token audience). With several upstreams every identity annotation takes one
//! value for all, or `name=value,…` per upstream, parsed by one function ([`per_upstream`]).

use super::{
    err, AnnotationError, Lookup, AMBASSADOR_AUTH_SECRET, AMBASSADOR_CA, AMBASSADOR_CLIENT_CERT_SECRET,
    AMBASSADOR_OAUTH2, AMBASSADOR_PORT, AMBASSADOR_PROTOCOL, AMBASSADOR_TOKEN_AUDIENCE, AMBASSADOR_UPSTREAM,
    AMBASSADOR_UPSTREAMS,
};
use crate::core::config::Config;
use crate::support::names::{is_dns_label, is_dns_subdomain};
use crate::support::protocol::UpstreamProtocol;

mod url;
pub use url::{parse_upstream_url, UpstreamUrl, UrlError};

/// One ambassador upstream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Upstream {
    /// The name from `ambassador-upstreams`; `None` for the single-upstream annotation.
    pub name: Option<String>,
    /// The upstream URL.
    pub url: String,
    /// The local port the app calls.
    pub port: u16,
    /// The Secret holding the token, if any.
    pub auth_secret: Option<String>,
    /// The `kubernetes.io/tls` Secret presented to the upstream, if any.
    pub client_cert_secret: Option<String>,
    /// Where the CA that verifies the upstream comes from, if not the system's.
    pub ca: Option<CaSource>,
    /// The audience of the projected ServiceAccount token sent as the bearer, if any.
    pub token_audience: Option<String>,
    /// OAuth2 client credentials whose access token is sent as the bearer, if any.
    pub oauth2: Option<OAuth2Request>,
    /// The protocol spoken upstream (`ambassador-protocol`).
    pub protocol: UpstreamProtocol,
}

/// One upstream's `ambassador-oauth2` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Request {
    /// The token endpoint (`https://`).
    pub token_url: String,
    /// The Secret holding `client-id` and `client-secret`.
    pub secret: String,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
}

/// The object holding an upstream's CA bundle (under `ambassador.caKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A ConfigMap: CAs are public, and trust bundles (trust-manager, `kube-root-ca.crt`) are ConfigMaps.
    ConfigMap(String),
    /// A Secret (`secret:NAME`), as cert-manager writes `ca.crt` next to a certificate.
    Secret(String),
}

/// Parses every ambassador annotation; bad values go to `errors`.
pub(super) fn parse(lookup: Lookup<'_>, config: &Config, errors: &mut Vec<AnnotationError>) -> Vec<Upstream> {
    let get = |k: &str| lookup.text(k);
    let named: Vec<(Option<String>, String)> = match (get(AMBASSADOR_UPSTREAM), get(AMBASSADOR_UPSTREAMS)) {
        (Some(_), Some(many)) => {
            errors.push(err(
                AMBASSADOR_UPSTREAMS,
                many,
                format!("cannot be combined with {AMBASSADOR_UPSTREAM}; use one of them"),
            ));
            return Vec::new();
        }
        (Some(url), None) => vec![(None, url.trim().to_string())],
        (None, Some(many)) => parse_named_upstreams(many, errors),
        (None, None) => {
            for orphan in [
                AMBASSADOR_PORT,
                AMBASSADOR_AUTH_SECRET,
                AMBASSADOR_CLIENT_CERT_SECRET,
                AMBASSADOR_CA,
                AMBASSADOR_TOKEN_AUDIENCE,
                AMBASSADOR_OAUTH2,
                AMBASSADOR_PROTOCOL,
            ] {
                if let Some(v) = get(orphan) {
                    errors.push(err(
                        orphan,
                        v,
                        format!("needs {AMBASSADOR_UPSTREAM} or {AMBASSADOR_UPSTREAMS}"),
                    ));
                }
            }
            return Vec::new();
        }
    };
    for (_, url) in &named {
        if let Err(rule) = check_url(url) {
            let key = if get(AMBASSADOR_UPSTREAM).is_some() {
                AMBASSADOR_UPSTREAM
            } else {
                AMBASSADOR_UPSTREAMS
            };
            errors.push(err(key, url, rule));
        }
    }
    let first_port = match get(AMBASSADOR_PORT) {
        // Past 65535 the ports would repeat: two ambassadors on one port, and one of them cannot bind.
        None if usize::from(config.ambassador.port) + named.len().saturating_sub(1) > 65535 => {
            errors.push(err(
                AMBASSADOR_UPSTREAMS,
                get(AMBASSADOR_UPSTREAMS).unwrap_or_default(),
                format!(
                    "needs {} ports from {} (config ambassador.port); set {AMBASSADOR_PORT} lower",
                    named.len(),
                    config.ambassador.port
                ),
            ));
            return Vec::new();
        }
        None => config.ambassador.port,
        Some(p) => match p.trim().parse::<u16>() {
            Ok(port) if port > 0 && usize::from(port) + named.len() - 1 <= 65535 => port,
            _ => {
                errors.push(err(
                    AMBASSADOR_PORT,
                    p,
                    "is not a port in 1-65535 (with room for one port per upstream)",
                ));
                return Vec::new();
            }
        },
    };
    let mut per = |key: &'static str, check: fn(&str) -> Result<(), String>| {
        get(key)
            .map(|value| per_upstream(key, value, &named, check, errors))
            .unwrap_or_else(|| vec![None; named.len()])
    };
    let secrets = per(AMBASSADOR_AUTH_SECRET, check_secret_name);
    let client_certs = per(AMBASSADOR_CLIENT_CERT_SECRET, check_secret_name);
    let cas = per(AMBASSADOR_CA, |v| parse_ca(v).map(drop));
    let audiences = per(AMBASSADOR_TOKEN_AUDIENCE, check_audience);
    let protocols = per(AMBASSADOR_PROTOCOL, |v| UpstreamProtocol::parse(v).map(drop));
    let mut oauth2 = get(AMBASSADOR_OAUTH2)
        .map(|value| parse_oauth2(value, &named, errors))
        .unwrap_or_else(|| vec![None; named.len()]);

    let mut upstreams = Vec::with_capacity(named.len());
    for (i, (name, url)) in named.into_iter().enumerate() {
        let upstream = Upstream {
            port: first_port.saturating_add(u16::try_from(i).unwrap_or(u16::MAX)),
            auth_secret: secrets[i].clone(),
            client_cert_secret: client_certs[i].clone(),
            ca: cas[i].as_deref().and_then(|v| parse_ca(v).ok()),
            token_audience: audiences[i].clone(),
            oauth2: oauth2[i].take(),
            protocol: protocols[i]
                .as_deref()
                .and_then(|v| UpstreamProtocol::parse(v).ok())
                .unwrap_or_default(),
            name,
            url,
        };
        check_identity(&upstream, errors);
        upstreams.push(upstream);
    }
    upstreams
}

/// Rules across annotations for one upstream: TLS settings need TLS, and one bearer at a time.
fn check_identity(upstream: &Upstream, errors: &mut Vec<AnnotationError>) {
    let target = upstream.name.as_deref().unwrap_or(&upstream.url);
    let plain_http = upstream.url.trim().starts_with("http://");
    if plain_http {
        if let Some(secret) = &upstream.client_cert_secret {
            errors.push(err(
                AMBASSADOR_CLIENT_CERT_SECRET,
                secret,
                format!("asks for mTLS, but upstream {target:?} is plain http://; use an https:// URL"),
            ));
        }
        if let Some(ca) = &upstream.ca {
            let (CaSource::ConfigMap(name) | CaSource::Secret(name)) = ca;
            errors.push(err(
                AMBASSADOR_CA,
                name,
                format!("verifies TLS, but upstream {target:?} is plain http://; use an https:// URL"),
            ));
        }
    }
    if let Some(oauth2) = &upstream.oauth2 {
        let other = match (&upstream.auth_secret, &upstream.token_audience) {
            (Some(_), _) => Some(AMBASSADOR_AUTH_SECRET),
            (None, Some(_)) => Some(AMBASSADOR_TOKEN_AUDIENCE),
            (None, None) => None,
        };
        if let Some(other) = other {
            errors.push(err(
                AMBASSADOR_OAUTH2,
                &oauth2.token_url,
                format!("and {other} would both set the bearer token for upstream {target:?}; use one"),
            ));
        }
    }
    if let (Some(secret), Some(audience)) = (&upstream.auth_secret, &upstream.token_audience) {
        errors.push(err(
            AMBASSADOR_TOKEN_AUDIENCE,
            audience,
            format!(
                "and {AMBASSADOR_AUTH_SECRET} ({secret:?}) would both set the bearer token for upstream {target:?}; use one"
            ),
        ));
    }
}

fn parse_named_upstreams(value: &str, errors: &mut Vec<AnnotationError>) -> Vec<(Option<String>, String)> {
    let mut out: Vec<(Option<String>, String)> = Vec::new();
    for pair in value.split(',').map(str::trim) {
        let Some((name, url)) = pair.split_once('=') else {
            errors.push(err(AMBASSADOR_UPSTREAMS, pair, "is not name=url"));
            continue;
        };
        let name = name.trim();
        if !is_dns_label(name) || name.len() > 40 {
            errors.push(err(
                AMBASSADOR_UPSTREAMS,
                name,
                "is not a lowercase DNS label of at most 40 characters",
            ));
        } else if out.iter().any(|(n, _)| n.as_deref() == Some(name)) {
            errors.push(err(AMBASSADOR_UPSTREAMS, name, "is named twice"));
        } else {
            out.push((Some(name.to_string()), url.trim().to_string()));
        }
    }
    out
}

/// One value for every upstream, or `name=value,…` naming upstreams of `ambassador-upstreams` (a value with `=`
/// in it is read as pairs). Each value passes `check`; the result has one slot per upstream.
fn per_upstream(
    key: &'static str,
    value: &str,
    upstreams: &[(Option<String>, String)],
    check: fn(&str) -> Result<(), String>,
    errors: &mut Vec<AnnotationError>,
) -> Vec<Option<String>> {
    let mut slots = vec![None; upstreams.len()];
    let checked = |v: &str, errors: &mut Vec<AnnotationError>| match check(v) {
        Ok(()) => Some(v.to_string()),
        Err(rule) => {
            errors.push(err(key, v, rule));
            None
        }
    };
    if !value.contains('=') {
        if let Some(v) = checked(value.trim(), errors) {
            slots.iter_mut().for_each(|s| *s = Some(v.clone()));
        }
        return slots;
    }
    for pair in value.split(',').map(str::trim) {
        let Some((upstream, v)) = pair.split_once('=') else {
            errors.push(err(key, pair, "is not upstream=value"));
            continue;
        };
        let (upstream, v) = (upstream.trim(), v.trim());
        match upstreams.iter().position(|(n, _)| n.as_deref() == Some(upstream)) {
            None => errors.push(err(
                key,
                upstream,
                format!("names no upstream of {AMBASSADOR_UPSTREAMS}"),
            )),
            Some(i) => slots[i] = checked(v, errors),
        }
    }
    slots
}

/// Parses `token-url=…,secret=…[,scope=…][,upstream=…]` entries separated by `;`. An entry without `upstream=`
/// applies to every upstream and must be the only one.
fn parse_oauth2(
    value: &str,
    upstreams: &[(Option<String>, String)],
    errors: &mut Vec<AnnotationError>,
) -> Vec<Option<OAuth2Request>> {
    let mut slots: Vec<Option<OAuth2Request>> = vec![None; upstreams.len()];
    let entries: Vec<&str> = value.split(';').map(str::trim).filter(|e| !e.is_empty()).collect();
    for entry in &entries {
        let (mut token_url, mut secret, mut scopes, mut upstream) = (None, None, Vec::new(), None);
        // Keys given at all, valid or not: a bad value is reported once, not also as missing.
        let mut given: Vec<&str> = Vec::new();
        for pair in entry.split(',').map(str::trim) {
            let pair_key = pair.split_once('=').map(|(k, _)| k.trim());
            given.extend(pair_key);
            match pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("token-url", url)) => match check_token_url(url) {
                    Ok(()) => token_url = Some(url.to_string()),
                    Err(rule) => errors.push(err(AMBASSADOR_OAUTH2, url, rule)),
                },
                Some(("secret", name)) => match check_secret_name(name) {
                    Ok(()) => secret = Some(name.to_string()),
                    Err(rule) => errors.push(err(AMBASSADOR_OAUTH2, name, rule)),
                },
                Some(("scope", list)) => {
                    for scope in list.split_whitespace() {
                        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
                        if scope.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)) {
                            scopes.push(scope.to_string());
                        } else {
                            errors.push(err(AMBASSADOR_OAUTH2, scope, "is not an OAuth2 scope (RFC 6749 §3.3)"));
                        }
                    }
                }
                Some(("upstream", name)) => upstream = Some(name),
                _ => errors.push(err(
                    AMBASSADOR_OAUTH2,
                    pair,
                    "is not one of token-url=URL, secret=NAME, scope=SCOPES, upstream=NAME",
                )),
            }
        }
        for key in ["token-url", "secret"] {
            if !given.contains(&key) {
                errors.push(err(AMBASSADOR_OAUTH2, entry, format!("has no {key}=")));
            }
        }
        let (Some(token_url), Some(secret)) = (token_url, secret) else {
            continue;
        };
        let request = OAuth2Request {
            token_url,
            secret,
            scopes,
        };
        match upstream {
            None if entries.len() == 1 => slots.iter_mut().for_each(|s| *s = Some(request.clone())),
            None => errors.push(err(
                AMBASSADOR_OAUTH2,
                entry,
                "needs upstream=NAME when the annotation has several entries",
            )),
            Some(name) => match upstreams.iter().position(|(n, _)| n.as_deref() == Some(name)) {
                None => errors.push(err(
                    AMBASSADOR_OAUTH2,
                    name,
                    format!("names no upstream of {AMBASSADOR_UPSTREAMS}"),
                )),
                Some(i) if slots[i].is_some() => errors.push(err(AMBASSADOR_OAUTH2, name, "is given twice")),
                Some(i) => slots[i] = Some(request),
            },
        }
    }
    slots
}

/// A token URL: a URL as for upstreams, and https, since the client secret travels in the request. The
/// ambassador checks `--oauth2-token-url` with it too.
pub fn check_token_url(url: &str) -> Result<(), String> {
    check_url(url)?;
    if url.starts_with("https://") {
        Ok(())
    } else {
        Err("is not an https:// token URL; the client secret must not cross the network in clear text".into())
    }
}

fn check_secret_name(name: &str) -> Result<(), String> {
    if is_dns_subdomain(name) {
        Ok(())
    } else {
        Err("is not a Secret name (a lowercase DNS-1123 subdomain)".into())
    }
}

/// `NAME` (a ConfigMap) or `secret:NAME` / `configmap:NAME`.
fn parse_ca(value: &str) -> Result<CaSource, String> {
    let (source, name): (fn(String) -> CaSource, &str) = match value.split_once(':') {
        None => (CaSource::ConfigMap, value),
        Some(("configmap", name)) => (CaSource::ConfigMap, name),
        Some(("secret", name)) => (CaSource::Secret, name),
        Some((kind, _)) => {
            return Err(format!(
                "names a {kind:?}; write a ConfigMap name, configmap:NAME or secret:NAME"
            ))
        }
    };
    if is_dns_subdomain(name) {
        Ok(source(name.to_string()))
    } else {
        Err("is not a ConfigMap or Secret name (a lowercase DNS-1123 subdomain)".into())
    }
}

/// An audience is an opaque string the token's consumer compares verbatim (`aud` claim); the apiserver takes any
/// non-empty one, but one with whitespace or control characters is a mistake, and one over 253 characters cannot
/// be a DNS name or a sensible URL.
fn check_audience(audience: &str) -> Result<(), String> {
    if audience.is_empty() {
        return Err("is an empty audience".into());
    }
    if audience.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("is not a token audience: it contains whitespace or control characters".into());
    }
    if audience.len() > 253 {
        return Err(format!(
            "is not a token audience: it is {} characters long, the limit is 253",
            audience.len()
        ));
    }
    Ok(())
}

/// The rules an upstream URL must follow: [`parse_upstream_url`]'s, which the ambassador parses `--upstream` with.
pub fn check_url(url: &str) -> Result<(), String> {
    parse_upstream_url(url).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
