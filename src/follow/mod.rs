//! The follower that both log readers share: the streamer (`entourage stream`, raw lines, the sidecar pattern)
//! and the adapter (`entourage adapt`, one JSON object per line). It sits below the programs and above `core` and
//! `support`, and uses no program.
//!
//! What it promises, whichever reader runs it:
//! - **Every line once.** The position (file identity and offset) is saved in the Pod, in a small emptyDir that
//!   survives container restarts, about once a second (or each MiB) and only after the lines up to it reached stdout:
//!   a `kill -9` repeats at most about a second of lines and loses none. A file rotated, truncated or replaced
//!   while the reader was down is recognised ([`position`]), never resumed into.
//! - **Bounded disk.** Behind each saved position, the file's blocks are given back (`keeper`): the volume's
//!   usage, which the kubelet compares with `sizeLimit` before evicting the Pod, stays near the unstreamed
//!   backlog. When the backlog passes `--backlog-warn-bytes`, one warning per episode says so (`monitor`).
//! - **Nothing left behind.** On SIGTERM the reader keeps following for `--drain-period` (classic sidecars,
//!   stopped at the same moment as the app), then reads its files to their end and exits 0.
//!
//! - `follower`: the polling loop (rotation, truncation, partial lines), generic over a [`Sink`]; `follower::open`
//!   opens the followed file from its first byte still on disk, `follower::resume` finds where a restarted
//!   reader starts.
//! - [`position`]: the saved position's format and the restart decision (pure; fuzzed).
//! - [`disk`]: creating the log file before the app does, and writing the position file (`disk::Checkpoint`).
//! - `keeper`: on a thread of its own, saving the newest position handed to it, then giving back the space
//!   behind it (`fallocate(PUNCH_HOLE)`).
//! - `monitor`: the backlog warning, on a thread of its own.
//! - `stop`: SIGTERM, the drain period and the last read to the end.
//! - [`event`]: the readers' own JSON lines on stderr.

pub mod disk;
pub mod event;
mod follower;
mod keeper;
mod monitor;
pub mod position;
mod stop;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use follower::follow;

/// The flags every reader takes, besides its own.
#[derive(Debug, Clone, clap::Args)]
pub struct FollowArgs {
    /// The log file to follow.
    #[arg(long)]
    pub file: PathBuf,
    /// Where the position is saved (a file in a directory the reader may write). Without it a restart reads the
    /// file again from its start, and no space is given back.
    #[arg(long)]
    pub position: Option<PathBuf>,
    /// Create the log file (mode 0666, for an app running as another user) if it does not exist, before marking
    /// the reader started (`entourage started`).
    #[arg(long)]
    pub create: bool,
    /// Give back the disk space of what was streamed (punch holes behind the saved position). Needs `--position`
    /// and write access to the file; without it, one warning and streaming goes on.
    #[arg(long)]
    pub give_back: bool,
    /// Warn (once per episode) when the bytes not yet streamed pass this many.
    #[arg(long, value_name = "BYTES")]
    pub backlog_warn_bytes: Option<u64>,
    /// After SIGTERM, keep following for this long (classic sidecars stop together with the app), then read the
    /// file to its end and exit.
    #[arg(long, default_value = "0s", value_parser = crate::support::duration::parse_drain_period)]
    pub drain_period: Duration,
    /// Exit (status 0) once the end of the file is reached instead of following it (batch runs, benchmarks; a
    /// missing file is still waited for).
    #[arg(long)]
    pub exit_at_eof: bool,
    /// How often the file is checked for new data, rotation and truncation, in milliseconds. While the app writes
    /// fast (a MiB or more since the last check) it is checked again after 10 ms instead, so that little is left
    /// unstreamed on disk.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub poll_interval_ms: u64,
}

impl FollowArgs {
    /// The poll interval.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// What a reader does with the bytes it reads.
pub trait Sink {
    /// Hands over bytes read from the file (after those held back last time). Returns how many are done with:
    /// written or rendered, to reach stdout at the next [`Sink::flush`]. The rest (a partial line) is handed over
    /// again with what follows.
    fn consume(&mut self, data: &[u8]) -> io::Result<usize>;
    /// The file is left behind (rotation, truncation, exit): `rest`, held back so far, is done with as it is.
    fn finish(&mut self, rest: &[u8]) -> io::Result<()>;
    /// Everything done with so far is written to stdout.
    fn flush(&mut self) -> io::Result<()>;
}

/// Errors of a reader.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Reading the followed file failed after it was opened.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing to stdout failed (for example the reader of the pipe went away).
    #[error("cannot write to stdout: {0}")]
    Write(#[source] io::Error),
    /// The thread that saves positions could not be started.
    #[error("cannot start the thread that saves positions: {0}")]
    Keeper(#[source] io::Error),
}

/// `entourage started --position P`: the startup probe of a native reader. Succeeds once the reader saving its
/// position at `P` has prepared its log file (created it, or said why it could not): the kubelet starts the app
/// only then, so the app appends to the file the reader created and may give back.
pub fn started(position: &Path) -> Result<(), String> {
    let marker = disk::started_marker(position);
    match marker.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{} does not exist yet: the reader has not started",
            marker.display()
        )),
        Err(e) => Err(format!("cannot check {}: {e}", marker.display())),
    }
}

/// Command-line arguments of `entourage started`.
#[derive(Debug, Clone, clap::Args)]
pub struct StartedArgs {
    /// The `--position` of the reader to check.
    #[arg(long)]
    pub position: PathBuf,
}
