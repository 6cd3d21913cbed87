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
//! What the presets recognise follows what the runtimes print:
//! - every preset: an indented line continues the record before it;
//! - Java: an exception header (`java.lang.IllegalStateException: boom`, as logging frameworks print it under the
//!   message line), `Caused by: …` (logback's root-cause-first order: `Wrapped by: …`); `\tat …`, `\t... N more`, `\tSuppressed: …` are indented;
//! - Python: `Traceback (most recent call last):` (and `+ Exception Group Traceback …`) through the final
//!   exception line, then `During handling of the above exception…` / `The above exception was the direct cause…`
//!   and the next traceback;
//! - Go: `panic: …` and `fatal error: …` start a record (after `runtime: …` lines, they continue theirs);
//!   `runtime stack:`, `goroutine N […]:` (also as `runtime/debug.Stack` prints
//!   it under a message line), frames (`main.main()`), `created by …`, `[signal …]` continue it.

use std::time::{Duration, Instant};

use crate::core::logformat::Multiline;

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
    /// The bytes of the file the open record and the blank lines after it stand for (newlines included).
    held_input: usize,
    /// Blank lines read after the open record, not yet known to belong to it.
    blanks: Vec<Vec<u8>>,
    /// When the last line was read.
    last: Option<Instant>,
}

#[derive(Debug)]
enum Rule {
    Java,
    Python(Py),
    Go(GoState),
    Regex(regex::Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Py {
    Normal,
    Traceback,
    Group,
    AfterException,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoState {
    Normal,
    /// After `runtime: …` lines, which the runtime prints before some fatal errors (stack overflow).
    Runtime,
    Dump,
}

impl Grouper {
    /// A grouper for `preset` that emits a record after `quiet` without a new line, or once it holds `max_bytes`.
    pub(crate) fn new(preset: &Multiline, quiet: Duration, max_bytes: usize) -> Self {
        let rule = match preset {
            Multiline::Java => Rule::Java,
            Multiline::Python => Rule::Python(Py::Normal),
            Multiline::Go => Rule::Go(GoState::Normal),
            Multiline::Regex(re) => Rule::Regex(re.clone()),
        };
        Grouper {
            rule,
            quiet,
            max_bytes: max_bytes.max(1),
            text: Vec::new(),
            first_len: 0,
            open: false,
            held_input: 0,
            blanks: Vec::new(),
            last: None,
        }
    }

    /// Takes one line (without its `\n`) that stands for `input` bytes of the file (its newline included, if it
    /// had one) read at `now`; calls `emit` for every record this completes.
    pub(crate) fn push(&mut self, line: &[u8], input: usize, now: Instant, emit: &mut impl FnMut(Record<'_>)) {
        self.last = Some(now);
        if is_blank(line) {
            if self.open {
                self.held_input += input;
                self.blanks.push(line.to_vec());
            } else {
                emit(single(line));
            }
            return;
        }
        let continues = self.rule.continues(line);
        if !(continues && self.open) {
            self.emit_open(false, emit);
            return self.start(line, input);
        }
        let added = self.blanks.iter().map(|b| b.len() + 1).sum::<usize>() + 1 + line.len();
        if self.text.len() + added > self.max_bytes {
            self.emit_open(true, emit);
            return self.start(line, input);
        }
        self.held_input += input;
        for blank in self.blanks.drain(..) {
            self.text.push(b'\n');
            self.text.extend_from_slice(&blank);
        }
        self.text.push(b'\n');
        self.text.extend_from_slice(line);
    }

    /// Emits the open record if no line has come for the quiet period.
    pub(crate) fn poll(&mut self, now: Instant, emit: &mut impl FnMut(Record<'_>)) {
        let quiet = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= self.quiet);
        if quiet && (self.open || !self.blanks.is_empty()) {
            self.emit_open(false, emit);
        }
    }

    /// Emits everything held (at shutdown, at the end of a batch run).
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(Record<'_>)) {
        self.emit_open(false, emit);
    }

    /// The bytes of the file that the records held back stand for; see [`Grouper::push`].
    pub(crate) fn held_input(&self) -> usize {
        self.held_input
    }

    fn start(&mut self, line: &[u8], input: usize) {
        self.held_input = input;
        self.text.clear();
        self.text.extend_from_slice(line);
        self.first_len = line.len();
        self.open = true;
    }

    /// Emits the open record (if any), then the blank lines held after it, each as its own record.
    fn emit_open(&mut self, cut: bool, emit: &mut impl FnMut(Record<'_>)) {
        if self.open {
            emit(Record {
                text: &self.text,
                first_len: self.first_len,
                cut,
            });
            self.open = false;
        }
        for blank in self.blanks.drain(..) {
            emit(single(&blank));
        }
        self.held_input = 0;
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

fn is_indented(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

impl Rule {
    /// Whether `line` (not blank) continues the record before it; updates the preset's state.
    fn continues(&mut self, line: &[u8]) -> bool {
        match self {
            Rule::Java => {
                is_indented(line)
                    || line.starts_with(b"Caused by: ")
                    || line.starts_with(b"Wrapped by: ")
                    || is_java_exception_header(line)
            }
            Rule::Python(state) => python(state, line),
            Rule::Go(state) => go(state, line),
            Rule::Regex(re) => !match std::str::from_utf8(line) {
                Ok(s) => re.is_match(s),
                Err(_) => re.is_match(&String::from_utf8_lossy(line)),
            },
        }
    }
}

/// `java.lang.IllegalStateException: boom`, `com.example.App$Failure`: a class name with a package, its last part
/// capitalised, alone or followed by `: message`.
fn is_java_exception_header(line: &[u8]) -> bool {
    // Most lines start with a date or a level: out at the first byte.
    if !line
        .first()
        .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b == b'$')
    {
        return false;
    }
    let end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
    if end < line.len() && !matches!(line.get(end + 1), None | Some(b' ')) {
        return false;
    }
    let name = &line[..end];
    let mut parts = 0;
    let mut last_start = 0;
    for (i, part) in name.split(|&b| b == b'.').enumerate() {
        let ident = part
            .first()
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b == b'$')
            && part
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
        if !ident {
            return false;
        }
        parts = i + 1;
        last_start = part[0];
    }
    parts >= 2 && last_start.is_ascii_uppercase()
}

const PY_TRACEBACK: &[u8] = b"Traceback (most recent call last):";
const PY_GROUP: &[u8] = b"+ Exception Group Traceback (most recent call last):";
const PY_CHAINS: &[&[u8]] = &[
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
];

fn python(state: &mut Py, line: &[u8]) -> bool {
    if line == PY_TRACEBACK {
        *state = Py::Traceback;
        return true;
    }
    if line.trim_ascii_start() == PY_GROUP {
        *state = Py::Group;
        return true;
    }
    match *state {
        Py::Traceback if !is_indented(line) => {
            // The final exception line: `ValueError: bad`, `KeyError: 'x'`, `mod.Custom`.
            *state = Py::AfterException;
            true
        }
        Py::Traceback | Py::Group if is_indented(line) => true,
        Py::AfterException if PY_CHAINS.contains(&line) => true,
        _ => {
            *state = Py::Normal;
            is_indented(line)
        }
    }
}

fn go(state: &mut GoState, line: &[u8]) -> bool {
    if line.starts_with(b"runtime: ") {
        let continues = *state == GoState::Runtime;
        *state = GoState::Runtime;
        return continues;
    }
    if line.starts_with(b"panic: ") || line.starts_with(b"fatal error: ") {
        let continues = *state == GoState::Runtime;
        *state = GoState::Dump;
        return continues;
    }
    if is_goroutine_header(line) {
        *state = GoState::Dump;
        return true;
    }
    let in_dump = *state == GoState::Dump
        && (line.starts_with(b"created by ")
            || line.starts_with(b"[signal ")
            || line == b"runtime stack:"
            || line.starts_with(b"...additional frames elided...")
            || is_go_frame(line));
    if !in_dump && !is_indented(line) {
        *state = GoState::Normal;
    }
    in_dump || is_indented(line)
}

/// `goroutine 1 [running]:`, `goroutine 7 gp=0xc000007a40 m=0 mp=0x5a3c80 [running]:`.
fn is_goroutine_header(line: &[u8]) -> bool {
    line.strip_prefix(b"goroutine ")
        .is_some_and(|rest| rest.first().is_some_and(u8::is_ascii_digit) && line.ends_with(b"]:"))
}

/// A frame's function line: `main.main()`, `main.(*T).run(0xc000010000)`, `panic({0x49a0e0?, 0x4d3b70?})`.
fn is_go_frame(line: &[u8]) -> bool {
    let Some(open) = line.iter().position(|&b| b == b'(') else {
        return false;
    };
    open > 0 && line.ends_with(b")") && !line[..open].contains(&b' ')
}

#[cfg(test)]
#[path = "multiline_tests.rs"]
mod tests;
