//! The Helm chart (charts/entourage): `helm lint` passes; with its defaults it renders the objects of the
//! kustomize dev overlay; every value set (charts/entourage/ci/*.yaml) renders objects the apiserver accepts in
//! strict mode, a config and args `entourage serve --check` accepts, and does what its values say.

mod support;

use std::{collections::BTreeMap, path::Path};

use entourage::core::config::Config;
use serde_json::{json, Value};
use support::apiserver::SERVER_NAME;
use support::install::{args_of, container, find, helm_template, only, tool, value_sets, webhooks};

const IMAGE: &str = "ghcr.io/entourage-dev/entourage:0.1.0";

/// `helm template` with a value set, its CA passed the way the values file says (`--set-file`).
fn render_set(path: &Path, certs: &Path) -> Option<Vec<Value>> {
    let ca = certs.join("ca.crt");
    let ca_value = format!("certificates.caBundle={}", ca.display());
    helm_template(&["-f", path.to_str().unwrap(), "--set-file", &ca_value])
}

#[test]
fn helm_lint_passes_strictly_for_the_defaults_and_every_value_set() {
    let Some(helm) = tool("helm") else { return };
    let chart = support::install::chart();
    support::install::run(&helm, &["lint", "--strict", chart.to_str().unwrap()]);
    let sets = value_sets();
    assert!(sets.len() >= 3, "{sets:?}");
    for path in sets.values() {
        support::install::run(
            &helm,
            &[
                "lint",
                "--strict",
                chart.to_str().unwrap(),
                "-f",
                path.to_str().unwrap(),
            ],
        );
    }
}

/// What differs by design between the chart and the dev overlay, taken out after checking it: Helm's own labels;
/// the Namespace, which `kubectl create namespace` makes before `helm install`; the certificate's bytes (each side
/// must put its own CA into every caBundle); the config's layout (both must load to the same config).
fn normalise(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let ca = docs
        .iter()
        .find(|d| d["kind"] == "Secret")
        .map(|s| support::install::base64_field(&s["data"]["ca.crt"]));
    let mut out = support::install::by_identity(docs);
    out.remove("Namespace/entourage-system");
    for (id, object) in out.iter_mut() {
        if let Some(labels) = object["metadata"].get_mut("labels").and_then(Value::as_object_mut) {
            for helm in [
                "app.kubernetes.io/instance",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/version",
            ] {
                labels.remove(helm);
            }
            labels.remove("helm.sh/chart");
        }
        match id.as_str() {
            "Secret/entourage-tls" => {
                let data = object["data"].as_object_mut().unwrap();
                for value in data.values_mut() {
                    assert!(!support::install::base64_field(value).is_empty());
                    *value = json!("<generated>");
                }
            }
            "MutatingWebhookConfiguration/entourage" => {
                for hook in object["webhooks"].as_array_mut().unwrap() {
                    let bundle = &mut hook["clientConfig"]["caBundle"];
                    assert_eq!(
                        Some(support::install::base64_field(bundle)),
                        ca,
                        "{id}: the caBundle is the Secret's CA"
                    );
                    *bundle = json!("<ca.crt>");
                }
            }
            "ConfigMap/entourage" => {
                let text = object["data"]["config.yaml"].as_str().unwrap();
                let config = Config::from_yaml(text, id).unwrap_or_else(|e| panic!("{e}"));
                object["data"]["config.yaml"] = json!(format!("{config:?}"));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn chart_defaults_render_the_same_objects_as_the_kustomize_dev_overlay() {
    let certs = support::install::dev_certs();
    let Some(kustomized) = support::install::dev_overlay(certs.path(), IMAGE) else {
        return;
    };
    let namespace = find(&kustomized, "Namespace", "entourage-system").clone();
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    // Without helm the test is skipped, and says so (`support::install::tool`).
    let Some(chart) = helm_template(&[]) else {
        return;
    };
    let chart = normalise(chart);
    let mut kustomized = normalise(kustomized);
    for (id, object) in chart {
        assert_eq!(Some(&object), kustomized.get(&id), "{id}: chart, then kustomize");
        kustomized.remove(&id);
    }
    assert!(kustomized.is_empty(), "only in kustomize: {:?}", kustomized.keys());
}

#[test]
fn every_value_set_validates_strictly_and_passes_serve_check() {
    let certs = support::install::dev_certs();
    let mut sets: Vec<(String, Option<Vec<Value>>)> = vec![("defaults".into(), helm_template(&[]))];
    for (name, path) in value_sets() {
        sets.push((name, render_set(&path, certs.path())));
    }
    for (name, docs) in sets {
        let Some(docs) = docs else { return };
        let custom = support::install::assert_valid_strictly(&name, &docs);
        for kind in &custom {
            assert!(
                ["Issuer", "Certificate", "ServiceMonitor", "PrometheusRule"].contains(&kind.as_str()),
                "{name}: {kind}"
            );
        }
        support::install::check_args(&docs, &args_of(&container(&docs)), certs.path());
    }
}

#[tokio::test]
async fn generated_certificate_is_served_and_verified_as_the_apiserver_does() {
    let Some(docs) = helm_template(&[]) else { return };
    let secret = find(&docs, "Secret", "entourage-tls");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(
            dir.path().join("certs").join(key),
            support::install::base64_field(&secret["data"][key]),
        )
        .unwrap();
    }
    // The caBundle the apiserver gets is the Secret's CA; the client trusts only it, for the Service's name.
    let bundle = support::install::base64_field(&webhooks(&docs)[0]["clientConfig"]["caBundle"]);
    assert_eq!(bundle, support::install::base64_field(&secret["data"]["ca.crt"]));
    let webhook = support::apiserver::Webhook::start_in(dir, &[]);
    let mut client = webhook.connect().await;
    let reply = client.send("GET", "/readyz", Vec::new()).await;
    assert_eq!(reply.status, 200, "{SERVER_NAME}");
}

/// `helm template --dry-run=server` against tests/support/kube_api.py holding `objects`: what `helm upgrade`
/// would apply, the chart's `lookup` answered as by a cluster.
fn render_against_cluster(objects: &[Value]) -> Option<Vec<Value>> {
    use std::io::BufRead;
    let helm = tool("helm")?;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("objects.json");
    std::fs::write(&state, serde_json::to_vec(objects).unwrap()).unwrap();
    let mut api = std::process::Command::new("python3")
        .arg(support::install::root().join("tests/support/kube_api.py"))
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut port = String::new();
    std::io::BufReader::new(api.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let server = format!("http://127.0.0.1:{}", port.trim());
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "u"}}],
    });
    std::fs::write(&kubeconfig, config.to_string()).unwrap();
    let chart = support::install::chart();
    let args = [
        "template",
        "entourage",
        chart.to_str().unwrap(),
        "--namespace",
        "entourage-system",
        "--dry-run=server",
        "--disable-openapi-validation",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    let out = std::process::Command::new(&helm).args(args).output().unwrap();
    let _ = api.kill();
    let _ = api.wait();
    assert!(
        out.status.success(),
        "helm template --dry-run=server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(support::install::parse_yaml(&String::from_utf8(out.stdout).unwrap()))
}

#[test]
fn helm_upgrade_keeps_the_certificate_secret_and_its_ca_bundle() {
    // The first install: no Secret in the cluster, the chart generates one.
    let Some(first) = render_against_cluster(&[]) else {
        return;
    };
    let mut installed = find(&first, "Secret", "entourage-tls").clone();
    // As Helm leaves it in the cluster: owned by the release.
    installed["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    installed["metadata"]["annotations"] = json!({
        "meta.helm.sh/release-name": "entourage", "meta.helm.sh/release-namespace": "entourage-system",
    });
    // The upgrade finds it and keeps its certificate, key and CA, and the caBundle stays that CA.
    let upgrade = render_against_cluster(std::slice::from_ref(&installed)).unwrap();
    let kept = find(&upgrade, "Secret", "entourage-tls");
    assert_eq!(kept["data"], installed["data"]);
    for hook in webhooks(&upgrade) {
        assert_eq!(
            hook["clientConfig"]["caBundle"], installed["data"]["ca.crt"],
            "{}",
            hook["name"]
        );
    }
    // Without it (a cluster where it was deleted), a new CA.
    let fresh = render_against_cluster(&[]).unwrap();
    assert_ne!(
        find(&fresh, "Secret", "entourage-tls")["data"]["ca.crt"],
        installed["data"]["ca.crt"]
    );
}

#[test]
fn gke_private_value_set_listens_on_10250_pins_the_digest_and_narrows_ingress() {
    let certs = support::install::dev_certs();
    let Some(docs) = render_set(&value_sets()["gke-private"], certs.path()) else {
        return;
    };
    let c = container(&docs);
    let digest =
        "ghcr.io/entourage-dev/entourage@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(c["image"], digest);
    assert_eq!(c["imagePullPolicy"], "Always");
    let config = Config::from_yaml(
        find(&docs, "ConfigMap", "entourage")["data"]["config.yaml"]
            .as_str()
            .unwrap(),
        "cm",
    )
    .unwrap();
    assert_eq!(
        config.images.entourage, digest,
        "injected containers use the pinned image too"
    );
    assert_eq!(&args_of(&c)[1..3], ["--listen", "0.0.0.0:10250"]);
    assert_eq!(c["ports"][0]["containerPort"], 10250);
    let pod = &only(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"]["cloud.google.com/gke-nodepool"], "system");
    assert_eq!(only(&docs, "Deployment")["spec"]["replicas"], 3);
    let annotations = &only(&docs, "Deployment")["metadata"]["annotations"];
    assert!(
        annotations.get("checkov.io/skip-image-digest").is_none()
            && annotations.get("checkov.io/skip-pull-policy").is_none()
    );
    let ingress = &only(&docs, "NetworkPolicy")["spec"]["ingress"];
    assert_eq!(
        ingress,
        &json!([
            {"ports": [{"port": "https", "protocol": "TCP"}], "from": [{"ipBlock": {"cidr": "172.16.0.0/28"}}]},
            {"ports": [{"port": "metrics", "protocol": "TCP"}],
             "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        ])
    );
    // Metrics have their own port, apart from the one the control plane reaches.
    assert!(args_of(&c)
        .windows(2)
        .any(|w| w == ["--metrics-listen", "0.0.0.0:9090"]));
}

#[test]
fn eks_value_set_uses_the_node_network_and_its_webhook_policies() {
    let certs = support::install::dev_certs();
    let Some(docs) = render_set(&value_sets()["eks-custom-cni"], certs.path()) else {
        return;
    };
    let pod = &only(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(container(&docs)["ports"][0]["containerPort"], 9443);
    let hooks = webhooks(&docs);
    let excluded = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "entourage-system"]});
    let pods = &hooks[0];
    assert_eq!(
        (pods["failurePolicy"].clone(), pods["timeoutSeconds"].clone()),
        (json!("Ignore"), json!(10))
    );
    assert!(pods.get("matchConditions").is_none());
    assert_eq!(pods["namespaceSelector"]["matchExpressions"], json!([excluded]));
    assert_eq!(
        pods["namespaceSelector"]["matchLabels"],
        json!({"entourage.dev/enabled": "true"})
    );
    assert_eq!(
        pods["objectSelector"]["matchExpressions"][0]["key"],
        "entourage.dev/skip"
    );
    let jobs = &hooks[1];
    assert_eq!(
        (jobs["failurePolicy"].clone(), jobs["timeoutSeconds"].clone()),
        (json!("Ignore"), json!(2))
    );
    assert_eq!(
        jobs["namespaceSelector"]["matchExpressions"][0], excluded,
        "never its own namespace"
    );
    assert_eq!(jobs["namespaceSelector"]["matchExpressions"][1]["key"], "team");
}

#[test]
fn cert_manager_value_set_needs_no_api_access_and_injects_the_ca() {
    let certs = support::install::dev_certs();
    let Some(docs) = render_set(&value_sets()["cert-manager"], certs.path()) else {
        return;
    };
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert!(
        !kinds.contains(&"ClusterRole") && !kinds.contains(&"Secret"),
        "{kinds:?}"
    );
    assert!(!args_of(&container(&docs)).contains(&"--patch-ca-bundle".to_string()));
    assert_eq!(
        only(&docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    assert_eq!(only(&docs, "ServiceAccount")["automountServiceAccountToken"], false);
    assert_eq!(only(&docs, "NetworkPolicy")["spec"]["egress"], json!([]));
    let serving = find(&docs, "Certificate", "entourage-serving");
    assert_eq!(serving["spec"]["secretName"], "entourage-tls");
    assert!(serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .contains(&json!(SERVER_NAME)));
    assert_eq!(
        serving["spec"]["issuerRef"]["name"],
        find(&docs, "Issuer", "entourage-ca")["metadata"]["name"]
    );
    let mwc = only(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "entourage-system/entourage-serving"
    );
    assert!(webhooks(&docs)
        .iter()
        .all(|h| h["clientConfig"].get("caBundle").is_none()));
    // The PrometheusRule carries the plain rules file's groups.
    let plain = support::install::parse_yaml(
        &std::fs::read_to_string(support::install::chart().join("files/alerts.yaml")).unwrap(),
    );
    assert_eq!(only(&docs, "PrometheusRule")["spec"]["groups"], plain[0]["groups"]);
    let monitor = only(&docs, "ServiceMonitor");
    // The alerts select job="entourage": the ServiceMonitor takes the job from this Service label.
    assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
    assert_eq!(
        find(&docs, "Service", "entourage")["metadata"]["labels"]["app.kubernetes.io/name"],
        "entourage"
    );
    // Scraped on the metrics port, which the NetworkPolicy opens to the monitoring namespace only.
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "http");
    let board = find(&docs, "ConfigMap", "entourage-dashboard");
    let board: Value = serde_json::from_str(board["data"]["entourage.json"].as_str().unwrap()).unwrap();
    assert_eq!(board["uid"], "entourage");
}

#[test]
fn existing_secret_value_set_mounts_it_writes_its_ca_and_carries_the_config() {
    let certs = support::install::dev_certs();
    let Some(docs) = render_set(&value_sets()["existing-secret"], certs.path()) else {
        return;
    };
    assert!(docs
        .iter()
        .all(|d| d["kind"] != "Secret" && d["kind"] != "ClusterRole" && d["kind"] != "NetworkPolicy"));
    let volumes = &only(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[1]["secret"]["secretName"], "webhook-serving");
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    for hook in webhooks(&docs) {
        assert_eq!(support::install::base64_field(&hook["clientConfig"]["caBundle"]), ca);
    }
    let text = find(&docs, "ConfigMap", "entourage")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let config = Config::from_yaml(text, "ConfigMap entourage").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.images.sidecar, "registry.local/busybox:1.36");
    assert_eq!(config.images.entourage, IMAGE);
    assert_ne!(config, Config::default());
}

#[test]
fn invalid_values_are_refused_with_the_value_and_the_rule() {
    let Some(helm) = tool("helm") else { return };
    let chart = support::install::chart();
    for (set, message) in [
        (
            "certificates.source=vault",
            r#"certificates.source "vault": one of generate, existingSecret, certManager"#,
        ),
        (
            "image.digest=0123abcd",
            r#"image.digest "0123abcd": a digest starts with sha256:"#,
        ),
    ] {
        let out = std::process::Command::new(&helm)
            .args(["template", "entourage", chart.to_str().unwrap(), "--set", set])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{set} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{set}: {stderr}");
    }
}
