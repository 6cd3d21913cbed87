//! Hostile input over the real TLS socket: the real `entourage serve` process, with this test playing a
//! misbehaving client. Each case gets its documented answer (the table in docs/security.md) and the server answers a
//! normal review right after, because a webhook that stops answering breaks Pod creation for the whole cluster.
//!
//! Timeouts here are generous deadlines that fail a hung test, never speed checks.

mod support;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use support::apiserver::{check_answer, client_tls, Webhook, SERVER_NAME};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

/// A deadline for anything the server must do on its own (close, answer): far above what it needs.
const DEADLINE: Duration = Duration::from_secs(30);

/// A review that gets a patch: the sample nginx Pod asking for a log sidecar.
fn normal_review() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pod-sidecar-nginx.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The server is alive and answers a normal review, with a patch, on a fresh connection.
async fn assert_still_serves(webhook: &Webhook, after: &str) {
    let review = normal_review();
    let mut api = webhook.connect().await;
    let response = check_answer(&review, &api.review(&review).await);
    assert_eq!(response["allowed"], true, "after {after}");
    assert!(
        response.get("patch").is_some(),
        "after {after}: the normal review is patched"
    );
}

/// A TLS connection verified like the apiserver's, for writing raw bytes.
async fn tls(webhook: &Webhook) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(webhook.addr).await.unwrap();
    TlsConnector::from(Arc::new(client_tls(&webhook.certs.join("ca.crt"))))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the server closes the connection (EOF or reset); what it sent before.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_all)
        .await
        .expect("the server closes the connection");
    out
}

/// The head of a `POST /mutate` announcing `content_length` body bytes, then `extra` header lines.
fn mutate_head(content_length: usize, extra: &str) -> String {
    format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ncontent-length: {content_length}\r\n{extra}\r\n"
    )
}

fn status_line(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn review_with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = normal_review();
    f(&mut review);
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn each_hostile_review_body_gets_its_documented_answer_and_the_next_review_is_served() {
    let webhook = Webhook::start(&[]);
    let deep = "[".repeat(100_000).into_bytes();
    // (case, body, status, what the answer's error or response must say)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"apiVersion\": \"admission.k8s.io/v1\", kind".to_vec(),
            400,
            "not valid JSON",
        ),
        ("not an object", b"[1, 2, 3]".to_vec(), 400, "not an AdmissionReview"),
        (
            "an array of the envelope's members",
            serde_json::to_vec(&json!([
                "admission.k8s.io/v1",
                "AdmissionReview",
                normal_review()["request"]
            ]))
            .unwrap(),
            400,
            "not an AdmissionReview",
        ),
        ("empty body", Vec::new(), 400, "not valid JSON"),
        (
            "wrong apiVersion",
            review_with(|r| r["apiVersion"] = json!("admission.k8s.io/v2")),
            400,
            "apiVersion is \"admission.k8s.io/v2\"",
        ),
        (
            "wrong kind of review",
            review_with(|r| r["kind"] = json!("Pod")),
            400,
            "kind is \"Pod\"",
        ),
        (
            "missing request",
            review_with(|r| {
                r.as_object_mut().unwrap().remove("request");
            }),
            400,
            "has no request",
        ),
        (
            "request of the wrong shape",
            review_with(|r| r["request"]["uid"] = json!(7)),
            400,
            "request is malformed",
        ),
        (
            "empty uid",
            review_with(|r| r["request"]["uid"] = json!("")),
            400,
            "empty uid",
        ),
        ("100k nested [", deep, 400, "not valid JSON"),
        (
            "object of the wrong kind",
            review_with(|r| r["request"]["object"]["kind"] = json!("Job")),
            200,
            "allowed unchanged",
        ),
        (
            "oldObject only",
            review_with(|r| {
                let object = r["request"]["object"].take();
                r["request"]["oldObject"] = object;
                r["request"].as_object_mut().unwrap().remove("object");
            }),
            200,
            "allowed unchanged",
        ),
        // No apiserver sends these: not a review of an object, so a 400 that says which member is wrong.
        (
            "object is a string",
            review_with(|r| r["request"]["object"] = json!("a string")),
            400,
            "request.object is a string, expected a JSON object or null",
        ),
        (
            "object is an array",
            review_with(|r| r["request"]["object"] = json!([{"kind": "Pod"}])),
            400,
            "request.object is an array",
        ),
        (
            "object is a number",
            review_with(|r| r["request"]["object"] = json!(7)),
            400,
            "request.object is a number",
        ),
        (
            "object is an array before the kind",
            {
                let review = normal_review();
                let request = &review["request"];
                let text = format!(
                    r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"object":[1],"uid":{},"kind":{},"operation":"CREATE"}}}}"#,
                    request["uid"], request["kind"]
                );
                text.into_bytes()
            },
            400,
            "request.object is an array",
        ),
        (
            "oldObject is an array",
            review_with(|r| r["request"]["oldObject"] = json!([])),
            400,
            "request.oldObject is an array",
        ),
        (
            "oldObject is a string",
            review_with(|r| r["request"]["oldObject"] = json!("old")),
            400,
            "request.oldObject is a string",
        ),
        (
            "kind is a string",
            review_with(|r| r["request"]["kind"] = json!("Pod")),
            400,
            "request is malformed",
        ),
        (
            "kind is an array",
            review_with(|r| r["request"]["kind"] = json!(["", "v1", "Pod"])),
            400,
            "request is malformed",
        ),
        (
            "uid is an object",
            review_with(|r| r["request"]["uid"] = json!({"id": "x"})),
            400,
            "request is malformed",
        ),
        (
            "operation is a number",
            review_with(|r| r["request"]["operation"] = json!(1)),
            400,
            "request is malformed",
        ),
        (
            "operation is unknown",
            review_with(|r| r["request"]["operation"] = json!("PATCH")),
            400,
            "request is malformed",
        ),
        (
            "a number out of range where the core reads nothing",
            {
                let text = serde_json::to_string(&normal_review()).unwrap();
                text.replacen(
                    r#""spec":{"#,
                    r#""spec":{"priority":9.0E000000000000000000000000000420,"#,
                    1,
                )
                .into_bytes()
            },
            400,
            "out of range",
        ),
    ];
    for (case, body, status, says) in cases {
        let mut api = webhook.connect().await;
        let reply = api.send("POST", "/mutate?timeout=10s", body.clone()).await;
        assert_eq!(
            reply.status,
            status,
            "{case}: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        if status == 200 {
            let request: Value = serde_json::from_slice(&body).unwrap();
            let response = check_answer(&request, &reply);
            assert_eq!(response["allowed"], true, "{case}");
            assert!(response.get("patch").is_none(), "{case}: {response}");
        } else {
            let error = reply.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(error.contains(says), "{case}: {error:?} does not say {says:?}");
            assert!(reply.content_type.starts_with("application/json"), "{case}");
        }
        // Same connection, then a fresh one.
        let review = normal_review();
        check_answer(&review, &api.review(&review).await);
        assert_still_serves(&webhook, case).await;
    }
    assert!(webhook_is_alive(&webhook), "the process survived every case");
}

fn webhook_is_alive(webhook: &Webhook) -> bool {
    Path::new(&format!("/proc/{}/status", webhook.child.id())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/status", webhook.child.id()))
            .unwrap_or_default()
            .contains("State:\tZ")
}

#[tokio::test]
async fn body_over_8_mib_gets_413_and_the_next_review_is_served() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    let reply = api
        .send("POST", "/mutate?timeout=10s", vec![b' '; 9 * 1024 * 1024])
        .await;
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"].as_str().unwrap().contains("larger than 8 MiB"));
    assert_still_serves(&webhook, "a 9 MiB body").await;
}

#[tokio::test]
async fn truncated_body_gets_400_and_the_next_review_is_served() {
    let webhook = Webhook::start(&[]);
    let mut stream = tls(&webhook).await;
    let body = serde_json::to_vec(&normal_review()).unwrap();
    let head = mutate_head(body.len() + 1000, "");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    // Close our side (close_notify, then FIN): the body can never complete.
    stream.shutdown().await.unwrap();
    let reply = read_until_closed(&mut stream).await;
    let status = status_line(&reply);
    eprintln!("truncated body: {} bytes, {status:?}", reply.len());
    // The server reads the end of the stream, answers 400 with the reason, and closes.
    assert!(
        status.starts_with("HTTP/1.1 400"),
        "a truncated body is refused with 400: {status:?}"
    );
    assert!(
        String::from_utf8_lossy(&reply).contains("cannot read the body"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    assert_still_serves(&webhook, "a truncated body").await;
}

#[tokio::test]
async fn headers_sent_one_byte_per_second_are_cut_off_by_the_server() {
    let webhook = Webhook::start(&["--header-timeout", "2"]);
    let stream = tls(&webhook).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\nx-slow: {}\r\n\r\n",
        "s".repeat(16)
    );
    let total = head.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let trickle = tokio::spawn(async move {
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // The server closes the connection (EOF or reset) while headers are still arriving.
    let closed = tokio::time::timeout(Duration::from_secs(total as u64 + 30), read_until_closed(&mut reader)).await;
    let at = sent.load(Ordering::SeqCst);
    trickle.abort();
    let Ok(reply) = closed else {
        panic!("the server never closed the connection");
    };
    eprintln!(
        "slow headers: closed after {at} of {total} bytes with {:?}",
        status_line(&reply)
    );
    assert!(
        at < total,
        "the connection was closed only after all {total} header bytes were sent"
    );
    assert_still_serves(&webhook, "a slow-headers client").await;
}

#[tokio::test]
async fn a_body_arriving_slower_than_the_header_timeout_is_still_answered() {
    // The header timeout bounds request heads; a request already being read or answered is not cut off.
    let webhook = Webhook::start(&["--header-timeout", "1"]);
    let mut stream = tls(&webhook).await;
    let body = serde_json::to_vec(&normal_review()).unwrap();
    let head = mutate_head(body.len(), "connection: close\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    // Three header timeouts: long enough for any timer armed for the request's head to have fired.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    stream.flush().await.unwrap();
    let reply = read_until_closed(&mut stream).await;
    assert!(
        status_line(&reply).starts_with("HTTP/1.1 200"),
        "a slow body was not answered: {:?}",
        status_line(&reply)
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_is_closed_by_the_idle_timeout() {
    let webhook = Webhook::start(&["--header-timeout", "1", "--idle-timeout", "4s"]);
    let mut stream = tls(&webhook).await;
    let body = serde_json::to_vec(&normal_review()).unwrap();
    let head = mutate_head(body.len(), "");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.flush().await.unwrap();
    let sent = std::time::Instant::now();
    let reply = read_until_closed(&mut stream).await;
    let open_for = sent.elapsed();
    assert!(
        status_line(&reply).starts_with("HTTP/1.1 200"),
        "{:?}",
        status_line(&reply)
    );
    eprintln!("idle keep-alive connection closed {open_for:?} after its request");
    // Kept well past the header timeout (1 s), closed by the server soon after the idle timeout (4 s; slack for a
    // busy machine).
    assert!(open_for >= Duration::from_millis(3500), "closed after {open_for:?}");
    assert!(open_for <= Duration::from_secs(10), "still open after {open_for:?}");
}

/// SLOW (95 s of real time, run in parallel with the rest): the apiserver keeps idle connections for 90 s and
/// reuses them; a review sent on one after 95 s of silence must be answered on that same connection.
#[tokio::test]
async fn slow_a_connection_silent_for_95_seconds_serves_the_next_review_without_a_reconnect() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    let review = normal_review();
    check_answer(&review, &api.review(&review).await);
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert!(!api.is_closed(), "the server closed the idle connection within 95 s");
    // ApiClient holds exactly one connection and never redials: an answer here came over the same connection.
    check_answer(&review, &api.review(&review).await);
}

#[tokio::test]
async fn a_client_silent_after_the_tls_handshake_is_cut_off_by_the_header_timeout() {
    // Before a first request there are no headers to time: the server must still not hold the connection (and
    // one of its --max-connections slots) for ever.
    let webhook = Webhook::start(&["--header-timeout", "2"]);
    let mut silent = tls(&webhook).await;
    let reply = read_until_closed(&mut silent).await;
    assert!(reply.is_empty(), "a silent client got {:?}", status_line(&reply));
    assert_still_serves(&webhook, "a silent client").await;
}

#[tokio::test]
async fn a_client_silent_after_negotiating_h2_is_cut_off_by_the_header_timeout() {
    // hyper has no handshake deadline of its own for h2: the server gives a client that sends no request the
    // same header timeout as HTTP/1.1, so silent clients cannot hold --max-connections slots.
    let webhook = Webhook::start(&["--header-timeout", "2"]);
    let mut config = client_tls(&webhook.certs.join("ca.crt"));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(webhook.addr).await.unwrap();
    let mut silent = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(silent.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let closed = tokio::time::timeout(Duration::from_secs(60), read_until_closed(&mut silent)).await;
    assert!(closed.is_ok(), "a silent h2 client kept its connection for a minute");
    assert_still_serves(&webhook, "a silent h2 client").await;
}

#[tokio::test]
async fn a_client_negotiating_h2_is_still_served_over_h2() {
    // The protocol follows ALPN (no sniffing of the first bytes): h2 when negotiated, HTTP/1.1 otherwise.
    let webhook = Webhook::start(&[]);
    let mut config = client_tls(&webhook.certs.join("ca.crt"));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(webhook.addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let review = normal_review();
    let request = hyper::Request::post(format!("https://{SERVER_NAME}/mutate?timeout=10s"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&review).unwrap())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_is_closed_and_the_server_keeps_serving() {
    let webhook = Webhook::start(&[]);
    let mut tcp = TcpStream::connect(webhook.addr).await.unwrap();
    let body = serde_json::to_vec(&normal_review()).unwrap();
    let head = mutate_head(body.len(), "");
    // The server may close as soon as the first bytes are read: a write error is an answer too.
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(&body).await;
    let reply = read_until_closed(&mut tcp).await;
    assert_is_closed_or_alert("plaintext HTTP", &reply);
    assert_still_serves(&webhook, "plaintext HTTP").await;
}

/// Nothing but, at most, one TLS alert record (content type 21) before the close.
fn assert_is_closed_or_alert(case: &str, reply: &[u8]) {
    eprintln!("{case}: {:02x?}", &reply[..reply.len().min(8)]);
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "{case}: expected a close or a TLS alert, got {:?}",
        String::from_utf8_lossy(&reply[..reply.len().min(64)])
    );
}

#[tokio::test]
async fn tls_garbage_is_closed_and_the_server_keeps_serving() {
    let webhook = Webhook::start(&[]);
    // A handshake record header announcing a ClientHello, followed by noise; then plain noise; then a record
    // header claiming 16 KiB that never comes (the handshake timeout ends that one, so it is not awaited).
    let mut noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut hello = vec![0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03];
    hello.extend_from_slice(&noise[..512]);
    noise[0] = 0x42;
    for (case, bytes) in [("ClientHello of noise", hello), ("noise", noise)] {
        let mut tcp = TcpStream::connect(webhook.addr).await.unwrap();
        let _ = tcp.write_all(&bytes).await;
        let reply = read_until_closed(&mut tcp).await;
        assert_is_closed_or_alert(case, &reply);
        assert_still_serves(&webhook, case).await;
    }
    let mut stalled = TcpStream::connect(webhook.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00]).await.unwrap();
    assert_still_serves(&webhook, "a stalled handshake record").await;
}

/// A minimal ClientHello offering only `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1), no extensions.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, RSA-AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_0_and_1_1_clients_are_refused_with_a_fatal_alert() {
    let webhook = Webhook::start(&[]);
    for (case, version) in [("TLS 1.0", [0x03, 0x01]), ("TLS 1.1", [0x03, 0x02])] {
        let mut tcp = TcpStream::connect(webhook.addr).await.unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let reply = read_until_closed(&mut tcp).await;
        // One fatal (2) alert record, handshake_failure (40; rustls 0.23) or protocol_version (70); never a
        // ServerHello: there is no TLS 1.0 or 1.1 in rustls to negotiate.
        assert_eq!(reply.first(), Some(&0x15), "{case}: {reply:02x?}");
        assert!(
            matches!(reply.get(5..7), Some([0x02, 0x28 | 0x46])),
            "{case}: {reply:02x?}"
        );
        assert_still_serves(&webhook, case).await;
    }
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    support::proc_status(pid, "VmRSS").expect("VmRSS in /proc/<pid>/status")
}

/// The RSS bound for 2,000 idle connections. Measured on the development machine (debug build): 13.8 MiB before
/// and 37.9 MiB with 2,000 idle connections (200 of them past the TLS handshake). Each TLS connection costs rustls'
/// buffers and hyper's connection state (tens of KiB); 200 MiB leaves room for allocator slack and a slower
/// machine while still catching a per-connection leak of a buffer the size of a body.
const IDLE_RSS_BOUND_KIB: u64 = 200 * 1024;

#[tokio::test]
async fn two_thousand_idle_connections_do_not_stop_reviews_and_memory_stays_bounded() {
    // The default timeouts: 200 kept-alive connections that each had a review (as the apiserver's pool) wait out
    // the 120 s idle timeout, 1,800 plain TCP connections the 10 s handshake timeout.
    let webhook = Webhook::start(&[]);
    let before = rss_kib(webhook.child.id());
    let mut plain = Vec::new();
    let mut kept_alive = Vec::new();
    let review = normal_review();
    for i in 0..2000 {
        if i % 10 == 0 {
            let mut api = webhook.connect().await;
            assert_eq!(api.review(&review).await.status, 200);
            kept_alive.push(api);
        } else {
            plain.push(TcpStream::connect(webhook.addr).await.unwrap());
        }
    }
    // Normal reviews are still served, each on a fresh connection.
    for i in 0..5 {
        assert_still_serves(&webhook, &format!("2,000 idle connections (review {i})")).await;
    }
    let during = rss_kib(webhook.child.id());
    eprintln!(
        "RSS before: {before} KiB; with {} plain and {} kept-alive idle connections: {during} KiB",
        plain.len(),
        kept_alive.len()
    );
    assert!(
        during < IDLE_RSS_BOUND_KIB,
        "RSS {during} KiB with 2,000 idle connections exceeds {IDLE_RSS_BOUND_KIB} KiB"
    );
    // The kept-alive ones are still open and serve again.
    for api in &mut kept_alive[..5] {
        assert!(!api.is_closed(), "a kept-alive connection was closed while idle");
        assert_eq!(api.review(&review).await.status, 200);
    }
    drop(plain);
    drop(kept_alive);
    assert_still_serves(&webhook, "closing 2,000 idle connections").await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once_and_a_freed_slot_serves_again() {
    let webhook = Webhook::start(&["--max-connections", "4", "--header-timeout", "120"]);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tls(&webhook).await);
    }
    let mut extra = TcpStream::connect(webhook.addr).await.unwrap();
    let _ = extra.write_all(b"\x16\x03\x01").await;
    assert!(
        read_until_closed(&mut extra).await.is_empty(),
        "the extra connection gets nothing"
    );
    drop(held.pop());
    // The slot is released when the server notices the close; retry until then, within the deadline.
    let review = normal_review();
    let served = tokio::time::timeout(DEADLINE, async {
        loop {
            let tcp = TcpStream::connect(webhook.addr).await.unwrap();
            let connector = TlsConnector::from(Arc::new(client_tls(&webhook.certs.join("ca.crt"))));
            if let Ok(stream) = connector.connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp).await {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let request = hyper::Request::post("/mutate?timeout=10s")
                    .header("host", SERVER_NAME)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(serde_json::to_vec(&review).unwrap())))
                    .unwrap();
                if let Ok(response) = sender.send_request(request).await {
                    return response.status().as_u16();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(served, Ok(200));
}

/// A CA and a client certificate it signs, as PEM files in `dir`; returns (ca path, cert PEM, key PEM).
fn client_pki(dir: &Path) -> (std::path::PathBuf, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "apiserver client CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = client.signed_by(&key, &Issuer::from_params(&ca, &ca_key)).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("client-ca.crt");
    std::fs::write(&path, ca_cert.pem()).unwrap();
    (path, cert.pem(), key.serialize_pem())
}

/// One GET /healthz over a fresh TLS connection presenting `identity`, if any: the status, or why none came.
async fn healthz_with(webhook: &Webhook, identity: Option<(&str, &str)>) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(webhook.certs.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(webhook.addr).await.map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/healthz")
        .header("host", SERVER_NAME)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[tokio::test]
async fn with_client_ca_only_clients_presenting_a_certificate_it_signed_are_served() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = client_pki(pki.path());
    let webhook = Webhook::start(&["--client-ca", ca.to_str().unwrap()]);
    let anonymous = healthz_with(&webhook, None).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was served: {anonymous:?}"
    );
    let other = client_pki(&pki.path().join("other"));
    let stranger = healthz_with(&webhook, Some((&other.1, &other.2))).await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA was accepted: {stranger:?}"
    );
    assert_eq!(healthz_with(&webhook, Some((&cert, &key))).await, Ok(200));
}
