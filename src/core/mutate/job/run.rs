//! One defaulting pass over one Job or CronJob: field by field, the rule of the parent module, collected
//! into one patch, one warning per default and the `entourage.dev/defaulted` annotation.

use serde_json::{Map, Value};

use super::{
    api_default,
    evidence::{Evidence, Switch},
    SpecKind,
};
use crate::{
    core::annotations::{DEFAULTED, KEEP},
    core::config::JobDefaults,
    core::mutate::{Outcome, Reason, Verdict},
    core::patch::{key, PatchBuilder, Step},
};

/// One defaulting pass over one object.
pub(super) struct Run<'d> {
    patch: PatchBuilder<'d>,
    evidence: Evidence,
    origin: &'d str,
    defaulted: Vec<String>,
    warnings: Vec<String>,
}

impl<'d> Run<'d> {
    /// Reads the metadata; an object the author opted out (or whose metadata is not a map) ends here.
    pub(super) fn start(object: &'d Value, kind: &str, fields: &[&str], origin: &'d str) -> Result<Self, Box<Outcome>> {
        let empty = Map::new();
        let annotations = match object.get("metadata").map(|m| (m, m.get("annotations"))) {
            None | Some((Value::Object(_), None | Some(Value::Null))) => &empty,
            Some((Value::Object(_), Some(Value::Object(a)))) => a,
            Some(_) => {
                return Err(Box::new(Outcome::unchanged_with(
                    Reason::MalformedObject,
                    vec!["entourage: metadata or metadata.annotations is not a map; no defaults applied".into()],
                )))
            }
        };
        let evidence = Evidence::read(object.get("metadata"), annotations, kind, fields);
        match evidence.switch {
            Switch::On => {}
            Switch::Off | Switch::Unclear => {
                return Err(Box::new(Outcome::unchanged_with(
                    Reason::DefaultsOff,
                    evidence.warnings,
                )))
            }
        }
        Ok(Run {
            patch: PatchBuilder::new(object),
            warnings: evidence.warnings.clone(),
            evidence,
            origin,
            defaulted: Vec::new(),
        })
    }

    pub(super) fn malformed(mut self, what: &str) -> Outcome {
        self.warnings.push(format!("entourage: {what}; no defaults applied"));
        Outcome::unchanged_with(Reason::MalformedObject, self.warnings)
    }

    /// The Job defaults, in a Job's `spec` or a CronJob's `jobTemplate.spec`.
    pub(super) fn job_spec(&mut self, spec: &Map<String, Value>, at: &[&str], kind: SpecKind, policy: &JobDefaults) {
        // With backoffLimitPerIndex the author chose per-index retries; backoffLimit (then defaulted to
        // 2147483647) is not ours to lower.
        let per_index = spec.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null());
        for (field, value) in policy.fields() {
            if field == "backoffLimit" && per_index {
                continue;
            }
            self.field(spec, at, kind, field, value);
        }
        if let Some(pfp) = policy.pod_failure_policy_json() {
            self.pod_failure_policy(spec, at, kind, pfp, &policy.pod_failure_policy_containers());
        }
    }

    /// Whether the field at `at.field` is unset: absent, or equal to the API default the author did not write.
    fn unset(&self, current: Option<&Value>, at: &[&str], kind: SpecKind, field: &str) -> bool {
        match current {
            None | Some(Value::Null) => true,
            Some(v) => {
                let path: Vec<&str> = at.iter().copied().chain([field]).collect();
                api_default(kind, field).as_ref() == Some(v) && !self.evidence.maybe_written(&path)
            }
        }
    }

    /// One simple field: a number or a string.
    pub(super) fn field(&mut self, spec: &Map<String, Value>, at: &[&str], kind: SpecKind, field: &str, value: Value) {
        let current = spec.get(field);
        let dotted = dotted(at, field);
        if self.evidence.kept(field) || current == Some(&value) {
            return;
        }
        if let Some(v) = current.filter(|v| !v.is_null()) {
            let same_type = (v.is_i64() && value.is_i64()) || (v.is_string() && value.is_string());
            if !same_type {
                self.warnings
                    .push(format!("entourage: {dotted} has the wrong type ({v}); left alone"));
                return;
            }
        }
        if !self.unset(current, at, kind, field) {
            return;
        }
        let keep_hint = match current.filter(|v| !v.is_null()) {
            Some(old) => format!("to keep {}", show(old)),
            None => "to leave it unset".into(),
        };
        self.warnings.push(format!(
            "entourage: {dotted} set to {} by {}; annotate {KEEP}={field} {keep_hint}",
            show(&value),
            self.origin
        ));
        self.set(at, field, value);
    }

    /// `podFailurePolicy`, with the `podReplacementPolicy: Failed` the API requires next to it.
    fn pod_failure_policy(
        &mut self,
        spec: &Map<String, Value>,
        at: &[&str],
        kind: SpecKind,
        policy: Value,
        containers: &[&str],
    ) {
        const PFP: &str = "podFailurePolicy";
        const PRP: &str = "podReplacementPolicy";
        if self.evidence.kept(PFP) || spec.get(PFP).is_some_and(|v| !v.is_null()) {
            return;
        }
        // The API accepts a podFailurePolicy only with restartPolicy Never, and only when every container its
        // rules name exists: otherwise this Job is simply not one the policy fits.
        let pod = spec.get("template").and_then(|t| t.get("spec"));
        if pod.and_then(|p| p.get("restartPolicy")).and_then(Value::as_str) != Some("Never") {
            return;
        }
        let has_container = |name: &str| {
            ["containers", "initContainers"].iter().any(|list| {
                pod.and_then(|p| p.get(*list))
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(name)))
            })
        };
        if !containers.iter().all(|c| has_container(c)) {
            return;
        }
        let replacement = spec.get(PRP).filter(|v| !v.is_null());
        let needs_failed = match replacement.and_then(Value::as_str) {
            Some("Failed") => false,
            _ if replacement.is_none() => true,
            Some(_) if !self.evidence.kept(PRP) && self.unset(replacement, at, kind, PRP) => true,
            _ => {
                self.warnings.push(format!(
                    "entourage: {} not set: the API requires {} Failed with it, and this object sets {}",
                    dotted(at, PFP),
                    dotted(at, PRP),
                    replacement.map(show).unwrap_or_default()
                ));
                return;
            }
        };
        let also = if needs_failed {
            format!(" (with {} Failed, which the API requires)", dotted(at, PRP))
        } else {
            String::new()
        };
        self.warnings.push(format!(
            "entourage: {} set by {}{also}; annotate {KEEP}={PFP} to leave it unset",
            dotted(at, PFP),
            self.origin
        ));
        self.set(at, PFP, policy);
        if needs_failed {
            self.set(at, PRP, Value::from("Failed"));
        }
    }

    fn set(&mut self, at: &[&str], field: &str, value: Value) {
        let path: Vec<Step<'_>> = at.iter().map(|k| key(k)).chain([key(field)]).collect();
        self.patch.set(&path, value);
        self.defaulted.push(dotted(at, field));
    }

    pub(super) fn finish(mut self) -> Outcome {
        if self.defaulted.is_empty() {
            return Outcome::unchanged_with(Reason::NothingToDefault, self.warnings);
        }
        self.patch
            .set_annotation(&[key("metadata")], DEFAULTED, &self.defaulted.join(","));
        Outcome {
            verdict: Verdict::Allow,
            reason: Reason::Defaulted,
            patch: self.patch.finish(),
            warnings: self.warnings,
            injected: Vec::new(),
            generate_name: None,
        }
    }
}

/// `spec.jobTemplate.spec.backoffLimit` from the path and the field.
fn dotted(at: &[&str], field: &str) -> String {
    let mut s = at.join(".");
    s.push('.');
    s.push_str(field);
    s
}

/// A value as the user wrote it: strings without quotes.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
