//! The kustomize manifests (base, dev overlay, cert-manager overlay): valid for the API server (strict schema),
//! consistent with each other, with a config the binary loads, args the binary accepts, and matchConditions that
//! compile and select what they promise. Rendered by `kubectl kustomize`, as `make deploy` applies them.

mod support;

use std::collections::BTreeSet;

use entourage::core::config::Config;
use serde_json::{json, Value};
use support::install::{args_of, container, dev_overlay, find, kustomize, parse_yaml, root, webhooks};

/// `kubectl kustomize manifests`: the base.
fn base() -> Option<Vec<Value>> {
    kustomize(&root().join("manifests"))
}

fn webhook<'a>(hooks: &'a [Value], name: &str) -> &'a Value {
    hooks.iter().find(|w| w["name"] == name).unwrap()
}

const DEV_IMAGE: &str =
    "registry.local/entourage@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn every_overlay_validates_strictly_against_the_kubernetes_schema() {
    let certs = support::install::dev_certs();
    let Some(dev) = dev_overlay(certs.path(), DEV_IMAGE) else {
        return;
    };
    let kinds: BTreeSet<&str> = dev.iter().map(|d| d["kind"].as_str().unwrap()).collect();
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
        "NetworkPolicy",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(
        support::install::assert_valid_strictly("dev overlay", &dev),
        Vec::<String>::new()
    );
    let base = base().unwrap();
    assert_eq!(
        support::install::assert_valid_strictly("base", &base),
        Vec::<String>::new()
    );
    let cert_manager = kustomize(&root().join("manifests/overlays/cert-manager")).unwrap();
    let custom = support::install::assert_valid_strictly("cert-manager overlay", &cert_manager);
    assert_eq!(custom, ["Certificate", "Certificate", "Issuer", "Issuer"]);
}

#[test]
fn dev_overlay_writes_the_ca_bundle_the_secret_and_the_image() {
    let certs = support::install::dev_certs();
    let Some(docs) = dev_overlay(certs.path(), DEV_IMAGE) else {
        return;
    };
    let file = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
    for hook in webhooks(&docs) {
        assert_eq!(
            support::install::base64_field(&hook["clientConfig"]["caBundle"]),
            file("ca.crt"),
            "{}",
            hook["name"]
        );
    }
    let secret = find(&docs, "Secret", "entourage-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert_eq!(support::install::base64_field(&secret["data"][key]), file(key), "{key}");
    }
    // One image, pinned by digest, for the webhook and for the containers it injects.
    assert_eq!(container(&docs)["image"], DEV_IMAGE);
    let config = config_of(&docs);
    assert_eq!(config.images.entourage, DEV_IMAGE);
    // The carrier of the image stays out of what is applied.
    assert!(docs.iter().all(|d| d["metadata"]["name"] != "entourage-dev-inputs"));
    // The namespace comes before the objects that live in it.
    let ns = docs.iter().position(|d| d["kind"] == "Namespace").unwrap();
    assert_eq!(ns, 0);
    // Apart from those, the dev overlay is the base.
    let mut base = support::install::by_identity(base().unwrap());
    for (id, mut object) in support::install::by_identity(docs) {
        if id == "Secret/entourage-tls" {
            continue;
        }
        if id == "MutatingWebhookConfiguration/entourage" {
            for hook in object["webhooks"].as_array_mut().unwrap() {
                hook["clientConfig"].as_object_mut().unwrap().remove("caBundle");
            }
        }
        if id == "Deployment/entourage" {
            object["spec"]["template"]["spec"]["containers"][0]["image"] =
                container(&base.values().cloned().collect::<Vec<_>>())["image"].clone();
        }
        if id == "ConfigMap/entourage" {
            let text = object["data"]["config.yaml"]
                .as_str()
                .unwrap()
                .replace(DEV_IMAGE, "ghcr.io/entourage-dev/entourage:0.1.0");
            object["data"]["config.yaml"] = json!(text);
        }
        assert_eq!(Some(object), base.remove(&id), "{id}");
    }
    assert!(base.is_empty(), "only in the base: {:?}", base.keys());
}

#[test]
fn base_without_the_dev_overlay_has_no_ca_bundle_and_no_secret() {
    let Some(docs) = base() else { return };
    assert!(docs.iter().all(|d| d["kind"] != "Secret"));
    for hook in webhooks(&docs) {
        assert!(hook["clientConfig"].get("caBundle").is_none());
    }
}

#[test]
fn configmap_config_is_the_built_in_default_and_loads() {
    let Some(docs) = base() else { return };
    assert_eq!(config_of(&docs), Config::default());
    // The dev overlay writes the image between the only two double quotes of config.yaml.
    let text = find(&docs, "ConfigMap", "entourage")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(text.matches('"').count(), 2, "{text}");
    assert!(text.contains(&format!("entourage: \"{}\"", Config::default().images.entourage)));
}

fn config_of(docs: &[Value]) -> Config {
    let text = find(docs, "ConfigMap", "entourage")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    Config::from_yaml(&text, "ConfigMap entourage").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn deployment_args_parse_and_pass_the_startup_checks() {
    let Some(docs) = base() else { return };
    let args = args_of(&container(&docs));
    assert_eq!(&args[..3], ["serve", "--listen", "0.0.0.0:8443"]);
    let certs = support::install::dev_certs();
    support::install::check_args(&docs, &args, certs.path());
}

#[test]
fn network_policy_opens_the_webhook_port_the_metrics_port_to_monitoring_only_and_egress_to_the_apiserver() {
    let Some(docs) = base() else { return };
    let policy = &find(&docs, "NetworkPolicy", "entourage")["spec"];
    let labels = &find(&docs, "Deployment", "entourage")["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&policy["podSelector"]["matchLabels"], labels));
    assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
    // The apiserver may come from anywhere: no `from` on the webhook's port (by name, as the container has it);
    // the metrics port, served apart (`--metrics-listen`), only from the monitoring namespace.
    assert_eq!(
        policy["ingress"],
        json!([
            {"ports": [{"port": "https", "protocol": "TCP"}]},
            {"ports": [{"port": "metrics", "protocol": "TCP"}],
             "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        ])
    );
    assert_eq!(container(&docs)["ports"][0]["name"], "https");
    assert_eq!(container(&docs)["ports"][1]["name"], "metrics");
    let port = container(&docs)["ports"][1]["containerPort"].clone();
    assert!(args_of(&container(&docs))
        .windows(2)
        .any(|w| w[0] == "--metrics-listen" && w[1] == format!("0.0.0.0:{port}")));
    assert_eq!(
        policy["egress"],
        json!([{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}])
    );
}

#[test]
fn service_account_token_is_mounted_only_where_the_ca_bundle_is_patched() {
    let Some(docs) = base() else { return };
    let pod = &find(&docs, "Deployment", "entourage")["spec"]["template"]["spec"];
    assert!(args_of(&container(&docs)).contains(&"--patch-ca-bundle".to_string()));
    assert_eq!(pod["automountServiceAccountToken"], true);
    let overlay = kustomize(&root().join("manifests/overlays/cert-manager")).unwrap();
    let pod = &find(&overlay, "Deployment", "entourage")["spec"]["template"]["spec"];
    assert!(!args_of(&container(&overlay)).contains(&"--patch-ca-bundle".to_string()));
    assert_eq!(pod["automountServiceAccountToken"], false);
    // Nothing to skip there: the overlay drops the base's reason for mounting it.
    let annotations = &find(&overlay, "Deployment", "entourage")["metadata"]["annotations"];
    assert!(annotations.get("checkov.io/skip-token").is_none(), "{annotations}");
}

#[test]
fn deployment_is_hardened_probed_and_spread() {
    let Some(docs) = base() else { return };
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
    let Some(docs) = base() else { return };
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
        // Never its own namespace nor kube-system; the default revision: objects and namespaces without a
        // revision label (docs/operations.md, "Revisions").
        let default_revision = json!({"key": "entourage.dev/rev", "operator": "DoesNotExist"});
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"],
            json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "entourage-system"]}, default_revision])
        );
        assert_eq!(hook["objectSelector"]["matchExpressions"], json!([default_revision]));
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
    let Some(docs) = base() else { return };
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
    let Some(docs) = base() else { return };
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
    let Some(rendered) = kustomize(&dir) else { return };
    let certs = support::install::dev_certs();
    support::install::check_args(&rendered, &args, certs.path());
    // Rendered, the overlay's objects are the files' objects, and the base's Deployment runs those args.
    let kinds: BTreeSet<&str> = rendered.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert!(!kinds.contains("ClusterRole"), "no API access needed with cert-manager");
    assert_eq!(args_of(&container(&rendered)), args);
    for object in &objects {
        let name = object["metadata"]["name"].as_str().unwrap();
        assert_eq!(find(&rendered, object["kind"].as_str().unwrap(), name), object);
    }
    assert_eq!(webhooks(&rendered).len(), 2);
}
