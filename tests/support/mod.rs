//! The one helper module of the integration tests: each test file says `mod support;` and uses what it needs.
//!
//! This file plays the apiserver's part: builds reviews, applies patches the way the apiserver does (RFC 6902,
//! an add under a missing parent fails), checks the Pod validation rules from shared/KUBERNETES.md, and
//! validates objects against the official OpenAPI schemas (strict) through `kubernetes-validate`. One submodule
//! per stand-in or driver:
//! - [`apiserver`]: a real `entourage serve` and an apiserver-like TLS client;
//! - [`runtimes`]: the injected argv through each runtime's own flag parser;
//! - [`readers`]: the log readers run as the webhook injects them, on a temporary "Pod";
//! - [`ambassador`]: the real ambassador between a test client and upstreams written here (and the Python gRPC and
//!   WebSocket peers beside it);
//! - [`doctor_api`]: the Kubernetes API stand-in `entourage doctor` talks to;
//! - [`install`]: rendering the manifests and the chart (kubectl, helm) and checking what they install.
//!
//! Every test binary compiles all of it and uses a part, hence `dead_code` allowed.
#![allow(dead_code)]

pub mod ambassador;
pub mod apiserver;
pub mod doctor_api;
pub mod install;
pub mod readers;
pub mod runtimes;

use std::{
    collections::BTreeSet,
    io::Write,
    process::{Command, Stdio},
};

use base64::Engine;
use serde_json::{json, Value};

/// Reports a test that cannot run here because a tool is missing. Under CI (`CI=true`, where .ci/run installs
/// every tool) that fails the test; elsewhere the test prints one `SKIPPED: <crate>::<test> (<reason>)` line and
/// returns without running. The line goes straight to stderr, past the harness's capture (which hides what a
/// passing test prints), so that `make test` counts it beside passed and failed, and .ci/run fails on it.
pub fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}: CI must have it (.ci/run installs it)"
    );
    // libtest runs each test on a thread named after it.
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("SKIPPED: {}::{test} ({reason})\n", env!("CARGO_CRATE_NAME"));
    // One write, so that the line is not cut by the harness's own output.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// An AdmissionReview (v1) around `object`.
pub fn review(kind: (&str, &str, &str), namespace: &str, operation: &str, object: &Value) -> Value {
    let (group, version, kind) = kind;
    let resource = format!("{}s", kind.to_lowercase());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{}", std::process::id()),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": object.pointer("/metadata/name").cloned().unwrap_or(json!("")),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "tester"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

/// A review's body with the request's members in the order the apiserver writes them (`kind` and `operation`
/// before `object`). `serde_json::to_vec` sorts members by name, which puts `object` before `operation`: the two
/// orders take different paths through the decoder, and both must give the same answer.
pub fn apiserver_order(review: &Value) -> Vec<u8> {
    const ORDER: [&str; 13] = [
        "uid",
        "kind",
        "resource",
        "subResource",
        "requestKind",
        "requestResource",
        "requestSubResource",
        "name",
        "namespace",
        "operation",
        "userInfo",
        "object",
        "oldObject",
    ];
    let request = review["request"].as_object().expect("a review has a request");
    let mut members: Vec<(&String, &Value)> = request.iter().collect();
    members.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    let request = members
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"{{"apiVersion":{},"kind":{},"request":{{{request}}}}}"#,
        review["apiVersion"], review["kind"]
    )
    .into_bytes()
}

/// The group/version/kind of an object from its `apiVersion` and `kind`.
pub fn gvk(object: &Value) -> (String, String, String) {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    (
        group.to_string(),
        version.to_string(),
        object["kind"].as_str().unwrap_or("Pod").to_string(),
    )
}

/// Applies a patch the way the apiserver does (evanphx/json-patch v4 semantics: strict RFC 6902).
pub fn apply(object: &Value, patch: &Value) -> Result<Value, String> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("not an RFC 6902 patch: {e}"))?;
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| format!("patch does not apply: {e}"))?;
    Ok(out)
}

/// Decodes a response's base64 patch, checking the protocol rules on the way.
pub fn decode_patch(response: &Value) -> Result<Option<Value>, String> {
    match (response.get("patch"), response.get("patchType")) {
        (None, None) => Ok(None),
        (Some(Value::String(b64)), Some(Value::String(t))) if t == "JSONPatch" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("patch is not base64: {e}"))?;
            let patch: Value = serde_json::from_slice(&bytes).map_err(|e| format!("patch is not JSON: {e}"))?;
            if !patch.is_array() {
                return Err("patch is not a JSON array".into());
            }
            Ok(Some(patch))
        }
        other => Err(format!("patch and patchType malformed: {other:?}")),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The Pod validation rules the apiserver enforces on a patched Pod (shared/KUBERNETES.md). Empty when valid.
pub fn pod_rule_violations(pod: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let list = |p: &str| pod.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default();
    let containers = list("/spec/containers");
    let init = list("/spec/initContainers");
    let ephemeral = list("/spec/ephemeralContainers");
    let volumes = list("/spec/volumes");
    if containers.is_empty() {
        problems.push("spec.containers is empty".to_string());
    }
    let mut names = BTreeSet::new();
    for c in containers.iter().chain(&init).chain(&ephemeral) {
        let name = c["name"].as_str().unwrap_or_default();
        if !is_dns_label(name) {
            problems.push(format!("container name {name:?} is not a DNS-1123 label"));
        }
        if !names.insert(name.to_string()) {
            problems.push(format!("container name {name:?} is not unique"));
        }
    }
    let mut volume_names = BTreeSet::new();
    for v in &volumes {
        let name = v["name"].as_str().unwrap_or_default();
        if !is_dns_label(name) {
            problems.push(format!("volume name {name:?} is not a DNS-1123 label"));
        }
        if !volume_names.insert(name.to_string()) {
            problems.push(format!("volume name {name:?} is not unique"));
        }
    }
    let check = |c: &Value, is_init: bool, problems: &mut Vec<String>| {
        let name = c["name"].as_str().unwrap_or_default();
        let mut paths = BTreeSet::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vol = m["name"].as_str().unwrap_or_default();
            if !volume_names.contains(vol) {
                problems.push(format!(
                    "container {name:?} mounts volume {vol:?}, which does not exist"
                ));
            }
            let path = m["mountPath"].as_str().unwrap_or_default();
            if !paths.insert(path.to_string()) {
                problems.push(format!("container {name:?} mounts {path:?} twice"));
            }
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(port_name) = p["name"].as_str() {
                if port_name.len() > 15 {
                    problems.push(format!("container {name:?} port name {port_name:?} is longer than 15"));
                }
            }
        }
        let restart = c.get("restartPolicy").and_then(Value::as_str);
        match (is_init, restart) {
            (false, Some(_)) => problems.push(format!(
                "container {name:?} sets restartPolicy, allowed only on init containers"
            )),
            (true, Some(r)) if r != "Always" => {
                problems.push(format!("init container {name:?} restartPolicy {r:?} is not Always"))
            }
            _ => {}
        }
        if is_init && restart.is_none() {
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                if c.get(probe).is_some() {
                    problems.push(format!("init container {name:?} has a {probe} but is not a sidecar"));
                }
            }
        }
        let mut env_names = BTreeSet::new();
        for e in c["env"].as_array().into_iter().flatten() {
            let env = e["name"].as_str().unwrap_or_default();
            if env.is_empty() || !env_names.insert(env.to_string()) {
                problems.push(format!("container {name:?} env {env:?} is empty or duplicated"));
            }
        }
    };
    for c in &containers {
        check(c, false, &mut problems);
    }
    for c in &init {
        check(c, true, &mut problems);
    }
    problems
}

/// One object to validate against the schema.
pub struct SchemaCase {
    /// Shown in failures.
    pub name: String,
    /// The object (with apiVersion and kind).
    pub object: Value,
    /// Reject unknown fields.
    pub strict: bool,
}

/// Validates objects against the official OpenAPI schemas (kubernetes-validate). Returns one line per invalid
/// object; panics if the validator is not installed, because a skipped check is a defect.
pub fn schema_violations(cases: &[SchemaCase]) -> Vec<String> {
    let input: Vec<Value> = cases
        .iter()
        .map(|c| json!({"name": c.name, "object": c.object, "strict": c.strict}))
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/validate.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Vec::new(),
        Some(1) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        _ => panic!(
            "schema validation could not run: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

/// Checks that `patched` keeps everything `original` had: objects keep every key, arrays keep their elements in
/// order (new elements may be inserted), scalars are equal — except at the pointers listed in `owned`.
pub fn preserved(original: &Value, patched: &Value, owned: &[&str]) -> Result<(), String> {
    fn walk(path: &str, a: &Value, b: &Value, owned: &[&str]) -> Result<(), String> {
        if owned.contains(&path) {
            return Ok(());
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, v) in x {
                    let child = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                    let Some(w) = y.get(k) else {
                        if owned.contains(&child.as_str()) {
                            continue;
                        }
                        return Err(format!("{child} was removed"));
                    };
                    walk(&child, v, w, owned)?;
                }
                Ok(())
            }
            (Value::Array(x), Value::Array(y)) => {
                // Each original element must match a later patched element, in order.
                let mut j = 0;
                for (i, v) in x.iter().enumerate() {
                    let mut found = false;
                    while j < y.len() {
                        j += 1;
                        if walk(&format!("{path}/{i}"), v, &y[j - 1], owned).is_ok() {
                            found = true;
                            break;
                        }
                    }
                    if !found {
                        return Err(format!("{path}/{i} was removed or rewritten"));
                    }
                }
                Ok(())
            }
            _ if a == b => Ok(()),
            _ => Err(format!("{path} changed from {a} to {b}")),
        }
    }
    walk("", original, patched, owned)
}

/// A numeric field of `/proc/<pid>/status`, in its own unit (kB for sizes); `None` where the kernel has no such
/// field.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    line.split_whitespace().next()?.parse().ok()
}
