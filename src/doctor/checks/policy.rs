//! The webhooks' own settings: which namespaces they leave alone, whether matchConditions keep every other Pod
//! away from entourage, and what their failurePolicy does while entourage is down.

use std::collections::BTreeMap;

use k8s_openapi::{api::admissionregistration::v1::MutatingWebhook, apimachinery::pkg::apis::meta::v1::LabelSelector};

use super::{bad, ok, Check, Level};
use crate::doctor::cluster::Snapshot;

/// Whether `selector` selects an object with `labels` (an absent selector selects everything).
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return true };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // The API refuses any other operator; a selector it kept cannot have one.
            _ => false,
        }
    });
    by_labels && by_expressions
}

pub(super) fn exclusions(s: &Snapshot, ours: &[&MutatingWebhook], out: &mut Vec<Check>) {
    const ID: &str = "namespace-exclusion";
    let before = out.len();
    for webhook in ours {
        for (namespace, labels) in &s.namespace_labels {
            if selects(webhook.namespace_selector.as_ref(), labels) {
                out.push(bad(
                    ID,
                    Level::Fail,
                    format!(
                        "{} sends {namespace}'s objects to entourage (its namespaceSelector selects it)",
                        webhook.name
                    ),
                    format!(
                        "add {namespace} to the namespaceSelector (kubernetes.io/metadata.name NotIn): the control \
                         plane's and the webhook's own Pods must start while the webhook is down"
                    ),
                ));
            }
        }
    }
    if out.len() == before {
        let names: Vec<&str> = s.namespace_labels.keys().map(String::as_str).collect();
        out.push(ok(ID, format!("every webhook leaves {} alone", names.join(" and "))));
    }
}

/// Whether a webhook is called for Pods.
fn handles_pods(webhook: &MutatingWebhook) -> bool {
    webhook.rules.iter().flatten().any(|r| {
        r.api_groups.iter().flatten().any(|g| g.is_empty() || g == "*")
            && r.resources.iter().flatten().any(|res| res == "pods" || res == "*")
    })
}

fn has_conditions(webhook: &MutatingWebhook) -> bool {
    webhook.match_conditions.as_ref().is_some_and(|c| !c.is_empty())
}

pub(super) fn match_conditions(ours: &[&MutatingWebhook], out: &mut Vec<Check>) {
    const ID: &str = "match-conditions";
    for webhook in ours.iter().filter(|w| handles_pods(w)) {
        if has_conditions(webhook) {
            out.push(ok(
                ID,
                format!("{} is called only for Pods its matchConditions select", webhook.name),
            ));
        } else {
            out.push(bad(
                ID,
                Level::Warn,
                format!(
                    "{} has no matchConditions: every Pod created in a selected namespace calls entourage, not only \
                     those with an entourage.dev/ annotation",
                    webhook.name
                ),
                "add the has-entourage-annotation matchCondition of manifests/base/webhook.yaml (Kubernetes 1.30+)",
            ));
        }
    }
}

pub(super) fn failure_policy(ours: &[&MutatingWebhook], out: &mut Vec<Check>) {
    const ID: &str = "failure-policy";
    let before = out.len();
    let mut summary = Vec::new();
    for webhook in ours {
        // Unset is Fail in admissionregistration/v1.
        let policy = webhook.failure_policy.as_deref().unwrap_or("Fail");
        summary.push(format!("{} {policy}", webhook.name));
        match (handles_pods(webhook), policy) {
            (true, "Fail") if !has_conditions(webhook) => out.push(bad(
                ID,
                Level::Fail,
                format!(
                    "{} has failurePolicy Fail and no matchConditions: while entourage is down no Pod can be created \
                     in any namespace it selects",
                    webhook.name
                ),
                "add the has-entourage-annotation matchCondition, so that only Pods that ask for entourage wait for it",
            )),
            (true, "Ignore") => out.push(bad(
                ID,
                Level::Warn,
                format!(
                    "{} has failurePolicy Ignore: while entourage is down, Pods that ask for sidecars start without them",
                    webhook.name
                ),
                "set failurePolicy: Fail (with matchConditions, only annotated Pods wait for entourage)",
            )),
            (false, "Fail") => out.push(bad(
                ID,
                Level::Warn,
                format!(
                    "{} has failurePolicy Fail: while entourage is down no Job or CronJob can be created, for \
                     defaults that are optional",
                    webhook.name
                ),
                "set failurePolicy: Ignore",
            )),
            _ => {}
        }
    }
    if out.len() == before {
        out.push(ok(ID, summary.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])
    }

    #[test]
    fn selectors_follow_the_api_semantics() {
        let not_in = |values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        };
        let manifests = not_in(&["kube-system", "entourage-system"]);
        assert!(!selects(Some(&manifests), &labels("kube-system")));
        assert!(selects(Some(&manifests), &labels("default")));
        assert!(selects(None, &labels("kube-system")));
        assert!(selects(Some(&LabelSelector::default()), &labels("kube-system")));
        let opt_in = LabelSelector {
            match_labels: Some(BTreeMap::from([("entourage".to_string(), "enabled".to_string())])),
            match_expressions: None,
        };
        assert!(!selects(Some(&opt_in), &labels("kube-system")));
    }
}
