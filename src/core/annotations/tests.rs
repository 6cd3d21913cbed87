//! Unit tests of the parent module.

use super::*;
use serde_json::json;

fn parse(a: Value) -> Result<Parsed, Vec<AnnotationError>> {
    parse_pod(a.as_object(), &Config::default())
}

fn first_error(a: Value) -> String {
    parse(a).unwrap_err()[0].to_string()
}

#[test]
fn relative_sidecar_path_names_annotation_value_and_rule() {
    assert_eq!(
        first_error(json!({SIDECAR_LOGS: "logs/app.log"})),
        r#"entourage.dev/sidecar-logs: "logs/app.log" is not an absolute path"#
    );
}

#[test]
fn path_rules_are_enforced() {
    for (path, rule) in [
        ("/var/log/../etc/x", "not normalised"),
        ("/var//log/x", "not normalised"),
        ("/var/log/nginx/", "directory"),
        ("/etc/passwd", "system directory"),
        ("/var/log/a b", "whitespace"),
    ] {
        let msg = first_error(json!({SIDECAR_LOGS: path}));
        assert!(msg.contains(rule), "{path}: {msg}");
    }
}

#[test]
fn too_many_files_are_refused() {
    let many: Vec<String> = (0..9).map(|i| format!("/logs/f{i}.log")).collect();
    assert!(first_error(json!({SIDECAR_LOGS: many.join(",")})).contains("at most 8"));
}

#[test]
fn every_bad_value_is_reported() {
    let errors = parse(json!({SIDECAR_LOGS: "x", INJECT: "maybe", AMBASSADOR_UPSTREAM: "ftp://h"})).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn unknown_key_warns_with_closest_known_key() {
    let parsed = parse(json!({"entourage.dev/sidecar-log": "/var/log/x.log"})).unwrap();
    assert_eq!(parsed.warnings.len(), 1);
    assert!(
        parsed.warnings[0].contains("did you mean entourage.dev/sidecar-logs"),
        "{:?}",
        parsed.warnings
    );
}

#[test]
fn unknown_adapter_format_lists_known_formats() {
    let msg = first_error(json!({ADAPTER_LOGS: "/var/log/app/a.log", ADAPTER_FORMAT: "xml"}));
    assert!(msg.contains("\"xml\"") && msg.contains("apache-combined"), "{msg}");
}

#[test]
fn invalid_adapter_regex_is_refused_with_the_regex_error() {
    let msg = first_error(json!({ADAPTER_LOGS: "/var/log/app/a.log", ADAPTER_FORMAT: "regex:(?P<x>[a-"}));
    assert!(msg.contains("not a valid regex"), "{msg}");
}

#[test]
fn adapter_fields_are_parsed_and_reserved_names_refused() {
    let p = parse(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FIELDS: "app=web, team=shop"})).unwrap();
    assert_eq!(
        p.request.adapter.unwrap().fields,
        vec![("app".into(), "web".into()), ("team".into(), "shop".into())]
    );
    assert!(first_error(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FIELDS: "time=now"})).contains("writes itself"));
}

#[test]
fn ambassador_urls_are_checked() {
    for (url, rule) in [
        ("ftp://h/x", "only http and https"),
        ("http://user:pw@h", "credentials"),
        ("orders:8080", "scheme"),
    ] {
        let msg = first_error(json!({AMBASSADOR_UPSTREAM: url}));
        assert!(msg.contains(rule), "{url}: {msg}");
    }
}

#[test]
fn several_upstreams_get_consecutive_ports_and_their_secrets() {
    let p = parse(json!({
        AMBASSADOR_UPSTREAMS: "orders=http://orders:8080,pay=https://pay",
        AMBASSADOR_PORT: "9100",
        AMBASSADOR_AUTH_SECRET: "pay=pay-token",
    }))
    .unwrap();
    let a = &p.request.ambassadors;
    assert_eq!((a[0].port, a[1].port), (9100, 9101));
    assert_eq!(
        (a[0].auth_secret.as_deref(), a[1].auth_secret.as_deref()),
        (None, Some("pay-token"))
    );
}

#[test]
fn upstreams_that_would_run_past_port_65535_from_the_config_port_are_refused() {
    let mut config = Config::default();
    config.ambassador.port = 65534;
    let three = json!({AMBASSADOR_UPSTREAMS: "a=http://a,b=http://b,c=http://c"});
    let errors = parse_pod(three.as_object(), &config).unwrap_err();
    assert!(errors[0].to_string().contains("needs 3 ports from 65534"), "{errors:?}");
    let two = json!({AMBASSADOR_UPSTREAMS: "a=http://a,b=http://b"});
    assert!(parse_pod(two.as_object(), &config).is_ok());
}

#[test]
fn bad_secret_name_and_port_are_refused() {
    assert!(
        first_error(json!({AMBASSADOR_UPSTREAM: "http://h", AMBASSADOR_AUTH_SECRET: "Bad_Name"}))
            .contains("not a Secret name")
    );
    assert!(first_error(json!({AMBASSADOR_UPSTREAM: "http://h", AMBASSADOR_PORT: "70000"})).contains("not a port"));
}

#[test]
fn adapter_multiline_time_key_renames_and_level_are_parsed() {
    let p = parse(json!({
        ADAPTER_LOGS: "/var/log/app/a.log",
        ADAPTER_MULTILINE: "java",
        ADAPTER_TIME_KEY: "@timestamp",
        ADAPTER_RENAME: "message=msg, level=severity",
        ADAPTER_LEVEL: "normalize",
    }))
    .unwrap();
    let a = p.request.adapter.unwrap();
    assert_eq!(a.multiline.as_deref(), Some("java"));
    assert_eq!(a.time_key.as_deref(), Some("@timestamp"));
    assert_eq!(
        a.renames,
        vec![("message".into(), "msg".into()), ("level".into(), "severity".into())]
    );
    assert_eq!(a.level, LevelMode::Normalize);
    // The default time key is not passed on: the adapter's default is the same.
    let p = parse(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_TIME_KEY: "time"})).unwrap();
    assert_eq!(p.request.adapter.unwrap().time_key, None);
}

#[test]
fn bad_adapter_output_values_name_the_annotation_the_value_and_the_rule() {
    let logs = "/var/log/app/a.log";
    for (key, value, want) in [
        (
            ADAPTER_MULTILINE,
            "ruby",
            "\"ruby\" is not a known preset; known presets: java, python, go, regex:",
        ),
        (
            ADAPTER_MULTILINE,
            "regex:^[0-9",
            "\"regex:^[0-9\" is not a valid regex: error: unclosed character class",
        ),
        (ADAPTER_TIME_KEY, "my time", "\"my time\" is not a key"),
        (
            ADAPTER_TIME_KEY,
            "message",
            "\"message\" is a key the adapter writes itself",
        ),
        (
            ADAPTER_RENAME,
            "message=file",
            "\"file\" is a key the adapter writes itself",
        ),
        (
            ADAPTER_RENAME,
            "msg=severity,level=severity",
            "\"severity\" is the target of two renames",
        ),
        (ADAPTER_RENAME, "msg", "\"msg\" is not from=to"),
        (ADAPTER_RENAME, "time=ts", "\"time=ts\" renames the time key"),
        (ADAPTER_RENAME, "a=b,b=c", "\"b=c\" chains with another rename"),
        (ADAPTER_LEVEL, "upper", "\"upper\" is not one of keep, normalize"),
    ] {
        let msg = first_error(json!({ADAPTER_LOGS: logs, key: value}));
        assert!(msg.starts_with(&format!("{key}: ")), "{msg}");
        assert!(msg.contains(want), "{key}={value}: {msg}");
    }
}

#[test]
fn rename_onto_the_time_key_or_a_static_field_is_refused() {
    let msg = first_error(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_TIME_KEY: "ts", ADAPTER_RENAME: "when=ts"}));
    assert!(msg.contains("\"ts\" is the time key"), "{msg}");
    let msg = first_error(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FIELDS: "app=web", ADAPTER_RENAME: "svc=app"}));
    assert!(msg.contains("\"app\" is a static field"), "{msg}");
    let msg = first_error(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FIELDS: "ts=1", ADAPTER_TIME_KEY: "ts"}));
    assert!(msg.contains("also a static field"), "{msg}");
    let msg =
        first_error(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FORMAT: "syslog", ADAPTER_RENAME: "level=severity"}));
    assert!(msg.contains("\"severity\" is a key the syslog format writes"), "{msg}");
    let msg = first_error(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FORMAT: "nginx", ADAPTER_TIME_KEY: "status"}));
    assert!(msg.contains("\"status\" is a key the nginx format writes"), "{msg}");
    // A JSON line's keys are not known in advance: its own key wins, as for static fields.
    assert!(
        parse(json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FORMAT: "json", ADAPTER_RENAME: "msg=message_text"})).is_ok()
    );
}

#[test]
fn adapter_output_annotations_without_adapter_logs_are_refused() {
    for key in [ADAPTER_MULTILINE, ADAPTER_TIME_KEY, ADAPTER_RENAME, ADAPTER_LEVEL] {
        let msg = first_error(json!({key: "x"}));
        assert!(msg.contains("needs entourage.dev/adapter-logs"), "{msg}");
    }
}

#[test]
fn adapter_field_that_the_format_writes_is_refused_as_the_adapter_refuses_it() {
    let nginx = json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FORMAT: "nginx", ADAPTER_FIELDS: "team=shop,status=ok"});
    assert_eq!(
        first_error(nginx),
        "entourage.dev/adapter-fields: \"status\" is a key the nginx format writes; two keys would collide"
    );
    let regex = json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FORMAT: "regex:(?P<level>\\w+)", ADAPTER_FIELDS: "level=x"});
    assert!(first_error(regex).contains("the regex:(?P<level>\\w+) format writes"));
    // json and logfmt take their keys from each line, where the line's own key wins.
    let logfmt = json!({ADAPTER_LOGS: "/a/b.log", ADAPTER_FORMAT: "logfmt", ADAPTER_FIELDS: "status=ok"});
    assert_eq!(
        parse(logfmt).unwrap().request.adapter.unwrap().fields,
        vec![("status".into(), "ok".into())]
    );
}
