//! The webhook's HTTP shapes, in memory: `router()` driven with `tower::ServiceExt::oneshot`, no socket and no
//! TLS (those are `tests/webhook_apiserver.rs` and `tests/webhook_hostile.rs`). Every answer is JSON: a review's answer echoes
//! the uid; a refusal says what was wrong with the status code in its body.

use axum::{
    body::{to_bytes, Body},
    http::{header, Method, Request, StatusCode},
    Router,
};
use entourage::{
    core::config::Config,
    webhook::server::{router, AppState, MAX_BODY},
};
use serde_json::{json, Value};
use tower::ServiceExt;

fn app() -> Router {
    router(AppState::new(Config::default(), None))
}

async fn call(method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 64 * MAX_BODY).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

fn pod_review(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": "default", "name": "web",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web",
                "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/app.log"}},
                "spec": {"containers": [{"name": "app", "image": "app"}]}},
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_review_is_answered_with_its_own_uid_and_a_base64_patch() {
    let (status, answer) = call(Method::POST, "/mutate?timeout=10s", pod_review("7c1f-uid")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "7c1f-uid");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(answer["response"]["patch"].is_string(), "{answer}");
}

#[tokio::test]
async fn a_body_that_is_not_a_review_is_a_400_that_says_why() {
    for (body, says) in [
        (b"{not json".to_vec(), "JSON"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "request",
        ),
        (
            br#"{"apiVersion":"v1","kind":"Pod","request":{}}"#.to_vec(),
            "AdmissionReview",
        ),
    ] {
        let (status, answer) = call(Method::POST, "/mutate", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
        assert_eq!(answer["code"], 400);
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{error:?} should mention {says:?}");
    }
}

#[tokio::test]
async fn an_unknown_path_is_a_404_that_names_the_review_path() {
    let (status, answer) = call(Method::POST, "/validate", pod_review("u")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["code"], 404);
    assert!(answer["error"].as_str().unwrap().contains("POST /mutate"), "{answer}");
}

#[tokio::test]
async fn a_get_of_the_review_path_is_a_405() {
    let (status, answer) = call(Method::GET, "/mutate", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer["code"], 405);
}

#[tokio::test]
async fn a_body_over_8_mib_is_a_413_that_says_the_limit() {
    let (status, answer) = call(Method::POST, "/mutate", vec![b' '; MAX_BODY + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["code"], 413);
    assert!(answer["error"].as_str().unwrap().contains("8 MiB"), "{answer}");
}

#[tokio::test]
async fn a_body_of_exactly_8_mib_is_read_and_judged() {
    // Padding after a JSON value is whitespace, so an 8 MiB body is a review like any other.
    let mut body = pod_review("big");
    body.resize(MAX_BODY, b' ');
    let (status, answer) = call(Method::POST, "/mutate", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["uid"], "big");
}

#[tokio::test]
async fn the_liveness_probe_answers_200() {
    let response = app()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_pod_whose_member_the_core_reads_has_another_type_is_a_400_naming_the_member() {
    let review: Value = serde_json::from_slice(&pod_review("odd-types")).unwrap();
    let pod = &review["request"]["object"];
    for (pointer, value, names) in [
        (
            "/metadata/annotations",
            json!(["entourage.dev/sidecar-logs=/var/log/app/app.log"]),
            "request.object.metadata.annotations is an array, expected an object",
        ),
        (
            "/spec/containers",
            json!({"name": "app"}),
            "request.object.spec.containers is an object, expected an array",
        ),
        (
            "/spec/containers/0/name",
            json!(7),
            "request.object.spec.containers[0].name is a number, expected a string",
        ),
    ] {
        let mut pod = pod.clone();
        *pod.pointer_mut(pointer).unwrap() = value;
        let mut review = review.clone();
        review["request"]["object"] = pod;
        let (status, answer) = call(
            Method::POST,
            "/mutate?timeout=10s",
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{pointer}: {answer}");
        assert_eq!(answer["code"], 400);
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(names), "{pointer}: {error}");
    }
    // The same Pod with its members of the right types is injected.
    let (status, answer) = call(Method::POST, "/mutate", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(
        (status, &answer["response"]["allowed"]),
        (StatusCode::OK, &json!(true)),
        "{answer}"
    );
}
