//! The Common/Combined Log Format family: nginx `combined`, Apache `combined` and Apache `common`.
//!
//! `host ident user [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.1" 200 2326 "referer" "user agent" [extra…]`
//!
//! One lenient byte parser serves all three: the referer and user agent are read when present, anything after them
//! is kept as `extra` (nginx setups often append `$request_time` or `"$http_x_forwarded_for"`). Inside quoted
//! fields it undoes both escape styles: Apache's `\"` and `\\`, and nginx's `\xHH` (nginx escapes `"`, `\` and every
//! byte outside printable ASCII that way, so a UTF-8 user agent arrives as `\xC3\xA9`). A `-` stands for "no value":
//! such fields are left out, except `bytes`, where Apache documents `-` as zero bytes.

use super::{quoted, LineContext, ObjectWriter};
use memchr::{memchr, memchr2};
use std::borrow::Cow;

/// Writes the object for one line; false (with nothing written) if the line is not in this format.
pub(super) fn render(text: &str, ctx: &LineContext, out: &mut Vec<u8>) -> bool {
    let mut obj = ObjectWriter::begin(out);
    if parse(text, &mut obj).is_some() {
        obj.finish(ctx);
        true
    } else {
        obj.rollback();
        false
    }
}

fn parse(s: &str, obj: &mut ObjectWriter<'_>) -> Option<()> {
    let mut c = Cursor { s, i: 0 };
    let remote_addr = c.word()?;
    let ident = c.word()?;
    let remote_user = c.word()?;
    let time = rfc3339_from_clf(c.bracketed()?)?;
    obj.raw("time", &quoted(&time));
    optional(obj, "remote_addr", remote_addr);
    optional(obj, "ident", ident);
    optional(obj, "remote_user", remote_user);
    let request = c.quoted()?;
    request_fields(obj, &request);
    if !obj.uint("status", c.word()?) {
        return None;
    }
    match c.word()? {
        "-" => obj.raw("bytes", b"0"),
        bytes if obj.uint("bytes", bytes) => {}
        _ => return None,
    }
    if c.peek() == Some(b'"') {
        optional(obj, "referer", &c.quoted()?);
        if c.peek() == Some(b'"') {
            optional(obj, "user_agent", &c.quoted()?);
        }
    }
    let extra = c.rest().trim_end();
    if !extra.is_empty() {
        obj.str("extra", extra);
    }
    Some(())
}

/// A string field, left out when the log has `-` (or nothing) there.
fn optional(obj: &mut ObjectWriter<'_>, key: &str, value: &str) {
    if !value.is_empty() && value != "-" {
        obj.str(key, value);
    }
}

/// `METHOD PATH PROTOCOL` becomes three fields (`METHOD PATH`, HTTP/0.9, two); anything else that is not `-` is kept
/// whole as `request` (garbage such as a TLS handshake sent to a plain HTTP port).
fn request_fields(obj: &mut ObjectWriter<'_>, request: &str) {
    if let Some((method, path, protocol)) = split_request(request) {
        obj.str("method", method);
        obj.str("path", path);
        if let Some(protocol) = protocol {
            obj.str("protocol", protocol);
        }
    } else {
        optional(obj, "request", request);
    }
}

fn split_request(request: &str) -> Option<(&str, &str, Option<&str>)> {
    let (method, rest) = request.split_once(' ')?;
    if method.is_empty()
        || method.len() > 32
        || !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return None;
    }
    match rest.rsplit_once(' ') {
        Some((path, protocol)) if protocol.starts_with("HTTP/") && !path.is_empty() => {
            Some((method, path, Some(protocol)))
        }
        None if !rest.is_empty() => Some((method, rest, None)),
        _ => None,
    }
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        let b = self.s.as_bytes();
        while self.i < b.len() && b[self.i] == b' ' {
            self.i += 1;
        }
    }

    /// A non-empty run of bytes up to the next space or the end.
    fn word(&mut self) -> Option<&'a str> {
        let b = &self.s.as_bytes()[self.i..];
        let len = memchr(b' ', b).unwrap_or(b.len());
        if len == 0 {
            return None;
        }
        let word = &self.s[self.i..self.i + len];
        self.i += len;
        self.skip_spaces();
        Some(word)
    }

    /// The text inside `[…]`.
    fn bracketed(&mut self) -> Option<&'a str> {
        let b = &self.s.as_bytes()[self.i..];
        if b.first() != Some(&b'[') {
            return None;
        }
        let len = memchr(b']', b)?;
        let inner = &self.s[self.i + 1..self.i + len];
        self.i += len + 1;
        self.skip_spaces();
        Some(inner)
    }

    /// The unescaped text inside `"…"`. The closing quote is the first unescaped `"` followed by a space or the end
    /// of the line, so an unescaped quote inside (old nginx versions) does not cut the field short.
    fn quoted(&mut self) -> Option<Cow<'a, str>> {
        let b = self.s.as_bytes();
        if b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            j += memchr2(b'"', b'\\', &b[j..])?;
            if b[j] == b'\\' {
                escaped = true;
                j += 2;
                if j > b.len() {
                    return None;
                }
            } else if j + 1 == b.len() || b[j + 1] == b' ' {
                break;
            } else {
                j += 1;
            }
        }
        let inner = &self.s[start..j];
        self.i = j + 1;
        self.skip_spaces();
        Some(if escaped { unescape(inner) } else { Cow::Borrowed(inner) })
    }

    fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }
}

/// Undoes `\"`, `\\` (Apache) and `\xHH` (nginx); other backslashes are kept as they are.
fn unescape(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                c @ (b'"' | b'\\') => {
                    out.push(c);
                    i += 2;
                    continue;
                }
                b'x' => {
                    if let (Some(h), Some(l)) = (b.get(i + 2).and_then(hex), b.get(i + 3).and_then(hex)) {
                        out.push(h << 4 | l);
                        i += 4;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(c: &u8) -> Option<u8> {
    char::from(*c).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `10/Oct/2000:13:55:36 -0700` as RFC 3339 `2000-10-10T13:55:36-07:00` (the log's own offset is kept).
pub(super) fn rfc3339_from_clf(s: &str) -> Option<[u8; 25]> {
    let b: &[u8; 26] = s.as_bytes().try_into().ok()?;
    let month: &[u8; 2] = match &b[3..6] {
        b"Jan" => b"01",
        b"Feb" => b"02",
        b"Mar" => b"03",
        b"Apr" => b"04",
        b"May" => b"05",
        b"Jun" => b"06",
        b"Jul" => b"07",
        b"Aug" => b"08",
        b"Sep" => b"09",
        b"Oct" => b"10",
        b"Nov" => b"11",
        b"Dec" => b"12",
        _ => return None,
    };
    let two = |at: usize, max: u8| -> Option<[u8; 2]> {
        let (h, l) = (b[at], b[at + 1]);
        (h.is_ascii_digit() && l.is_ascii_digit() && (h - b'0') * 10 + (l - b'0') <= max).then_some([h, l])
    };
    let separators = b[2] == b'/' && b[6] == b'/' && b[11] == b':' && b[14] == b':' && b[17] == b':' && b[20] == b' ';
    if !separators || !b[7..11].iter().all(u8::is_ascii_digit) || !matches!(b[21], b'+' | b'-') {
        return None;
    }
    let day = two(0, 31)?;
    if day == *b"00" {
        return None;
    }
    let (hour, minute, second) = (two(12, 23)?, two(15, 59)?, two(18, 60)?);
    let (off_h, off_m) = (two(22, 23)?, two(24, 59)?);
    let mut out = *b"0000-00-00T00:00:00+00:00";
    out[0..4].copy_from_slice(&b[7..11]);
    out[5..7].copy_from_slice(month);
    out[8..10].copy_from_slice(&day);
    out[11..13].copy_from_slice(&hour);
    out[14..16].copy_from_slice(&minute);
    out[17..19].copy_from_slice(&second);
    out[19] = b[21];
    out[20..22].copy_from_slice(&off_h);
    out[23..25].copy_from_slice(&off_m);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Format;
    use serde_json::json;

    const NGINX: &str = r#"203.0.113.7 - alice [01/May/2024:13:55:36 +0200] "GET /api/v1/items?id=3 HTTP/1.1" 200 5123 "https://shop.example/cart" "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0""#;

    #[test]
    fn nginx_combined_line_becomes_typed_fields() {
        assert_eq!(
            render(&Format::Nginx, NGINX),
            json!({
                "time": "2024-05-01T13:55:36+02:00", "remote_addr": "203.0.113.7", "remote_user": "alice",
                "method": "GET", "path": "/api/v1/items?id=3", "protocol": "HTTP/1.1", "status": 200, "bytes": 5123,
                "referer": "https://shop.example/cart", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
                "file": "/var/log/app.log", "app": "shop"
            })
        );
    }

    #[test]
    fn nginx_dash_fields_are_left_out_and_dash_bytes_is_zero() {
        let v = render(
            &Format::Nginx,
            r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "HEAD / HTTP/1.0" 304 - "-" "-""#,
        );
        assert_eq!(
            v,
            json!({"time": "2024-05-01T13:55:36+00:00", "remote_addr": "10.0.0.1", "method": "HEAD", "path": "/",
                   "protocol": "HTTP/1.0", "status": 304, "bytes": 0, "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn nginx_line_with_escaped_quote_in_user_agent_keeps_the_quote() {
        let line = r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "curl \"x\" \x22y\x22 caf\xC3\xA9""#;
        assert_eq!(render(&Format::Nginx, line)["user_agent"], "curl \"x\" \"y\" café");
    }

    #[test]
    fn apache_line_with_escaped_quote_and_backslash_in_path_unescapes_both() {
        let line = r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "GET /a\"b\\c HTTP/1.1" 200 1 "-" "ua""#;
        assert_eq!(render(&Format::ApacheCombined, line)["path"], "/a\"b\\c");
    }

    #[test]
    fn unescaped_quote_not_followed_by_a_space_does_not_end_the_field() {
        let line = r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "GET /q?s="x"y HTTP/1.1" 200 1 "-" "ua""#;
        let v = render(&Format::Nginx, line);
        assert_eq!(v["path"], "/q?s=\"x\"y");
        assert_eq!(v["user_agent"], "ua");
    }

    #[test]
    fn ipv6_remote_addr_is_kept_whole() {
        let line = r#"2001:db8::8a2e:370:7334 - - [01/May/2024:13:55:36 -0730] "GET / HTTP/2.0" 200 1 "-" "ua""#;
        let v = render(&Format::Nginx, line);
        assert_eq!(v["remote_addr"], "2001:db8::8a2e:370:7334");
        assert_eq!(v["time"], "2024-05-01T13:55:36-07:30");
    }

    #[test]
    fn dash_request_line_leaves_out_method_path_and_protocol() {
        let v = render(
            &Format::Nginx,
            r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "-" 400 0 "-" "-""#,
        );
        assert_eq!(v["status"], 400);
        for key in ["method", "path", "protocol", "request", "parse_error"] {
            assert!(v.get(key).is_none(), "{key} in {v}");
        }
    }

    #[test]
    fn garbage_request_line_is_kept_as_request() {
        let line = r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "\x16\x03\x01\x00\xF7\x01" 400 157 "-" "-""#;
        let v = render(&Format::Nginx, line);
        assert_eq!(v["request"], "\u{16}\u{3}\u{1}\u{0}\u{fffd}\u{1}");
        assert!(v.get("method").is_none());
        let v = render(
            &Format::Nginx,
            r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "hello there" 400 0 "-" "-""#,
        );
        assert_eq!(v["request"], "hello there");
    }

    #[test]
    fn http09_request_has_no_protocol() {
        let v = render(
            &Format::Nginx,
            r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "GET /x" 200 1 "-" "-""#,
        );
        assert_eq!((v["method"].as_str(), v["path"].as_str()), (Some("GET"), Some("/x")));
        assert!(v.get("protocol").is_none());
    }

    #[test]
    fn apache_common_line_has_no_referer_or_user_agent() {
        let line =
            r#"127.0.0.1 user-identifier frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#;
        assert_eq!(
            render(&Format::ApacheCommon, line),
            json!({"time": "2000-10-10T13:55:36-07:00", "remote_addr": "127.0.0.1", "ident": "user-identifier",
                   "remote_user": "frank", "method": "GET", "path": "/apache_pb.gif", "protocol": "HTTP/1.0",
                   "status": 200, "bytes": 2326, "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn trailing_nginx_fields_are_kept_as_extra() {
        let line = format!("{NGINX} \"198.51.100.2\" 0.012");
        assert_eq!(render(&Format::Nginx, &line)["extra"], "\"198.51.100.2\" 0.012");
    }

    #[test]
    fn missing_fields_or_garbage_are_a_parse_error_with_the_raw_message() {
        for line in [
            "just some text",
            r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "GET / HTTP/1.1""#,
            r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "GET / HTTP/1.1" abc 1"#,
            r#"10.0.0.1 - - [31/Foo/2024:13:55:36 +0000] "GET / HTTP/1.1" 200 1"#,
            r#"10.0.0.1 - - [01/May/2024:25:55:36 +0000] "GET / HTTP/1.1" 200 1"#,
            r#"10.0.0.1 - - [01/May/2024:13:55:36 +0000] "GET / HTTP/1.1 200 1"#,
        ] {
            let v = render(&Format::Nginx, line);
            assert_eq!(v["parse_error"], true, "{line}");
            assert_eq!(v["message"], line);
            assert_eq!(v["time"], READ_TIME);
            assert_eq!(v["file"], "/var/log/app.log");
        }
    }
}
