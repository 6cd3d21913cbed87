//! The webhook's JSON log lines: the same lines as tracing-subscriber's `json().flatten_event(true)` format,
//! `{"timestamp":…,"level":…,"message":…,<fields>…,"target":…}`, written straight into one buffer.
//!
//! tracing-subscriber's JSON formatter hands every small piece of a line through an `io::Write` to `fmt::Write`
//! adaptor that checks each piece for UTF-8 on its own; with one line per review that was ≈ 5 % of the webhook's
//! CPU (`make bench`). Here the line is built in a reused buffer (strings escaped by serde_json, numbers by
//! `Display`) and checked once. `same_lines_as_tracing_subscriber` holds the two formats to the same output.
//! Spans are not written: the webhook opens none.

use std::{cell::RefCell, fmt, io::Write};

use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::{
    fmt::{
        format::Writer,
        time::{FormatTime, SystemTime},
        FmtContext, FormatEvent, FormatFields,
    },
    registry::LookupSpan,
};

/// The JSON line format of the webhook's logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

thread_local! {
    /// The line being built, kept between lines so that its allocation is reused.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut timestamp = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        LINE.with(|line| {
            // A formatter that panicked mid-line cannot have left the buffer borrowed; be safe anyway.
            let Ok(mut line) = line.try_borrow_mut() else {
                return Err(fmt::Error);
            };
            line.clear();
            line.extend_from_slice(b"{\"timestamp\":");
            string(&mut line, &timestamp);
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

/// Writes `s` as a JSON string.
fn string(line: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a &str always serialises.
    let _ = serde_json::to_writer(&mut *line, s);
}

/// Appends each field as `,"name":value`.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(b',');
        string(self.0, field.name());
        self.0.push(b':');
    }

    fn display(&mut self, field: &Field, value: impl fmt::Display) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.0, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.display(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.display(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.display(field, value);
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

    impl Write for Captured {
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
            "\"message\":\"m\",\"b\":1,\"a\":\"x\",\"target\":\"entourage::jsonlog::tests\"}\n"
        );
    }
}
