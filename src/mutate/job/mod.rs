//! Jobs and CronJobs: the cluster's safe defaults, applied at creation.
//!
//! # The rule
//! A default is applied to a field only when the author left it unset. The apiserver fills API defaults in
//! *before* webhooks see the object (a Job without `backoffLimit` arrives with 6; a CronJob without
//! `concurrencyPolicy` arrives with `Allow`), so a field counts as unset when it is absent **or equals its API
//! default**, unless the request proves the author wrote it: `kubectl.kubernetes.io/last-applied-configuration`
//! contains it, or `entourage.dev/keep` names it. `entourage.dev/defaults: "off"` opts the object out.
//! A CronJob's `jobTemplate.spec` is not defaulted by the apiserver, so there only absence counts as unset.
//! Every default applied is listed in a warning and in the `entourage.dev/defaulted` annotation. The values we
//! write are not API defaults, so a second review sees them as explicit and adds nothing.
//!
//! # Why only CREATE
//! The dispatch in [`crate::mutate`] hands only CREATE here. On UPDATE the author's manifest is the truth:
//! re-defaulting would fight every `kubectl apply`, and most of a Job's spec is immutable after creation
//! anyway. A `dryRun` request is handled exactly like a real one (the webhook has no side effects).
//!
//! # Bad input
//! The apiserver's validation speaks for invalid objects; we never make them worse. A spec that is not an
//! object, or a CronJob without `jobTemplate.spec`, is allowed unchanged with a warning; a field of the wrong
//! type is left alone (with a warning) while the others are defaulted. Jobs that a CronJob controls are left
//! alone: their spec is the CronJob's `jobTemplate`, which was defaulted (or kept) when the CronJob was created.

mod evidence;

use serde_json::{Map, Value};

use self::evidence::{Evidence, Switch};
use super::{Outcome, Reason, Verdict};
use crate::{
    annotations::{DEFAULTED, KEEP},
    config::{Config, JobDefaults},
    patch::{key, PatchBuilder, Step},
};

/// Job fields `entourage.dev/keep` may name (for a CronJob, they name fields of `jobTemplate.spec`).
const JOB_FIELDS: &[&str] = &[
    "backoffLimit",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "podFailurePolicy",
    "podReplacementPolicy",
];

/// CronJob fields `entourage.dev/keep` may name, besides the Job fields.
const CRONJOB_FIELDS: &[&str] = &[
    "concurrencyPolicy",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "timeZone",
];

/// The value the apiserver writes into an unset field before we see the object (`pkg/apis/batch/v1/defaults.go`).
fn api_default(kind: SpecKind, field: &str) -> Option<Value> {
    match (kind, field) {
        (SpecKind::Job, "backoffLimit") => Some(Value::from(6)),
        (SpecKind::Job, "podReplacementPolicy") => Some(Value::from("TerminatingOrFailed")),
        (SpecKind::CronJob, "concurrencyPolicy") => Some(Value::from("Allow")),
        (SpecKind::CronJob, "successfulJobsHistoryLimit") => Some(Value::from(3)),
        (SpecKind::CronJob, "failedJobsHistoryLimit") => Some(Value::from(1)),
        // ttlSecondsAfterFinished, activeDeadlineSeconds, startingDeadlineSeconds and timeZone have none, and
        // nothing inside a CronJob's jobTemplate.spec is defaulted.
        _ => None,
    }
}

/// Which spec a field lives in, for its API default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecKind {
    /// A Job's `spec`.
    Job,
    /// A CronJob's `spec`.
    CronJob,
    /// A CronJob's `spec.jobTemplate.spec`.
    JobTemplate,
}

/// Applies the Job defaults.
pub fn mutate_job(job: &Value, namespace: &str, config: &Config) -> Outcome {
    let policy = config.jobs.resolve(namespace);
    if !policy.enabled {
        return Outcome::unchanged(Reason::NothingToDefault);
    }
    let mut run = match Run::start(job, "Job", JOB_FIELDS, &policy.origin) {
        Ok(run) => run,
        Err(outcome) => return outcome,
    };
    if controlled_by_cronjob(job) {
        return Outcome::unchanged(Reason::NothingToDefault);
    }
    let Some(spec) = object_at(job, &["spec"]) else {
        return run.malformed("spec is not an object");
    };
    run.job_spec(spec, &["spec"], SpecKind::Job, &policy.job);
    run.finish()
}

/// Applies the CronJob defaults, and the Job defaults inside `spec.jobTemplate.spec`.
pub fn mutate_cronjob(cronjob: &Value, namespace: &str, config: &Config) -> Outcome {
    let policy = config.jobs.resolve(namespace);
    if !policy.enabled {
        return Outcome::unchanged(Reason::NothingToDefault);
    }
    let fields: Vec<&str> = JOB_FIELDS.iter().chain(CRONJOB_FIELDS).copied().collect();
    let mut run = match Run::start(cronjob, "CronJob", &fields, &policy.origin) {
        Ok(run) => run,
        Err(outcome) => return outcome,
    };
    let Some(spec) = object_at(cronjob, &["spec"]) else {
        return run.malformed("spec is not an object");
    };
    const TEMPLATE: &[&str] = &["spec", "jobTemplate", "spec"];
    let Some(template) = object_at(cronjob, TEMPLATE) else {
        return run.malformed("spec.jobTemplate.spec is missing or not an object");
    };
    // The apiserver refuses a timeZone next to a TZ= or CRON_TZ= prefix in the schedule: the author chose.
    let zone_in_schedule = spec
        .get("schedule")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("TZ="));
    for (field, value) in policy.cron_job.fields() {
        if field == "timeZone" && zone_in_schedule {
            continue;
        }
        run.field(spec, &["spec"], SpecKind::CronJob, field, value);
    }
    run.job_spec(template, TEMPLATE, SpecKind::JobTemplate, &policy.job);
    run.finish()
}

/// Whether a CronJob controls the Job (the cronjob controller creates Jobs from its `jobTemplate`).
fn controlled_by_cronjob(job: &Value) -> bool {
    job.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            r.get("kind").and_then(Value::as_str) == Some("CronJob") && r.get("controller") == Some(&Value::Bool(true))
        })
}

/// The object at `path`, when every step is an object.
fn object_at<'v>(doc: &'v Value, path: &[&str]) -> Option<&'v Map<String, Value>> {
    path.iter()
        .try_fold(doc, |node, k| node.as_object()?.get(*k))?
        .as_object()
}

/// One defaulting pass over one object.
struct Run<'d> {
    patch: PatchBuilder<'d>,
    evidence: Evidence,
    origin: &'d str,
    defaulted: Vec<String>,
    warnings: Vec<String>,
}

impl<'d> Run<'d> {
    /// Reads the metadata; an object the author opted out (or whose metadata is not a map) ends here.
    fn start(object: &'d Value, kind: &str, fields: &[&str], origin: &'d str) -> Result<Self, Outcome> {
        let empty = Map::new();
        let annotations = match object.get("metadata").map(|m| (m, m.get("annotations"))) {
            None | Some((Value::Object(_), None | Some(Value::Null))) => &empty,
            Some((Value::Object(_), Some(Value::Object(a)))) => a,
            Some(_) => {
                return Err(Outcome::unchanged_with(
                    Reason::MalformedObject,
                    vec!["entourage: metadata.annotations is not a map; no defaults applied".into()],
                ))
            }
        };
        let evidence = Evidence::read(object.get("metadata"), annotations, kind, fields);
        match evidence.switch {
            Switch::On => {}
            Switch::Off | Switch::Unclear => {
                return Err(Outcome::unchanged_with(Reason::DefaultsOff, evidence.warnings))
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

    fn malformed(mut self, what: &str) -> Outcome {
        self.warnings.push(format!("entourage: {what}; no defaults applied"));
        Outcome::unchanged_with(Reason::MalformedObject, self.warnings)
    }

    /// The Job defaults, in a Job's `spec` or a CronJob's `jobTemplate.spec`.
    fn job_spec(&mut self, spec: &Map<String, Value>, at: &[&str], kind: SpecKind, policy: &JobDefaults) {
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
    fn field(&mut self, spec: &Map<String, Value>, at: &[&str], kind: SpecKind, field: &str, value: Value) {
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

    fn finish(mut self) -> Outcome {
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

#[cfg(test)]
mod tests;
