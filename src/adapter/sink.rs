//! The adapter's end of the follower: complete lines in, one JSON object each out (one per record with
//! `--multiline`).
//!
//! A partial last line is held back (left to the follower) until its `\n` arrives, except when its file is left
//! behind (rotation, truncation, shutdown, `--exit-at-eof`), where waiting longer could only lose it. A line longer
//! than [`MAX_LINE`] is emitted in pieces as it arrives, so one runaway line cannot hold the adapter's memory.
//!
//! Lines that multiline grouping holds back (the open record) are not reported done either: the follower keeps
//! them and hands them over again, so its saved position stays before them and a restart cannot lose them. Handed
//! over again without new data, they let the quiet-period flush run. The file being left behind ends the open
//! record: a trace split by a rotation becomes two records, and no line is lost.

use std::io::{self, Write};

use memchr::memchr_iter;

use std::time::Instant;

use super::output::{LineContext, MAX_LINE};
use super::records::{RecordOptions, Records};
use super::Format;
use crate::follow::Sink;

/// Rendered objects are handed to stdout in blocks of about this size (and whenever the follower flushes).
const WRITE_SIZE: usize = 1 << 20;

/// Renders lines into a reused buffer handed to `out` in large blocks.
pub(crate) struct JsonSink<W: Write> {
    records: Records,
    ctx: LineContext,
    buf: Vec<u8>,
    out: W,
    /// The first bytes of the data handed over next were taken already: lines held by grouping, or emitted since.
    taken: usize,
    /// The bytes after `taken` known to hold no `\n` (the partial line held back last time).
    scanned: usize,
}

impl<W: Write> JsonSink<W> {
    pub(crate) fn new(format: Format, options: RecordOptions, ctx: LineContext, out: W) -> Self {
        JsonSink {
            records: Records::new(format, options),
            ctx,
            buf: Vec::with_capacity(WRITE_SIZE * 2),
            out,
            taken: 0,
            scanned: 0,
        }
    }

    /// One line, or a piece of a long one; `input` is what it takes of the file (its newline included).
    fn line(&mut self, line: &[u8], input: usize, now: Instant) -> io::Result<()> {
        self.records.line(line, input, now, &self.ctx, &mut self.buf);
        if self.buf.len() >= WRITE_SIZE {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Emits `data[start..end]` in pieces of [`MAX_LINE`] bytes while more than that is left; returns where the rest
    /// starts.
    fn pieces(&mut self, data: &[u8], mut start: usize, end: usize, now: Instant) -> io::Result<usize> {
        while end - start > MAX_LINE {
            let cut = utf8_cut(&data[start..end], MAX_LINE);
            self.line(&data[start..start + cut], cut, now)?;
            start += cut;
        }
        Ok(start)
    }
}

#[cfg(test)]
impl JsonSink<Vec<u8>> {
    /// What was written so far.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn consume(&mut self, data: &[u8]) -> io::Result<usize> {
        let now = Instant::now();
        let mut start = self.taken.min(data.len());
        let from = (start + self.scanned).min(data.len());
        if from < data.len() {
            // New bytes (not only the held ones handed over again): the time lines without one get.
            self.ctx.set_read_time(time::OffsetDateTime::now_utc());
        }
        for nl in memchr_iter(b'\n', &data[from..]) {
            let nl = from + nl;
            start = self.pieces(data, start, nl, now)?;
            self.line(&data[start..nl], nl + 1 - start, now)?;
            start = nl + 1;
        }
        start = self.pieces(data, start, data.len(), now)?;
        self.records.poll(now, &self.ctx, &mut self.buf);
        // What grouping still holds is the last lines taken: done is everything before them.
        let held = self.records.held_input().min(start);
        self.taken = held;
        self.scanned = data.len() - start;
        Ok(start - held)
    }

    fn finish(&mut self, rest: &[u8]) -> io::Result<()> {
        let now = Instant::now();
        let taken = std::mem::take(&mut self.taken).min(rest.len());
        self.scanned = 0;
        let start = self.pieces(rest, taken, rest.len(), now)?;
        if start < rest.len() {
            self.line(&rest[start..], rest.len() - start, now)?;
        }
        self.records.finish(&self.ctx, &mut self.buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.out.flush()
    }
}

/// Where to cut `data` into a piece of at most `max` bytes without splitting a UTF-8 character.
fn utf8_cut(data: &[u8], max: usize) -> usize {
    let mut cut = max;
    // Back off over continuation bytes (10xxxxxx): at most 3 in valid UTF-8.
    while cut > max - 3 && data.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests;
