//! Operating the real binary: certificate and config rotation the way the kubelet does it (a `..data` symlink
//! swap) while the apiserver keeps sending reviews, the metrics an operator scrapes, and `--patch-ca-bundle`
//! against a stand-in for the Kubernetes API.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::{json, Value};
use support::apiserver::{bin, check_answer, client_tls, Webhook, SERVER_NAME};

/// Generous: the machine running the tests may be busy.
const DEADLINE: Duration = Duration::from_secs(60);

/// A CA that can sign several serving certificates (a rotation keeps the CA the apiserver trusts).
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "reload test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A serving certificate and key for the webhook's Service, as PEM.
    fn issue(&self) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory laid out as the kubelet lays out a Secret or ConfigMap volume: `..<version>/` holds the files,
/// `..data` points at the current version, and each key is a symlink through `..data`.
struct AtomicDir {
    path: PathBuf,
    versions: usize,
}

impl AtomicDir {
    fn create(path: &Path, files: &[(&str, &str)]) -> AtomicDir {
        std::fs::create_dir_all(path).unwrap();
        let mut dir = AtomicDir {
            path: path.to_path_buf(),
            versions: 0,
        };
        dir.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), path.join(name)).unwrap();
        }
        dir
    }

    /// Writes a new version and swaps `..data` to it in one rename, exactly as the kubelet's AtomicWriter.
    fn swap(&mut self, files: &[(&str, &str)]) {
        self.versions += 1;
        let version = format!("..2026_v{}", self.versions);
        std::fs::create_dir(self.path.join(&version)).unwrap();
        for (name, text) in files {
            std::fs::write(self.path.join(&version).join(name), text).unwrap();
        }
        let tmp = self.path.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.path.join("..data")).unwrap();
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The DER of the certificate the webhook serves to a new connection.
async fn served_certificate(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(ca)));
    let tls = connector
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .expect("handshake verifies");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

/// Waits until a log line's message contains `needle`.
fn wait_for_log(webhook: &Webhook, needle: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(line) = webhook
            .drain_logs()
            .into_iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)))
        {
            return line;
        }
        assert!(start.elapsed() < DEADLINE, "no log line with {needle:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the patch of a reviewed sidecar Pod puts the sidecar in `initContainers` (native mode).
fn native(response: &Value) -> bool {
    let patch = support::decode_patch(response).unwrap().unwrap();
    patch
        .as_array()
        .unwrap()
        .iter()
        .any(|op| op["path"].as_str().unwrap().starts_with("/spec/initContainers"))
}

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Reviews without pause over `connections` keep-alive connections, plus one task that opens a new connection
/// for every review (new handshakes during the swaps). A failed review panics its task.
async fn start_load(webhook: &Webhook, connections: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let review = fixture("pod-sidecar-nginx.json");
    let mut tasks = Vec::new();
    for i in 0..=connections {
        let mut api = webhook.connect().await;
        let (addr, ca) = (webhook.addr, webhook.certs.join("ca.crt"));
        let (stop, ok, mut review) = (stop.clone(), ok.clone(), review.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                review["request"]["uid"] = json!(format!("load-{i}-{n}"));
                if i == connections {
                    api = support::apiserver::ApiClient::connect(addr, &ca, SERVER_NAME).await;
                }
                let response = check_answer(&review, &api.review(&review).await);
                assert_eq!(response["allowed"], true);
                ok.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    Load { stop, ok, tasks }
}

impl Load {
    async fn wait_for(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        let start = Instant::now();
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(
                self.tasks.iter().all(|t| !t.is_finished()),
                "a review failed under load"
            );
            assert!(start.elapsed() < DEADLINE, "reviews stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut failed = 0;
        for task in self.tasks {
            if task.await.is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 0, "tasks with a failed review");
        self.ok.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_certificate_and_config_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert1, key1) = ca.issue();
    let mut certs = AtomicDir::create(
        &dir.path().join("certs"),
        &[("tls.crt", &cert1), ("tls.key", &key1), ("ca.crt", &ca.pem)],
    );
    let mut config = AtomicDir::create(
        &dir.path().join("config"),
        &[("config.yaml", "sidecars:\n  mode: classic\n")],
    );
    let config_path = dir.path().join("config/config.yaml");
    let webhook = Webhook::start_in(
        dir,
        &["--reload-interval", "100ms", "--config", config_path.to_str().unwrap()],
    );
    let ca_path = webhook.certs.join("ca.crt");
    assert_eq!(served_certificate(webhook.addr, &ca_path).await, der(&cert1));
    let load = start_load(&webhook, 4).await;
    load.wait_for(20).await;

    // A new certificate: new connections get it; the keep-alive ones carry on.
    let (cert2, key2) = ca.issue();
    certs.swap(&[("tls.crt", &cert2), ("tls.key", &key2), ("ca.crt", &ca.pem)]);
    let start = Instant::now();
    while served_certificate(webhook.addr, &ca_path).await != der(&cert2) {
        assert!(start.elapsed() < DEADLINE, "the new certificate is never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_log(&webhook, "serving certificate reloaded");
    load.wait_for(20).await;

    // An invalid certificate: refused, the previous one is still served.
    certs.swap(&[
        (
            "tls.crt",
            "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
        ),
        ("tls.key", &key2),
        ("ca.crt", &ca.pem),
    ]);
    wait_for_log(&webhook, "new serving certificate refused");
    assert_eq!(served_certificate(webhook.addr, &ca_path).await, der(&cert2));
    load.wait_for(20).await;

    // A valid config change takes effect; an invalid one is refused and the valid one stays.
    let mut api = webhook.connect().await;
    let review = fixture("pod-sidecar-nginx.json");
    assert!(!native(&check_answer(&review, &api.review(&review).await)));
    config.swap(&[("config.yaml", "sidecars:\n  mode: native\n")]);
    wait_for_log(&webhook, "config reloaded");
    assert!(native(&check_answer(&review, &api.review(&review).await)));
    load.wait_for(20).await;
    config.swap(&[("config.yaml", "sidecars:\n  mode: sometimes\n")]);
    let refused = wait_for_log(&webhook, "new config refused");
    assert!(refused["error"].as_str().unwrap().contains("sometimes"), "{refused}");
    assert!(native(&check_answer(&review, &api.review(&review).await)));
    load.wait_for(20).await;

    let total = load.finish().await;
    assert!(total >= 100, "{total} reviews");
    let metrics = String::from_utf8(api.send("GET", "/metrics", Vec::new()).await.body.to_vec()).unwrap();
    for line in [
        r#"entourage_reloads_total{what="certificate",result="success"} 1"#,
        r#"entourage_reloads_total{what="certificate",result="failure"} 1"#,
        r#"entourage_reloads_total{what="config",result="success"} 1"#,
        r#"entourage_reloads_total{what="config",result="failure"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in\n{metrics}");
    }
    let ready = api.send("GET", "/readyz", Vec::new()).await;
    assert_eq!(ready.status, 200);
}

/// The value of a sample line `name{labels} value` in the exposition.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{metrics}"))
}

#[tokio::test]
async fn metrics_scraped_over_tls_count_reviews_injections_skips_denials_and_latency() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    let mut unannotated = fixture("pod-sidecar-nginx.json");
    unannotated["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    for name in [
        "pod-sidecar-nginx.json",
        "pod-adapter-nginx.json",
        "pod-denied-relative-path.json",
    ] {
        let review = fixture(name);
        check_answer(&review, &api.review(&review).await);
    }
    check_answer(&unannotated, &api.review(&unannotated).await);
    let reply = api.send("GET", "/metrics", Vec::new()).await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("text/plain"));
    let m = String::from_utf8(reply.body.to_vec()).unwrap();
    assert_eq!(
        sample(
            &m,
            r#"entourage_admission_reviews_total{kind="Pod",operation="CREATE",decision="patched"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            r#"entourage_admission_reviews_total{kind="Pod",operation="CREATE",decision="denied"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"entourage_admission_reviews_total{kind="Pod",operation="CREATE",decision="allowed"}"#
        ),
        1.0
    );
    assert!(sample(&m, r#"entourage_injections_total{pattern="sidecar"}"#) >= 1.0);
    assert!(sample(&m, r#"entourage_injections_total{pattern="adapter"}"#) >= 1.0);
    assert_eq!(sample(&m, r#"entourage_skips_total{reason="#), 1.0);
    assert_eq!(sample(&m, r#"entourage_denials_total{reason="#), 1.0);
    assert_eq!(sample(&m, "entourage_review_duration_seconds_count"), 4.0);
    let expiry = sample(&m, "entourage_certificate_expiry_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 300.0 * 86_400.0,
        "dev certificates last a year: {expiry}"
    );
}

/// What the stand-in API server received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    content_type: String,
    authorization: String,
    body: Value,
}

/// A stand-in for the Kubernetes API: serves one MutatingWebhookConfiguration, applies JSON patches to it and
/// records every request. HTTPS on loopback with the certificates in `certs` (as in-cluster, the client must
/// verify the API server's CA); the client is pointed at it with a kubeconfig.
async fn stand_in_api(object: Value, certs: &Path) -> (SocketAddr, Arc<Mutex<Vec<Recorded>>>, Arc<Mutex<Value>>) {
    use hyper::{server::conn::http1, service::service_fn, Request, Response};
    let store = entourage::webhook::tls::CertStore::load(&certs.join("tls.crt"), &certs.join("tls.key")).unwrap();
    let mut tls = entourage::webhook::tls::server_config(Arc::new(store), None).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let stored = Arc::new(Mutex::new(object));
    let (rec, st) = (recorded.clone(), stored.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (rec, st, acceptor) = (rec.clone(), st.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(tcp) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (rec, st) = (rec.clone(), st.clone());
                    async move {
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let (method, path) = (request.method().to_string(), request.uri().path().to_string());
                        let (content_type, authorization) = (header("content-type"), header("authorization"));
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        rec.lock().unwrap().push(Recorded {
                            method: method.clone(),
                            path: path.clone(),
                            content_type,
                            authorization,
                            body: body.clone(),
                        });
                        let expected = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/entourage";
                        let (status, reply) = if path != expected {
                            (
                                404,
                                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                            )
                        } else if method == "PATCH" {
                            let mut object = st.lock().unwrap();
                            match serde_json::from_value::<json_patch::Patch>(body)
                                .map_err(|e| e.to_string())
                                .and_then(|p| json_patch::patch(&mut object, &p).map_err(|e| e.to_string()))
                            {
                                Ok(()) => (200, object.clone()),
                                Err(e) => (
                                    422,
                                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": e, "code": 422}),
                                ),
                            }
                        } else {
                            (200, st.lock().unwrap().clone())
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(serde_json::to_vec(&reply).unwrap())))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, recorded, stored)
}

/// The MutatingWebhookConfiguration as installed from manifests/, without a caBundle.
fn installed_configuration() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/webhook.yaml")).unwrap();
    let mut object: Value = serde_yaml_ng::from_str(&text).unwrap();
    object["metadata"]["resourceVersion"] = json!("1");
    object
}

#[tokio::test]
async fn patch_ca_bundle_writes_the_ca_into_every_webhook_at_start() {
    let object = installed_configuration();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    dev_certs_in(&certs);
    // The dev CA plays the cluster CA too: the API stand-in serves the dev certificate, which names 127.0.0.1.
    let (addr, recorded, stored) = stand_in_api(object, &certs).await;
    let mut child = serve_patching(addr, &certs, &certs, dir.path());
    let start = Instant::now();
    let patch = loop {
        if let Some(p) = recorded.lock().unwrap().iter().find(|r| r.method == "PATCH").cloned() {
            break p;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no PATCH reached the API: {:?}",
            recorded.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(recorded.lock().unwrap()[0].method, "GET", "reads before it patches");
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(patch.authorization, "Bearer test-token");
    assert_eq!(
        patch.path,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/entourage"
    );
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(certs.join("ca.crt")).unwrap());
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/webhooks/0/name", "value": "pods.entourage.dev"},
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca},
            {"op": "test", "path": "/webhooks/1/name", "value": "jobs.entourage.dev"},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": ca},
        ])
    );
    let stored = stored.lock().unwrap();
    for hook in stored["webhooks"].as_array().unwrap() {
        assert_eq!(hook["clientConfig"]["caBundle"], ca);
        assert_eq!(
            hook["clientConfig"]["service"]["name"], "entourage",
            "the rest is untouched"
        );
    }
}

/// `entourage serve --patch-ca-bundle entourage` serving the pair in `served`, against the API stand-in at `addr`
/// (whose certificate the CA in `api_certs` signed), reloading every second.
fn serve_patching(addr: SocketAddr, api_certs: &Path, served: &Path, home: &Path) -> std::process::Child {
    let cluster_ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(api_certs.join("ca.crt")).unwrap());
    let kubeconfig = home.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {cluster_ca}\n\
             users:\n- name: entourage\n  user:\n    token: test-token\ncontexts:\n- name: stand-in\n  context:\n    \
             cluster: stand-in\n    user: entourage\ncurrent-context: stand-in\n"
        ),
    )
    .unwrap();
    Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--reload-interval",
            "1s",
            "--patch-ca-bundle",
            "entourage",
            "--tls-cert",
        ])
        .arg(served.join("tls.crt"))
        .arg("--tls-key")
        .arg(served.join("tls.key"))
        .arg("--ca-bundle-file")
        .arg(served.join("ca.crt"))
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn dev_certs_in(dir: &Path) {
    let status = Command::new(bin())
        .args(["certs", "--out"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The caBundles of the stored configuration's webhooks.
fn bundles(stored: &Mutex<Value>) -> Vec<Value> {
    let stored = stored.lock().unwrap();
    stored["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["clientConfig"]["caBundle"].clone())
        .collect()
}

#[tokio::test]
async fn a_reloaded_certificate_from_a_new_ca_writes_that_ca_into_the_webhooks() {
    let object = installed_configuration();
    let dir = tempfile::tempdir().unwrap();
    let (api_certs, served) = (dir.path().join("api"), dir.path().join("served"));
    dev_certs_in(&api_certs);
    dev_certs_in(&served);
    let (addr, _recorded, stored) = stand_in_api(object, &api_certs).await;
    let mut child = serve_patching(addr, &api_certs, &served, dir.path());
    let b64 = |path: &Path| json!(base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap()));
    let first = b64(&served.join("ca.crt"));
    let wait_for = |want: Value| {
        let stored = stored.clone();
        async move {
            let start = Instant::now();
            while bundles(&stored).iter().any(|b| *b != want) {
                assert!(start.elapsed() < DEADLINE, "caBundles {:?}", bundles(&stored));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(first.clone()).await;
    // The Secret made anew (another CA, as when it is deleted and the chart's Job makes it again): the webhooks
    // follow without a restart.
    dev_certs_in(&served);
    let second = b64(&served.join("ca.crt"));
    assert_ne!(first, second);
    wait_for(second).await;
    let _ = child.kill();
    let _ = child.wait();
}
