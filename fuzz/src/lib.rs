//! What every fuzz target checks, the way the apiserver would: the core answers without panicking, a denial
//! names an `entourage.dev/` annotation, every patch applies strictly (RFC 6902) to the object it was computed
//! for, a second review of the patched object adds nothing, and nothing entourage does not own changes.
//! A broken invariant panics, which AFL records as a crash.

use entourage::{
    admission::{self, AdmissionRequest},
    core::config::{Config, KubeVersion, SidecarMode},
    core::mutate::{self, Verdict},
};
use serde_json::{json, Value};

/// A config picked by one byte: sidecar mode, Kubernetes version, ambassador ports near the edge or not.
pub fn config(byte: u8) -> Config {
    let mut config = Config::default();
    config.sidecars.mode = match byte % 3 {
        0 => SidecarMode::Auto,
        1 => SidecarMode::Native,
        _ => SidecarMode::Classic,
    };
    config.kubernetes_version = match (byte / 3) % 3 {
        0 => None,
        1 => Some(KubeVersion { major: 1, minor: 28 }),
        _ => Some(KubeVersion { major: 1, minor: 33 }),
    };
    if byte / 9 % 2 == 1 {
        config.ambassador.port = 65534;
        config.ambassador.admin_port = 65533;
    }
    config.sidecars.max_log_files = 1 + usize::from(byte / 18 % 8);
    config
}

/// The body of a review of `object` as the apiserver would send it.
pub fn review_body(object: &Value) -> Vec<u8> {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or("Pod");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "fuzz", "kind": {"group": group, "version": version, "kind": kind},
            "operation": "CREATE", "namespace": "default", "object": object,
        }
    });
    serde_json::to_vec(&review).unwrap()
}

/// Whether the apiserver could have sent this object: it decodes Pods into typed structs first, so
/// annotations and labels are string maps and names are strings. Only for such objects is idempotency and
/// preservation a promise (a patch must still apply to anything).
fn plausible(object: &Value) -> bool {
    let strings = |p: &str| {
        object
            .pointer(p)
            .is_none_or(|v| v.as_object().is_some_and(|m| m.values().all(Value::is_string)))
    };
    let lists_of_named = [
        "/spec/containers",
        "/spec/initContainers",
        "/spec/ephemeralContainers",
        "/spec/volumes",
    ]
    .iter()
    .all(|p| {
        object.pointer(p).is_none_or(|v| {
            v.as_array()
                .is_some_and(|items| items.iter().all(|i| i.get("name").is_some_and(Value::is_string)))
        })
    });
    let mounts_and_env = ["/spec/containers", "/spec/initContainers"].iter().all(|p| {
        object
            .pointer(p)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["volumeMounts", "env", "ports"]
                    .iter()
                    .all(|k| c.get(k).is_none_or(Value::is_array))
            })
    });
    object.get("metadata").is_none_or(Value::is_object)
        && object.get("spec").is_none_or(Value::is_object)
        && strings("/metadata/annotations")
        && strings("/metadata/labels")
        && lists_of_named
        && mounts_and_env
}

/// Runs the core on `request` and checks every invariant.
/// Decodes `body` as the webhook does (bodies that are not reviews are refused, which is all they get) and checks
/// the answer against the whole object.
pub fn check(body: &[u8], config: &Config) {
    let Ok(review) = admission::decode(body, config) else {
        return;
    };
    let whole = admission::decode_whole(body).expect("what decodes for the core decodes whole");
    check_request(&review.request, whole.request.object.as_ref(), config);
}

fn check_request(request: &AdmissionRequest, whole: Option<&Value>, config: &Config) {
    let outcome = mutate::mutate(request, config);
    if let Verdict::Deny(message) = &outcome.verdict {
        assert!(
            message.contains("entourage.dev/"),
            "denial names no annotation: {message}"
        );
        assert!(outcome.patch.0.is_empty(), "a denial carries a patch");
        return;
    }
    if outcome.patch.0.is_empty() {
        return;
    }
    let object = whole.expect("a patch needs an object");
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &outcome.patch.to_json_patch()).unwrap_or_else(|e| {
        panic!(
            "patch does not apply: {e}\nobject: {object}\npatch: {}",
            serde_json::to_string(&outcome.patch).unwrap()
        )
    });
    if !plausible(object) {
        return;
    }
    // Job and CronJob defaults own `/spec/...` and their annotation; injection into a Pod owns nothing there.
    let batch = request.kind.kind != "Pod";
    let owned =
        |path: &str| batch && (path.starts_with("/spec/") || path == "/metadata/annotations/entourage.dev~1defaulted");
    if let Err(e) = preserved("", object, &patched, &owned) {
        panic!("{e}\nobject: {object}\npatched: {patched}");
    }
    // The patched object, reviewed again the way the webhook reads it.
    let again = admission::decode(&review_body(&patched), config).expect("a patched object decodes");
    let second = mutate::mutate(&again.request, config);
    assert_eq!(
        second.verdict,
        Verdict::Allow,
        "patched object denied on reinvocation: {patched}"
    );
    assert!(
        second.patch.0.is_empty(),
        "second review patched again: {}\npatched: {patched}",
        serde_json::to_string(&second.patch).unwrap()
    );
}

/// Every key of `a` is in `b` with a preserved value, array elements keep their order (new ones may be
/// inserted), scalars are equal — except at paths `owned` accepts.
fn preserved(path: &str, a: &Value, b: &Value, owned: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if owned(path) {
        return Ok(());
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let child = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                let w = y.get(k).ok_or_else(|| format!("{child} was removed"))?;
                preserved(&child, v, w, owned)?;
            }
            Ok(())
        }
        (Value::Array(x), Value::Array(y)) => {
            let mut j = 0;
            for (i, v) in x.iter().enumerate() {
                loop {
                    let Some(w) = y.get(j) else {
                        return Err(format!("{path}/{i} was removed or rewritten"));
                    };
                    j += 1;
                    if preserved(&format!("{path}/{i}"), v, w, owned).is_ok() {
                        break;
                    }
                }
            }
            Ok(())
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path} changed from {a} to {b}")),
    }
}
