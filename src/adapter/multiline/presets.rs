//! What the presets recognise in a line (the lines the runtimes print): the grouper's rules, kept apart from how
//! it holds and emits lines.

use crate::core::logformat::Multiline;

#[derive(Debug)]
pub(super) enum Rule {
    Java,
    Python(Py),
    Go(GoState),
    Regex(regex::Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Py {
    Normal,
    Traceback,
    Group,
    AfterException,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GoState {
    Normal,
    /// After `runtime: …` lines, which the runtime prints before some fatal errors (stack overflow).
    Runtime,
    Dump,
}

/// What the preset makes of a line read in the usual way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    /// It continues the record before it.
    pub(super) continues: bool,
    /// It is an exception line whose message may go on over the next lines.
    pub(super) exception: bool,
}

impl Step {
    const fn continues(continues: bool) -> Step {
        Step {
            continues,
            exception: false,
        }
    }
}

/// What a line read after an exception line (and what was held after it) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// Not known yet: held tentatively (with nothing held, an indented line joins the message at once).
    Hold,
    /// The tentative lines were the message: they join the record, and so does this line.
    Confirm,
    /// The tentative lines are not the message: the record is emitted and they are read again as if they had
    /// just arrived, then this line.
    Release,
    /// This line starts the next record and the tentative lines end the one before (a Python traceback logged
    /// under a message line): they join the record, which is emitted.
    Close,
}

pub(super) fn is_indented(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

impl Rule {
    pub(super) fn new(preset: &Multiline) -> Rule {
        match preset {
            Multiline::Java => Rule::Java,
            Multiline::Python => Rule::Python(Py::Normal),
            Multiline::Go => Rule::Go(GoState::Normal),
            Multiline::Regex(re) => Rule::Regex(re.clone()),
        }
    }

    /// What `line` (not blank) is to the record before it; updates the preset's state.
    #[inline]
    pub(super) fn step(&mut self, line: &[u8]) -> Step {
        match self {
            Rule::Java if is_indented(line) => {
                let text = line.trim_ascii_start();
                Step {
                    continues: true,
                    exception: text.starts_with(b"Caused by: ") || text.starts_with(b"Suppressed: "),
                }
            }
            Rule::Java => {
                // Most lines are events' first lines: the first byte rules out the prefixes without a call to memcmp.
                let first = line.first().copied();
                let header = (first == Some(b'C') && line.starts_with(b"Caused by: "))
                    || (first == Some(b'W') && line.starts_with(b"Wrapped by: "))
                    || is_java_exception_header(line);
                Step {
                    continues: header,
                    exception: header || (first == Some(b'E') && line.starts_with(b"Exception in thread \"")),
                }
            }
            Rule::Python(state) => python(state, line),
            Rule::Go(state) => Step {
                continues: go(state, line),
                exception: is_go_panic(line),
            },
            Rule::Regex(re) => Step::continues(!match std::str::from_utf8(line) {
                Ok(s) => re.is_match(s),
                Err(_) => re.is_match(&String::from_utf8_lossy(line)),
            }),
        }
    }

    /// What `line` (not blank), read after an exception line and what was held after it, does; `first` is the open
    /// record's first line.
    pub(super) fn after_exception(&self, line: &[u8], first: &[u8]) -> After {
        match self {
            Rule::Java => {
                let text = line.trim_ascii_start();
                let indented = text.len() < line.len();
                if (indented && (text.starts_with(b"at ") || text.starts_with(b"... ")))
                    || text.starts_with(b"Caused by: ")
                    || text.starts_with(b"Wrapped by: ")
                    || text.starts_with(b"Suppressed: ")
                {
                    After::Confirm
                } else if is_java_exception_header(line) || looks_like_record_start(line) {
                    After::Release
                } else {
                    After::Hold
                }
            }
            Rule::Python(_) => {
                if PY_CHAINS.contains(&line) {
                    After::Confirm
                } else if is_python_traceback(line) {
                    After::Release
                } else if looks_like_record_start(line) {
                    // Logged under a message line, the traceback was written in one piece by the logging
                    // framework: what follows its exception line up to the next record is its message.
                    if is_python_traceback(first) {
                        After::Release
                    } else {
                        After::Close
                    }
                } else {
                    After::Hold
                }
            }
            Rule::Go(_) => {
                if is_goroutine_header(line) || line.starts_with(b"[signal ") || line == b"runtime stack:" {
                    After::Confirm
                } else if is_go_panic(line) || looks_like_record_start(line) {
                    After::Release
                } else {
                    After::Hold
                }
            }
            Rule::Regex(_) => After::Release,
        }
    }
}

/// The first line of a record, by its look: a time (`2024-05-01 12:00:00`, `12:00:00.123`, `[2024-05-01T12:00`,
/// `May  1 12:00:00`), a level (`ERROR `, `INFO:root:`, `[WARN]`), or `Exception in thread "…"`. Only used to end
/// a run of tentative lines early; a message line that looks like this ends the run too (and is a record of its own,
/// as without tentative lines).
pub(super) fn looks_like_record_start(line: &[u8]) -> bool {
    const LEVELS: &[&[u8]] = &[
        b"TRACE",
        b"DEBUG",
        b"INFO",
        b"NOTICE",
        b"WARN",
        b"WARNING",
        b"ERROR",
        b"SEVERE",
        b"FATAL",
        b"CRITICAL",
        b"FINE",
        b"FINER",
        b"FINEST",
        b"CONFIG",
    ];
    const MONTHS: &[&[u8]] = &[
        b"Jan ", b"Feb ", b"Mar ", b"Apr ", b"May ", b"Jun ", b"Jul ", b"Aug ", b"Sep ", b"Oct ", b"Nov ", b"Dec ",
    ];
    let text = line.strip_prefix(b"[").unwrap_or(line);
    if text.first().is_some_and(u8::is_ascii_digit) || MONTHS.iter().any(|m| text.starts_with(m)) {
        // A clock (`12:00`) within the first 32 bytes.
        let head = &text[..text.len().min(32)];
        return head
            .windows(5)
            .any(|w| w[2] == b':' && [w[0], w[1], w[3], w[4]].iter().all(u8::is_ascii_digit));
    }
    let word = text.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if LEVELS.contains(&&text[..word]) {
        return text.get(word).is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_');
    }
    line.starts_with(b"Exception in thread \"")
}

/// `java.lang.IllegalStateException: boom`, `com.example.App$Failure`: a class name with a package, its last part
/// capitalised, alone or followed by `: message`.
pub(super) fn is_java_exception_header(line: &[u8]) -> bool {
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

pub(super) const PY_TRACEBACK: &[u8] = b"Traceback (most recent call last):";
const PY_GROUP: &[u8] = b"+ Exception Group Traceback (most recent call last):";
pub(super) const PY_CHAINS: &[&[u8]] = &[
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
];

fn is_python_traceback(line: &[u8]) -> bool {
    line == PY_TRACEBACK || line.trim_ascii_start() == PY_GROUP
}

fn python(state: &mut Py, line: &[u8]) -> Step {
    if line == PY_TRACEBACK {
        *state = Py::Traceback;
        return Step::continues(true);
    }
    if line.trim_ascii_start() == PY_GROUP {
        *state = Py::Group;
        return Step::continues(true);
    }
    match *state {
        Py::Traceback if !is_indented(line) => {
            // The final exception line: `ValueError: bad`, `KeyError: 'x'`, `mod.Custom`.
            *state = Py::AfterException;
            Step {
                continues: true,
                exception: true,
            }
        }
        Py::Traceback | Py::Group if is_indented(line) => Step::continues(true),
        Py::AfterException if PY_CHAINS.contains(&line) => Step::continues(true),
        _ => {
            *state = Py::Normal;
            Step::continues(is_indented(line))
        }
    }
}

fn go(state: &mut GoState, line: &[u8]) -> bool {
    if line.starts_with(b"runtime: ") {
        let continues = *state == GoState::Runtime;
        *state = GoState::Runtime;
        return continues;
    }
    if is_go_panic(line) {
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

fn is_go_panic(line: &[u8]) -> bool {
    line.starts_with(b"panic: ") || line.starts_with(b"fatal error: ")
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
