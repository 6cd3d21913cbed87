//! The reader's bookkeeping on disk, on a thread of its own: saving the position, then giving back the space of
//! the lines behind it.
//!
//! Both touch the filesystem's metadata, and on ext4 and XFS both can wait for the disk: punching a hole first
//! writes the range's dirty pages out (a reader right behind the app always punches pages still dirty), and a
//! rename waits while the journal commits those holes. Done inline, once per MiB streamed, they held the adapter
//! at 0.64 M lines/s instead of 1.4 M (2.7 ms per rename, 3.3 ms per hole, measured with `strace -w`). So the
//! reader hands the keeper each position whose lines are on stdout and reads on; the keeper saves the newest
//! position it has, skipping those it had no time for, and then punches behind it. A slow disk delays the
//! checkpoint and the give-back, never the stream.
//!
//! The order that makes `kill -9` safe is kept: a position is handed over only once its lines are flushed to
//! stdout, and space is given back only behind a position already saved (its [`BEFORE_LEN`] bytes are kept: they
//! identify the file at restart).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rustix::fs::FallocateFlags;

use super::disk::Checkpoint;
use super::event;
use super::position::{Position, BEFORE_LEN};

/// The smallest block size holes are aligned to (a hole smaller than the filesystem's block frees nothing, and a
/// partial block is zeroed rather than freed).
const MIN_BLOCK: u64 = 4096;

/// Saves positions and gives back space behind them, on its own thread; see the module documentation.
#[derive(Debug)]
pub struct Keeper {
    /// Where positions are saved (read at start by the reader itself).
    path: PathBuf,
    requests: Option<mpsc::Sender<Keep>>,
    thread: Option<JoinHandle<()>>,
}

/// Save `position`; then, with `give_back`, free the blocks of the file behind it.
#[derive(Debug)]
struct Keep {
    position: Position,
    /// The file the position is in, opened for writing (its own descriptor), when its space is to be given back.
    give_back: Option<Arc<File>>,
}

impl Keeper {
    /// A keeper saving positions with `checkpoint`.
    pub fn start(checkpoint: Checkpoint) -> io::Result<Keeper> {
        let path = checkpoint.path().to_path_buf();
        let (requests, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("keeper".into())
            .spawn(move || keep_newest(checkpoint, &inbox))?;
        Ok(Keeper {
            path,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Where positions are saved.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::new(self.path.clone())
    }

    /// Hands over `position` (its lines are on stdout), and the file to punch behind it when space is given back.
    pub fn keep(&self, position: Position, give_back: Option<Arc<File>>) {
        if let Some(requests) = &self.requests {
            // The keeper only stops when asked to (or panicked, and then there is nothing left to keep).
            let _ = requests.send(Keep { position, give_back });
        }
    }

    /// Waits until the last position handed over is saved and the space behind it given back.
    pub fn finish(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            // A panicked keeper has nothing left to save; the reader exits as it would have.
            let _ = thread.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The keeper's thread: the newest position first, until the reader hangs up.
fn keep_newest(mut checkpoint: Checkpoint, inbox: &mpsc::Receiver<Keep>) {
    let mut holes = Holes::default();
    while let Ok(mut keep) = inbox.recv() {
        while let Ok(newer) = inbox.try_recv() {
            keep = newer;
        }
        if checkpoint.save(&keep.position) {
            if let Some(file) = keep.give_back {
                holes.punch(&file, &keep.position);
            }
        }
    }
}

/// How far the current file was given back.
#[derive(Debug, Default)]
struct Holes {
    /// Device and inode of the file punched last.
    file: (u64, u64),
    /// Everything before this offset of that file is a hole already.
    punched_to: u64,
    /// Punching failed once (the filesystem does not punch holes): not tried again, it was said once.
    failed: bool,
}

impl Holes {
    /// Frees the whole blocks of `file` before `position`, keeping the block(s) holding its bytes before the offset.
    fn punch(&mut self, file: &File, position: &Position) {
        if self.failed {
            return;
        }
        // Another file, or the same one truncated (its offsets start again).
        if (position.dev, position.ino) != self.file || position.offset < self.punched_to {
            (self.file, self.punched_to) = ((position.dev, position.ino), 0);
        }
        // Truncated (copytruncate) and written again since the position was taken: its blocks now hold lines not
        // streamed yet.
        if !still_holds(file, position) {
            return;
        }
        let block = file.metadata().map(|m| m.blksize()).unwrap_or(MIN_BLOCK).max(MIN_BLOCK);
        let end = position.offset.saturating_sub(BEFORE_LEN as u64) / block * block;
        if end <= self.punched_to {
            return;
        }
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(file, flags, self.punched_to, end - self.punched_to) {
            Ok(()) => self.punched_to = end,
            Err(e) => {
                self.failed = true;
                event::warn(
                    "cannot give back disk space behind the reader (the filesystem does not punch holes?); the \
                     file keeps its size on disk until it is rotated, streaming goes on",
                    &[("file", &position.file), ("error", &io::Error::from(e).to_string())],
                );
            }
        }
    }
}

/// Whether `file` still holds the bytes `position` saw before its offset.
fn still_holds(file: &File, position: &Position) -> bool {
    let before = position.before_bytes();
    let mut now = vec![0; before.len()];
    let Some(from) = position.offset.checked_sub(before.len() as u64) else {
        return false;
    };
    file.read_exact_at(&mut now, from).is_ok() && now == before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follow::disk::allocated;
    use std::fs::{self, OpenOptions};

    fn position_in(path: &std::path::Path, offset: u64) -> (File, Position) {
        let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
        let meta = file.metadata().unwrap();
        let mut before = vec![0; BEFORE_LEN];
        file.read_exact_at(&mut before, offset - BEFORE_LEN as u64).unwrap();
        let position = Position::new(&path.display().to_string(), meta.dev(), meta.ino(), offset, &before);
        (file, position)
    }

    #[test]
    fn holes_free_whole_blocks_behind_the_saved_offset_and_keep_the_bytes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        fs::write(&path, &data).unwrap();
        let before = allocated(&path).unwrap();
        let offset = 3 * 1024 * 1024 + 100;
        let (file, position) = position_in(&path, offset);
        let mut keeper = Keeper::start(Checkpoint::new(dir.path().join("reader.pos"))).unwrap();
        keeper.keep(position.clone(), Some(Arc::new(file)));
        keeper.finish();

        let after = allocated(&path).unwrap();
        assert!(after <= before - 3 * 1024 * 1024 + 2 * MIN_BLOCK, "{before} -> {after}");
        let now = fs::read(&path).unwrap();
        assert_eq!(now.len(), data.len(), "the apparent size is kept");
        let kept = offset as usize - BEFORE_LEN..offset as usize;
        assert_eq!(
            now[kept.clone()],
            data[kept],
            "the bytes that identify the file at restart"
        );
        let saved = keeper.checkpoint().load().unwrap().unwrap();
        assert_eq!(
            Position::parse(&saved),
            Ok(position),
            "saved before the space is given back"
        );
    }

    #[test]
    fn a_file_rewritten_since_the_position_keeps_its_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        fs::write(&path, vec![b'o'; 4 << 20]).unwrap();
        let (file, position) = position_in(&path, 3 << 20);
        // copytruncate, then the app writes again past the old offset before the keeper gets to it.
        fs::write(&path, vec![b'n'; 4 << 20]).unwrap();
        let allocated_before = allocated(&path).unwrap();
        let mut keeper = Keeper::start(Checkpoint::new(dir.path().join("reader.pos"))).unwrap();
        keeper.keep(position, Some(Arc::new(file)));
        keeper.finish();
        assert_eq!(allocated(&path).unwrap(), allocated_before);
        assert!(fs::read(&path).unwrap().iter().all(|&b| b == b'n'));
    }

    #[test]
    fn a_file_that_cannot_be_punched_keeps_its_blocks_and_the_position_is_still_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        fs::write(&path, vec![b'x'; 2 << 20]).unwrap();
        let (_, position) = position_in(&path, 2 << 20);
        let read_only = File::open(&path).unwrap();
        let allocated_before = allocated(&path).unwrap();
        let mut keeper = Keeper::start(Checkpoint::new(dir.path().join("reader.pos"))).unwrap();
        keeper.keep(position.clone(), Some(Arc::new(read_only)));
        keeper.finish();
        assert_eq!(allocated(&path).unwrap(), allocated_before);
        let saved = keeper.checkpoint().load().unwrap().unwrap();
        assert_eq!(Position::parse(&saved), Ok(position));
    }

    #[test]
    fn positions_handed_over_faster_than_saved_end_with_the_newest_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        fs::write(&path, vec![b'l'; 1 << 20]).unwrap();
        let mut keeper = Keeper::start(Checkpoint::new(dir.path().join("reader.pos"))).unwrap();
        let mut last = None;
        for offset in (BEFORE_LEN as u64..1 << 20).step_by(4099) {
            let (_, position) = position_in(&path, offset);
            keeper.keep(position.clone(), None);
            last = Some(position);
        }
        keeper.finish();
        let saved = keeper.checkpoint().load().unwrap().unwrap();
        assert_eq!(Position::parse(&saved).ok(), last);
    }
}
