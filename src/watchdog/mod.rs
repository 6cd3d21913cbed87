//! `entourage watchdog`: recreates the Pods that asked for entourage and were admitted without it (created while
//! the webhook was down under `failurePolicy: Ignore`, or before it was installed), as Dapr's watchdog does.
//!
//! Opt-in (the chart's `watchdog.enabled`, which alone grants its RBAC). It runs as a second container in the
//! webhook's Pods; a Lease makes one replica at a time act. Each round it lists Pods' and namespaces' metadata and
//! the install's MutatingWebhookConfiguration, picks the Pods that a new copy would get injected ([`select`]), and
//! evicts at most `--max-per-round` of them through the Eviction API, so PodDisruptionBudgets hold and the owning
//! controller makes the new copy. A bare Pod or a Job's Pod is never touched: nothing would recreate the first,
//! and the second may be work that must run once.

pub mod select;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    coordination::v1::{Lease, LeaseSpec},
    core::v1::{Namespace, Pod},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, EvictParams, ListParams, ObjectMeta, PostParams};

use crate::support::duration::parse_duration;

/// `entourage watchdog` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchdogArgs {
    /// The MutatingWebhookConfiguration of this install: only Pods one of its Pod webhooks selects are recreated.
    #[arg(long, default_value = "entourage")]
    pub webhook_configuration: String,
    /// The namespace of the Lease (the webhook's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "entourage-system")]
    pub namespace: String,
    /// The Lease that lets one replica act at a time.
    #[arg(long, default_value = "entourage-watchdog")]
    pub lease: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "entourage-watchdog")]
    pub identity: String,
    /// Time between rounds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// At most this many Pods evicted per round: the bound on how fast the watchdog can churn a cluster.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_per_round: u32,
    /// A Pod younger than this is left for the next round.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub min_age: Duration,
}

/// Why the watchdog could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// No in-cluster service account or kubeconfig.
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(#[from] kube::Error),
    /// SIGTERM could not be watched.
    #[error("cannot watch for SIGTERM: {0}")]
    Signal(std::io::Error),
}

/// Runs rounds until SIGTERM.
pub async fn run(args: WatchdogArgs) -> Result<(), WatchdogError> {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();
    let client = kube::Client::try_default().await?;
    let stop = crate::support::shutdown::shutdown_signal().map_err(WatchdogError::Signal)?;
    tokio::pin!(stop);
    tracing::info!(
        interval = ?args.interval,
        max_per_round = args.max_per_round,
        configuration = %args.webhook_configuration,
        "watchdog started"
    );
    loop {
        match round(&client, &args).await {
            Ok(Round::Follower(holder)) => tracing::debug!(%holder, "another replica holds the lease"),
            Ok(Round::Acted { missed, evicted }) => {
                if missed > 0 {
                    tracing::info!(missed, evicted, "round")
                }
            }
            Err(e) => tracing::warn!(error = %e, "round failed; trying again next round"),
        }
        tokio::select! {
            signal = &mut stop => {
                tracing::info!(signal, "stopped");
                return Ok(());
            }
            () = tokio::time::sleep(args.interval) => {}
        }
    }
}

enum Round {
    Follower(String),
    Acted { missed: usize, evicted: usize },
}

async fn round(client: &kube::Client, args: &WatchdogArgs) -> Result<Round, kube::Error> {
    if let Some(holder) = hold_lease(client, args).await? {
        return Ok(Round::Follower(holder));
    }
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let webhooks = configurations
        .get(&args.webhook_configuration)
        .await?
        .webhooks
        .unwrap_or_default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace_labels: BTreeMap<_, _> = namespaces
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.labels.unwrap_or_default(),
            )
        })
        .collect();
    let pods: Api<Pod> = Api::all(client.clone());
    let mut metas = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = pods.list_metadata(&params).await?;
        metas.extend(page.items.into_iter().map(|p| p.metadata));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let min_age = i64::try_from(args.min_age.as_secs()).unwrap_or(i64::MAX);
    let missed = select::missed(&metas, &namespace_labels, &webhooks, now, min_age);
    let mut evicted = 0;
    for pod in missed.iter().take(args.max_per_round as usize) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
        match api.evict(&pod.name, &EvictParams::default()).await {
            Ok(_) => {
                evicted += 1;
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, owner = %pod.owner,
                    "evicted a Pod admitted without the entourage it asks for; its controller recreates it");
            }
            // 429: a PodDisruptionBudget forbids it now; 404: already gone. Both: next round.
            Err(e) => tracing::warn!(namespace = %pod.namespace, pod = %pod.name, error = %e, "not evicted"),
        }
    }
    Ok(Round::Acted {
        missed: missed.len(),
        evicted,
    })
}

/// Takes or renews the Lease; `Some(holder)` when another live replica holds it.
async fn hold_lease(client: &kube::Client, args: &WatchdogArgs) -> Result<Option<String>, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.namespace);
    // Three missed rounds and the lease is free for another replica.
    let duration = i32::try_from(args.interval.as_secs().saturating_mul(3).max(15)).unwrap_or(i32::MAX);
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let ours = |lease: Option<Lease>| {
        let mut lease = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(args.lease.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(args.identity.as_str()) {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(args.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now.clone());
        lease
    };
    match leases.get_opt(&args.lease).await? {
        None => {
            // Two replicas creating at once: the second gets 409 and follows this round.
            match leases.create(&PostParams::default(), &ours(None)).await {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some("another replica".into())),
                Err(e) => Err(e),
            }
        }
        Some(lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let expires = spec
                .renew_time
                .map(|t| t.0.as_second() + i64::from(spec.lease_duration_seconds.unwrap_or(0)))
                .unwrap_or(0);
            if holder != args.identity && !holder.is_empty() && expires > now.0.as_second() {
                return Ok(Some(holder));
            }
            // The resourceVersion it carries makes a concurrent taker's replace fail with 409.
            match leases
                .replace(&args.lease, &PostParams::default(), &ours(Some(lease)))
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some("another replica".into())),
                Err(e) => Err(e),
            }
        }
    }
}
