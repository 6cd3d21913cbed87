//! The log volume's disk: creating the log file before the app does, and saving the position (the keeper,
//! `super::keeper`, saves it and gives back the space of what was streamed, on its own thread).
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

use super::event;
use super::position::Position;

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

    /// Where positions are saved.
    pub fn path(&self) -> &Path {
        &self.path
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
