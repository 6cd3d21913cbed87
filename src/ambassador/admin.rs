//! The admin listener: `/healthz` for the readiness probe, `/livez` for the liveness probe and `/metrics` for
//! Prometheus.
//!
//! `/healthz` answers 503 once shutdown begins, so the kubelet stops counting the Pod as ready while in-flight
//! requests drain, even though the admin port itself stays open until the process exits. `/livez` keeps answering
//! 200 while draining (a restart then would cut the drain short). It is served by the same single thread as the
//! proxy, so a wedged event loop stops answering it and the kubelet restarts the container.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// The content type of the Prometheus text format version 0.0.4, which every Prometheus scrapes.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, draining: Arc<AtomicBool>, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Typically EMFILE; a pause keeps the loop from spinning while descriptors are short.
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let draining = Arc::clone(&draining);
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = answer(&request, draining.load(Ordering::Relaxed), &metrics);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(request: &Request<Incoming>, draining: bool, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, text, content_type) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") if draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"draining\n"),
            "text/plain",
        ),
        (&Method::GET | &Method::HEAD, "/healthz" | "/livez") => {
            (StatusCode::OK, Bytes::from_static(b"ok\n"), "text/plain")
        }
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, Bytes::from(metrics.encode()), PROMETHEUS_TEXT),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"), "text/plain"),
    };
    let mut response = Response::new(Full::new(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
