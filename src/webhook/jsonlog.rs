//! The webhook's JSON log lines: the same lines as tracing-subscriber's `json().flatten_event(true)` format,
//! `{"timestamp":…,"level":…,"message":…,<fields>…,"target":…}`, written straight into one buffer.
//!
//! tracing-subscriber's JSON formatter hands every small piece of a line through an `io::Write` to `fmt::Write`
//! adaptor that checks each piece for UTF-8 on its own; with one line per review that was ≈ 5 % of the webhook's
//! CPU (`make bench`). Here the line is built in a reused buffer (strings escaped by serde_json, numbers by
//! `Display`) and checked once. `same_lines_as_tracing_subscriber` holds the two formats to the same output.
//! The timestamp's date and time of day are formatted once a second, not on every line. Spans are not written:
//! the webhook opens none.

use std::{
    cell::RefCell,
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// The JSON line format of the webhook's logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

thread_local! {
    /// The line being built, kept between lines so that its allocation is reused.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The second of the last timestamp, and its text up to the fraction (`2026-11-25T09:40:12.`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends `at` as tracing-subscriber's `SystemTime` timer writes it, a JSON string: RFC 3339 in UTC with
/// microseconds, `"2026-11-25T09:40:12.123456Z"`.
fn timestamp(line: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since.as_secs();
    line.push(b'"');
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let time = i64::try_from(second)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            cached.1 = time.format("%Y-%m-%dT%H:%M:%S.").to_string();
            cached.0 = second;
        }
        line.extend_from_slice(cached.1.as_bytes());
    });
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    line.extend_from_slice(&digits);
    line.extend_from_slice(b"Z\"");
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = SystemTime::now();
        LINE.with(|line| {
            // A formatter that panicked mid-line cannot have left the buffer borrowed; be safe anyway.
            let Ok(mut line) = line.try_borrow_mut() else {
                return Err(fmt::Error);
            };
            line.clear();
            line.extend_from_slice(b"{\"timestamp\":");
            timestamp(&mut line, now);
            line.extend_from_slice(b",\"level\":\"");
            line.extend_from_slice(event.metadata().level().as_str().as_bytes());
            line.push(b'"');
            event.record(&mut Fields(&mut line));
            line.extend_from_slice(b",\"target\":");
            string(&mut line, event.metadata().target());
            line.extend_from_slice(b"}\n");
            writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
        })
    }
}

/// Writes `s` as a JSON string, as serde_json does (copied as it is when nothing in it needs escaping).
fn string(line: &mut Vec<u8>, s: &str) {
    crate::core::patch::push_json_bytes(line, s);
}

/// Appends each field as `,"name":value`.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(b',');
        string(self.0, field.name());
        self.0.push(b':');
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.0, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.extend_from_slice(if value { b"true" } else { b"false" });
    }

    // Integers as serde_json writes them, which is as `Display` does.
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.0.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.0.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes it (`1.0`, not `1`); NaN and infinities, which JSON lacks, become null.
        self.key(field);
        let _ = serde_json::to_writer(&mut *self.0, &value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        string(self.0, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        string(self.0, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Logs the same events through `subscriber` and returns the lines, parsed, without their timestamps.
    fn lines(ours: bool) -> Vec<Value> {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(tracing::Level::DEBUG);
        let emit = || {
            let error = std::io::Error::other("disk \"full\"");
            tracing::info!(
                uid = "u-1",
                name = "web-\"7d\"*\n",
                dry_run = false,
                patch_ops = 7usize,
                status = 200u16,
                delta = -3i64,
                ratio = 0.25f64,
                whole = 2.0f64,
                "review"
            );
            tracing::warn!(%error, path = %"/mutate", "rejected ✓");
            tracing::debug!(error = &error as &(dyn std::error::Error + 'static), "probe");
            tracing::error!(reason = ?Some("x"), "plain message with \\ and \t");
        };
        if ours {
            tracing::subscriber::with_default(builder.event_format(JsonLines).finish(), emit);
        } else {
            let reference = builder.json().flatten_event(true).with_current_span(false).finish();
            tracing::subscriber::with_default(reference, emit);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let mut value: Value = serde_json::from_str(line).unwrap();
                assert!(value["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
                value.as_object_mut().unwrap().remove("timestamp");
                value
            })
            .collect()
    }

    #[test]
    fn same_lines_as_tracing_subscriber() {
        let ours = lines(true);
        assert_eq!(ours.len(), 4);
        assert_eq!(ours, lines(false));
    }

    #[test]
    fn timestamps_are_written_as_tracing_subscriber_writes_them() {
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime as Timer};
        // Instants in one second and across seconds, days, a leap day and a year's end.
        let base = [0u64, 951_782_400, 1_764_064_812, 4_102_444_799];
        for (i, secs) in base.into_iter().enumerate() {
            for micros in [0u64, 7, 999_999, 1_000_000, 86_400_000_001] {
                let at = UNIX_EPOCH + std::time::Duration::from_micros(secs * 1_000_000 + micros + i as u64);
                let mut ours = Vec::new();
                timestamp(&mut ours, at);
                let ours: String = serde_json::from_slice(&ours).unwrap();
                let since = at.duration_since(UNIX_EPOCH).unwrap();
                let expected = chrono::DateTime::from_timestamp(since.as_secs() as i64, since.subsec_nanos())
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S.%6fZ")
                    .to_string();
                assert_eq!(ours, expected);
            }
        }
        // And the same shape as the timer tracing-subscriber would use, read now.
        let mut theirs = String::new();
        Timer.format_time(&mut Writer::new(&mut theirs)).unwrap();
        let mut ours = Vec::new();
        timestamp(&mut ours, SystemTime::now());
        let ours: String = serde_json::from_slice(&ours).unwrap();
        let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
        assert!(
            (parse(&ours) - parse(&theirs)).num_seconds().abs() < 5,
            "{ours} vs {theirs}"
        );
    }

    #[test]
    fn fields_keep_their_order_after_the_message() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || tracing::info!(b = 1u64, a = "x", "m"));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let rest = text.split_once(r#""level":"INFO","#).unwrap().1;
        assert_eq!(
            rest,
            "\"message\":\"m\",\"b\":1,\"a\":\"x\",\"target\":\"entourage::webhook::jsonlog::tests\"}\n"
        );
    }
}
