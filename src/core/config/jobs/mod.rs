// Over 500 lines on purpose: the `jobs:` schema, its per-namespace merge and its validation are one rule set, read together.
//! Configuration of the Job and CronJob defaults (`jobs:`).
//!
//! Every default is a value or `null`: `null` turns that default off. Cluster-wide values live under
//! `jobs.job` and `jobs.cronJob`; `jobs.namespaces.<ns>` overrides them key by key, where an absent key
//! inherits the cluster value, `null` turns the default off in that namespace and a value replaces it.
//! `enabled: false` (cluster-wide or per namespace) turns every default off at once.
//!
//! ```yaml
//! jobs:
//!   enabled: true
//!   job: {backoffLimit: 3, ttlSecondsAfterFinished: 86400}
//!   cronJob: {concurrencyPolicy: Forbid, timeZone: Europe/Paris}
//!   namespaces:
//!     batch: {job: {backoffLimit: 10}, cronJob: {concurrencyPolicy: null}}
//!     legacy: {enabled: false}
//! ```

use std::{collections::BTreeMap, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

/// Cluster-wide Job and CronJob defaults, with per-namespace overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobPolicy {
    /// `false` turns every Job and CronJob default off (namespaces may turn them back on).
    pub enabled: bool,
    /// Defaults for Jobs (and for `jobTemplate.spec` in CronJobs).
    pub job: JobDefaults,
    /// Defaults for CronJobs.
    pub cron_job: CronJobDefaults,
    /// Per-namespace overrides (namespace name → the values it changes).
    pub namespaces: BTreeMap<String, NamespacePolicy>,
}

impl Default for JobPolicy {
    fn default() -> Self {
        JobPolicy {
            enabled: true,
            job: JobDefaults::default(),
            cron_job: CronJobDefaults::default(),
            namespaces: BTreeMap::new(),
        }
    }
}

/// Job defaults; `None` is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobDefaults {
    /// `spec.backoffLimit` (the API default is 6).
    pub backoff_limit: Option<i32>,
    /// `spec.ttlSecondsAfterFinished`: finished Jobs (and their Pods) are deleted after this many seconds.
    pub ttl_seconds_after_finished: Option<i32>,
    /// `spec.activeDeadlineSeconds`: a running Job is failed after this many seconds.
    pub active_deadline_seconds: Option<i64>,
    /// `spec.podFailurePolicy`, set together with `spec.podReplacementPolicy: Failed` (the API requires it).
    pub pod_failure_policy: Option<PodFailurePolicy>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            backoff_limit: Some(3),
            ttl_seconds_after_finished: None,
            active_deadline_seconds: None,
            pod_failure_policy: None,
        }
    }
}

impl JobDefaults {
    /// Every default off.
    fn none() -> Self {
        JobDefaults {
            backoff_limit: None,
            ttl_seconds_after_finished: None,
            active_deadline_seconds: None,
            pod_failure_policy: None,
        }
    }

    /// The simple defaults that are on, as (JobSpec field name, value): `podFailurePolicy` is not among them,
    /// because it comes with its own rules.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if let Some(v) = self.backoff_limit {
            out.push(("backoffLimit", json!(v)));
        }
        if let Some(v) = self.ttl_seconds_after_finished {
            out.push(("ttlSecondsAfterFinished", json!(v)));
        }
        if let Some(v) = self.active_deadline_seconds {
            out.push(("activeDeadlineSeconds", json!(v)));
        }
        out
    }

    /// `spec.podFailurePolicy` as the API spells it, when on.
    pub fn pod_failure_policy_json(&self) -> Option<Value> {
        self.pod_failure_policy
            .as_ref()
            .and_then(|p| serde_json::to_value(p).ok())
    }

    /// The container names the pod failure policy's rules refer to (each must exist in the Job's Pod).
    pub fn pod_failure_policy_containers(&self) -> Vec<&str> {
        self.pod_failure_policy
            .iter()
            .flat_map(|p| &p.rules)
            .filter_map(|r| r.on_exit_codes.as_ref()?.container_name.as_deref())
            .collect()
    }

    fn problems(&self, at: &str, p: &mut Vec<String>) {
        if let Some(v) = self.backoff_limit {
            at_least(p, at, "job.backoffLimit", v.into(), 0);
        }
        if let Some(v) = self.ttl_seconds_after_finished {
            at_least(p, at, "job.ttlSecondsAfterFinished", v.into(), 0);
        }
        if let Some(v) = self.active_deadline_seconds {
            at_least(p, at, "job.activeDeadlineSeconds", v, 1);
        }
        if let Some(policy) = &self.pod_failure_policy {
            policy.problems(&format!("{at}job.podFailurePolicy"), p);
        }
    }
}

/// CronJob defaults; `None` is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CronJobDefaults {
    /// `spec.concurrencyPolicy` (the API default is `Allow`).
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// `spec.startingDeadlineSeconds` (no API default).
    pub starting_deadline_seconds: Option<i64>,
    /// `spec.successfulJobsHistoryLimit` (the API default is 3).
    pub successful_jobs_history_limit: Option<i32>,
    /// `spec.failedJobsHistoryLimit` (the API default is 1).
    pub failed_jobs_history_limit: Option<i32>,
    /// `spec.timeZone`, an IANA name such as `Europe/Paris` (no API default: the controller's zone).
    pub time_zone: Option<String>,
}

impl Default for CronJobDefaults {
    fn default() -> Self {
        CronJobDefaults {
            concurrency_policy: Some(ConcurrencyPolicy::Forbid),
            starting_deadline_seconds: None,
            successful_jobs_history_limit: None,
            failed_jobs_history_limit: None,
            time_zone: None,
        }
    }
}

impl CronJobDefaults {
    /// Every default off.
    fn none() -> Self {
        CronJobDefaults {
            concurrency_policy: None,
            starting_deadline_seconds: None,
            successful_jobs_history_limit: None,
            failed_jobs_history_limit: None,
            time_zone: None,
        }
    }

    /// The defaults that are on, as (CronJobSpec field name, value).
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if let Some(v) = self.concurrency_policy {
            out.push(("concurrencyPolicy", json!(v.as_str())));
        }
        if let Some(v) = self.starting_deadline_seconds {
            out.push(("startingDeadlineSeconds", json!(v)));
        }
        if let Some(v) = self.successful_jobs_history_limit {
            out.push(("successfulJobsHistoryLimit", json!(v)));
        }
        if let Some(v) = self.failed_jobs_history_limit {
            out.push(("failedJobsHistoryLimit", json!(v)));
        }
        if let Some(v) = &self.time_zone {
            out.push(("timeZone", json!(v)));
        }
        out
    }

    fn problems(&self, at: &str, p: &mut Vec<String>) {
        if let Some(v) = self.starting_deadline_seconds {
            at_least(p, at, "cronJob.startingDeadlineSeconds", v, 0);
        }
        if let Some(v) = self.successful_jobs_history_limit {
            at_least(p, at, "cronJob.successfulJobsHistoryLimit", v.into(), 0);
        }
        if let Some(v) = self.failed_jobs_history_limit {
            at_least(p, at, "cronJob.failedJobsHistoryLimit", v.into(), 0);
        }
        if let Some(tz) = &self.time_zone {
            // The apiserver loads the name from the Go time zone database and refuses `Local`; chrono-tz
            // carries the same IANA database and has no `Local`.
            if chrono_tz::Tz::from_str(tz).is_err() {
                p.push(format!(
                    "{at}cronJob.timeZone: {tz:?} is not an IANA time zone name such as \"Europe/Paris\" or \"UTC\""
                ));
            }
        }
    }
}

/// `spec.concurrencyPolicy` of a CronJob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap (the API default).
    Allow,
    /// A run is skipped while the previous one is still running.
    Forbid,
    /// A new run replaces the one still running.
    Replace,
}

impl ConcurrencyPolicy {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Replace => "Replace",
        }
    }
}

/// `spec.podFailurePolicy`, as the API spells it (validated against the API's own rules at load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodFailurePolicy {
    /// The rules, first match wins (1 to 20).
    pub rules: Vec<PodFailurePolicyRule>,
}

/// One rule of a pod failure policy: exactly one of `onExitCodes` and `onPodConditions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodFailurePolicyRule {
    /// What to do when the rule matches.
    pub action: PodFailureAction,
    /// Matches container exit codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit_codes: Option<OnExitCodes>,
    /// Matches Pod conditions (`DisruptionTarget` for preemption and eviction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_pod_conditions: Option<Vec<OnPodCondition>>,
}

/// The action of a pod failure policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodFailureAction {
    /// Fail the whole Job.
    FailJob,
    /// Do not count the failure against `backoffLimit`.
    Ignore,
    /// Count the failure (the default handling).
    Count,
    /// Fail the index; only valid with `backoffLimitPerIndex`, so refused as a cluster default.
    FailIndex,
}

/// Exit codes a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnExitCodes {
    /// Only this container (it must exist in the Job's Pod, or the default is skipped for that Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `In` or `NotIn`.
    pub operator: ExitCodeOperator,
    /// 1 to 255 exit codes, ascending, without repeats.
    pub values: Vec<i32>,
}

/// How exit codes are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitCodeOperator {
    /// The exit code is one of the values.
    In,
    /// The exit code is none of the values.
    NotIn,
}

/// A Pod condition a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnPodCondition {
    /// The condition type, e.g. `DisruptionTarget`.
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default = "condition_true")]
    pub status: ConditionStatus,
}

fn condition_true() -> ConditionStatus {
    ConditionStatus::True
}

/// A condition status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl PodFailurePolicy {
    /// The API's own validation rules, so that a default never makes a valid Job invalid.
    fn problems(&self, at: &str, p: &mut Vec<String>) {
        if self.rules.is_empty() || self.rules.len() > 20 {
            p.push(format!(
                "{at}.rules: has {} rules; 1 to 20 are allowed",
                self.rules.len()
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("{at}.rules[{i}]");
            if rule.action == PodFailureAction::FailIndex {
                p.push(format!(
                    "{at}.action: FailIndex is only valid in Jobs with backoffLimitPerIndex; use FailJob, Ignore or Count"
                ));
            }
            if rule.on_exit_codes.is_some() == rule.on_pod_conditions.is_some() {
                p.push(format!("{at}: needs exactly one of onExitCodes and onPodConditions"));
            }
            if let Some(codes) = &rule.on_exit_codes {
                codes.problems(&format!("{at}.onExitCodes"), p);
            }
            if let Some(conditions) = &rule.on_pod_conditions {
                if conditions.is_empty() || conditions.len() > 20 {
                    p.push(format!("{at}.onPodConditions: 1 to 20 patterns are allowed"));
                }
                for (j, c) in conditions.iter().enumerate() {
                    if !is_qualified_name(&c.condition_type) {
                        p.push(format!(
                            "{at}.onPodConditions[{j}].type: {:?} is not a condition type such as DisruptionTarget",
                            c.condition_type
                        ));
                    }
                }
            }
        }
    }
}

impl OnExitCodes {
    fn problems(&self, at: &str, p: &mut Vec<String>) {
        if let Some(name) = &self.container_name {
            if !crate::support::names::is_dns_label(name) {
                p.push(format!("{at}.containerName: {name:?} is not a container name"));
            }
        }
        if self.values.is_empty() || self.values.len() > 255 {
            p.push(format!("{at}.values: 1 to 255 exit codes are allowed"));
        }
        if self.values.windows(2).any(|w| w[0] >= w[1]) {
            p.push(format!(
                "{at}.values: {:?} must be ascending without repeats (the API requires it)",
                self.values
            ));
        }
        if self.operator == ExitCodeOperator::In && self.values.contains(&0) {
            p.push(format!("{at}.values: 0 is not allowed with operator In"));
        }
    }
}

/// Whether `s` is a Kubernetes qualified name (`DisruptionTarget`, `example.com/Ready`).
fn is_qualified_name(s: &str) -> bool {
    let name = s.rsplit_once('/').map_or(s, |(_, n)| n);
    let prefix_ok = s
        .rsplit_once('/')
        .is_none_or(|(prefix, _)| crate::support::names::is_dns_subdomain(prefix));
    prefix_ok
        && !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One namespace's overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NamespacePolicy {
    /// `false` turns every default off in this namespace; `true` turns them on even when `jobs.enabled` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Job overrides.
    pub job: JobOverrides,
    /// CronJob overrides.
    pub cron_job: CronJobOverrides,
}

impl NamespacePolicy {
    /// The namespace's values laid over the cluster-wide ones.
    fn over(&self, j: &JobDefaults, c: &CronJobDefaults) -> (JobDefaults, CronJobDefaults) {
        let (nj, nc) = (&self.job, &self.cron_job);
        (
            JobDefaults {
                backoff_limit: nj.backoff_limit.resolve(&j.backoff_limit),
                ttl_seconds_after_finished: nj.ttl_seconds_after_finished.resolve(&j.ttl_seconds_after_finished),
                active_deadline_seconds: nj.active_deadline_seconds.resolve(&j.active_deadline_seconds),
                pod_failure_policy: nj.pod_failure_policy.resolve(&j.pod_failure_policy),
            },
            CronJobDefaults {
                concurrency_policy: nc.concurrency_policy.resolve(&c.concurrency_policy),
                starting_deadline_seconds: nc.starting_deadline_seconds.resolve(&c.starting_deadline_seconds),
                successful_jobs_history_limit: nc
                    .successful_jobs_history_limit
                    .resolve(&c.successful_jobs_history_limit),
                failed_jobs_history_limit: nc.failed_jobs_history_limit.resolve(&c.failed_jobs_history_limit),
                time_zone: nc.time_zone.resolve(&c.time_zone),
            },
        )
    }
}

/// A namespace's Job overrides: an absent key inherits, `null` turns the default off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobOverrides {
    /// `spec.backoffLimit`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub backoff_limit: Override<i32>,
    /// `spec.ttlSecondsAfterFinished`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub ttl_seconds_after_finished: Override<i32>,
    /// `spec.activeDeadlineSeconds`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub active_deadline_seconds: Override<i64>,
    /// `spec.podFailurePolicy`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub pod_failure_policy: Override<PodFailurePolicy>,
}

/// A namespace's CronJob overrides: an absent key inherits, `null` turns the default off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CronJobOverrides {
    /// `spec.concurrencyPolicy`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub concurrency_policy: Override<ConcurrencyPolicy>,
    /// `spec.startingDeadlineSeconds`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub starting_deadline_seconds: Override<i64>,
    /// `spec.successfulJobsHistoryLimit`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub successful_jobs_history_limit: Override<i32>,
    /// `spec.failedJobsHistoryLimit`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub failed_jobs_history_limit: Override<i32>,
    /// `spec.timeZone`.
    #[serde(skip_serializing_if = "Override::is_inherit")]
    pub time_zone: Override<String>,
}

/// A per-namespace value: absent (inherit the cluster value), `null` (off) or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Override<T> {
    /// The key is absent: the cluster-wide value applies.
    #[default]
    Inherit,
    /// `null`: this default is off in the namespace.
    Off,
    /// This value replaces the cluster-wide one.
    Set(T),
}

impl<T: Clone> Override<T> {
    /// Whether the key was absent.
    pub fn is_inherit(&self) -> bool {
        matches!(self, Override::Inherit)
    }

    /// The value in force, given the cluster-wide one.
    pub fn resolve(&self, cluster: &Option<T>) -> Option<T> {
        match self {
            Override::Inherit => cluster.clone(),
            Override::Off => None,
            Override::Set(v) => Some(v.clone()),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Override<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only called when the key is present (absent keys take `Default`, i.e. Inherit).
        Ok(match Option::<T>::deserialize(d)? {
            None => Override::Off,
            Some(v) => Override::Set(v),
        })
    }
}

impl<T: Serialize> Serialize for Override<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Override::Set(v) => v.serialize(s),
            Override::Inherit | Override::Off => s.serialize_none(),
        }
    }
}

/// The defaults in force in one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Whether any default applies.
    pub enabled: bool,
    /// Job defaults.
    pub job: JobDefaults,
    /// CronJob defaults.
    pub cron_job: CronJobDefaults,
    /// Where the values come from, for warnings: `cluster policy` or `policy of namespace <ns>`.
    pub origin: String,
}

impl JobPolicy {
    /// The defaults in force in `namespace`.
    pub fn resolve(&self, namespace: &str) -> Resolved {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Resolved {
                enabled: self.enabled,
                job: self.job.clone(),
                cron_job: self.cron_job.clone(),
                origin: "cluster policy".into(),
            };
        };
        let (job, cron_job) = ns.over(&self.job, &self.cron_job);
        Resolved {
            enabled: ns.enabled.unwrap_or(self.enabled),
            job,
            cron_job,
            origin: format!("policy of namespace {namespace}"),
        }
    }

    /// Every rule the Job policy breaks, one line each naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        self.job.problems("jobs.", &mut p);
        self.cron_job.problems("jobs.", &mut p);
        for name in self.namespaces.keys() {
            let at = format!("jobs.namespaces.{name}.");
            if !crate::support::names::is_dns_label(name) {
                p.push(format!(
                    "jobs.namespaces: {name:?} is not a namespace name (a DNS-1123 label)"
                ));
            }
            // Laid over nothing, the overrides hold exactly the values the namespace sets: the inherited
            // cluster values were checked above, once.
            let (job, cron_job) = self.namespaces[name].over(&JobDefaults::none(), &CronJobDefaults::none());
            job.problems(&at, &mut p);
            cron_job.problems(&at, &mut p);
        }
        p
    }
}

/// `value < min` as a problem naming the key.
fn at_least(p: &mut Vec<String>, at: &str, key: &str, value: i64, min: i64) {
    if value < min {
        p.push(format!("{at}{key}: {value} must be >= {min}"));
    }
}

#[cfg(test)]
mod tests;
