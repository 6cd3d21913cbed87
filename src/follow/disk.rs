//! The log volume's disk: creating the log file before the app does, giving back the space of what was streamed,
//! and saving the position.
//!
//! The kubelet evicts the whole Pod once an emptyDir's usage passes its `sizeLimit`, and it measures usage as
//! allocated blocks (project quota, or the sum of `st_blocks`), not apparent size. An app that appends forever, with
//! nothing rotating its file, is evicted when the file reaches the limit. A reader that punches a hole behind what
//! it has streamed (`fallocate(PUNCH_HOLE | KEEP_SIZE)`) frees those blocks: the file's apparent size keeps growing
//! and the app's `O_APPEND` writes are unaffected, but its allocated size stays near the unstreamed backlog.
//!
//! Punching needs the file open for writing. An emptyDir's files belong to whoever created them (nginx: root, 0644),
//! and injected readers run as another non-root user without capabilities: so a native reader, which starts before
//! the app, creates the file itself, mode 0666, for the app to append to. Where that cannot be (classic mode, where
//! the app may win the race; a file created by the app first; a filesystem without hole punching), one warning says
//! so and streaming goes on.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FallocateFlags;

use super::event;
use super::position::{Position, BEFORE_LEN};

/// The smallest block size holes are aligned to (a hole smaller than the filesystem's block frees nothing, and a
/// partial block is zeroed rather than freed).
const MIN_BLOCK: u64 = 4096;

/// Creates `path` (mode 0666, whatever the umask: the app may run as another user) if it does not exist. Returns
/// whether this call created it. An existing file is left as it is.
pub fn create_world_writable(path: &Path) -> io::Result<bool> {
    match OpenOptions::new().write(true).create_new(true).mode(0o666).open(path) {
        Ok(file) => {
            // fchmod: the mode given to open() is masked by the umask (often 022).
            file.set_permissions(Permissions::from_mode(0o666))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives back the blocks of one open file behind the saved position.
#[derive(Debug)]
pub struct GiveBack {
    /// Whether holes are punched at all (`--give-back`, and not disabled by a failure).
    enabled: bool,
    /// Everything before this offset is a hole already.
    punched_to: u64,
    block: u64,
}

impl GiveBack {
    /// Space is given back only when asked for (`--give-back`) and `writable` (the file opened for writing).
    pub fn new(asked: bool, writable: bool, file: &File) -> GiveBack {
        let block = file.metadata().map(|m| m.blksize()).unwrap_or(MIN_BLOCK).max(MIN_BLOCK);
        GiveBack {
            enabled: asked && writable,
            punched_to: 0,
            block,
        }
    }

    /// Whether holes are being punched.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Frees whole blocks before `offset`, keeping the block(s) holding the [`BEFORE_LEN`] bytes before it (they
    /// identify the file at restart). Called only once the lines up to `offset` are on stdout and `offset` is
    /// saved. A failure disables giving back for this file, with one warning; streaming goes on.
    pub fn release(&mut self, file: &File, offset: u64, path: &Path) {
        if !self.enabled {
            return;
        }
        let end = offset.saturating_sub(BEFORE_LEN as u64) / self.block * self.block;
        if end <= self.punched_to {
            return;
        }
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(file, flags, self.punched_to, end - self.punched_to) {
            Ok(()) => self.punched_to = end,
            Err(e) => {
                self.enabled = false;
                event::warn(
                    "cannot give back disk space behind the reader (the filesystem does not punch holes?); the \
                     file keeps its size on disk until it is rotated, streaming goes on",
                    &[
                        ("file", &path.display().to_string()),
                        ("error", &io::Error::from(e).to_string()),
                    ],
                );
            }
        }
    }
}

/// Bytes allocated on disk for `path` (`st_blocks` × 512), what the kubelet counts against `sizeLimit`.
pub fn allocated(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.blocks() * 512)
}

/// Saves positions atomically: written to a temporary file, then renamed over the old one, so a reader killed at
/// any moment leaves either the old position or the new one. No fsync: the file lives in an emptyDir that is
/// only ever read by the next run of the same container on the same node; a node crash loses the Pod anyway.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    tmp: PathBuf,
    last: Option<Position>,
    warned: bool,
}

impl Checkpoint {
    /// Positions saved at `path`.
    pub fn new(path: PathBuf) -> Checkpoint {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        Checkpoint {
            path,
            tmp: tmp.into(),
            last: None,
            warned: false,
        }
    }

    /// The saved position, if any: `Ok(None)` when none was saved yet.
    pub fn load(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves `position` unless it is the one saved last. Returns whether it is saved (a failure warns once).
    pub fn save(&mut self, position: &Position) -> bool {
        if self.last.as_ref() == Some(position) {
            return true;
        }
        let written = File::create(&self.tmp)
            .and_then(|mut f| f.write_all(&position.render()))
            .and_then(|()| fs::rename(&self.tmp, &self.path));
        match written {
            Ok(()) => {
                self.last = Some(position.clone());
                self.warned = false;
                true
            }
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    event::warn(
                        "cannot save the position; a restart will repeat lines, and no disk space is given back",
                        &[
                            ("position", &self.path.display().to_string()),
                            ("error", &e.to_string()),
                        ],
                    );
                }
                false
            }
        }
    }

    /// The marker the startup probe (`entourage started`) waits for: written once the log file is prepared.
    pub fn marker(&self) -> PathBuf {
        started_marker(&self.path)
    }
}

/// Where the reader whose position is saved at `position` marks that it has started.
pub fn started_marker(position: &Path) -> PathBuf {
    let mut marker = position.to_path_buf().into_os_string();
    marker.push(".started");
    marker.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn holes_free_whole_blocks_behind_the_offset_and_keep_the_bytes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        fs::write(&path, &data).unwrap();
        let mut file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let before = allocated(&path).unwrap();
        let mut give = GiveBack::new(true, true, &file);
        let offset = 3 * 1024 * 1024 + 100;
        give.release(&file, offset, &path);
        let after = allocated(&path).unwrap();
        assert!(give.enabled(), "ext4 and tmpfs punch holes");
        assert!(after <= before - 3 * 1024 * 1024 + 2 * MIN_BLOCK, "{before} -> {after}");
        assert_eq!(
            file.metadata().unwrap().len(),
            data.len() as u64,
            "the apparent size is kept"
        );
        let mut kept = vec![0; BEFORE_LEN];
        file.seek(SeekFrom::Start(offset - BEFORE_LEN as u64)).unwrap();
        file.read_exact(&mut kept).unwrap();
        assert_eq!(kept, data[offset as usize - BEFORE_LEN..offset as usize]);
    }

    #[test]
    fn a_read_only_file_gives_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        fs::write(&path, vec![b'x'; 1 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        let mut give = GiveBack::new(true, false, &file);
        give.release(&file, 1 << 20, &path);
        assert!(!give.enabled());
        assert!(allocated(&path).unwrap() >= 1 << 20);
    }

    #[test]
    fn created_files_are_writable_by_everyone_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        assert!(create_world_writable(&path).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666);
        fs::write(&path, "kept").unwrap();
        assert!(!create_world_writable(&path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "kept");
    }

    #[test]
    fn a_checkpoint_is_read_back_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut checkpoint = Checkpoint::new(dir.path().join("reader.pos"));
        assert_eq!(checkpoint.load().unwrap(), None);
        let first = Position::new("/f", 1, 2, 3, b"abc");
        assert!(checkpoint.save(&first));
        let second = Position::new("/f", 1, 2, 6, b"abcdef");
        assert!(checkpoint.save(&second));
        assert_eq!(Position::parse(&checkpoint.load().unwrap().unwrap()), Ok(second));
        assert!(!dir.path().join("reader.pos.tmp").exists());
    }
}
