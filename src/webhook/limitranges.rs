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
    limits::{misfits, ContainerLimits},
    mutate::Outcome,
};

/// The `type: Container` bounds of every namespace that has any; clones share one list.
#[derive(Default, Clone)]
pub struct LimitRanges(Arc<ArcSwap<HashMap<String, Vec<ContainerLimits>>>>);

impl LimitRanges {
    /// Lists every LimitRange every `interval`, until the process ends; a failed list keeps the previous one.
    pub fn spawn(&self, client: kube::Client, interval: Duration) {
        let this = self.clone();
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

    /// Why the containers `outcome` injects do not fit `namespace`'s LimitRanges, or `None`. Read from the patch
    /// itself: the containers it adds, in the order of `outcome.injected`.
    pub fn refusal(&self, namespace: &str, outcome: &Outcome) -> Option<String> {
        if outcome.injected.is_empty() {
            return None;
        }
        let all = self.0.load();
        let ranges = all.get(namespace)?;
        // Rare (a namespace with a container LimitRange): the patch parsed back.
        let operations: Vec<Value> = serde_json::from_slice(&outcome.patch.to_json()).ok()?;
        let mut added = Vec::new();
        for operation in &operations {
            let path = operation.get("path").and_then(Value::as_str).unwrap_or_default();
            let Some(rest) = path
                .strip_prefix("/spec/initContainers")
                .or_else(|| path.strip_prefix("/spec/containers"))
            else {
                continue;
            };
            match operation.get("value") {
                Some(Value::Array(containers)) if rest.is_empty() => added.extend(containers),
                Some(container @ Value::Object(_)) if rest.matches('/').count() == 1 => added.push(container),
                _ => {}
            }
        }
        let injected: Vec<_> = outcome.injected.iter().copied().zip(added).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{config::Config, mutate::pod::mutate_pod};
    use serde_json::json;

    fn with(ranges: &[(&str, &str, &str)]) -> LimitRanges {
        let cache = LimitRanges::default();
        let items: Vec<LimitRange> = ranges
            .iter()
            .map(|(namespace, name, cpu)| {
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace},
                    "spec": {"limits": [{"type": "Container", "max": {"cpu": cpu}}, {"type": "Pod", "max": {"cpu": "1m"}}]}}))
                .unwrap()
            })
            .collect();
        cache.0.store(Arc::new(by_namespace(&items)));
        cache
    }

    fn injected_pod() -> Outcome {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log,/var/log/app/b.log"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]}});
        mutate_pod(&pod, &Config::default())
    }

    #[test]
    fn every_injected_container_over_the_namespaces_maximum_is_named() {
        let refusal = with(&[("shop", "small", "100m")])
            .refusal("shop", &injected_pod())
            .unwrap();
        assert!(
            refusal.starts_with("entourage: LimitRange small in namespace shop allows at most cpu 100m"),
            "{refusal}"
        );
        for name in ["sidecar-a", "sidecar-b"] {
            assert!(
                refusal.contains(&format!("sidecar container {name} gets limits.cpu 200m")),
                "{refusal}"
            );
        }
    }

    #[test]
    fn other_namespaces_roomy_ranges_and_pod_type_limits_refuse_nothing() {
        let cache = with(&[("other", "small", "100m"), ("shop", "roomy", "1")]);
        assert_eq!(cache.refusal("shop", &injected_pod()), None);
        assert_eq!(
            LimitRanges::default().refusal("shop", &injected_pod()),
            None,
            "before the first list"
        );
    }
}
