//! The same core, on files: `entourage inject` (manifests in, injected manifests out, as `istioctl kube-inject`
//! does) and `entourage review` (an AdmissionReview in, the webhook's answer and the patched object out).
//!
//! `inject` reads multi-document YAML and handles Pods and the Pod templates of Deployments, StatefulSets,
//! DaemonSets, ReplicaSets, Jobs (`spec.template`) and CronJobs (`spec.jobTemplate.spec.template`); every other
//! document passes through. Jobs and CronJobs also get the Job defaults the `jobs.entourage.dev` webhook would
//! give them. Each patch is applied strictly (RFC 6902, as the apiserver does), so what `inject` prints is what
//! the cluster would store.

pub mod cli;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    admission,
    core::config::Config,
    core::mutate::{self, job, pod, Outcome, Verdict},
};

/// Why a file could not be processed. Every message names the document and the field.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A document is not YAML.
    #[error("document {index}: not valid YAML: {message}")]
    Yaml {
        /// 1-based document index.
        index: usize,
        /// The parser's message, with its line and column.
        message: String,
    },
    /// A document was refused or its patch does not apply.
    #[error("document {index} ({kind} {name}): {field}: {message}")]
    Object {
        /// 1-based document index.
        index: usize,
        /// The document's kind.
        kind: String,
        /// The document's name.
        name: String,
        /// The field concerned (`spec.template`, `metadata.annotations`…).
        field: String,
        /// What went wrong.
        message: String,
    },
    /// The input of `review` is not an AdmissionReview.
    #[error("not an AdmissionReview: {0}")]
    Review(#[from] admission::DecodeError),
}

/// What `inject` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The documents, in order, patched where asked.
    pub documents: Vec<Value>,
    /// Warnings for the user, each prefixed by its document.
    pub warnings: Vec<String>,
}

impl Injected {
    /// The documents as multi-document YAML.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for (i, doc) in self.documents.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&serde_yaml_ng::to_string(doc).expect("JSON values always serialise to YAML"));
        }
        out
    }
}

/// Where a kind keeps its Pod template, and whether its Pods belong to a Job.
fn template_of(api_version: &str, kind: &str) -> Option<(&'static str, bool)> {
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => Some(("/spec/template", false)),
        ("batch", "Job") => Some(("/spec/template", true)),
        ("batch", "CronJob") => Some(("/spec/jobTemplate/spec/template", true)),
        _ => None,
    }
}

/// `/spec/template` → `spec.template`, as users write fields.
fn field(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// Parses multi-document YAML into JSON values; empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, OfflineError> {
    let mut docs = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| OfflineError::Yaml {
            index: i + 1,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Runs the core on every document of `text`.
pub fn inject(text: &str, config: &Config) -> Result<Injected, OfflineError> {
    inject_documents(parse_documents(text)?, config)
}

/// Runs the core on every document.
pub fn inject_documents(documents: Vec<Value>, config: &Config) -> Result<Injected, OfflineError> {
    let mut warnings = Vec::new();
    let mut out = Vec::with_capacity(documents.len());
    for (i, mut doc) in documents.into_iter().enumerate() {
        let index = i + 1;
        let text = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        let name = match text("/metadata/name") {
            n if n.is_empty() => text("/metadata/generateName"),
            n => n,
        };
        let namespace = match text("/metadata/namespace") {
            n if n.is_empty() => "default".to_string(),
            n => n,
        };
        let err = |field: &str, message: String| OfflineError::Object {
            index,
            kind: kind.clone(),
            name: name.clone(),
            field: field.to_string(),
            message,
        };
        let mut step = |target: &mut Value, field_name: &str, outcome: Outcome| -> Result<(), OfflineError> {
            warnings.extend(
                outcome
                    .warnings
                    .iter()
                    .map(|w| format!("document {index} ({kind} {name}): {w}")),
            );
            if let Verdict::Deny(message) = outcome.verdict {
                return Err(err(field_name, format!("denied: {message}")));
            }
            json_patch::patch(target, &outcome.patch.to_json_patch())
                .map_err(|e| err(field_name, format!("the patch does not apply: {e}")))
        };
        if api_version == "v1" && kind == "Pod" {
            let outcome = pod::mutate_pod_in(&doc, Some(&namespace), config);
            step(&mut doc, "metadata.annotations", outcome)?;
        } else if let Some((pointer, job_owned)) = template_of(&api_version, &kind) {
            // Job and CronJob defaults first, as the jobs webhook sees the object before its Pods exist.
            let defaults = match kind.as_str() {
                "Job" => Some(job::mutate_job(&doc, &namespace, config)),
                "CronJob" => Some(job::mutate_cronjob(&doc, &namespace, config)),
                _ => None,
            };
            if let Some(outcome) = defaults {
                step(&mut doc, "spec", outcome)?;
            }
            let template = doc
                .pointer_mut(pointer)
                .filter(|t| t.is_object())
                .ok_or_else(|| err(&field(pointer), "missing or not an object".into()))?;
            let outcome = pod::mutate_pod_template(template, &namespace, config, job_owned);
            step(template, &field(pointer), outcome)?;
        }
        out.push(doc);
    }
    Ok(Injected {
        documents: out,
        warnings,
    })
}

/// Answers an AdmissionReview (JSON or YAML) exactly as the webhook would, and applies the patch. Returns
/// `{"review": <the answer>, "patch": <the decoded operations>, "object": <the patched object>}`; `patch` and
/// `object` are absent when the object is denied.
pub fn review(text: &str, config: &Config) -> Result<Value, OfflineError> {
    // YAML is a superset of JSON: one parser takes both.
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| OfflineError::Yaml {
        index: 1,
        message: e.to_string(),
    })?;
    let body = serde_json::to_vec(&value).expect("JSON values always serialise");
    // The webhook's decode, for the webhook's answer; the whole object, to apply the patch to.
    let review = admission::decode(&body, config)?;
    let request = &review.request;
    let mut outcome = mutate::mutate(request, config);
    let (_, out) = admission::answer(&review, &mut outcome);
    let answer = serde_json::to_value(out).expect("answers serialise");
    let mut result = json!({ "review": answer, "reason": outcome.reason.as_str() });
    if outcome.verdict == Verdict::Allow {
        let whole = admission::decode_whole(&body)?;
        let mut object = whole.request.object.unwrap_or(Value::Null);
        json_patch::patch(&mut object, &outcome.patch.to_json_patch()).map_err(|e| OfflineError::Object {
            index: 1,
            kind: request.kind.kind.clone(),
            name: request.name.clone(),
            field: "request.object".into(),
            message: format!("the patch does not apply: {e}"),
        })?;
        result["patch"] = serde_json::to_value(&outcome.patch).expect("patches serialise");
        result["object"] = object;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANNOTATED: &str = "entourage.dev/sidecar-logs";

    fn deployment(annotated: bool) -> Value {
        let mut annotations = json!({});
        if annotated {
            annotations[ANNOTATED] = json!("/var/log/app/app.log");
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
        })
    }

    #[test]
    fn a_workloads_namespace_gives_its_template_the_namespace_default_profile() {
        let config = crate::core::mutate::load_config(
            "profiles:\n  web:\n    sidecar-resources: memory=128Mi\nnamespaceProfiles:\n  shop: web\n",
            "test",
        )
        .unwrap();
        let memory = |namespace: &str| {
            let mut doc = deployment(true);
            doc["metadata"]["namespace"] = json!(namespace);
            let out = inject_documents(vec![doc], &config).unwrap();
            out.documents[0]["spec"]["template"]["spec"]["initContainers"][0]["resources"]["limits"]["memory"].clone()
        };
        assert_eq!(memory("shop"), json!("128Mi"));
        assert_eq!(memory("elsewhere"), json!("64Mi"));
    }

    #[test]
    fn deployment_template_gets_the_sidecar_and_the_status_annotation() {
        let out = inject_documents(vec![deployment(true)], &Config::default()).unwrap();
        let template = &out.documents[0]["spec"]["template"];
        assert!(template["metadata"]["annotations"]["entourage.dev/status"].is_string());
        assert!(
            template["spec"]["containers"].as_array().unwrap().len() == 2
                || template["spec"]["initContainers"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
        );
    }

    #[test]
    fn other_kinds_and_unannotated_templates_pass_through() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
        let docs = vec![cm.clone(), deployment(false)];
        let out = inject_documents(docs.clone(), &Config::default()).unwrap();
        assert_eq!(out.documents, docs);
    }

    #[test]
    fn errors_name_the_document_kind_name_and_field() {
        let mut d = deployment(true);
        d["spec"].as_object_mut().unwrap().remove("template");
        let e = inject_documents(vec![json!({"kind": "ConfigMap"}), d], &Config::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "document 2 (Deployment web): spec.template: missing or not an object"
        );
    }

    #[test]
    fn yaml_errors_name_the_document() {
        let e = inject("a: 1\n---\nb: [\n", &Config::default()).unwrap_err().to_string();
        assert!(e.starts_with("document 2: not valid YAML"), "{e}");
    }

    #[test]
    fn empty_documents_are_dropped() {
        assert_eq!(parse_documents("---\n---\na: 1\n---\n").unwrap(), vec![json!({"a": 1})]);
    }
}
