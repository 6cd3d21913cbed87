//! OAuth2 client credentials through the real `entourage ambassador`, against a token endpoint stand-in served
//! over TLS on loopback: one fetch for many concurrent requests, a refresh before expiry, and a 502 with a JSON
//! body when no token can be had.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod support;
use support::ambassador::*;

/// A token endpoint: checks the client credentials grant and answers `tok-<n>` valid for `expires_in` seconds,
/// after a short pause so that concurrent requests really do wait for the same fetch.
async fn spawn_token_endpoint(ca: &TestCa, expires_in: u64) -> (SocketAddr, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::clone(&fetches);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let counter = Arc::clone(&counter);
                    async move { Ok::<_, Infallible>(token_answer(request, &counter, expires_in).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, fetches)
}

async fn token_answer(request: Request<Incoming>, fetches: &AtomicUsize, expires_in: u64) -> Response<TestBody> {
    let basic = base64::engine::general_purpose::STANDARD.encode("orders-client:s3cret");
    let authorized =
        request.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(format!("Basic {basic}").as_str());
    let path_ok = request.uri().path() == "/oauth/token";
    let form = request.into_body().collect().await.unwrap().to_bytes();
    let form = String::from_utf8_lossy(&form).into_owned();
    if !(authorized && path_ok && form.contains("grant_type=client_credentials") && form.contains("scope=orders.read"))
    {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("content-type", "application/json")
            .body(full(format!(
                r#"{{"error":"invalid_request","error_description":"unexpected {form}"}}"#
            )))
            .unwrap();
    }
    let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Response::builder()
        .header("content-type", "application/json")
        .body(full(format!(
            r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#
        )))
        .unwrap()
}

/// The client id and secret as the kubelet mounts a Secret, and the CA that verifies the token endpoint.
struct Credentials {
    _dir: tempfile::TempDir,
    id: PathBuf,
    secret: PathBuf,
    ca: PathBuf,
}

fn credentials(ca: &TestCa) -> Credentials {
    let dir = tempfile::tempdir().unwrap();
    write_kubelet_volume(
        dir.path(),
        "v1",
        &[("client-id", b"orders-client\n"), ("client-secret", b"s3cret\n")],
    );
    let ca_path = dir.path().join("token-ca.pem");
    ca.write_pem(&ca_path);
    Credentials {
        id: dir.path().join("client-id"),
        secret: dir.path().join("client-secret"),
        ca: ca_path,
        _dir: dir,
    }
}

async fn start(upstream: SocketAddr, token_url: &str, creds: &Credentials) -> Ambassador {
    Ambassador::start(
        &format!("http://{upstream}"),
        &[
            "--oauth2-token-url",
            token_url,
            "--oauth2-client-id-file",
            creds.id.to_str().unwrap(),
            "--oauth2-client-secret-file",
            creds.secret.to_str().unwrap(),
            "--oauth2-scope",
            "orders.read",
            "--ca-file",
            creds.ca.to_str().unwrap(),
        ],
    )
    .await
}

fn bearer(body: &[u8]) -> String {
    json(body)["headers"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_fetch_serves_a_hundred_concurrent_requests() {
    let ca = TestCa::new("token endpoint CA");
    let (endpoint, fetches) = spawn_token_endpoint(&ca, 3600).await;
    let upstream = spawn_upstream(echo).await;
    let creds = credentials(&ca);
    let ambassador = start(upstream, &format!("https://{endpoint}/oauth/token"), &creds).await;

    let requests: Vec<_> = (0..100)
        .map(|i| tokio::spawn(send(get(&ambassador.url(&format!("/orders/{i}"))))))
        .collect();
    for request in requests {
        let (status, _, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(bearer(&body), "Bearer tok-1");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let (_, _, body) = send(get(&ambassador.url("/again"))).await;
    assert_eq!(bearer(&body), "Bearer tok-1", "cached until shortly before expiry");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_refreshed_before_it_expires() {
    let ca = TestCa::new("token endpoint CA");
    // Two seconds: refreshed from 1.6 s on (80 % of its life), expired at 2 s.
    let (endpoint, fetches) = spawn_token_endpoint(&ca, 2).await;
    let upstream = spawn_upstream(echo).await;
    let creds = credentials(&ca);
    let ambassador = start(upstream, &format!("https://{endpoint}/oauth/token"), &creds).await;

    let (_, _, body) = send(get(&ambassador.url("/first"))).await;
    assert_eq!(bearer(&body), "Bearer tok-1");
    let first_fetched = Instant::now();
    let start = Instant::now();
    loop {
        let (status, _, body) = send(get(&ambassador.url("/later"))).await;
        assert_eq!(status, StatusCode::OK);
        if bearer(&body) == "Bearer tok-2" {
            break;
        }
        assert_eq!(bearer(&body), "Bearer tok-1");
        assert!(start.elapsed() < Duration::from_secs(60), "never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // tok-1 was fetched (its life counted) before `first_fetched`: the refresh came well before its expiry.
    assert!(first_fetched.elapsed() < Duration::from_secs(2) + Duration::from_millis(500));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let (_, _, metrics) = send(get(&format!("http://{}/metrics", ambassador.admin))).await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("entourage_ambassador_token_refreshes_total{")
                && l.contains("source=\"oauth2\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_answers_502_with_a_json_body() {
    let ca = TestCa::new("token endpoint CA");
    let upstream = spawn_upstream(echo).await;
    let creds = credentials(&ca);
    let token_url = format!("https://127.0.0.1:{}/oauth/token", free_port());
    let ambassador = start(upstream, &token_url, &creds).await;

    let (status, headers, body) = send(get(&ambassador.url("/orders"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "application/json");
    let error = json(&body);
    let message = error["error"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("cannot get an OAuth2 token from {token_url}")),
        "{message}"
    );
    assert_eq!(error["upstream"], format!("http://{upstream}"));
}

#[test]
fn plain_http_token_url_is_refused_at_start_as_at_admission() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("client-id");
    std::fs::write(&id, "x").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_entourage"))
        .args(["ambassador", "--upstream", "http://127.0.0.1:1"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--oauth2-token-url", "http://auth.example.com/token"])
        .args(["--oauth2-client-id-file", id.to_str().unwrap()])
        .args(["--oauth2-client-secret-file", id.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not an https:// token URL; the client secret must not cross the network in clear text"),
        "{stderr}"
    );
}
