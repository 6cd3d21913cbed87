//! The `adapter:` section: how injected adapters complete times and group stack traces.

use serde::{Deserialize, Serialize};

/// How the injected adapters complete times and group stack traces (`entourage adapt --time-zone`,
/// `--multiline-flush-after`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AdapterConfig {
    /// The zone of source times written without an offset (syslog RFC 3164, `2024-05-01 12:00:00`): an IANA
    /// name, as the apps of the cluster log in it.
    pub time_zone: String,
    /// With `entourage.dev/adapter-multiline`, how long a record waits for more lines once its last line is read
    /// (so the last exception of a quiet app is not held back), as `1s` or `500ms`.
    pub multiline_flush_after: String,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            time_zone: "UTC".into(),
            multiline_flush_after: "1s".into(),
        }
    }
}
