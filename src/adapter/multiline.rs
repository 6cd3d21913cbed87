//! Multiline grouping: lines in, records out, one record per event (a message and its stack trace).
//!
//! Apps log events, and a Java exception is thirty lines, a Python traceback ten, a Go panic a goroutine dump.
//! Sent line by line, each becomes thirty unrelated records in the backend; grouped here, before the lines leave
//! the Pod, they are one record whose `message` holds the whole text.
//!
//! The grouper is pure and synchronous: each line comes with the time it was read, and the caller asks it to
//! [`Grouper::poll`] now and then. A record is emitted when the next first line arrives, when no line has come for
//! the quiet period (so the last exception of an app that then goes quiet is not held back), at the size cap (the
//! record says `"truncated":true`; what follows starts a new record, so memory stays bounded and nothing is
//! dropped), and at [`Grouper::finish`]. Blank lines between a record and its continuation (Python's chained
//! tracebacks, Go's goroutine dumps) join the record; blank lines before a first line stay records of their own.
//!
//! An exception's message may span lines that look like nothing in particular (`raise ValueError("a\nb")`,
//! `new IllegalStateException("a\nb")`, `panic("a\nb")`). After an exception line (Java: a header, `Caused by: …`,
//! `Suppressed: …`, `Exception in thread …`; Python: a traceback's exception line; Go: `panic: …`, `fatal error: …`),
//! lines that are neither indented nor recognised are held *tentatively*, as blank lines are, up to
//! [`MAX_TENTATIVE`] lines or the size cap. They join the record when a line confirms them (Java: a frame `at …`,
//! `... N more`, `Caused by: …`, `Suppressed: …`; Python: `During handling…`, `The above exception…`; Go: a
//! goroutine dump, `[signal …]`, `runtime stack:`). A header, a traceback, a panic or a line that looks like the
//! first line of a log record (a time or a level first) ends the run, and so do the bound, the quiet period and `finish`: the
//! record is emitted, then each tentative line is read again as if it had just arrived, so that a line that starts
//! a record still does and the result is what it would be without tentative lines. A Java exception printed without
//! frames (`System.err.println(e)`, a fast-thrown `NullPointerException`) thus never swallows the lines after it;
//! at worst they are emitted late. Python prints nothing after the final exception of a traceback, so one exception
//! more: when the traceback was logged under a message line (not `Traceback …` first), the logging framework wrote
//! it in one piece, and the tentative lines that a log record's first line ends join it. Output of another kind
//! (`print`) between a logged traceback and the next log record, without a time or level first, would join it too.
//! Held tentative lines count in [`Grouper::held_input`]: the follower never saves a position past them.
//!
//! What the presets recognise follows what the runtimes print:
//! - every preset: an indented line continues the record before it;
//! - Java: an exception header (`java.lang.IllegalStateException: boom`, as logging frameworks print it under the
//!   message line), `Caused by: …` (logback's root-cause-first order: `Wrapped by: …`); `\tat …`, `\t... N more`,
//!   `\tSuppressed: …` are indented;
//! - Python: `Traceback (most recent call last):` (and `+ Exception Group Traceback …`) through the final
//!   exception line, then `During handling of the above exception…` / `The above exception was the direct cause…`
//!   and the next traceback;
//! - Go: `panic: …` and `fatal error: …` start a record (after `runtime: …` lines, they continue theirs);
//!   `runtime stack:`, `goroutine N […]:` (also as `runtime/debug.Stack` prints it under a message line), frames
//!   (`main.main()`), `created by …`, `[signal …]` continue it.

use std::time::{Duration, Instant};

use crate::core::logformat::Multiline;

mod presets;

use presets::{is_indented, After, Rule};

/// One grouped record: its lines joined by `\n` (each as read, without its own `\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// The whole text.
    pub(crate) text: &'a [u8],
    /// The length of the first line: the part the format parses.
    pub(crate) first_len: usize,
    /// Cut at the size cap: the lines after it start the next record.
    pub(crate) cut: bool,
}

impl Record<'_> {
    /// The lines after the first, joined by `\n`, if any.
    pub(crate) fn continuation(&self) -> Option<&[u8]> {
        self.text.get(self.first_len + 1..)
    }
}

/// At most this many tentative lines are held after an exception line (see the module documentation).
pub(crate) const MAX_TENTATIVE: usize = 64;

/// Groups lines into records; see the module documentation.
#[derive(Debug)]
pub(crate) struct Grouper {
    rule: Rule,
    quiet: Duration,
    max_bytes: usize,
    /// The open record's lines joined by `\n`.
    text: Vec<u8>,
    first_len: usize,
    open: bool,
    /// The bytes of the file the open record stands for (newlines included).
    record_input: usize,
    /// Lines read after the open record, not yet known to belong to it (blank lines, tentative lines), each with
    /// the bytes of the file it stands for.
    pending: Vec<(Vec<u8>, usize)>,
    /// The bytes of the file `pending` stands for.
    pending_input: usize,
    /// What joining `pending` would add to the record's text.
    pending_len: usize,
    /// How many of `pending` are tentative (not blank).
    tentative: usize,
    /// The open record ends with an exception line and what was held after it: message lines may follow.
    message: bool,
    /// When the last line was read.
    last: Option<Instant>,
}

impl Grouper {
    /// A grouper for `preset` that emits a record after `quiet` without a new line, or once it holds `max_bytes`.
    pub(crate) fn new(preset: &Multiline, quiet: Duration, max_bytes: usize) -> Self {
        Grouper {
            rule: Rule::new(preset),
            quiet,
            max_bytes: max_bytes.max(1),
            text: Vec::new(),
            first_len: 0,
            open: false,
            record_input: 0,
            pending: Vec::new(),
            pending_input: 0,
            pending_len: 0,
            tentative: 0,
            message: false,
            last: None,
        }
    }

    /// Takes one line (without its `\n`) that stands for `input` bytes of the file (its newline included, if it
    /// had one) read at `now`; calls `emit` for every record this completes.
    pub(crate) fn push(&mut self, line: &[u8], input: usize, now: Instant, emit: &mut impl FnMut(Record<'_>)) {
        self.last = Some(now);
        self.take(line, input, emit);
    }

    /// Emits what is held if no line has come for the quiet period.
    pub(crate) fn poll(&mut self, now: Instant, emit: &mut impl FnMut(Record<'_>)) {
        let quiet = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= self.quiet);
        if quiet && (self.open || !self.pending.is_empty()) {
            self.flush(emit);
        }
    }

    /// Emits everything held (at shutdown, at the end of a batch run).
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(Record<'_>)) {
        self.flush(emit);
    }

    /// The bytes of the file that the lines held back stand for (the open record, then the lines held after it):
    /// always the last bytes pushed, which the follower keeps.
    pub(crate) fn held_input(&self) -> usize {
        self.record_input + self.pending_input
    }

    fn take(&mut self, line: &[u8], input: usize, emit: &mut impl FnMut(Record<'_>)) {
        if is_blank(line) {
            if self.open && self.fits(line) {
                return self.hold(line, input);
            }
            // What is held stays within the size cap, blank lines too: past it, what is held goes out first.
            self.flush(emit);
            return emit(single(line));
        }
        if self.open && self.message {
            let after = self.rule.after_exception(line, &self.text[..self.first_len]);
            match (after, self.tentative) {
                (After::Hold, 0) if is_indented(line) => {
                    // Indented, as today: it joins at once, and message lines may still follow.
                    self.join_pending(emit);
                    return self.append(line, input, emit);
                }
                (After::Hold, n) if n < MAX_TENTATIVE && self.fits(line) => return self.hold(line, input),
                (After::Hold | After::Release, 1..) => self.release(emit),
                (After::Close, 1..) => {
                    self.join_pending(emit);
                    self.emit_record(false, emit);
                }
                _ => {}
            }
        }
        let step = self.rule.step(line);
        if step.continues && self.open {
            self.join_pending(emit);
            self.append(line, input, emit);
        } else {
            self.emit_open(emit);
            self.start(line, input);
        }
        self.message = step.exception;
    }

    /// Whether the open record, what is held and `line` fit in the size cap.
    fn fits(&self, line: &[u8]) -> bool {
        self.text.len() + self.pending_len + 1 + line.len() <= self.max_bytes
    }

    fn hold(&mut self, line: &[u8], input: usize) {
        if !is_blank(line) {
            self.tentative += 1;
        }
        self.pending_input += input;
        self.pending_len += 1 + line.len();
        self.pending.push((line.to_vec(), input));
    }

    /// The lines held join the open record.
    fn join_pending(&mut self, emit: &mut impl FnMut(Record<'_>)) {
        let mut pending = std::mem::take(&mut self.pending);
        self.pending_input = 0;
        self.pending_len = 0;
        self.tentative = 0;
        for (line, input) in pending.drain(..) {
            self.append(&line, input, emit);
        }
        self.pending = pending;
    }

    /// Emits the open record; the lines held after it are read again as if they had just arrived.
    fn release(&mut self, emit: &mut impl FnMut(Record<'_>)) {
        let pending = std::mem::take(&mut self.pending);
        self.pending_input = 0;
        self.pending_len = 0;
        self.tentative = 0;
        self.emit_record(false, emit);
        for (line, input) in &pending {
            self.take(line, *input, emit);
        }
    }

    /// Emits everything held: tentative lines are released, blank lines emitted as records of their own.
    fn flush(&mut self, emit: &mut impl FnMut(Record<'_>)) {
        // Each release emits the open record: this ends.
        while self.tentative > 0 {
            self.release(emit);
        }
        self.emit_open(emit);
    }

    fn start(&mut self, line: &[u8], input: usize) {
        self.record_input = input;
        self.text.clear();
        self.text.extend_from_slice(line);
        self.first_len = line.len();
        self.open = true;
    }

    /// Adds `line` to the open record, or, at the size cap, emits the record as cut and starts the next with it.
    fn append(&mut self, line: &[u8], input: usize, emit: &mut impl FnMut(Record<'_>)) {
        if self.text.len() + 1 + line.len() > self.max_bytes {
            self.emit_record(true, emit);
            return self.start(line, input);
        }
        self.record_input += input;
        self.text.push(b'\n');
        self.text.extend_from_slice(line);
    }

    /// Emits the open record (if any), not what is held after it.
    fn emit_record(&mut self, cut: bool, emit: &mut impl FnMut(Record<'_>)) {
        if self.open {
            emit(Record {
                text: &self.text,
                first_len: self.first_len,
                cut,
            });
            self.open = false;
        }
        self.record_input = 0;
        self.message = false;
    }

    /// Emits the open record (if any), then the lines held after it, each as its own record.
    fn emit_open(&mut self, emit: &mut impl FnMut(Record<'_>)) {
        self.emit_record(false, emit);
        for (line, _) in self.pending.drain(..) {
            emit(single(&line));
        }
        self.pending_input = 0;
        self.pending_len = 0;
        self.tentative = 0;
    }
}

fn single(line: &[u8]) -> Record<'_> {
    Record {
        text: line,
        first_len: line.len(),
        cut: false,
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests;
