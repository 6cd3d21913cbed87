//! `entourage serve`: its flags, its log set-up and the wiring of the server, reload, CA bundle patcher and signal.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use crate::core::config::{Config, ConfigError};
use crate::support::cabundle;
use crate::webhook::{accept, jsonlog, logsink::LogSink, reload, server, tls};

/// Flags of `entourage serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ENTOURAGE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM).
    #[arg(long, env = "ENTOURAGE_TLS_CERT", default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    /// Serving key (PEM).
    #[arg(long, env = "ENTOURAGE_TLS_KEY", default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
    /// Config file (YAML); the built-in default when absent.
    #[arg(long, env = "ENTOURAGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve `/metrics` on this address, in plain HTTP, instead of on the webhook port: a NetworkPolicy can then
    /// open the webhook port to wherever the apiserver calls from and the metrics port to the monitoring
    /// namespace only.
    #[arg(long, env = "ENTOURAGE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Require client certificates signed by this CA (the apiserver's).
    #[arg(long, env = "ENTOURAGE_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "ENTOURAGE_GRACE_PERIOD", default_value_t = 10)]
    pub grace_period: u64,
    /// Seconds a client has to send a request's headers, from the connection's opening or the request's first
    /// byte (against slow clients; an idle kept-alive connection waits for --idle-timeout instead).
    #[arg(long, env = "ENTOURAGE_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,
    /// How long a kept-alive connection may stay idle between requests (`120s`). Keep it above the apiserver's
    /// 90 s: the client must be the side that closes an idle connection, or a POST sent as the server closes it
    /// fails with EOF and, with `failurePolicy: Fail`, the Pod is refused.
    #[arg(long, env = "ENTOURAGE_IDLE_TIMEOUT", default_value = "120s", value_parser = crate::support::duration::parse_timeout)]
    pub idle_timeout: Duration,
    /// Most simultaneous connections.
    #[arg(long, env = "ENTOURAGE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// How often the certificate, key and config files are re-read (`5s`, `500ms`; `0s` never).
    #[arg(long, env = "ENTOURAGE_RELOAD_INTERVAL", default_value = "5s", value_parser = crate::support::duration::parse_duration)]
    pub reload_interval: Duration,
    /// At start, write the CA (`--ca-bundle-file`) into every webhook of this MutatingWebhookConfiguration.
    #[arg(long, env = "ENTOURAGE_PATCH_CA_BUNDLE", requires = "ca_bundle_file")]
    pub patch_ca_bundle: Option<String>,
    /// List the namespaces' LimitRanges every 30 s (RBAC: list limitranges) and refuse a Pod whose injected
    /// containers one would refuse, naming the limit and the annotation or config key that fixes it.
    #[arg(long, env = "ENTOURAGE_LIMIT_RANGES")]
    pub limit_ranges: bool,
    /// The CA that signed the serving certificate (PEM), for `--patch-ca-bundle`.
    #[arg(long, env = "ENTOURAGE_CA_BUNDLE_FILE")]
    pub ca_bundle_file: Option<PathBuf>,
    /// Check the flags, config, certificate and CA bundle, print `ok` and exit without serving.
    #[arg(long)]
    pub check: bool,
}

/// The format of the webhook's log lines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (log collectors).
    Json,
    /// Plain text (a person at a terminal).
    Text,
}

/// Why `entourage serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `--log-level` is not a tracing filter.
    #[error("bad --log-level {0:?}: {1}")]
    LogLevel(String, String),
    /// The config file could not be read.
    #[error("cannot read config file {0}: {1}")]
    ReadConfig(String, std::io::Error),
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificate, key or client CA is unusable.
    #[error("loading the serving certificate (run `make certs` for development ones): {0}")]
    Tls(#[from] tls::TlsError),
    /// The CA bundle file is unusable.
    #[error(transparent)]
    CaBundle(#[from] cabundle::CaBundleError),
    /// `--limit-ranges` without a way to reach the API.
    #[error("--limit-ranges: {0}")]
    LimitRanges(String),
    /// The address cannot be listened on.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Reads and validates a config file; the built-in default when there is none.
pub fn load_config(path: Option<&Path>) -> Result<Config, ServeError> {
    let Some(path) = path else { return Ok(Config::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::ReadConfig(path.display().to_string(), e))?;
    Ok(crate::core::mutate::load_config(&text, &path.display().to_string())?)
}

/// The webhook's log lines, batched (see [`LogSink`]).
static LOGS: OnceLock<LogSink> = OnceLock::new();

/// The longest a log line waits in memory before it is written.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(100);

fn flush_logs() {
    if let Some(logs) = LOGS.get() {
        logs.flush();
    }
}

fn init_tracing(format: LogFormat, level: &str) -> Result<(), ServeError> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).map_err(|e| ServeError::LogLevel(level.into(), e.to_string()))?;
    // Colours only for a person at a terminal; a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let sink = LOGS
        .get_or_init(|| LogSink::new(Box::new(std::io::stderr()), LOG_FLUSH_EVERY))
        .clone();
    // A panic aborts the process: write the lines logged before it first, so they come before its message.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_logs();
        report(info);
    }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.event_format(jsonlog::JsonLines).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Runs `entourage serve` until SIGTERM, its log lines in `format` filtered by `level`.
pub async fn cmd(args: ServeArgs, format: LogFormat, level: &str) -> Result<(), ServeError> {
    init_tracing(format, level)?;
    let result = serve(args).await;
    flush_logs();
    result
}

async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let shutdown = accept::logged_shutdown_signal();
    let config = load_config(args.config.as_deref())?;
    let certs = Arc::new(tls::CertStore::load(&args.tls_cert, &args.tls_key)?);
    let tls_config = tls::server_config(certs.clone(), args.client_ca.as_deref())?;
    let ca_bundle = match &args.ca_bundle_file {
        Some(path) => Some(cabundle::read_ca_bundle(path)?),
        None => None,
    };
    if args.check {
        println!("ok");
        return Ok(());
    }
    let state = server::AppState::new(config, Some(certs));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| ServeError::Listen(args.listen, e))?;
    let local = listener.local_addr().map_err(|e| ServeError::Listen(args.listen, e))?;
    tracing::info!(listen = %local, config = ?args.config, "serving admission reviews on https://{local}/mutate");
    let options = accept::ServeOptions {
        header_timeout: Duration::from_secs(args.header_timeout),
        idle_timeout: args.idle_timeout,
        grace_period: Duration::from_secs(args.grace_period),
        max_connections: args.max_connections,
        ..accept::ServeOptions::default()
    };
    if let (Some(name), Some(ca)) = (args.patch_ca_bundle.clone(), ca_bundle) {
        cabundle::spawn_patcher(name, ca);
    }
    if args.limit_ranges {
        let client = cabundle::client()
            .await
            .map_err(|e| ServeError::LimitRanges(e.to_string()))?;
        state.limit_ranges.spawn(client, Duration::from_secs(30));
    }
    if !args.reload_interval.is_zero() {
        let options = reload::WatchOptions {
            interval: args.reload_interval,
            config_path: args.config.clone(),
            ca_bundle: args.patch_ca_bundle.zip(args.ca_bundle_file),
        };
        reload::spawn(state.clone(), options);
    }
    let metrics_server = match args.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Listen(addr, e))?;
            let local = listener.local_addr().map_err(|e| ServeError::Listen(addr, e))?;
            tracing::info!(metrics = %local, "serving metrics on http://{local}/metrics");
            let app = server::metrics_router(state.clone());
            Some(tokio::spawn(async move { axum::serve(listener, app).await }))
        }
        None => None,
    };
    let app = server::webhook_router(state.clone(), metrics_server.is_none());
    accept::serve_tls(listener, tls_config, app, state, options, shutdown).await;
    // Scrapes stop with the webhook: the last one a Prometheus makes fails, as for any Pod that goes.
    if let Some(task) = metrics_server {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
