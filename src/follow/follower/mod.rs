//! Following one path like `tail -F`, by polling, resuming where the last run stopped.
//!
//! Polling (stat the path, fstat the open file, compare device/inode and size) rather than inotify, because the
//! file lives on an emptyDir shared between containers, often on overlayfs or a network volume, where inotify events
//! are missing or late; a poll every few hundred milliseconds costs nothing next to reading the data.
//!
//! Rotation while running:
//! - **rename** (logrotate's default, or delete and re-create): the path now names another inode. The writer may
//!   have appended to the old inode after our last read, so the old file is read to its end once more before
//!   switching; the new file is read from its start. While the path is missing the old file stays open and read.
//! - **copytruncate**: same inode, size below our offset, or other bytes before it (refilled between two polls):
//!   read again from offset 0. A line written between the copy and the truncate is lost by any tailer (logrotate
//!   documents this race). A file truncated and then renamed away between two rounds is read again from its
//!   start before the new one.
//! - What no polling tailer sees: lines written and truncated away between two rounds, and a file created and
//!   renamed or deleted away between two rounds. Nothing else is lost, and nothing is read twice: `tests.rs`
//!   plays random sequences of writes, renames, reopens, truncations, deletions and restarts against a model
//!   and holds the follower to exactly this.
//!
//! At restart, the saved position is resumed only in the same file with the same bytes before the offset; a file
//! renamed away meanwhile (`access.log.1`) is looked for in the directory and drained from the saved offset first
//! (from its start, if it was truncated too). A position is never saved for a file truncated since the last read:
//! its bytes before the offset would be new ones, and a restart would resume in the middle of new lines. Lost
//! across a restart: what the app wrote after the saved position to a file that left the directory meanwhile.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod open;
mod resume;
#[cfg(test)]
mod tests;

use super::disk::{self, Checkpoint};
use super::keeper::Keeper;
use super::monitor::{self, Progress};
use super::position::{Position, BEFORE_LEN};
use super::stop::Stop;
use super::{event, FollowArgs, FollowError, Sink};

/// Bytes asked for by one `read`.
const READ_SIZE: usize = 1 << 20;
/// Positions are saved (and space given back) at most this often: what a `kill -9` may repeat.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// ...or once this many bytes were streamed since the last save, whichever comes first: a fast writer's file
/// then keeps at most about this much (plus the backlog) on disk.
const CHECKPOINT_BYTES: u64 = 1 << 20;
/// After a round that read at least [`CHECKPOINT_BYTES`], the file is checked again this soon, not after the poll
/// interval: at 100 MiB/s a 200 ms pause alone would leave 20 MiB unstreamed, and on disk. Quieter rounds double
/// the pause back up to the poll interval.
const BUSY_POLL: Duration = Duration::from_millis(10);

/// Follows `args.file` into `sink` until `stop` is set (then for `--drain-period`, then to the end of the file) or,
/// with `--exit-at-eof`, until the end of the file.
pub fn follow<S: Sink>(args: &FollowArgs, stop: &AtomicBool, sink: &mut S) -> Result<(), FollowError> {
    let progress = Progress::default();
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if let Some(limit) = args.backlog_warn_bytes {
            let (progress, finished) = (&progress, &finished);
            scope.spawn(move || monitor::watch(&args.file, limit, progress, finished, args.poll()));
        }
        let keeper = match &args.position {
            Some(path) => Some(Keeper::start(Checkpoint::new(path.clone())).map_err(FollowError::Keeper)?),
            None => None,
        };
        let result = Follower::new(args, stop, sink, &progress, keeper).run();
        finished.store(true, Ordering::Relaxed);
        result
    })
}

/// The file being read, identified by device and inode so that a new file at the same path is noticed.
struct Reading {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read (handed to the sink, done with or held back).
    pos: u64,
    /// The last bytes read, which end at `pos`.
    tail: Vec<u8>,
    /// The file opened for writing (a descriptor of its own, for the keeper), when its space is given back.
    give_back: Option<Arc<File>>,
}

enum Rotation {
    None,
    Truncated,
    Replaced,
}

/// What follows one round.
enum Round {
    /// Look again at once: a file was opened or replaced.
    Again,
    /// Wait for the next poll.
    Wait,
    /// Stopped, or at the end of the file with `--exit-at-eof`.
    Finished,
}

struct Follower<'a, S: Sink> {
    args: &'a FollowArgs,
    name: String,
    sink: &'a mut S,
    stop: Stop<'a>,
    progress: &'a Progress,
    /// Saves positions and gives back space, with `--position`.
    keeper: Option<Keeper>,
    last_checkpoint: Instant,
    /// The offset saved last (in the file being read).
    saved_done: u64,
    /// Bytes read and not done with by the sink: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    last_open_error: Option<String>,
    warned_read_only: bool,
    /// The pause before the next round: [`BUSY_POLL`] while the app writes fast, up to the poll interval.
    pause: Duration,
}

impl<'a, S: Sink> Follower<'a, S> {
    fn new(
        args: &'a FollowArgs,
        stop: &'a AtomicBool,
        sink: &'a mut S,
        progress: &'a Progress,
        keeper: Option<Keeper>,
    ) -> Self {
        Follower {
            args,
            name: args.file.display().to_string(),
            sink,
            stop: Stop::new(stop, args.drain_period),
            progress,
            keeper,
            // Due at once: a reader restarted in a loop saves its first position as soon as it has streamed
            // something, not a second later.
            last_checkpoint: Instant::now()
                .checked_sub(CHECKPOINT_EVERY)
                .unwrap_or_else(Instant::now),
            saved_done: 0,
            buf: vec![0; 2 * READ_SIZE],
            start: 0,
            end: 0,
            last_open_error: None,
            warned_read_only: false,
            // A file that fills fast from the start is noticed at once; a quiet one backs off within 0.3 s.
            pause: BUSY_POLL,
        }
    }

    fn read_error(&self, source: io::Error) -> FollowError {
        FollowError::Read {
            path: self.args.file.clone(),
            source,
        }
    }

    fn run(mut self) -> Result<(), FollowError> {
        self.prepare();
        let mut current = self.resume()?;
        loop {
            match self.round(&mut current)? {
                Round::Again => continue,
                Round::Finished => break,
                Round::Wait => {}
            }
            self.sink.flush().map_err(FollowError::Write)?;
            let pause = if current.is_some() {
                self.pause
            } else {
                self.args.poll()
            };
            self.stop.sleep(pause);
        }
        self.close(&mut current)
    }

    /// The end of a run: the held-back partial line goes out, the last position is saved, and the keeper has
    /// written it before this returns.
    fn close(&mut self, current: &mut Option<Reading>) -> Result<(), FollowError> {
        if let Some(reading) = current.as_mut() {
            self.leave(reading)?;
            self.save(reading)?;
        }
        // Exits only once the last position is saved.
        if let Some(keeper) = self.keeper.as_mut() {
            keeper.finish();
        }
        self.sink.flush().map_err(FollowError::Write)
    }

    /// One look at the path and the open file: rotation and truncation handled, new data read. The in-process
    /// tests (`tests.rs`) drive the follower round by round against a model of the file's life.
    fn round(&mut self, current: &mut Option<Reading>) -> Result<Round, FollowError> {
        let Some(reading) = current.as_mut() else {
            if let Some(reading) = self.open(0) {
                *current = Some(reading);
                return Ok(Round::Again);
            }
            return Ok(if self.stop.finishing() {
                Round::Finished
            } else {
                Round::Wait
            });
        };
        // Checked before reading: a file truncated and refilled since the last read is recognised only
        // while `pos` and the bytes before it are still those of the old content.
        match self.rotation(reading) {
            Rotation::None => {}
            Rotation::Truncated => self.rewind(reading)?,
            Rotation::Replaced => {
                // The writer may have appended to the old inode since the last read; and it may have been
                // truncated first (copytruncate, then renamed away before this round): then from its start.
                if self.truncated(reading) {
                    self.rewind(reading)?;
                }
                self.drain(reading, None)?;
                self.leave(reading)?;
                self.save(reading)?;
                event::info("file replaced; following the new one", &[("file", &self.name)]);
                *current = self.open(0);
                if let Some(new) = current.as_mut() {
                    // Saved at once: a restart now must not look for the old file, which may be gone.
                    self.save(new)?;
                }
                return Ok(Round::Again);
            }
        }
        let until = self
            .stop
            .finishing()
            .then(|| reading.file.metadata().map(|m| m.len()).ok())
            .flatten();
        let from = reading.pos;
        self.drain(reading, until)?;
        self.pause = if reading.pos - from >= CHECKPOINT_BYTES {
            BUSY_POLL
        } else {
            (self.pause * 2).min(self.args.poll())
        };
        self.offer_held()?;
        if self.stop.finishing() || self.args.exit_at_eof {
            return Ok(Round::Finished);
        }
        self.sink.flush().map_err(FollowError::Write)?;
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.save(reading)?;
        }
        Ok(Round::Wait)
    }

    /// Creates the file if asked, then marks the reader started for its startup probe.
    fn prepare(&mut self) {
        if self.args.create {
            match disk::create_world_writable(&self.args.file) {
                Ok(true) => event::info("created the log file for the app to append to", &[("file", &self.name)]),
                Ok(false) => {}
                Err(e) => event::warn(
                    "cannot create the log file; the app will create it, and the reader may then be unable to give \
                     back its disk space",
                    &[("file", &self.name), ("error", &e.to_string())],
                ),
            }
        }
        if let Some(keeper) = &self.keeper {
            let marker = keeper.checkpoint().marker();
            if let Err(e) = fs::write(&marker, b"") {
                event::warn(
                    "cannot mark the reader started; its startup probe will fail",
                    &[("marker", &marker.display().to_string()), ("error", &e.to_string())],
                );
            }
        }
    }

    /// Reads `reading` to its current end (or to `until`), handing the data to the sink.
    fn drain(&mut self, reading: &mut Reading, until: Option<u64>) -> Result<(), FollowError> {
        // Before the sink may block on a full stdout: the backlog monitor compares the file with this.
        self.progress.set(reading.ino, reading.pos - self.held());
        loop {
            if until.is_some_and(|until| reading.pos >= until) {
                return Ok(());
            }
            if self.buf.len() - self.end < READ_SIZE {
                self.compact();
            }
            let n = match reading.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            reading.pos += n as u64;
            self.end += n;
            let read = &self.buf[self.end - n..self.end];
            let keep = BEFORE_LEN.saturating_sub(n).min(reading.tail.len());
            reading.tail.drain(..reading.tail.len() - keep);
            reading.tail.extend_from_slice(&read[n.saturating_sub(BEFORE_LEN)..]);
            let done = self
                .sink
                .consume(&self.buf[self.start..self.end])
                .map_err(FollowError::Write)?;
            self.start += done;
            let done = reading.pos - self.held();
            self.progress.set(reading.ino, done);
            if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
                || done.saturating_sub(self.saved_done) >= CHECKPOINT_BYTES
            {
                self.save(reading)?;
            }
        }
    }

    /// Hands the held-back bytes over again without new data: a sink that holds whole lines back for a while
    /// (the adapter's multiline grouping, until a quiet period passes) may be done with them now.
    fn offer_held(&mut self) -> Result<(), FollowError> {
        if self.start < self.end {
            let done = self
                .sink
                .consume(&self.buf[self.start..self.end])
                .map_err(FollowError::Write)?;
            self.start += done;
        }
        Ok(())
    }

    fn held(&self) -> u64 {
        (self.end - self.start) as u64
    }

    /// Moves held-back bytes to the front, and grows the buffer if they leave less than one read's room.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() - self.end < READ_SIZE {
            self.buf.resize(self.end + READ_SIZE, 0);
        }
    }

    /// The file is left behind: the held-back partial line goes out as it is.
    fn leave(&mut self, reading: &Reading) -> Result<(), FollowError> {
        if self.start < self.end {
            self.sink
                .finish(&self.buf[self.start..self.end])
                .map_err(FollowError::Write)?;
        }
        (self.start, self.end) = (0, 0);
        self.progress.set(reading.ino, reading.pos);
        Ok(())
    }

    /// Flushes the sink, then hands the keeper the position of what reached stdout, to save and give back the
    /// space behind.
    fn save(&mut self, reading: &mut Reading) -> Result<(), FollowError> {
        self.last_checkpoint = Instant::now();
        let Some(keeper) = &self.keeper else {
            return Ok(());
        };
        self.sink.flush().map_err(FollowError::Write)?;
        if self.truncated(reading) {
            // Truncated (and perhaps written again) since the last read: the bytes before the offset are no longer
            // the ones streamed, and a position naming them would resume in the middle of new lines. The next
            // round reads the file again from its start; the position saved before stays.
            return Ok(());
        }
        let done = reading.pos - (self.end - self.start) as u64;
        let from = done.saturating_sub(BEFORE_LEN as u64);
        let mut before = vec![0; (done - from) as usize];
        if reading.file.read_exact_at(&mut before, from).is_err() {
            // Truncated under us: the next poll notices; nothing to save for these bytes.
            return Ok(());
        }
        self.saved_done = done;
        let position = Position::new(&self.name, reading.dev, reading.ino, done, &before);
        keeper.keep(position, reading.give_back.clone());
        Ok(())
    }

    /// Compares the path and the open file with what was read so far.
    fn rotation(&self, reading: &Reading) -> Rotation {
        match fs::metadata(&self.args.file) {
            Ok(meta) if (meta.dev(), meta.ino()) != (reading.dev, reading.ino) => return Rotation::Replaced,
            // Missing: renamed away or deleted, and not re-created yet; keep reading the old inode meanwhile.
            _ => {}
        }
        if self.truncated(reading) {
            Rotation::Truncated
        } else {
            Rotation::None
        }
    }

    /// Whether the open file is shorter than what was read, or holds other bytes before `pos` (truncated and
    /// refilled since the last read).
    fn truncated(&self, reading: &Reading) -> bool {
        match reading.file.metadata() {
            Ok(meta) if meta.len() < reading.pos => true,
            Ok(_) if !reading.tail.is_empty() => {
                let mut now = vec![0; reading.tail.len()];
                let at = reading.pos - reading.tail.len() as u64;
                matches!(reading.file.read_exact_at(&mut now, at), Ok(()) if now != reading.tail)
            }
            _ => false,
        }
    }

    /// The open file was truncated: what is held back goes out, and reading starts again from its start.
    fn rewind(&mut self, reading: &mut Reading) -> Result<(), FollowError> {
        event::info(
            "file truncated; reading it again from its start",
            &[("file", &self.name)],
        );
        self.leave(reading)?;
        reading.pos = reading.file.seek(SeekFrom::Start(0)).map_err(|e| self.read_error(e))?;
        reading.tail.clear();
        self.saved_done = 0;
        Ok(())
    }
}
