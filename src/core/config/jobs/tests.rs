//! Unit tests of the parent module.

use crate::core::config::Config;

fn problems(yaml: &str) -> String {
    match Config::from_yaml(yaml, "test") {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn built_in_defaults_are_backoff_limit_3_and_forbid() {
    let r = Config::default().jobs.resolve("any");
    assert!(r.enabled);
    assert_eq!(r.job.backoff_limit, Some(3));
    assert_eq!(r.cron_job.concurrency_policy, Some(super::ConcurrencyPolicy::Forbid));
    assert_eq!(r.job.ttl_seconds_after_finished, None);
    assert_eq!(r.origin, "cluster policy");
}

#[test]
fn unknown_concurrency_policy_is_refused_naming_the_values() {
    let msg = problems("jobs:\n  cronJob:\n    concurrencyPolicy: Sometimes\n");
    assert!(
        msg.contains("Sometimes") && msg.contains("Forbid") && msg.contains("Replace"),
        "{msg}"
    );
}

#[test]
fn unknown_time_zone_is_refused_and_iana_names_accepted() {
    let msg = problems("jobs:\n  cronJob:\n    timeZone: Mars/Olympus\n");
    assert!(
        msg.contains("jobs.cronJob.timeZone") && msg.contains("Mars/Olympus"),
        "{msg}"
    );
    assert!(problems("jobs:\n  cronJob:\n    timeZone: Local\n").contains("timeZone"));
    assert_eq!(problems("jobs:\n  cronJob:\n    timeZone: America/New_York\n"), "");
    assert_eq!(problems("jobs:\n  cronJob:\n    timeZone: UTC\n"), "");
}

#[test]
fn negative_numbers_are_refused_each_named() {
    let msg = problems(
        "jobs:\n  job:\n    backoffLimit: -1\n    activeDeadlineSeconds: 0\n    ttlSecondsAfterFinished: -5\n  cronJob:\n    startingDeadlineSeconds: -1\n    failedJobsHistoryLimit: -2\n",
    );
    for key in [
        "jobs.job.backoffLimit: -1",
        "jobs.job.activeDeadlineSeconds: 0 must be >= 1",
        "jobs.job.ttlSecondsAfterFinished: -5",
        "jobs.cronJob.startingDeadlineSeconds: -1",
        "jobs.cronJob.failedJobsHistoryLimit: -2",
    ] {
        assert!(msg.contains(key), "{key} missing from {msg}");
    }
}

#[test]
fn unknown_key_in_a_namespace_override_is_refused() {
    let msg = problems("jobs:\n  namespaces:\n    batch:\n      job:\n        backofLimit: 2\n");
    assert!(msg.contains("backofLimit"), "{msg}");
    let msg = problems("jobs:\n  namespaces:\n    batch:\n      cronjob: {}\n");
    assert!(msg.contains("cronjob"), "{msg}");
}

#[test]
fn namespace_override_values_are_validated_with_their_path() {
    let msg = problems("jobs:\n  namespaces:\n    batch:\n      cronJob:\n        timeZone: Nowhere\n      job:\n        backoffLimit: -3\n");
    assert!(msg.contains("jobs.namespaces.batch.cronJob.timeZone"), "{msg}");
    assert!(msg.contains("jobs.namespaces.batch.job.backoffLimit: -3"), "{msg}");
    assert!(problems("jobs:\n  namespaces:\n    Not_A_Namespace: {}\n").contains("not a namespace name"));
}

#[test]
fn a_bad_cluster_value_is_reported_once_not_once_per_namespace() {
    let msg = problems(
        "jobs:\n  cronJob:\n    timeZone: Atlantis\n  namespaces:\n    a: {}\n    b: {job: {backoffLimit: 1}}\n",
    );
    assert_eq!(msg.matches("Atlantis").count(), 1, "{msg}");
}

#[test]
fn namespace_inherits_absent_keys_turns_off_null_and_replaces_values() {
    let c = Config::from_yaml(
        "jobs:\n  job:\n    ttlSecondsAfterFinished: 600\n  namespaces:\n    batch:\n      job:\n        backoffLimit: 10\n        ttlSecondsAfterFinished: null\n      cronJob:\n        concurrencyPolicy: Replace\n    legacy:\n      enabled: false\n",
        "test",
    )
    .unwrap();
    let batch = c.jobs.resolve("batch");
    assert_eq!(batch.job.backoff_limit, Some(10));
    assert_eq!(batch.job.ttl_seconds_after_finished, None);
    assert_eq!(
        batch.cron_job.concurrency_policy,
        Some(super::ConcurrencyPolicy::Replace)
    );
    assert_eq!(batch.origin, "policy of namespace batch");
    assert_eq!(c.jobs.resolve("other").job.ttl_seconds_after_finished, Some(600));
    assert!(!c.jobs.resolve("legacy").enabled);
}

#[test]
fn null_turns_a_default_off_cluster_wide() {
    let c = Config::from_yaml("jobs:\n  job:\n    backoffLimit: null\n", "test").unwrap();
    assert_eq!(c.jobs.job.backoff_limit, None);
    assert!(c.jobs.job.fields().is_empty());
    let off = Config::from_yaml("jobs:\n  enabled: false\n", "test").unwrap();
    assert!(!off.jobs.resolve("default").enabled);
}

#[test]
fn pod_failure_policy_follows_the_api_rules() {
    let ok = "jobs:\n  job:\n    podFailurePolicy:\n      rules:\n        - action: FailJob\n          onExitCodes: {operator: In, values: [42]}\n        - action: Ignore\n          onPodConditions: [{type: DisruptionTarget}]\n";
    let c = Config::from_yaml(ok, "test").unwrap();
    assert_eq!(
        c.jobs.job.pod_failure_policy_json().unwrap(),
        serde_json::json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]})
    );
    let bad = "jobs:\n  job:\n    podFailurePolicy:\n      rules:\n        - action: FailIndex\n          onExitCodes: {operator: In, values: [3, 0, 0]}\n          onPodConditions: [{type: DisruptionTarget}]\n";
    let msg = problems(bad);
    for rule in [
        "FailIndex is only valid",
        "exactly one of",
        "ascending",
        "0 is not allowed",
    ] {
        assert!(msg.contains(rule), "{rule} missing from {msg}");
    }
    assert!(problems("jobs:\n  job:\n    podFailurePolicy: {rules: []}\n").contains("1 to 20"));
}

#[test]
fn config_round_trips_through_yaml() {
    let c = Config::from_yaml(
        "jobs:\n  namespaces:\n    batch:\n      job: {backoffLimit: null}\n      cronJob: {timeZone: UTC}\n",
        "test",
    )
    .unwrap();
    let text = serde_yaml_ng::to_string(&c).unwrap();
    assert_eq!(
        Config::from_yaml(&text, "again").unwrap().jobs.resolve("batch"),
        c.jobs.resolve("batch")
    );
}
