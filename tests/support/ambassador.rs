//! The harness of the ambassador's process tests: the real binary between a test client and upstreams written
//! here, all on loopback. Nothing asserts on time; waits use generous deadlines so a loaded machine only slows
//! the tests down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub type TestBody = BoxBody<Bytes, Infallible>;

/// Long enough for a cold binary on a loaded 2-core machine; only reached when something is broken.
pub const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------------

/// A port nothing listens on right now, and never handed out before in this test process: the kernel may give a
/// just-released port again, and a test's "nothing listens here" upstream then became the ambassador's admin port.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Lines a child process wrote, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Lines(pub Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn collect(stream: impl std::io::Read + Send + 'static) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.snapshot().into_iter().find(|l| matches(l)) {
                return line;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no line with {what}; got {:?}",
                self.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A running ambassador, killed on drop.
pub struct Ambassador {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Ambassador {
    pub async fn start(upstream: &str, extra: &[&str]) -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut argv: Vec<String> = vec!["ambassador".into()];
        argv.extend([
            "--listen".into(),
            listen.to_string(),
            "--admin".into(),
            admin.to_string(),
        ]);
        argv.extend(["--upstream".into(), upstream.to_owned()]);
        argv.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(argv, listen, admin).await
    }

    /// Runs a command line the webhook rendered (`ambassador --listen … --admin …`), with only the two local
    /// addresses moved to free loopback ports.
    pub async fn start_injected(rendered: &[String]) -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut argv = rendered.to_vec();
        for (flag, addr) in [("--listen", listen), ("--admin", admin)] {
            let at = argv
                .iter()
                .position(|a| a == flag)
                .expect("the webhook renders the flag");
            argv[at + 1] = addr.to_string();
        }
        Self::spawn(argv, listen, admin).await
    }

    async fn spawn(argv: Vec<String>, listen: SocketAddr, admin: SocketAddr) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_entourage"))
            .args(argv)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the entourage binary");
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let ambassador = Self {
            child,
            listen,
            admin,
            stdout,
            stderr,
        };
        ambassador.wait_ready().await;
        ambassador
    }

    pub async fn wait_ready(&self) {
        let client = client();
        let start = Instant::now();
        loop {
            let request = get(&format!("http://{}/healthz", self.admin));
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "ambassador never became ready; stderr: {:?}",
                self.stderr.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.listen)
    }

    /// The access-log line for a path, parsed.
    pub async fn log_for(&self, method: &str, path: &str) -> Value {
        let needle = format!("\"path\":\"{path}\"");
        let method = format!("\"method\":\"{method}\"");
        let line = self
            .stdout
            .wait_for(&needle, |l| l.contains(&needle) && l.contains(&method))
            .await;
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Ambassador {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn get(url: &str) -> Request<TestBody> {
    Request::get(url).body(empty()).unwrap()
}

pub fn empty() -> TestBody {
    Empty::new().boxed()
}

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).boxed()
}

pub async fn send(request: Request<TestBody>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = tokio::time::timeout(DEADLINE, client().request(request))
        .await
        .expect("the ambassador answers")
        .expect("the request reaches the ambassador");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a complete body").to_bytes();
    (parts.status, parts.headers, body)
}

pub fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// A body fed piece by piece from a channel, so tests control when each piece exists.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|data| Ok(Frame::data(data))))
    }
}

pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody(rx).boxed())
}

/// Serves `handler` on a loopback port until the test ends.
pub async fn spawn_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_upstream(listener, handler));
    addr
}

pub async fn serve_upstream<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    while let Ok((stream, _)) = listener.accept().await {
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = handler(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers with what it received: method, URI, headers (repeated names joined by `|`) and body.
pub async fn echo(request: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = request.into_parts();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &parts.headers {
        let value = value.to_str().unwrap_or("<binary>");
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push('|');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let reply = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "yes")
        .header("x-resp-hop", "1")
        .header("connection", "x-resp-hop")
        .header("keep-alive", "timeout=5")
        .body(full(reply.to_string()))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// TLS upstream
// ---------------------------------------------------------------------------------------------------------------

pub struct TestCa {
    pub issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.issuer.pem()).unwrap();
    }

    /// A TLS server config for 127.0.0.1 signed by this CA.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap()
    }
}

/// Serves `echo` over TLS on a loopback port.
pub async fn spawn_tls_upstream(config: rustls::ServerConfig) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(|request| async move { Ok::<_, Infallible>(echo(request).await) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Lays out `dir` the way the kubelet writes a Secret, ConfigMap or projected volume: each file is a symlink
/// through `..data`, which points at a timestamped directory. A new `version` is swapped in atomically by renaming
/// a fresh `..data` symlink over the old one, so a reader sees the old set or the new set, never a mix.
pub fn write_kubelet_volume(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    for (name, contents) in files {
        std::fs::write(versioned.join(name), contents).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        if !dir.join(name).exists() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

/// A client certificate issued by a [`TestCa`]: PEM for the ambassador's files, DER to recognise it upstream.
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    /// A client certificate with common name `name`.
    pub fn client_cert(&self, name: &str) -> ClientCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost, and its key, in PEM (for servers not written in Rust).
    pub fn server_cert_pem(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A TLS server config for 127.0.0.1 signed by this CA that requires a client certificate issued by
    /// `client_ca`.
    pub fn mtls_server_config(&self, client_ca: &TestCa) -> rustls::ServerConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.issuer.der().clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .unwrap();
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap()
    }
}
