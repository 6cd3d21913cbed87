//! The pure core: an admission request and the config in; a verdict, a patch and warnings out.
//!
//! No I/O, no clock, no environment: the webhook, `entourage inject` and the tests all call [`mutate`].
//! Pods go to [`pod`], Jobs and CronJobs to [`job`]; every other kind and operation is allowed unchanged.

mod ambassador;
pub(crate) mod injected;
pub mod job;
mod logs;
mod plan;
pub mod pod;
pub mod profile;
pub mod target;
mod windows;

use kube::core::{admission::Operation, gvk::GroupVersionKind};
use serde_json::Value;

pub use ambassador::reads_env;
pub use profile::load_config;

use crate::core::{config::Config, patch::Patch, reads::Reads, request::AdmissionRequest};

/// Allow or deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admit the object, with the patch (possibly empty).
    Allow,
    /// Refuse the object; the message names the annotation, the value and the rule.
    Deny(String),
}

/// Why the core decided what it did: a log field and a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Containers were injected.
    Injected,
    /// Job or CronJob defaults were applied.
    Defaulted,
    /// The Pod carries `entourage.dev/status`: it was injected before (a reinvocation).
    AlreadyInjected,
    /// `entourage.dev/inject: "false"`.
    OptedOut,
    /// No entourage annotation asks for anything.
    NotRequested,
    /// `entourage.dev/defaults: "off"`.
    DefaultsOff,
    /// Every default was already in place or kept.
    NothingToDefault,
    /// An annotation value breaks a rule.
    InvalidAnnotations,
    /// The injected containers do not fit the namespace's LimitRanges (`serve --limit-ranges`).
    LimitRange,
    /// The Pod asks for an entourage but runs on an OS entourage's images do not support (Windows).
    UnsupportedOs,
    /// The object is not of a shape entourage can patch (the apiserver's validation will speak for it).
    MalformedObject,
    /// A kind entourage does not handle.
    KindNotHandled,
    /// An operation entourage does not handle (only CREATE is mutated).
    OperationNotHandled,
    /// A subresource request (`status`, `exec`…).
    SubresourceNotHandled,
    /// The request carries no object.
    NoObject,
    /// `object.kind` disagrees with `request.kind`.
    ObjectKindMismatch,
}

impl Reason {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Injected => "injected",
            Reason::LimitRange => "limit-range",
            Reason::Defaulted => "defaulted",
            Reason::AlreadyInjected => "already-injected",
            Reason::OptedOut => "opted-out",
            Reason::NotRequested => "not-requested",
            Reason::DefaultsOff => "defaults-off",
            Reason::NothingToDefault => "nothing-to-default",
            Reason::InvalidAnnotations => "invalid-annotations",
            Reason::UnsupportedOs => "unsupported-os",
            Reason::MalformedObject => "malformed-object",
            Reason::KindNotHandled => "kind-not-handled",
            Reason::OperationNotHandled => "operation-not-handled",
            Reason::SubresourceNotHandled => "subresource-not-handled",
            Reason::NoObject => "no-object",
            Reason::ObjectKindMismatch => "object-kind-mismatch",
        }
    }
}

/// The patterns entourage injects, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// A log-streaming sidecar.
    Sidecar,
    /// A JSON log adapter.
    Adapter,
    /// A proxy ambassador.
    Ambassador,
}

impl Pattern {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Sidecar => "sidecar",
            Pattern::Adapter => "adapter",
            Pattern::Ambassador => "ambassador",
        }
    }
}

/// What the core decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// RFC 6902 operations against the request's object; empty when nothing changes.
    pub patch: Patch,
    /// Messages for the kubectl user.
    pub warnings: Vec<String>,
    /// Containers injected, by pattern.
    pub injected: Vec<Pattern>,
    /// The object's `metadata.generateName`, for the log line when the request has no name; set by [`mutate`].
    pub generate_name: Option<String>,
}

impl Outcome {
    /// Allowed, unchanged.
    pub fn unchanged(reason: Reason) -> Self {
        Outcome {
            verdict: Verdict::Allow,
            reason,
            patch: Patch::default(),
            warnings: Vec::new(),
            injected: Vec::new(),
            generate_name: None,
        }
    }

    /// Allowed unchanged, with warnings.
    pub fn unchanged_with(reason: Reason, warnings: Vec<String>) -> Self {
        Outcome {
            warnings,
            ..Outcome::unchanged(reason)
        }
    }

    /// Denied.
    pub fn deny(message: String, warnings: Vec<String>) -> Self {
        Outcome {
            verdict: Verdict::Deny(message),
            warnings,
            ..Outcome::unchanged(Reason::InvalidAnnotations)
        }
    }
}

/// What the core reads of a request's object: a Pod's [`pod::READS`], a Job or CronJob whole, and nothing for
/// a subresource, an operation other than CREATE or another kind (those are allowed unchanged whatever the
/// object holds). `admission::decode` parses the object only this far.
pub fn object_reads(
    kind: &GroupVersionKind,
    operation: &Operation,
    sub_resource: Option<&str>,
) -> Option<&'static Reads> {
    handled(kind, operation, sub_resource).ok()
}

/// What the core reads of a request it handles, or why it leaves the request alone: the one rule both the
/// decoder ([`object_reads`]) and [`mutate`] follow.
fn handled(
    kind: &GroupVersionKind,
    operation: &Operation,
    sub_resource: Option<&str>,
) -> Result<&'static Reads, Reason> {
    if sub_resource.is_some_and(|s| !s.is_empty()) {
        return Err(Reason::SubresourceNotHandled);
    }
    let reads = match (kind.group.as_str(), kind.kind.as_str()) {
        ("", "Pod") => &pod::READS,
        ("batch", "Job" | "CronJob") => &job::READS,
        _ => return Err(Reason::KindNotHandled),
    };
    // Pod specs are immutable after creation, and Job/CronJob defaults are a creation-time policy.
    if *operation != Operation::Create {
        return Err(Reason::OperationNotHandled);
    }
    Ok(reads)
}

/// Decides what to do with one admission request.
pub fn mutate(request: &AdmissionRequest, config: &Config) -> Outcome {
    if let Err(reason) = handled(&request.kind, &request.operation, request.sub_resource.as_deref()) {
        return Outcome::unchanged(reason);
    }
    let kind = (request.kind.group.as_str(), request.kind.kind.as_str());
    // Parsed by the decoder as far as `object_reads` says: only where the core reads it.
    let Some(object) = request.object.as_ref() else {
        return Outcome::unchanged(Reason::NoObject);
    };
    if let Some(object_kind) = object.get("kind").and_then(Value::as_str) {
        if object_kind != kind.1 {
            return Outcome::unchanged(Reason::ObjectKindMismatch);
        }
    }
    if !object.is_object() {
        return Outcome::unchanged(Reason::MalformedObject);
    }
    let namespace = request.namespace.as_deref().unwrap_or("");
    let mut outcome = match kind {
        ("", "Pod") => pod::mutate_pod_in(object, Some(namespace), config),
        ("batch", "Job") => job::mutate_job(object, namespace, config),
        _ => job::mutate_cronjob(object, namespace, config),
    };
    if request.name.is_empty() {
        let generate_name = object.get("metadata").and_then(|m| m.get("generateName"));
        outcome.generate_name = generate_name.and_then(Value::as_str).map(str::to_string);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(kind: (&str, &str), operation: &str, object: Value) -> AdmissionRequest {
        let request = json!({
            "uid": "u", "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
            "operation": operation, "namespace": "default", "object": object,
        });
        serde_json::from_str(&request.to_string()).unwrap()
    }

    #[test]
    fn other_kinds_are_allowed_unchanged() {
        let out = mutate(
            &request(("apps", "Deployment"), "CREATE", json!({})),
            &Config::default(),
        );
        assert_eq!(
            (out.verdict, out.reason, out.patch.0.len()),
            (Verdict::Allow, Reason::KindNotHandled, 0)
        );
    }

    #[test]
    fn delete_and_connect_are_allowed_unchanged() {
        for op in ["DELETE", "CONNECT", "UPDATE"] {
            let out = mutate(&request(("", "Pod"), op, json!({"kind": "Pod"})), &Config::default());
            assert_eq!(out.reason, Reason::OperationNotHandled, "{op}");
        }
    }

    #[test]
    fn object_of_the_wrong_kind_is_not_touched() {
        let job = json!({"kind": "Job", "metadata": {"annotations": {"entourage.dev/sidecar-logs": "/var/log/a.log"}}});
        let out = mutate(&request(("", "Pod"), "CREATE", job), &Config::default());
        assert_eq!(out.reason, Reason::ObjectKindMismatch);
        assert!(out.patch.0.is_empty());
    }

    #[test]
    fn admin_ports_that_would_run_past_65535_deny_instead_of_overflowing() {
        let mut config = Config::default();
        config.ambassador.admin_port = 65534;
        let pod = json!({
            "kind": "Pod",
            "metadata": {"annotations": {"entourage.dev/ambassador-upstreams": "a=http://a,b=http://b,c=http://c"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
        });
        let out = mutate(&request(("", "Pod"), "CREATE", pod), &config);
        match out.verdict {
            Verdict::Deny(message) => assert!(message.contains("admin port 65536"), "{message}"),
            Verdict::Allow => panic!("allowed with admin ports past 65535"),
        }
    }

    #[test]
    fn the_decoder_skips_the_object_exactly_when_the_core_does_not_read_it() {
        let kinds = [
            ("", "Pod"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("apps", "Deployment"),
            ("", "Job"),
        ];
        for kind in kinds {
            for op in ["CREATE", "UPDATE", "DELETE", "CONNECT"] {
                for sub in [None, Some(""), Some("status")] {
                    let mut r = request(kind, op, json!({"kind": kind.1}));
                    r.sub_resource = sub.map(str::to_string);
                    let reason = mutate(&r, &Config::default()).reason;
                    let unread = matches!(
                        reason,
                        Reason::SubresourceNotHandled | Reason::KindNotHandled | Reason::OperationNotHandled
                    );
                    let reads = object_reads(&r.kind, &r.operation, sub);
                    assert_eq!(reads.is_none(), unread, "{kind:?} {op} {sub:?}: {reason:?}");
                }
            }
        }
    }

    #[test]
    fn a_request_without_object_is_allowed_unchanged() {
        let mut r = request(("", "Pod"), "CREATE", json!(null));
        r.object = None;
        assert_eq!(mutate(&r, &Config::default()).reason, Reason::NoObject);
    }
}
