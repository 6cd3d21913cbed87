//! What the apiserver sees while entourage's own Deployment rolls: the surge replica of the new ReplicaSet is
//! ready, the old replica's endpoint is removed and the kubelet runs its preStop sleep, then SIGTERM. The
//! apiserver keeps reusing the kept-alive connections it holds to the old replica until they close; a POST
//! written onto a connection the server has just closed fails with EOF and is not retried (Go's client retries
//! no POST), so the old replica must answer everything already sent to it and close only idle connections.
//! docs/operations.md ("Upgrading entourage") tells an operator what each step looks like.

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rustls_pki_types::ServerName;
use serde_json::Value;
use support::apiserver::{check_answer, client_tls, ApiClient, Webhook, SERVER_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

fn review(uid: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pod-sidecar-nginx.json"
    ))
    .unwrap();
    let mut review: Value = serde_json::from_str(&text).unwrap();
    review["request"]["uid"] = Value::from(uid);
    review
}

/// Every review the test sends, and what its client saw: an answer the apiserver accepts, or a failure (a closed
/// connection, an EOF, a non-2xx, a wrong uid, a bad patch) recorded, not panicked on, so that the count can
/// differ from what was sent.
#[derive(Default)]
struct Tally {
    sent: usize,
    answered: usize,
    failures: Vec<String>,
}

/// Whether the apiserver would accept `reply` as the answer to `request`: its checks, an allowed answer, a patch.
fn accepted(request: &Value, reply: &support::apiserver::Reply) -> Result<(), String> {
    let check = std::panic::AssertUnwindSafe(|| check_answer(request, reply));
    let response = std::panic::catch_unwind(check).map_err(|panic| {
        let text = (panic.downcast_ref::<String>().map(String::as_str))
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default()
            .to_string();
        format!("answer refused: {text}")
    })?;
    if response["allowed"] != true || !response["patch"].is_string() {
        return Err(format!("not an allowed answer with a patch: {response}"));
    }
    Ok(())
}

impl Tally {
    /// Records what the client saw of one review.
    fn saw(&mut self, step: &str, seen: Result<(), String>) {
        match seen {
            Ok(()) => self.answered += 1,
            Err(why) => self.failures.push(format!("{step}: {why}")),
        }
    }

    /// Sends one review on `api` and records what the apiserver's client makes of the answer.
    async fn review(&mut self, api: &mut ApiClient, step: &str) {
        self.sent += 1;
        let request = review(&format!("{step}-{}", self.sent));
        let seen = match api.try_review(&request).await {
            Ok(reply) => accepted(&request, &reply),
            Err(e) => Err(e),
        };
        self.saw(step, seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_of_entourage_fails_no_review() {
    let mut tally = Tally::default();
    // The old replica, and the new ReplicaSet's surge replica, serving the same certificate Secret.
    let mut old = Webhook::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::copy(old.certs.join(file), dir.path().join("certs").join(file)).unwrap();
    }
    let new = Webhook::start_in(dir, &[]);

    // The apiserver's pool: three kept-alive connections to the old replica, all in use.
    let mut pool = Vec::new();
    for _ in 0..3 {
        let mut api = old.connect().await;
        tally.review(&mut api, "before").await;
        pool.push(api);
    }

    // preStop: the endpoint is gone, so new connections reach the new replica; the apiserver still reuses the
    // connections it holds to the old one, which keeps answering them. (The sleep's length is the kubelet's
    // business; what matters is that nothing changes for the old replica while it lasts.)
    let pre_stop = Instant::now();
    while pre_stop.elapsed() < Duration::from_secs(2) {
        for api in &mut pool {
            tally.review(api, "prestop-old-connection").await;
        }
        let mut fresh = new.connect().await;
        tally.review(&mut fresh, "prestop-new-connection").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A review in flight at SIGTERM: its head and half its body have reached the old replica.
    let request = review("in-flight");
    let body = serde_json::to_vec(&request).unwrap();
    let tcp = tokio::net::TcpStream::connect(old.addr).await.unwrap();
    let connector = TlsConnector::from(Arc::new(client_tls(&old.certs.join("ca.crt"))));
    let mut in_flight = connector
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(&body[..body.len() / 2]).await.unwrap();
    in_flight.flush().await.unwrap();
    tally.sent += 1;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // SIGTERM (the preStop sleep is over).
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &old.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // The idle kept-alive connections are closed at once: the apiserver's client sees each close while it is
    // idle, drops it from its pool and sends nothing on it.
    let closing = Instant::now();
    while !pool.iter().all(ApiClient::is_closed) {
        assert!(
            closing.elapsed() < Duration::from_secs(5),
            "idle connections to the old replica are closed at SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.clear();

    // The review in flight is answered in full, and the answer tells the client to close the connection.
    in_flight.write_all(&body[body.len() / 2..]).await.unwrap();
    in_flight.flush().await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), in_flight.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    let seen = match text.split_once("\r\n\r\n") {
        None => Err(format!("no HTTP answer: {text:?}")),
        Some((head, _)) if !head.starts_with("HTTP/1.1 200") => Err(format!("answered {head:?}")),
        Some((head, answer)) => {
            assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
            match serde_json::from_str::<Value>(answer) {
                Ok(answer) if answer["response"]["uid"] == "in-flight" && answer["response"]["patch"].is_string() => {
                    Ok(())
                }
                _ => Err(format!("not the answer to the review in flight: {answer:?}")),
            }
        }
    };
    tally.saw("in-flight", seen);

    // The apiserver dials the Service again: the new replica answers.
    for _ in 0..5 {
        let mut api = new.connect().await;
        tally.review(&mut api, "after").await;
        tally.review(&mut api, "after-same-connection").await;
    }

    // The old replica exits 0, well inside the Pod's 30 s grace period.
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = old.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "old replica still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        tally.failures,
        Vec::<String>::new(),
        "no review failed during the rollout"
    );
    assert_eq!(tally.answered, tally.sent, "every review sent was answered");
    assert!(tally.sent > 20, "{} reviews", tally.sent);
}
