//! A real `entourage serve` process and an apiserver-like client: HTTP/1.1 over TLS (ALPN `http/1.1`, as the
//! apiserver forces), verifying the dev CA and the server name `entourage.entourage-system.svc`, keep-alive,
//! `?timeout=10s` on the path.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::Value;
use tokio_rustls::TlsConnector;

/// The name the apiserver dials: `<service>.<namespace>.svc`.
pub const SERVER_NAME: &str = "entourage.entourage-system.svc";

/// A running webhook process.
pub struct Webhook {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate directory.
    pub certs: PathBuf,
    /// Log lines from stderr (JSON), as they arrive.
    pub logs: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Webhook {
    /// Generates fresh certificates and starts `entourage serve` on a free loopback port.
    pub fn start(extra_args: &[&str]) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra_args)
    }

    /// Starts in `dir`, generating certificates there first unless present.
    pub fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> Webhook {
        let certs = dir.path().join("certs");
        if !certs.join("tls.crt").exists() {
            let status = Command::new(bin())
                .args(["certs", "--out"])
                .arg(&certs)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "entourage certs failed");
        }
        let mut child = Command::new(bin())
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The first log line carries the bound address.
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("webhook logs its listen address");
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(listen) = v.get("listen").and_then(Value::as_str) {
                break listen.parse().unwrap();
            }
        };
        Webhook {
            child,
            addr,
            certs,
            logs: rx,
            _dir: dir,
        }
    }

    /// A new apiserver-like connection.
    pub async fn connect(&self) -> ApiClient {
        ApiClient::connect(self.addr, &self.certs.join("ca.crt"), SERVER_NAME).await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }

    /// Log lines received so far.
    pub fn drain_logs(&self) -> Vec<Value> {
        self.logs
            .try_iter()
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The entourage binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_entourage")
}

/// A TLS client config trusting only `ca`, offering ALPN `http/1.1` like the apiserver.
pub fn client_tls(ca: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// One keep-alive HTTP/1.1-over-TLS connection.
pub struct ApiClient {
    sender: http1::SendRequest<Full<Bytes>>,
    /// The ALPN protocol negotiated.
    pub alpn: Option<Vec<u8>>,
}

/// A response: status, headers, body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content-Type.
    pub content_type: String,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

impl ApiClient {
    /// Connects and verifies the certificate for `server_name`.
    pub async fn connect(addr: SocketAddr, ca: &Path, server_name: &str) -> ApiClient {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = TlsConnector::from(Arc::new(client_tls(ca)));
        let tls = connector
            .connect(ServerName::try_from(server_name.to_string()).unwrap(), tcp)
            .await
            .expect("TLS handshake verifies the webhook");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        ApiClient { sender, alpn }
    }

    /// Whether the server has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends a request on this connection.
    pub async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        self.sender.ready().await.expect("connection still open");
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", SERVER_NAME)
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.expect("a response");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// Sends a request on this connection; a connection that fails is the error, as the apiserver's client sees it.
    pub async fn try_send(&mut self, method: &str, path: &str, body: Vec<u8>) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not usable: {e}"))?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", SERVER_NAME)
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("no response: {e}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body cut short: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// POSTs a review to `/mutate?timeout=10s` as the apiserver does, and returns what its client saw.
    pub async fn try_review(&mut self, review: &Value) -> Result<Reply, String> {
        self.try_send("POST", "/mutate?timeout=10s", serde_json::to_vec(review).unwrap())
            .await
    }

    /// POSTs a review to `/mutate?timeout=10s`, as the apiserver does.
    pub async fn review(&mut self, review: &Value) -> Reply {
        self.send("POST", "/mutate?timeout=10s", serde_json::to_vec(review).unwrap())
            .await
    }
}

/// Checks an answer the way the apiserver does and returns its `response`.
pub fn check_answer(request: &Value, reply: &Reply) -> Value {
    assert_eq!(
        reply.status,
        200,
        "non-2xx answer is a call failure: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply.content_type.starts_with("application/json"),
        "content-type {:?}",
        reply.content_type
    );
    let answer = reply.json();
    assert_eq!(
        answer["apiVersion"], request["apiVersion"],
        "answer in the request's version"
    );
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = answer["response"].clone();
    assert_eq!(response["uid"], request["request"]["uid"], "uid echoed");
    assert!(response["allowed"].is_boolean(), "allowed set");
    super::decode_patch(&response).expect("patch follows the protocol");
    if let Some(warnings) = response.get("warnings") {
        assert!(warnings.as_array().is_some_and(|w| w.iter().all(Value::is_string)));
    }
    response
}
