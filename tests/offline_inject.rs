//! `entourage inject` and `entourage review`: the real binary on files, its output checked the way the
//! apiserver would check the objects (Pod rules, strict schema).

mod support;

use std::{
    io::{Read, Write},
    process::{Child, Command, Output, Stdio},
};

use serde::Deserialize;
use serde_json::{json, Value};
use support::{apiserver::bin, SchemaCase};

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn parse_yaml(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The binary started with `args`, `stdin` written and closed, its output still to be read.
fn start(args: &[&str], stdin: Option<&str>) -> Child {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    start(args, stdin).wait_with_output().unwrap()
}

fn inject(args: &[&str], stdin: Option<&str>) -> Vec<Value> {
    let out = run(&[&["inject"], args].concat(), stdin);
    assert!(
        out.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_yaml(&String::from_utf8(out.stdout).unwrap())
}

/// Where a workload keeps its Pod template.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        _ => None,
    }
}

/// The Pod a workload would create: its template's metadata and spec under a Pod.
fn pod_of(doc: &Value) -> Value {
    let pointer = template_pointer(doc["kind"].as_str().unwrap()).unwrap();
    let template = doc.pointer(pointer).unwrap();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]})
}

fn injected(doc: &Value) -> bool {
    pod_of(doc)["metadata"]["annotations"]["entourage.dev/status"].is_string()
}

/// Every document is valid for the apiserver, and every Pod (template) follows the Pod rules.
fn assert_admissible(docs: &[Value]) {
    let mut cases = Vec::new();
    for doc in docs {
        let name = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
        cases.push(SchemaCase {
            name: name.clone(),
            object: doc.clone(),
            strict: true,
        });
        if template_pointer(doc["kind"].as_str().unwrap()).is_some() {
            assert_eq!(
                support::pod_rule_violations(&pod_of(doc)),
                Vec::<String>::new(),
                "{name}"
            );
        }
    }
    assert_eq!(support::schema_violations(&cases), Vec::<String>::new());
}

#[test]
fn inject_fills_deployment_and_cronjob_templates_and_leaves_the_rest_alone() {
    let path = fixture_path("inject/workloads.yaml");
    let input = parse_yaml(&std::fs::read_to_string(&path).unwrap());
    let output = inject(&["-f", &path], None);
    let kinds: Vec<&str> = output.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Deployment", "ConfigMap", "CronJob", "Pod"],
        "same documents, same order"
    );
    assert_eq!(output[1], input[1], "the ConfigMap passes through untouched");
    assert_eq!(output[3], input[3], "the Pod injected before is unchanged");
    assert!(injected(&output[0]) && injected(&output[2]));

    let web = pod_of(&output[0]);
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&web["spec"]["containers"]).len(), 1, "nginx alone in containers");
    let init = names(&web["spec"]["initContainers"]);
    assert_eq!(
        init.len(),
        2,
        "the sidecar and the adapter, as native sidecars: {init:?}"
    );
    let adapter = web["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["args"][0] == "adapt")
        .expect("the adapter runs the entourage image's entrypoint with `adapt`");
    assert_eq!(
        adapter["image"],
        entourage::core::config::Config::default().images.entourage
    );

    // A CronJob's Pods belong to a Job: native sidecars, so the Job still completes.
    let report = pod_of(&output[2]);
    let init = report["spec"]["initContainers"].as_array().expect("native sidecar");
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(report["spec"]["containers"].as_array().unwrap().len(), 1);
    // Everything the user wrote is still there.
    for (before, after) in input.iter().zip(&output) {
        let owned = ["/metadata/annotations/entourage.dev~1status"];
        support::preserved(before, after, &owned).unwrap_or_else(|e| panic!("{}: {e}", before["kind"]));
    }
    assert_admissible(&output);
}

#[test]
fn inject_reads_stdin_and_handles_every_workload_kind() {
    let text = std::fs::read_to_string(fixture_path("inject/every-kind.yaml")).unwrap();
    let output = inject(&["-f", "-"], Some(&text));
    let input = parse_yaml(&text);
    assert_eq!(output.len(), input.len());
    assert_eq!(output[0], input[0], "a Pod without annotations is unchanged");
    for doc in &output[1..] {
        assert!(injected(doc), "{} not injected", doc["kind"]);
    }
    let job = output.iter().find(|d| d["kind"] == "Job").unwrap();
    assert!(pod_of(job)["spec"]["initContainers"][0]["restartPolicy"] == "Always");
    let daemonset = output.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    assert_eq!(
        pod_of(daemonset)["spec"]["initContainers"][0]["restartPolicy"],
        "Always",
        "native sidecars for every workload in auto mode"
    );
    assert_admissible(&output);
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    let path = fixture_path("inject/workloads.yaml");
    let first = run(&["inject", "-f", &path], None);
    assert!(first.status.success());
    let once = String::from_utf8(first.stdout).unwrap();
    let twice = run(&["inject", "-f", "-"], Some(&once));
    assert!(twice.status.success());
    assert_eq!(String::from_utf8(twice.stdout).unwrap(), once);
}

#[test]
fn inject_uses_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "sidecars:\n  mode: native\n  streamer: busybox\nimages:\n  sidecar: registry.local/busybox:1\n",
    )
    .unwrap();
    let output = inject(
        &[
            "-f",
            &fixture_path("inject/workloads.yaml"),
            "--config",
            config.to_str().unwrap(),
        ],
        None,
    );
    let web = pod_of(&output[0]);
    let init = web["spec"]["initContainers"]
        .as_array()
        .expect("native sidecars from config");
    assert!(init.iter().any(|c| c["image"] == "registry.local/busybox:1"));
}

#[test]
fn inject_error_names_the_document_kind_name_and_field() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\n\
                metadata: {name: broken}\nspec:\n  selector: {matchLabels: {app: b}}\n  template:\n    metadata:\n      \
                labels: {app: b}\n      annotations:\n        entourage.dev/sidecar-logs: var/log/relative.log\n    \
                spec:\n      containers: [{name: app, image: busybox}]\n";
    let out = run(&["inject", "-f", "-"], Some(text));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("document 2 (Deployment broken): spec.template: denied:")
            && stderr.contains("entourage.dev/sidecar-logs"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing half-written on stdout");

    let out = run(&["inject", "-f", "-"], Some("a: 1\n---\nb: [unclosed\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("document 2: not valid YAML"));
}

#[test]
fn review_prints_the_answer_the_patch_and_the_patched_object() {
    let path = fixture_path("pod-sidecar-nginx.json");
    let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let out = run(&["review", &path], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let response = &printed["review"]["response"];
    assert_eq!(printed["review"]["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["uid"], review["request"]["uid"]);
    let patch = support::decode_patch(response).unwrap().expect("a patch");
    assert_eq!(printed["patch"], patch, "the decoded patch is printed too");
    let patched = support::apply(&review["request"]["object"], &patch).unwrap();
    assert_eq!(printed["object"], patched);
    assert_eq!(support::pod_rule_violations(&patched), Vec::<String>::new());
    assert_admissible(&[patched]);
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    // `entourage review … | head -c 64`: the reader takes a little and closes the pipe. The output here (a Pod of
    // 300 containers, printed whole) is several times the pipe's 64 KiB buffer, so the writer meets the closed pipe.
    let containers: Vec<Value> = (0..300)
        .map(|i| json!({"name": format!("app-{i}"), "image": "nginx", "env": [{"name": "PADDING", "value": "x".repeat(200)}]}))
        .collect();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "big", "namespace": "default",
                     "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/app.log"}},
        "spec": {"containers": containers},
    });
    let review = support::review(("", "v1", "Pod"), "default", "CREATE", &pod).to_string();
    for (args, input) in [
        (vec!["review", "-"], review),
        (vec!["inject", "-f", "-"], pod.to_string()),
    ] {
        let mut child = start(&args, Some(&input));
        let mut first = [0u8; 64];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The read end was dropped with the handle: the rest of the output meets a closed pipe.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
}

#[test]
fn review_of_a_denied_pod_reads_stdin_and_prints_no_object() {
    let text = std::fs::read_to_string(fixture_path("pod-denied-relative-path.json")).unwrap();
    let out = run(&["review", "-"], Some(&text));
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["review"]["response"]["allowed"], false);
    assert!(printed["review"]["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("entourage.dev/"));
    assert!(printed.get("object").is_none() && printed.get("patch").is_none());

    let out = run(&["review", "-"], Some("{\"kind\": \"Pod\"}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an AdmissionReview"));
}
