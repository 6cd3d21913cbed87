//! Syslog lines: RFC 5424 (`<34>1 2003-10-11T22:14:15.003Z host app 1234 ID47 [sd@1 k="v"] msg`) and RFC 3164 / BSD
//! (`<34>Oct 11 22:14:15 host app[1234]: msg`), the `<PRI>` being optional because files written by syslog daemons
//! usually drop it.
//!
//! An RFC 3164 timestamp has neither year nor zone: the year is inferred from the read time (a December line read in
//! January belongs to the previous year) and the zone is taken as UTC, the usual zone of a container.

use super::{LineContext, ObjectWriter};
use crate::adapter::output::push_str;
use std::borrow::Cow;

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// Writes the object for one line; false (with nothing written) if the line is not syslog.
pub(super) fn render(text: &str, ctx: &LineContext, out: &mut Vec<u8>) -> bool {
    let mut obj = ObjectWriter::begin(out);
    let parsed = match priority(text) {
        Some((pri, rest)) => match rest.split_once(' ') {
            Some((version, rest)) if is_version(version) => rfc5424(pri, rest, ctx, &mut obj),
            _ => rfc3164(Some(pri), rest, ctx, &mut obj),
        },
        None => rfc3164(None, text, ctx, &mut obj),
    };
    if parsed.is_some() {
        obj.finish(ctx);
        true
    } else {
        obj.rollback();
        false
    }
}

/// `<PRI>` (0 to 191) and the text after it.
fn priority(s: &str) -> Option<(u8, &str)> {
    let rest = s.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pri: u8 = digits.parse().ok().filter(|&p| p <= 191)?;
    Some((pri, &rest[end + 1..]))
}

fn is_version(s: &str) -> bool {
    !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0')
}

fn write_priority(obj: &mut ObjectWriter<'_>, pri: u8) {
    let digits = pri.to_string();
    obj.raw("priority", digits.as_bytes());
    obj.str("facility", FACILITIES[usize::from(pri / 8)]);
    obj.str("severity", SEVERITIES[usize::from(pri % 8)]);
}

/// A string field, left out when it is the RFC 5424 NILVALUE `-`.
fn optional(obj: &mut ObjectWriter<'_>, key: &str, value: &str) {
    if value != "-" && !value.is_empty() {
        obj.str(key, value);
    }
}

fn rfc5424(pri: u8, s: &str, ctx: &LineContext, obj: &mut ObjectWriter<'_>) -> Option<()> {
    let mut fields = s.splitn(6, ' ');
    let (timestamp, hostname, app_name) = (fields.next()?, fields.next()?, fields.next()?);
    let (procid, msgid, rest) = (fields.next()?, fields.next()?, fields.next()?);
    if timestamp == "-" {
        obj.str("time", ctx.read_time());
    } else if is_rfc3339(timestamp) {
        obj.str("time", timestamp);
    } else {
        return None;
    }
    write_priority(obj, pri);
    optional(obj, "hostname", hostname);
    optional(obj, "app_name", app_name);
    optional(obj, "procid", procid);
    optional(obj, "msgid", msgid);
    let message = if let Some(rest) = rest.strip_prefix('-') {
        rest
    } else {
        let (sd, rest) = structured_data(rest)?;
        write_structured_data(obj.open("structured_data"), &sd);
        rest
    };
    let message = match message.strip_prefix(' ') {
        Some(m) => m.strip_prefix('\u{feff}').unwrap_or(m),
        None if message.is_empty() => message,
        None => return None,
    };
    optional(obj, "message", message);
    Some(())
}

/// SD-ID → (PARAM-NAME → values): RFC 5424 lets a name repeat, so values are collected and written as an array
/// when there is more than one.
type Sd<'a> = Vec<(&'a str, Vec<(&'a str, Vec<Cow<'a, str>>)>)>;

/// Parses one or more `[id name="value" …]` elements; returns them and the text after them.
fn structured_data(mut s: &str) -> Option<(Sd<'_>, &str)> {
    let mut sd: Sd<'_> = Vec::new();
    while let Some(rest) = s.strip_prefix('[') {
        let id_end = rest.find([' ', ']'])?;
        let id = &rest[..id_end];
        if id.is_empty() {
            return None;
        }
        let at = match sd.iter().position(|(i, _)| *i == id) {
            Some(at) => at,
            None => {
                sd.push((id, Vec::new()));
                sd.len() - 1
            }
        };
        s = &rest[id_end..];
        while let Some(rest) = s.strip_prefix(' ') {
            let (name, rest) = rest.split_once("=\"")?;
            if name.is_empty() || name.contains([' ', ']', '"']) {
                return None;
            }
            let (value, rest) = sd_value(rest)?;
            let params = &mut sd[at].1;
            match params.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => params.push((name, vec![value])),
            }
            s = rest;
        }
        s = s.strip_prefix(']')?;
    }
    (!sd.is_empty()).then_some((sd, s))
}

/// A PARAM-VALUE up to its closing `"`, with the escapes `\"`, `\\` and `\]` undone.
fn sd_value(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let (value, end) = super::unquote(s, 0, |b| matches!(b, b'"' | b'\\' | b']').then_some(char::from(b)))?;
    Some((value, &s[end..]))
}

fn write_structured_data(out: &mut Vec<u8>, sd: &Sd<'_>) {
    out.push(b'{');
    for (i, (id, params)) in sd.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, id);
        out.extend_from_slice(b":{");
        for (j, (name, values)) in params.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            push_str(out, name);
            out.push(b':');
            if let [value] = values.as_slice() {
                push_str(out, value);
            } else {
                out.push(b'[');
                for (k, value) in values.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    push_str(out, value);
                }
                out.push(b']');
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let frac = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if frac == 0 {
            return false;
        }
        i += 1 + frac;
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] => b.len() == i + 6 && digits(i + 1..i + 3) && b[i + 3] == b':' && digits(i + 4..i + 6),
        _ => false,
    }
}

fn rfc3164(pri: Option<u8>, s: &str, ctx: &LineContext, obj: &mut ObjectWriter<'_>) -> Option<()> {
    let (time, rest) = match bsd_timestamp(s, ctx) {
        Some((time, rest)) => (Some(time), rest),
        None => match s.split_once(' ') {
            // rsyslog's RSYSLOG_FileFormat writes a full RFC 3339 timestamp in the BSD layout.
            Some((t, rest)) if is_rfc3339(t) => (Some(t.to_owned()), rest),
            // A line with a PRI but no timestamp is still syslog: all of it is the message (RFC 3164 §4.3.3).
            _ => (None, s),
        },
    };
    let pri = match (pri, &time) {
        (None, None) => return None,
        (pri, _) => pri,
    };
    obj.str("time", time.as_deref().unwrap_or(ctx.read_time()));
    if let Some(pri) = pri {
        write_priority(obj, pri);
    }
    if time.is_none() {
        obj.str("message", s);
        return Some(());
    }
    let (first, after_first) = s_split_word(rest);
    let (hostname, tag_and_message) = if looks_like_tag(first) {
        (None, rest)
    } else {
        (Some(first), after_first)
    };
    if let Some(hostname) = hostname {
        optional(obj, "hostname", hostname);
    }
    let (tag, message) = s_split_word(tag_and_message);
    match tag.strip_suffix(':').filter(|_| looks_like_tag(tag)) {
        Some(tag) => {
            let (app, procid) = match tag.strip_suffix(']').and_then(|t| t.split_once('[')) {
                Some((app, pid)) => (app, Some(pid)),
                None => (tag, None),
            };
            optional(obj, "app_name", app);
            if let Some(pid) = procid {
                optional(obj, "procid", pid);
            }
            obj.str("message", message);
        }
        None => obj.str("message", tag_and_message),
    }
    Some(())
}

fn s_split_word(s: &str) -> (&str, &str) {
    s.split_once(' ').unwrap_or((s, ""))
}

/// `app:` or `app[123]:`, the TAG that follows the hostname.
fn looks_like_tag(word: &str) -> bool {
    word.len() > 1
        && word.ends_with(':')
        && word[..word.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'[' | b']' | b'@'))
}

/// `Mmm dd hh:mm:ss ` (day space-padded) as RFC 3339 in the configured zone with the inferred year, and the text after it.
fn bsd_timestamp<'a>(s: &'a str, ctx: &LineContext) -> Option<(String, &'a str)> {
    let b = s.as_bytes().get(..16)?;
    let month: u8 = match &b[..3] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let num = |h: u8, l: u8| -> Option<u8> {
        let h = if h == b' ' {
            0
        } else {
            h.checked_sub(b'0').filter(|d| *d <= 9)?
        };
        let l = l.checked_sub(b'0').filter(|d| *d <= 9)?;
        Some(h * 10 + l)
    };
    let layout = b[3] == b' ' && b[6] == b' ' && b[9] == b':' && b[12] == b':' && b[15] == b' ';
    let day = num(b[4], b[5]).filter(|d| (1..=31).contains(d))?;
    let hour = num(b[7], b[8]).filter(|h| *h <= 23 && b[7] != b' ')?;
    let minute = num(b[10], b[11]).filter(|m| *m <= 59 && b[10] != b' ')?;
    let second = num(b[13], b[14]).filter(|s| *s <= 60 && b[13] != b' ')?;
    if !layout {
        return None;
    }
    let (read_year, read_month) = ctx.read_year_month();
    // More than a month ahead of the read time means last year's line (read across New Year).
    let year = if month > read_month + 1 {
        read_year - 1
    } else {
        read_year
    };
    // No zone either: the configured one (`--time-zone`, UTC by default).
    let time = match ctx.zone() {
        chrono_tz::Tz::UTC => format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"),
        _ => ctx
            .normalize_time(&format!(
                "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}"
            ))
            .unwrap_or_else(|| format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")),
    };
    Some((time, &s[16..]))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::Format;
    use serde_json::json;

    #[test]
    fn rfc5424_line_with_structured_data_becomes_typed_fields() {
        let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry"#;
        assert_eq!(
            render(&Format::Syslog, line),
            json!({
                "time": "2003-10-11T22:14:15.003Z", "priority": 165, "facility": "local4", "severity": "notice",
                "hostname": "mymachine.example.com", "app_name": "evntslog", "msgid": "ID47",
                "structured_data": {
                    "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
                    "examplePriority@32473": {"class": "high"}
                },
                "message": "An application event log entry", "file": "/var/log/app.log", "app": "shop"
            })
        );
    }

    #[test]
    fn rfc5424_nil_values_are_left_out_and_nil_time_is_the_read_time() {
        let v = render(
            &Format::Syslog,
            "<34>1 - - su - - - \u{feff}'su root' failed on /dev/pts/8",
        );
        assert_eq!(
            v,
            json!({"time": READ_TIME, "priority": 34, "facility": "auth", "severity": "crit", "app_name": "su",
                   "message": "'su root' failed on /dev/pts/8", "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn rfc5424_param_value_escapes_are_undone_and_repeated_names_become_arrays() {
        let line = r#"<14>1 2024-05-01T12:00:00+02:00 h a 42 - [x@1 q="say \"hi\" \] \\" q="2"]"#;
        let v = render(&Format::Syslog, line);
        assert_eq!(v["structured_data"], json!({"x@1": {"q": ["say \"hi\" ] \\", "2"]}}));
        assert_eq!(v["procid"], "42");
        assert_eq!(v["time"], "2024-05-01T12:00:00+02:00");
        assert!(v.get("message").is_none());
    }

    #[test]
    fn rfc3164_line_gets_year_from_read_time_and_tag_split_into_app_and_pid() {
        let line = "<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8";
        assert_eq!(
            render(&Format::Syslog, line),
            json!({"time": "2023-10-11T22:14:15Z", "priority": 34, "facility": "auth", "severity": "crit",
                   "hostname": "mymachine", "app_name": "su", "procid": "123",
                   "message": "'su root' failed for lonvick on /dev/pts/8", "file": "/var/log/app.log", "app": "shop"})
        );
    }

    #[test]
    fn rfc3164_file_line_without_priority_and_with_padded_day() {
        let v = render(&Format::Syslog, "May  1 11:59:58 web-1 CRON: (root) CMD (run-parts)");
        assert_eq!(v["time"], "2024-05-01T11:59:58Z");
        assert_eq!(v["hostname"], "web-1");
        assert_eq!(v["app_name"], "CRON");
        assert_eq!(v["message"], "(root) CMD (run-parts)");
        assert!(v.get("priority").is_none());
    }

    #[test]
    fn rfc3164_line_without_hostname_takes_the_tag() {
        let v = render(&Format::Syslog, "<13>Apr 30 10:00:00 myapp: started");
        assert_eq!(
            (v["app_name"].as_str(), v["message"].as_str()),
            (Some("myapp"), Some("started"))
        );
        assert!(v.get("hostname").is_none());
    }

    #[test]
    fn priority_without_timestamp_keeps_the_rest_as_message() {
        let v = render(&Format::Syslog, "<13>something odd happened");
        assert_eq!(v["message"], "something odd happened");
        assert_eq!(v["severity"], "notice");
        assert!(v.get("parse_error").is_none());
    }

    #[test]
    fn text_without_priority_or_timestamp_is_a_parse_error() {
        for line in [
            "hello world",
            "<999>Oct 11 22:14:15 h a: b",
            "<34>1 yesterday h a - - - msg",
        ] {
            let v = render(&Format::Syslog, line);
            assert_eq!(v["parse_error"], true, "{line}");
            assert_eq!(v["message"], line);
        }
    }

    #[test]
    fn rfc3164_time_is_read_in_the_configured_zone() {
        let mut ctx = crate::adapter::LineContext::new("f", &[]);
        ctx.set_read_time(time::OffsetDateTime::from_unix_timestamp(1_714_564_800).unwrap());
        ctx.set_zone(chrono_tz::Europe::Paris);
        let mut out = Vec::new();
        crate::adapter::render_line(&Format::Syslog, b"May  1 11:59:58 web-1 CRON: run", &ctx, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2024-05-01T11:59:58+02:00");
    }
}
