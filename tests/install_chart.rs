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

/// What differs by design between the chart and the dev overlay, taken out after checking it: Helm's own labels,
/// and the release's instance label wherever it appears (the chart's selectors carry it, so that two releases
/// in one namespace never select each other's Pods; kustomize installs one entourage);
/// the Namespace, which `kubectl create namespace` makes before `helm install`; the certificate (the dev overlay
/// ships its Secret and puts its CA into every caBundle; the chart's default Job makes the Secret in the cluster,
/// and the replicas write the caBundle); the config's layout (both must load to the same config).
fn normalise(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let ca = docs
        .iter()
        .find(|d| d["kind"] == "Secret")
        .map(|s| support::install::base64_field(&s["data"]["ca.crt"]));
    let mut out = support::install::by_identity(docs);
    out.remove("Namespace/entourage-system");
    if let Some(secret) = out.remove("Secret/entourage-tls") {
        for value in secret["data"].as_object().unwrap().values() {
            assert!(!support::install::base64_field(value).is_empty());
        }
    }
    for (id, object) in out.iter_mut() {
        remove_key_everywhere(object, "app.kubernetes.io/instance");
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
            "MutatingWebhookConfiguration/entourage" => {
                for hook in object["webhooks"].as_array_mut().unwrap() {
                    let client = hook["clientConfig"].as_object_mut().unwrap();
                    let bundle = client.remove("caBundle").map(|b| support::install::base64_field(&b));
                    assert_eq!(
                        bundle, ca,
                        "{id}: the caBundle is the Secret's CA, or none without a Secret"
                    );
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

/// The webhook Pods' NetworkPolicy (not the certificate Jobs' hook).
fn webhook_policy(docs: &[Value]) -> &Value {
    let all: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["annotations"]["helm.sh/hook"].is_null())
        .collect();
    assert_eq!(all.len(), 1, "one NetworkPolicy for the webhook");
    all[0]
}

/// The chart's Helm hooks (the certificate Job and its RBAC), taken out of `docs`.
fn take_hooks(docs: &mut Vec<Value>) -> BTreeMap<String, Value> {
    let (hooks, rest): (Vec<Value>, Vec<Value>) = std::mem::take(docs)
        .into_iter()
        .partition(|d| d["metadata"]["annotations"]["helm.sh/hook"].is_string());
    *docs = rest;
    support::install::by_identity(hooks)
}

fn remove_key_everywhere(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| remove_key_everywhere(v, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| remove_key_everywhere(v, key)),
        _ => {}
    }
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
    let Some(mut chart) = helm_template(&[]) else {
        return;
    };
    let hooks = take_hooks(&mut chart);
    assert_eq!(
        hooks.keys().collect::<Vec<_>>(),
        [
            "Job/entourage-certs-create",
            "NetworkPolicy/entourage-certs",
            "Role/entourage-certs",
            "RoleBinding/entourage-certs",
            "ServiceAccount/entourage-certs"
        ],
        "the default certificate source makes the Secret in a hook Job"
    );
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
    let Some(docs) = helm_template(&["--set", "certificates.source=generate"]) else {
        return;
    };
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
    render_against_cluster_with(objects, &[])
}

/// `render_against_cluster`, with more `helm template` arguments.
fn render_against_cluster_with(objects: &[Value], extra: &[&str]) -> Option<Vec<Value>> {
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
    let out = std::process::Command::new(&helm)
        .args(args)
        .args(extra)
        .output()
        .unwrap();
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
    const GENERATE: &[&str] = &["--set", "certificates.source=generate"];
    let render_against_cluster = |objects: &[Value]| render_against_cluster_with(objects, GENERATE);
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
    let ingress = &webhook_policy(&docs)["spec"]["ingress"];
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
    let default_revision = json!({"key": "entourage.dev/rev", "operator": "DoesNotExist"});
    assert_eq!(
        pods["namespaceSelector"]["matchExpressions"],
        json!([excluded, default_revision])
    );
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
    assert_eq!(webhook_policy(&docs)["spec"]["egress"], json!([]));
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
            r#"certificates.source "vault": one of job, generate, existingSecret, certManager"#,
        ),
        (
            "certificates.patchCABundle=false",
            "certificates.source job needs certificates.patchCABundle",
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

/// Whether a Kubernetes label selector (matchLabels and matchExpressions) selects `labels`.
fn selects(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    let by_expressions = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str().unwrap() {
            "In" => labels.get(key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(key),
            "DoesNotExist" => !labels.contains_key(key),
            other => panic!("operator {other}"),
        }
    });
    by_labels && by_expressions
}

#[test]
fn exactly_one_revision_answers_for_each_pod_by_its_label_then_its_namespaces() {
    let certs = support::install::dev_certs();
    let Some(default) = helm_template(&[]) else { return };
    let canary = render_set(&value_sets()["revision-canary"], certs.path()).unwrap();
    let config = find(&canary, "ConfigMap", "entourage")["data"]["config.yaml"].clone();
    let config = Config::from_yaml(config.as_str().unwrap(), "revision-canary").unwrap();
    assert_eq!(config.revision.as_deref(), Some("canary"), "injected Pods record it");
    let installs = [("default", webhooks(&default)), ("canary", webhooks(&canary))];
    // (the Pod's entourage.dev/rev, its namespace's, the revision that must answer)
    let cases = [
        (None, None, Some("default")),
        (None, Some("canary"), Some("canary")),
        (Some("canary"), None, Some("canary")),
        (Some("canary"), Some("canary"), Some("canary")),
        // A Pod's own label wins over its namespace's; a revision nobody installed gets no webhook.
        (Some("canary"), Some("stable"), Some("canary")),
        (None, Some("stable"), None),
        (Some("stable"), Some("canary"), None),
    ];
    for kind in ["pods", "jobs"] {
        for (pod_rev, ns_rev, expected) in cases {
            let mut pod = BTreeMap::new();
            let mut namespace = BTreeMap::from([("kubernetes.io/metadata.name", "shop")]);
            if let Some(r) = pod_rev {
                pod.insert("entourage.dev/rev", r);
            }
            if let Some(r) = ns_rev {
                namespace.insert("entourage.dev/rev", r);
            }
            let answering: Vec<String> = installs
                .iter()
                .flat_map(|(rev, hooks)| hooks.iter().map(move |h| (rev, h)))
                .filter(|(_, h)| h["name"].as_str().unwrap().ends_with(&format!("{kind}.entourage.dev")))
                .filter(|(_, h)| selects(&h["namespaceSelector"], &namespace) && selects(&h["objectSelector"], &pod))
                .map(|(rev, h)| format!("{rev}:{}", h["name"].as_str().unwrap()))
                .collect();
            match expected {
                Some(rev) => assert!(
                    answering.len() == 1 && answering[0].starts_with(&format!("{rev}:")),
                    "{kind}, Pod {pod_rev:?}, namespace {ns_rev:?}: {answering:?}, expected {rev} alone"
                ),
                None => assert!(
                    answering.is_empty(),
                    "{kind}, Pod {pod_rev:?}, namespace {ns_rev:?}: {answering:?}"
                ),
            }
        }
    }
    // The release's own namespace stays excluded for every entry.
    let own = BTreeMap::from([
        ("kubernetes.io/metadata.name", "entourage-system"),
        ("entourage.dev/rev", "canary"),
    ]);
    assert!(webhooks(&canary)
        .iter()
        .all(|h| !selects(&h["namespaceSelector"], &own)));
}

#[test]
fn two_releases_in_one_namespace_select_only_their_own_pods() {
    let certs = support::install::dev_certs();
    let Some(default) = helm_template(&[]) else { return };
    let args = canary_args(&certs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let canary = support::install::helm_template_release("entourage-canary", &args).unwrap();
    let pods_of = |docs: &[Value]| {
        let labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].clone();
        serde_json::from_value::<BTreeMap<String, String>>(labels).unwrap()
    };
    let (ours, theirs) = (pods_of(&default), pods_of(&canary));
    for (docs, own, other) in [(&default, &ours, &theirs), (&canary, &theirs, &ours)] {
        let selectors = [
            only(docs, "Deployment")["spec"]["selector"].clone(),
            json!({"matchLabels": only(docs, "Service")["spec"]["selector"]}),
            only(docs, "PodDisruptionBudget")["spec"]["selector"].clone(),
            webhook_policy(docs)["spec"]["podSelector"].clone(),
        ];
        for selector in selectors {
            assert!(selects(&selector, &as_refs(own)), "{selector} selects its own Pods");
            assert!(
                !selects(&selector, &as_refs(other)),
                "{selector} does not select the other release's"
            );
        }
    }
}

fn as_refs(m: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn canary_args(certs: &tempfile::TempDir) -> Vec<String> {
    let ca = certs.path().join("ca.crt");
    vec![
        "-f".into(),
        value_sets()["revision-canary"].to_str().unwrap().into(),
        "--set-file".into(),
        format!("certificates.caBundle={}", ca.display()),
    ]
}

#[test]
fn an_upgrade_keeps_the_selector_of_a_deployment_made_by_an_older_chart() {
    let Some(fresh) = render_against_cluster(&[]) else {
        return;
    };
    let with_instance = json!({
        "app.kubernetes.io/name": "entourage", "app.kubernetes.io/component": "webhook",
        "app.kubernetes.io/instance": "entourage",
    });
    assert_eq!(
        only(&fresh, "Deployment")["spec"]["selector"]["matchLabels"],
        with_instance
    );
    // As an older chart left it: a Deployment's selector is immutable, so an upgrade that changed it would fail.
    let legacy = json!({"app.kubernetes.io/name": "entourage", "app.kubernetes.io/component": "webhook"});
    let mut installed = only(&fresh, "Deployment").clone();
    installed["spec"]["selector"]["matchLabels"] = legacy.clone();
    installed["spec"]["template"]["metadata"]["labels"] = legacy.clone();
    installed["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    installed["metadata"]["annotations"] = json!({
        "meta.helm.sh/release-name": "entourage", "meta.helm.sh/release-namespace": "entourage-system",
    });
    let upgrade = render_against_cluster(&[installed]).unwrap();
    let deployment = only(&upgrade, "Deployment");
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], legacy);
    // The old replicas stay behind the Service and the budget until the new ones are ready.
    assert_eq!(only(&upgrade, "Service")["spec"]["selector"], legacy);
    assert_eq!(
        only(&upgrade, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        legacy
    );
    assert_eq!(deployment["spec"]["template"]["metadata"]["labels"], with_instance);
}

#[test]
fn the_watchdog_and_its_rbac_are_rendered_only_when_enabled_and_its_args_parse() {
    let Some(off) = helm_template(&[
        "--set",
        "certificates.source=existingSecret",
        "--set",
        "certificates.patchCABundle=false",
    ]) else {
        return;
    };
    let kinds = |docs: &[Value]| -> Vec<String> { support::install::by_identity(docs.to_vec()).into_keys().collect() };
    assert!(!kinds(&off).iter().any(|k| k.contains("watchdog")), "{:?}", kinds(&off));
    let pod = &only(&off, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false, "no API call, no token");
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1);

    let on = helm_template(&[
        "--set",
        "certificates.source=existingSecret",
        "--set",
        "certificates.patchCABundle=false",
        "--set",
        "watchdog.enabled=true",
    ])
    .unwrap();
    for object in [
        "ClusterRole/entourage-watchdog",
        "ClusterRoleBinding/entourage-watchdog",
        "Role/entourage-watchdog",
        "RoleBinding/entourage-watchdog",
    ] {
        assert!(kinds(&on).iter().any(|k| k == object), "{object} in {:?}", kinds(&on));
    }
    let rules = &find(&on, "ClusterRole", "entourage-watchdog")["rules"];
    assert_eq!(
        rules,
        &json!([
            {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
             "resourceNames": ["entourage"], "verbs": ["get"]},
        ]),
        "lists, evicts and reads its own configuration; never deletes, patches or reads a Pod's spec"
    );
    let pod = &only(&on, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    let watchdog = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "watchdog")
        .unwrap();
    let mut argv = vec!["entourage".to_string()];
    argv.extend(args_of(watchdog));
    let parsed = <entourage::cli::Cli as clap::Parser>::try_parse_from(&argv);
    assert!(parsed.is_ok(), "{argv:?}: {:?}", parsed.err().map(|e| e.to_string()));
    let egress = &webhook_policy(&on)["spec"]["egress"];
    assert_eq!(egress[0]["ports"][0]["port"], 443, "the watchdog reaches the apiserver");
}

/// A Secret as `helm upgrade` left it in the cluster: owned by the release.
fn as_installed(secret: &Value) -> Value {
    let mut installed = secret.clone();
    installed["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    let annotations = installed["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut annotations = Value::Object(annotations);
    annotations["meta.helm.sh/release-name"] = json!("entourage");
    annotations["meta.helm.sh/release-namespace"] = json!("entourage-system");
    installed["metadata"]["annotations"] = annotations;
    installed
}

fn certificates_in(bundle: &Value) -> Vec<String> {
    let pem = String::from_utf8(support::install::base64_field(bundle)).unwrap();
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn a_generated_rotation_makes_a_new_pair_once_and_the_ca_bundle_keeps_trusting_the_previous_ca() {
    let render_against_cluster_with = |objects: &[Value], extra: &[&str]| {
        let mut args = vec!["--set", "certificates.source=generate"];
        args.extend_from_slice(extra);
        render_against_cluster_with(objects, &args)
    };
    let Some(first) = render_against_cluster_with(&[], &[]) else {
        return;
    };
    let installed = as_installed(find(&first, "Secret", "entourage-tls"));
    let old_ca = certificates_in(&installed["data"]["ca.crt"]);
    assert_eq!(old_ca.len(), 1);

    let rotated =
        render_against_cluster_with(std::slice::from_ref(&installed), &["--set", "certificates.rotation=r1"]).unwrap();
    let secret = find(&rotated, "Secret", "entourage-tls");
    assert_ne!(
        secret["data"]["tls.crt"], installed["data"]["tls.crt"],
        "a new serving certificate"
    );
    let bundle = certificates_in(&secret["data"]["ca.crt"]);
    assert_eq!(bundle.len(), 2, "the previous CA and the new one");
    assert_eq!(
        bundle[0], old_ca[0],
        "a replica still serving the previous certificate is still verified"
    );
    assert_ne!(bundle[1], old_ca[0]);
    for hook in webhooks(&rotated) {
        assert_eq!(
            hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"],
            "{}",
            hook["name"]
        );
    }
    assert_eq!(secret["metadata"]["annotations"]["entourage.dev/rotation"], "r1");

    // The same value again (a second sync, --reuse-values): nothing changes.
    let installed = as_installed(secret);
    let again =
        render_against_cluster_with(std::slice::from_ref(&installed), &["--set", "certificates.rotation=r1"]).unwrap();
    assert_eq!(find(&again, "Secret", "entourage-tls")["data"], installed["data"]);

    // The next rotation trusts the CA it replaces, and drops the one before.
    let next =
        render_against_cluster_with(std::slice::from_ref(&installed), &["--set", "certificates.rotation=r2"]).unwrap();
    let next_bundle = certificates_in(&find(&next, "Secret", "entourage-tls")["data"]["ca.crt"]);
    assert_eq!(next_bundle.len(), 2);
    assert_eq!(next_bundle[0], bundle[1]);
}

/// The certificate Jobs' args, by Job name.
fn job_args(docs: &[Value]) -> BTreeMap<String, Vec<String>> {
    docs.iter()
        .filter(|d| d["kind"] == "Job")
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            (name, args_of(&d["spec"]["template"]["spec"]["containers"][0]))
        })
        .collect()
}

#[test]
fn the_default_certificates_render_the_same_every_time_and_upgrades_keep_the_ca_bundle_the_replicas_wrote() {
    // As Argo CD renders (no cluster to look up): twice the same objects, no Secret, no caBundle.
    let Some(first) = helm_template(&[]) else { return };
    let second = helm_template(&[]).unwrap();
    assert_eq!(first, second, "helm template renders the same objects every time");
    assert!(
        first.iter().all(|d| d["kind"] != "Secret"),
        "no Secret made at render time"
    );
    assert!(webhooks(&first)
        .iter()
        .all(|w| w["clientConfig"].get("caBundle").is_none()));
    let jobs = job_args(&first);
    let create = &jobs["entourage-certs-create"];
    assert_eq!(
        create,
        &[
            "certs",
            "--secret",
            "entourage-tls",
            "--namespace",
            "entourage-system",
            "--service",
            "entourage",
            "--days",
            "3650",
            "--only-create"
        ],
    );
    // The args are the binary's.
    let argv = std::iter::once("entourage".to_string()).chain(create.iter().cloned());
    let parsed = <entourage::cli::Cli as clap::Parser>::try_parse_from(argv);
    assert!(parsed.is_ok(), "{:?}", parsed.err().map(|e| e.to_string()));

    // `helm upgrade` against a cluster where the Job made the Secret and the replicas wrote its CA: the caBundle
    // is rendered as they wrote it, so the upgrade's apply keeps it, and still no Secret is rendered.
    let Some(installed) = render_against_cluster(&[]) else {
        return;
    };
    assert!(webhooks(&installed)
        .iter()
        .all(|w| w["clientConfig"].get("caBundle").is_none()));
    let made = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "entourage-tls", "namespace": "entourage-system"},
        "data": {"tls.crt": "dGxz", "tls.key": "a2V5", "ca.crt": "Y2E="},
    });
    let upgrade = render_against_cluster(std::slice::from_ref(&made)).unwrap();
    assert!(upgrade.iter().all(|d| d["kind"] != "Secret"));
    for hook in webhooks(&upgrade) {
        assert_eq!(hook["clientConfig"]["caBundle"], "Y2E=", "{}", hook["name"]);
    }
    // With the Secret there, an upgrade has nothing for the create Job to do, and runs none.
    assert!(job_args(&upgrade).is_empty(), "{:?}", job_args(&upgrade));
    // A Secret an older chart rendered (owned by the release): the Job runs, to mark it kept.
    let rendered_before = as_installed(&made);
    let migration = render_against_cluster(std::slice::from_ref(&rendered_before)).unwrap();
    assert!(job_args(&migration).contains_key("entourage-certs-create"));
}

#[test]
fn a_job_rotation_runs_after_the_upgrade_and_writes_the_ca_bundle_first() {
    let Some(docs) = helm_template(&["--set", "certificates.rotation=r1"]) else {
        return;
    };
    let hooks = take_hooks(&mut docs.clone());
    let events = |id: &str| hooks[id]["metadata"]["annotations"]["helm.sh/hook"].clone();
    assert_eq!(events("Job/entourage-certs-create"), "pre-install,pre-upgrade");
    // After the upgrade's apply: before it, the rendered caBundle (the Secret as found) would undo the rotation's.
    assert_eq!(events("Job/entourage-certs-rotate"), "post-install,post-upgrade");
    let rbac = "pre-install,pre-upgrade,post-install,post-upgrade";
    for id in [
        "ServiceAccount/entourage-certs",
        "Role/entourage-certs",
        "ClusterRole/entourage-certs",
    ] {
        assert_eq!(events(id), rbac, "{id}");
    }
    assert_eq!(
        hooks["ClusterRole/entourage-certs"]["rules"],
        json!([{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": ["entourage"], "verbs": ["get", "patch"]}])
    );
    let jobs = job_args(&docs);
    let rotate = &jobs["entourage-certs-rotate"];
    assert!(rotate.ends_with(&[
        "--rotation".into(),
        "r1".into(),
        "--webhook-configuration".into(),
        "entourage".into()
    ]));
    assert!(jobs["entourage-certs-create"].ends_with(&["--rotation".into(), "r1".into(), "--only-create".into()]));
    for args in jobs.values() {
        let argv = std::iter::once("entourage".to_string()).chain(args.iter().cloned());
        assert!(
            <entourage::cli::Cli as clap::Parser>::try_parse_from(argv).is_ok(),
            "{args:?}"
        );
    }
}
