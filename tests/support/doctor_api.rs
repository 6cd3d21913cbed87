//! The stand-in for the Kubernetes API the doctor talks to: HTTPS on loopback with its own CA, answering GETs
//! from a table of paths, and a kubeconfig that points the real binary at it.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One answer of the stand-in API: status and JSON body.
pub type Answer = (u16, Value);

pub fn not_found() -> Answer {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "message": "not found", "code": 404}),
    )
}

/// Writes the API's own CA and certificate (`entourage certs`: the dev certificate names 127.0.0.1) into `dir`.
pub fn api_certs(dir: &Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    let made = Command::new(env!("CARGO_BIN_EXE_entourage"))
        .args(["certs", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success());
    certs
}

/// Serves `routes` over HTTPS with `certs` (the API's own CA and certificate); returns the address.
pub async fn serve(routes: BTreeMap<String, Answer>, certs: &Path) -> SocketAddr {
    use hyper::{server::conn::http1, service::service_fn, Request, Response};
    let store = entourage::webhook::tls::CertStore::load(&certs.join("tls.crt"), &certs.join("tls.key")).unwrap();
    let mut tls = entourage::webhook::tls::server_config(Arc::new(store), None).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Arc::new(Mutex::new(routes));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (routes, acceptor) = (routes.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(tcp) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let routes = routes.clone();
                    async move {
                        let mut key = request.uri().path().to_string();
                        if request.uri().query().is_some_and(|q| q.contains("continue=")) {
                            key.push_str("?continue");
                        }
                        let (status, body) = routes.lock().unwrap().get(&key).cloned().unwrap_or_else(not_found);
                        let (content_type, body) = match body {
                            Value::String(text) => ("text/plain", text.into_bytes()),
                            other => ("application/json", serde_json::to_vec(&other).unwrap()),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// What the doctor printed, and its exit status.
pub struct Report {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Report {
    pub fn line(&self, check: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(&format!("{check}:")))
            .collect()
    }

    pub fn has(&self, tag: &str, check: &str, text: &str) -> bool {
        self.line(check).iter().any(|l| l.starts_with(tag) && l.contains(text))
    }
}

/// Runs `entourage doctor` with a kubeconfig whose `stand-in` context points at `server`.
pub async fn run(dir: &Path, server: &str, certs: &Path) -> Report {
    let ca = b64(&std::fs::read(certs.join("ca.crt")).unwrap());
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: test-token\ncontexts:\n\
             - name: other\n  context:\n    cluster: nowhere\n    user: admin\n- name: stand-in\n  context:\n    \
             cluster: stand-in\n    user: admin\ncurrent-context: other\n"
        ),
    )
    .unwrap();
    let (kubeconfig, home) = (kubeconfig.clone(), dir.to_path_buf());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_entourage"))
            .args(["doctor", "--context", "stand-in", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Report {
        status: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}
