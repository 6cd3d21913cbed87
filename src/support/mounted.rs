//! Files that Kubernetes mounts from a Secret, ConfigMap or projected volume, polled for new contents.
//!
//! The kubelet updates such a volume by writing a new timestamped directory and swapping the `..data` symlink that
//! every visible file name points through. The file is never written in place, so an inotify watch on it sees
//! nothing (kyma 5745). Reading the files through their paths and comparing bytes follows every swap. During a
//! swap a path may dangle for an instant, and of two files one may be read before the swap and one after, so a
//! caller keeps what it has until a set of files reads and builds whole.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file of the set could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// A set of mounted files and the contents last kept of them.
#[derive(Debug)]
pub struct MountedFiles {
    paths: Vec<PathBuf>,
    kept: Option<Vec<Vec<u8>>>,
}

impl MountedFiles {
    /// Watches `paths`, with nothing kept yet: the first read reports whatever it finds as new.
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            paths: paths.into_iter().collect(),
            kept: None,
        }
    }

    /// The files watched.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads every file; `None` when the contents are those kept last, else the new contents in the order of the
    /// paths. Nothing is kept until [`keep`](Self::keep) says so: contents that did not build are new again at
    /// the next read.
    pub fn read_changed(&self) -> Result<Option<Vec<Vec<u8>>>, ReadError> {
        let now = self
            .paths
            .iter()
            .map(|path| read(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((self.kept.as_ref() != Some(&now)).then_some(now))
    }

    /// Records `contents` as the ones in force.
    pub fn keep(&mut self, contents: Vec<Vec<u8>>) {
        self.kept = Some(contents);
    }

    /// Records the files' current contents as the ones in force (what was just loaded from them at start-up); when
    /// a file is unreadable, what was kept stays (at start-up nothing, so the next read reports the set as new).
    pub fn keep_current(&mut self) {
        self.kept = self.read_changed().ok().flatten().or(self.kept.take());
    }

    /// The contents kept last, if any.
    pub fn kept(&self) -> Option<&[Vec<u8>]> {
        self.kept.as_deref()
    }

    /// Forgets the contents kept: the next read reports the files as new, even if unchanged.
    pub fn forget(&mut self) {
        self.kept = None;
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|source| ReadError {
        path: path.to_owned(),
        source,
    })
}

/// Runs `step` every `interval`, forever (until the task is dropped); a tick missed while the task was busy is
/// not made up. A failure is logged once, as keeping the previous `what`, and again only after a success.
pub async fn poll_every<E: Display>(interval: Duration, what: &str, mut step: impl FnMut() -> Result<(), E>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        match step() {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                tracing::warn!(%error, "keeping the previous {what}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out `dir` as the kubelet does: `name` -> `..data/name`, `..data` -> `..<version>`, swapped by a rename.
    fn swap_in(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let versioned = dir.join(format!("..{version}"));
        std::fs::create_dir(&versioned).unwrap();
        for (name, contents) in files {
            std::fs::write(versioned.join(name), contents).unwrap();
        }
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for (name, _) in files {
            if std::fs::symlink_metadata(dir.join(name)).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
            }
        }
    }

    #[test]
    fn follows_a_data_symlink_swap_and_reports_each_version_once_kept() {
        let dir = tempfile::tempdir().unwrap();
        swap_in(dir.path(), "v1", &[("tls.crt", "cert 1"), ("tls.key", "key 1")]);
        let mut files = MountedFiles::new([dir.path().join("tls.crt"), dir.path().join("tls.key")]);
        files.keep_current();
        assert_eq!(files.read_changed().unwrap(), None);

        swap_in(dir.path(), "v2", &[("tls.crt", "cert 2"), ("tls.key", "key 2")]);
        let new = files.read_changed().unwrap().expect("the swap is seen");
        assert_eq!(new, vec![b"cert 2".to_vec(), b"key 2".to_vec()]);
        // Not kept (say it did not build): still new at the next read.
        assert_eq!(files.read_changed().unwrap().as_ref(), Some(&new));
        files.keep(new);
        assert_eq!(files.read_changed().unwrap(), None);
        files.forget();
        assert!(files.read_changed().unwrap().is_some());
    }

    #[test]
    fn a_dangling_path_is_an_error_naming_it_and_keeps_what_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        swap_in(dir.path(), "v1", &[("token", "one")]);
        let mut files = MountedFiles::new([dir.path().join("token")]);
        files.keep_current();
        std::fs::remove_dir_all(dir.path().join("..v1")).unwrap();
        let error = files.read_changed().unwrap_err();
        assert_eq!(error.path, dir.path().join("token"));
        files.keep_current();
        assert_eq!(files.kept(), Some(&[b"one".to_vec()][..]));
    }

    #[test]
    fn nothing_kept_makes_the_first_read_new() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), "a: 1\n").unwrap();
        let files = MountedFiles::new([dir.path().join("config.yaml")]);
        assert_eq!(files.read_changed().unwrap(), Some(vec![b"a: 1\n".to_vec()]));
    }
}
