//! Process-level tests of `entourage ambassador`: the real binary between a test client and an upstream written
//! here, all on loopback. Nothing asserts on time; waits use generous deadlines so a loaded machine only slows
//! the tests down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

mod support;
use support::ambassador::*;

// ---------------------------------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_method_path_query_headers_and_bodies() {
    let upstream = spawn_upstream(echo).await;
    let ambassador = Ambassador::start(&format!("http://{upstream}/base"), &[]).await;

    let request = Request::put(ambassador.url("/items/7?x=1&y=two%20words"))
        .header("x-custom", "kept")
        .header("x-forwarded-for", "10.0.0.9")
        .header("connection", "keep-alive, X-Hop")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("trailer", "x-checksum")
        .body(full("request body"))
        .unwrap();
    let (status, headers, body) = send(request).await;

    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["uri"], "/base/items/7?x=1&y=two%20words");
    assert_eq!(seen["body"], "request body");
    let h = &seen["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["host"], upstream.to_string());
    assert_eq!(h["x-forwarded-for"], "10.0.0.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["content-length"], "12");
    for hop in ["x-hop", "keep-alive", "proxy-authorization", "te", "upgrade", "trailer"] {
        assert!(h.get(hop).is_none(), "{hop} reached the upstream: {h}");
    }
    assert_eq!(headers["x-upstream"], "yes");
    assert!(headers.get("x-resp-hop").is_none(), "{headers:?}");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");

    let log = ambassador.log_for("PUT", "/items/7").await;
    assert_eq!(log["status"], 200);
    assert_eq!(log["bytes_in"], 12);
    assert_eq!(log["retries"], 0);
    assert!(log["upstream_ms"].is_number());
    assert!(
        !log.to_string().contains("two%20words"),
        "the query must stay out of the log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_response_body_in_pieces_before_upstream_finishes() {
    let release = Arc::new(Notify::new());
    let upstream = spawn_upstream({
        let release = Arc::clone(&release);
        move |_request| {
            let release = Arc::clone(&release);
            async move {
                let (tx, body) = channel_body();
                tokio::spawn(async move {
                    tx.send(Bytes::from_static(b"first piece")).await.unwrap();
                    release.notified().await;
                    tx.send(Bytes::from_static(b"second piece")).await.unwrap();
                });
                Response::new(body)
            }
        }
    })
    .await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;

    let response = tokio::time::timeout(DEADLINE, client().request(get(&ambassador.url("/stream"))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut body = response.into_body();
    // The upstream holds its second piece back until the first has reached the client: a buffering proxy
    // would never deliver this frame.
    let first = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .expect("the first piece arrives while the upstream is still sending")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first piece");
    release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second piece");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_request_body_in_pieces_to_upstream() {
    let (first_seen_tx, mut first_seen) = mpsc::channel::<Bytes>(1);
    let upstream = spawn_upstream(move |request: Request<Incoming>| {
        let first_seen_tx = first_seen_tx.clone();
        async move {
            let mut body = request.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            first_seen_tx.send(first.clone()).await.unwrap();
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(full([first, rest].concat()))
        }
    })
    .await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;

    let (tx, body) = channel_body();
    let request = Request::post(ambassador.url("/upload")).body(body).unwrap();
    let answer = tokio::spawn(send(request));
    tx.send(Bytes::from_static(b"part one;")).await.unwrap();
    let first = tokio::time::timeout(DEADLINE, first_seen.recv())
        .await
        .expect("the upstream sees the first piece before the client sends the second")
        .unwrap();
    assert_eq!(first, "part one;");
    tx.send(Bytes::from_static(b"part two")).await.unwrap();
    drop(tx);
    let (status, _, body) = answer.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "part one;part two");
}

/// Serves `echo` on a loopback port, counting accepted connections; `keep_alive: false` closes each after one answer.
async fn spawn_counting_upstream(keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|request| async move { Ok::<_, Infallible>(echo(request).await) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuses_one_upstream_connection_across_client_connections() {
    let (upstream, accepted) = spawn_counting_upstream(true).await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;
    for i in 0..5 {
        // `send` builds a new client each time, so every request arrives on a new client connection.
        let (status, _, _) = send(get(&ambassador.url(&format!("/reuse/{i}")))).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_connections_does_not_fail_requests() {
    let (upstream, accepted) = spawn_counting_upstream(false).await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &["--retries", "0"]).await;
    for i in 0..3 {
        let request = Request::post(ambassador.url(&format!("/close/{i}")))
            .body(full("payload"))
            .unwrap();
        let (status, _, body) = send(request).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(json(&body)["body"], "payload");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_closed_by_upstream_is_not_reused() {
    // A bare HTTP/1.1 server that, like one with a short keep-alive timeout, closes each connection after one
    // answer without saying so in a `Connection: close` header.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = mpsc::channel::<()>(8);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                drop(stream);
                let _ = closed_tx.send(()).await;
            });
        }
    });
    // No retries: a request sent on the stale connection would come back as a 502.
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &["--retries", "0"]).await;
    for i in 0..3 {
        let (status, _, body) = send(get(&ambassador.url(&format!("/stale/{i}")))).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, "ok");
        tokio::time::timeout(DEADLINE, closed.recv()).await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------------------------

/// Lays out a directory the way the kubelet mounts a Secret: `token -> ..data/token`, `..data -> ..<version>`.
fn write_secret_version(dir: &Path, version: &str, token: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("token"), token).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    // The atomic swap the kubelet performs: rename a fresh symlink over the old one.
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("token").exists() {
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_auth_token_and_follows_secret_symlink_swap() {
    let secret = tempfile::tempdir().unwrap();
    write_secret_version(secret.path(), "2026_01_01", "token-one\n");
    let upstream = spawn_upstream(echo).await;
    let token_file = secret.path().join("token");
    let ambassador = Ambassador::start(
        &format!("http://{upstream}"),
        &["--auth-file", token_file.to_str().unwrap()],
    )
    .await;

    let forged = || {
        Request::get(ambassador.url("/whoami"))
            .header("authorization", "Bearer forged-by-client")
            .body(empty())
            .unwrap()
    };
    let (status, _, body) = send(forged()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["headers"]["authorization"], "Bearer token-one");

    write_secret_version(secret.path(), "2026_01_02", "token-two\n");
    let start = Instant::now();
    loop {
        let (_, _, body) = send(forged()).await;
        let seen = json(&body)["headers"]["authorization"].clone();
        if seen == "Bearer token-two" {
            break;
        }
        assert_eq!(
            seen, "Bearer token-one",
            "only the old or the new token, never the client's"
        );
        assert!(start.elapsed() < DEADLINE, "the rotated token was never picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_auth_header_with_empty_scheme_sends_raw_token() {
    let secret = tempfile::tempdir().unwrap();
    let token_file = secret.path().join("api-key");
    std::fs::write(&token_file, "key-123\n").unwrap();
    let upstream = spawn_upstream(echo).await;
    let ambassador = Ambassador::start(
        &format!("http://{upstream}"),
        &[
            "--auth-file",
            token_file.to_str().unwrap(),
            "--auth-header",
            "X-Api-Key",
            "--auth-scheme",
            "",
        ],
    )
    .await;

    let request = Request::get(ambassador.url("/"))
        .header("x-api-key", "forged")
        .header("authorization", "Bearer the-apps-own")
        .body(empty())
        .unwrap();
    let (_, _, body) = send(request).await;
    let headers = &json(&body)["headers"];
    assert_eq!(headers["x-api-key"], "key-123");
    assert_eq!(headers["authorization"], "Bearer the-apps-own");
}

// ---------------------------------------------------------------------------------------------------------------
// Failures, timeouts and retries
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_json_after_timeout() {
    let upstream = spawn_upstream(|_request| async {
        std::future::pending::<()>().await;
        Response::new(empty())
    })
    .await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &["--timeout", "500ms"]).await;

    let (status, headers, body) = send(get(&ambassador.url("/slow"))).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["content-type"], "application/json");
    let error = json(&body);
    assert_eq!(error["error"], "upstream timed out after 500ms");
    assert_eq!(error["upstream"], format!("http://{upstream}"));
    assert_eq!(ambassador.log_for("GET", "/slow").await["status"], 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_upstream_gets_502_json_and_only_get_is_retried() {
    let down = format!("http://127.0.0.1:{}", free_port());
    let ambassador = Ambassador::start(&down, &["--retries", "2"]).await;

    let (status, headers, body) = send(get(&ambassador.url("/down"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "application/json");
    let error = json(&body);
    assert!(
        error["error"].as_str().unwrap().starts_with("upstream unreachable"),
        "{error}"
    );
    assert_eq!(error["upstream"], down);
    assert_eq!(ambassador.log_for("GET", "/down").await["retries"], 2);

    let post = Request::post(ambassador.url("/down-post"))
        .body(full("payload"))
        .unwrap();
    let (status, _, _) = send(post).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(ambassador.log_for("POST", "/down-post").await["retries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_retried_after_503_but_post_is_not() {
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let upstream = spawn_upstream({
        let hits = Arc::clone(&hits);
        move |request: Request<Incoming>| {
            let hits = Arc::clone(&hits);
            async move {
                let n = {
                    let mut hits = hits.lock().unwrap();
                    let n = hits.entry(request.uri().path().to_owned()).or_default();
                    *n += 1;
                    *n
                };
                let _ = request.into_body().collect().await;
                let mut response = Response::new(full(format!("attempt {n}")));
                if n == 1 {
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                response
            }
        }
    })
    .await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;

    let (status, _, body) = send(get(&ambassador.url("/get-path"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "attempt 2");
    assert_eq!(ambassador.log_for("GET", "/get-path").await["retries"], 1);

    let post = Request::post(ambassador.url("/post-path")).body(full("x")).unwrap();
    let (status, _, body) = send(post).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "attempt 1");

    // A GET with a body cannot be replayed either.
    let get_with_body = Request::builder()
        .method(Method::GET)
        .uri(ambassador.url("/get-with-body"))
        .body(full("cannot replay"))
        .unwrap();
    let (status, _, _) = send(get_with_body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.lock().unwrap()["/post-path"], 1);
    assert_eq!(hits.lock().unwrap()["/get-with-body"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_retried_on_connect_error_until_upstream_listens() {
    let port = free_port();
    // Backoff doubles from 50 ms to a 2 s cap: eight retries leave several seconds to start the upstream.
    let ambassador = Ambassador::start(&format!("http://127.0.0.1:{port}"), &["--retries", "8"]).await;

    let answer = tokio::spawn(send(get(&ambassador.url("/late"))));
    ambassador
        .stderr
        .wait_for("a retry", |l| l.contains("retrying upstream request"))
        .await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(serve_upstream(listener, |_request| async {
        Response::new(full("finally"))
    }));

    let (status, _, body) = answer.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "finally");
    let retries = ambassador.log_for("GET", "/late").await["retries"].as_u64().unwrap();
    assert!(retries >= 1, "{retries}");
}

// ---------------------------------------------------------------------------------------------------------------
// TLS upstream
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_with_ca_file() {
    let ca = TestCa::new("entourage test CA");
    let other_ca = TestCa::new("some other CA");
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, other_pem) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    ca.write_pem(&ca_pem);
    other_ca.write_pem(&other_pem);
    let upstream = spawn_tls_upstream(ca.server_config()).await;
    let url = format!("https://{upstream}/tls");

    let trusted = Ambassador::start(&url, &["--ca-file", ca_pem.to_str().unwrap()]).await;
    let (status, _, body) = send(get(&trusted.url("/hello?q=1"))).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["uri"], "/tls/hello?q=1");
    assert_eq!(seen["headers"]["host"], upstream.to_string());

    let untrusted = Ambassador::start(&url, &["--ca-file", other_pem.to_str().unwrap(), "--retries", "0"]).await;
    let (status, _, body) = send(get(&untrusted.url("/hello"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        json(&body)["error"].as_str().unwrap().contains("certificate"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Admin and lifecycle
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_on_admin_port() {
    let upstream = spawn_upstream(echo).await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;
    let (status, _, body) = send(get(&format!("http://{}/healthz", ambassador.admin))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok\n");
    let (status, _, _) = send(get(&format!("http://{}/nope", ambassador.admin))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request_and_exits_zero() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let upstream = spawn_upstream({
        let (arrived, release) = (Arc::clone(&arrived), Arc::clone(&release));
        move |_request| {
            let (arrived, release) = (Arc::clone(&arrived), Arc::clone(&release));
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Response::new(full("finished"))
            }
        }
    })
    .await;
    let mut ambassador = Ambassador::start(&format!("http://{upstream}"), &["--drain", "30s"]).await;

    let in_flight = tokio::spawn(send(get(&ambassador.url("/long"))));
    let start = Instant::now();
    while arrived.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < DEADLINE, "the request never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &ambassador.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Readiness flips to 503 once shutdown has begun, while the request is still in flight.
    loop {
        let probe = client().request(get(&format!("http://{}/healthz", ambassador.admin)));
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
        }
        assert!(start.elapsed() < DEADLINE, "readiness never reported draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.notify_one();

    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "finished");
    let exit = loop {
        if let Some(status) = ambassador.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "the ambassador did not exit after draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0), "stderr: {:?}", ambassador.stderr.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_when_drain_period_runs_out() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let upstream = spawn_upstream({
        let arrived = Arc::clone(&arrived);
        move |_request| {
            let arrived = Arc::clone(&arrived);
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Response::new(empty())
            }
        }
    })
    .await;
    let mut ambassador = Ambassador::start(&format!("http://{upstream}"), &["--drain", "200ms"]).await;
    let stuck = tokio::spawn(client().request(get(&ambassador.url("/stuck"))));
    let start = Instant::now();
    while arrived.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < DEADLINE, "the request never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &ambassador.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = loop {
        if let Some(status) = ambassador.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the ambassador did not exit after its drain period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0), "stderr: {:?}", ambassador.stderr.snapshot());
    stuck.abort();
}
