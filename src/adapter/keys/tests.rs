//! Unit tests of the record shape.

use super::*;
use crate::adapter::formats::test_support::READ_TIME;
use crate::adapter::{render_line, Format};
use serde_json::{json, Value};

fn ctx() -> LineContext {
    let mut ctx = LineContext::new("/var/log/app.log", &[("app".into(), "shop".into())]);
    ctx.set_read_time(time::OffsetDateTime::from_unix_timestamp(1_714_564_800).unwrap()); // 2024-05-01T12:00:00Z
    ctx
}

/// Renders `line` with `format`, reshapes it and returns the object (and checks it is one line).
fn shaped(shape: &Shape, format: &str, line: &str, continuation: Option<&str>, cut: bool) -> Value {
    let ctx = ctx();
    let mut first = Vec::new();
    render_line(&format.parse::<Format>().unwrap(), line.as_bytes(), &ctx, &mut first);
    let mut out = Vec::new();
    shape.reshape(&first, continuation, cut, &ctx, &mut out);
    assert_eq!(
        out.iter().filter(|&&b| b == b'\n').count(),
        1,
        "{}",
        String::from_utf8_lossy(&out)
    );
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn continuation_is_appended_to_the_message_of_the_first_line() {
    let v = shaped(
        &Shape::default(),
        "plain",
        "ERROR failed",
        Some("java.lang.Error: x\n\tat A.b()"),
        false,
    );
    assert_eq!(
        v,
        json!({"time": READ_TIME, "message": "ERROR failed\njava.lang.Error: x\n\tat A.b()",
               "file": "/var/log/app.log", "app": "shop"})
    );
}

#[test]
fn first_line_keeps_its_parsed_fields_and_the_trace_goes_into_message() {
    let v = shaped(
        &Shape::default(),
        r"regex:^(?P<time>\S+ \S+) (?P<level>\w+) (?P<message>.*)$",
        "2024-05-01 14:00:00,250 ERROR checkout failed",
        Some("Traceback (most recent call last):\nValueError: x"),
        false,
    );
    assert_eq!(v["level"], "ERROR");
    assert_eq!(v["time"], "2024-05-01T14:00:00.250+00:00");
    assert_eq!(
        v["message"],
        "checkout failed\nTraceback (most recent call last):\nValueError: x"
    );
}

#[test]
fn format_without_message_gets_the_continuation_as_message_before_the_extras() {
    let line = r#"192.0.2.1 - - [01/May/2024:13:55:36 +0000] "GET / HTTP/1.1" 200 2 "-" "curl/8""#;
    let ctx = ctx();
    let mut first = Vec::new();
    render_line(&Format::Nginx, line.as_bytes(), &ctx, &mut first);
    let mut out = Vec::new();
    Shape::default().reshape(&first, Some("more"), false, &ctx, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.ends_with("\"message\":\"more\",\"file\":\"/var/log/app.log\",\"app\":\"shop\"}\n"),
        "{text}"
    );
}

#[test]
fn record_cut_at_the_cap_says_so() {
    let v = shaped(&Shape::default(), "plain", "x", Some("y"), true);
    assert_eq!(v["truncated"], true);
}

#[test]
fn time_key_and_renames_rename_and_levels_normalise() {
    let shape = Shape {
        time_key: Some("@timestamp".into()),
        renames: vec![("message".into(), "msg".into()), ("level".into(), "severity".into())],
        level: LevelMode::Normalize,
    };
    let v = shaped(
        &shape,
        "logfmt",
        "time=\"2024-05-01 12:00:00\" level=WARNING message=disk",
        None,
        false,
    );
    assert_eq!(
        v,
        json!({"@timestamp": "2024-05-01T12:00:00+00:00", "severity": "warn", "msg": "disk",
               "file": "/var/log/app.log", "app": "shop"})
    );
    let grouped = shaped(&shape, "plain", "E first", Some("second"), false);
    assert_eq!(grouped["msg"], "E first\nsecond");
    assert_eq!(grouped["@timestamp"], READ_TIME);
}

#[test]
fn time_that_does_not_parse_keeps_its_raw_value() {
    let shape = Shape {
        time_key: Some("ts".into()),
        ..Shape::default()
    };
    let v = shaped(&shape, "json", r#"{"time":"yesterday","n":1.50}"#, None, false);
    assert_eq!(
        v,
        json!({"ts": "yesterday", "n": 1.50, "file": "/var/log/app.log", "app": "shop"})
    );
}

#[test]
fn levels_map_to_one_vocabulary_and_unknown_ones_are_kept() {
    for (raw, want) in [
        ("WARNING", "warn"),
        ("E", "error"),
        ("err", "error"),
        ("CRITICAL", "fatal"),
        ("notice", "info"),
        ("emerg", "fatal"),
        ("TRACE", "debug"),
        ("severe", "error"),
        ("30", "info"),
        ("4", "warn"),
    ] {
        assert_eq!(normalize_level(raw), Some(want), "{raw}");
    }
    assert_eq!(normalize_level("chatty"), None);
    let shape = Shape {
        level: LevelMode::Normalize,
        ..Shape::default()
    };
    assert_eq!(shaped(&shape, "json", r#"{"level":50}"#, None, false)["level"], "error");
    assert_eq!(
        shaped(&shape, "json", r#"{"level":"chatty"}"#, None, false)["level"],
        "chatty"
    );
}

#[test]
fn identity_shape_is_only_the_default() {
    assert!(Shape::default().is_identity());
    let levels = Shape {
        level: LevelMode::Normalize,
        ..Shape::default()
    };
    assert!(!levels.is_identity());
}

#[test]
fn a_json_line_with_message_after_file_gets_the_continuation_once() {
    let v = shaped(
        &Shape::default(),
        "json",
        r#"{"file":"main.go","message":"boom"}"#,
        Some("goroutine 1"),
        false,
    );
    assert_eq!(v["message"], "boom\ngoroutine 1");
    assert_eq!(v["file"], "main.go");
}

#[test]
fn a_rename_onto_a_key_the_line_has_keeps_both_keys_under_their_own_names() {
    let shape = Shape {
        time_key: Some("ts".into()),
        renames: vec![("message".into(), "msg".into())],
        level: LevelMode::Keep,
    };
    let ctx = ctx();
    let mut out = Vec::new();
    shape.reshape(
        br#"{"time":"t","ts":1,"message":"a","msg":"b"}"#,
        None,
        false,
        &ctx,
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"time\":\"t\",\"ts\":1,\"message\":\"a\",\"msg\":\"b\"}\n"
    );
}
