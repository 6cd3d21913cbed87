//! `entourage certs --secret NAME`: the serving certificate's Secret, made in the cluster instead of at render
//! time, so that `helm template` (Argo CD, Flux's post-renderers, CI diffs) renders the same objects every time.
//!
//! The chart runs it in two hook Jobs (`certificates.source: job`):
//! - before install and upgrade, with `--only-create`: when the Secret is missing (or lacks a key) it makes a CA
//!   and a serving certificate and creates it; when it exists it is left alone. A Secret an older chart rendered
//!   (owned by the Helm release) is marked `helm.sh/resource-policy: keep`, so the upgrade that stops rendering it
//!   does not delete it.
//! - after install and upgrade, when `certificates.rotation` is set: when the Secret records another rotation, a
//!   new CA and certificate. The webhooks' caBundle is written first, with the previous CA and the new one, and
//!   only then the Secret: a replica that still serves the previous certificate (until the kubelet updates its
//!   volume) stays verified, and one that serves the new one is verified already.

use k8s_openapi::{api::core::v1::Secret, ByteString};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;

use super::{generate_for_cluster, CertError};
use crate::support::cabundle;

/// The annotation that records the `certificates.rotation` a pair was made for.
pub const ROTATION: &str = "entourage.dev/rotation";
/// Helm leaves a resource with this annotation (value `keep`) when a release stops rendering it.
const HELM_RESOURCE_POLICY: &str = "helm.sh/resource-policy";
/// The annotation Helm puts on the objects it owns.
const HELM_RELEASE: &str = "meta.helm.sh/release-name";
/// The keys the Deployment mounts and `serve --patch-ca-bundle` reads.
const KEYS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

/// What to make, and where.
pub struct SecretSpec<'a> {
    /// The Secret's name.
    pub name: &'a str,
    /// Its namespace, the webhook Service's.
    pub namespace: &'a str,
    /// The webhook Service's name.
    pub service: &'a str,
    /// Validity of the CA and of the serving certificate.
    pub days: i64,
    /// The rotation the pair must have been made for.
    pub rotation: Option<&'a str>,
    /// Never rotate: only create a missing Secret.
    pub only_create: bool,
    /// The MutatingWebhookConfiguration whose caBundle a rotation writes first.
    pub webhook_configuration: Option<&'a str>,
}

/// What was done.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret was missing (or incomplete) and was made.
    Created,
    /// It was there and stays.
    Kept,
    /// It was there, owned by a Helm release; it is now marked to outlive the release's next upgrade.
    KeptFromHelm,
    /// A new pair for a new rotation.
    Rotated,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Kept => "kept",
            Outcome::KeptFromHelm => "kept, and marked helm.sh/resource-policy=keep (an older chart rendered it)",
            Outcome::Rotated => "rotated",
        })
    }
}

fn api_err(name: &str) -> impl Fn(kube::Error) -> CertError + '_ {
    move |source| CertError::Api {
        object: format!("Secret {name}"),
        source: Box::new(source),
    }
}

/// The PEM certificates of a bundle, in order.
fn certificates(pem: &str) -> Vec<&str> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter_map(|c| c.find("-----BEGIN CERTIFICATE-----").map(|at| &c[at..]))
        .collect()
}

/// The bundle a rotation trusts: the newest CA of the previous bundle, then the new CA.
pub fn rotated_bundle(previous: &str, new_ca: &str) -> String {
    match certificates(previous).last() {
        Some(last) => format!("{}\n{}", last.trim_end(), new_ca.trim_end()) + "\n",
        None => new_ca.to_string(),
    }
}

fn data(tls_cert: &str, tls_key: &str, ca: &str) -> BTreeMap<String, ByteString> {
    [("tls.crt", tls_cert), ("tls.key", tls_key), ("ca.crt", ca)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

fn complete(secret: &Secret) -> bool {
    let data = secret.data.as_ref();
    KEYS.iter()
        .all(|k| data.and_then(|d| d.get(*k)).is_some_and(|v| !v.0.is_empty()))
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Makes the Secret when it is missing, rotates it when it records another rotation (unless `only_create`).
pub async fn ensure(client: kube::Client, spec: &SecretSpec<'_>) -> Result<Outcome, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), spec.namespace);
    let current = api.get_opt(spec.name).await.map_err(api_err(spec.name))?;
    let fresh = || generate_for_cluster(spec.service, spec.namespace, spec.days);
    let annotations = || {
        spec.rotation
            .map(|r| BTreeMap::from([(ROTATION.to_string(), r.to_string())]))
    };
    let existing = match current {
        Some(secret) if complete(&secret) => secret,
        current => {
            let pair = fresh()?;
            let data = data(&pair.tls_cert, &pair.tls_key, &pair.ca_cert);
            match current {
                // Missing: create. A concurrent Job that won left its own, equally good.
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(spec.name.to_string()),
                            namespace: Some(spec.namespace.to_string()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/name".to_string(),
                                "entourage".to_string(),
                            )])),
                            annotations: annotations(),
                            ..ObjectMeta::default()
                        },
                        type_: Some("kubernetes.io/tls".to_string()),
                        data: Some(data),
                        ..Secret::default()
                    };
                    match api.create(&PostParams::default(), &secret).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Outcome::Kept),
                        Err(e) => return Err(api_err(spec.name)(e)),
                    }
                }
                // Incomplete (a key missing or empty): the same Secret, filled.
                Some(incomplete) => refill(&api, spec, incomplete, data).await?,
            }
            return Ok(Outcome::Created);
        }
    };

    let wanted = spec.rotation.filter(|r| !r.is_empty());
    let recorded = annotation(&existing, ROTATION);
    if spec.only_create || wanted.is_none() || wanted == recorded {
        let helm_owned = annotation(&existing, HELM_RELEASE).is_some();
        if helm_owned && annotation(&existing, HELM_RESOURCE_POLICY) != Some("keep") {
            let patch = serde_json::json!({"metadata": {"annotations": {HELM_RESOURCE_POLICY: "keep"}}});
            api.patch(spec.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(spec.name))?;
            return Ok(Outcome::KeptFromHelm);
        }
        return Ok(Outcome::Kept);
    }

    let pair = fresh()?;
    let previous = existing
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    let bundle = rotated_bundle(&previous, &pair.ca_cert);
    if let Some(configuration) = spec.webhook_configuration {
        match cabundle::patch_ca_bundle(client, configuration, bundle.as_bytes()).await {
            Ok(_) => {}
            // Not installed yet: nothing verifies against the previous CA.
            Err(cabundle::CaBundleError::Api { source, .. }) if matches!(source.as_ref(), kube::Error::Api(e) if e.code == 404) =>
                {}
            Err(e) => return Err(CertError::CaBundle(e)),
        }
    }
    refill(&api, spec, existing, data(&pair.tls_cert, &pair.tls_key, &bundle)).await?;
    Ok(Outcome::Rotated)
}

/// Replaces the Secret's data, recording the rotation. The resourceVersion it was read with goes along: a
/// concurrent change makes this fail (and the Job retry) instead of being lost.
async fn refill(
    api: &Api<Secret>,
    spec: &SecretSpec<'_>,
    mut secret: Secret,
    data: BTreeMap<String, ByteString>,
) -> Result<(), CertError> {
    secret.data = Some(data);
    if let Some(rotation) = spec.rotation {
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ROTATION.to_string(), rotation.to_string());
    }
    api.replace(spec.name, &PostParams::default(), &secret)
        .await
        .map_err(api_err(spec.name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const B: &str = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
    const C: &str = "-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_rotation_trusts_the_newest_previous_ca_and_the_new_one() {
        assert_eq!(rotated_bundle(A, B), format!("{A}{B}"));
        // The next rotation drops the oldest.
        assert_eq!(rotated_bundle(&format!("{A}{B}"), C), format!("{B}{C}"));
        // Nothing before: the new CA alone.
        assert_eq!(rotated_bundle("", C), C);
    }
}
