//! Jobs and CronJobs: safe defaults at creation.

use serde_json::Value;

use super::{Outcome, Reason};
use crate::config::Config;

/// Applies the Job defaults.
pub fn mutate_job(_job: &Value, _namespace: &str, _config: &Config) -> Outcome {
    Outcome::unchanged(Reason::NothingToDefault)
}

/// Applies the CronJob defaults.
pub fn mutate_cronjob(_cronjob: &Value, _namespace: &str, _config: &Config) -> Outcome {
    Outcome::unchanged(Reason::NothingToDefault)
}
