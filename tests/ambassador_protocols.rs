//! The ambassador speaks what apps speak: gRPC (unary, server-, client- and bidirectional streaming, statuses,
//! trailers, deadlines, safe retries) over h2c from the app and h2 (plain, TLS, mTLS) to the upstream, HTTP/2
//! without gRPC, WebSocket relays, and long streamed bodies in bounded memory. The clients and servers are real,
//! maintained implementations: grpcio and websockets from PyPI, hyper for HTTP/2.
//!
//! A Python package that is not installed skips its test on a developer's machine ("skipped" on stderr) and fails
//! it under `CI=true`: CI installs them (`.ci/run`, `make python-deps`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

mod support;
use support::ambassador::*;

const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support");

/// Whether python3 can import `module`; if not, panics under CI (which installs it) and says "skipped" elsewhere.
fn python_has(module: &str, package: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 cannot import {module}: CI must install {package} (.ci/run, make python-deps)"
        );
        eprintln!("skipped: python3 cannot import {module} (python3 -m pip install {package})");
    }
    ok
}

/// A Python server from the harness, killed on drop.
struct PyServer {
    child: Child,
    port: u16,
}

impl PyServer {
    fn start(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .arg(Path::new(HARNESS).join(script))
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("{script} did not say its port: {line:?}"))
            .parse()
            .unwrap();
        Self { child, port }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a harness client to completion and parses the JSON it prints.
async fn py_client(script: &str, args: Vec<String>) -> Value {
    let script = Path::new(HARNESS).join(script);
    let run = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(DEADLINE.as_secs().to_string())
            .arg("python3")
            .arg(script)
            .arg("call")
            .args(args)
            .stdin(Stdio::null())
            .output()
    });
    let output = run.await.unwrap().expect("run python3");
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

async fn grpc_client(target: &str, scenarios: &str, key: &str) -> Value {
    let args = ["call", target, "--scenarios", scenarios, "--key", key];
    py_client("grpc_peer.py", args[1..].iter().map(|s| s.to_string()).collect()).await
}

/// What grpcio's client sees calling the server straight, without the ambassador: the reference every run through
/// the ambassador must equal.
async fn direct_reference() -> Value {
    let server = PyServer::start("grpc_peer.py", &[]);
    let reference = grpc_client(&format!("127.0.0.1:{}", server.port), "unary,streams", "direct").await;
    // The reference itself must show what is compared: messages, statuses, trailers and an expired deadline.
    assert_eq!(reference["unary"]["value"], "echo:hello", "{reference}");
    assert_eq!(reference["unary"]["trailing"]["x-trailer"], "t-hello");
    assert_eq!(reference["status"]["code"], "NOT_FOUND");
    assert_eq!(reference["deadline"]["code"], "DEADLINE_EXCEEDED");
    assert_eq!(reference["bidi"]["value"], json!(["re:one", "re:two", "re:three"]));
    reference
}

/// Compares a run through the ambassador with the direct reference, scenario by scenario; `seen` (what the server
/// saw of the call) is checked apart because the ambassador adds the credential.
fn assert_same_as_direct(through: &Value, reference: &Value) {
    for (scenario, expected) in reference.as_object().unwrap() {
        if scenario == "seen" {
            continue;
        }
        assert_eq!(
            &through[scenario], expected,
            "{scenario} differs through the ambassador"
        );
    }
    let seen: Value = serde_json::from_str(through["seen"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(seen["x-app"], "1", "{seen}");
    assert_eq!(
        seen["deadline_within_7s"], true,
        "the client's deadline reaches the server: {seen}"
    );
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(ambassador: &Ambassador) -> String {
    let (_, _, body) = send(get(&format!("http://{}/metrics", ambassador.admin))).await;
    String::from_utf8(body.to_vec()).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_kind_arrive_as_they_would_without_the_ambassador() {
    if !python_has("grpc", "grpcio") {
        return;
    }
    let reference = direct_reference().await;
    let server = PyServer::start("grpc_peer.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "grpc-token\n").unwrap();
    let auth = dir.path().join("token");
    // Exactly what the webhook writes for an http:// upstream: no protocol flag, the app's protocol decides.
    let ambassador = Ambassador::start(
        &format!("http://127.0.0.1:{}", server.port),
        &["--auth-file", auth.to_str().unwrap()],
    )
    .await;

    let through = grpc_client(&ambassador.listen.to_string(), "unary,streams", "via").await;
    assert_same_as_direct(&through, &reference);
    let seen: Value = serde_json::from_str(through["seen"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen["authorization"], "Bearer grpc-token",
        "the credential is added to gRPC calls"
    );

    // The access log names the protocol and the status from the trailers; the metrics count both.
    let line = ambassador
        .stdout
        .wait_for("the failed call", |l| l.contains("\"grpc_status\":5"))
        .await;
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["protocol"], "grpc", "{line}");
    assert_eq!(line["path"], "/test.Echo/Unary");
    assert_eq!(line["status"], 200);
    let ok = ambassador
        .stdout
        .wait_for("a streamed call", |l| {
            l.contains("/test.Echo/Bidi") && l.contains("\"grpc_status\":0")
        })
        .await;
    assert!(ok.contains("\"protocol\":\"grpc\""), "{ok}");
    let text = scrape(&ambassador).await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let series = |name: &str, label: &str| format!("entourage_ambassador_{name}{{upstream=\"{upstream}\",{label}}}");
    assert!(
        metric(&text, &series("grpc_calls_total", "status=\"NOT_FOUND\"")) >= Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, &series("grpc_calls_total", "status=\"OK\"")) >= Some(4.0),
        "{text}"
    );
    assert!(
        metric(&text, &series("protocol_requests_total", "protocol=\"grpc\"")) >= Some(7.0),
        "{text}"
    );
}

/// Runs the reference scenarios through an ambassador in front of a TLS gRPC server; mTLS when `client_cert`.
async fn grpc_over_tls(client_cert: bool) {
    if !python_has("grpc", "grpcio") {
        return;
    }
    let reference = direct_reference().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("upstream CA");
    let clients = TestCa::new("client CA");
    let (cert, key) = ca.server_cert_pem();
    let file = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, ca_file) = (
        file("server.crt", &cert),
        file("server.key", &key),
        file("ca.crt", &ca.pem()),
    );
    let client_ca = file("client-ca.crt", &clients.pem());
    let mut server_args = vec!["--cert", &cert, "--key", &key];
    if client_cert {
        server_args.extend(["--client-ca", &client_ca]);
    }
    let server = PyServer::start("grpc_peer.py", &server_args);
    let upstream = format!("https://127.0.0.1:{}", server.port);
    let issued = clients.client_cert("app");
    let (client_crt, client_key) = (
        file("client.crt", &issued.cert_pem),
        file("client.key", &issued.key_pem),
    );
    let mut flags = vec!["--ca-file", &ca_file];
    if client_cert {
        flags.extend(["--client-cert", &client_crt, "--client-key", &client_key]);
    }
    let ambassador = Ambassador::start(&upstream, &flags).await;
    let through = grpc_client(&ambassador.listen.to_string(), "unary,streams", "tls").await;
    assert_same_as_direct(&through, &reference);

    if client_cert {
        // Control: the same upstream through an ambassador without the client certificate refuses the call.
        let bare = Ambassador::start(&upstream, &["--ca-file", &ca_file]).await;
        let refused = grpc_client(&bare.listen.to_string(), "unary", "bare").await;
        assert_eq!(refused["unary"]["code"], "UNAVAILABLE", "{refused}");
        assert!(
            refused["unary"]["details"].as_str().unwrap().contains("upstream"),
            "the ambassador says why: {refused}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reaches_a_tls_upstream_over_alpn_h2() {
    grpc_over_tls(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reaches_an_mtls_upstream_with_the_client_certificate() {
    grpc_over_tls(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_before_any_message_is_retried_and_a_started_stream_is_not() {
    if !python_has("grpc", "grpcio") {
        return;
    }
    let server = PyServer::start("grpc_peer.py", &[]);
    let target = format!("127.0.0.1:{}", server.port);
    // Control: straight to the server, the first call of a key fails with UNAVAILABLE.
    let direct = grpc_client(&target, "retry", "direct").await;
    assert_eq!(direct["flaky"]["code"], "UNAVAILABLE", "{direct}");
    assert_eq!(direct["flaky_calls"]["value"], "1");

    let ambassador = Ambassador::start(&format!("http://{target}"), &[]).await;
    let through = grpc_client(&ambassador.listen.to_string(), "retry", "via").await;
    assert_eq!(through["flaky"]["code"], "OK", "{through}");
    assert_eq!(through["flaky"]["value"], "served after 2 calls");
    assert_eq!(through["flaky_calls"]["value"], "2", "one retry: {through}");
    // A stream that already sent a message is never sent again, whatever status ends it.
    assert_eq!(through["flaky_stream"]["code"], "UNAVAILABLE", "{through}");
    assert_eq!(through["flaky_stream_calls"]["value"], "1", "not retried: {through}");
    let line = ambassador
        .stdout
        .wait_for("the retried call", |l| l.contains("\"retries\":1"))
        .await;
    assert!(line.contains("\"grpc_status\":0"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_to_a_down_upstream_gets_unavailable_with_the_reason() {
    if !python_has("grpc", "grpcio") {
        return;
    }
    let ambassador = Ambassador::start(&format!("http://127.0.0.1:{}", free_port()), &["--retries", "0"]).await;
    let through = grpc_client(&ambassador.listen.to_string(), "unary", "down").await;
    assert_eq!(through["unary"]["code"], "UNAVAILABLE", "{through}");
    assert!(
        through["unary"]["details"]
            .as_str()
            .unwrap()
            .starts_with("upstream unreachable"),
        "{through}"
    );
    let line = ambassador
        .stdout
        .wait_for("the failed call", |l| l.contains("\"grpc_status\":14"))
        .await;
    assert!(line.contains("\"protocol\":\"grpc\""), "{line}");
}

/// The ambassador command line the webhook renders for a Pod with `annotations`.
fn injected_command_line(annotations: Value) -> Vec<String> {
    let config = entourage::core::config::Config::default();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]}
    });
    let body = serde_json::to_vec(&support::review(("", "v1", "Pod"), "shop", "CREATE", &pod)).unwrap();
    let review = entourage::admission::decode(&body, &config).unwrap();
    let outcome = entourage::core::mutate::mutate(&review.request, &config);
    let patched = support::apply(&pod, &serde_json::to_value(&outcome.patch).unwrap()).unwrap();
    let spec = &patched["spec"];
    let ambassador = spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten()
        .find(|c| c["name"].as_str().unwrap().starts_with("ambassador"))
        .unwrap_or_else(|| panic!("no ambassador injected: {patched}"));
    serde_json::from_value(ambassador["args"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_the_ambassador_the_webhook_injects_and_the_protocol_annotation_is_obeyed() {
    if !python_has("grpc", "grpcio") {
        return;
    }
    let reference = direct_reference().await;
    let server = PyServer::start("grpc_peer.py", &[]);
    let upstream = format!("http://127.0.0.1:{}", server.port);

    for protocol in [None, Some("http2")] {
        let mut annotations = json!({"entourage.dev/ambassador-upstream": upstream});
        if let Some(protocol) = protocol {
            annotations["entourage.dev/ambassador-protocol"] = json!(protocol);
        }
        let argv = injected_command_line(annotations);
        let ambassador = Ambassador::start_injected(&argv).await;
        let through = grpc_client(&ambassador.listen.to_string(), "unary,streams", "injected").await;
        assert_same_as_direct(&through, &reference);
    }

    // Control: the annotation reaches the runtime. Forced to HTTP/1.1, the same calls cannot work (the gRPC
    // server speaks HTTP/2 only).
    let argv = injected_command_line(json!({
        "entourage.dev/ambassador-upstream": upstream,
        "entourage.dev/ambassador-protocol": "http1",
    }));
    assert!(
        argv.windows(2).any(|w| w == ["--upstream-protocol", "http1"]),
        "{argv:?}"
    );
    let ambassador = Ambassador::start_injected(&argv).await;
    let forced = grpc_client(&ambassador.listen.to_string(), "unary", "forced").await;
    assert_ne!(forced["unary"]["code"], "OK", "{forced}");
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP/2 without gRPC, and the protocol flag
// ---------------------------------------------------------------------------------------------------------------

/// An upstream speaking HTTP/1.1 and h2c (prior knowledge) on one port, answering with the version it saw.
async fn spawn_version_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let version = format!("{:?}", request.version());
                    let host = request
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_owned())
                        .or_else(|| request.uri().authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let reply = json!({"version": version, "host": host, "body": String::from_utf8_lossy(&body)});
                    Ok::<_, std::convert::Infallible>(Response::new(full(reply.to_string())))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn h2c_post(url: &str, body: &'static str) -> (Version, Value) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let request = Request::post(url).body(full(body)).unwrap();
    let response = tokio::time::timeout(DEADLINE, client.request(request))
        .await
        .unwrap()
        .unwrap();
    let version = response.version();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, json(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_follows_the_app_unless_the_flag_forces_one() {
    let upstream = spawn_version_upstream().await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;

    let (version, seen) = h2c_post(&ambassador.url("/h2"), "over h2").await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(
        seen["version"], "HTTP/2.0",
        "h2c from the app goes upstream as h2: {seen}"
    );
    assert_eq!(seen["host"], upstream.to_string());
    assert_eq!(seen["body"], "over h2");
    let request = Request::post(ambassador.url("/h1")).body(full("over h1")).unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["version"], "HTTP/1.1", "HTTP/1.1 stays HTTP/1.1");
    let line = ambassador.log_for("POST", "/h2").await;
    assert_eq!(line["protocol"], "h2", "{line}");
    assert_eq!(ambassador.log_for("POST", "/h1").await["protocol"], "http/1.1");

    let forced_h1 = Ambassador::start(&format!("http://{upstream}"), &["--upstream-protocol", "http1"]).await;
    let (version, seen) = h2c_post(&forced_h1.url("/x"), "down to h1").await;
    assert_eq!(version, Version::HTTP_2, "the app still gets its own protocol back");
    assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    assert_eq!(seen["body"], "down to h1");

    let forced_h2 = Ambassador::start(&format!("http://{upstream}"), &["--upstream-protocol", "http2"]).await;
    let request = Request::post(forced_h2.url("/x")).body(full("up to h2")).unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["version"], "HTTP/2.0");
    assert_eq!(json(&body)["body"], "up to h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_share_one_upstream_connection() {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn({
        let accepted = Arc::clone(&accepted);
        async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|_request: Request<Incoming>| async move {
                        // Slow enough that concurrent requests overlap on the connection.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::convert::Infallible>(Response::new(full("ok")))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    });
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;
    let calls: Vec<_> = (0..20)
        .map(|i| tokio::spawn(h2c_post_text(ambassador.url(&format!("/{i}")))))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "ok");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "20 concurrent h2 requests, one multiplexed upstream connection"
    );
}

async fn h2c_post_text(url: String) -> String {
    // A client (and so a connection) per call: the multiplexing seen upstream is the ambassador's own.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let response = client.request(get(&url)).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_flow_both_ways_and_either_side_can_close() {
    if !python_has("websockets", "websockets") {
        return;
    }
    let server = PyServer::start("ws_peer.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "ws-token\n").unwrap();
    let auth = dir.path().join("token");
    let ambassador = Ambassador::start(
        &format!("http://127.0.0.1:{}", server.port),
        &["--auth-file", auth.to_str().unwrap()],
    )
    .await;
    let seen = py_client("ws_peer.py", vec![format!("ws://{}/chat", ambassador.listen)]).await;
    assert_eq!(
        seen,
        json!({
            "text": "hello",
            "binary": "000162696e617279ff",
            "big_echoed": true,
            "whoami": "Bearer ws-token",
            "push": "pushed by the server",
            "client_close": [1000, "client done"],
            "server_close": [4000, "server says bye"],
        })
    );
    let line = ambassador.log_for("GET", "/chat").await;
    assert_eq!(line["protocol"], "websocket", "{line}");
    assert_eq!(line["status"], 101);
    // Both relays ended with their connections: none is left open.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = scrape(&ambassador).await;
        let series = format!(
            "entourage_ambassador_websockets_open{{upstream=\"http://127.0.0.1:{}\"}}",
            server.port
        );
        if metric(&text, &series) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "a relay stayed open: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_relay_holds_a_place_under_the_concurrency_cap() {
    if !python_has("websockets", "websockets") {
        return;
    }
    let server = PyServer::start("ws_peer.py", &[]);
    let ambassador = Ambassador::start(&format!("http://127.0.0.1:{}", server.port), &["--max-concurrent", "1"]).await;
    // Hold one relay open by hand: a raw handshake on a socket kept open.
    let mut socket = tokio::net::TcpStream::connect(ambassador.listen).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket
        .write_all(
            b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0; 1024];
    let n = tokio::time::timeout(DEADLINE, socket.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let (status, _, body) = send(get(&ambassador.url("/other"))).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the open relay takes the only place"
    );
    assert!(String::from_utf8_lossy(&body).contains("--max-concurrent"));
    drop(socket);
    // Once the relay closes its place is free again.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let response = client().request(get(&ambassador.url("/other"))).await.unwrap();
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(Instant::now() < deadline, "the closed relay kept its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket client from the harness holding one connection open through the ambassador until told to go on.
struct HeldWebSocket {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl HeldWebSocket {
    fn open(url: &str) -> Self {
        let mut child = Command::new("python3")
            .arg(Path::new(HARNESS).join("ws_peer.py"))
            .args(["hold", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "OPEN", "the WebSocket did not open through the ambassador");
        Self { child, stdout }
    }

    /// Sends one message, closes, and returns what the client saw (the echo, and the close frame it received).
    async fn finish(mut self) -> Value {
        use std::io::Write;
        writeln!(self.child.stdin.take().unwrap(), "go").unwrap();
        let seen = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            let _ = self.child.wait();
            line
        });
        let line = tokio::time::timeout(DEADLINE, seen).await.unwrap().unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }
}

fn terminate(ambassador: &Ambassador) {
    let killed = Command::new("kill")
        .args(["-TERM", &ambassador.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Waits for the ambassador to exit and returns its exit code.
async fn exit_code(ambassador: &mut Ambassador, within: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = ambassador.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            start.elapsed() < within,
            "the ambassador did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the ambassador's listener is closed: SIGTERM has been taken and the drain has begun.
async fn wait_listener_closed(ambassador: &Ambassador) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(ambassador.listen).await.is_ok() {
        assert!(
            start.elapsed() < DEADLINE,
            "the ambassador kept listening after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_websocket_finish_with_its_closing_handshake() {
    if !python_has("websockets", "websockets") {
        return;
    }
    let server = PyServer::start("ws_peer.py", &[]);
    let mut ambassador = Ambassador::start(&format!("http://127.0.0.1:{}", server.port), &["--drain", "30s"]).await;
    let held = HeldWebSocket::open(&format!("ws://{}/held", ambassador.listen));

    terminate(&ambassador);
    wait_listener_closed(&ambassador).await;
    // Time for an ambassador that does not wait for its relays to exit and cut this one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ambassador.child.try_wait().unwrap().is_none(),
        "the ambassador exited with a WebSocket open; stderr: {:?}",
        ambassador.stderr.snapshot()
    );

    let seen = held.finish().await;
    assert_eq!(
        seen,
        json!({"echo": "after the signal", "close_received": [1000, "client done"]}),
        "the relay carried a message and the closing handshake after SIGTERM"
    );
    // With the last relay closed the drain is over: the ambassador exits long before its 30 s.
    let closed = Instant::now();
    assert_eq!(exit_code(&mut ambassador, DEADLINE).await, Some(0));
    assert!(
        closed.elapsed() < Duration::from_secs(20),
        "the ambassador waited out its drain period instead of the relay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_a_websocket_still_open_when_the_drain_period_runs_out() {
    if !python_has("websockets", "websockets") {
        return;
    }
    let server = PyServer::start("ws_peer.py", &[]);
    let mut ambassador = Ambassador::start(&format!("http://127.0.0.1:{}", server.port), &["--drain", "300ms"]).await;
    let held = HeldWebSocket::open(&format!("ws://{}/held", ambassador.listen));

    terminate(&ambassador);
    assert_eq!(exit_code(&mut ambassador, DEADLINE).await, Some(0));
    // The relay was cut with the process: no closing handshake reaches the client.
    let seen = held.finish().await;
    assert_eq!(seen["close_received"], Value::Null, "{seen}");
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming in bounded memory
// ---------------------------------------------------------------------------------------------------------------

/// A body of `total` bytes produced as fast as the reader takes them.
struct Generated {
    left: u64,
    chunk: Bytes,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const GIB: u64 = 1 << 30;
/// The ambassador's resident memory may grow by at most this much while 1 GiB streams through it.
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;

async fn stream_gib_through_a_slow_reader(h2: bool) {
    let upstream = spawn_upstream(|_request| async {
        let body = Generated {
            left: GIB,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        };
        Response::new(http_body_util::BodyExt::boxed(body))
    })
    .await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &["--upstream-protocol", "http1"]).await;
    let pid = ambassador.child.id();
    let before = rss_kib(pid);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http::<TestBody>();
    let response = client.request(get(&ambassador.url("/gib"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let (mut received, mut peak, mut next_pause) = (0u64, before, 0u64);
    while let Some(frame) = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap() {
        received += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
        if received >= next_pause {
            // The slow reader: a pause every 16 MiB lets the upstream run ahead, and the ambassador must hold it
            // back rather than buffer what it cannot deliver.
            next_pause += 16 << 20;
            tokio::time::sleep(Duration::from_millis(20)).await;
            peak = peak.max(rss_kib(pid));
        }
    }
    peak = peak.max(rss_kib(pid));
    assert_eq!(received, GIB);
    assert!(
        peak - before <= RSS_GROWTH_BOUND_KIB,
        "RSS grew from {before} KiB to {peak} KiB while 1 GiB streamed"
    );
    eprintln!("1 GiB streamed (h2 from the app: {h2}): RSS {before} KiB -> peak {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gib_response_through_a_slow_http1_reader_keeps_rss_bounded() {
    stream_gib_through_a_slow_reader(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gib_response_through_a_slow_h2_reader_keeps_rss_bounded() {
    stream_gib_through_a_slow_reader(true).await;
}

/// An h2c upstream that stalls: on `/head` it never answers; on `/body` it sends its head and one message, then
/// nothing more.
async fn spawn_stalling_h2_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    if request.uri().path() == "/head" {
                        std::future::pending::<()>().await;
                    }
                    let (tx, body) = channel_body();
                    tokio::spawn(async move {
                        tx.send(Bytes::from_static(b"\x00\x00\x00\x00\x01m")).await.unwrap();
                        std::future::pending::<()>().await;
                        drop(tx);
                    });
                    let mut response = Response::new(body);
                    response
                        .headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_past_its_deadline_is_ended_by_the_ambassador_when_the_app_does_not() {
    let upstream = spawn_stalling_h2_upstream().await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;
    // A raw HTTP/2 client that sends a deadline but does not enforce it itself.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let call = |path: &str| {
        Request::post(ambassador.url(path))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "300m")
            .body(full(&b"\x00\x00\x00\x00\x01q"[..]))
            .unwrap()
    };

    let started = Instant::now();
    let response = tokio::time::timeout(DEADLINE, client.request(call("/head")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "gRPC's own form: a status, not an HTTP error"
    );
    assert_eq!(response.headers()["grpc-status"], "4", "{:?}", response.headers());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the deadline"
    );

    let response = tokio::time::timeout(DEADLINE, client.request(call("/body")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), &b"\x00\x00\x00\x00\x01m"[..]);
    let last = tokio::time::timeout(DEADLINE, body.frame())
        .await
        .expect("the ambassador ends the stalled call")
        .unwrap()
        .unwrap();
    let trailers = last.into_trailers().expect("the status comes as trailers");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    let line = ambassador
        .stdout
        .wait_for("the expired call", |l| l.contains("\"path\":\"/body\""))
        .await;
    assert!(line.contains("\"grpc_status\":4"), "{line}");

    // Control: without grpc-timeout the same stalled stream stays open (gRPC streams may idle), past the time
    // the deadline took above.
    let mut request = call("/body");
    request.headers_mut().remove("grpc-timeout");
    let response = client.request(request).await.unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(3), body.frame())
            .await
            .is_err(),
        "a call without a deadline is not cut"
    );
}
