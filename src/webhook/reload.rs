//! Reloads the serving certificate and the config file while serving, without a restart.
//!
//! Kubernetes updates a mounted Secret or ConfigMap by writing a new timestamped directory and swapping the
//! `..data` symlink to it; inotify on the file itself misses that (kyma 5745). So the watcher simply re-reads
//! the files every few seconds and compares bytes. A new certificate is parsed before it is swapped in and a
//! new config is validated before it replaces the old one: an invalid or half-written file is refused with one
//! log line and the previous one stays in force. Connections are never touched: rustls picks the certificate
//! per handshake, and each review loads the config once.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::support::{cabundle, mounted::MountedFiles};
use crate::webhook::server::AppState;

/// How far ahead of expiry the certificate is reported with a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the expiry warning is repeated while it holds.
const EXPIRY_WARNING_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Time between two reads of the files.
    pub interval: Duration,
    /// The config file, when serving one (without it the built-in default never changes).
    pub config_path: Option<PathBuf>,
    /// `--patch-ca-bundle`: the MutatingWebhookConfiguration and the CA file. A reloaded certificate writes the
    /// file's CA again, so a Secret remade with a new CA (deleted and made anew by the chart's Job, or replaced by
    /// hand) does not leave the webhooks trusting the old one until the next restart.
    pub ca_bundle: Option<(String, PathBuf)>,
}

/// The watcher's memory between two polls.
pub struct Watcher {
    state: Arc<AppState>,
    options: WatchOptions,
    /// The config file and the bytes last tried, valid or not: an invalid file is reported once, not at every poll.
    config_file: Option<MountedFiles>,
    /// The last certificate error reported, for the same reason.
    cert_error: Option<String>,
    /// A certificate error seen once: reported only if the next poll sees it again, because a poll can read
    /// `tls.crt` before and `tls.key` after a `..data` swap.
    cert_error_pending: Option<String>,
    /// When the expiry warning was last logged.
    expiry_warned: Option<SystemTime>,
    /// The caBundle patch under way (it retries until it succeeds); a newer certificate replaces it.
    ca_patcher: Option<tokio::task::JoinHandle<()>>,
}

impl Watcher {
    /// A watcher over `state`'s certificate and `options.config_path`. The config in force is taken to be the
    /// file's current content (it was just loaded from it).
    pub fn new(state: Arc<AppState>, options: WatchOptions) -> Self {
        let mut config_file = options.config_path.clone().map(|p| MountedFiles::new([p]));
        if let Some(file) = config_file.as_mut() {
            file.keep_current();
        }
        Watcher {
            state,
            options,
            config_file,
            cert_error: None,
            cert_error_pending: None,
            expiry_warned: None,
            ca_patcher: None,
        }
    }

    /// Polls forever (until the task is dropped), every `options.interval`.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.options.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.poll_once(SystemTime::now());
        }
    }

    /// One round: certificate, config, expiry. Public so tests can drive it without waiting.
    pub fn poll_once(&mut self, now: SystemTime) {
        self.poll_certificate();
        self.poll_config();
        self.check_expiry(now);
    }

    fn poll_certificate(&mut self) {
        let Some(certs) = self.state.certs.as_ref() else { return };
        match certs.reload() {
            Ok(false) => {
                self.cert_error = None;
                self.cert_error_pending = None;
            }
            Ok(true) => {
                self.cert_error = None;
                self.cert_error_pending = None;
                let not_after = certs.not_after();
                if let Some(expiry) = not_after {
                    self.state.metrics.cert_expiry.set(expiry);
                }
                self.state.metrics.reload("certificate", true);
                // A new certificate restarts the expiry warning's clock.
                self.expiry_warned = None;
                tracing::info!(
                    cert = %certs.paths().0.display(),
                    not_after = not_after.map(format_unix).unwrap_or_default(),
                    "serving certificate reloaded"
                );
                self.patch_ca_bundle();
            }
            Err(e) => {
                let message = e.to_string();
                let confirmed = self.cert_error_pending.as_deref() == Some(message.as_str());
                self.cert_error_pending = Some(message.clone());
                if confirmed && self.cert_error.as_deref() != Some(message.as_str()) {
                    self.state.metrics.reload("certificate", false);
                    tracing::error!(error = %message, "new serving certificate refused; still serving the previous one");
                    self.cert_error = Some(message);
                }
            }
        }
    }

    /// With `--patch-ca-bundle`: writes the CA file into the webhooks again (nothing changes when they have it).
    fn patch_ca_bundle(&mut self) {
        let Some((name, path)) = self.options.ca_bundle.as_ref() else {
            return;
        };
        match cabundle::read_ca_bundle(path) {
            Ok(pem) => {
                if let Some(previous) = self.ca_patcher.take() {
                    previous.abort();
                }
                self.ca_patcher = Some(cabundle::spawn_patcher(name.clone(), pem));
            }
            Err(e) => tracing::error!(error = %e, "cannot read the CA bundle after a certificate reload"),
        }
    }

    fn poll_config(&mut self) {
        let (Some(path), Some(file)) = (self.options.config_path.as_ref(), self.config_file.as_mut()) else {
            return;
        };
        let bytes = match file.read_changed() {
            Ok(None) => return,
            Ok(Some(mut now)) => now.pop().unwrap_or_default(),
            Err(e) => {
                // A missing file mid-swap is normal for an instant; a lasting one is reported once.
                let marker = vec![format!("\0unreadable: {}", e.source).into_bytes()];
                if file.kept() != Some(marker.as_slice()) {
                    tracing::warn!(config = %path.display(), error = %e.source, "cannot read the config file; keeping the config in force");
                    file.keep(marker);
                }
                return;
            }
        };
        let result = std::str::from_utf8(&bytes)
            .map_err(|e| format!("config {} is not UTF-8: {e}", path.display()))
            .and_then(|text| {
                crate::core::mutate::load_config(text, &path.display().to_string()).map_err(|e| e.to_string())
            });
        file.keep(vec![bytes]);
        match result {
            Ok(config) => {
                if **self.state.config.load() != config {
                    self.state.config.store(config.into_shared());
                    tracing::info!(config = %path.display(), "config reloaded");
                }
                self.state.metrics.reload("config", true);
            }
            Err(message) => {
                self.state.metrics.reload("config", false);
                tracing::error!(error = %message, "new config refused; the previous config stays in force");
            }
        }
    }

    fn check_expiry(&mut self, now: SystemTime) {
        let Some(not_after) = self.state.certs.as_ref().and_then(|c| c.not_after()) else {
            return;
        };
        let now_s = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let left = not_after - now_s;
        if left > EXPIRY_WARNING.as_secs() as i64 {
            return;
        }
        let due = self
            .expiry_warned
            .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= EXPIRY_WARNING_EVERY);
        if due {
            self.expiry_warned = Some(now);
            if left <= 0 {
                tracing::error!(not_after = %format_unix(not_after), "the serving certificate has expired: the apiserver refuses every call");
            } else {
                tracing::warn!(
                    not_after = %format_unix(not_after),
                    days_left = left / 86_400,
                    "the serving certificate expires soon: rotate the entourage-tls Secret"
                );
            }
        }
    }
}

/// Formats Unix seconds as RFC 3339.
fn format_unix(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| seconds.to_string())
}

/// Starts the watcher on the current runtime.
pub fn spawn(state: Arc<AppState>, options: WatchOptions) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Watcher::new(state, options).run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::tls::CertStore;

    /// A self-signed serving pair valid for `days`, written as `tls.crt` and `tls.key` in `dir`.
    fn write_pair(dir: &std::path::Path, days: i64) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["entourage.entourage-system.svc".to_string()]).unwrap();
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    }

    fn setup(dir: &std::path::Path) -> (Arc<AppState>, WatchOptions) {
        write_pair(dir, 10);
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, "sidecars:\n  mode: auto\n").unwrap();
        let store = CertStore::load(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap();
        let state = AppState::new(
            crate::core::config::Config::from_yaml(&std::fs::read_to_string(&config_path).unwrap(), "test").unwrap(),
            Some(Arc::new(store)),
        );
        let options = WatchOptions {
            interval: Duration::from_secs(1),
            config_path: Some(config_path),
            ca_bundle: None,
        };
        (state, options)
    }

    fn reloads(state: &AppState) -> String {
        state
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("entourage_reloads_total"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn valid_new_config_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (state, options) = setup(dir.path());
        let mut w = Watcher::new(state.clone(), options.clone());
        std::fs::write(options.config_path.as_ref().unwrap(), "sidecars:\n  mode: native\n").unwrap();
        w.poll_once(SystemTime::now());
        assert_eq!(
            state.config.load().sidecars.mode,
            crate::core::config::SidecarMode::Native
        );
        assert!(reloads(&state).contains(r#"what="config",result="success""#));
    }

    #[test]
    fn invalid_new_config_is_refused_once_and_the_old_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (state, options) = setup(dir.path());
        let before = state.config.load_full();
        let mut w = Watcher::new(state.clone(), options.clone());
        std::fs::write(options.config_path.as_ref().unwrap(), "sidecars:\n  mode: sometimes\n").unwrap();
        w.poll_once(SystemTime::now());
        w.poll_once(SystemTime::now());
        assert_eq!(*state.config.load_full(), *before);
        assert!(
            reloads(&state).contains(r#"entourage_reloads_total{what="config",result="failure"} 1"#),
            "{}",
            reloads(&state)
        );
        // The refused version is still on disk: the gauge says so until a good one replaces it.
        let text = state.metrics.encode();
        assert!(text.contains(r#"entourage_reload_ok{what="config"} 0"#), "{text}");
        std::fs::write(options.config_path.as_ref().unwrap(), "sidecars:\n  mode: native\n").unwrap();
        w.poll_once(SystemTime::now());
        let text = state.metrics.encode();
        assert!(text.contains(r#"entourage_reload_ok{what="config"} 1"#), "{text}");
    }

    #[test]
    fn invalid_new_certificate_keeps_the_old_one_and_counts_one_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (state, options) = setup(dir.path());
        let expiry = state.certs.as_ref().unwrap().not_after();
        let mut w = Watcher::new(state.clone(), options);
        std::fs::write(dir.path().join("tls.crt"), "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
        for _ in 0..3 {
            w.poll_once(SystemTime::now());
        }
        assert_eq!(state.certs.as_ref().unwrap().not_after(), expiry);
        assert!(reloads(&state).contains(r#"entourage_reloads_total{what="certificate",result="failure"} 1"#));
    }

    #[test]
    fn new_certificate_updates_the_expiry_metric() {
        let dir = tempfile::tempdir().unwrap();
        let (state, options) = setup(dir.path());
        let mut w = Watcher::new(state.clone(), options);
        write_pair(dir.path(), 200);
        w.poll_once(SystemTime::now());
        let expiry = state.certs.as_ref().unwrap().not_after().unwrap();
        assert_eq!(state.metrics.cert_expiry.get(), expiry);
        assert!(expiry > SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 + 100 * 86_400);
    }

    #[test]
    fn expiry_warning_is_due_within_thirty_days_and_repeats_daily() {
        let dir = tempfile::tempdir().unwrap();
        let (state, options) = setup(dir.path());
        let mut w = Watcher::new(state, options);
        // The certificate is valid 10 days: inside the warning window from the start.
        let now = SystemTime::now();
        w.check_expiry(now);
        assert_eq!(w.expiry_warned, Some(now));
        w.check_expiry(now + Duration::from_secs(3600));
        assert_eq!(w.expiry_warned, Some(now), "not repeated within a day");
        let later = now + Duration::from_secs(25 * 3600);
        w.check_expiry(later);
        assert_eq!(w.expiry_warned, Some(later));
    }
}
