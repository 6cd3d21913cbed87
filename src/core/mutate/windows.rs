//! Windows Pods: entourage's images are Linux only, so a Windows Pod that asks for an entourage is denied, naming
//! what to remove. Injected, it would sit in an image-pull error on its Windows node ("no matching manifest")
//! that nobody explains. A Windows Pod that asks for nothing never gets here.

use serde_json::{Map, Value};

use crate::core::annotations::{self, AnnotationError};

/// The node label the scheduler matches a Pod's OS against.
const OS_LABEL: &str = "kubernetes.io/os";

/// Why this Pod runs on Windows (`spec.os.name` or the `kubernetes.io/os` node selector), if it does.
fn windows(pod: &Value) -> Option<&'static str> {
    let spec = pod.get("spec")?;
    // Both values are exact: the API accepts only `linux` and `windows`, and node labels are case-sensitive.
    let is_windows = |v: Option<&Value>| v.and_then(Value::as_str) == Some("windows");
    if is_windows(spec.get("os").and_then(|os| os.get("name"))) {
        return Some("spec.os.name is windows");
    }
    if is_windows(spec.get("nodeSelector").and_then(|s| s.get(OS_LABEL))) {
        return Some("its nodeSelector asks for kubernetes.io/os: windows");
    }
    None
}

/// The denial of a Windows Pod whose annotations ask for an entourage: it names the first annotation that asks,
/// its value, why, and every `entourage.dev/` annotation to remove (removing only the one that asks would leave,
/// say, `adapter-format` without `adapter-logs`, itself a denial).
pub(crate) fn denial(pod: &Value, annotations: &Map<String, Value>) -> Option<AnnotationError> {
    let why = windows(pod)?;
    let asking = [
        annotations::SIDECAR_LOGS,
        annotations::ADAPTER_LOGS,
        annotations::AMBASSADOR_UPSTREAM,
        annotations::AMBASSADOR_UPSTREAMS,
    ];
    let (key, value) = asking
        .into_iter()
        .find_map(|k| Some((k, annotations.get(k)?.as_str()?)))?;
    let remove: Vec<&str> = annotations
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with(annotations::PREFIX) && *k != annotations::INJECT)
        .collect();
    Some(AnnotationError {
        key,
        value: value.to_string(),
        rule: format!(
            "asks for containers from entourage's images, which are Linux only, but this Pod runs on Windows ({why}); \
             remove {} (or set {}: \"false\")",
            remove.join(", "),
            annotations::INJECT
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn annotations(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn spec_os_or_node_selector_windows_is_denied_naming_every_annotation_to_remove() {
        let asked = annotations(json!({
            "entourage.dev/adapter-format": "nginx",
            "entourage.dev/adapter-logs": "/var/log/a.log",
            "app.example.com/team": "x",
        }));
        for pod in [
            json!({"spec": {"os": {"name": "windows"}}}),
            json!({"spec": {"nodeSelector": {"kubernetes.io/os": "windows"}}}),
        ] {
            let e = denial(&pod, &asked).expect("denied");
            assert_eq!((e.key, e.value.as_str()), (annotations::ADAPTER_LOGS, "/var/log/a.log"));
            assert!(e.rule.contains("Linux only"), "{}", e.rule);
            assert!(
                e.rule
                    .contains("remove entourage.dev/adapter-format, entourage.dev/adapter-logs (or"),
                "{}",
                e.rule
            );
        }
    }

    #[test]
    fn linux_pods_and_pods_that_ask_for_nothing_are_not_denied() {
        let asked = annotations(json!({"entourage.dev/sidecar-logs": "/var/log/a.log"}));
        let linux = json!({"spec": {"os": {"name": "linux"}, "nodeSelector": {"kubernetes.io/os": "linux"}}});
        assert!(denial(&linux, &asked).is_none());
        assert!(denial(&json!({"spec": {}}), &asked).is_none());
        let windows = json!({"spec": {"os": {"name": "windows"}}});
        let nothing = annotations(json!({"entourage.dev/target-container": "app"}));
        assert!(denial(&windows, &nothing).is_none());
    }
}
