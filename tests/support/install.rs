//! The install side in tests: the tools (`make tools` puts helm, kubectl and checkov under target/tools; promtool
//! comes from Debian's prometheus package), the kustomize and Helm renderings, and the checks every rendering
//! must pass. Used by the `install_*` tests as `support::install`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_json::Value;

use crate::support::{apiserver::bin, SchemaCase};

/// The repository.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool the install tests run: from target/tools (`make tools`), else from PATH. Missing, the test fails under
/// CI (`CI=true`, where .ci/run installs every tool) and says it is skipped elsewhere ([`crate::support::skip`]).
pub fn tool(name: &str) -> Option<PathBuf> {
    let tools = root().join("target/tools");
    let local = [tools.join("bin").join(name), tools.join(name).join("bin").join(name)];
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(found) = local.into_iter().chain(on_path).find(|p| p.is_file()) {
        return Some(found);
    }
    crate::support::skip(&format!("{name} is not installed; `make tools` installs it"));
    None
}

/// Runs `program args`, failing the test with its stderr when it fails; its stdout.
pub fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{} {}: {}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Every document of a multi-document YAML stream, empty ones left out.
pub fn parse_yaml(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl kustomize DIR`.
pub fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let kubectl = tool("kubectl")?;
    Some(parse_yaml(&run(&kubectl, &["kustomize", dir.to_str().unwrap()])))
}

/// Dev certificates in a temporary directory, as `make certs` writes them.
pub fn dev_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(bin())
        .args(["certs", "--out"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// manifests/overlays/dev rendered with `certs` and `image`, as `make manifests` does: a copy of manifests/ with
/// the overlay's two git-ignored inputs written in, so that tests never write into the source tree.
pub fn dev_overlay(certs: &Path, image: &str) -> Option<Vec<Value>> {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&root().join("manifests"), &copy.path().join("manifests"));
    let overlay = copy.path().join("manifests/overlays/dev");
    std::fs::create_dir_all(overlay.join("certs")).unwrap();
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(certs.join(f), overlay.join("certs").join(f)).unwrap();
    }
    std::fs::write(overlay.join("image.env"), format!("image={image}\n")).unwrap();
    kustomize(&overlay)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        // The overlay's own inputs, if a developer ran `make manifests`, are replaced by the test's.
        if name == "certs" || name == "image.env" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// The chart.
pub fn chart() -> PathBuf {
    root().join("charts/entourage")
}

/// `helm template entourage charts/entourage -n entourage-system` with extra arguments (`-f`, `--set`…).
pub fn helm_template(args: &[&str]) -> Option<Vec<Value>> {
    helm_template_release("entourage", args)
}

/// `helm template` of the chart as the release `release`.
pub fn helm_template_release(release: &str, args: &[&str]) -> Option<Vec<Value>> {
    let helm = tool("helm")?;
    let chart = chart();
    let mut all = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        "entourage-system",
    ];
    all.extend_from_slice(args);
    Some(parse_yaml(&run(&helm, &all)))
}

/// The chart's value sets beside the defaults: charts/entourage/ci/*.yaml, by file name.
pub fn value_sets() -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_str().unwrap().to_string(), p))
        .collect()
}

/// The object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The only object of `kind`.
pub fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let all: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(all.len(), 1, "one {kind}");
    all[0]
}

/// The webhook container of the Deployment.
pub fn container(docs: &[Value]) -> Value {
    only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0].clone()
}

/// A container's args.
pub fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The webhooks of the MutatingWebhookConfiguration.
pub fn webhooks(docs: &[Value]) -> Vec<Value> {
    only(docs, "MutatingWebhookConfiguration")["webhooks"]
        .as_array()
        .unwrap()
        .clone()
}

/// Objects keyed by kind and name.
pub fn by_identity(docs: Vec<Value>) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d,
            )
        })
        .collect()
}

/// Validates every object whose schema Kubernetes ships (not cert-manager's or the Prometheus Operator's CRDs)
/// strictly; returns the kinds of the other objects, which the caller checks itself.
pub fn assert_valid_strictly(label: &str, docs: &[Value]) -> Vec<String> {
    // Kubernetes' own groups: the core group, dot-less groups (apps, batch, policy) and *.k8s.io.
    let (core, custom): (Vec<&Value>, Vec<&Value>) = docs.iter().partition(|d| {
        let group = d["apiVersion"]
            .as_str()
            .unwrap()
            .rsplit_once('/')
            .map_or("", |(g, _)| g);
        !group.contains('.') || group.ends_with(".k8s.io")
    });
    let cases: Vec<SchemaCase> = core
        .iter()
        .map(|d| SchemaCase {
            name: format!("{label}: {} {}", d["kind"], d["metadata"]["name"]),
            object: (*d).clone(),
            strict: true,
        })
        .collect();
    assert_eq!(crate::support::schema_violations(&cases), Vec::<String>::new());
    // The Deployment's own Pod passes the rules the apiserver applies to a Pod.
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "entourage-0"},
        "spec": only(docs, "Deployment")["spec"]["template"]["spec"],
    });
    assert_eq!(
        crate::support::pod_rule_violations(&pod),
        Vec::<String>::new(),
        "{label}"
    );
    custom.iter().map(|d| d["kind"].as_str().unwrap().to_string()).collect()
}

/// Runs `entourage <args> --check` with the container's paths mapped to local files, as the kubelet's volumes
/// would provide them: the rendered ConfigMap's keys, and the rendered Secret's keys (or `certs` when the Secret
/// comes from elsewhere: cert-manager, an existing Secret).
pub fn check_args(docs: &[Value], args: &[String], certs: &Path) {
    let files = tempfile::tempdir().unwrap();
    let c = container(docs);
    let mounts = c["volumeMounts"].as_array().unwrap().clone();
    let volumes = only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .clone();
    let mapped: Vec<String> = args
        .iter()
        .map(|a| {
            if !a.starts_with('/') {
                return a.clone();
            }
            // Every path must lie in a mounted ConfigMap or Secret volume that has that key.
            let mount = mounts
                .iter()
                .find(|m| Path::new(a).parent() == Some(Path::new(m["mountPath"].as_str().unwrap())))
                .unwrap_or_else(|| panic!("{a} is not in a mounted directory"));
            assert!(mount.get("subPath").is_none(), "subPath mounts never see updates");
            let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
            let key = Path::new(a).file_name().unwrap().to_str().unwrap();
            let local = files.path().join(key);
            if let Some(config_map) = volume.get("configMap") {
                let data = &find(docs, "ConfigMap", config_map["name"].as_str().unwrap())["data"];
                std::fs::write(&local, data[key].as_str().unwrap_or_else(|| panic!("no key {key}"))).unwrap();
            } else {
                let name = volume["secret"]["secretName"].as_str().unwrap();
                assert!(["tls.crt", "tls.key", "ca.crt"].contains(&key), "{key}");
                match docs
                    .iter()
                    .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)
                {
                    Some(secret) => std::fs::write(&local, base64_field(&secret["data"][key])).unwrap(),
                    None => {
                        std::fs::copy(certs.join(key), &local).unwrap();
                    }
                }
            }
            local.display().to_string()
        })
        .collect();
    let out = Command::new(bin()).args(&mapped).arg("--check").output().unwrap();
    assert!(
        out.status.success(),
        "entourage {mapped:?} --check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A base64 field as the apiserver decodes it (Go's decoder skips the line breaks kustomize writes).
pub fn base64_field(value: &Value) -> Vec<u8> {
    use base64::Engine;
    let text: String = value
        .as_str()
        .expect("a base64 string")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("valid base64")
}
