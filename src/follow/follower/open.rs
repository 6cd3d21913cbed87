//! Opening the followed file: only a regular file (a directory or a FIFO is reported once and waited out, never
//! blocked on), read-write when space is to be given back and the reader may write to it, from the first byte
//! still on disk.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use std::sync::Arc;

use super::{event, Follower, Reading, Sink};

impl<S: Sink> Follower<'_, S> {
    /// Opens the followed path if it exists, from its first byte still on disk at or after `from`.
    pub(super) fn open(&mut self, from: u64) -> Option<Reading> {
        let path = self.args.file.clone();
        let mut reading = self.open_path(&path, true)?;
        // A file whose head was given back reads as zeros there: begin at its first data instead.
        let first_data = rustix::fs::seek(&reading.file, rustix::fs::SeekFrom::Data(from)).unwrap_or(from);
        reading.pos = reading.file.seek(SeekFrom::Start(first_data)).unwrap_or(0);
        Some(reading)
    }

    /// Opens `path` for reading, and for writing too when space is to be given back. A path that is missing, not a
    /// regular file or not readable is waited for (logged once per distinct error).
    pub(super) fn open_path(&mut self, path: &Path, log: bool) -> Option<Reading> {
        let opened = fs::metadata(path).and_then(|meta| {
            let kind = meta.file_type();
            let what = if kind.is_dir() {
                Some("a directory")
            } else if kind.is_fifo() {
                Some("a FIFO")
            } else if !kind.is_file() {
                Some("not a regular file")
            } else {
                None
            };
            match what {
                Some(what) => Err(io::Error::new(ErrorKind::InvalidInput, format!("the path is {what}"))),
                None => self.open_file(path),
            }
        });
        match opened {
            Ok(reading) => {
                self.last_open_error = None;
                Some(reading)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                let msg = e.to_string();
                if log && self.last_open_error.as_deref() != Some(msg.as_str()) {
                    event::warn(
                        "cannot follow the file; retrying",
                        &[("file", &self.name), ("error", &msg)],
                    );
                    self.last_open_error = Some(msg);
                }
                None
            }
        }
    }

    fn open_file(&mut self, path: &Path) -> io::Result<Reading> {
        // Non-blocking: a FIFO swapped in after the check above must not hang the open.
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
        };
        let wants_write = self.args.give_back && self.keeper.is_some();
        let (file, writable) = match wants_write.then(|| open(true)) {
            Some(Ok(file)) => (file, true),
            Some(Err(e)) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem) => {
                if !self.warned_read_only {
                    self.warned_read_only = true;
                    event::warn(
                        "cannot give back the disk space of streamed lines: the reader may not write to the file (the \
                         app created it first, as another user, or the volume is read-only); it stays on disk until \
                         rotated, streaming goes on",
                        &[("file", &self.name), ("error", &e.to_string())],
                    );
                }
                (open(false)?, false)
            }
            Some(Err(e)) => return Err(e),
            None => (open(false)?, false),
        };
        let meta = file.metadata()?;
        if self.args.give_back && self.keeper.is_none() && !self.warned_read_only {
            self.warned_read_only = true;
            event::warn(
                "--give-back needs --position: space is given back only behind a saved position",
                &[("file", &self.name)],
            );
        }
        // The keeper punches through a descriptor of its own.
        let give_back = match (self.args.give_back && writable).then(|| file.try_clone()) {
            Some(Ok(dup)) => Some(Arc::new(dup)),
            Some(Err(e)) => {
                event::warn(
                    "cannot give back the disk space of streamed lines: no second descriptor for the file; it stays \
                     on disk until rotated, streaming goes on",
                    &[("file", &self.name), ("error", &e.to_string())],
                );
                None
            }
            None => None,
        };
        Ok(Reading {
            dev: meta.dev(),
            ino: meta.ino(),
            file,
            pos: 0,
            tail: Vec::new(),
            give_back,
        })
    }
}
