//! The backlog warning. The follower may be blocked writing to stdout (the container runtime not reading, a node
//! under pressure) exactly when the backlog grows, so a thread of its own compares the file's size with what reached
//! the sink, and warns once per episode: when the backlog passes the limit, and again only after it fell below half.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::event;

/// What the follower has done with: the inode it reads and the offset its sink is done with.
#[derive(Debug, Default)]
pub struct Progress {
    ino: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    /// Records that the sink is done with `done` bytes of inode `ino`.
    pub fn set(&self, ino: u64, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.ino.store(ino, Ordering::Relaxed);
    }
}

/// Whether a backlog of `backlog` bytes starts (`Some(true)`) or ends (`Some(false)`) an episode.
fn episode(in_episode: bool, backlog: u64, limit: u64) -> Option<bool> {
    if !in_episode && backlog > limit {
        Some(true)
    } else if in_episode && backlog < limit / 2 {
        Some(false)
    } else {
        None
    }
}

/// Checks the backlog of `path` every `every` until `finished`.
pub fn watch(path: &Path, limit: u64, progress: &Progress, finished: &AtomicBool, every: Duration) {
    let mut in_episode = false;
    let name = path.display().to_string();
    while !finished.load(Ordering::Relaxed) {
        if let Ok(meta) = fs::metadata(path) {
            let ino = progress.ino.load(Ordering::Relaxed);
            if meta.ino() == ino {
                let backlog = meta.len().saturating_sub(progress.done.load(Ordering::Relaxed));
                match episode(in_episode, backlog, limit) {
                    Some(true) => {
                        in_episode = true;
                        event::warn(
                            "the backlog of unstreamed bytes passed the warning limit: stdout is blocked or the \
                             reader is too slow, and the log volume may reach its sizeLimit (the kubelet then evicts \
                             the Pod)",
                            &[
                                ("file", &name),
                                ("backlog_bytes", &backlog.to_string()),
                                ("limit_bytes", &limit.to_string()),
                            ],
                        );
                    }
                    Some(false) => {
                        in_episode = false;
                        event::info(
                            "the backlog is below half the warning limit again",
                            &[("file", &name), ("backlog_bytes", &backlog.to_string())],
                        );
                    }
                    None => {}
                }
            }
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_episode_warns_once_and_ends_below_half_the_limit() {
        let mut state = false;
        let mut starts = 0;
        for backlog in [10, 200, 300, 150, 60, 120, 40, 30, 101] {
            if let Some(now) = episode(state, backlog, 100) {
                starts += usize::from(now);
                state = now;
            }
        }
        assert_eq!(starts, 2, "200 starts one episode, 40 ends it, 101 starts the next");
    }
}
