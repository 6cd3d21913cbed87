//! The `entourage` binary: one static binary for every role. `main` parses flags, starts tracing and runs.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use entourage::{certs, config::Config, server, tls};

#[derive(Parser)]
#[command(
    name = "entourage",
    version,
    about = "Sidecars, adapters and ambassadors for annotated Pods; safe defaults for Jobs"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ENTOURAGE_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    log_format: LogFormat,
    /// Log filter (`info`, `debug`, `entourage=debug`…).
    #[arg(long, global = true, env = "ENTOURAGE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Write a development CA and serving certificate.
    Certs(CertsArgs),
    /// Follow a log file and write one JSON object per line (the adapter container).
    Adapt(entourage::adapt::AdaptArgs),
    /// Proxy a loopback port to an upstream service (the ambassador container).
    Ambassador(entourage::proxy::AmbassadorArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ENTOURAGE_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Serving certificate (PEM).
    #[arg(long, env = "ENTOURAGE_TLS_CERT", default_value = "certs/tls.crt")]
    tls_cert: PathBuf,
    /// Serving key (PEM).
    #[arg(long, env = "ENTOURAGE_TLS_KEY", default_value = "certs/tls.key")]
    tls_key: PathBuf,
    /// Config file (YAML); the built-in default when absent.
    #[arg(long, env = "ENTOURAGE_CONFIG")]
    config: Option<PathBuf>,
    /// Require client certificates signed by this CA (the apiserver's).
    #[arg(long, env = "ENTOURAGE_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "ENTOURAGE_GRACE_PERIOD", default_value_t = 10)]
    grace_period: u64,
    /// Seconds a client has to send request headers (idle keep-alive connections close after this too).
    #[arg(long, env = "ENTOURAGE_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Most simultaneous connections.
    #[arg(long, env = "ENTOURAGE_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Directory to write `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into.
    #[arg(long, env = "ENTOURAGE_CERTS_OUT", default_value = "certs")]
    out: PathBuf,
    /// The webhook's Service name.
    #[arg(long, env = "ENTOURAGE_SERVICE", default_value = "entourage")]
    service: String,
    /// The webhook's namespace.
    #[arg(long, env = "ENTOURAGE_NAMESPACE", default_value = "entourage-system")]
    namespace: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: i64,
}

fn init_tracing(format: LogFormat, level: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?;
    // Colours only for a person at a terminal; a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(cli.log_format, &cli.log_level)?;
            serve(args).await
        }
        Command::Certs(args) => {
            let generated = certs::generate(&args.service, &args.namespace, args.days)?;
            certs::write_dev_certs(&args.out, &generated)?;
            println!(
                "wrote {}/{{ca.crt,ca.key,tls.crt,tls.key}} for {}.{}.svc",
                args.out.display(),
                args.service,
                args.namespace
            );
            Ok(())
        }
        // The adapter writes its own errors to stderr as JSON (its stdout is a log stream): exit without a
        // second, plain-text copy.
        Command::Adapt(args) => match entourage::adapt::run(args).await {
            Ok(()) => Ok(()),
            Err(_) => std::process::exit(1),
        },
        Command::Ambassador(args) => Ok(entourage::proxy::run(args).await?),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let shutdown = server::shutdown_signal();
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let certs = Arc::new(
        tls::CertStore::load(&args.tls_cert, &args.tls_key)
            .context("loading the serving certificate (run `make certs` for development ones)")?,
    );
    let tls_config = tls::server_config(certs.clone(), args.client_ca.as_deref())?;
    let state = server::AppState::new(config, Some(certs));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, config = ?args.config, "serving admission reviews on https://{}/mutate", listener.local_addr()?);
    let options = server::ServeOptions {
        header_timeout: Duration::from_secs(args.header_timeout),
        grace_period: Duration::from_secs(args.grace_period),
        max_connections: args.max_connections,
        ..server::ServeOptions::default()
    };
    let app = server::router(state.clone());
    server::serve_tls(listener, tls_config, app, state, options, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}
