//! `entourage.dev/sidecar-resources`, `adapter-resources` and `ambassador-resources`: one Pod's requests and
//! limits for one pattern's containers, within the per-pattern maxima of config (`resources.maxima`).
//!
//! The rule: `cpu=50m,memory=64Mi,ephemeral-storage=64Mi` sets, for each resource named, **both** the request
//! and the limit of every container of that pattern in this Pod; a resource not named keeps config's request and
//! limit. Request equal to limit can never break the apiserver's `request <= limit` rule whatever config says,
//! and it is what a LimitRange or ResourceQuota sees. A value over the maximum, a resource the maxima do not list
//! (extended resources such as GPUs included), a malformed, zero or duplicated quantity, or an override for a
//! pattern the Pod does not ask for denies the Pod, naming the annotation, the value and the rule.

use std::collections::BTreeMap;

use super::{
    err, AnnotationError, Lookup, ADAPTER_LOGS, ADAPTER_RESOURCES, AMBASSADOR_RESOURCES, AMBASSADOR_UPSTREAM,
    AMBASSADOR_UPSTREAMS, SIDECAR_LOGS, SIDECAR_RESOURCES,
};
use crate::core::config::{Config, Quantity, RESOURCE_NAMES};

/// One pattern's per-Pod resources: resource name to the quantity that becomes its request and its limit.
pub type Override = BTreeMap<String, Quantity>;

/// The per-Pod resources a Pod asks for, per pattern (`None`: config's requests and limits).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceOverrides {
    /// `entourage.dev/sidecar-resources`.
    pub sidecar: Option<Override>,
    /// `entourage.dev/adapter-resources`.
    pub adapter: Option<Override>,
    /// `entourage.dev/ambassador-resources`.
    pub ambassador: Option<Override>,
}

/// Parses the three annotations against the maxima of `config`.
pub(super) fn parse(lookup: Lookup<'_>, config: &Config, errors: &mut Vec<AnnotationError>) -> ResourceOverrides {
    let maxima = &config.resources.maxima;
    let asked = |keys: &[&str]| keys.iter().any(|k| lookup.text(k).is_some());
    let mut one = |key: &'static str, pattern: &str, maxima, needs: &[&'static str]| {
        let value = lookup.text(key)?;
        if !asked(needs) {
            errors.push(err(
                key,
                value,
                format!("needs {} (no such container in this Pod)", needs.join(" or ")),
            ));
            return None;
        }
        parse_one(key, value, pattern, maxima, errors)
    };
    ResourceOverrides {
        sidecar: one(SIDECAR_RESOURCES, "sidecar", &maxima.sidecar, &[SIDECAR_LOGS]),
        adapter: one(ADAPTER_RESOURCES, "adapter", &maxima.adapter, &[ADAPTER_LOGS]),
        ambassador: one(
            AMBASSADOR_RESOURCES,
            "ambassador",
            &maxima.ambassador,
            &[AMBASSADOR_UPSTREAM, AMBASSADOR_UPSTREAMS],
        ),
    }
}

/// `name=quantity,…` for one pattern, each checked against `resources.maxima.<pattern>.<name>`.
fn parse_one(
    key: &'static str,
    value: &str,
    pattern: &str,
    maxima: &BTreeMap<String, Quantity>,
    errors: &mut Vec<AnnotationError>,
) -> Option<Override> {
    let before = errors.len();
    let mut out = Override::new();
    for pair in value.split(',').map(str::trim) {
        let Some((name, quantity)) = pair.split_once('=') else {
            errors.push(err(key, pair, "is not resource=quantity (such as memory=64Mi)"));
            continue;
        };
        let (name, quantity) = (name.trim(), Quantity(quantity.trim().to_string()));
        let Some(max) = maxima.get(name) else {
            let settable: Vec<&str> = maxima.keys().map(String::as_str).collect();
            let rule = if RESOURCE_NAMES.contains(&name) {
                format!("names a resource config does not let a Pod set for {pattern} containers (resources.maxima.{pattern} lists {})", list(&settable))
            } else {
                format!(
                    "names an unknown resource; {pattern} containers may set {}",
                    list(&settable)
                )
            };
            errors.push(err(key, pair, rule));
            continue;
        };
        if out.contains_key(name) {
            errors.push(err(key, pair, format!("sets {name} twice")));
            continue;
        }
        match quantity.nanos() {
            Err(e) => errors.push(err(key, pair, e.to_string())),
            Ok(0) => errors.push(err(key, pair, "is zero; a container needs some of every resource")),
            Ok(n) if max.nanos().is_ok_and(|max| n > max) => errors.push(err(
                key,
                pair,
                format!(
                    "is over the maximum for {pattern} containers, {max} (config resources.maxima.{pattern}.{name})"
                ),
            )),
            Ok(_) => {
                out.insert(name.to_string(), quantity);
            }
        }
    }
    (errors.len() == before).then_some(out)
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use crate::core::annotations::{parse_pod, AnnotationError};
    use crate::core::config::Config;

    fn parse(annotations: Value, config: &Config) -> Result<super::ResourceOverrides, Vec<AnnotationError>> {
        let map: Map<String, Value> = serde_json::from_value(annotations).unwrap();
        parse_pod(Some(&map), config).map(|p| p.request.resources)
    }

    fn denial(annotations: Value) -> String {
        let errors = parse(annotations, &Config::default()).expect_err("denied");
        errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn each_pattern_gets_its_own_override() {
        let r = parse(
            json!({
                "entourage.dev/sidecar-logs": "/var/log/app/a.log",
                "entourage.dev/sidecar-resources": "cpu=50m, memory=64Mi,ephemeral-storage=64Mi",
                "entourage.dev/ambassador-upstream": "http://orders:8080",
                "entourage.dev/ambassador-resources": "memory=128Mi",
            }),
            &Config::default(),
        )
        .unwrap();
        let sidecar = r.sidecar.unwrap();
        assert_eq!(sidecar["cpu"].0, "50m");
        assert_eq!(sidecar["ephemeral-storage"].0, "64Mi");
        assert_eq!(r.ambassador.unwrap().keys().collect::<Vec<_>>(), ["memory"]);
        assert_eq!(r.adapter, None);
    }

    #[test]
    fn a_value_over_the_maximum_is_denied_comparing_quantities_by_value() {
        // 1000M is less than 1Gi, but more than the 512Mi maximum (536.9M).
        let message = denial(json!({
            "entourage.dev/sidecar-logs": "/var/log/app/a.log",
            "entourage.dev/sidecar-resources": "memory=1000M",
        }));
        assert_eq!(
            message,
            "entourage.dev/sidecar-resources: \"memory=1000M\" is over the maximum for sidecar containers, 512Mi \
             (config resources.maxima.sidecar.memory)"
        );
        // 1.5 cpus against a maximum of 1; 900m passes.
        assert!(denial(json!({
            "entourage.dev/adapter-logs": "/var/log/app/a.log",
            "entourage.dev/adapter-resources": "cpu=1.5",
        }))
        .contains("over the maximum for adapter containers, 1"));
        let ok =
            json!({"entourage.dev/adapter-logs": "/var/log/app/a.log", "entourage.dev/adapter-resources": "cpu=900m"});
        assert!(parse(ok, &Config::default()).is_ok());
    }

    #[test]
    fn unknown_resources_malformed_zero_and_repeated_quantities_are_each_named() {
        let message = denial(json!({
            "entourage.dev/ambassador-upstream": "http://orders:8080",
            "entourage.dev/ambassador-resources": "nvidia.com/gpu=1,memory=lots,cpu=0,memory=64Mi,memory=32Mi,disk",
        }));
        for part in [
            "\"nvidia.com/gpu=1\" names an unknown resource; ambassador containers may set cpu, ephemeral-storage, memory",
            "\"memory=lots\" is not a Kubernetes quantity",
            "\"cpu=0\" is zero",
            "\"memory=32Mi\" sets memory twice",
            "\"disk\" is not resource=quantity",
        ] {
            assert!(message.contains(part), "{part} missing from {message}");
        }
    }

    #[test]
    fn a_resource_config_leaves_out_of_the_maxima_cannot_be_set() {
        let config = Config::from_yaml("resources:\n  maxima:\n    sidecar: {memory: 256Mi}\n", "t").unwrap();
        let errors = parse(
            json!({"entourage.dev/sidecar-logs": "/var/log/app/a.log", "entourage.dev/sidecar-resources": "cpu=100m"}),
            &config,
        )
        .unwrap_err();
        assert_eq!(
            errors[0].rule,
            "names a resource config does not let a Pod set for sidecar containers (resources.maxima.sidecar lists memory)"
        );
    }

    #[test]
    fn an_override_for_a_pattern_the_pod_does_not_use_is_denied() {
        let message = denial(json!({
            "entourage.dev/sidecar-logs": "/var/log/app/a.log",
            "entourage.dev/ambassador-resources": "memory=64Mi",
        }));
        assert_eq!(
            message,
            "entourage.dev/ambassador-resources: \"memory=64Mi\" needs entourage.dev/ambassador-upstream or \
             entourage.dev/ambassador-upstreams (no such container in this Pod)"
        );
    }
}
