//! `entourage doctor` against a stand-in for the Kubernetes API (HTTPS on loopback, reached through a
//! kubeconfig, as `--patch-ca-bundle` is tested): a healthy install passes every check, and each broken install
//! fails (or warns about) exactly the check that names its problem, with the exit status `linkerd check` users
//! expect: 0 when nothing failed, 1 when a check failed, 2 when the API could not be asked at all.

mod support;

use std::{collections::BTreeMap, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{json, Value};
use support::doctor_api::{api_certs, b64, not_found, run, serve, Answer, Report};

const NS: &str = "entourage-system";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn manifest(name: &str) -> Value {
    let path = format!("{}/manifests/base/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A CA, and serving certificates it signs.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        Ca::lasting(3650)
    }

    /// A CA valid until `days` from now.
    fn lasting(days: i64) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days) + time::Duration::hours(1);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A serving certificate for `name`, valid until `days` from now (negative: expired).
    fn serving(&self, name: &str, days: i64) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(400);
        params.not_after = now + time::Duration::days(days) + time::Duration::hours(1);
        params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap()
            .pem()
    }
}

/// The cluster as the API serves it, by path (the query is ignored, except a list's `continue`).
struct Cluster {
    routes: BTreeMap<String, Answer>,
}

const CONFIGURATION: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/entourage";
const SECRET: &str = "/api/v1/namespaces/entourage-system/secrets/entourage-tls";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/entourage-system/endpointslices";
const READYZ: &str = "/api/v1/namespaces/entourage-system/services/https:entourage:443/proxy/readyz";
const PODS: &str = "/api/v1/pods";
const NAMESPACES: &str = "/api/v1/namespaces";

fn pod(namespace: &str, name: &str, version: Option<&str>) -> Value {
    let mut metadata = json!({"name": name, "namespace": namespace});
    if let Some(version) = version {
        let status = json!({"containers": ["sidecar-app"], "mode": "native", "version": version, "volumes": []});
        metadata["annotations"] = json!({"entourage.dev/status": status.to_string()});
    }
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
}

impl Cluster {
    /// entourage installed from manifests/base, its caBundle written, one ready replica.
    fn healthy(ca: &Ca) -> Cluster {
        let mut configuration = manifest("webhook.yaml");
        for webhook in configuration["webhooks"].as_array_mut().unwrap() {
            webhook["clientConfig"]["caBundle"] = json!(b64(ca.pem.as_bytes()));
        }
        let mut deployment = manifest("deployment.yaml");
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!(format!("ghcr.io/entourage-dev/entourage:{VERSION}"));
        let serving = ca.serving("entourage.entourage-system.svc", 300);
        let mut routes = BTreeMap::new();
        routes.insert(CONFIGURATION.to_string(), (200, configuration));
        routes.insert(
            SECRET.to_string(),
            (
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "entourage-tls", "namespace": NS},
                       "type": "kubernetes.io/tls", "data": {"tls.crt": b64(serving.as_bytes()), "ca.crt": b64(ca.pem.as_bytes())}}),
            ),
        );
        routes.insert(
            "/api/v1/namespaces/entourage-system/services/entourage".to_string(),
            (200, manifest("service.yaml")),
        );
        routes.insert(
            SLICES.to_string(),
            (
                200,
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": [{
                    "metadata": {"name": "entourage-x7k2p", "namespace": NS, "labels": {"kubernetes.io/service-name": "entourage"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}},
                                  {"addresses": ["10.0.0.6"], "conditions": {"ready": false}}],
                }]}),
            ),
        );
        routes.insert(READYZ.to_string(), (200, json!("ok")));
        for name in ["kube-system", NS] {
            routes.insert(
                format!("/api/v1/namespaces/{name}"),
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}),
                ),
            );
        }
        routes.insert(
            NAMESPACES.to_string(),
            (
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": [
                    {"metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}},
                ]}),
            ),
        );
        routes.insert(
            "/apis/apps/v1/namespaces/entourage-system/deployments/entourage".to_string(),
            (200, deployment),
        );
        // Two pages: the doctor must follow `continue`.
        let list = |items: Vec<Value>, next: &str| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"continue": next}, "items": items});
        routes.insert(
            PODS.to_string(),
            (
                200,
                list(
                    vec![pod("shop", "web-1", Some(VERSION)), pod("shop", "plain", None)],
                    "page-2",
                ),
            ),
        );
        routes.insert(
            format!("{PODS}?continue"),
            (200, list(vec![pod("batch", "report-1", Some(VERSION))], "")),
        );
        Cluster { routes }
    }

    fn set(&mut self, path: &str, answer: Answer) -> &mut Self {
        self.routes.insert(path.to_string(), answer);
        self
    }

    fn json(&mut self, path: &str) -> &mut Value {
        &mut self.routes.get_mut(path).unwrap().1
    }
}

/// Runs `entourage doctor` against `cluster`.
async fn doctor(cluster: Cluster) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let certs = api_certs(dir.path());
    let addr = serve(cluster.routes, &certs).await;
    run(dir.path(), &format!("https://{addr}"), &certs).await
}

fn assert_report(report: &Report, status: i32, tag: &str, check: &str, text: &str) {
    assert!(
        report.has(tag, check, text),
        "no {tag} {check} line with {text:?}:\n{}{}",
        report.stdout,
        report.stderr
    );
    assert_eq!(report.status, status, "{}", report.stdout);
}

#[tokio::test]
async fn a_healthy_install_passes_every_check_and_exits_0() {
    let ca = Ca::new();
    let report = doctor(Cluster::healthy(&ca)).await;
    assert_eq!(report.status, 0, "{}{}", report.stdout, report.stderr);
    let checks = [
        "webhook-configuration",
        "ca-bundle",
        "certificate-expiry",
        "service-endpoints",
        "apiserver-reach",
        "namespace-exclusion",
        "match-conditions",
        "failure-policy",
        "stale-injections",
    ];
    for check in checks {
        assert!(!report.line(check).is_empty(), "{check} missing:\n{}", report.stdout);
        for line in report.line(check) {
            assert!(line.starts_with("[ok]"), "{line}");
        }
    }
    assert!(
        report.has(
            "[ok]",
            "service-endpoints",
            "Service entourage-system/entourage: 1 of 2 endpoints ready"
        ),
        "{}",
        report.stdout
    );
    assert!(report.has(
        "[ok]",
        "stale-injections",
        &format!("all 2 injected Pods carry the running webhook's version {VERSION}")
    ));
    assert!(
        report.has("[ok]", "certificate-expiry", "valid for 300 more days"),
        "{}",
        report.stdout
    );
    assert!(
        report.stdout.ends_with("11 ok, 0 warnings, 0 failed\n"),
        "{}",
        report.stdout
    );
}

#[tokio::test]
async fn a_missing_webhook_configuration_fails_and_says_how_to_install() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.set(CONFIGURATION, not_found());
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "webhook-configuration",
        "MutatingWebhookConfiguration entourage does not exist",
    );
    assert!(report.has(
        "[FAIL]",
        "webhook-configuration",
        "fix: install entourage (kubectl apply -k manifests)"
    ));
}

#[tokio::test]
async fn a_ca_bundle_from_another_ca_fails_naming_the_webhook() {
    let (ca, stale) = (Ca::new(), Ca::new());
    let mut cluster = Cluster::healthy(&ca);
    cluster.json(CONFIGURATION)["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(stale.pem.as_bytes()));
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "ca-bundle",
        "pods.entourage.dev caBundle did not sign the serving certificate",
    );
    assert_eq!(
        report.line("ca-bundle").len(),
        1,
        "jobs.entourage.dev's caBundle is right"
    );
    assert!(report.has("[FAIL]", "ca-bundle", "rollout restart deployment/entourage"));
}

#[tokio::test]
async fn a_serving_certificate_for_another_name_fails() {
    let ca = Ca::new();
    let mut cluster = Cluster::healthy(&ca);
    let wrong = ca.serving("entourage.default.svc", 300);
    cluster.json(SECRET)["data"]["tls.crt"] = json!(b64(wrong.as_bytes()));
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "ca-bundle",
        "does not name entourage.entourage-system.svc",
    );
}

#[tokio::test]
async fn a_certificate_close_to_expiry_warns_and_an_expired_one_fails() {
    let ca = Ca::new();
    let mut soon = Cluster::healthy(&ca);
    soon.json(SECRET)["data"]["tls.crt"] = json!(b64(ca.serving("entourage.entourage-system.svc", 5).as_bytes()));
    let report = doctor(soon).await;
    assert_report(&report, 0, "[warn]", "certificate-expiry", "expires in 5 days");

    let mut expired = Cluster::healthy(&ca);
    expired.json(SECRET)["data"]["tls.crt"] = json!(b64(ca.serving("entourage.entourage-system.svc", -3).as_bytes()));
    let report = doctor(expired).await;
    assert_report(&report, 1, "[FAIL]", "certificate-expiry", "expired on");
}

#[tokio::test]
async fn a_ca_close_to_expiry_warns_naming_the_cabundle() {
    let ca = Ca::lasting(10);
    let report = doctor(Cluster::healthy(&ca)).await;
    assert_report(
        &report,
        0,
        "[warn]",
        "certificate-expiry",
        "the CA in pods.entourage.dev's caBundle expires in 10 days",
    );
}

#[tokio::test]
async fn an_unreadable_secret_fails_with_the_apis_reason() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.set(
        SECRET,
        (
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "secrets \"entourage-tls\" is forbidden: User \"dev\" cannot get resource \"secrets\""}),
        ),
    );
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "ca-bundle",
        "cannot read Secret entourage-system/entourage-tls: secrets \"entourage-tls\" is forbidden",
    );
}

#[tokio::test]
async fn a_service_without_ready_endpoints_fails() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.json(SLICES)["items"][0]["endpoints"][0]["conditions"]["ready"] = json!(false);
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "service-endpoints",
        "Service entourage-system/entourage has no ready endpoints (2 not ready)",
    );
}

#[tokio::test]
async fn an_api_server_that_cannot_reach_the_webhook_fails() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.set(
        READYZ,
        (
            503,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                   "message": "error trying to reach service: dial tcp 10.0.0.5:8443: i/o timeout"}),
        ),
    );
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "apiserver-reach",
        "dial tcp 10.0.0.5:8443: i/o timeout",
    );
    assert!(report.has("[FAIL]", "apiserver-reach", "GKE private clusters"));
}

#[tokio::test]
async fn a_webhook_that_selects_kube_system_fails() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.json(CONFIGURATION)["webhooks"][1]["namespaceSelector"] = json!({});
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "namespace-exclusion",
        "jobs.entourage.dev sends kube-system's objects to entourage",
    );
    assert!(report.has(
        "[FAIL]",
        "namespace-exclusion",
        "jobs.entourage.dev sends entourage-system's objects"
    ));
}

#[tokio::test]
async fn a_pod_webhook_without_match_conditions_warns_and_with_failure_policy_fail_fails() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.json(CONFIGURATION)["webhooks"][0]
        .as_object_mut()
        .unwrap()
        .remove("matchConditions");
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[warn]",
        "match-conditions",
        "pods.entourage.dev has no matchConditions",
    );
    assert!(report.has(
        "[FAIL]",
        "failure-policy",
        "pods.entourage.dev has failurePolicy Fail and no matchConditions"
    ));
}

#[tokio::test]
async fn a_failure_policy_that_lets_pods_start_without_their_sidecars_warns() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.json(CONFIGURATION)["webhooks"][0]["failurePolicy"] = json!("Ignore");
    cluster.json(CONFIGURATION)["webhooks"][1]["failurePolicy"] = json!("Fail");
    let report = doctor(cluster).await;
    assert_report(
        &report,
        0,
        "[warn]",
        "failure-policy",
        "pods.entourage.dev has failurePolicy Ignore",
    );
    assert!(report.has(
        "[warn]",
        "failure-policy",
        "jobs.entourage.dev has failurePolicy Fail: while entourage is down no Job"
    ));
}

#[tokio::test]
async fn pods_injected_by_another_version_are_listed() {
    let mut cluster = Cluster::healthy(&Ca::new());
    cluster.json(&format!("{PODS}?continue"))["items"]
        .as_array_mut()
        .unwrap()
        .push(pod("shop", "web-old", Some("0.0.9")));
    let report = doctor(cluster).await;
    assert_report(
        &report,
        0,
        "[warn]",
        "stale-injections",
        &format!("Pods injected by another version than the running webhook's {VERSION}: 1 (shop/web-old (0.0.9))"),
    );
}

#[tokio::test]
async fn pods_still_on_the_revision_their_namespace_left_are_listed_and_left_out_of_version_checks() {
    let mut cluster = Cluster::healthy(&Ca::new());
    // shop moved to the canary revision: web-1 (injected by the default revision) stays on it until recreated.
    cluster.json(NAMESPACES)["items"][0]["metadata"]["labels"]["entourage.dev/rev"] = json!("canary");
    let mut moved = pod("shop", "web-2", Some("0.0.9"));
    let status = json!({"containers": ["sidecar-app"], "mode": "native", "revision": "canary", "version": "0.0.9", "volumes": []});
    moved["metadata"]["annotations"]["entourage.dev/status"] = json!(status.to_string());
    cluster.json(&format!("{PODS}?continue"))["items"]
        .as_array_mut()
        .unwrap()
        .push(moved);
    let report = doctor(cluster).await;
    assert_report(
        &report,
        0,
        "[warn]",
        "old-revision",
        "Pods still on another revision: 1 (shop/web-1 (injected by revision default, selected by canary))",
    );
    // The canary's own version is its install's to judge, not the default revision's doctor.
    assert!(report.has(
        "[ok]",
        "stale-injections",
        "all 2 injected Pods carry the running webhook's version"
    ));
}

#[tokio::test]
async fn pods_that_asked_for_entourage_and_were_admitted_without_it_fail_with_their_controller() {
    let mut cluster = Cluster::healthy(&Ca::new());
    let mut missed = pod("shop", "web-7d9f-abcde", None);
    missed["metadata"]["annotations"] = json!({"entourage.dev/sidecar-logs": "/var/log/app.log"});
    missed["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "uid": "u", "controller": true}]);
    let mut opted_out = pod("shop", "batch", None);
    opted_out["metadata"]["annotations"] =
        json!({"entourage.dev/sidecar-logs": "/var/log/app.log", "entourage.dev/inject": "false"});
    let items = cluster.json(&format!("{PODS}?continue"))["items"]
        .as_array_mut()
        .unwrap();
    items.push(missed);
    items.push(opted_out);
    items.push(pod("shop", "plain", None));
    let report = doctor(cluster).await;
    assert_report(
        &report,
        1,
        "[FAIL]",
        "missed-injections",
        "Pods that ask for entourage run without it (admitted while the webhook was down under failurePolicy \
         Ignore, or before it was installed): 1 (shop/web-7d9f-abcde of ReplicaSet web-7d9f)",
    );
}

#[tokio::test]
async fn an_unreachable_api_exits_2_without_checking() {
    let dir = tempfile::tempdir().unwrap();
    let certs = api_certs(dir.path());
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        run(dir.path(), &format!("https://127.0.0.1:{port}"), &certs),
    )
    .await
    .unwrap();
    assert_eq!(report.status, 2, "{}{}", report.stdout, report.stderr);
    assert!(
        report.stderr.contains("cannot reach the Kubernetes API"),
        "{}",
        report.stderr
    );
    assert!(report.stdout.is_empty(), "{}", report.stdout);
}
