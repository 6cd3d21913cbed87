//! `serve --patch-ca-bundle NAME`: at start, writes the CA that signed the serving certificate into every
//! webhook of the named MutatingWebhookConfiguration, so a plain `kubectl apply -k manifests` works without
//! templating the caBundle (cert-manager's cainjector does the same job in the cert-manager overlay).
//!
//! The patch is a JSON patch that, for each webhook whose caBundle differs, first `test`s the webhook's name at
//! its index (so a concurrent reorder makes the patch fail instead of writing into the wrong webhook) and then
//! `add`s `clientConfig/caBundle` (an `add` on an existing member replaces it). The RBAC it needs is `get` and
//! `patch` on that one object.

use std::{path::Path, time::Duration};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde_json::json;

/// Why the caBundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    /// The CA file could not be read.
    #[error("cannot read the CA bundle {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error("{path} holds no PEM certificate")]
    NotPem {
        /// The file.
        path: String,
    },
    /// No client for the API server (no in-cluster service account, no kubeconfig).
    #[error("cannot configure a Kubernetes client: {0}")]
    Client(String),
    /// The API server refused or failed the call.
    #[error("MutatingWebhookConfiguration {name}: {source}")]
    Api {
        /// The configuration's name.
        name: String,
        /// The client error.
        source: Box<kube::Error>,
    },
}

/// Reads a PEM CA bundle, refusing a file that holds no certificate.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, CaBundleError> {
    let pem = std::fs::read(path).map_err(|source| CaBundleError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem).filter(Result::is_ok).count();
    if certs == 0 {
        return Err(CaBundleError::NotPem {
            path: path.display().to_string(),
        });
    }
    Ok(pem)
}

/// The JSON patch that sets `ca_pem` as every webhook's caBundle; empty when they all have it already.
pub fn patch_for(config: &MutatingWebhookConfiguration, ca_pem: &[u8]) -> json_patch::Patch {
    let encoded = base64_simd::STANDARD.encode_to_string(ca_pem);
    let mut ops = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca_pem) {
            continue;
        }
        ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
        ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    serde_json::from_value(json!(ops)).expect("test and add operations always deserialise")
}

/// Writes `ca_pem` into the named configuration's webhooks. Returns how many webhooks changed.
pub async fn patch_ca_bundle(client: kube::Client, name: &str, ca_pem: &[u8]) -> Result<usize, CaBundleError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let api_err = |source| CaBundleError::Api {
        name: name.to_string(),
        source: Box::new(source),
    };
    let current = api.get(name).await.map_err(api_err)?;
    let patch = patch_for(&current, ca_pem);
    let changed = patch.0.len() / 2;
    if changed > 0 {
        api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .map_err(api_err)?;
    }
    Ok(changed)
}

/// A client from the environment: the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster service
/// account.
pub async fn client() -> Result<kube::Client, CaBundleError> {
    kube::Client::try_default()
        .await
        .map_err(|e| CaBundleError::Client(e.to_string()))
}

/// Patches in the background, retrying with backoff (1 s doubling to 60 s) until it succeeds: the webhook serves
/// meanwhile, and an API server that is briefly unreachable at start must not leave a stale caBundle forever.
pub fn spawn_patcher(name: String, ca_pem: Vec<u8>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            let result = match client().await {
                Ok(client) => patch_ca_bundle(client, &name, &ca_pem).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(changed) => {
                    tracing::info!(configuration = %name, webhooks_changed = changed, "caBundle is up to date");
                    return;
                }
                Err(e) => {
                    tracing::error!(configuration = %name, error = %e, retry_in_s = delay.as_secs(), "cannot write the caBundle");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundles: &[Option<&[u8]>]) -> MutatingWebhookConfiguration {
        let webhooks: Vec<_> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut client_config = json!({"service": {"name": "entourage", "namespace": "entourage-system"}});
                if let Some(b) = b {
                    client_config["caBundle"] =
                        json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b));
                }
                json!({
                    "name": format!("w{i}.entourage.dev"), "clientConfig": client_config,
                    "sideEffects": "None", "admissionReviewVersions": ["v1"],
                })
            })
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "entourage"}, "webhooks": webhooks})).unwrap()
    }

    #[test]
    fn patch_tests_each_name_and_sets_every_stale_ca_bundle() {
        let patch = patch_for(&config(&[None, Some(b"old"), Some(b"new")]), b"new");
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"new");
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "test", "path": "/webhooks/0/name", "value": "w0.entourage.dev"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": encoded},
                {"op": "test", "path": "/webhooks/1/name", "value": "w1.entourage.dev"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": encoded},
            ])
        );
    }

    #[test]
    fn nothing_to_patch_when_every_webhook_has_the_ca() {
        assert!(patch_for(&config(&[Some(b"ca"), Some(b"ca")]), b"ca").0.is_empty());
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(matches!(read_ca_bundle(&path), Err(CaBundleError::NotPem { .. })));
    }
}
