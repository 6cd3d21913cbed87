//! Unit tests of the ambassador's annotations.

use super::super::parse_pod;
use super::*;
use serde_json::{json, Value};

fn upstreams(a: Value) -> Result<Vec<Upstream>, Vec<AnnotationError>> {
    parse_pod(a.as_object(), &Config::default()).map(|p| p.request.ambassadors)
}

#[test]
fn ca_names_a_config_map_unless_prefixed_with_secret() {
    let a = upstreams(json!({
        AMBASSADOR_UPSTREAMS: "a=https://a,b=https://b,c=https://c",
        AMBASSADOR_CA: "a=root-ca,b=secret:b-tls,c=configmap:c-ca",
    }))
    .unwrap();
    assert_eq!(a[0].ca, Some(CaSource::ConfigMap("root-ca".into())));
    assert_eq!(a[1].ca, Some(CaSource::Secret("b-tls".into())));
    assert_eq!(a[2].ca, Some(CaSource::ConfigMap("c-ca".into())));
    let errors = upstreams(json!({AMBASSADOR_UPSTREAM: "https://a", AMBASSADOR_CA: "vault:x"})).unwrap_err();
    assert_eq!(errors[0].key, AMBASSADOR_CA);
    assert!(errors[0].rule.contains("secret:NAME"), "{}", errors[0]);
}

#[test]
fn one_value_applies_to_every_upstream_and_pairs_to_the_named_ones() {
    let a = upstreams(json!({
        AMBASSADOR_UPSTREAMS: "a=https://a,b=https://b",
        AMBASSADOR_CLIENT_CERT_SECRET: "client-tls",
        AMBASSADOR_TOKEN_AUDIENCE: "b=https://b.example",
    }))
    .unwrap();
    assert_eq!(a[0].client_cert_secret.as_deref(), Some("client-tls"));
    assert_eq!(a[1].client_cert_secret.as_deref(), Some("client-tls"));
    assert_eq!(
        (a[0].token_audience.as_deref(), a[1].token_audience.as_deref()),
        (None, Some("https://b.example"))
    );
    let errors = upstreams(json!({
        AMBASSADOR_UPSTREAMS: "a=https://a",
        AMBASSADOR_TOKEN_AUDIENCE: "z=aud",
    }))
    .unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        format!("{AMBASSADOR_TOKEN_AUDIENCE}: \"z\" names no upstream of {AMBASSADOR_UPSTREAMS}")
    );
}

#[test]
fn oauth2_entries_are_parsed_per_upstream_and_each_bad_part_is_named() {
    let a = upstreams(json!({
        AMBASSADOR_UPSTREAMS: "a=http://a,b=https://b",
        AMBASSADOR_OAUTH2: "upstream=b, token-url=https://idp/token, secret=b-client, scope=read write",
    }))
    .unwrap();
    assert_eq!(a[0].oauth2, None);
    assert_eq!(
        a[1].oauth2,
        Some(OAuth2Request {
            token_url: "https://idp/token".into(),
            secret: "b-client".into(),
            scopes: vec!["read".into(), "write".into()],
        })
    );
    let errors = upstreams(json!({
        AMBASSADOR_UPSTREAM: "http://a",
        AMBASSADOR_OAUTH2: "token-url=https://idp/token,secret=Bad_Name,scope=a\"b,colour=blue",
    }))
    .unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{text:?}");
    assert!(text[0].contains("\"Bad_Name\" is not a Secret name"), "{text:?}");
    assert!(text[1].contains("is not an OAuth2 scope"), "{text:?}");
    assert!(text[2].contains("\"colour=blue\" is not one of"), "{text:?}");
    let errors = upstreams(json!({
        AMBASSADOR_UPSTREAMS: "a=http://a,b=http://b",
        AMBASSADOR_OAUTH2: "token-url=https://idp/t,secret=s;token-url=https://idp/t,secret=s",
    }))
    .unwrap_err();
    assert!(errors[0].rule.contains("needs upstream=NAME"), "{}", errors[0]);
}

#[test]
fn two_bearer_sources_for_one_upstream_are_refused() {
    let errors = upstreams(json!({
        AMBASSADOR_UPSTREAM: "https://a",
        AMBASSADOR_AUTH_SECRET: "a-token",
        AMBASSADOR_OAUTH2: "token-url=https://idp/t,secret=s",
    }))
    .unwrap_err();
    assert_eq!(errors[0].key, AMBASSADOR_OAUTH2);
    assert!(errors[0].rule.contains(AMBASSADOR_AUTH_SECRET), "{}", errors[0]);
}

#[test]
fn protocol_is_auto_unless_forced_for_all_or_per_upstream_and_a_bad_value_is_named() {
    let a = upstreams(json!({AMBASSADOR_UPSTREAM: "http://greeter:50051"})).unwrap();
    assert_eq!(a[0].protocol, UpstreamProtocol::Auto);
    let a = upstreams(json!({AMBASSADOR_UPSTREAMS: "a=http://a,b=http://b", AMBASSADOR_PROTOCOL: "http2"})).unwrap();
    assert_eq!(
        (a[0].protocol, a[1].protocol),
        (UpstreamProtocol::Http2, UpstreamProtocol::Http2)
    );
    let a = upstreams(json!({AMBASSADOR_UPSTREAMS: "a=http://a,b=http://b", AMBASSADOR_PROTOCOL: "b=http1"})).unwrap();
    assert_eq!(
        (a[0].protocol, a[1].protocol),
        (UpstreamProtocol::Auto, UpstreamProtocol::Http1)
    );
    let errors = upstreams(json!({AMBASSADOR_UPSTREAM: "http://g", AMBASSADOR_PROTOCOL: "grpc"})).unwrap_err();
    assert_eq!(errors[0].key, AMBASSADOR_PROTOCOL);
    assert!(errors[0].rule.contains("auto, http1, http2"), "{}", errors[0]);
    let errors = upstreams(json!({AMBASSADOR_PROTOCOL: "http2"})).unwrap_err();
    assert!(errors[0].rule.contains("needs"), "{}", errors[0]);
}
