//! SIGTERM for a reader: in a classic Pod every container gets it at the same moment, and the app, shutting down,
//! still writes its last lines, so a classic reader keeps following for `--drain-period`; a native sidecar is
//! stopped after the app, so it finishes at once. Either way it then reads its file to the end and exits 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The shutdown request: after it, keep following for the drain period, then finish.
pub(super) struct Stop<'a> {
    flag: &'a AtomicBool,
    drain_period: Duration,
    since: Option<Instant>,
}

impl<'a> Stop<'a> {
    pub(super) fn new(flag: &'a AtomicBool, drain_period: Duration) -> Self {
        Stop {
            flag,
            drain_period,
            since: None,
        }
    }

    /// SIGTERM came, and the drain period is over: read to the end and exit.
    pub(super) fn finishing(&mut self) -> bool {
        if self.since.is_none() && self.flag.load(Ordering::Relaxed) {
            self.since = Some(Instant::now());
        }
        self.since.is_some_and(|t| t.elapsed() >= self.drain_period)
    }

    /// Sleeps for `total`, waking early when it is time to finish.
    pub(super) fn sleep(&mut self, total: Duration) {
        let deadline = Instant::now() + total;
        while !self.finishing() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }
}
