//! From lines to JSON records: the format, then multiline grouping, then the record's shape.
//!
//! The follower hands every line to [`Records::line`] with the time it was read, calls [`Records::poll`] between
//! reads (the quiet-period flush) and [`Records::finish`] when it stops. Without grouping and shape options a line
//! goes straight to [`render_line`]: the plain path is what it was.

use std::time::{Duration, Instant};

use super::keys::Shape;
use super::multiline::{Grouper, Record};
use super::output::LineContext;
use super::{render_line, Format};
use crate::core::logformat::Multiline;

/// Turns lines into records and records into JSON objects.
#[derive(Debug)]
pub(crate) struct Records {
    format: Format,
    grouper: Option<Grouper>,
    shape: Shape,
    /// The first line of a grouped or reshaped record, rendered before it is reshaped.
    scratch: Vec<u8>,
}

/// What [`Records`] does besides the format: grouping (preset, quiet period, size cap) and the shape.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordOptions {
    pub(crate) multiline: Option<(Multiline, Duration, usize)>,
    pub(crate) shape: Shape,
}

impl Records {
    pub(crate) fn new(format: Format, options: RecordOptions) -> Self {
        Records {
            format,
            grouper: options
                .multiline
                .map(|(preset, quiet, max)| Grouper::new(&preset, quiet, max)),
            shape: options.shape,
            scratch: Vec::new(),
        }
    }

    /// Takes one line (without its `\n`) read at `now`, appending to `out` every record it completes.
    pub(crate) fn line(&mut self, line: &[u8], now: Instant, ctx: &LineContext, out: &mut Vec<u8>) {
        let Records {
            format,
            grouper,
            shape,
            scratch,
        } = self;
        match grouper {
            None if shape.is_identity() => render_line(format, line, ctx, out),
            None => render(format, shape, scratch, single(line), ctx, out),
            Some(g) => g.push(line, now, &mut |r| render(format, shape, scratch, r, ctx, out)),
        }
    }

    /// Appends the record held back by grouping if nothing was read for the quiet period.
    pub(crate) fn poll(&mut self, now: Instant, ctx: &LineContext, out: &mut Vec<u8>) {
        let Records {
            format,
            grouper,
            shape,
            scratch,
        } = self;
        if let Some(g) = grouper {
            g.poll(now, &mut |r| render(format, shape, scratch, r, ctx, out));
        }
    }

    /// Appends every record still held (at a rotation, at shutdown, at the end of a batch run).
    pub(crate) fn finish(&mut self, ctx: &LineContext, out: &mut Vec<u8>) {
        let Records {
            format,
            grouper,
            shape,
            scratch,
        } = self;
        if let Some(g) = grouper {
            g.finish(&mut |r| render(format, shape, scratch, r, ctx, out));
        }
    }
}

fn single(line: &[u8]) -> Record<'_> {
    Record {
        text: line,
        first_len: line.len(),
        cut: false,
    }
}

/// One record: its first line through the format; the rest, the cut mark and the shape through [`Shape::reshape`].
fn render(format: &Format, shape: &Shape, scratch: &mut Vec<u8>, record: Record<'_>, ctx: &LineContext, out: &mut Vec<u8>) {
    let first = &record.text[..record.first_len];
    let continuation = record.continuation();
    if continuation.is_none() && !record.cut && shape.is_identity() {
        return render_line(format, first, ctx, out);
    }
    scratch.clear();
    render_line(format, first, ctx, scratch);
    let rest = continuation.map(|c| {
        let text = String::from_utf8_lossy(c);
        // Each line's own `\r` goes, as render_line drops it from a single line.
        if text.contains('\r') {
            text.split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text.into_owned()
        }
    });
    shape.reshape(scratch, rest.as_deref(), record.cut, ctx, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn run(options: RecordOptions, lines: &[&str]) -> Vec<Value> {
        let mut records = Records::new(Format::Plain, options);
        let ctx = LineContext::new("/var/log/app.log", &[]);
        let mut out = Vec::new();
        let now = Instant::now();
        for line in lines {
            records.line(line.as_bytes(), now, &ctx, &mut out);
        }
        records.finish(&ctx, &mut out);
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn without_options_every_line_is_one_object_as_before() {
        let objects = run(RecordOptions::default(), &["a", "\tat b"]);
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1]["message"], "\tat b");
    }

    #[test]
    fn with_grouping_a_trace_is_one_object_with_crlf_line_ends_dropped() {
        let options = RecordOptions {
            multiline: Some((Multiline::Java, Duration::from_secs(1), 1 << 20)),
            ..RecordOptions::default()
        };
        let objects = run(options, &["ERROR x\r", "java.lang.Error: y\r", "\tat a.B.c(B.java:1)\r", "INFO z"]);
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["message"], "ERROR x\njava.lang.Error: y\n\tat a.B.c(B.java:1)");
        assert_eq!(objects[1]["message"], "INFO z");
    }
}
