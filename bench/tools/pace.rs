//! Latency at a fixed rate, for `make bench` and `make bench-ambassador`: an open-loop load generator that sends
//! each request at its own time, evenly spaced.
//!
//! Why not `oha -q`: oha 1.16 paces on tokio's millisecond timer, so at 11,600 req/s it releases about a dozen
//! requests at once every millisecond, and the p99 it reports is mostly the queue that burst forms on a one-core
//! server (the floor's own p99 was 1.5–3 ms at that rate, against 0.3 ms p50). It also counts the first
//! connections' TLS handshakes into its latency-corrected figures.
//!
//! Here request `i` is due at `start + i / rate`. The generator sleeps until shortly before that and spins the rest
//! (yielding to the runtime, so responses are read meanwhile), then hands the request to the first free one of
//! `--connections` keep-alive connections, all opened and warmed up before measuring starts. Latency runs from the
//! due time to the last byte of the response, so a request that waits for a connection, or for a generator stalled
//! by the machine, is counted in full (no coordinated omission). How late the generator itself sent is reported too.
//!
//! The JSON written to `--output` uses the field names of oha's JSON (`summary`, `latencyPercentiles` in seconds,
//! `statusCodeDistribution`, `errorDistribution`), so the bench's report reads either, plus a `pace` object.
//!
//! `pace https://localhost:18443/mutate?timeout=10s --rate 11000 --connections 25 --duration 10 --warmup 2 \
//!   --cacert target/bench/certs/ca.crt --method POST --body bench/fixtures/pod-5k.json \
//!   --header 'content-type: application/json' --output halfload.json`

use std::{
    collections::BTreeMap,
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::json;
use tokio::{
    net::TcpStream,
    sync::{mpsc, Mutex as AsyncMutex},
};
use tokio_rustls::TlsConnector;

#[derive(Parser)]
#[command(about = "Open-loop load at an evenly spaced fixed rate; latency from each request's due time")]
struct Args {
    /// http:// or https:// URL to send every request to.
    url: Uri,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Keep-alive connections, opened before the run.
    #[arg(long, default_value_t = 25)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds at the same rate before measuring starts (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value = "GET")]
    method: Method,
    /// File whose bytes are each request's body.
    #[arg(long)]
    body: Option<PathBuf>,
    /// A request header, `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// PEM CA that signs an https:// server's certificate (verified, with the URL's host as the server name).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Where to write the JSON summary.
    #[arg(long)]
    output: PathBuf,
}

/// What every request carries.
struct Template {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Template {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        request.headers_mut().extend(self.headers.iter().cloned());
        request
    }
}

/// Where to connect, and how.
struct Target {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    fn new(url: &Uri, cacert: Option<&PathBuf>) -> anyhow::Result<Self> {
        let host = url.host().context("the URL has no host")?.to_string();
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => bail!("the URL's scheme must be http or https, not {other:?}"),
        };
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addrs: Vec<SocketAddr> = (host.as_str(), port).to_socket_addrs()?.collect();
        // Benchmark servers listen on 127.0.0.1; "localhost" may resolve to ::1 first.
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .with_context(|| format!("{host} does not resolve"))?;
        let tls = if https {
            let mut roots = RootCertStore::empty();
            let ca = cacert.context("an https:// URL needs --cacert")?;
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
                roots.add(cert?)?;
            }
            let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some((TlsConnector::from(Arc::new(config)), ServerName::try_from(host)?))
        } else {
            None
        };
        Ok(Self { addr, tls })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                handshake(TokioIo::new(tls)).await?
            }
            None => handshake(TokioIo::new(tcp)).await?,
        })
    }
}

async fn handshake<T>(io: T) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// What the run saw; only requests due at or after `from` are counted.
struct Record {
    from: Instant,
    /// From each request's due time to the last byte of its answer.
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    /// Answers received, warm-up included: what the server's CPU time over the whole run was spent on.
    answered_with_warmup: u64,
}

impl Record {
    fn counts(&self, due: Instant) -> bool {
        due >= self.from
    }
}

/// How long after the last request was due the run waits for the answers still outstanding.
const LAST_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Each request's due time.
type Due = mpsc::UnboundedReceiver<Instant>;

/// One keep-alive connection: takes the next due request, sends it, reads the whole answer, records it.
async fn worker(
    target: Arc<Target>,
    template: Arc<Template>,
    mut sender: SendRequest<Full<Bytes>>,
    queue: Arc<AsyncMutex<Due>>,
    record: Arc<Mutex<Record>>,
) {
    loop {
        let Some(due) = queue.lock().await.recv().await else {
            return;
        };
        let outcome = async {
            sender.ready().await?;
            let response = sender.send_request(template.request()).await?;
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        let done = Instant::now();
        let failed = outcome.is_err();
        {
            let mut record = record.lock().expect("never poisoned");
            record.answered_with_warmup += u64::from(!failed);
            if record.counts(due) {
                match outcome {
                    Ok(status) => {
                        record.latencies.push(done - due);
                        *record.statuses.entry(status).or_default() += 1;
                    }
                    Err(error) => *record.errors.entry(error.to_string()).or_default() += 1,
                }
            }
        }
        if failed {
            match target.connect().await {
                Ok(fresh) => sender = fresh,
                Err(_) => return,
            }
        }
    }
}

/// Waits until `due`: sleeps on the runtime's millisecond timer while it is far, then yields in a loop so the
/// runtime keeps reading responses while the generator waits for the exact instant.
async fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_millis(2);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > SPIN {
            tokio::time::sleep_until((due - SPIN).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64()
}

/// oha's percentile names, in seconds.
fn percentiles(sorted: &[Duration]) -> serde_json::Map<String, serde_json::Value> {
    [
        ("p10", 10.0),
        ("p25", 25.0),
        ("p50", 50.0),
        ("p75", 75.0),
        ("p90", 90.0),
        ("p95", 95.0),
        ("p99", 99.0),
        ("p99.9", 99.9),
        ("p99.99", 99.99),
    ]
    .into_iter()
    .map(|(name, p)| (name.to_string(), json!(percentile(sorted, p))))
    .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    // One thread: the generator is pinned to one core by the bench, like the server.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(&args.url, args.cacert.as_ref())?);
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?} is not `name: value`"))?;
        headers.push((HeaderName::try_from(name.trim())?, HeaderValue::try_from(value.trim())?));
    }
    let authority = args.url.authority().context("the URL has no host")?.as_str();
    headers.push((http::header::HOST, HeaderValue::try_from(authority)?));
    let path = args.url.path_and_query().map_or("/", |p| p.as_str());
    let body = match &args.body {
        Some(file) => Bytes::from(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?),
        None => Bytes::new(),
    };
    let template = Arc::new(Template {
        method: args.method.clone(),
        uri: path.parse()?,
        headers,
        body,
    });

    let (tx, rx) = mpsc::unbounded_channel();
    let queue = Arc::new(AsyncMutex::new(rx));
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + Duration::from_secs_f64(args.warmup);
    let end = from + Duration::from_secs_f64(args.duration);
    let record = Arc::new(Mutex::new(Record {
        from,
        latencies: Vec::with_capacity((args.rate * args.duration * 1.1) as usize),
        statuses: BTreeMap::new(),
        errors: BTreeMap::new(),
        answered_with_warmup: 0,
    }));
    let mut workers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let sender = target
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.url))?;
        workers.push(tokio::spawn(worker(
            target.clone(),
            template.clone(),
            sender,
            queue.clone(),
            record.clone(),
        )));
    }
    // Only the workers hold the queue now: once every one has failed for good, sending fails and the run stops.
    drop(queue);

    let mut late = Vec::with_capacity((args.rate * args.duration * 1.1) as usize);
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        if due >= end {
            break;
        }
        wait_until(due).await;
        let released = Instant::now();
        if due >= from {
            late.push(released - due);
        }
        if tx.send(due).is_err() {
            bail!("every connection failed");
        }
    }
    drop(tx);
    // Answers still outstanding this long after the last request was due are counted as never answered.
    let give_up = tokio::time::Instant::now() + LAST_ANSWER_WAIT;
    for mut worker in workers {
        if tokio::time::timeout_at(give_up, &mut worker).await.is_err() {
            worker.abort();
            // Resolves once the task is dropped, with it its share of the record.
            let _ = worker.await;
        }
    }

    let mut record = Arc::try_unwrap(record)
        .map_err(|_| anyhow::anyhow!("a worker outlived the run"))?
        .into_inner()
        .expect("never poisoned");
    let sent = late.len() as u64;
    let answered: u64 = record.statuses.values().sum::<u64>() + record.errors.values().sum::<u64>();
    if answered < sent {
        *record
            .errors
            .entry("never answered: every connection failed, or no answer 10 s after the last was due".into())
            .or_default() += sent - answered;
    }
    record.latencies.sort_unstable();
    late.sort_unstable();
    let lat = &record.latencies;
    let mean = lat.iter().map(Duration::as_secs_f64).sum::<f64>() / lat.len().max(1) as f64;
    let ok = record.statuses.values().sum::<u64>();
    let summary = json!({
        "summary": {
            "successRate": ok as f64 / sent.max(1) as f64,
            "total": args.duration,
            "slowest": lat.last().map_or(0.0, Duration::as_secs_f64),
            "fastest": lat.first().map_or(0.0, Duration::as_secs_f64),
            "average": mean,
            "requestsPerSec": ok as f64 / args.duration,
        },
        "latencyPercentiles": percentiles(lat),
        "statusCodeDistribution": record.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "errorDistribution": record.errors,
        "pace": {
            "rate": args.rate,
            "connections": args.connections,
            "warmupSecs": args.warmup,
            "durationSecs": args.duration,
            "sent": sent,
            "answeredWithWarmup": record.answered_with_warmup,
            "sendLateP50": percentile(&late, 50.0),
            "sendLateP99": percentile(&late, 99.0),
            "sendLateMax": late.last().map_or(0.0, Duration::as_secs_f64),
        },
    });
    std::fs::write(&args.output, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "pace: {sent} requests at {} req/s over {} connections: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; sent late p99 {:.0} µs; {} errors",
        args.rate,
        args.connections,
        percentile(lat, 50.0) * 1e6,
        percentile(lat, 99.0) * 1e6,
        lat.last().map_or(0.0, Duration::as_secs_f64) * 1e6,
        percentile(&late, 99.0) * 1e6,
        record.errors.values().sum::<u64>(),
    );
    Ok(())
}
