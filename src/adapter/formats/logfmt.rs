//! logfmt: `level=info msg="user logged in" user=42 cached` — values are strings, a bare key is `true`.
//!
//! A line needs at least one `key=value` pair to count as logfmt (otherwise any sentence would become a set of
//! `true` flags). A key repeated on one line keeps its first position and its last value. The line's keys win over
//! the adapter's extra fields, and a `time` value becomes RFC 3339 when it is a time the adapter knows (kept as written
//! otherwise).

use super::{LineContext, ObjectWriter};
use std::borrow::Cow;

enum Value<'a> {
    Str(Cow<'a, str>),
    True,
}

/// Writes the object for one line; false (with nothing written) if the line is not logfmt.
pub(super) fn render(text: &str, ctx: &LineContext, out: &mut Vec<u8>) -> bool {
    let Some(pairs) = parse(text) else {
        return false;
    };
    let mut obj = ObjectWriter::begin(out);
    let has = |key: &str| pairs.iter().any(|(k, _)| *k == key);
    if !has("time") {
        obj.str("time", ctx.read_time());
    }
    for (key, value) in &pairs {
        match value {
            Value::Str(s) if *key == "time" => match ctx.normalize_time(s) {
                Some(t) => obj.str(key, &t),
                None => obj.str(key, s),
            },
            Value::Str(s) => obj.str(key, s),
            Value::True => obj.raw(key, b"true"),
        }
    }
    obj.finish_unless(ctx, has);
    true
}

fn parse(s: &str) -> Option<Vec<(&str, Value<'_>)>> {
    let b = s.as_bytes();
    let mut pairs: Vec<(&str, Value<'_>)> = Vec::new();
    let mut any_value = false;
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        let key = &s[start..i];
        if key.is_empty() {
            return None;
        }
        let value = if b.get(i) == Some(&b'=') {
            i += 1;
            any_value = true;
            if b.get(i) == Some(&b'"') {
                let (value, end) = quoted(s, i + 1)?;
                i = end;
                Value::Str(value)
            } else {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                Value::Str(Cow::Borrowed(&s[start..i]))
            }
        } else if i == b.len() || b[i].is_ascii_whitespace() {
            Value::True
        } else {
            return None;
        };
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => pairs.push((key, value)),
        }
    }
    any_value.then_some(pairs)
}

/// The value of a quoted string starting after its opening `"`, and the index after its closing `"`.
fn quoted(s: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    super::unquote(s, start, |b| match b {
        b'"' => Some('"'),
        b'\\' => Some('\\'),
        b'n' => Some('\n'),
        b't' => Some('\t'),
        b'r' => Some('\r'),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Format;
    use serde_json::json;

    #[test]
    fn logfmt_pairs_become_string_fields_and_bare_keys_true() {
        assert_eq!(
            render(
                &Format::Logfmt,
                r#"level=info msg="user logged in" user=42 cached empty="#
            ),
            json!({"time": READ_TIME, "level": "info", "msg": "user logged in", "user": "42", "cached": true,
                   "empty": "", "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn logfmt_quoted_value_escapes_are_undone() {
        let v = render(&Format::Logfmt, r#"msg="say \"hi\"\n\tC:\\dir \x" k=v"#);
        assert_eq!(v["msg"], "say \"hi\"\n\tC:\\dir \\x");
    }

    #[test]
    fn logfmt_line_keeps_its_own_time_file_and_fields() {
        let v = render(&Format::Logfmt, "time=2024-05-01T10:00:00Z file=main.go app=api");
        assert_eq!(
            v,
            json!({"time": "2024-05-01T10:00:00Z", "file": "main.go", "app": "api"}),
            "the line's keys win over the extras"
        );
    }

    #[test]
    fn logfmt_repeated_key_keeps_its_first_position_and_last_value() {
        let ctx = crate::adapter::LineContext::new("f", &[]);
        let mut out = Vec::new();
        crate::adapter::render_line(&Format::Logfmt, b"time=t a=1 b=2 a=3", &ctx, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"time\":\"t\",\"a\":\"3\",\"b\":\"2\",\"file\":\"f\"}\n"
        );
    }

    #[test]
    fn logfmt_unterminated_quote_or_sentence_is_a_parse_error() {
        for line in [r#"msg="never closed"#, "just a sentence", "=value", r#"a"b=c"#] {
            let v = render(&Format::Logfmt, line);
            assert_eq!(v["parse_error"], true, "{line}");
            assert_eq!(v["message"], line);
        }
    }
}
