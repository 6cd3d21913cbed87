//! From lines to JSON records: the format, then multiline grouping, then the record's shape.
//!
//! The follower hands every line to [`Records::line`] with the time it was read, calls [`Records::poll`] between
//! reads (the quiet-period flush) and [`Records::finish`] when it stops. Without grouping and shape options a line
//! goes straight to the format ([`super::render_line`]'s): the plain path is what it was.

use std::time::{Duration, Instant};

use super::formats::LineRenderer;
use super::keys::Shape;
use super::multiline::{Grouper, Record};
use super::output::LineContext;
use super::{AdaptError, Format};
use crate::core::logformat::{self, LevelMode, Multiline};

/// The flags of grouping, time and keys (`entourage.dev/adapter-multiline`, `-time-key`, `-rename`, `-level`,
/// config `adapter.timeZone` and `adapter.multilineFlushAfter`); each parsed by the grammar the webhook checks the
/// annotation with (`core::logformat`).
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Group the lines of one event into one record: `java`, `python`, `go` or `regex:<first-line pattern>`.
    #[arg(long)]
    pub multiline: Option<String>,
    /// With --multiline: emit a record once no line has come for this long (`1s`, `500ms`; 10ms to 1m).
    #[arg(long, default_value = "1s")]
    pub multiline_flush_after: String,
    /// With --multiline: a record that reaches this many bytes is emitted with `"truncated":true`; the lines after
    /// it start the next record.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=(16 << 20)))]
    pub multiline_max_bytes: u64,
    /// The key of each record's time (written as RFC 3339 with an offset).
    #[arg(long, default_value = logformat::DEFAULT_TIME_KEY)]
    pub time_key: String,
    /// Renames of keys, as `from=to,from=to`.
    #[arg(long)]
    pub rename: Option<String>,
    /// `keep` levels as written, or `normalize` them to debug, info, warn, error, fatal.
    #[arg(long, default_value = "keep")]
    pub level: String,
    /// The IANA zone of source times written without an offset.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
}

impl RecordArgs {
    /// The parsed options and the zone; `static_fields` are the `--field` keys, which the time key and renames may
    /// not take, nor the keys `format` writes.
    pub(crate) fn parse(
        &self,
        format: &Format,
        static_fields: &[&str],
    ) -> Result<(RecordOptions, chrono_tz::Tz), AdaptError> {
        let refuse = |flag: &'static str, value: &str, reason: String| AdaptError::Record {
            flag,
            value: value.to_owned(),
            reason,
        };
        let multiline = match &self.multiline {
            None => None,
            Some(name) => {
                let preset: Multiline = name
                    .parse()
                    .map_err(|e: logformat::MultilineError| refuse("--multiline", name, e.to_string()))?;
                let quiet = logformat::parse_flush_after(&self.multiline_flush_after)
                    .map_err(|e| refuse("--multiline-flush-after", &self.multiline_flush_after, e))?;
                let max = usize::try_from(self.multiline_max_bytes).unwrap_or(usize::MAX);
                Some((preset, quiet, max))
            }
        };
        let time_key = logformat::parse_time_key(&self.time_key)
            .map_err(|e| refuse("--time-key", &self.time_key, e.to_string()))?;
        logformat::check_time_key_collisions(&time_key, format, static_fields)
            .map_err(|e| refuse("--time-key", &time_key, e))?;
        let renames = match &self.rename {
            None => Vec::new(),
            Some(pairs) => logformat::parse_renames(pairs, &time_key, static_fields, format).map_err(|errors| {
                let reasons: Vec<String> = errors.iter().map(|e| format!("{:?} {}", e.value, e.rule)).collect();
                refuse("--rename", pairs, reasons.join("; "))
            })?,
        };
        let level: LevelMode = self.level.parse().map_err(|e| refuse("--level", &self.level, e))?;
        let zone =
            logformat::parse_time_zone(&self.time_zone).map_err(|e| refuse("--time-zone", &self.time_zone, e))?;
        let shape = Shape {
            time_key: (time_key != logformat::DEFAULT_TIME_KEY).then_some(time_key),
            renames,
            level,
        };
        Ok((RecordOptions { multiline, shape }, zone))
    }
}

/// Turns lines into records and records into JSON objects.
#[derive(Debug)]
pub(crate) struct Records {
    format: LineRenderer,
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
            format: LineRenderer::new(format),
            grouper: options
                .multiline
                .map(|(preset, quiet, max)| Grouper::new(&preset, quiet, max)),
            shape: options.shape,
            scratch: Vec::new(),
        }
    }

    /// Takes one line (without its `\n`; `input` bytes of the file, its newline included) read at `now`, appending to
    /// `out` every record it completes.
    pub(crate) fn line(&mut self, line: &[u8], input: usize, now: Instant, ctx: &LineContext, out: &mut Vec<u8>) {
        let Records {
            format,
            grouper,
            shape,
            scratch,
        } = self;
        match grouper {
            None if shape.is_identity() => format.render(line, ctx, out),
            None => render(format, shape, scratch, single(line), ctx, out),
            Some(g) => g.push(line, input, now, &mut |r| render(format, shape, scratch, r, ctx, out)),
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

    /// How many input bytes (lines and their newlines) the records held back stand for: the follower must not count
    /// them as done (its saved position stays before them, so a restart reads them again).
    pub(crate) fn held_input(&self) -> usize {
        self.grouper.as_ref().map_or(0, Grouper::held_input)
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
fn render(
    format: &mut LineRenderer,
    shape: &Shape,
    scratch: &mut Vec<u8>,
    record: Record<'_>,
    ctx: &LineContext,
    out: &mut Vec<u8>,
) {
    let first = &record.text[..record.first_len];
    let continuation = record.continuation();
    if continuation.is_none() && !record.cut && shape.is_identity() {
        return format.render(first, ctx, out);
    }
    scratch.clear();
    format.render(first, ctx, scratch);
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
            records.line(line.as_bytes(), line.len() + 1, now, &ctx, &mut out);
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
        let objects = run(
            options,
            &["ERROR x\r", "java.lang.Error: y\r", "\tat a.B.c(B.java:1)\r", "INFO z"],
        );
        assert_eq!(objects.len(), 2);
        assert_eq!(
            objects[0]["message"],
            "ERROR x\njava.lang.Error: y\n\tat a.B.c(B.java:1)"
        );
        assert_eq!(objects[1]["message"], "INFO z");
    }
}
