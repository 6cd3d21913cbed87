//! Whether the containers entourage injects fit the namespace's LimitRanges.
//!
//! The apiserver's LimitRanger refuses a Pod whose container's limit is above a LimitRange's `max` (or its request
//! below `min`) with a message that names the LimitRange, not what set the value. When entourage's own
//! containers are the ones that do not fit, the webhook refuses the Pod first, with a message that says which
//! limit, which injected container, and which annotation or config key fixes it. The webhook keeps the
//! namespaces' LimitRanges from a periodic list (no API call per review) and calls [`misfits`] only for
//! namespaces that have one.

use std::collections::BTreeMap;

use serde_json::Value;

use super::config::Quantity;
use super::mutate::Pattern;

/// The `type: Container` bounds of one LimitRange.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerLimits {
    /// The LimitRange's name.
    pub name: String,
    /// `max`: no container's limit may be above it.
    pub max: BTreeMap<String, String>,
    /// `min`: no container's request may be below it.
    pub min: BTreeMap<String, String>,
}

/// One message per bound an injected container breaks. `containers` are the injected containers as patched
/// into the Pod, each with its pattern.
pub fn misfits(containers: &[(Pattern, &Value)], namespace: &str, ranges: &[ContainerLimits]) -> Vec<String> {
    let mut out = Vec::new();
    for (pattern, container) in containers {
        let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
        let pattern = pattern.as_str();
        for range in ranges {
            let checks: [Check<'_>; 2] = [
                (&range.max, "limits", "allows at most", "lower", |value, bound| {
                    above(value, bound)
                }),
                (&range.min, "requests", "asks at least", "raise", |value, bound| {
                    above(bound, value)
                }),
            ];
            for (bounds, kind, words, fix, breaks) in checks {
                for (resource, bound) in bounds {
                    let Some(value) = quantity_at(container, kind, resource) else {
                        continue;
                    };
                    if breaks(value, bound) {
                        out.push(format!(
                            "LimitRange {} in namespace {namespace} {words} {resource} {bound} per container, but \
                             entourage's {pattern} container {name} gets {kind}.{resource} {value}: set \
                             entourage.dev/{pattern}-resources: \"{resource}={bound}\" on the Pod, or {fix} \
                             resources.{kind}.{resource} in entourage's config",
                            range.name
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Bounds, what they bound, the words, the fix, and whether a value breaks a bound.
type Check<'r> = (
    &'r BTreeMap<String, String>,
    &'static str,
    &'static str,
    &'static str,
    fn(&str, &str) -> bool,
);

fn quantity_at<'v>(container: &'v Value, kind: &str, resource: &str) -> Option<&'v str> {
    container.get("resources")?.get(kind)?.get(resource)?.as_str()
}

/// `a > b` by value; a bound or value that is not a quantity never breaks anything here (the apiserver judges it).
fn above(a: &str, b: &str) -> bool {
    let nanos = |q: &str| Quantity(q.to_string()).nanos();
    matches!((nanos(a), nanos(b)), (Ok(a), Ok(b)) if a > b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(max: &[(&str, &str)], min: &[(&str, &str)]) -> ContainerLimits {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ContainerLimits {
            name: "tight".into(),
            max: map(max),
            min: map(min),
        }
    }

    fn sidecar() -> Value {
        json!({"name": "sidecar-access", "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}})
    }

    #[test]
    fn a_limit_above_the_maximum_names_the_range_the_container_the_annotation_and_the_config_key() {
        let container = sidecar();
        let found = misfits(
            &[(Pattern::Sidecar, &container)],
            "shop",
            &[range(&[("cpu", "100m")], &[])],
        );
        assert_eq!(
            found,
            [
                "LimitRange tight in namespace shop allows at most cpu 100m per container, but entourage's sidecar \
              container sidecar-access gets limits.cpu 200m: set entourage.dev/sidecar-resources: \"cpu=100m\" on \
              the Pod, or lower resources.limits.cpu in entourage's config"
            ]
        );
    }

    #[test]
    fn a_request_below_the_minimum_is_named_too_and_quantities_compare_by_value() {
        let container = sidecar();
        let found = misfits(
            &[(Pattern::Adapter, &container)],
            "shop",
            &[range(&[], &[("memory", "0.02Gi")])],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("asks at least memory 0.02Gi per container"),
            "{found:?}"
        );
        assert!(
            found[0].contains("entourage.dev/adapter-resources: \"memory=0.02Gi\""),
            "{found:?}"
        );
    }

    #[test]
    fn containers_within_every_bound_fit() {
        let container = sidecar();
        let roomy = range(
            &[("cpu", "1"), ("memory", "64Mi"), ("ephemeral-storage", "1Gi")],
            &[("cpu", "10m")],
        );
        assert_eq!(
            misfits(&[(Pattern::Ambassador, &container)], "shop", &[roomy]),
            Vec::<String>::new()
        );
    }
}
