//! Starting again after a restart: the saved position resumed only in the file it names, found by its identity
//! (at the path, or renamed away in the same directory), else the current file from its start, with one line
//! saying why.

use std::fs;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use super::{event, FollowError, Follower, Reading, Sink};
use crate::follow::position::{Assessment, Position, Seen};

impl<S: Sink> Follower<'_, S> {
    /// Where to start: the saved position if it still names this file (or the file it was renamed to), else the
    /// start of the current file, with one line saying why.
    pub(super) fn resume(&mut self) -> Result<Option<Reading>, FollowError> {
        let Some(keeper) = &self.keeper else {
            return Ok(self.open(0));
        };
        let saved = match keeper.checkpoint().load() {
            Ok(None) => {
                event::info(
                    "no saved position; reading the file from its start",
                    &[("file", &self.name)],
                );
                return Ok(self.open(0));
            }
            Ok(Some(text)) => Position::parse(&text).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let saved = match saved {
            Ok(p) if p.file == self.name => p,
            Ok(p) => {
                return Ok(self.start_over(&format!("the saved position is for another file, {}", p.file)));
            }
            Err(e) => return Ok(self.start_over(&format!("the saved position is unusable: {e}"))),
        };
        let current = self.open(0);
        let assessment = current.as_ref().map(|r| assess(&saved, r));
        match assessment {
            Some(Assessment::Resume(offset)) => {
                let mut reading = current.expect("assessed");
                self.seek(&mut reading, offset, &saved)?;
                return Ok(Some(reading));
            }
            Some(Assessment::Shrunk) => {
                return Ok(self.start_over("the file is shorter than the saved position (truncated while the reader was down)"))
            }
            Some(Assessment::Rewritten) => {
                return Ok(self.start_over("the file holds other bytes before the saved position (truncated and written again while the reader was down)"))
            }
            Some(Assessment::OtherFile) | None => {}
        }
        // Renamed away while the reader was down (logrotate): finish the old file first, nothing is lost.
        if let Some((path, mut reading, assessment)) = self.find_renamed(&saved) {
            let rotated = path.display().to_string();
            if let Assessment::Resume(offset) = assessment {
                event::info(
                    "the file was rotated while the reader was down; reading the rest of the old one first",
                    &[("file", &self.name), ("rotated", &rotated)],
                );
                self.seek(&mut reading, offset, &saved)?;
            } else {
                // Truncated too (or another file on a reused inode): its lines are all after the saved ones.
                event::warn(
                    "the file was truncated and rotated while the reader was down; reading the old one from its \
                     start first",
                    &[("file", &self.name), ("rotated", &rotated)],
                );
            }
            return Ok(Some(reading));
        }
        Ok(self.start_over(
            "the file read before the restart is gone (rotated and removed, or replaced); lines written to it after the last saved position are lost",
        ))
    }

    /// The current file from its first byte still on disk, after one warning saying why.
    fn start_over(&mut self, why: &str) -> Option<Reading> {
        event::warn(
            &format!("{why}; reading the current file from its start"),
            &[("file", &self.name)],
        );
        self.open(0)
    }

    fn seek(&self, reading: &mut Reading, offset: u64, saved: &Position) -> Result<(), FollowError> {
        reading.pos = reading
            .file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| self.read_error(e))?;
        reading.tail = saved.before_bytes();
        Ok(())
    }

    /// A regular file in the followed file's directory with the saved identity (device and inode), and how it
    /// compares with the saved position.
    fn find_renamed(&mut self, saved: &Position) -> Option<(PathBuf, Reading, Assessment)> {
        let dir = self.args.file.parent()?;
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && (meta.dev(), meta.ino()) == (saved.dev, saved.ino) && entry.path() != self.args.file {
                let path = entry.path();
                let reading = self.open_path(&path, false)?;
                let assessment = assess(saved, &reading);
                return Some((path, reading, assessment));
            }
        }
        None
    }
}

/// The saved position against an open file.
fn assess(saved: &Position, reading: &Reading) -> Assessment {
    let size = reading.file.metadata().map(|m| m.len()).unwrap_or(0);
    let len = saved.before_bytes().len();
    let mut before = vec![0; len];
    let read = saved.offset <= size
        && reading
            .file
            .read_exact_at(&mut before, saved.offset - len as u64)
            .is_ok();
    saved.assess(&Seen {
        dev: reading.dev,
        ino: reading.ino,
        size,
        before: read.then_some(before),
    })
}
