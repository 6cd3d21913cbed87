//! `resources`: the requests and limits every injected container carries, and the most a Pod may ask for with
//! `entourage.dev/<pattern>-resources`.
//!
//! Every injected container carries requests *and* limits for cpu, memory and ephemeral-storage: a namespace
//! with a ResourceQuota on `limits.memory` or `requests.ephemeral-storage` refuses any Pod with a container that
//! lacks one, and a LimitRange's `max` checks each container. The kubelet also bounds a Pod's whole disk use
//! (writable layers, container logs and emptyDirs) by the sum of its containers' ephemeral-storage limits as
//! soon as one container has one, so the default limit leaves room for the log volume
//! (`sidecars.logVolumeSizeLimit`) the readers share with the app.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Quantity;

/// The resources entourage sets on the containers it injects (and that a Pod may override).
pub const RESOURCE_NAMES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// Requests and limits of injected containers, and the per-pattern maxima of per-Pod overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// `requests` of every injected container: `cpu`, `memory` and `ephemeral-storage`.
    pub requests: BTreeMap<String, Quantity>,
    /// `limits` of every injected container: `cpu`, `memory` and `ephemeral-storage`.
    pub limits: BTreeMap<String, Quantity>,
    /// The most one Pod may set with `entourage.dev/<pattern>-resources`, per pattern and resource.
    pub maxima: Maxima,
}

/// The most a Pod may set with `entourage.dev/<pattern>-resources`: a resource left out here cannot be set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Maxima {
    /// Log-streaming sidecars (`entourage.dev/sidecar-resources`).
    pub sidecar: BTreeMap<String, Quantity>,
    /// Log adapters (`entourage.dev/adapter-resources`).
    pub adapter: BTreeMap<String, Quantity>,
    /// Ambassadors (`entourage.dev/ambassador-resources`).
    pub ambassador: BTreeMap<String, Quantity>,
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(name, q)| ((*name).to_string(), Quantity((*q).to_string())))
        .collect()
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            requests: quantities(&[("cpu", "10m"), ("memory", "16Mi"), ("ephemeral-storage", "16Mi")]),
            // 512Mi of disk: above the 256Mi log volume plus the 50Mi of container logs the kubelet keeps per
            // container (5 files of 10Mi), so a Pod whose own containers set no limit is not evicted for the
            // sum of ours before the log volume's own sizeLimit speaks.
            limits: quantities(&[("cpu", "200m"), ("memory", "64Mi"), ("ephemeral-storage", "512Mi")]),
            maxima: Maxima::default(),
        }
    }
}

impl Default for Maxima {
    fn default() -> Self {
        let one = || quantities(&[("cpu", "1"), ("memory", "512Mi"), ("ephemeral-storage", "2Gi")]);
        Maxima {
            sidecar: one(),
            adapter: one(),
            ambassador: one(),
        }
    }
}

impl Maxima {
    /// Each pattern's name (as in `resources.maxima.<name>`) and its maxima.
    pub fn by_pattern(&self) -> [(&'static str, &BTreeMap<String, Quantity>); 3] {
        [
            ("sidecar", &self.sidecar),
            ("adapter", &self.adapter),
            ("ambassador", &self.ambassador),
        ]
    }
}

impl Resources {
    /// Every rule `resources` breaks, one line each naming the key.
    pub(super) fn problems(&self, log_volume: &Quantity) -> Vec<String> {
        let mut p = Vec::new();
        let mut sections = vec![
            ("resources.requests".to_string(), &self.requests),
            ("resources.limits".to_string(), &self.limits),
        ];
        for (pattern, maxima) in self.maxima.by_pattern() {
            sections.push((format!("resources.maxima.{pattern}"), maxima));
        }
        for (section, map) in &sections {
            for (name, q) in *map {
                if !RESOURCE_NAMES.contains(&name.as_str()) {
                    p.push(format!(
                        "{section}.{name}: is not a resource entourage sets ({})",
                        RESOURCE_NAMES.join(", ")
                    ));
                }
                if let Err(e) = q.nanos() {
                    p.push(format!("{section}.{name}: {:?} {e}", q.0));
                }
            }
        }
        for name in RESOURCE_NAMES {
            for (section, map) in &sections[..2] {
                if !map.contains_key(*name) {
                    p.push(format!(
                        "{section}.{name}: is missing; injected containers always carry requests and limits \
                         (a ResourceQuota on it refuses Pods whose containers lack one)"
                    ));
                }
            }
            let value = |map: &BTreeMap<String, Quantity>| map.get(*name).and_then(|q| q.nanos().ok());
            let limit = value(&self.limits);
            if let (Some(request), Some(limit)) = (value(&self.requests), limit) {
                if request > limit {
                    p.push(format!(
                        "resources.requests.{name}: {} is above resources.limits.{name} {} (the apiserver refuses \
                         such a container)",
                        self.requests[*name], self.limits[*name]
                    ));
                }
            }
            for (pattern, maxima) in self.maxima.by_pattern() {
                if let (Some(max), Some(limit)) = (value(maxima), limit) {
                    if max < limit {
                        p.push(format!(
                            "resources.maxima.{pattern}.{name}: {} is below resources.limits.{name} {}; the default \
                             must be within the maximum",
                            maxima[*name], self.limits[*name]
                        ));
                    }
                }
            }
        }
        if let (Some(limit), Ok(volume)) = (
            self.limits.get("ephemeral-storage").and_then(|q| q.nanos().ok()),
            log_volume.nanos(),
        ) {
            if limit < volume {
                p.push(format!(
                    "resources.limits.ephemeral-storage: {} is below sidecars.logVolumeSizeLimit {log_volume}: the \
                     kubelet evicts a Pod whose disk use passes the sum of its containers' limits, log volume included",
                    self.limits["ephemeral-storage"]
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Config;

    fn problems(yaml: &str) -> String {
        match Config::from_yaml(yaml, "test") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_defaults_carry_every_resource_within_every_maximum() {
        let r = Resources::default();
        for name in RESOURCE_NAMES {
            assert!(r.requests.contains_key(*name) && r.limits.contains_key(*name), "{name}");
            for (_, maxima) in r.maxima.by_pattern() {
                assert!(maxima[*name].nanos().unwrap() >= r.limits[*name].nanos().unwrap());
            }
        }
    }

    #[test]
    fn a_missing_resource_an_unknown_one_and_a_request_above_its_limit_are_refused() {
        let err = problems("resources:\n  requests: {cpu: 1, memory: 16Mi}\n");
        assert!(
            err.contains("resources.requests.ephemeral-storage: is missing"),
            "{err}"
        );
        assert!(
            err.contains("resources.requests.cpu: 1 is above resources.limits.cpu 200m"),
            "{err}"
        );
        let err = problems("resources:\n  maxima:\n    sidecar: {nvidia.com/gpu: 1}\n");
        assert!(
            err.contains("resources.maxima.sidecar.nvidia.com/gpu: is not a resource"),
            "{err}"
        );
    }

    #[test]
    fn a_maximum_below_the_default_limit_is_refused_comparing_by_value() {
        // 60M is less than 64Mi (62.9 MiB): a comparison of the texts or of the numbers alone would miss it.
        let err = problems("resources:\n  maxima:\n    adapter: {memory: 60M}\n");
        assert!(
            err.contains("resources.maxima.adapter.memory: 60M is below resources.limits.memory 64Mi"),
            "{err}"
        );
        assert_eq!(problems("resources:\n  maxima:\n    adapter: {memory: 68M}\n"), "");
    }

    #[test]
    fn a_disk_limit_below_the_log_volume_is_refused() {
        let err = problems("sidecars:\n  logVolumeSizeLimit: 1Gi\n");
        assert!(
            err.contains("resources.limits.ephemeral-storage: 512Mi is below"),
            "{err}"
        );
    }
}
