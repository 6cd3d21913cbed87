//! The admission server's router and handlers: `POST /mutate` decodes, mutates and answers a review, with its
//! log line and metrics; the probes and `/metrics` beside it. Built apart from serving it (`accept`), so tests
//! run it in memory.

use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{header, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use http_body_util::BodyExt;
use kube::core::admission::Operation;
use serde_json::json;

use crate::{
    core::config::Config,
    core::mutate,
    webhook::metrics::{Metrics, ReasonLabels, ReviewLabels},
    webhook::tls::CertStore,
};

/// The largest request body accepted. The apiserver sets no cap of its own; objects reach ~3 MiB and an UPDATE
/// carries two of them.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Bodies larger than this are decoded on the blocking pool so that one huge Pod cannot stall the others.
const BLOCKING_THRESHOLD: usize = 256 * 1024;

/// What the handlers share.
pub struct AppState {
    /// The config in force; swapped whole on reload.
    pub config: ArcSwap<Config>,
    /// The serving certificate, when serving TLS.
    pub certs: Option<Arc<CertStore>>,
    /// False once shutdown begins, so `/readyz` takes the replica out of the Service.
    pub accepting: AtomicBool,
    /// Metrics.
    pub metrics: Metrics,
    /// The namespaces' LimitRanges, when `--limit-ranges` lists them.
    pub limit_ranges: crate::webhook::limitranges::LimitRanges,
}

impl AppState {
    /// State around a config and, when serving TLS, a certificate store.
    pub fn new(config: Config, certs: Option<Arc<CertStore>>) -> Arc<Self> {
        let metrics = Metrics::default();
        if let Some(expiry) = certs.as_ref().and_then(|c| c.not_after()) {
            metrics.cert_expiry.set(expiry);
        }
        Arc::new(AppState {
            config: ArcSwap::new(config.into_shared()),
            certs,
            accepting: AtomicBool::new(true),
            metrics,
            limit_ranges: Default::default(),
        })
    }
}

/// The router: `POST /mutate`, `GET /healthz`, `GET /readyz`, `GET /metrics`; JSON 404 and 405 otherwise.
///
/// Every handler writes its request's one log line itself, where what the line says is at hand: a review's
/// decision, a rejection's reason, a probe at debug level. (A logging middleware around every route cost ≈ 5 %
/// of a review's CPU, measured side by side.)
pub fn router(state: Arc<AppState>) -> Router {
    webhook_router(state, true)
}

/// The webhook port's router; `/metrics` only with `with_metrics` (off when a separate `--metrics-listen` port
/// serves it, so that a NetworkPolicy can open the webhook port to the apiserver without opening the metrics).
pub fn webhook_router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/mutate", post(review).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed));
    let router = if with_metrics {
        router.route("/metrics", get(metrics).fallback(method_not_allowed))
    } else {
        router
    };
    router.fallback(not_found).with_state(state)
}

/// The metrics port's router (`--metrics-listen`, plain HTTP): `GET /metrics` only.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(state)
}

/// Microseconds since `started`, for log lines.
fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A JSON error answer, and the request's log line saying why.
fn reject(method: &Method, path: &str, started: Instant, status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::warn!(
        %method,
        path,
        status = status.as_u16(),
        error = message.as_str(),
        latency_us = micros(started),
        "rejected"
    );
    (status, axum::Json(json!({"error": message, "code": status.as_u16()}))).into_response()
}

/// A review refused before it could be decided (its body unreadable, too large, not a review).
fn reject_review(started: Instant, status: StatusCode, message: impl Into<String>) -> Response {
    reject(&Method::POST, MUTATE, started, status, message)
}

/// The log line of a probe (`/healthz`, `/readyz`, `/metrics`), at debug level.
fn probe(method: &Method, path: &str, started: Instant, response: Response) -> Response {
    tracing::debug!(%method, path, status = response.status().as_u16(), latency_us = micros(started), "probe");
    response
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = "no such path; admission reviews go to POST /mutate";
    reject(&method, uri.path(), Instant::now(), StatusCode::NOT_FOUND, message)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = "method not allowed on this path";
    reject(
        &method,
        uri.path(),
        Instant::now(),
        StatusCode::METHOD_NOT_ALLOWED,
        message,
    )
}

async fn healthz(method: Method) -> Response {
    probe(&method, "/healthz", Instant::now(), "ok".into_response())
}

async fn readyz(method: Method, State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    // The config is always valid once loaded (a bad reload keeps the old one), so readiness is: serving, and a
    // certificate is loaded when serving TLS.
    let ready = state.accepting.load(Ordering::Relaxed) && state.certs.as_ref().is_none_or(|c| c.not_after().is_some());
    let response = if ready {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    };
    probe(&method, "/readyz", started, response)
}

async fn metrics(method: Method, State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    let response = (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response();
    probe(&method, "/metrics", started, response)
}

/// The path reviews are posted to.
const MUTATE: &str = "/mutate";

async fn review(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP) {
        return too_large(started);
    }
    let body = match read_body(request.into_body()).await {
        Ok(Some(body)) => body,
        Ok(None) => return too_large(started),
        Err(e) => {
            let message = format!("cannot read the body: {e}");
            return reject_review(started, StatusCode::BAD_REQUEST, message);
        }
    };
    let response = if body.len() > BLOCKING_THRESHOLD {
        let state = state.clone();
        match tokio::task::spawn_blocking(move || answer(&state, &body, started)).await {
            Ok(response) => response,
            Err(_) => reject_review(started, StatusCode::INTERNAL_SERVER_ERROR, "review task failed"),
        }
    } else {
        answer(&state, &body, started)
    };
    state.metrics.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// A body over [`MAX_BODY`] is still read (and dropped) up to this size, so that the client, still sending,
/// receives the 413 instead of a connection reset.
const DRAIN_CAP: usize = 4 * MAX_BODY;

/// Reads the body: `Some` when it fits in [`MAX_BODY`], `None` when it is larger (the rest drained). A body that
/// arrives in one chunk (a typical review does) is handed on as it is, without a copy.
async fn read_body(mut body: axum::body::Body) -> Result<Option<Bytes>, axum::Error> {
    // Invariant: `first` is only set while `buf` is empty.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        seen += data.len();
        if seen > DRAIN_CAP {
            return Ok(None);
        }
        if seen > MAX_BODY {
            continue;
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    buf.reserve(earlier.len() + data.len());
                    buf.extend_from_slice(&earlier);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok((seen <= MAX_BODY).then(|| first.unwrap_or_else(|| buf.freeze())))
}

fn too_large(started: Instant) -> Response {
    let message = format!("body is larger than {} MiB", MAX_BODY / (1024 * 1024));
    let mut response = reject_review(started, StatusCode::PAYLOAD_TOO_LARGE, message);
    response
        .headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

/// Decodes, mutates and encodes one review: the whole synchronous path, and its log line.
fn answer(state: &AppState, body: &Bytes, started: Instant) -> Response {
    let config = state.config.load();
    let review = match crate::admission::decode(body, &config) {
        Ok(review) => review,
        Err(e) => {
            state
                .metrics
                .reviews
                .get_or_create(&labels("", "", "bad-request"))
                .inc();
            return reject_review(started, StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let request = &review.request;
    let mut outcome = mutate::mutate(request, &config);
    if let Some(message) = request
        .namespace
        .as_deref()
        .and_then(|namespace| state.limit_ranges.refusal(namespace, &outcome))
    {
        outcome = mutate::Outcome {
            reason: mutate::Reason::LimitRange,
            ..mutate::Outcome::deny(message, std::mem::take(&mut outcome.warnings))
        };
    }
    let (decision, out) = crate::admission::answer(&review, &mut outcome);
    let warning_count = out.response.warnings.len();
    let decision = decision.as_str();
    let operation = operation_name(&request.operation);
    let m = &state.metrics;
    m.reviews
        .get_or_create(&labels(&request.kind.kind, operation, decision))
        .inc();
    for &pattern in &outcome.injected {
        m.injection(pattern);
    }
    let reason = ReasonLabels {
        reason: outcome.reason.as_str(),
    };
    match decision {
        "denied" => m.denials.get_or_create(&reason).inc(),
        "allowed" => m.skips.get_or_create(&reason).inc(),
        _ => 0,
    };
    tracing::debug!(uid = %request.uid, patch = %serde_json::to_string(&outcome.patch).unwrap_or_default(), "patch");
    let body = out.to_vec();
    let http = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    let generate_name;
    let name = match (request.name.as_str(), outcome.generate_name.as_deref()) {
        ("", Some(g)) => {
            generate_name = format!("{g}*");
            generate_name.as_str()
        }
        (name, _) => name,
    };
    // Here, where the request is at hand: nothing is copied for the line.
    tracing::info!(
        // `&str` fields are recorded as they are; `%` would format each through `Display` first.
        uid = request.uid.as_str(),
        kind = request.kind.kind.as_str(),
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name,
        operation,
        dry_run = request.dry_run.unwrap_or(false),
        decision,
        reason = outcome.reason.as_str(),
        patch_ops = outcome.patch.0.len(),
        warnings = warning_count,
        status = http.status().as_u16(),
        latency_us = micros(started),
        "review"
    );
    http
}

/// The operation as the apiserver spells it, without formatting and upper-casing on every review.
fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn labels(kind: &str, operation: &'static str, decision: &'static str) -> ReviewLabels {
    // The kinds entourage handles are labelled without allocating; any other is copied.
    let kind = match kind {
        "Pod" => Cow::Borrowed("Pod"),
        "Job" => Cow::Borrowed("Job"),
        "CronJob" => Cow::Borrowed("CronJob"),
        other => Cow::Owned(other.to_string()),
    };
    ReviewLabels {
        kind,
        operation,
        decision,
    }
}
