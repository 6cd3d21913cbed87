//! The ambassador runtime (`entourage ambassador`): a reverse proxy from a loopback port to an upstream service.
//!
//! The app in the Pod talks plain HTTP to `--listen` (HTTP/1.1, or HTTP/2 with prior knowledge as gRPC clients
//! do, on the same port); the ambassador adds the credential, forwards to the upstream in the app's protocol
//! (pooled HTTP/1.1 connections, one multiplexed HTTP/2 connection, TLS when the upstream is `https://`), relays
//! WebSocket upgrades, bounds the wait, retries what is safe to retry and logs one JSON line per request. Modules, in
//! the order a request meets them: [`config`] (flags parsed once), [`auth`] (the rotating credential), [`headers`]
//! (what is stripped and added), [`forward`] (one request: through the [`breaker`] and the concurrency cap, then by the
//! app's protocol to HTTP/1.1, HTTP/2 or a WebSocket relay, retried as [`retry`] allows, with [`replay`] for gRPC),
//! [`grpc`] (deadlines, statuses; the codes in [`grpc_status`]), [`upstream`] (upstream connections), [`body`] (the
//! relayed response body), [`error_text`] (failures in words), [`access_log`] (the log line), [`metrics`] (Prometheus)
//! and [`admin`] (readiness, liveness and metrics endpoints); [`timer`] is the request-head timer of the HTTP/1.1
//! server. [`tls`] and [`oauth2`] keep the upstream's TLS files and the OAuth2 token fresh.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod body;
pub mod breaker;
pub mod config;
mod drive;
pub mod error_text;
pub mod forward;
pub mod grpc;
pub mod grpc_status;
pub mod headers;
pub mod metrics;
pub mod oauth2;
pub mod replay;
pub mod retry;
pub mod timer;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use self::access_log::AccessLog;
use self::config::{Upstream, UpstreamError};
use self::forward::{ClientConn, Forwarder, Settings, UpstreamProtocol};
use self::metrics::Metrics;
use crate::support::duration::{format_duration, parse_drain_period, parse_duration, parse_timeout};

/// Command-line arguments of `entourage ambassador`.
#[derive(Debug, Clone, clap::Args)]
pub struct AmbassadorArgs {
    /// Where the app reaches the ambassador.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The upstream base URL (`http://` or `https://`); a path in it prefixes every request path.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_UPSTREAM")]
    pub upstream: String,
    /// A file holding the token to send upstream (typically a mounted Secret key); re-read when it changes.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// OAuth2 client credentials: the token endpoint (`https://`); the token is sent as `Authorization: Bearer`.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_OAUTH2_TOKEN_URL", requires_all = ["oauth2_client_id_file", "oauth2_client_secret_file"], conflicts_with = "auth_file")]
    pub oauth2_token_url: Option<String>,
    /// The file holding the OAuth2 client id (a mounted Secret key); re-read at each token fetch.
    #[arg(
        long,
        env = "ENTOURAGE_AMBASSADOR_OAUTH2_CLIENT_ID_FILE",
        requires = "oauth2_token_url"
    )]
    pub oauth2_client_id_file: Option<PathBuf>,
    /// The file holding the OAuth2 client secret; re-read at each token fetch.
    #[arg(
        long,
        env = "ENTOURAGE_AMBASSADOR_OAUTH2_CLIENT_SECRET_FILE",
        requires = "oauth2_token_url"
    )]
    pub oauth2_client_secret_file: Option<PathBuf>,
    /// A scope to ask for (repeatable).
    #[arg(
        long = "oauth2-scope",
        env = "ENTOURAGE_AMBASSADOR_OAUTH2_SCOPES",
        value_delimiter = ' ',
        requires = "oauth2_token_url"
    )]
    pub oauth2_scopes: Vec<String>,
    /// The protocol spoken upstream: `auto` (the app's: HTTP/2 and gRPC as HTTP/2, HTTP/1.1 as HTTP/1.1),
    /// `http1` or `http2` (always that one, for an upstream that needs it).
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_UPSTREAM_PROTOCOL", default_value = "auto", value_parser = UpstreamProtocol::parse)]
    pub upstream_protocol: UpstreamProtocol,
    /// The header that carries the token; any value the app sent under this name is replaced.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_AUTH_HEADER", default_value = "Authorization", value_parser = parse_header_name)]
    pub auth_header: HeaderName,
    /// The scheme written before the token; empty sends the bare token.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_AUTH_SCHEME", default_value = "Bearer")]
    pub auth_scheme: String,
    /// Extra PEM CA certificates trusted for an `https://` upstream, besides the system roots; re-read on change.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate chain presented to an `https://` upstream that asks for one (mTLS); re-read on change.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `--client-cert`.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Bound on waiting for the upstream's response head, and on each wait for more of its body.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Bound on establishing a connection (TCP and TLS) to the upstream.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    /// Retries of body-less idempotent requests after a connect error, a 503, or a 429 with `Retry-After`;
    /// never past `--timeout`.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_RETRIES", default_value_t = 2)]
    pub retries: u32,
    /// Consecutive failures (connect and TLS errors, timeouts, 5xx answers) that open the circuit; 0 never opens.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long an open circuit answers 503 at once before it lets one trial request through.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_BREAKER_COOLDOWN", default_value = "10s", value_parser = parse_timeout)]
    pub breaker_cooldown: Duration,
    /// Requests in flight to the upstream (response bodies included) past which new ones get a 503, not a queue.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_MAX_CONCURRENT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: u32,
    /// Where `/healthz` (readiness), `/livez` (liveness) and `/metrics` (Prometheus) are served.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_ADMIN", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// How long in-flight requests and relayed WebSockets may finish after SIGTERM before the ambassador exits
    /// anyway.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_DRAIN", default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,
    /// How long the ambassador keeps accepting new requests after SIGTERM, before it drains. The webhook sets it
    /// in classic Pods only, where the app gets SIGTERM at the same moment and still calls out while it shuts
    /// down; a native sidecar is stopped after the app and needs none.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_DRAIN_PERIOD", default_value = "0s", value_parser = parse_drain_period)]
    pub drain_period: Duration,
}

fn parse_header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("{text:?} is not a valid HTTP header name"))
}

/// Errors of the ambassador runtime; all happen at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `--upstream` is unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The upstream host cannot be verified over TLS.
    #[error(transparent)]
    ServerName(#[from] upstream::InvalidServerName),
    /// `--auth-file` is unreadable or holds no usable token.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The OAuth2 settings are unusable.
    #[error(transparent)]
    OAuth2(#[from] oauth2::OAuth2Error),
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listen address is taken or not ours.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install the SIGTERM handler: {0}")]
    Signal(std::io::Error),
    /// The access-log writer thread could not start.
    #[error("cannot start the access log writer: {0}")]
    AccessLog(std::io::Error),
}

/// Runs the ambassador until SIGTERM or SIGINT, then drains in-flight requests and WebSocket relays for up to
/// `--drain`.
pub async fn run(args: AmbassadorArgs) -> Result<(), ProxyError> {
    // Diagnostics go to stderr so that stdout carries nothing but access-log lines.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();

    let upstream = Upstream::parse(&args.upstream)?;
    let (credential, refresher) = match &args.auth_file {
        Some(path) => {
            let (credential, refresher) = auth::load(path, args.auth_header.clone(), &args.auth_scheme)?;
            (Some(credential), Some(refresher))
        }
        None => (None, None),
    };
    let tls_files = tls::TlsFiles {
        ca_file: args.ca_file.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
    };
    let https = upstream.is_https();
    let tls = tls::shared(tls::client_config(https, &tls_files)?);
    let log = Arc::new(AccessLog::stdout().map_err(ProxyError::AccessLog)?);
    let upstream_text = upstream.display().to_owned();
    let metrics = Arc::new(Metrics::new(&upstream_text));
    let oauth2 = match (
        &args.oauth2_token_url,
        &args.oauth2_client_id_file,
        &args.oauth2_client_secret_file,
    ) {
        (Some(token_url), Some(id), Some(secret)) => {
            // The token endpoint is https; it is verified like an https upstream (system roots plus --ca-file).
            let roots = tls::TlsFiles {
                ca_file: args.ca_file.clone(),
                ..tls::TlsFiles::default()
            };
            let settings = oauth2::OAuth2Settings {
                token_url: token_url.clone(),
                client_id_file: id.clone(),
                client_secret_file: secret.clone(),
                scopes: args.oauth2_scopes.clone(),
                timeout: args.timeout,
            };
            Some(oauth2::OAuth2::new(
                settings,
                tls::client_config(true, &roots)?,
                Arc::clone(&metrics),
            )?)
        }
        _ => None,
    };
    let forwarder = Arc::new(Forwarder::new(
        Settings {
            upstream,
            timeout: args.timeout,
            connect_timeout: args.connect_timeout,
            retries: args.retries,
            breaker_failures: args.breaker_failures,
            breaker_cooldown: args.breaker_cooldown,
            max_concurrent: args.max_concurrent as usize,
            credential,
            oauth2,
            protocol: args.upstream_protocol,
        },
        Arc::clone(&tls),
        Arc::clone(&metrics),
        Arc::clone(&log),
    )?);

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { what, addr, source })
    };
    let listener = bind("proxy", args.listen).await?;
    let admin_listener = bind("admin", args.admin).await?;
    let shutdown = crate::support::shutdown::shutdown_signal().map_err(ProxyError::Signal)?;

    if let Some(refresher) = refresher {
        tokio::spawn(refresher.run(Arc::clone(&metrics)));
    }
    if https && tls_files.any() {
        tokio::spawn(tls::Reloader::new(https, tls_files, Arc::clone(&tls)).run());
    }
    let draining = Arc::new(AtomicBool::new(false));
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        Arc::clone(&draining),
        Arc::clone(&metrics),
    ));
    tracing::info!(listen = %args.listen, upstream = %upstream_text, admin = %args.admin, "ambassador ready");

    let graceful = GracefulShutdown::new();
    let drain_period = args.drain_period;
    accept_until(listener, &forwarder, &graceful, async {
        let signal = shutdown.await;
        if !drain_period.is_zero() {
            tracing::info!(signal, drain_period = %format_duration(drain_period), "still serving the app while it shuts down");
            tokio::time::sleep(drain_period).await;
        }
    })
    .await;

    draining.store(true, Ordering::Relaxed);
    tracing::info!(
        drain = %config::format_duration(args.drain),
        connections = graceful.count(),
        websockets = forwarder.relays().count(),
        "shutting down: no new connections, draining"
    );
    // A relayed WebSocket is no HTTP connection any more once upgraded: it is waited for beside them, so that a
    // conversation in progress can end with its own closing handshake.
    let drained = async {
        graceful.shutdown().await;
        forwarder.relays().closed().await;
    };
    match tokio::time::timeout(args.drain, drained).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!(
            websockets = forwarder.relays().count(),
            "drain period over; closing the remaining connections"
        ),
    }
    admin_task.abort();
    log.close();
    Ok(())
}

/// Accepts connections and serves them until `shutdown` resolves; the listener is closed on return.
async fn accept_until(
    listener: TcpListener,
    forwarder: &Arc<Forwarder>,
    graceful: &GracefulShutdown,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A timer lets hyper bound how long a client may take to send a request head; this one reuses its tokio timers
    // from one request to the next (see [`timer`]).
    builder.http1().timer(timer::ReusingTimer::default());
    // No `date` of our own on HTTP/2 answers: a gRPC status-only answer carries its headers to the app as
    // trailing metadata, which must be the server's alone.
    builder.http2().timer(TokioTimer::new()).auto_date_header(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Typically EMFILE; a pause keeps the loop from spinning while descriptors are short.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Small request and response heads must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let forwarder = Arc::clone(forwarder);
        let conn = Arc::new(ClientConn::new(peer.ip()));
        let service = service_fn(move |request| {
            let forwarder = Arc::clone(&forwarder);
            let conn = Arc::clone(&conn);
            async move { Ok::<_, std::convert::Infallible>(forwarder.handle(request, &conn).await) }
        });
        // With upgrades: a WebSocket handshake hands the connection over to the relay after the 101.
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "client connection ended with an error");
            }
        });
    }
}
