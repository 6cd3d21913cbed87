//! Which Pods the watchdog recreates: pure, from what the API lists (Pods' and namespaces' metadata and the
//! webhook configuration), so that every rule is tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::core::{Selector, SelectorExt};

use crate::core::annotations::{ASKING, INJECT, STATUS};

/// A Pod to recreate: admitted without the containers it asks for, owned by a controller that will make it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `ReplicaSet web-5d9`: who recreates it.
    pub owner: String,
}

/// Controllers whose Pods are never recreated: a Job's Pod that is evicted counts against its `backoffLimit`
/// and may rerun work that must run once.
const NEVER: &[&str] = &["Job"];

/// The Pods of `pods` that ask for entourage, carry no `entourage.dev/status`, are owned by a controller other
/// than a Job, are at least `min_age_seconds` old at `now`, and are selected by one of `webhooks` (its
/// namespaceSelector on their namespace's labels, its objectSelector on theirs): the ones a new copy would get
/// injected. Webhooks whose selector cannot be read select nothing.
pub fn missed(
    pods: &[ObjectMeta],
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
    webhooks: &[MutatingWebhook],
    now_seconds: i64,
    min_age_seconds: i64,
) -> Vec<Missed> {
    let pod_webhooks: Vec<(Selector, Selector)> = webhooks
        .iter()
        .filter(|w| {
            w.rules
                .iter()
                .flatten()
                .any(|r| r.resources.iter().flatten().any(|x| x == "pods"))
        })
        .filter_map(|w| Some((selector(&w.namespace_selector)?, selector(&w.object_selector)?)))
        .collect();
    let empty = BTreeMap::new();
    pods.iter()
        .filter_map(|meta| {
            let annotations = meta.annotations.as_ref()?;
            if annotations.contains_key(STATUS)
                || annotations.get(INJECT).map(String::as_str) == Some("false")
                || !ASKING.iter().any(|k| annotations.contains_key(*k))
                || meta.deletion_timestamp.is_some()
            {
                return None;
            }
            let created = meta.creation_timestamp.as_ref()?.0.as_second();
            if now_seconds - created < min_age_seconds {
                return None;
            }
            let owner = meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))?;
            if NEVER.contains(&owner.kind.as_str()) {
                return None;
            }
            let namespace = meta.namespace.clone()?;
            let labels = meta.labels.as_ref().unwrap_or(&empty);
            let ns_labels = namespace_labels.get(&namespace).unwrap_or(&empty);
            pod_webhooks
                .iter()
                .any(|(ns, object)| ns.matches(ns_labels) && object.matches(labels))
                .then(|| Missed {
                    namespace,
                    name: meta.name.clone().unwrap_or_default(),
                    owner: format!("{} {}", owner.kind, owner.name),
                })
        })
        .collect()
}

/// A webhook's selector as kube evaluates it; absent selects everything.
fn selector(s: &Option<LabelSelector>) -> Option<Selector> {
    match s {
        None => Some(Selector::default()),
        Some(s) => Selector::try_from(s.clone()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn pod(name: &str, annotations: serde_json::Value, owner: Option<&str>, age: i64) -> ObjectMeta {
        let created = jiff_like(NOW - age);
        let mut meta = json!({"name": name, "namespace": "shop", "annotations": annotations,
                              "creationTimestamp": created, "labels": {"app": "web"}});
        if let Some(kind) = owner {
            meta["ownerReferences"] =
                json!([{"apiVersion": "apps/v1", "kind": kind, "name": "web-5d9", "uid": "u", "controller": true}]);
        }
        serde_json::from_value(meta).unwrap()
    }

    fn jiff_like(seconds: i64) -> String {
        k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap().to_string()
    }

    fn webhook(namespace_selector: serde_json::Value) -> MutatingWebhook {
        serde_json::from_value(json!({
            "name": "pods.entourage.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"url": "https://x"},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": namespace_selector,
        }))
        .unwrap()
    }

    fn namespaces(labels: serde_json::Value) -> BTreeMap<String, BTreeMap<String, String>> {
        BTreeMap::from([("shop".to_string(), serde_json::from_value(labels).unwrap())])
    }

    const ASKS: &str = "entourage.dev/sidecar-logs";

    #[test]
    fn a_controllers_pod_that_asked_and_was_admitted_without_entourage_is_recreated() {
        let pods = [pod(
            "web-5d9-a",
            json!({ASKS: "/var/log/a.log"}),
            Some("ReplicaSet"),
            120,
        )];
        let found = missed(&pods, &namespaces(json!({})), &[webhook(json!({}))], NOW, 60);
        assert_eq!(
            found,
            [Missed {
                namespace: "shop".into(),
                name: "web-5d9-a".into(),
                owner: "ReplicaSet web-5d9".into()
            }]
        );
    }

    #[test]
    fn bare_pods_jobs_pods_injected_opted_out_young_and_deleting_pods_are_left_alone() {
        let mut deleting = pod("deleting", json!({ASKS: "/a"}), Some("ReplicaSet"), 120);
        deleting.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(NOW).unwrap(),
        ));
        let pods = [
            pod("bare", json!({ASKS: "/a"}), None, 120),
            pod("job", json!({ASKS: "/a"}), Some("Job"), 120),
            pod("injected", json!({ASKS: "/a", STATUS: "{}"}), Some("ReplicaSet"), 120),
            pod(
                "opted-out",
                json!({ASKS: "/a", INJECT: "false"}),
                Some("ReplicaSet"),
                120,
            ),
            pod("plain", json!({"team": "a"}), Some("ReplicaSet"), 120),
            pod("young", json!({ASKS: "/a"}), Some("ReplicaSet"), 10),
            deleting,
        ];
        assert_eq!(
            missed(&pods, &namespaces(json!({})), &[webhook(json!({}))], NOW, 60),
            []
        );
    }

    #[test]
    fn only_pods_a_webhook_of_this_install_would_be_called_for_are_recreated() {
        let pods = [pod("web-5d9-a", json!({ASKS: "/a"}), Some("ReplicaSet"), 120)];
        // The namespace moved to another revision: this install's webhook is no longer called for its Pods, so
        // a new copy would not be injected by it either.
        let default_revision =
            webhook(json!({"matchExpressions": [{"key": "entourage.dev/rev", "operator": "DoesNotExist"}]}));
        let canary_namespace = namespaces(json!({"entourage.dev/rev": "canary"}));
        assert_eq!(
            missed(
                &pods,
                &canary_namespace,
                std::slice::from_ref(&default_revision),
                NOW,
                60
            ),
            []
        );
        assert_eq!(
            missed(&pods, &namespaces(json!({})), &[default_revision], NOW, 60).len(),
            1
        );
        // No webhook for Pods at all (only the Jobs one): nothing.
        let mut jobs = webhook(json!({}));
        jobs.rules.as_mut().unwrap()[0].resources = Some(vec!["jobs".into()]);
        assert_eq!(missed(&pods, &namespaces(json!({})), &[jobs], NOW, 60), []);
    }
}
