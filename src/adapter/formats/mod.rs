//! Line formats: the names the webhook accepts in annotations, and one pure function that turns one line into one
//! JSON object.
//!
//! Every format shares the same contract: a line that does not parse is never dropped; it becomes
//! `{"time":<read time>,"message":<raw line>,"parse_error":true,…}`. Blank lines become `{"message":""}` objects
//! in every format (they often separate stack traces and are not errors).

mod clf;
mod logfmt;
mod syslog;

use super::output::{finish_extras_unless, push_str, LineContext, ObjectWriter};
use std::borrow::Cow;
use std::fmt;

pub use crate::core::logformat::{Format, FormatError, FORMAT_NAMES};

/// Appends to `out` one JSON object and a newline for one line (without its `\n`; a trailing `\r` is ignored).
///
/// Never fails: a line that does not parse as `format` is written with its raw text as `message` and
/// `"parse_error":true`; invalid UTF-8 is decoded lossily. Pure and synchronous: the time used for lines without
/// one is the context's read time.
pub fn render_line(format: &Format, line: &[u8], ctx: &LineContext, out: &mut Vec<u8>) {
    render_with(format, None, line, ctx, out);
}

/// A format ready for many lines: a `regex:` format's groups are looked up once and its capture slots reused from
/// line to line (per line, looking groups up by name and allocating captures cost as much as the match). It
/// renders exactly what [`render_line`] renders.
#[derive(Debug)]
pub(crate) struct LineRenderer {
    format: Format,
    regex: Option<RegexFields>,
}

impl LineRenderer {
    pub(crate) fn new(format: Format) -> Self {
        let regex = match &format {
            Format::Regex(re) => Some(RegexFields::new(re)),
            _ => None,
        };
        LineRenderer { format, regex }
    }

    /// [`render_line`] with this format.
    pub(crate) fn render(&mut self, line: &[u8], ctx: &LineContext, out: &mut Vec<u8>) {
        render_with(&self.format, self.regex.as_mut(), line, ctx, out);
    }
}

/// [`render_line`]; `regex` holds the groups of `format` if it is a `regex:` format (found here if not given).
fn render_with(format: &Format, regex: Option<&mut RegexFields>, line: &[u8], ctx: &LineContext, out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = match std::str::from_utf8(line) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(line),
    };
    if text.is_empty() {
        return render_message(&text, false, ctx, out);
    }
    let parsed = match format {
        Format::Nginx | Format::ApacheCombined | Format::ApacheCommon => clf::render(&text, ctx, out),
        Format::Syslog => syslog::render(&text, ctx, out),
        Format::Logfmt => logfmt::render(&text, ctx, out),
        Format::Json => render_json(&text, ctx, out),
        Format::Plain => {
            render_message(&text, false, ctx, out);
            true
        }
        Format::Regex(re) => match regex {
            Some(fields) => render_regex(re, fields, &text, ctx, out),
            None => render_regex(re, &mut RegexFields::new(re), &text, ctx, out),
        },
    };
    if !parsed {
        render_message(&text, true, ctx, out);
    }
}

/// `{"time":<read time>,"message":…[,"parse_error":true],<extras>}`
fn render_message(text: &str, parse_error: bool, ctx: &LineContext, out: &mut Vec<u8>) {
    let mut obj = ObjectWriter::begin(out);
    obj.str("time", ctx.read_time());
    obj.str("message", text);
    if parse_error {
        obj.raw("parse_error", b"true");
    }
    obj.finish(ctx);
}

/// Passes the line through byte for byte (key order, number precision and spacing inside it untouched), after
/// serde_json has checked that it is one object; the extras go in before the closing brace unless the line has
/// them already.
fn render_json(text: &str, ctx: &LineContext, out: &mut Vec<u8>) -> bool {
    let Ok(TopLevelKeys(keys, time)) = serde_json::from_str::<TopLevelKeys>(text) else {
        return false;
    };
    let start = out.len();
    let has = |key: &str| keys.iter().any(|k| k == key);
    // Valid JSON object text: trimmed, it ends with the closing brace.
    let body = text.trim();
    out.extend_from_slice(body[..body.len() - 1].trim_end().as_bytes());
    if !has("time") {
        if !keys.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"time\":");
        push_str(out, ctx.read_time());
    }
    finish_extras_unless(out, ctx, has);
    // A time in another layout than RFC 3339 (`2024-05-01 12:00:00`) is rewritten; the rest stays as written.
    if time.is_some_and(|t| ctx.normalize_time(&t).is_some_and(|n| n != t)) {
        let rendered = out.split_off(start);
        super::keys::Shape::default().reshape(&rendered, None, false, ctx, out);
    }
    true
}

/// The keys of a JSON object (values are checked and skipped, but for a string `time`), or an error if the text is
/// not one object.
struct TopLevelKeys(Vec<String>, Option<String>);

impl<'de> serde::Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = TopLevelKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TopLevelKeys, A::Error> {
                let mut keys = Vec::new();
                let mut time = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "time" {
                        if let serde_json::Value::String(t) = map.next_value::<serde_json::Value>()? {
                            time = Some(t);
                        }
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                    keys.push(key);
                }
                Ok(TopLevelKeys(keys, time))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// A `regex:` format's named groups, found once: the index of `time` and of the others in the pattern's order; and
/// the capture slots, reused.
#[derive(Debug, Clone)]
struct RegexFields {
    slots: regex::CaptureLocations,
    time: Option<usize>,
    fields: Vec<(usize, Box<str>)>,
}

impl RegexFields {
    fn new(re: &regex::Regex) -> Self {
        let mut time = None;
        let mut fields = Vec::new();
        for (index, name) in re.capture_names().enumerate() {
            match name {
                Some("time") => time = Some(index),
                Some(name) => fields.push((index, name.into())),
                None => {}
            }
        }
        RegexFields {
            slots: re.capture_locations(),
            time,
            fields,
        }
    }
}

/// `fields` must be `re`'s.
fn render_regex(re: &regex::Regex, fields: &mut RegexFields, text: &str, ctx: &LineContext, out: &mut Vec<u8>) -> bool {
    if re.captures_read(&mut fields.slots, text).is_none() {
        return false;
    }
    let slots = &fields.slots;
    let group = |index: usize| slots.get(index).map(|(start, end)| &text[start..end]);
    let mut obj = ObjectWriter::begin(out);
    match fields.time.and_then(group) {
        Some(t) => match clf::rfc3339_from_clf(t) {
            Some(rfc) => obj.raw("time", &quoted(&rfc)),
            None => match ctx.normalize_time(t) {
                Some(rfc) => obj.str("time", &rfc),
                None => obj.str("time", t),
            },
        },
        None => obj.str("time", ctx.read_time()),
    }
    for (index, name) in &fields.fields {
        if let Some(value) = group(*index) {
            obj.str(name, value);
        }
    }
    obj.finish(ctx);
    true
}

/// `s` (plain ASCII known to need no escaping) as a JSON string.
fn quoted(s: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    v.push(b'"');
    v.extend_from_slice(s);
    v.push(b'"');
    v
}

/// The value of a quoted string starting after its opening `"`, and the index after its closing `"`.
/// `unescape` maps the byte after a backslash to the character it stands for; a backslash before any other byte
/// is kept as written. Borrowed when the value holds no escape; `None` when the closing quote is missing.
fn unquote(s: &str, start: usize, unescape: impl Fn(u8) -> Option<char>) -> Option<(Cow<'_, str>, usize)> {
    let b = s.as_bytes();
    let mut owned: Option<String> = None;
    let mut run = start;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let value = match owned {
                    Some(mut o) => {
                        o.push_str(&s[run..i]);
                        Cow::Owned(o)
                    }
                    None => Cow::Borrowed(&s[start..i]),
                };
                return Some((value, i + 1));
            }
            b'\\' => match b.get(i + 1).copied().and_then(&unescape) {
                Some(c) => {
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(&s[run..i]);
                    o.push(c);
                    i += 2;
                    run = i;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Renders one line with a fixed context and returns the parsed object.
    pub(crate) fn render(format: &Format, line: &str) -> serde_json::Value {
        render_bytes(format, line.as_bytes())
    }

    pub(crate) fn render_bytes(format: &Format, line: &[u8]) -> serde_json::Value {
        let mut ctx = LineContext::new("/var/log/app.log", &[("app".into(), "shop".into())]);
        ctx.set_read_time(time::OffsetDateTime::from_unix_timestamp(1_714_564_800).unwrap()); // 2024-05-01T12:00:00Z
        let mut out = Vec::new();
        render_line(format, line, &ctx, &mut out);
        assert_eq!(out.last(), Some(&b'\n'), "one object per line");
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            1,
            "exactly one line: {}",
            String::from_utf8_lossy(&out)
        );
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("invalid JSON {e}: {}", String::from_utf8_lossy(&out)))
    }

    pub(crate) const READ_TIME: &str = "2024-05-01T12:00:00.000Z";
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn all_formats() -> Vec<Format> {
        FORMAT_NAMES
            .iter()
            .map(|n| n.replace("<pattern>", r"^(?P<a>\S+) (?P<b>.*)$").parse().unwrap())
            .collect()
    }

    proptest! {
        // `render` checks that the output is exactly one line holding one JSON object.
        #[test]
        fn any_bytes_render_to_exactly_one_json_object_in_every_format(
            line in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            for format in all_formats() {
                let v = render_bytes(&format, &line);
                prop_assert!(v.is_object());
            }
        }

        #[test]
        fn delimiter_soup_renders_to_exactly_one_json_object_in_every_format(
            line in r#"[\[\]"\\ =<>{}:,/.x0-9a-zA-Z-]{0,120}"#
        ) {
            for format in all_formats() {
                let v = render(&format, &line);
                prop_assert!(v.get("time").is_some() && v.get("file").is_some(), "{format}: {v}");
            }
        }
    }

    #[test]
    fn every_listed_name_parses_and_displays_back() {
        for name in FORMAT_NAMES {
            let name = name.replace("<pattern>", "(?P<x>.*)");
            assert_eq!(name.parse::<Format>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn unknown_format_lists_the_known_ones() {
        let err = "xml".parse::<Format>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown format \"xml\"; known formats: nginx, apache-combined, apache-common, syslog, logfmt, json, \
             plain, regex:<pattern>"
        );
    }

    #[test]
    fn regex_without_named_groups_is_refused() {
        assert_eq!(
            "regex:(a)(b)".parse::<Format>().unwrap_err().to_string(),
            "regex has no named groups"
        );
        let err = "regex:(?P<a>".parse::<Format>().unwrap_err().to_string();
        assert!(err.starts_with("invalid regex: "), "{err}");
    }

    #[test]
    fn plain_line_becomes_message_with_read_time_file_and_fields() {
        assert_eq!(
            render(&Format::Plain, "hello \"world\"\r"),
            json!({"time": READ_TIME, "message": "hello \"world\"", "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        let v = render_bytes(&Format::Plain, b"caf\xe9 ok");
        assert_eq!(v["message"], "caf\u{fffd} ok");
    }

    #[test]
    fn blank_line_is_an_empty_message_not_a_parse_error() {
        let v = render(&Format::Nginx, "");
        assert_eq!(
            v,
            json!({"time": READ_TIME, "message": "", "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn json_object_passes_through_with_extras_merged() {
        let v = render(
            &Format::Json,
            r#"{"level":"info","msg":"hi","n":3,"nested":{"a":[1,2]}}"#,
        );
        assert_eq!(
            v,
            json!({"level": "info", "msg": "hi", "n": 3, "nested": {"a": [1, 2]}, "time": READ_TIME,
                   "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn json_line_is_kept_byte_for_byte_with_big_numbers_and_key_order() {
        let ctx = LineContext::new("f", &[]);
        let mut out = Vec::new();
        render_line(
            &Format::Json,
            br#" { "z": 123456789012345678901234567890, "a": 1.50 } "#,
            &ctx,
            &mut out,
        );
        let expected = format!(
            "{{ \"z\": 123456789012345678901234567890, \"a\": 1.50,\"time\":\"{}\",\"file\":\"f\"}}\n",
            ctx.read_time()
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn empty_json_object_gets_the_extras() {
        assert_eq!(
            render(&Format::Json, "{}"),
            json!({"time": READ_TIME, "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn json_line_keeps_its_own_time_and_file() {
        let v = render(&Format::Json, r#"{"time":"2020-01-01T00:00:00Z","file":"main.go"}"#);
        assert_eq!(v["time"], "2020-01-01T00:00:00Z");
        assert_eq!(v["file"], "main.go");
        assert_eq!(v["app"], "shop");
    }

    #[test]
    fn json_time_in_another_layout_becomes_rfc3339_and_the_rest_stays() {
        let v = render(
            &Format::Json,
            r#"{"time":"2024-05-01 12:00:00,5","n":1.50,"time2":"x"}"#,
        );
        assert_eq!(
            v,
            json!({"time": "2024-05-01T12:00:00.500+00:00", "n": 1.50, "time2": "x", "file": "/var/log/app.log",
                   "app": "shop"})
        );
        assert_eq!(render(&Format::Json, r#"{"time":"soon"}"#)["time"], "soon");
    }

    #[test]
    fn json_that_is_not_an_object_is_a_parse_error() {
        for line in ["[1,2]", "{\"a\":", "hello", "42", "{\"a\":1} {\"b\":2}", "{\"a\":1}x"] {
            let v = render(&Format::Json, line);
            assert_eq!(v["parse_error"], true, "{line}");
            assert_eq!(v["message"], line);
        }
    }

    #[test]
    fn regex_named_groups_become_string_fields() {
        let f: Format = r"regex:^(?P<level>\w+) (?P<code>\d+)(?: (?P<rest>.*))?$"
            .parse()
            .unwrap();
        assert_eq!(
            render(&f, "WARN 42"),
            json!({"time": READ_TIME, "level": "WARN", "code": "42", "file": "/var/log/app.log", "app": "shop"})
        );
        assert_eq!(render(&f, "WARN 42 disk full")["rest"], "disk full");
    }

    #[test]
    fn regex_time_group_in_clf_form_becomes_rfc3339() {
        let f: Format = r"regex:^\[(?P<time>[^\]]+)\] (?P<msg>.*)$".parse().unwrap();
        assert_eq!(
            render(&f, "[10/Oct/2000:13:55:36 -0700] hi")["time"],
            "2000-10-10T13:55:36-07:00"
        );
        assert_eq!(render(&f, "[yesterday] hi")["time"], "yesterday");
    }

    /// A line of a `regex:` format rendered the plain way: `captures` and a look-up by name per group.
    fn render_regex_by_name(re: &regex::Regex, text: &str, ctx: &LineContext, out: &mut Vec<u8>) {
        if text.is_empty() {
            return render_message(text, false, ctx, out);
        }
        let Some(caps) = re.captures(text) else {
            return render_message(text, true, ctx, out);
        };
        let mut obj = ObjectWriter::begin(out);
        match caps.name("time") {
            Some(t) => match clf::rfc3339_from_clf(t.as_str()) {
                Some(rfc) => obj.raw("time", &quoted(&rfc)),
                None => match ctx.normalize_time(t.as_str()) {
                    Some(rfc) => obj.str("time", &rfc),
                    None => obj.str("time", t.as_str()),
                },
            },
            None => obj.str("time", ctx.read_time()),
        }
        for name in re.capture_names().flatten().filter(|&n| n != "time") {
            if let Some(m) = caps.name(name) {
                obj.str(name, m.as_str());
            }
        }
        obj.finish(ctx);
    }

    proptest! {
        // The renderer keeps its capture slots from line to line: a group that matched on one line and not on the
        // next must not leak.
        #[test]
        fn regex_renderer_reused_over_lines_renders_what_captures_by_name_render(
            lines in proptest::collection::vec(r"[ab]{0,3}( [0-9]{4}-0[1-9]-1[0-9] 1[0-9]:[0-5][0-9]:[0-5][0-9](,[0-9]{1,4})?)?( [a-c ]{0,6})?", 1..20)
        ) {
            let pattern = r"^(?P<level>[ab]+)?(?: (?P<time>\S+ \S+))?(?: (?P<rest>.*))?$";
            let format: Format = format!("regex:{pattern}").parse().unwrap();
            let re = regex::Regex::new(pattern).unwrap();
            let mut renderer = LineRenderer::new(format);
            let ctx = LineContext::new("f", &[]);
            for line in &lines {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                renderer.render(line.as_bytes(), &ctx, &mut got);
                render_regex_by_name(&re, line, &ctx, &mut want);
                prop_assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
            }
        }
    }

    #[test]
    fn regex_that_does_not_match_is_a_parse_error() {
        let f: Format = r"regex:^(?P<a>\d+)$".parse().unwrap();
        let v = render(&f, "abc");
        assert_eq!(
            v,
            json!({"time": READ_TIME, "message": "abc", "parse_error": true, "file": "/var/log/app.log",
                             "app": "shop"})
        );
    }
}
