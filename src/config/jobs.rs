//! Configuration of the Job and CronJob defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Cluster-wide Job and CronJob defaults, with per-namespace overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobPolicy {
    /// Defaults for Jobs (and for `jobTemplate.spec` in CronJobs).
    pub job: JobDefaults,
    /// Defaults for CronJobs.
    pub cron_job: CronJobDefaults,
    /// Per-namespace overrides (namespace name → the values it changes).
    pub namespaces: BTreeMap<String, serde_json::Value>,
}

/// Job defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobDefaults {
    /// `spec.backoffLimit` (the API default is 6).
    pub backoff_limit: Option<i32>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults { backoff_limit: Some(3) }
    }
}

/// CronJob defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CronJobDefaults {
    /// `spec.concurrencyPolicy` (the API default is `Allow`).
    pub concurrency_policy: Option<String>,
}

impl Default for CronJobDefaults {
    fn default() -> Self {
        CronJobDefaults {
            concurrency_policy: Some("Forbid".into()),
        }
    }
}

impl JobPolicy {
    /// Every rule the Job policy breaks, one line each naming the key.
    pub fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}
