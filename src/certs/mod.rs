//! Certificates: a CA and a serving certificate for the webhook's Service (`entourage certs`), written as files
//! for development, or into the cluster's Secret ([`secret`], the chart's `certificates.source: job`).
//!
//! ECDSA P-256 (fast handshakes, small keys). The serving certificate names the Service the way the apiserver
//! dials it (`<service>.<namespace>.svc`) plus `localhost` and `127.0.0.1` for `make run` and `curl`.

pub mod cli;
pub mod secret;

use std::{fs, io, path::Path};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// File names written by [`write_dev_certs`].
pub mod files {
    /// The CA certificate: the `caBundle` of the webhook configuration, and `curl --cacert`.
    pub const CA_CERT: &str = "ca.crt";
    /// The CA key: signs serving certificates; never leaves the developer's machine.
    pub const CA_KEY: &str = "ca.key";
    /// The serving certificate (the Secret's `tls.crt`).
    pub const TLS_CERT: &str = "tls.crt";
    /// The serving key (the Secret's `tls.key`).
    pub const TLS_KEY: &str = "tls.key";
}

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// No client for the API server (no in-cluster service account, no kubeconfig).
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(String),
    /// The API server refused or failed a call.
    #[error("{object}: {source}")]
    Api {
        /// The object.
        object: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// The webhooks' caBundle could not be written before a rotation.
    #[error(transparent)]
    CaBundle(#[from] crate::support::cabundle::CaBundleError),
}

/// The DNS names and IPs the serving certificate covers.
pub fn subject_alt_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]
}

/// PEM texts of a CA and a serving certificate signed by it.
pub struct DevCerts {
    /// CA certificate.
    pub ca_cert: String,
    /// CA private key.
    pub ca_key: String,
    /// Serving certificate.
    pub tls_cert: String,
    /// Serving private key.
    pub tls_key: String,
}

/// Generates a dev CA and a serving certificate valid for `days` days.
pub fn generate(service: &str, namespace: &str, days: i64) -> Result<DevCerts, CertError> {
    generate_named("entourage development CA", service, namespace, days)
}

/// Generates a cluster's CA (named for its Service) and serving certificate, valid for `days` days.
pub fn generate_for_cluster(service: &str, namespace: &str, days: i64) -> Result<DevCerts, CertError> {
    generate_named(&format!("{service}.{namespace} webhook CA"), service, namespace, days)
}

fn generate_named(ca_name: &str, service: &str, namespace: &str, days: i64) -> Result<DevCerts, CertError> {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - time::Duration::minutes(5);
    ca_params.not_after = now + time::Duration::days(days);
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let tls_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(subject_alt_names(service, namespace))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days);
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let tls_cert = params.signed_by(&tls_key, &issuer)?;
    Ok(DevCerts {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        tls_cert: tls_cert.pem(),
        tls_key: tls_key.serialize_pem(),
    })
}

/// Writes the four PEM files into `dir` (keys with mode 0600).
pub fn write_dev_certs(dir: &Path, certs: &DevCerts) -> Result<(), CertError> {
    let write = |name: &str, text: &str, secret: bool| -> Result<(), CertError> {
        let path = dir.join(name);
        let err = |source| CertError::Write {
            path: path.display().to_string(),
            source,
        };
        fs::create_dir_all(dir).map_err(err)?;
        fs::write(&path, text).map_err(err)?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        let _ = secret;
        Ok(())
    };
    write(files::CA_CERT, &certs.ca_cert, false)?;
    write(files::CA_KEY, &certs.ca_key, true)?;
    write(files::TLS_CERT, &certs.tls_cert, false)?;
    write(files::TLS_KEY, &certs.tls_key, true)
}
