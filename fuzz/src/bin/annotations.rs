//! Bytes as a Pod's annotations over one of the golden Pods: the first byte picks the config, the second the
//! Pod, the rest is `key=value` lines (a key without `/` gets the `entourage.dev/` prefix). This reaches the
//! annotation parsers and planners far faster than mutating whole JSON documents.
use serde_json::{Map, Value};

const PODS: &[&str] = &[
    include_str!("../../../tests/golden/sidecar-nginx/input.json"),
    include_str!("../../../tests/golden/sidecar-job-owned-pod-gets-native-sidecars-first/input.json"),
    include_str!("../../../tests/golden/sidecar-reuses-ancestor-mount-with-subpath/input.json"),
    include_str!("../../../tests/golden/ambassador-keeps-apps-own-env/input.json"),
    include_str!("../../../tests/golden/all-three-patterns/input.json"),
    include_str!("../../../tests/golden/sidecar-pod-without-volumes/input.json"),
];

fn main() {
    let pods: Vec<Value> = PODS.iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    afl::fuzz!(|data: &[u8]| {
        let [selector, pick, rest @ ..] = data else {
            return;
        };
        let mut pod = pods[usize::from(*pick) % pods.len()].clone();
        let mut annotations = Map::new();
        for line in String::from_utf8_lossy(rest).lines() {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            let k = if k.contains('/') {
                k.to_string()
            } else {
                format!("entourage.dev/{k}")
            };
            annotations.insert(k, Value::String(v.to_string()));
        }
        pod["metadata"]["annotations"] = Value::Object(annotations);
        entourage_fuzz::check(&entourage_fuzz::review_body(&pod), &entourage_fuzz::config(*selector));
    });
}
