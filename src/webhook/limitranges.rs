//! `serve --limit-ranges`: the namespaces' LimitRanges, listed every `--limit-range-interval` (a list, not a call
//! per review), so that a Pod whose injected containers a LimitRange would refuse is refused by entourage first,
//! with a message that names the fix (`core::limits`). Without the flag, or until the first list, nothing is
//! checked and the apiserver's LimitRanger has the last word as always.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::LimitRange;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::core::{
    annotations::STATUS,
    limits::{misfits, ContainerLimits},
    mutate::Outcome,
};

/// The `type: Container` bounds of every namespace that has any.
#[derive(Default)]
pub struct LimitRanges(ArcSwap<HashMap<String, Vec<ContainerLimits>>>);

impl LimitRanges {
    /// Lists every LimitRange every `interval`, until the process ends; a failed list keeps the previous one.
    pub fn spawn(self: &Arc<Self>, client: kube::Client, interval: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let api: Api<LimitRange> = Api::all(client);
            loop {
                match api.list(&ListParams::default()).await {
                    Ok(list) => this.0.store(Arc::new(by_namespace(&list.items))),
                    Err(e) => tracing::warn!(error = %e, "cannot list LimitRanges; keeping the previous list"),
                }
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Why the containers `outcome` injects into `object` do not fit `namespace`'s LimitRanges, or `None`.
    pub fn refusal(&self, namespace: &str, object: &Value, outcome: &Outcome) -> Option<String> {
        if outcome.injected.is_empty() {
            return None;
        }
        let all = self.0.load();
        let ranges = all.get(namespace)?;
        // Rare (a namespace with a container LimitRange): the patched Pod, as the apiserver will have it.
        let mut patched = object.clone();
        let patch: json_patch::Patch = serde_json::from_slice(&outcome.patch.to_json()).ok()?;
        json_patch::patch(&mut patched, &patch).ok()?;
        let status: Value =
            serde_json::from_str(patched.pointer("/metadata/annotations")?.get(STATUS)?.as_str()?).ok()?;
        let spec = patched.get("spec")?;
        let every: Vec<&Value> = ["initContainers", "containers"]
            .iter()
            .filter_map(|k| spec.get(*k).and_then(Value::as_array))
            .flatten()
            .collect();
        let injected: Vec<_> = status
            .get("containers")?
            .as_array()?
            .iter()
            .zip(&outcome.injected)
            .filter_map(|(name, pattern)| {
                let container = every.iter().find(|c| c.get("name") == Some(name))?;
                Some((*pattern, *container))
            })
            .collect();
        let found = misfits(&injected, namespace, ranges);
        (!found.is_empty()).then(|| format!("entourage: {}", found.join("; ")))
    }
}

fn by_namespace(items: &[LimitRange]) -> HashMap<String, Vec<ContainerLimits>> {
    let mut out: HashMap<String, Vec<ContainerLimits>> = HashMap::new();
    for range in items {
        for item in range
            .spec
            .iter()
            .flat_map(|s| &s.limits)
            .filter(|i| i.type_ == "Container")
        {
            let quantities = |m: &Option<
                std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >| { m.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect() };
            let limits = ContainerLimits {
                name: range.metadata.name.clone().unwrap_or_default(),
                max: quantities(&item.max),
                min: quantities(&item.min),
            };
            if !limits.max.is_empty() || !limits.min.is_empty() {
                out.entry(range.metadata.namespace.clone().unwrap_or_default())
                    .or_default()
                    .push(limits);
            }
        }
    }
    out
}
