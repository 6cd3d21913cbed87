//! The streamer (`entourage stream`), the sidecar pattern's reader: the bytes of a log file on stdout, exactly what
//! `tail -n+1 -F` prints, through the shared follower ([`crate::follow`]) — so unlike busybox `tail` it resumes
//! where it stopped after a restart, gives back the disk space of what it streamed, and drains on SIGTERM.
//!
//! The kubelet's container runtime reads the sidecar's stdout and splits it into lines for `kubectl logs` and the
//! node's log collector; the streamer adds nothing and holds nothing back (a partial last line goes out as it is,
//! as `tail` does it).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::follow::{event, FollowArgs, FollowError, Sink};

/// Command-line arguments of `entourage stream`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// What to follow, and how (shared with `entourage adapt`).
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// Errors of the streamer.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Following the file failed.
    #[error(transparent)]
    Follow(#[from] FollowError),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] io::Error),
    /// The follower thread ended abnormally.
    #[error("the follower thread failed: {0}")]
    Follower(String),
}

/// Bytes in, the same bytes out.
struct RawSink<W: Write> {
    out: W,
}

impl<W: Write> Sink for RawSink<W> {
    fn consume(&mut self, data: &[u8]) -> io::Result<usize> {
        self.out.write_all(data)?;
        Ok(data.len())
    }

    fn finish(&mut self, rest: &[u8]) -> io::Result<()> {
        self.out.write_all(rest)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Runs the streamer until SIGTERM or SIGINT (then for `--drain-period`, then to the end of the file; exit status
/// 0), or with `--exit-at-eof` until the end of the file. A fatal error is also logged to stderr as one JSON object.
pub async fn run(args: StreamArgs) -> Result<(), StreamError> {
    let result = run_inner(args).await;
    if let Err(e) = &result {
        event::log("error", &e.to_string(), &[]);
    }
    result
}

async fn run_inner(args: StreamArgs) -> Result<(), StreamError> {
    let shutdown = crate::support::shutdown::shutdown_signal().map_err(StreamError::Signal)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut follower = {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || {
            // Stdout's own buffer is line-sized: the follower hands over whole reads, written at once.
            let mut sink = RawSink {
                out: io::stdout().lock(),
            };
            crate::follow::follow(&args.follow, &stop, &mut sink)
        })
    };
    let joined = tokio::select! {
        joined = &mut follower => joined,
        _ = shutdown => { stop.store(true, Ordering::Relaxed); follower.await }
    };
    Ok(joined.map_err(|e| StreamError::Follower(e.to_string()))??)
}
