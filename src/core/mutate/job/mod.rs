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
//! The dispatch in [`crate::core::mutate`] hands only CREATE here. On UPDATE the author's manifest is the truth:
//! re-defaulting would fight every `kubectl apply`, and most of a Job's spec is immutable after creation
//! anyway. A `dryRun` request is handled exactly like a real one (the webhook has no side effects).
//!
//! # Bad input
//! The apiserver's validation speaks for invalid objects; we never make them worse. A spec that is not an
//! object, or a CronJob without `jobTemplate.spec`, is allowed unchanged with a warning; a field of the wrong
//! type is left alone (with a warning) while the others are defaulted. Jobs that a CronJob controls are left
//! alone: their spec is the CronJob's `jobTemplate`, which was defaulted (or kept) when the CronJob was created.

mod evidence;
mod run;

use serde_json::{Map, Value};

use self::run::Run;
use super::{Outcome, Reason};
use crate::core::{config::Config, reads::Reads};

/// Every part of a Job or CronJob the defaults read (the webhook parses only these, see
/// `crate::admission::pruned`). All of it [`Reads::Within`] and [`Reads::All`]: a part of the wrong type is the
/// defaults' to leave alone with a warning, never a refused object. The annotations and `managedFields` are kept
/// whole ([`evidence`]), and of the Pod template what a pod failure policy needs. Whoever makes the defaults read
/// another field adds it here, or the webhook will not see it (`pruned_and_full_jobs_get_the_same_answer` in
/// `tests/core_properties.rs`).
pub const READS: Reads = Reads::Within(&[
    ("kind", Reads::All),
    (
        "metadata",
        Reads::Within(&[
            ("generateName", Reads::All),
            ("annotations", Reads::All),
            ("managedFields", Reads::All),
            ("ownerReferences", Reads::All),
        ]),
    ),
    (
        "spec",
        Reads::Within(&[
            JOB_SPEC_READS[0],
            JOB_SPEC_READS[1],
            JOB_SPEC_READS[2],
            JOB_SPEC_READS[3],
            JOB_SPEC_READS[4],
            JOB_SPEC_READS[5],
            JOB_SPEC_READS[6],
            // A CronJob's.
            ("schedule", Reads::All),
            ("concurrencyPolicy", Reads::All),
            ("startingDeadlineSeconds", Reads::All),
            ("successfulJobsHistoryLimit", Reads::All),
            ("failedJobsHistoryLimit", Reads::All),
            ("timeZone", Reads::All),
            (
                "jobTemplate",
                Reads::Within(&[("spec", Reads::Within(&JOB_SPEC_READS))]),
            ),
        ]),
    ),
]);

/// What is read of a Job's `spec` (and of a CronJob's `jobTemplate.spec`): [`JOB_FIELDS`], `backoffLimitPerIndex`,
/// and of the Pod template what `podFailurePolicy` depends on.
const JOB_SPEC_READS: [(&str, Reads); 7] = [
    ("backoffLimit", Reads::All),
    ("ttlSecondsAfterFinished", Reads::All),
    ("activeDeadlineSeconds", Reads::All),
    ("podFailurePolicy", Reads::All),
    ("podReplacementPolicy", Reads::All),
    ("backoffLimitPerIndex", Reads::All),
    (
        "template",
        Reads::Within(&[(
            "spec",
            Reads::Within(&[
                ("restartPolicy", Reads::All),
                ("containers", Reads::All),
                ("initContainers", Reads::All),
            ]),
        )]),
    ),
];

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
        Err(outcome) => return *outcome,
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
        Err(outcome) => return *outcome,
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

#[cfg(test)]
mod tests;
