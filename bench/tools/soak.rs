//! The load driver of `make soak` (scripts/soak.sh starts the server; this plays a busy apiserver on loopback).
//!
//! - `load`: N reviews over C keep-alive connections; the server's RSS is sampled after a warm-up and at the
//!   end, and must stay within a bound (default 10 %).
//! - `sigterm`: C connections send without pause; SIGTERM goes to the server mid-load. Every request the
//!   server started must complete; connections refused after the listener closed are fine.
//! - `rotate`: while loaded, the serving pair is replaced by a new one signed by the same CA; new connections
//!   must see the new certificate before the deadline, and no request may fail.
//!
//! Each mode prints one JSON line of counts and exits non-zero when its rule is broken.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SERVER_NAME: &str = "entourage.entourage-system.svc";

#[derive(Parser)]
#[command(about = "Load driver for make soak")]
struct Cli {
    /// The server's address.
    #[arg(long, global = true, default_value = "127.0.0.1:8443")]
    addr: std::net::SocketAddr,
    /// The CA that signs the serving certificate.
    #[arg(long, global = true, default_value = "certs/ca.crt")]
    ca: PathBuf,
    /// The review to send (an AdmissionReview JSON file).
    #[arg(long, global = true, default_value = "tests/fixtures/pod-sidecar-nginx.json")]
    review: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N requests over C connections; RSS flat within --max-growth-pct between warm-up and end.
    Load {
        /// The server's pid (for /proc/<pid>/status).
        #[arg(long)]
        pid: u32,
        /// Requests in all, warm-up included.
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// Requests before the first RSS sample.
        #[arg(long, default_value_t = 50_000)]
        warmup: u64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Largest allowed RSS growth from warm-up to end, in percent.
        #[arg(long, default_value_t = 10.0)]
        max_growth_pct: f64,
    },
    /// SIGTERM to --pid while C connections send; every started request must complete.
    Sigterm {
        /// The server's pid.
        #[arg(long)]
        pid: u32,
        /// Connections sending without pause.
        #[arg(long, default_value_t = 25)]
        connections: usize,
        /// Load before the signal, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        after_ms: u64,
    },
    /// Replace tls.crt/tls.key in --cert-dir (signed by ca.key there) while loaded.
    Rotate {
        /// Directory with ca.crt, ca.key, tls.crt, tls.key.
        #[arg(long)]
        cert_dir: PathBuf,
        /// Connections sending without pause.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Seconds the server has to serve the new certificate.
        #[arg(long, default_value_t = 60)]
        deadline_s: u64,
    },
}

fn tls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("usable CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Like the apiserver's client, no session resumption: a resumed TLS 1.3 session carries the certificate of the
    // session it resumes, so after a rotation it would keep showing the old one.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// One keep-alive connection and the certificate the server presented on it.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    peer_cert: Vec<u8>,
}

async fn connect(addr: std::net::SocketAddr, tls: Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls)
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await?;
    let peer_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Conn { sender, peer_cert })
}

/// How one request ended.
enum Ending {
    /// A 200 with a patched AdmissionReview for our uid.
    Answered,
    /// The connection was closed before the request was written: not started, retry on a new connection.
    NotSent,
    /// The server closed the connection without answering: it read nothing of the request (a keep-alive
    /// connection closed as the request went out) or it dropped a request it had started. The server's log
    /// tells which: `scripts/soak.sh` checks that it logged exactly as many reviews as were answered.
    Closed,
    /// The request failed otherwise, or the answer is wrong.
    Failed(String),
}

async fn send(conn: &mut Conn, body: &Bytes, uid: &str) -> Ending {
    if conn.sender.ready().await.is_err() {
        return Ending::NotSent;
    }
    let request = hyper::Request::post("/mutate?timeout=10s")
        .header("host", SERVER_NAME)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    let response = match conn.sender.send_request(request).await {
        Ok(r) => r,
        // hyper gives the request back unsent when the connection closed first.
        Err(e) if e.is_canceled() => return Ending::NotSent,
        Err(e) if e.is_incomplete_message() => return Ending::Closed,
        Err(e) => return Ending::Failed(format!("request: {e}")),
    };
    let status = response.status();
    let bytes = match response.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ending::Failed(format!("body: {e}")),
    };
    if status != 200 {
        return Ending::Failed(format!("status {status}"));
    }
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let r = &answer["response"];
    if r["uid"] != uid || r["allowed"] != true || !r["patch"].is_string() {
        return Ending::Failed(format!("unexpected answer {answer}"));
    }
    Ending::Answered
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    not_sent: AtomicU64,
    closed: AtomicU64,
    refused: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counts {
    fn record(&self, sent: Ending) {
        match sent {
            Ending::Answered => self.ok.fetch_add(1, Ordering::Relaxed),
            Ending::NotSent => self.not_sent.fetch_add(1, Ordering::Relaxed),
            Ending::Closed => self.closed.fetch_add(1, Ordering::Relaxed),
            Ending::Failed(e) => {
                let mut errors = self.errors.lock().unwrap();
                if errors.len() < 10 {
                    errors.push(e);
                }
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn json(&self) -> Value {
        json!({
            "ok": self.ok.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "not_sent": self.not_sent.load(Ordering::Relaxed),
            "closed_without_answer": self.closed.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "first_errors": *self.errors.lock().unwrap(),
        })
    }
}

/// Sends `requests` reviews over `connections` connections (reconnecting when the server closes one).
async fn run_load(cli: &Cli, body: &Bytes, uid: &str, requests: u64, connections: usize, counts: &Arc<Counts>) {
    let tls = tls_config(&cli.ca);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (tls, next, counts, body, uid, addr) = (
            tls.clone(),
            next.clone(),
            counts.clone(),
            body.clone(),
            uid.to_string(),
            cli.addr,
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(addr, tls.clone()).await.expect("connect");
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                loop {
                    match send(&mut conn, &body, &uid).await {
                        Ending::NotSent => {
                            counts.record(Ending::NotSent);
                            conn = connect(addr, tls.clone()).await.expect("reconnect");
                        }
                        other => {
                            counts.record(other);
                            break;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn review_body(path: &Path) -> (Bytes, String) {
    let review: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("review file")).expect("JSON");
    let uid = review["request"]["uid"].as_str().expect("uid").to_string();
    (Bytes::from(serde_json::to_vec(&review).unwrap()), uid)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let (body, uid) = review_body(&cli.review);
    let ok = match &cli.mode {
        Mode::Load {
            pid,
            requests,
            warmup,
            connections,
            max_growth_pct,
        } => {
            let counts = Arc::new(Counts::default());
            let started = Instant::now();
            let warmup = (*warmup).min(*requests);
            run_load(&cli, &body, &uid, warmup, *connections, &counts).await;
            let rss_warm = rss_kib(*pid);
            run_load(&cli, &body, &uid, requests - warmup, *connections, &counts).await;
            let rss_end = rss_kib(*pid);
            let elapsed = started.elapsed().as_secs_f64();
            let growth = (rss_end as f64 - rss_warm as f64) * 100.0 / rss_warm.max(1) as f64;
            let mut out = counts.json();
            out["mode"] = json!("load");
            out["requests"] = json!(requests);
            out["connections"] = json!(connections);
            out["rss_after_warmup_kib"] = json!(rss_warm);
            out["rss_end_kib"] = json!(rss_end);
            out["rss_growth_pct"] = json!((growth * 100.0).round() / 100.0);
            out["elapsed_s"] = json!((elapsed * 10.0).round() / 10.0);
            out["requests_per_s"] = json!((*requests as f64 / elapsed).round());
            println!("{out}");
            out["failed"] == 0
                && out["closed_without_answer"] == 0
                && out["ok"] == *requests
                && growth <= *max_growth_pct
                && rss_warm > 0
        }
        Mode::Sigterm {
            pid,
            connections,
            after_ms,
        } => sigterm(&cli, &body, &uid, *pid, *connections, *after_ms).await,
        Mode::Rotate {
            cert_dir,
            connections,
            deadline_s,
        } => rotate(&cli, &body, &uid, cert_dir, *connections, *deadline_s).await,
    };
    std::process::exit(if ok { 0 } else { 1 });
}

/// Connections that send until the server refuses them; SIGTERM mid-way.
async fn sigterm(cli: &Cli, body: &Bytes, uid: &str, pid: u32, connections: usize, after_ms: u64) -> bool {
    let tls = tls_config(&cli.ca);
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (tls, counts, body, uid, addr) = (tls.clone(), counts.clone(), body.clone(), uid.to_string(), cli.addr);
        tasks.push(tokio::spawn(async move {
            // Until a connection is refused (the listener is closed): keep sending, reconnecting when the server
            // closes a connection after an answer (`Connection: close` during the drain).
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let Ok(mut conn) = connect(addr, tls.clone()).await else {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                loop {
                    match send(&mut conn, &body, &uid).await {
                        Ending::NotSent => {
                            counts.record(Ending::NotSent);
                            break;
                        }
                        other => counts.record(other),
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    let before = counts.ok.load(Ordering::Relaxed);
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    for t in tasks {
        t.await.unwrap();
    }
    let mut out = counts.json();
    out["mode"] = json!("sigterm");
    out["connections"] = json!(connections);
    out["ok_before_signal"] = json!(before);
    println!("{out}");
    status.success() && out["failed"] == 0 && before > 0
}

/// Writes a new serving pair signed by the CA in `dir`, atomically (write aside, then rename).
fn write_new_pair(dir: &Path) -> Vec<u8> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    // The issuer's name as `entourage certs` writes it (src/certs/mod.rs): verification matches it to the CA's subject.
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "entourage development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let issuer = Issuer::from_params(&ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec![SERVER_NAME.to_string(), "localhost".into(), "127.0.0.1".into()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "rotated");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    for (name, text) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
        let aside = dir.join(format!(".{name}.new"));
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, dir.join(name)).unwrap();
    }
    cert.der().to_vec()
}

/// Load while the pair is rotated; new connections must get the new certificate.
async fn rotate(cli: &Cli, body: &Bytes, uid: &str, dir: &Path, connections: usize, deadline_s: u64) -> bool {
    let tls = tls_config(&cli.ca);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (tls, counts, body, uid, addr, stop) = (
            tls.clone(),
            counts.clone(),
            body.clone(),
            uid.to_string(),
            cli.addr,
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // A new connection every 100 requests, so that handshakes happen throughout the rotation.
            while !stop.load(Ordering::Relaxed) {
                let mut conn = connect(addr, tls.clone()).await.expect("connect");
                for _ in 0..100 {
                    counts.record(send(&mut conn, &body, &uid).await);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new_cert = write_new_pair(dir);
    let rotated_at = Instant::now();
    let mut served = false;
    while rotated_at.elapsed() < Duration::from_secs(deadline_s) {
        if let Ok(conn) = connect(cli.addr, tls.clone()).await {
            if conn.peer_cert == new_cert {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = rotated_at.elapsed();
    // Keep the load on a little after the switch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let mut out = counts.json();
    out["mode"] = json!("rotate");
    out["new_certificate_served"] = json!(served);
    out["seconds_to_serve_new_certificate"] = json!((took.as_secs_f64() * 10.0).round() / 10.0);
    println!("{out}");
    served && out["failed"] == 0 && out["closed_without_answer"] == 0
}
