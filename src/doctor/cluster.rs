//! What `entourage doctor` reads from the cluster, through the API server only (as `kubectl` does, so it works
//! from a laptop): each object as found, missing (`None`), or unreadable (`Err`, with the API's reason).

use std::collections::BTreeMap;

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Namespace, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::api::{Api, ListParams};

use super::DoctorArgs;

/// A read that may find nothing (`Ok(None)`) or be refused (`Err`, the API's message).
pub type Read<T> = Result<Option<T>, String>;

/// Everything the checks look at.
#[derive(Debug)]
pub struct Snapshot {
    /// The MutatingWebhookConfiguration.
    pub webhook_configuration: Read<MutatingWebhookConfiguration>,
    /// The serving certificate Secret's `tls.crt`.
    pub serving_certificate: Read<Vec<u8>>,
    /// The Service.
    pub service: Read<Service>,
    /// The Service's EndpointSlices.
    pub endpoint_slices: Result<Vec<EndpointSlice>, String>,
    /// `GET /readyz` through the API server's service proxy: the body, or why it failed.
    pub proxied_readyz: Result<String, String>,
    /// The labels of each namespace that must be excluded, as the API has them.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The webhook Deployment.
    pub deployment: Read<Deployment>,
    /// Every Pod that carries an `entourage.dev/status` annotation.
    pub injected_pods: Result<Vec<InjectedPod>, String>,
    /// `namespace/name` (with its controller) of every Pod that asks for entourage's containers (one of
    /// `annotations::ASKING`, not `inject: "false"`) but carries no `entourage.dev/status`: admitted without them.
    pub missed_pods: Result<Vec<String>, String>,
}

/// A Pod entourage injected.
#[derive(Debug)]
pub struct InjectedPod {
    /// `namespace/name`, with its controller if any (`of ReplicaSet web-5d9`).
    pub name: String,
    /// Its `entourage.dev/status` annotation.
    pub status: String,
    /// The revision whose webhook selects it now: its `entourage.dev/rev` label, else its namespace's; `None` for
    /// the default revision.
    pub selected_revision: Option<String>,
}

impl InjectedPod {
    /// The revision that injected it, as `entourage.dev/status` records it (`None`: the default revision).
    pub fn injected_revision(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.status)
            .ok()?
            .get("revision")?
            .as_str()
            .map(str::to_string)
    }
}

/// The API could not be reached at all: nothing can be checked.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Kubernetes API: {0}")]
pub struct Unreachable(pub String);

/// An API error as one line; `None` for errors that mean the API was not reached.
fn api_error(e: kube::Error) -> Result<String, Unreachable> {
    match e {
        kube::Error::Api(status) => Ok(format!("{} ({})", status.message, status.code).trim_start().to_string()),
        kube::Error::SerdeError(e) => Ok(format!("unexpected answer: {e}")),
        other => Err(Unreachable(other.to_string())),
    }
}

/// `Ok(Some)`, `Ok(None)` for NotFound, `Err(reason)` for another API error.
fn read<T>(result: Result<Option<T>, kube::Error>) -> Result<Read<T>, Unreachable> {
    match result {
        Ok(found) => Ok(Ok(found)),
        Err(e) => Ok(Err(api_error(e)?)),
    }
}

/// Reads what the checks need. The first read tells whether the API answers at all.
pub async fn read_cluster(client: kube::Client, args: &DoctorArgs) -> Result<Snapshot, Unreachable> {
    let ns = args.namespace.as_str();
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let webhook_configuration = read(configurations.get_opt(&args.webhook_configuration).await)?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let serving_certificate = read(secrets.get_opt(&args.tls_secret).await)?
        .map(|secret| secret.and_then(|s| s.data.and_then(|mut d| d.remove("tls.crt")).map(|b| b.0)));

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = read(services.get_opt(&args.service).await)?;

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let selector = format!("kubernetes.io/service-name={}", args.service);
    let endpoint_slices = match slices.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => Ok(list.items),
        Err(e) => Err(api_error(e)?),
    };

    // The API server dials the Service itself, as it does for admission calls: a firewall between the control
    // plane and the nodes (GKE private clusters) fails this exactly as it fails the webhook.
    let port = webhook_port(webhook_configuration.as_ref().ok().and_then(Option::as_ref), args);
    let path = format!(
        "/api/v1/namespaces/{ns}/services/https:{}:{port}/proxy/readyz",
        args.service
    );
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a GET without a body is a request");
    let proxied_readyz = match client.request_text(request).await {
        Ok(body) => Ok(body),
        Err(e) => Err(api_error(e)?),
    };

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace_labels = BTreeMap::new();
    for name in excluded_namespaces(args) {
        // Every namespace carries `kubernetes.io/metadata.name` (set by the API server since 1.21); one that
        // cannot be read is judged by that label alone.
        let mut labels = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.clone())]);
        if let Ok(Ok(Some(found))) = read(namespaces.get_opt(&name).await) {
            labels.extend(found.metadata.labels.unwrap_or_default());
        }
        namespace_labels.insert(name, labels);
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = read(deployments.get_opt(&args.deployment).await)?;

    let (injected_pods, missed_pods) = match pods(client).await? {
        Ok((injected, missed)) => (Ok(injected), Ok(missed)),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    Ok(Snapshot {
        webhook_configuration,
        serving_certificate,
        service,
        endpoint_slices,
        proxied_readyz,
        namespace_labels,
        deployment,
        injected_pods,
        missed_pods,
    })
}

/// The namespaces whose Pods must never be sent to the webhook: kube-system, and the webhook's own (whose Pods
/// could not start while the webhook is down).
pub fn excluded_namespaces(args: &DoctorArgs) -> Vec<String> {
    let mut names = vec!["kube-system".to_string()];
    if args.namespace != "kube-system" {
        names.push(args.namespace.clone());
    }
    names
}

/// The Service port the webhooks call (443 when unset, as in the API).
pub fn webhook_port(configuration: Option<&MutatingWebhookConfiguration>, args: &DoctorArgs) -> i32 {
    configuration
        .and_then(|c| c.webhooks.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|w| w.client_config.service.as_ref())
        .find(|s| s.name == args.service && s.namespace == args.namespace)
        .and_then(|s| s.port)
        .unwrap_or(443)
}

/// Injected Pods and missed ones.
type PodLists = (Vec<InjectedPod>, Vec<String>);

/// Every Pod's metadata, 500 at a time (metadata only: a big cluster's Pod specs are megabytes): those entourage
/// injected, and those that asked for it and were admitted without it.
async fn pods(client: kube::Client) -> Result<Result<PodLists, String>, Unreachable> {
    use crate::core::annotations::{ASKING, INJECT, REVISION, STATUS};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace_revisions = BTreeMap::new();
    match namespaces.list_metadata(&ListParams::default()).await {
        Ok(list) => {
            for namespace in list.items {
                let meta = namespace.metadata;
                if let Some(rev) = meta.labels.and_then(|mut l| l.remove(REVISION)) {
                    namespace_revisions.insert(meta.name.unwrap_or_default(), rev);
                }
            }
        }
        Err(e) => return Ok(Err(api_error(e)?)),
    }
    let pods: Api<Pod> = Api::all(client);
    let (mut injected, mut missed) = (Vec::new(), Vec::new());
    let mut params = ListParams::default().limit(500);
    loop {
        let page = match pods.list_metadata(&params).await {
            Ok(page) => page,
            Err(e) => return Ok(Err(api_error(e)?)),
        };
        for pod in page.items {
            let meta = pod.metadata;
            let controller = meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| format!(" of {} {}", o.kind, o.name))
                .unwrap_or_default();
            let namespace = meta.namespace.unwrap_or_default();
            let name = format!("{namespace}/{}{controller}", meta.name.unwrap_or_default());
            let mut annotations = meta.annotations.unwrap_or_default();
            if let Some(status) = annotations.remove(STATUS) {
                let selected_revision = meta
                    .labels
                    .and_then(|mut l| l.remove(REVISION))
                    .or_else(|| namespace_revisions.get(&namespace).cloned());
                injected.push(InjectedPod {
                    name,
                    status,
                    selected_revision,
                });
            } else if annotations.get(INJECT).map(String::as_str) != Some("false")
                && ASKING.iter().any(|k| annotations.contains_key(*k))
            {
                missed.push(name);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(Ok((injected, missed))),
        }
    }
}
