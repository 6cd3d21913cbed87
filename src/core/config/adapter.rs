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

impl AdapterConfig {
    /// Every rule the section breaks, each checked by the parser of the `entourage adapt` flag the value becomes
    /// (`--time-zone`, `--multiline-flush-after`).
    pub(super) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = crate::core::logformat::parse_time_zone(&self.time_zone) {
            p.push(format!("adapter.timeZone: {e}"));
        }
        if let Err(e) = crate::core::logformat::parse_flush_after(&self.multiline_flush_after) {
            p.push(format!("adapter.multilineFlushAfter: {e}"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn adapter_zone_and_flush_period_are_checked_with_the_adapters_parsers() {
        let err = Config::from_yaml("adapter:\n  timeZone: Mars/Olympus\n  multilineFlushAfter: 0s\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("adapter.timeZone") && err.contains("Mars/Olympus"),
            "{err}"
        );
        assert!(err.contains("adapter.multilineFlushAfter"), "{err}");
        let c = Config::from_yaml(
            "adapter:\n  timeZone: Europe/Paris\n  multilineFlushAfter: 250ms\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.adapter.time_zone, "Europe/Paris");
    }
}
