//! Unit tests of the Job and CronJob defaults, mostly for inputs the schema-validating golden harness cannot
//! hold (objects the apiserver would refuse on its own).

use serde_json::{json, Value};

use super::*;
use crate::{core::annotations::DEFAULTED, core::mutate::Verdict};

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, "test").unwrap()
}

fn apply(object: &Value, outcome: &Outcome) -> Value {
    let mut out = object.clone();
    json_patch::patch(&mut out, &outcome.patch.to_json_patch()).expect("patch applies");
    out
}

fn job(spec: Value, annotations: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "annotations": annotations}, "spec": spec})
}

fn cronjob(spec: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": spec})
}

fn never_template() -> Value {
    json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}})
}

#[test]
fn api_default_backoff_limit_is_replaced_and_a_second_review_adds_nothing() {
    let j = job(json!({"backoffLimit": 6, "template": never_template()}), json!({}));
    let out = mutate_job(&j, "default", &Config::default());
    assert_eq!(out.reason, Reason::Defaulted);
    let patched = apply(&j, &out);
    assert_eq!(patched["spec"]["backoffLimit"], 3);
    assert_eq!(patched["metadata"]["annotations"][DEFAULTED], "spec.backoffLimit");
    let again = mutate_job(&patched, "default", &Config::default());
    assert_eq!((again.reason, again.patch.0.len()), (Reason::NothingToDefault, 0));
}

#[test]
fn wrong_type_field_is_left_alone_with_a_warning_and_others_are_defaulted() {
    let c = config("jobs:\n  job:\n    ttlSecondsAfterFinished: 600\n");
    let j = job(json!({"backoffLimit": "six", "template": never_template()}), json!({}));
    let out = mutate_job(&j, "default", &c);
    let patched = apply(&j, &out);
    assert_eq!(patched["spec"]["backoffLimit"], "six");
    assert_eq!(patched["spec"]["ttlSecondsAfterFinished"], 600);
    assert!(
        out.warnings[0].contains("spec.backoffLimit has the wrong type"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn spec_that_is_not_an_object_is_allowed_unchanged_with_a_warning() {
    for spec in [json!("backoffLimit: 6"), json!([1]), Value::Null] {
        let out = mutate_job(&job(spec.clone(), json!({})), "default", &Config::default());
        assert_eq!(
            (out.verdict.clone(), out.reason),
            (Verdict::Allow, Reason::MalformedObject),
            "{spec}"
        );
        assert!(out.patch.0.is_empty());
        assert!(out.warnings[0].contains("spec is not an object"));
    }
}

#[test]
fn annotations_that_are_not_a_map_leave_the_object_unchanged() {
    let j = json!({"kind": "Job", "metadata": {"annotations": ["x"]}, "spec": {"backoffLimit": 6}});
    let out = mutate_job(&j, "default", &Config::default());
    assert_eq!((out.reason, out.patch.0.len()), (Reason::MalformedObject, 0));
    let no_meta = json!({"kind": "Job", "metadata": "x", "spec": {}});
    assert_eq!(
        mutate_job(&no_meta, "default", &Config::default()).reason,
        Reason::MalformedObject
    );
}

#[test]
fn cronjob_without_job_template_is_allowed_unchanged_with_a_warning() {
    for spec in [
        json!({"schedule": "* * * * *", "concurrencyPolicy": "Allow"}),
        json!({"schedule": "* * * * *", "jobTemplate": "oops"}),
        json!({"schedule": "* * * * *", "jobTemplate": {"spec": 3}}),
    ] {
        let out = mutate_cronjob(&cronjob(spec), "default", &Config::default());
        assert_eq!((out.reason, out.patch.0.len()), (Reason::MalformedObject, 0));
        assert!(out.warnings[0].contains("jobTemplate"), "{:?}", out.warnings);
    }
}

#[test]
fn garbled_last_applied_defaults_only_absent_fields() {
    let c = config("jobs:\n  job:\n    activeDeadlineSeconds: 3600\n");
    let j = job(
        json!({"backoffLimit": 6, "template": never_template()}),
        json!({evidence::LAST_APPLIED: "{\"spec\": {\"backoffLimit\": 6"}),
    );
    let out = mutate_job(&j, "default", &c);
    let patched = apply(&j, &out);
    assert_eq!(patched["spec"]["backoffLimit"], 6, "6 may be the author's");
    assert_eq!(patched["spec"]["activeDeadlineSeconds"], 3600);
    assert!(out.warnings.iter().any(|w| w.contains("not the JSON of an object")));
}

#[test]
fn jobs_controlled_by_a_cronjob_are_left_alone() {
    let mut j = job(json!({"backoffLimit": 6, "template": never_template()}), json!({}));
    j["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "u", "controller": true}]);
    let out = mutate_job(&j, "default", &Config::default());
    assert_eq!((out.reason, out.patch.0.len()), (Reason::NothingToDefault, 0));
}

#[test]
fn backoff_limit_is_not_touched_with_backoff_limit_per_index() {
    let j = job(
        json!({"backoffLimit": 2147483647, "backoffLimitPerIndex": 1, "completionMode": "Indexed", "template": never_template()}),
        json!({}),
    );
    assert_eq!(
        mutate_job(&j, "default", &Config::default()).reason,
        Reason::NothingToDefault
    );
}

#[test]
fn defaults_value_other_than_on_or_off_applies_nothing_and_warns() {
    let j = job(json!({"backoffLimit": 6}), json!({"entourage.dev/defaults": "no"}));
    let out = mutate_job(&j, "default", &Config::default());
    assert_eq!((out.reason, out.patch.0.len()), (Reason::DefaultsOff, 0));
    assert_eq!(out.warnings.len(), 1);
}

#[test]
fn config_switched_off_applies_nothing() {
    let j = job(json!({"backoffLimit": 6}), json!({}));
    let out = mutate_job(&j, "default", &config("jobs:\n  enabled: false\n"));
    assert_eq!((out.reason, out.patch.0.len()), (Reason::NothingToDefault, 0));
}

#[test]
fn time_zone_is_not_set_when_the_schedule_names_one() {
    let c =
        config("jobs:\n  cronJob:\n    timeZone: UTC\n    concurrencyPolicy: null\n  job:\n    backoffLimit: null\n");
    let cj = cronjob(
        json!({"schedule": "CRON_TZ=Europe/Paris 0 1 * * *", "jobTemplate": {"spec": {"template": never_template()}}}),
    );
    assert_eq!(mutate_cronjob(&cj, "default", &c).reason, Reason::NothingToDefault);
}

#[test]
fn pod_failure_policy_needs_restart_policy_never_and_its_containers() {
    let c = config(
        "jobs:\n  job:\n    backoffLimit: null\n    podFailurePolicy:\n      rules:\n        - action: FailJob\n          onExitCodes: {containerName: main, operator: In, values: [42]}\n",
    );
    let on_failure = json!({"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "b"}]}});
    let other_name = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "b"}]}});
    for template in [on_failure, other_name] {
        let j = job(
            json!({"podReplacementPolicy": "TerminatingOrFailed", "template": template}),
            json!({}),
        );
        assert_eq!(mutate_job(&j, "default", &c).reason, Reason::NothingToDefault);
    }
    let j = job(
        json!({"podReplacementPolicy": "TerminatingOrFailed", "template": never_template()}),
        json!({}),
    );
    let patched = apply(&j, &mutate_job(&j, "default", &c));
    assert_eq!(patched["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(patched["spec"]["podFailurePolicy"]["rules"][0]["action"], "FailJob");
}

#[test]
fn explicit_terminating_or_failed_blocks_the_pod_failure_policy_with_a_warning() {
    let c = config(
        "jobs:\n  job:\n    podFailurePolicy:\n      rules: [{action: Ignore, onPodConditions: [{type: DisruptionTarget}]}]\n",
    );
    let j = job(
        json!({"backoffLimit": 6, "podReplacementPolicy": "TerminatingOrFailed", "template": never_template()}),
        json!({"entourage.dev/keep": "podReplacementPolicy"}),
    );
    let out = mutate_job(&j, "default", &c);
    let patched = apply(&j, &out);
    assert!(patched["spec"].get("podFailurePolicy").is_none());
    assert_eq!(patched["spec"]["backoffLimit"], 3);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("requires spec.podReplacementPolicy Failed")),
        "{:?}",
        out.warnings
    );
}

fn review(operation: &str, dry_run: bool, object: &Value) -> crate::core::request::AdmissionRequest {
    serde_json::from_value(json!({
        "uid": "u", "kind": {"group": "batch", "version": "v1", "kind": "Job"},
        "resource": {"group": "batch", "version": "v1", "resource": "jobs"},
        "operation": operation, "namespace": "default", "dryRun": dry_run, "object": object,
        "userInfo": {"username": "alice"},
    }))
    .unwrap()
}

#[test]
fn dry_run_gets_exactly_the_defaults_of_a_real_request() {
    let j = job(json!({"backoffLimit": 6, "template": never_template()}), json!({}));
    let real = crate::core::mutate::mutate(&review("CREATE", false, &j), &Config::default());
    let dry = crate::core::mutate::mutate(&review("CREATE", true, &j), &Config::default());
    assert_eq!(real.reason, Reason::Defaulted);
    assert_eq!(real, dry);
}

#[test]
fn update_is_never_defaulted() {
    let j = job(json!({"backoffLimit": 6, "template": never_template()}), json!({}));
    let out = crate::core::mutate::mutate(&review("UPDATE", false, &j), &Config::default());
    assert_eq!((out.reason, out.patch.0.len()), (Reason::OperationNotHandled, 0));
}
