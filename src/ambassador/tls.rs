//! TLS to the upstream: the trust anchors (system roots plus `--ca-file`), the client certificate for mTLS
//! (`--client-cert`, `--client-key`), and their reload when Kubernetes rotates the mounted Secret or ConfigMap.
//!
//! The files are mounted Secret or ConfigMap keys, polled through the kubelet's `..data` swap ([`MountedFiles`]);
//! a change builds a new client configuration, which only new connections use. Requests in
//! flight keep the connections (and TLS sessions) they have, so a rotation drops none of them; idle pooled
//! connections made with the old credentials are closed at their next checkout ([`TlsState::generation`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::mounted::{poll_every, MountedFiles};

/// How often the files are re-read; the kubelet itself refreshes mounted Secrets about once a minute.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is unreadable or not PEM.
    #[error("cannot read {what} from {path}: {source}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        source: rustls_pki_types::pem::Error,
    },
    /// A file holds no PEM block of the wanted kind.
    #[error("{path} contains no PEM {what}")]
    Empty {
        /// What was looked for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A certificate rustls cannot use as a trust anchor.
    #[error("cannot trust a CA certificate from {path}: {source}")]
    CaCert {
        /// The CA file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// An `https://` upstream with nothing to verify it against.
    #[error("no trusted CA certificates for the https upstream: the system has none and --ca-file is not set")]
    NoRoots,
    /// Only one of `--client-cert` and `--client-key`.
    #[error("--client-cert and --client-key go together")]
    HalfClientCert,
    /// The client certificate and key do not belong together, or rustls refused them.
    #[error("cannot use the client certificate {cert} with key {key}: {source}")]
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why rustls refused them.
        source: rustls::Error,
    },
    /// The TLS client configuration was refused.
    #[error("cannot configure TLS: {0}")]
    Config(rustls::Error),
}

/// The files that make up the TLS client configuration.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Extra PEM CA certificates.
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain (PEM), for mTLS.
    pub client_cert: Option<PathBuf>,
    /// The client private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> + '_ {
        [&self.ca_file, &self.client_cert, &self.client_key]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// Whether anything here needs reloading.
    pub fn any(&self) -> bool {
        self.paths().next().is_some()
    }
}

/// The configuration new upstream connections use.
pub struct TlsState {
    /// Counts reloads; a pooled connection dialled under an older generation is not reused.
    pub generation: u64,
    /// Connects with the current trust anchors and client certificate, offering HTTP/1.1 (ALPN).
    pub connector: tokio_rustls::TlsConnector,
    /// The same, offering h2 (ALPN): the connection that carries the app's HTTP/2 and gRPC calls.
    pub h2_connector: tokio_rustls::TlsConnector,
}

impl TlsState {
    /// Both connectors from one configuration (trust anchors and client certificate), differing only in ALPN.
    pub fn new(generation: u64, config: rustls::ClientConfig) -> Self {
        let mut h2 = config.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            generation,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            h2_connector: tokio_rustls::TlsConnector::from(Arc::new(h2)),
        }
    }
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The current [`TlsState`], swapped on reload.
pub type SharedTls = Arc<ArcSwap<TlsState>>;

/// Builds the client configuration from the files as they are now.
pub fn client_config(https: bool, files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "skipping unreadable system CA certificates");
        }
        roots.add_parsable_certificates(native.certs);
    }
    if let Some(path) = &files.ca_file {
        for cert in read_certs(path, "CA certificates")? {
            roots.add(cert).map_err(|source| TlsError::CaCert {
                path: path.clone(),
                source,
            })?;
        }
    }
    if https && roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    let mut config = match (&files.client_cert, &files.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "certificate")?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
                what: "private key",
                path: key.clone(),
                source,
            })?;
            // rustls checks that the key belongs to the certificate: files read across a `..data` swap may not.
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|source| TlsError::ClientCert {
                    cert: cert.clone(),
                    key: key.clone(),
                    source,
                })?
        }
        _ => return Err(TlsError::HalfClientCert),
    };
    // HTTP/1.1 requests go upstream as HTTP/1.1, which every HTTPS server accepts; [`TlsState::new`] derives the
    // h2 connector for HTTP/2 requests.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The state for the first connections.
pub fn shared(config: rustls::ClientConfig) -> SharedTls {
    Arc::new(ArcSwap::from_pointee(TlsState::new(0, config)))
}

/// Re-reads the TLS files and swaps in a new configuration when their contents change.
#[derive(Debug)]
pub struct Reloader {
    https: bool,
    files: TlsFiles,
    watched: MountedFiles,
    target: SharedTls,
}

impl Reloader {
    /// Watches `files`, whose contents at start-up built the configuration in `target`.
    pub fn new(https: bool, files: TlsFiles, target: SharedTls) -> Self {
        let mut watched = MountedFiles::new(files.paths().map(Path::to_owned).collect::<Vec<_>>());
        watched.keep_current();
        Self {
            https,
            files,
            watched,
            target,
        }
    }

    /// Polls forever. A missing, partial or mismatched set of files keeps the current configuration: during a
    /// swap the paths may briefly dangle, and a certificate read before the swap may not match a key read after.
    pub async fn run(mut self) {
        poll_every(POLL_INTERVAL, "TLS configuration", || {
            if self.poll()? {
                tracing::info!(
                    generation = self.target.load().generation,
                    "TLS files changed; new connections use them"
                );
            }
            Ok::<_, TlsError>(())
        })
        .await;
    }

    /// Reads the files once; swaps the configuration when they changed and build one. Returns whether it did.
    pub fn poll(&mut self) -> Result<bool, TlsError> {
        let Ok(changed) = self.watched.read_changed() else {
            // Unreadable: let `client_config` name the file and the error.
            client_config(self.https, &self.files)?;
            return Ok(false);
        };
        let Some(now) = changed else {
            return Ok(false);
        };
        let config = client_config(self.https, &self.files)?;
        // The files may have changed again between the read and the build; the next poll sees that.
        self.watched.keep(now);
        let generation = self.target.load().generation + 1;
        self.target.store(Arc::new(TlsState::new(generation, config)));
        Ok(true)
    }
}
