//! The credential the ambassador adds to every upstream request, read from a file and kept fresh: the file is a
//! mounted Secret key or projected token, polled through the kubelet's `..data` swap ([`MountedFiles`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::metrics::{Metrics, TokenSource};
use crate::support::mounted::{poll_every, MountedFiles, ReadError};

/// How often the token file is re-read. The kubelet itself only refreshes Secrets every minute or so.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why the token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read auth file {}: {}", .0.path.display(), .0.source)]
    Read(#[from] ReadError),
    /// Nothing is left once the trailing newline is trimmed.
    #[error("auth file {0} is empty")]
    Empty(PathBuf),
    /// The token contains bytes a header value cannot carry (control characters, an inner newline).
    #[error("auth file {0} holds a token that is not a valid HTTP header value")]
    NotAHeaderValue(PathBuf),
}

/// The header to add and its current value; cheap to clone and to read on every request.
#[derive(Debug, Clone)]
pub struct Credential {
    header: HeaderName,
    value: Arc<RwLock<HeaderValue>>,
}

impl Credential {
    /// The header name (`Authorization` unless `--auth-header` says otherwise).
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The current header value.
    pub fn value(&self) -> HeaderValue {
        // A poisoned lock only means a refresher panicked mid-swap; the value it holds is still a whole one.
        match self.value.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Re-reads the token file and swaps the credential's value when the contents change.
#[derive(Debug)]
pub struct Refresher {
    path: PathBuf,
    file: MountedFiles,
    scheme: String,
    target: Arc<RwLock<HeaderValue>>,
}

/// Reads the token once (failing start-up when it is unusable) and returns the credential and its refresher.
pub fn load(path: &Path, header: HeaderName, scheme: &str) -> Result<(Credential, Refresher), AuthError> {
    let mut file = MountedFiles::new([path.to_owned()]);
    let raw = file.read_changed()?.unwrap_or_default().pop().unwrap_or_default();
    let value = Arc::new(RwLock::new(header_value(path, &raw, scheme)?));
    file.keep(vec![raw]);
    let refresher = Refresher {
        path: path.to_owned(),
        file,
        scheme: scheme.to_owned(),
        target: Arc::clone(&value),
    };
    Ok((Credential { header, value }, refresher))
}

impl Refresher {
    /// Polls the file forever, counting each new token in `metrics`. A missing or bad file keeps the last good
    /// token: during a swap the path may briefly dangle, and a live proxy with yesterday's token beats a proxy that
    /// sends none. A projected ServiceAccount token is renewed by the kubelet at 80 % of its life, so the new one
    /// is in use long before the old one expires.
    pub async fn run(mut self, metrics: Arc<Metrics>) {
        poll_every(POLL_INTERVAL, "auth token", || {
            let changed = match self.file.read_changed()? {
                Some(mut now) => self.apply(now.pop().unwrap_or_default())?,
                None => false,
            };
            if changed {
                metrics.token_refresh(TokenSource::File);
                tracing::info!(path = %self.path.display(), "auth token changed; using the new one");
            }
            Ok::<_, AuthError>(())
        })
        .await;
    }

    /// Takes freshly read file contents; returns whether the credential changed.
    pub fn apply(&mut self, raw: Vec<u8>) -> Result<bool, AuthError> {
        if self.file.kept() == Some(std::slice::from_ref(&raw)) {
            return Ok(false);
        }
        let value = header_value(&self.path, &raw, &self.scheme)?;
        match self.target.write() {
            Ok(mut slot) => *slot = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
        self.file.keep(vec![raw]);
        Ok(true)
    }
}

/// Builds `<scheme> <token>` (or the bare token for an empty scheme), trimming the file's trailing newline.
fn header_value(path: &Path, raw: &[u8], scheme: &str) -> Result<HeaderValue, AuthError> {
    let end = raw
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    let token = &raw[..end];
    if token.is_empty() {
        return Err(AuthError::Empty(path.to_owned()));
    }
    let mut bytes = Vec::with_capacity(scheme.len() + 1 + token.len());
    if !scheme.is_empty() {
        bytes.extend_from_slice(scheme.as_bytes());
        bytes.push(b' ');
    }
    bytes.extend_from_slice(token);
    let mut value = HeaderValue::from_bytes(&bytes).map_err(|_| AuthError::NotAHeaderValue(path.to_owned()))?;
    // Keeps the token out of any debug output and out of HTTP/2 header compression tables.
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_token(dir: &tempfile::TempDir, contents: &str) -> PathBuf {
        let path = dir.path().join("token");
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn prefixes_scheme_and_trims_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_token(&dir, "s3cret\r\n");
        let (cred, _) = load(&path, http::header::AUTHORIZATION, "Bearer").unwrap();
        assert_eq!(cred.value(), "Bearer s3cret");
        assert!(cred.value().is_sensitive());
    }

    #[test]
    fn empty_scheme_sends_raw_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_token(&dir, "key-123\n");
        let (cred, _) = load(&path, HeaderName::from_static("x-api-key"), "").unwrap();
        assert_eq!(cred.header(), "x-api-key");
        assert_eq!(cred.value(), "key-123");
    }

    #[test]
    fn refuses_empty_or_multiline_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_token(&dir, "\n");
        assert!(matches!(
            load(&path, http::header::AUTHORIZATION, "Bearer"),
            Err(AuthError::Empty(_))
        ));
        let path = write_token(&dir, "a\nb\n");
        assert!(matches!(
            load(&path, http::header::AUTHORIZATION, "Bearer"),
            Err(AuthError::NotAHeaderValue(_))
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            load(&missing, http::header::AUTHORIZATION, "Bearer"),
            Err(AuthError::Read(_))
        ));
    }

    #[test]
    fn refresh_swaps_on_change_and_keeps_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_token(&dir, "one\n");
        let (cred, mut refresher) = load(&path, http::header::AUTHORIZATION, "Bearer").unwrap();
        assert!(!refresher.apply(b"one\n".to_vec()).unwrap());
        assert!(refresher.apply(b"two\n".to_vec()).unwrap());
        assert_eq!(cred.value(), "Bearer two");
        assert!(refresher.apply(b"\n".to_vec()).is_err());
        assert_eq!(cred.value(), "Bearer two");
    }
}
