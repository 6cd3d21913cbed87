//! End to end: the real binary over real TLS, with this test playing the apiserver.

mod support;

use serde_json::{json, Value};
use support::apiserver::{check_answer, Webhook};

fn fixtures() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "json").then(|| {
                let text = std::fs::read_to_string(&path).unwrap();
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    serde_json::from_str(&text).unwrap(),
                )
            })
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn every_sample_review_gets_a_patch_that_applies_and_a_second_review_adds_nothing() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    assert_eq!(api.alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN http/1.1 negotiated");
    let samples = fixtures();
    assert!(samples.len() >= 2, "sample reviews exist");
    for (name, review) in samples {
        let response = check_answer(&review, &api.review(&review).await);
        if response["allowed"] == false {
            assert!(
                response["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("entourage.dev/")),
                "{name}: denial names the annotation"
            );
            continue;
        }
        let object = &review["request"]["object"];
        let Some(patch) = support::decode_patch(&response).unwrap() else {
            continue;
        };
        let patched = support::apply(object, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        if object["kind"] == "Pod" {
            assert_eq!(support::pod_rule_violations(&patched), Vec::<String>::new(), "{name}");
        }
        // The apiserver reinvokes webhooks with the patched object: the second review must add nothing.
        let mut again = review.clone();
        again["request"]["uid"] = json!(format!("{}-again", review["request"]["uid"].as_str().unwrap()));
        again["request"]["object"] = patched;
        let second = check_answer(&again, &api.review(&again).await);
        assert_eq!(second["allowed"], true, "{name}");
        assert!(
            second.get("patch").is_none(),
            "{name}: second review patched again: {second}"
        );
    }
}

#[tokio::test]
async fn v1beta1_review_is_answered_in_v1beta1() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    let mut review = fixtures().into_iter().find(|(n, _)| n.contains("sidecar")).unwrap().1;
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let response = check_answer(&review, &api.review(&review).await);
    assert_eq!(response["patchType"], "JSONPatch");
}

#[tokio::test]
async fn malformed_body_gets_a_readable_400_and_the_server_keeps_serving() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    let reply = api
        .send("POST", "/mutate?timeout=10s", b"{\"apiVersion\": ".to_vec())
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"].as_str().unwrap().contains("not valid JSON"));
    let reply = api
        .send(
            "POST",
            "/mutate",
            serde_json::to_vec(&json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"})).unwrap(),
        )
        .await;
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("AdmissionReview has no request"))
    );
    // Same connection, then a fresh one: still serving.
    let review = fixtures().remove(0).1;
    check_answer(&review, &api.review(&review).await);
    let mut fresh = webhook.connect().await;
    check_answer(&review, &fresh.review(&review).await);
}

#[tokio::test]
async fn wrong_paths_methods_and_oversized_bodies_get_their_status() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    assert_eq!(api.send("POST", "/validate", b"{}".to_vec()).await.status, 404);
    assert_eq!(api.send("GET", "/mutate", Vec::new()).await.status, 405);
    assert_eq!(api.send("GET", "/healthz", Vec::new()).await.status, 200);
    assert_eq!(api.send("GET", "/readyz", Vec::new()).await.status, 200);
    let mut big = webhook.connect().await;
    let reply = big.send("POST", "/mutate", vec![b' '; 9 * 1024 * 1024]).await;
    assert_eq!(reply.status, 413);
    assert!(reply.json()["error"].as_str().unwrap().contains("8 MiB"));
}

#[tokio::test]
async fn certificate_is_verified_for_the_service_name_only() {
    let webhook = Webhook::start(&[]);
    let tcp = tokio::net::TcpStream::connect(webhook.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(support::apiserver::client_tls(
        &webhook.certs.join("ca.crt"),
    )));
    let wrong = rustls_pki_types::ServerName::try_from("other.example.com").unwrap();
    assert!(
        connector.connect(wrong, tcp).await.is_err(),
        "a name not in the certificate fails verification"
    );
}

#[tokio::test]
async fn one_log_line_per_review_with_the_decision() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    let review = fixtures().into_iter().find(|(n, _)| n.contains("sidecar")).unwrap().1;
    check_answer(&review, &api.review(&review).await);
    let uid = review["request"]["uid"].as_str().unwrap();
    let mut line = None;
    for _ in 0..50 {
        line = webhook.drain_logs().into_iter().find(|l| l["uid"] == uid);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = line.expect("a log line for the review");
    for field in [
        "kind",
        "namespace",
        "name",
        "operation",
        "dry_run",
        "decision",
        "patch_ops",
        "latency_us",
    ] {
        assert!(line.get(field).is_some(), "log line lacks {field}: {line}");
    }
    assert_eq!(line["decision"], "patched");
}

#[tokio::test]
async fn sigterm_stops_the_server_with_exit_code_zero() {
    let mut webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    assert_eq!(api.send("GET", "/healthz", Vec::new()).await.status, 200);
    let status = webhook.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; logs: {:?}",
        webhook.drain_logs()
    );
}

/// Log lines received within a few seconds (lines are written in batches), until `enough` of them are there.
async fn logs_until(webhook: &Webhook, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines.extend(webhook.drain_logs());
        if enough(&lines) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Anything logged twice would arrive with the rest of its batch.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    lines.extend(webhook.drain_logs());
    lines
}

#[tokio::test]
async fn every_request_gets_exactly_one_log_line_saying_what_happened() {
    let webhook = Webhook::start(&[]);
    let mut api = webhook.connect().await;
    let review = fixtures().into_iter().find(|(n, _)| n.contains("sidecar")).unwrap().1;
    assert_eq!(api.review(&review).await.status, 200);
    assert_eq!(api.send("GET", "/nowhere", vec![]).await.status, 404);
    assert_eq!(api.send("DELETE", "/mutate", vec![]).await.status, 405);
    assert_eq!(api.send("POST", "/mutate", b"{not json".to_vec()).await.status, 400);
    // Probes log at debug level only: nothing at the default level.
    assert_eq!(api.send("GET", "/healthz", vec![]).await.status, 200);
    assert_eq!(api.send("GET", "/readyz", vec![]).await.status, 200);
    let lines = logs_until(&webhook, |l| l.len() >= 4).await;
    let requests: Vec<(String, String, u64)> = lines
        .iter()
        .filter(|l| l["message"] == "review" || l["message"] == "rejected" || l["message"] == "probe")
        .map(|l| {
            let path = l["path"].as_str().unwrap_or("/mutate").to_string();
            (
                l["message"].as_str().unwrap().to_string(),
                path,
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("review", "/mutate", 200),
        ("rejected", "/nowhere", 404),
        ("rejected", "/mutate", 405),
        ("rejected", "/mutate", 400),
    ]
    .map(|(m, p, s)| (m.to_string(), p.to_string(), s));
    assert_eq!(requests, expected, "log lines: {lines:?}");
    assert!(lines
        .iter()
        .filter(|l| l["message"] == "rejected")
        .all(|l| l["error"].is_string() && l["latency_us"].is_u64()));

    let probed = Webhook::start(&["--log-level", "debug"]);
    let mut api = probed.connect().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(api.send("GET", path, vec![]).await.status, 200, "{path}");
    }
    let lines = logs_until(&probed, |l| l.iter().filter(|l| l["message"] == "probe").count() >= 3).await;
    let probes: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "probe")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(probes, ["/healthz", "/readyz", "/metrics"]);
}

#[tokio::test]
async fn with_a_metrics_port_metrics_are_served_there_in_plain_http_and_no_longer_on_the_webhook_port() {
    let webhook = Webhook::start(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics_addr: std::net::SocketAddr = loop {
        let line = webhook
            .logs
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the webhook logs its metrics address");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(addr) = v.get("metrics").and_then(Value::as_str) {
            break addr.parse().unwrap();
        }
    };
    let mut api = webhook.connect().await;
    let review = fixtures()
        .into_iter()
        .find(|(n, _)| n == "pod-sidecar-nginx.json")
        .unwrap()
        .1;
    check_answer(&review, &api.review(&review).await);
    // The webhook port serves reviews and probes, not metrics.
    assert_eq!(api.send("GET", "/metrics", Vec::new()).await.status, 404);
    assert_eq!(api.send("GET", "/readyz", Vec::new()).await.status, 200);
    // The metrics port is plain HTTP, and counts the review just answered.
    let mut stream = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: metrics\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(r#"entourage_admission_reviews_total{kind="Pod",operation="CREATE",decision="patched"} 1"#),
        "{text}"
    );
    // Only /metrics is there: reviews never reach the plain-HTTP port.
    let mut stream = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: metrics\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
}
