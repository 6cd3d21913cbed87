//! TLS: rustls with the ring provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, and a certificate that can be
//! swapped while serving (see [`CertStore::reload`]), so a rotated Secret needs no restart.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use rustls::{
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the key or the configuration.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle is unusable.
    #[error("client CA: {0}")]
    ClientCa(String),
}

/// The serving certificate and where it comes from.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<Loaded>,
}

/// A loaded pair, with what was read to make it (to notice changes).
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    source: (Vec<u8>, Vec<u8>),
    not_after: Option<i64>,
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_pair(cert_path: &Path, cert_pem: &[u8], key_path: &Path, key_pem: &[u8]) -> Result<Loaded, TlsError> {
    let pem_err = |path: &Path, what: String| TlsError::Pem {
        path: path.display().to_string(),
        what,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert_path, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err(cert_path, "contains no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_err(key_path, format!("not a PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, &crypto())?;
    let not_after = x509_parser::parse_x509_certificate(&certified.cert[0])
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp());
    Ok(Loaded {
        key: Arc::new(certified),
        source: (cert_pem.to_vec(), key_pem.to_vec()),
        not_after,
    })
}

impl CertStore {
    /// Loads the pair; fails if either file is missing, unparsable, or the key does not match the certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let loaded = parse_pair(cert_path, &read(cert_path)?, key_path, &read(key_path)?)?;
        Ok(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(loaded),
        })
    }

    /// Re-reads the files. Returns `Ok(true)` when a new valid pair is now served, `Ok(false)` when nothing
    /// changed, and an error (the old pair stays in force) when the new files are invalid or half-written.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        let current = self.current.load();
        if current.source.0 == cert && current.source.1 == key {
            return Ok(false);
        }
        let loaded = parse_pair(&self.cert_path, &cert, &self.key_path, &key)?;
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// The serving certificate's expiry, in seconds since the Unix epoch.
    pub fn not_after(&self) -> Option<i64> {
        self.current.load().not_after
    }

    /// The files watched.
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().key.clone())
    }
}

/// The server's TLS configuration. With `client_ca`, clients must present a certificate signed by it (the
/// apiserver's `--admission-control-config-file` kubeconfig can carry one).
pub fn server_config(certs: Arc<CertStore>, client_ca: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(crypto())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let pem = read(path)?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::ClientCa(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto())
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver(certs)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
