//! The admin listener: `GET /healthz` for the readiness probe the webhook puts on the ambassador container.
//!
//! It answers 503 once shutdown begins, so the kubelet stops counting the Pod as ready while in-flight requests
//! drain, even though the admin port itself stays open until the process exits.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, draining: Arc<AtomicBool>) {
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
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let draining = draining.load(Ordering::Relaxed);
                async move { Ok::<_, Infallible>(answer(&request, draining)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(request: &Request<Incoming>, draining: bool) -> Response<Full<Bytes>> {
    let (status, text) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") if draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        (&Method::GET | &Method::HEAD, "/healthz") => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
