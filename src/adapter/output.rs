//! JSON output: the per-line context and an append-only object writer over a reused `Vec<u8>`.
//!
//! Objects are written straight into one buffer that the follower hands to stdout in large blocks; nothing is built
//! as a `serde_json::Value` on the hot path. Strings that need escaping go through serde_json's serializer, so
//! escaping is exactly JSON's.

use serde::Serializer as _;
use time::OffsetDateTime;

/// Largest piece of a line written as one object: a longer line is split into pieces of at most this many bytes,
/// so that one runaway line cannot hold the adapter's memory.
pub const MAX_LINE: usize = 1 << 20;

/// What every object of one followed file gets besides the fields parsed from its line: the read time (used when a
/// line carries no time of its own), the `file` path and the static `--field` pairs.
#[derive(Debug, Clone)]
pub struct LineContext {
    read_time: String,
    year: i32,
    month: u8,
    /// The read time again, for completing source times ([`super::timefmt`]).
    clock: chrono::DateTime<chrono::FixedOffset>,
    /// The zone of source times written without an offset (`--time-zone`).
    zone: chrono_tz::Tz,
    /// Each extra field, for formats whose keys vary per line.
    extras: Vec<Extra>,
    /// All extras concatenated, then `}` and the newline: the common tail of every object.
    suffix: Vec<u8>,
}

impl LineContext {
    /// A context for lines of `file`, with the static `fields` (key, value) added to every object after `file`.
    /// The read time starts as the Unix epoch; set it with [`LineContext::set_read_time`].
    pub fn new(file: &str, fields: &[(String, String)]) -> Self {
        let mut extras = Vec::with_capacity(fields.len() + 1);
        for (key, value) in std::iter::once(("file", file)).chain(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            let mut rendered = vec![b','];
            push_str(&mut rendered, key);
            rendered.push(b':');
            push_str(&mut rendered, value);
            extras.push(Extra {
                key: key.to_owned(),
                rendered,
            });
        }
        let mut suffix: Vec<u8> = extras.iter().flat_map(|e| e.rendered.iter().copied()).collect();
        suffix.extend_from_slice(b"}\n");
        let mut ctx = LineContext {
            read_time: String::new(),
            year: 1970,
            month: 1,
            clock: chrono::DateTime::UNIX_EPOCH.fixed_offset(),
            zone: chrono_tz::Tz::UTC,
            extras,
            suffix,
        };
        ctx.set_read_time(OffsetDateTime::UNIX_EPOCH);
        ctx
    }

    /// Sets the time given to lines that carry none (the follower calls this once per read, not per line).
    pub fn set_read_time(&mut self, t: OffsetDateTime) {
        let t = t.to_offset(time::UtcOffset::UTC);
        self.year = t.year();
        self.month = u8::from(t.month());
        self.clock = chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
            .unwrap_or_default()
            .fixed_offset();
        self.read_time.clear();
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(
            &mut self.read_time,
            format_args!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                self.month,
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
        );
    }

    /// The read time as RFC 3339 (UTC, milliseconds).
    pub fn read_time(&self) -> &str {
        &self.read_time
    }

    /// Reads source times written without an offset in `zone`.
    pub fn set_zone(&mut self, zone: chrono_tz::Tz) {
        self.zone = zone;
    }

    /// The zone of source times written without an offset.
    pub(crate) fn zone(&self) -> chrono_tz::Tz {
        self.zone
    }

    /// `raw` as RFC 3339 with an offset, completed from the read time and the zone ([`super::timefmt`]); `None`
    /// when it is no time the adapter knows.
    pub(crate) fn normalize_time(&self, raw: &str) -> Option<String> {
        super::timefmt::normalize(raw, self.clock, self.zone)
    }

    /// Year and month of the read time: RFC 3164 syslog timestamps have no year, so it is inferred from these.
    pub(crate) fn read_year_month(&self) -> (i32, u8) {
        (self.year, self.month)
    }
}

/// Appends the extras whose key the line does not have, then `}` and the newline, to an object that already has at
/// least one field.
pub(crate) fn finish_extras_unless(out: &mut Vec<u8>, ctx: &LineContext, line_has: impl Fn(&str) -> bool) {
    for extra in &ctx.extras {
        if !line_has(&extra.key) {
            out.extend_from_slice(&extra.rendered);
        }
    }
    out.extend_from_slice(b"}\n");
}

/// One `file` or `--field` pair, with its pre-rendered form `,"key":"value"`.
#[derive(Debug, Clone)]
struct Extra {
    key: String,
    rendered: Vec<u8>,
}

/// Appends `s` as a JSON string (quoted and escaped).
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    // Most fields of a log line need no escaping; checking that eight bytes at a time and copying them whole is the
    // single largest saving on the hot path. Anything else goes through serde_json's escaper.
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = serde_json::Serializer::new(&mut *out).serialize_str(s);
}

/// Whether `b` has a byte JSON strings must escape: a control character, `"` or `\`.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Per byte, the high bit of `(x - n) & !x & 0x80` is set when x < n (for n <= 0x80); with x = w ^ c and n = 1,
    // when the byte equals c.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let w = u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        if below(w, 0x20) | below(w ^ (ONES * 0x22), 1) | below(w ^ (ONES * 0x5C), 1) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// Appends a JSON object, field by field, into the output buffer; on a parse failure the caller rolls it back.
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
    empty: bool,
}

impl<'o> ObjectWriter<'o> {
    /// Opens an object at the end of `out`.
    pub(crate) fn begin(out: &'o mut Vec<u8>) -> Self {
        let start = out.len();
        out.push(b'{');
        ObjectWriter {
            out,
            start,
            empty: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        push_str(self.out, key);
        self.out.push(b':');
    }

    /// A string field.
    pub(crate) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_str(self.out, value);
    }

    /// A field whose value is already valid JSON (a number, `true`, a nested object written by the caller).
    pub(crate) fn raw(&mut self, key: &str, json: &[u8]) {
        self.key(key);
        self.out.extend_from_slice(json);
    }

    /// Opens a field whose value the caller writes next, as valid JSON, into the returned buffer.
    pub(crate) fn open(&mut self, key: &str) -> &mut Vec<u8> {
        self.key(key);
        self.out
    }

    /// An unsigned integer field given as its decimal digits; returns false (writing nothing) if `digits` is not one.
    pub(crate) fn uint(&mut self, key: &str, digits: &str) -> bool {
        let d = digits.as_bytes();
        if d.is_empty() || d.len() > 19 || !d.iter().all(u8::is_ascii_digit) {
            return false;
        }
        // JSON numbers have no leading zeros.
        let first = d.iter().position(|&c| c != b'0').unwrap_or(d.len() - 1);
        self.raw(key, &d[first..]);
        true
    }

    /// Closes the object with the `file` and `--field` extras and the newline.
    pub(crate) fn finish(self, ctx: &LineContext) {
        self.out.extend_from_slice(&ctx.suffix);
    }

    /// Closes the object like [`ObjectWriter::finish`], but leaves out extras whose key the line already set:
    /// for formats whose keys vary per line, the line's own field wins.
    pub(crate) fn finish_unless(self, ctx: &LineContext, line_has: impl Fn(&str) -> bool) {
        finish_extras_unless(self.out, ctx, line_has);
    }

    /// Closes the object as it is (no extras: a reshaped object already has them) and adds the newline.
    pub(crate) fn close(self) {
        self.out.extend_from_slice(b"}\n");
    }

    /// Discards everything written since [`ObjectWriter::begin`].
    pub(crate) fn rollback(self) -> &'o mut Vec<u8> {
        self.out.truncate(self.start);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn escape_check_finds_every_special_byte_at_every_position() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for len in 1..20 {
                for at in 0..len {
                    let mut b = vec![b'a'; len];
                    b[at] = special;
                    assert!(needs_escape(&b), "{special:#x} at {at} of {len}");
                }
            }
        }
        assert!(!needs_escape("plain ASCII and UTF-8: é ü 日本 \u{7f} ~".as_bytes()));
        let mut out = Vec::new();
        push_str(&mut out, "Mozilla/5.0 (X11; Linux x86_64)");
        assert_eq!(out, b"\"Mozilla/5.0 (X11; Linux x86_64)\"");
    }

    proptest::proptest! {
        #[test]
        fn escape_check_agrees_with_a_byte_by_byte_check(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let naive = b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
            proptest::prop_assert_eq!(needs_escape(&b), naive);
        }
    }

    #[test]
    fn read_time_is_rfc3339_utc_with_milliseconds() {
        let mut ctx = LineContext::new("/var/log/app.log", &[]);
        ctx.set_read_time(OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap());
        assert_eq!(ctx.read_time(), "2023-11-14T22:13:20.123Z");
        assert_eq!(ctx.read_year_month(), (2023, 11));
    }

    #[test]
    fn finish_appends_file_then_static_fields_in_order() {
        let ctx = LineContext::new(
            "/l/a\"b.log",
            &[("app".into(), "shop".into()), ("tier".into(), "web".into())],
        );
        let mut out = Vec::new();
        let mut obj = ObjectWriter::begin(&mut out);
        obj.str("message", "hi");
        obj.finish(&ctx);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"message\":\"hi\",\"file\":\"/l/a\\\"b.log\",\"app\":\"shop\",\"tier\":\"web\"}\n"
        );
    }

    #[test]
    fn finish_unless_lets_the_line_keep_its_own_keys() {
        let ctx = LineContext::new("/a.log", &[("app".into(), "shop".into())]);
        let mut out = Vec::new();
        let mut obj = ObjectWriter::begin(&mut out);
        obj.str("file", "main.go");
        obj.finish_unless(&ctx, |k| k == "file");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"file\":\"main.go\",\"app\":\"shop\"}\n"
        );
    }

    #[test]
    fn uint_strips_leading_zeros_and_rejects_non_digits() {
        let mut out = Vec::new();
        let mut obj = ObjectWriter::begin(&mut out);
        assert!(obj.uint("a", "007"));
        assert!(obj.uint("b", "0"));
        assert!(!obj.uint("c", "12x"));
        assert!(!obj.uint("d", ""));
        obj.finish(&LineContext::new("f", &[]));
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":7,\"b\":0,\"file\":\"f\"}\n");
    }
}
