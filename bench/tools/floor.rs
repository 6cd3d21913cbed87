//! The floor: the least any admission webhook can do, to measure entourage against in the same run.
//!
//! rustls (ring, the same certificate and provider as entourage) and hyper's HTTP/1.1 server on a tokio runtime,
//! like entourage; each review is parsed into a `serde_json::Value`, its uid echoed, and the object allowed.
//! No routing framework, no logs, no metrics, no patch. `GET /readyz` answers 200 so that start-up can be timed
//! the same way.
//!
//! `cargo run --release --example floor -- --listen 127.0.0.1:9443 --tls-cert certs/tls.crt --tls-key certs/tls.key`

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    /// `--patch FILE`: a JSON patch answered with every review (base64, as the apiserver wants it), so that the
    /// apiserver's own work on a patch is measured apart from the webhook's (`make bench-e2e`'s replay setup).
    patch: Option<String>,
}

/// The `--patch` answer, encoded once at start.
static PATCH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn args() -> Args {
    let mut listen = "127.0.0.1:9443".parse().expect("a valid default address");
    let mut cert = PathBuf::from("certs/tls.crt");
    let mut key = PathBuf::from("certs/tls.key");
    let mut patch = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value.parse().expect("--listen takes host:port"),
            "--tls-cert" => cert = value.into(),
            "--tls-key" => key = value.into(),
            "--patch" => {
                use base64::Engine;
                let text = std::fs::read(&value).unwrap_or_else(|e| panic!("--patch {value}: {e}"));
                let _: Value = serde_json::from_slice(&text).expect("--patch holds a JSON patch");
                patch = Some(base64::engine::general_purpose::STANDARD.encode(text));
            }
            other => panic!("unknown flag {other}; use --listen, --tls-cert, --tls-key, --patch"),
        }
    }
    Args {
        listen,
        cert,
        key,
        patch,
    }
}

fn tls_config(args: &Args) -> rustls::ServerConfig {
    let chain = CertificateDer::pem_file_iter(&args.cert)
        .expect("readable certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificate");
    let key = PrivateKeyDer::from_pem_file(&args.key).expect("PEM private key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a matching certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().expect("a valid header"),
    );
    response
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() == Method::GET {
        return Ok(reply(StatusCode::OK, b"ready".to_vec()));
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, b"{}".to_vec())),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return Ok(reply(StatusCode::BAD_REQUEST, b"{}".to_vec()));
    };
    let uid = review.pointer("/request/uid").cloned().unwrap_or(Value::Null);
    let mut answer = json!({
        "apiVersion": review.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    if let Some(Some(patch)) = PATCH.get() {
        answer["response"]["patchType"] = json!("JSONPatch");
        answer["response"]["patch"] = json!(patch);
    }
    Ok(reply(
        StatusCode::OK,
        serde_json::to_vec(&answer).expect("a Value always serialises"),
    ))
}

/// The same allocator as entourage, so the comparison measures the webhook's work, not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[tokio::main]
async fn main() {
    let args = args();
    PATCH.set(args.patch.clone()).expect("set once");
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&args)));
    let listener = TcpListener::bind(args.listen).await.expect("cannot listen");
    eprintln!("floor listening on https://{}", listener.local_addr().expect("bound"));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service_fn(handle))
                .await;
        });
    }
}
