//! Does the webhook configuration's caBundle verify the certificate the webhook serves, for the name the
//! apiserver dials (`<service>.<namespace>.svc`)? The same question the apiserver asks on every call, answered
//! with rustls' WebPKI verifier, plus how long the certificate has left.

use std::sync::Arc;

use rustls::{
    client::{danger::ServerCertVerifier, WebPkiServerVerifier},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    CertificateError, RootCertStore,
};

/// The certificates of a PEM text, in order (a serving certificate first, then its intermediates).
pub fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// Why a caBundle does not verify a serving certificate; phrased to follow "the caBundle".
pub fn verify(ca_bundle: &[u8], serving: &[u8], server_name: &str, now: UnixTime) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(pem_certificates(ca_bundle));
    if added == 0 {
        return Err("holds no PEM certificate".into());
    }
    let chain = pem_certificates(serving);
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err("cannot be checked: the serving certificate is not PEM".into());
    };
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| format!("cannot be checked: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("cannot be checked: {e}"))?;
    match verifier.verify_server_cert(end_entity, intermediates, &name, &[], now) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(e)) => Err(match e {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "did not sign the serving certificate (another CA: the caBundle is stale or was never written)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("signed a serving certificate that does not name {server_name}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "verifies a serving certificate that has expired".into()
            }
            other => format!("does not verify the serving certificate: {other:?}"),
        }),
        Err(other) => Err(format!("does not verify the serving certificate: {other}")),
    }
}

/// Seconds from `now` until the first certificate of a PEM text expires (negative once expired), or why it
/// cannot be read.
pub fn seconds_left(pem: &[u8], now: UnixTime) -> Result<i64, String> {
    let chain = pem_certificates(pem);
    let first = chain.first().ok_or("the serving certificate is not PEM")?;
    der_seconds_left(first, now)
}

/// Seconds from `now` until one certificate (DER) expires.
pub fn der_seconds_left(der: &[u8], now: UnixTime) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    Ok(cert.validity().not_after.timestamp() - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    fn ca() -> (CertificateParams, KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        (params, key, pem)
    }

    fn serving(ca: &(CertificateParams, KeyPair, String), name: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .signed_by(&key, &Issuer::from_params(&ca.0, &ca.1))
            .unwrap()
            .pem()
    }

    #[test]
    fn a_bundle_verifies_what_its_ca_signed_for_the_service_name_only() {
        let (a, b) = (ca(), ca());
        let cert = serving(&a, "entourage.entourage-system.svc");
        let now = UnixTime::now();
        assert_eq!(
            verify(a.2.as_bytes(), cert.as_bytes(), "entourage.entourage-system.svc", now),
            Ok(())
        );
        let other = verify(b.2.as_bytes(), cert.as_bytes(), "entourage.entourage-system.svc", now).unwrap_err();
        assert!(other.starts_with("did not sign"), "{other}");
        let wrong = verify(a.2.as_bytes(), cert.as_bytes(), "entourage.default.svc", now).unwrap_err();
        assert!(wrong.contains("does not name entourage.default.svc"), "{wrong}");
        assert_eq!(
            verify(b"junk", cert.as_bytes(), "x.y.svc", now),
            Err("holds no PEM certificate".into())
        );
        assert!(seconds_left(cert.as_bytes(), now).unwrap() > 0);
    }
}
