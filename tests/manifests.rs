//! The install manifests: valid for the API server (strict schema), consistent with each other, with a config
//! the binary loads, args the binary accepts, and matchConditions that compile and select what they promise.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use base64::Engine;
use entourage::core::config::Config;
use serde::Deserialize;
use serde_json::{json, Value};
use support::{apiserver::bin, SchemaCase};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_yaml(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `scripts/render-manifests.sh` with `args`.
fn render(args: &[&str]) -> Vec<Value> {
    let out = Command::new("bash")
        .arg(root().join("scripts/render-manifests.sh"))
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "render-manifests failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_yaml(&String::from_utf8(out.stdout).unwrap())
}

/// Dev certificates in a temporary directory, as `make certs` writes them.
fn dev_certs() -> tempfile::TempDir {
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

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn base() -> Vec<Value> {
    render(&[])
}

fn webhooks(docs: &[Value]) -> Vec<Value> {
    find(docs, "MutatingWebhookConfiguration", "entourage")["webhooks"]
        .as_array()
        .unwrap()
        .clone()
}

fn webhook<'a>(hooks: &'a [Value], name: &str) -> &'a Value {
    hooks.iter().find(|w| w["name"] == name).unwrap()
}

fn container(docs: &[Value]) -> Value {
    find(docs, "Deployment", "entourage")["spec"]["template"]["spec"]["containers"][0].clone()
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_rendered_manifest_validates_strictly_against_the_kubernetes_schema() {
    let certs = dev_certs();
    let docs = render(&[
        "--certs",
        certs.path().to_str().unwrap(),
        "--image",
        "registry.local/entourage:dev",
    ]);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "Secret",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    let cases: Vec<SchemaCase> = docs
        .iter()
        .map(|d| SchemaCase {
            name: format!("{} {}", d["kind"], d["metadata"]["name"]),
            object: d.clone(),
            strict: true,
        })
        .collect();
    assert_eq!(support::schema_violations(&cases), Vec::<String>::new());
    // The Deployment's own Pod passes the same rules the apiserver applies to a Pod.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "entourage-0"},
        "spec": find(&docs, "Deployment", "entourage")["spec"]["template"]["spec"],
    });
    assert_eq!(support::pod_rule_violations(&pod), Vec::<String>::new());
}

#[test]
fn renderer_writes_the_ca_bundle_the_secret_and_the_image() {
    let certs = dev_certs();
    let docs = render(&[
        "--certs",
        certs.path().to_str().unwrap(),
        "--image",
        "registry.local/entourage:dev",
    ]);
    let b64 = |f: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(certs.path().join(f)).unwrap());
    for hook in webhooks(&docs) {
        assert_eq!(hook["clientConfig"]["caBundle"], b64("ca.crt"), "{}", hook["name"]);
    }
    let secret = find(&docs, "Secret", "entourage-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert_eq!(secret["data"][key], b64(key), "{key}");
    }
    assert_eq!(container(&docs)["image"], "registry.local/entourage:dev");
    let config = config_of(&docs);
    assert_eq!(config.images.entourage, "registry.local/entourage:dev");
    // The namespace comes before the objects that live in it.
    let ns = docs.iter().position(|d| d["kind"] == "Namespace").unwrap();
    assert_eq!(ns, 0);
}

#[test]
fn base_without_options_has_no_ca_bundle_and_no_secret() {
    let docs = base();
    assert!(docs.iter().all(|d| d["kind"] != "Secret"));
    for hook in webhooks(&docs) {
        assert!(hook["clientConfig"].get("caBundle").is_none());
    }
}

/// Objects keyed by kind and name.
fn by_identity(docs: Vec<Value>) -> std::collections::BTreeMap<String, Value> {
    docs.into_iter()
        .map(|d| (format!("{}/{}", d["kind"], d["metadata"]["name"]), d))
        .collect()
}

fn kubectl_kustomize(dir: &Path) -> Option<Vec<Value>> {
    let out = Command::new("kubectl").arg("kustomize").arg(dir).output().ok()?;
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(parse_yaml(&String::from_utf8(out.stdout).unwrap()))
}

#[test]
fn kubectl_kustomize_gives_the_same_objects_as_the_renderer() {
    let Some(kustomized) = kubectl_kustomize(&root().join("manifests")) else {
        eprintln!("kubectl is not installed: comparing with kustomize skipped");
        return;
    };
    assert_eq!(by_identity(kustomized), by_identity(base()));
}

#[test]
fn configmap_config_is_the_built_in_default_and_loads() {
    assert_eq!(config_of(&base()), Config::default());
}

fn config_of(docs: &[Value]) -> Config {
    let text = find(docs, "ConfigMap", "entourage")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    Config::from_yaml(&text, "ConfigMap entourage").unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `entourage <args> --check` with the container's paths mapped to local files, as the kubelet's volumes
/// would provide them.
fn check_args(docs: &[Value], args: &[String]) {
    let certs = dev_certs();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        find(docs, "ConfigMap", "entourage")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let c = container(docs);
    let mounts = c["volumeMounts"].as_array().unwrap();
    let volumes = find(docs, "Deployment", "entourage")["spec"]["template"]["spec"]["volumes"]
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
            if volume.get("configMap").is_some() {
                assert!(
                    find(docs, "ConfigMap", volume["configMap"]["name"].as_str().unwrap())["data"]
                        .get(key)
                        .is_some()
                );
                config.path().display().to_string()
            } else {
                assert_eq!(volume["secret"]["secretName"], "entourage-tls");
                assert!(["tls.crt", "tls.key", "ca.crt"].contains(&key), "{key}");
                certs.path().join(key).display().to_string()
            }
        })
        .collect();
    let out = Command::new(bin()).args(&mapped).arg("--check").output().unwrap();
    assert!(
        out.status.success(),
        "entourage {mapped:?} --check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deployment_args_parse_and_pass_the_startup_checks() {
    let docs = base();
    let args = args_of(&container(&docs));
    assert_eq!(&args[..3], ["serve", "--listen", "0.0.0.0:8443"]);
    check_args(&docs, &args);
}

#[test]
fn deployment_is_hardened_probed_and_spread() {
    let docs = base();
    let deployment = find(&docs, "Deployment", "entourage");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    let c = container(&docs);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["runAsUser"], 65532);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS");
        assert_eq!(c[probe]["httpGet"]["port"], "https");
    }
    assert_eq!(
        c["ports"][0],
        json!({"name": "https", "containerPort": 8443, "protocol": "TCP"})
    );
    for section in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(c["resources"][section][resource].is_string(), "{section}.{resource}");
        }
    }
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert!(spread.iter().any(|s| s["topologyKey"] == "kubernetes.io/hostname"
        && s["whenUnsatisfiable"] == "DoNotSchedule"
        && selects(&s["labelSelector"]["matchLabels"], labels)));
    // The Service, the PDB and the Deployment's selector all pick these Pods.
    assert!(selects(&spec["selector"]["matchLabels"], labels));
    assert!(selects(
        &find(&docs, "Service", "entourage")["spec"]["selector"],
        labels
    ));
    let pdb = &find(&docs, "PodDisruptionBudget", "entourage")["spec"];
    assert!(selects(&pdb["selector"]["matchLabels"], labels));
    assert_eq!(pdb["minAvailable"], 1);
    let service = &find(&docs, "Service", "entourage")["spec"]["ports"][0];
    assert_eq!(
        (service["port"].clone(), service["targetPort"].clone()),
        (json!(443), json!("https"))
    );
    assert_eq!(pod["serviceAccountName"], "entourage");
    assert!(find(&docs, "ServiceAccount", "entourage")["metadata"]["namespace"] == "entourage-system");
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn webhooks_call_the_service_with_the_documented_policies() {
    let docs = base();
    let hooks = webhooks(&docs);
    assert_eq!(hooks.len(), 2);
    for hook in &hooks {
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["admissionReviewVersions"], json!(["v1", "v1beta1"]));
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(
            hook["clientConfig"]["service"],
            json!({"name": "entourage", "namespace": "entourage-system", "path": "/mutate", "port": 443})
        );
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"],
            json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "entourage-system"]}])
        );
    }
    let pods = webhook(&hooks, "pods.entourage.dev");
    assert_eq!(pods["failurePolicy"], "Fail");
    assert_eq!(pods["reinvocationPolicy"], "IfNeeded");
    assert_eq!(pods["rules"][0]["resources"], json!(["pods"]));
    assert_eq!(pods["rules"][0]["operations"], json!(["CREATE"]));
    let jobs = webhook(&hooks, "jobs.entourage.dev");
    assert_eq!(jobs["failurePolicy"], "Ignore");
    assert_eq!(jobs["rules"][0]["apiGroups"], json!(["batch"]));
    assert_eq!(jobs["rules"][0]["resources"], json!(["jobs", "cronjobs"]));
}

#[test]
fn rbac_allows_only_get_and_patch_on_the_own_webhook_configuration() {
    let docs = base();
    let role = find(&docs, "ClusterRole", "entourage");
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["entourage"], "verbs": ["get", "patch"],
        }])
    );
    let args = args_of(&container(&docs));
    let at = args.iter().position(|a| a == "--patch-ca-bundle").unwrap();
    assert_eq!(
        args[at + 1],
        "entourage",
        "the patched configuration is the one RBAC allows"
    );
    let binding = find(&docs, "ClusterRoleBinding", "entourage");
    assert_eq!(binding["roleRef"]["name"], "entourage");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "entourage", "namespace": "entourage-system"}])
    );
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert!(!kinds.contains("Role") && !kinds.contains("RoleBinding"));
}

fn eval(program: &cel::Program, object: &Value) -> cel::Value {
    let mut context = cel::Context::default();
    context.add_variable("object", object).unwrap();
    context.add_variable("oldObject", Value::Null).unwrap();
    program
        .execute(&context)
        .unwrap_or_else(|e| panic!("evaluating: {e:?}"))
}

#[test]
fn match_conditions_compile_and_select_only_pods_with_an_entourage_annotation() {
    let docs = base();
    let hooks = webhooks(&docs);
    let conditions = webhook(&hooks, "pods.entourage.dev")["matchConditions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!conditions.is_empty());
    let pod =
        |metadata: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": []}});
    let cases = [
        (
            "annotated",
            pod(json!({"name": "a", "annotations": {"entourage.dev/sidecar-logs": "/var/log/a.log"}})),
            true,
        ),
        (
            "opted out",
            pod(json!({"name": "a", "annotations": {"entourage.dev/inject": "false"}})),
            true,
        ),
        (
            "other annotations",
            pod(json!({"name": "a", "annotations": {"example.com/entourage.dev": "x", "team": "a"}})),
            false,
        ),
        ("empty annotations", pod(json!({"name": "a", "annotations": {}})), false),
        ("no annotations", pod(json!({"name": "a"})), false),
    ];
    for condition in &conditions {
        let expression = condition["expression"].as_str().unwrap();
        let program = cel::Program::compile(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
        for (name, object, expected) in &cases {
            assert_eq!(
                eval(&program, object),
                cel::Value::Bool(*expected),
                "{} on {name}",
                condition["name"]
            );
        }
    }
}

#[test]
fn cert_manager_overlay_issues_the_secret_the_deployment_mounts_and_injects_the_ca() {
    let dir = root().join("manifests/overlays/cert-manager");
    let kustomization = &parse_yaml(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())[0];
    let mut objects = Vec::new();
    for r in kustomization["resources"].as_array().unwrap() {
        let path = dir.join(r.as_str().unwrap());
        if path.is_file() {
            objects.extend(parse_yaml(&std::fs::read_to_string(path).unwrap()));
        } else {
            assert_eq!(
                path.canonicalize().unwrap(),
                root().join("manifests/base").canonicalize().unwrap()
            );
        }
    }
    // cert-manager's CRDs are not in the Kubernetes schema: check their structure here.
    let issuers: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Issuer")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    let certificates: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Certificate").collect();
    for o in &objects {
        assert_eq!(o["apiVersion"], "cert-manager.io/v1");
        assert_eq!(o["metadata"]["namespace"], "entourage-system");
        match o["kind"].as_str().unwrap() {
            "Issuer" => assert!(o["spec"].get("selfSigned").is_some() || o["spec"]["ca"]["secretName"].is_string()),
            "Certificate" => {
                let issuer = &o["spec"]["issuerRef"];
                assert_eq!(issuer["kind"], "Issuer");
                assert!(issuers.contains(issuer["name"].as_str().unwrap()), "{issuer}");
                assert!(o["spec"]["secretName"].is_string());
            }
            other => panic!("unexpected {other}"),
        }
    }
    for o in objects
        .iter()
        .filter(|o| o["kind"] == "Issuer" && o["spec"].get("ca").is_some())
    {
        let secret = &o["spec"]["ca"]["secretName"];
        assert!(
            certificates
                .iter()
                .any(|c| &c["spec"]["secretName"] == secret && c["spec"]["isCA"] == true),
            "the CA issuer's Secret comes from a CA Certificate"
        );
    }
    let serving = certificates
        .iter()
        .find(|c| c["spec"]["secretName"] == "entourage-tls")
        .expect("a Certificate writes the Secret the Deployment mounts");
    let dns: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(dns.contains(&support::apiserver::SERVER_NAME), "{dns:?}");
    // The patches: the webhook annotation names that Certificate; the Deployment keeps valid args.
    let patch = |name: &str| parse_yaml(&std::fs::read_to_string(dir.join(name)).unwrap()).remove(0);
    let names: Vec<&str> = kustomization["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"webhook-inject-ca.yaml") && names.contains(&"deployment-args.yaml"));
    let inject = patch("webhook-inject-ca.yaml");
    assert_eq!(
        inject["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("entourage-system/{}", serving["metadata"]["name"].as_str().unwrap())
    );
    let args = args_of(&patch("deployment-args.yaml")["spec"]["template"]["spec"]["containers"][0]);
    assert!(!args.contains(&"--patch-ca-bundle".to_string()));
    check_args(&base(), &args);
    // With kubectl at hand, render the overlay and validate what the schema knows strictly.
    if let Some(rendered) = kubectl_kustomize(&dir) {
        let cases: Vec<SchemaCase> = rendered
            .iter()
            .filter(|d| d["apiVersion"] != "cert-manager.io/v1")
            .map(|d| SchemaCase {
                name: format!("overlay {} {}", d["kind"], d["metadata"]["name"]),
                object: d.clone(),
                strict: true,
            })
            .collect();
        assert_eq!(support::schema_violations(&cases), Vec::<String>::new());
        let kinds: BTreeSet<&str> = rendered.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert!(!kinds.contains("ClusterRole"), "no API access needed with cert-manager");
        assert_eq!(args_of(&container(&rendered)), args);
    }
}
