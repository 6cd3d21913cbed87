//! Following one path like `tail -F`, by polling.
//!
//! Polling (stat the path, fstat the open file, compare device/inode and size) rather than inotify, because the
//! file lives on an emptyDir shared between containers, often on overlayfs or a network volume, where inotify events
//! are missing or late; a poll every few hundred milliseconds costs nothing next to reading the data.
//!
//! Rotation semantics:
//! - **rename** (logrotate's default, or delete and re-create): the path now names another inode. The writer may
//!   have appended to the old inode after our last read, so the old file is read to its end once more before
//!   switching; the new file is read from its start. While the path is missing the old file stays open and read,
//!   since the writer may still append to it.
//! - **copytruncate**: same inode, size below our offset: read again from offset 0. A size check alone misses a
//!   file that the writer refilled past our offset between two polls, so the last bytes read before our offset are
//!   also compared with what the file holds there now. A line written between the copy and the truncate is lost by
//!   any tailer (logrotate documents this race); nothing else is.
//! - a partial last line is held back until its `\n` arrives, except when its file is left behind (rotation,
//!   truncation, shutdown, `--exit-at-eof`), where waiting longer could only lose it.

use super::output::{log_event, LineContext, MAX_LINE};
use super::{AdaptError, Format};
use memchr::memchr_iter;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes asked for by one `read`; the buffer holds one maximal held-back line plus one read.
const READ_SIZE: usize = 1 << 20;
/// How many of the last bytes read are kept to recognise a truncated and refilled file.
const TAIL_SIZE: usize = 64;
/// Rendered objects are handed to stdout in blocks of about this size (and whenever the file is caught up).
const WRITE_SIZE: usize = 1 << 20;
/// After SIGTERM, how long a backlog is still read before exiting anyway (the kubelet's grace period is 30 s by
/// default and the app container is usually stopping at the same time).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What to follow and how.
#[derive(Debug, Clone)]
pub(crate) struct FollowConfig {
    pub(crate) path: PathBuf,
    pub(crate) format: Format,
    pub(crate) ctx: LineContext,
    pub(crate) from_start: bool,
    pub(crate) exit_at_eof: bool,
    pub(crate) poll: Duration,
}

/// Follows `cfg.path`, writing one JSON object per line to `out`, until `stop` is set (then reads for at most
/// [`STOP_GRACE`] more) or, with `exit_at_eof`, until the end of the file.
pub(crate) fn follow<W: Write>(cfg: FollowConfig, stop: &AtomicBool, out: W) -> Result<(), AdaptError> {
    let mut emitter = Emitter {
        format: cfg.format,
        ctx: cfg.ctx,
        buf: Vec::with_capacity(WRITE_SIZE * 2),
        out,
    };
    let mut lines = Lines {
        buf: vec![0; MAX_LINE + READ_SIZE],
        start: 0,
        end: 0,
        scanned: 0,
    };
    let stop = Stop {
        flag: stop,
        since: None,
    };
    let mut follower = Follower {
        path: cfg.path,
        lines: &mut lines,
        emitter: &mut emitter,
        stop,
        last_open_error: None,
    };
    let mut current = match follower.open() {
        Some(mut file) if !cfg.from_start => {
            // Like `tail -F -n0`: only what is written from now on.
            file.pos = file.file.seek(SeekFrom::End(0)).map_err(|e| follower.read_error(e))?;
            let tail_at = file.pos.saturating_sub(TAIL_SIZE as u64);
            file.tail = vec![0; (file.pos - tail_at) as usize];
            if file.file.read_exact_at(&mut file.tail, tail_at).is_err() {
                // Truncated meanwhile: the size check still notices it.
                file.tail.clear();
            }
            Some(file)
        }
        // A file that exists at start with --from-start, or that appears later, is read from its beginning.
        other => other,
    };
    loop {
        if let Some(file) = current.as_mut() {
            // Checked before reading: a file truncated and refilled since the last read is recognised only while
            // `pos` and the bytes before it are still those of the old content.
            match follower.rotation(file) {
                Rotation::None => {}
                Rotation::Truncated => {
                    log_event(
                        "info",
                        "file truncated; reading it again from its start",
                        &[("file", &follower.name())],
                    );
                    follower.lines.flush_partial(follower.emitter)?;
                    file.pos = file.file.seek(SeekFrom::Start(0)).map_err(|e| follower.read_error(e))?;
                    file.tail.clear();
                }
                Rotation::Replaced => {
                    // The writer may have appended to the old inode since the last read.
                    follower.drain(file)?;
                    follower.lines.flush_partial(follower.emitter)?;
                    log_event(
                        "info",
                        "file replaced; following the new one",
                        &[("file", &follower.name())],
                    );
                    current = follower.open();
                    continue;
                }
            }
            follower.drain(file)?;
            if follower.stop.requested() || cfg.exit_at_eof {
                break;
            }
        } else if let Some(file) = follower.open() {
            current = Some(file);
            continue;
        } else if follower.stop.requested() {
            break;
        }
        follower.emitter.flush().map_err(AdaptError::Write)?;
        follower.stop.sleep(cfg.poll);
    }
    follower.lines.flush_partial(follower.emitter)?;
    follower.emitter.flush().map_err(AdaptError::Write)
}

/// The file being read, identified by device and inode so that a new file at the same path is noticed.
struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
    pos: u64,
    /// The last bytes read, which end at `pos`.
    tail: Vec<u8>,
}

enum Rotation {
    None,
    Truncated,
    Replaced,
}

struct Follower<'a, W: Write> {
    path: PathBuf,
    lines: &'a mut Lines,
    emitter: &'a mut Emitter<W>,
    stop: Stop<'a>,
    last_open_error: Option<String>,
}

impl<W: Write> Follower<'_, W> {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn read_error(&self, source: io::Error) -> AdaptError {
        AdaptError::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// Opens the path if it exists; other failures (permissions, a directory) are logged once and retried.
    fn open(&mut self) -> Option<OpenFile> {
        let opened = File::open(&self.path).and_then(|file| {
            let meta = file.metadata()?;
            if meta.is_dir() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "is a directory"));
            }
            Ok(OpenFile {
                dev: meta.dev(),
                ino: meta.ino(),
                file,
                pos: 0,
                tail: Vec::new(),
            })
        });
        match opened {
            Ok(file) => {
                self.last_open_error = None;
                Some(file)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                let msg = e.to_string();
                if self.last_open_error.as_deref() != Some(msg.as_str()) {
                    log_event(
                        "warn",
                        "cannot open file; retrying",
                        &[("file", &self.name()), ("error", &msg)],
                    );
                    self.last_open_error = Some(msg);
                }
                None
            }
        }
    }

    /// Reads `file` to its current end, emitting every complete line.
    fn drain(&mut self, file: &mut OpenFile) -> Result<(), AdaptError> {
        loop {
            if self.stop.overdue() {
                return Ok(());
            }
            let n = match self.lines.read(&mut file.file) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            file.pos += n as u64;
            let read = &self.lines.buf[self.lines.end - n..self.lines.end];
            let keep = TAIL_SIZE.saturating_sub(n).min(file.tail.len());
            file.tail.drain(..file.tail.len() - keep);
            file.tail.extend_from_slice(&read[n.saturating_sub(TAIL_SIZE)..]);
            self.emitter.ctx.set_read_time(time::OffsetDateTime::now_utc());
            self.lines.split(self.emitter).map_err(AdaptError::Write)?;
        }
    }

    /// Compares the path and the open file with what was read so far.
    fn rotation(&mut self, file: &OpenFile) -> Rotation {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) != (file.dev, file.ino) => return Rotation::Replaced,
            // Missing: renamed away or deleted, and not re-created yet; keep reading the old inode meanwhile.
            _ => {}
        }
        match file.file.metadata() {
            Ok(meta) if meta.len() < file.pos => Rotation::Truncated,
            Ok(_) if !file.tail.is_empty() => {
                let mut now = vec![0; file.tail.len()];
                match file.file.read_exact_at(&mut now, file.pos - file.tail.len() as u64) {
                    Ok(()) if now != file.tail => Rotation::Truncated,
                    _ => Rotation::None,
                }
            }
            _ => Rotation::None,
        }
    }
}

/// The read buffer: `buf[start..end]` is data not emitted yet, `buf[start..scanned]` holds no `\n`.
struct Lines {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scanned: usize,
}

impl Lines {
    fn read(&mut self, file: &mut File) -> io::Result<usize> {
        let n = file.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Emits every complete line, then pieces of [`MAX_LINE`] bytes of a longer partial line, then compacts.
    fn split<W: Write>(&mut self, emitter: &mut Emitter<W>) -> io::Result<()> {
        let data = &self.buf[..self.end];
        let mut start = self.start;
        for nl in memchr_iter(b'\n', &data[self.scanned..]) {
            let nl = self.scanned + nl;
            start = emit_pieces(emitter, data, start, nl)?;
            emitter.line(&data[start..nl])?;
            start = nl + 1;
        }
        // A line longer than MAX_LINE is emitted in pieces as it arrives, so memory stays flat.
        start = emit_pieces(emitter, data, start, self.end)?;
        self.start = start;
        self.scanned = self.end;
        if self.start == self.end {
            (self.start, self.end, self.scanned) = (0, 0, 0);
        } else if self.buf.len() - self.end < READ_SIZE / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned = self.end;
            self.start = 0;
        }
        Ok(())
    }

    /// Emits the held-back partial line, if any, as a line of its own.
    fn flush_partial<W: Write>(&mut self, emitter: &mut Emitter<W>) -> Result<(), AdaptError> {
        if self.start < self.end {
            emitter
                .line(&self.buf[self.start..self.end])
                .map_err(AdaptError::Write)?;
        }
        (self.start, self.end, self.scanned) = (0, 0, 0);
        Ok(())
    }
}

/// Emits `data[start..end]` in pieces of [`MAX_LINE`] bytes while more than that is left; returns where the rest
/// starts.
fn emit_pieces<W: Write>(emitter: &mut Emitter<W>, data: &[u8], mut start: usize, end: usize) -> io::Result<usize> {
    while end - start > MAX_LINE {
        let cut = utf8_cut(&data[start..end], MAX_LINE);
        emitter.line(&data[start..start + cut])?;
        start += cut;
    }
    Ok(start)
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

/// Renders lines into a reused buffer handed to `out` in large blocks.
struct Emitter<W: Write> {
    format: Format,
    ctx: LineContext,
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Emitter<W> {
    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        super::render_line(&self.format, line, &self.ctx, &mut self.buf);
        if self.buf.len() >= WRITE_SIZE {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
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

/// The shutdown request, and when the follower first noticed it.
struct Stop<'a> {
    flag: &'a AtomicBool,
    since: Option<Instant>,
}

impl Stop<'_> {
    fn requested(&mut self) -> bool {
        if self.since.is_none() && self.flag.load(Ordering::Relaxed) {
            self.since = Some(Instant::now());
        }
        self.since.is_some()
    }

    /// Requested longer than [`STOP_GRACE`] ago: stop reading even in the middle of a backlog.
    fn overdue(&mut self) -> bool {
        self.requested() && self.since.is_some_and(|t| t.elapsed() > STOP_GRACE)
    }

    /// Sleeps for `total`, waking early when stop is requested.
    fn sleep(&mut self, total: Duration) {
        let deadline = Instant::now() + total;
        while !self.requested() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitter() -> Emitter<Vec<u8>> {
        Emitter {
            format: Format::Plain,
            ctx: LineContext::new("f", &[]),
            buf: Vec::new(),
            out: Vec::new(),
        }
    }

    fn messages(e: &mut Emitter<Vec<u8>>) -> Vec<String> {
        e.flush().unwrap();
        String::from_utf8(std::mem::take(&mut e.out))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    fn feed(lines: &mut Lines, e: &mut Emitter<Vec<u8>>, data: &[u8]) {
        lines.buf[lines.end..lines.end + data.len()].copy_from_slice(data);
        lines.end += data.len();
        lines.split(e).unwrap();
    }

    fn lines() -> Lines {
        Lines {
            buf: vec![0; MAX_LINE + READ_SIZE],
            start: 0,
            end: 0,
            scanned: 0,
        }
    }

    #[test]
    fn partial_line_is_held_until_its_newline_arrives() {
        let (mut l, mut e) = (lines(), emitter());
        feed(&mut l, &mut e, b"one\ntw");
        assert_eq!(messages(&mut e), ["one"]);
        feed(&mut l, &mut e, b"o\nthree");
        assert_eq!(messages(&mut e), ["two"]);
        l.flush_partial(&mut e).unwrap();
        assert_eq!(messages(&mut e), ["three"]);
    }

    #[test]
    fn long_line_is_emitted_in_pieces_of_at_most_max_line_bytes() {
        let (mut l, mut e) = (lines(), emitter());
        let chunk = vec![b'x'; READ_SIZE / 2];
        for _ in 0..6 {
            feed(&mut l, &mut e, &chunk);
        }
        feed(&mut l, &mut e, b"\n");
        let got = messages(&mut e);
        assert_eq!(
            got.iter().map(String::len).collect::<Vec<_>>(),
            [MAX_LINE, MAX_LINE, MAX_LINE]
        );
    }

    #[test]
    fn long_line_arriving_with_its_newline_is_split_too() {
        let (mut l, mut e) = (lines(), emitter());
        let mut data = vec![b'y'; MAX_LINE + 10];
        data.extend_from_slice(b"\nz\n");
        feed(&mut l, &mut e, &data);
        let got = messages(&mut e);
        assert_eq!(got.iter().map(String::len).collect::<Vec<_>>(), [MAX_LINE, 10, 1]);
    }

    #[test]
    fn pieces_are_cut_between_utf8_characters() {
        let mut data = vec![b'a'; MAX_LINE - 1];
        data.extend_from_slice("é".as_bytes());
        assert_eq!(utf8_cut(&data, MAX_LINE), MAX_LINE - 1);
        assert_eq!(utf8_cut(&[b'a'; 10], 4), 4);
    }
}
