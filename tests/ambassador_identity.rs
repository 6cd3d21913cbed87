//! The app's identity, carried by the real `entourage ambassador` on loopback: a client certificate for an
//! upstream that requires one (mTLS), rotated together with the CA while requests are in flight, and a workload
//! token rotated by the kubelet's `..data` symlink swap.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

mod support;
use support::ambassador::*;

/// Client certificates the upstream recognises: DER and a name.
type KnownClients = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTPS upstream whose server configuration (certificate, accepted client CAs) the test swaps, as a service
/// rotating its own certificate would. It answers `client=<name>` with the name of the client certificate the
/// connection presented; `/slow` waits for `release` first.
struct MtlsUpstream {
    addr: SocketAddr,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    /// Known client certificates (DER) and their names.
    clients: KnownClients,
    release: Arc<Notify>,
    slow_arrived: Arc<AtomicUsize>,
}

impl MtlsUpstream {
    async fn spawn(config: rustls::ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Self {
            addr: listener.local_addr().unwrap(),
            config: Arc::new(Mutex::new(Arc::new(config))),
            clients: Arc::default(),
            release: Arc::new(Notify::new()),
            slow_arrived: Arc::default(),
        };
        let (config, clients) = (Arc::clone(&upstream.config), Arc::clone(&upstream.clients));
        let (release, slow_arrived) = (Arc::clone(&upstream.release), Arc::clone(&upstream.slow_arrived));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config.lock().unwrap()));
                let (clients, release, slow_arrived) =
                    (Arc::clone(&clients), Arc::clone(&release), Arc::clone(&slow_arrived));
                tokio::spawn(async move {
                    // A client without an accepted certificate fails here.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let presented = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|der| der.to_vec());
                    let name = presented
                        .and_then(|der| {
                            clients
                                .lock()
                                .unwrap()
                                .iter()
                                .find(|(_, d)| *d == der)
                                .map(|(n, _)| n.clone())
                        })
                        .unwrap_or_else(|| "unknown".into());
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (name, release, slow_arrived) =
                            (name.clone(), Arc::clone(&release), Arc::clone(&slow_arrived));
                        async move {
                            if request.uri().path() == "/slow" {
                                slow_arrived.fetch_add(1, Ordering::SeqCst);
                                release.notified().await;
                            }
                            Ok::<_, Infallible>(Response::new(full(format!("client={name}"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        upstream
    }

    fn know(&self, name: &str, cert: &ClientCert) {
        self.clients.lock().unwrap().push((name.to_owned(), cert.der.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_requiring_a_client_certificate_accepts_the_injected_one_across_a_rotation_of_cert_and_ca() {
    let (server_ca_1, server_ca_2) = (TestCa::new("server CA 1"), TestCa::new("server CA 2"));
    let (client_ca_1, client_ca_2) = (TestCa::new("client CA 1"), TestCa::new("client CA 2"));
    let (client_1, client_2) = (client_ca_1.client_cert("app-v1"), client_ca_2.client_cert("app-v2"));
    let upstream = MtlsUpstream::spawn(server_ca_1.mtls_server_config(&client_ca_1)).await;
    upstream.know("v1", &client_1);
    upstream.know("v2", &client_2);
    let url = format!("https://{}", upstream.addr);

    // The kubelet's layout: a CA ConfigMap and a kubernetes.io/tls Secret, each a `..data` volume.
    let (ca_dir, cert_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_kubelet_volume(ca_dir.path(), "v1", &[("ca.crt", server_ca_1.pem().as_bytes())]);
    let client_files = |c: &ClientCert| [c.cert_pem.clone().into_bytes(), c.key_pem.clone().into_bytes()];
    let [cert, key] = client_files(&client_1);
    write_kubelet_volume(cert_dir.path(), "v1", &[("tls.crt", &cert), ("tls.key", &key)]);
    let ca_file = ca_dir.path().join("ca.crt");
    let (cert_file, key_file) = (cert_dir.path().join("tls.crt"), cert_dir.path().join("tls.key"));

    // Without a client certificate the upstream refuses the connection.
    let anonymous = Ambassador::start(&url, &["--ca-file", ca_file.to_str().unwrap(), "--retries", "0"]).await;
    let (status, _, body) = send(get(&anonymous.url("/hello"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(&body));
    drop(anonymous);

    let ambassador = Ambassador::start(
        &url,
        &[
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--client-cert",
            cert_file.to_str().unwrap(),
            "--client-key",
            key_file.to_str().unwrap(),
            // Connections dialled in the instant between the upstream's rotation and ours fail; this test is
            // about the rotation, not about the breaker.
            "--breaker-failures",
            "0",
        ],
    )
    .await;
    let (status, _, body) = send(get(&ambassador.url("/hello"))).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, b"client=v1".as_ref()));

    // A request in flight on the v1 connection, across the rotation.
    let in_flight = tokio::spawn(send(get(&ambassador.url("/slow"))));
    let start = Instant::now();
    while upstream.slow_arrived.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the slow request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Rotation of everything: the upstream now has a certificate from server CA 2 and accepts only client CA 2.
    *upstream.config.lock().unwrap() = Arc::new(server_ca_2.mtls_server_config(&client_ca_2));
    write_kubelet_volume(ca_dir.path(), "v2", &[("ca.crt", server_ca_2.pem().as_bytes())]);
    let [cert, key] = client_files(&client_2);
    write_kubelet_volume(cert_dir.path(), "v2", &[("tls.crt", &cert), ("tls.key", &key)]);

    let start = Instant::now();
    loop {
        let (status, _, body) = send(get(&ambassador.url("/hello"))).await;
        if status == StatusCode::OK && body == "client=v2" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the new certificate and CA were never used: {status} {}; stderr {:?}",
            String::from_utf8_lossy(&body),
            ambassador.stderr.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ambassador
        .stderr
        .wait_for("the reload", |l| l.contains("TLS files changed"))
        .await;

    // The request that was in flight finishes on its own connection.
    upstream.release.notify_waiters();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, b"client=v1".as_ref()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_token_rotated_by_the_kubelet_symlink_swap_is_sent_and_counted() {
    let upstream = spawn_upstream(echo).await;
    let token_dir = tempfile::tempdir().unwrap();
    write_kubelet_volume(
        token_dir.path(),
        "2026_12_03_10_00_00.1",
        &[("token", b"eyJ.first.sig")],
    );
    let token = token_dir.path().join("token");
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &["--auth-file", token.to_str().unwrap()]).await;

    let (_, _, body) = send(get(&ambassador.url("/who"))).await;
    assert_eq!(json(&body)["headers"]["authorization"], "Bearer eyJ.first.sig");

    // The kubelet renews a projected token at 80 % of its life with the same atomic swap.
    write_kubelet_volume(
        token_dir.path(),
        "2026_12_03_10_48_00.2",
        &[("token", b"eyJ.second.sig")],
    );
    let start = Instant::now();
    loop {
        let (_, _, body) = send(get(&ambassador.url("/who"))).await;
        if json(&body)["headers"]["authorization"] == "Bearer eyJ.second.sig" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the renewed token was never sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, metrics) = send(get(&format!("http://{}/metrics", ambassador.admin))).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("entourage_ambassador_token_refreshes_total{")
                && l.contains("source=\"file\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}
