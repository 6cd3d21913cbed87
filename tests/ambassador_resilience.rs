//! The upstream's bad days, against the real `entourage ambassador` on loopback: `Retry-After` honoured for
//! idempotent requests only and only within the request's deadline, the circuit breaker, the concurrency cap,
//! and the Prometheus metrics that show all of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::Notify;

mod support;
use support::ambassador::*;

/// Counts requests per path; answers 429 with `Retry-After: 1` to the first request of each path, then 200.
async fn spawn_rate_limited_upstream() -> (std::net::SocketAddr, Arc<Mutex<HashMap<String, usize>>>) {
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
                if n == 1 {
                    Response::builder()
                        .status(StatusCode::TOO_MANY_REQUESTS)
                        .header("retry-after", "1")
                        .body(full("slow down"))
                        .unwrap()
                } else {
                    Response::new(full(format!("attempt {n}")))
                }
            }
        }
    })
    .await;
    (upstream, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_429_with_retry_after_is_retried_once_for_get_and_never_for_post() {
    let (upstream, hits) = spawn_rate_limited_upstream().await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;

    let started = Instant::now();
    let (status, _, body) = send(get(&ambassador.url("/get"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "attempt 2");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited for Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(ambassador.log_for("GET", "/get").await["retries"], 1);

    let post = Request::post(ambassador.url("/post")).body(full("order")).unwrap();
    let (status, headers, body) = send(post).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        headers["retry-after"], "1",
        "the upstream's answer reaches the app unchanged"
    );
    assert_eq!(body, "slow down");
    assert_eq!(hits.lock().unwrap()["/post"], 1);
    assert_eq!(ambassador.log_for("POST", "/post").await["retries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_past_the_request_deadline_returns_the_429_at_once() {
    let (upstream, hits) = spawn_rate_limited_upstream().await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &["--timeout", "500ms"]).await;

    let (status, headers, _) = send(get(&ambassador.url("/short-deadline"))).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "not a 504 after a wait that could not succeed"
    );
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(hits.lock().unwrap()["/short-deadline"], 1);
    assert_eq!(ambassador.log_for("GET", "/short-deadline").await["retries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_after_consecutive_failures_answers_fast_then_half_opens_and_closes() {
    let healthy = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = spawn_upstream({
        let (healthy, hits) = (Arc::clone(&healthy), Arc::clone(&hits));
        move |_request: Request<Incoming>| {
            let ok = healthy.load(Ordering::SeqCst);
            hits.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut response = Response::new(full(if ok { "fine" } else { "broken" }));
                if !ok {
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
                response
            }
        }
    })
    .await;
    let ambassador = Ambassador::start(
        &format!("http://{upstream}"),
        &["--breaker-failures", "3", "--breaker-cooldown", "2s"],
    )
    .await;

    for _ in 0..3 {
        let (status, _, _) = send(get(&ambassador.url("/fail"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Open: answered by the ambassador itself, without calling the upstream, with a JSON body and Retry-After.
    let started = Instant::now();
    let (status, headers, body) = send(get(&ambassador.url("/open"))).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["content-type"], "application/json");
    let seconds: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&seconds), "{seconds}");
    let error = json(&body);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("circuit open after 3 consecutive"),
        "{error}"
    );
    assert_eq!(error["upstream"], format!("http://{upstream}"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "the open circuit does not call the upstream"
    );
    let metrics = scrape(&ambassador).await;
    assert_eq!(
        sample(&metrics, "entourage_ambassador_circuit_open"),
        Some(1.0),
        "{metrics}"
    );

    // Half-open after the cool-down: one trial, which succeeds and closes the circuit.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, body) = send(get(&ambassador.url("/trial"))).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, b"fine".as_ref()));
    let (status, _, _) = send(get(&ambassador.url("/closed"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    let metrics = scrape(&ambassador).await;
    assert_eq!(
        sample(&metrics, "entourage_ambassador_circuit_open"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "entourage_ambassador_circuit_opened_total"), Some(1.0));
    assert_eq!(
        sample(&metrics, "entourage_ambassador_rejected_total{reason=\"circuit_open\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_concurrency_cap_get_503_at_once_instead_of_a_queue() {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(AtomicUsize::new(0));
    let upstream = spawn_upstream({
        let (release, arrived) = (Arc::clone(&release), Arc::clone(&arrived));
        move |_request: Request<Incoming>| {
            let (release, arrived) = (Arc::clone(&release), Arc::clone(&arrived));
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Response::new(full("done"))
            }
        }
    })
    .await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &["--max-concurrent", "2"]).await;

    let held: Vec<_> = (0..2)
        .map(|i| tokio::spawn(send(get(&ambassador.url(&format!("/held-{i}"))))))
        .collect();
    let start = Instant::now();
    while arrived.load(Ordering::SeqCst) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the two requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, body) = send(get(&ambassador.url("/third"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error = json(&body);
    assert!(error["error"].as_str().unwrap().contains("--max-concurrent"), "{error}");
    assert_eq!(
        arrived.load(Ordering::SeqCst),
        2,
        "the third request never reached the upstream"
    );

    // Notify wakes only tasks already waiting; both are.
    release.notify_waiters();
    for answer in held {
        let (status, _, body) = answer.await.unwrap();
        assert_eq!((status, body.as_ref()), (StatusCode::OK, b"done".as_ref()));
    }
    // The permits are back once the bodies are done.
    let upstream_free = tokio::spawn(send(get(&ambassador.url("/after"))));
    while arrived.load(Ordering::SeqCst) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the request after the release never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.notify_waiters();
    assert_eq!(upstream_free.await.unwrap().0, StatusCode::OK);
    let metrics = scrape(&ambassador).await;
    assert_eq!(
        sample(&metrics, "entourage_ambassador_rejected_total{reason=\"concurrency\"}"),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_admin_port_parse_as_prometheus_text_and_move_with_requests() {
    let upstream = spawn_upstream(echo).await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;
    let unreachable = Ambassador::start(&down, &["--retries", "1"]).await;

    let (status, headers, text) = send(get(&format!("http://{}/metrics", ambassador.admin))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let before = std::str::from_utf8(&text).unwrap();
    assert_eq!(
        sample(before, "entourage_ambassador_request_duration_seconds_count"),
        Some(0.0),
        "{before}"
    );

    for path in ["/a", "/b", "/c"] {
        assert_eq!(send(get(&ambassador.url(path))).await.0, StatusCode::OK);
    }
    let post = Request::post(ambassador.url("/p")).body(full("x")).unwrap();
    assert_eq!(send(post).await.0, StatusCode::OK);
    let metrics = scrape(&ambassador).await;
    assert_eq!(
        sample(
            &metrics,
            "entourage_ambassador_requests_total{method=\"GET\",class=\"2xx\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "entourage_ambassador_requests_total{method=\"POST\",class=\"2xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "entourage_ambassador_request_duration_seconds_count"),
        Some(4.0)
    );
    assert!(
        metrics.contains(&format!("upstream=\"http://{upstream}\"")),
        "{metrics}"
    );

    assert_eq!(send(get(&unreachable.url("/x"))).await.0, StatusCode::BAD_GATEWAY);
    let metrics = scrape(&unreachable).await;
    assert_eq!(
        sample(&metrics, "entourage_ambassador_upstream_errors_total{kind=\"connect\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "entourage_ambassador_retries_total{reason=\"connect\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "entourage_ambassador_requests_total{method=\"GET\",class=\"5xx\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_stays_ok_while_readiness_is_served_beside_it() {
    let upstream = spawn_upstream(echo).await;
    let ambassador = Ambassador::start(&format!("http://{upstream}"), &[]).await;
    for path in ["/livez", "/healthz"] {
        let (status, _, body) = send(get(&format!("http://{}{path}", ambassador.admin))).await;
        assert_eq!((status, body.as_ref()), (StatusCode::OK, b"ok\n".as_ref()), "{path}");
    }
}

/// The admin port's `/metrics`, checked to parse, as text.
async fn scrape(ambassador: &Ambassador) -> String {
    let (status, _, body) = send(get(&format!("http://{}/metrics", ambassador.admin))).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    parse_prometheus_text(&text);
    text
}

/// The value of the first sample whose name is `series`'s name and whose labels include `series`'s labels.
fn sample(text: &str, series: &str) -> Option<f64> {
    let (name, wanted) = split_series(series);
    parse_prometheus_text(text).into_iter().find_map(|(key, value)| {
        let (key_name, labels) = split_series(&key);
        (key_name == name && wanted.iter().all(|label| labels.contains(label))).then_some(value)
    })
}

fn split_series(series: &str) -> (&str, Vec<String>) {
    match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (
            name,
            rest.trim_end_matches('}')
                .split("\",")
                .map(|l| l.trim_end_matches('"').to_owned())
                .collect(),
        ),
    }
}

/// Parses the Prometheus text exposition format (version 0.0.4) strictly: `# HELP`/`# TYPE` comments, then
/// `name{label="value",…} number` samples; panics on any other line. Returns every sample by its full series text.
fn parse_prometheus_text(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap(), parts.next().unwrap_or_default());
            assert!(matches!(keyword, "HELP" | "TYPE"), "unknown comment {line:?}");
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            if keyword == "TYPE" {
                let kind = parts.next().unwrap_or_default();
                assert!(
                    matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped"),
                    "bad type in {line:?}"
                );
                typed.push(name.to_owned());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = split_series(series);
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        assert!(
            typed.iter().any(|t| name.starts_with(t.as_str())),
            "sample {name} before its # TYPE"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
            for label in labels {
                let (key, quoted) = label
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(is_metric_name(key) && !quoted.contains('"'), "bad label in {line:?}");
            }
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
