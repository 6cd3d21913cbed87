//! The `entourage` binary: one static binary for every role. `main` parses flags, starts tracing and runs.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use entourage::{
    certs, core::config::Config, offline, webhook::cabundle, webhook::jsonlog, webhook::logsink::LogSink,
    webhook::reload, webhook::server, webhook::tls,
};

/// mimalloc: allocation is about a third of a review's CPU, and the static musl image's own allocator is slow.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Adapt(entourage::adapter::AdaptArgs),
    /// Proxy a loopback port to an upstream service (the ambassador container).
    Ambassador(entourage::ambassador::AmbassadorArgs),
    /// Inject into manifests offline: Pods and the Pod templates of workloads, multi-document YAML in and out.
    Inject(InjectArgs),
    /// Answer an AdmissionReview as the webhook would; print the answer, the patch and the patched object.
    Review(ReviewArgs),
}

#[derive(clap::Args)]
struct InjectArgs {
    /// The manifests (YAML, several documents allowed); `-` for stdin.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    file: PathBuf,
    /// Config file (YAML); the built-in default when absent.
    #[arg(long, env = "ENTOURAGE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReviewArgs {
    /// The AdmissionReview (JSON or YAML); `-` for stdin.
    #[arg(default_value = "-")]
    file: PathBuf,
    /// Config file (YAML); the built-in default when absent.
    #[arg(long, env = "ENTOURAGE_CONFIG")]
    config: Option<PathBuf>,
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
    /// How often the certificate, key and config files are re-read (`5s`, `500ms`; `0s` never).
    #[arg(long, env = "ENTOURAGE_RELOAD_INTERVAL", default_value = "5s", value_parser = entourage::support::duration::parse_duration)]
    reload_interval: Duration,
    /// At start, write the CA (`--ca-bundle-file`) into every webhook of this MutatingWebhookConfiguration.
    #[arg(long, env = "ENTOURAGE_PATCH_CA_BUNDLE", requires = "ca_bundle_file")]
    patch_ca_bundle: Option<String>,
    /// The CA that signed the serving certificate (PEM), for `--patch-ca-bundle`.
    #[arg(long, env = "ENTOURAGE_CA_BUNDLE_FILE")]
    ca_bundle_file: Option<PathBuf>,
    /// Check the flags, config, certificate and CA bundle, print `ok` and exit without serving.
    #[arg(long)]
    check: bool,
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

/// The webhook's log lines, batched (see `entourage::webhook::logsink`).
static LOGS: OnceLock<LogSink> = OnceLock::new();

/// The longest a log line waits in memory before it is written.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(100);

fn flush_logs() {
    if let Some(logs) = LOGS.get() {
        logs.flush();
    }
}

fn init_tracing(format: LogFormat, level: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?;
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

/// Transparent huge pages off for this process. A 2 MiB huge page is resident whole as soon as one byte of it is
/// touched, and every entourage process is small: with them, the adapter idled in 17 MiB, over the 16Mi its
/// container requests (6 MiB without), the ambassador in 16 (7), the webhook in 19 (8.5). mimalloc is built not
/// to ask for them (its `no_thp` feature); this keeps the kernel from using them where the node's THP mode is
/// `always`. It covers memory already mapped, but not pages the runtime touched before `main`: alone, it left
/// 4 MiB of huge pages.
fn without_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE sets one flag on this process and reads no memory; an error (a kernel without
    // it) leaves things as they were.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> Result<()> {
    without_huge_pages();
    let cli = Cli::parse();
    // The ambassador is a sidecar: it relays for one app, usually under a CPU limit well below one core, so it
    // runs every task on one thread (as linkerd2-proxy does by default), with no work stealing or cross-thread
    // wake-ups. The webhook, whose reviews are independent, uses every core it is given.
    let runtime = match cli.command {
        Command::Ambassador(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_tracing(cli.log_format, &cli.log_level)?;
            let result = serve(args).await;
            flush_logs();
            result
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
        Command::Adapt(args) => match entourage::adapter::run(args).await {
            Ok(()) => Ok(()),
            Err(_) => std::process::exit(1),
        },
        Command::Ambassador(args) => Ok(entourage::ambassador::run(args).await?),
        Command::Inject(args) => {
            let config = load_config(args.config.as_deref())?;
            let injected = offline::inject(&read_input(&args.file)?, &config)?;
            for warning in &injected.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", injected.to_yaml());
            Ok(())
        }
        Command::Review(args) => {
            let config = load_config(args.config.as_deref())?;
            let answer = offline::review(&read_input(&args.file)?, &config)?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
            Config::from_yaml(&text, &path.display().to_string())?
        }
        None => Config::default(),
    })
}

/// The file's text, or stdin's for `-`.
fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let shutdown = server::shutdown_signal();
    let config = load_config(args.config.as_deref())?;
    let certs = Arc::new(
        tls::CertStore::load(&args.tls_cert, &args.tls_key)
            .context("loading the serving certificate (run `make certs` for development ones)")?,
    );
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
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, config = ?args.config, "serving admission reviews on https://{}/mutate", listener.local_addr()?);
    let options = server::ServeOptions {
        header_timeout: Duration::from_secs(args.header_timeout),
        grace_period: Duration::from_secs(args.grace_period),
        max_connections: args.max_connections,
        ..server::ServeOptions::default()
    };
    if let (Some(name), Some(ca)) = (args.patch_ca_bundle, ca_bundle) {
        cabundle::spawn_patcher(name, ca);
    }
    if !args.reload_interval.is_zero() {
        let options = reload::WatchOptions {
            interval: args.reload_interval,
            config_path: args.config.clone(),
        };
        reload::spawn(state.clone(), options);
    }
    let app = server::router(state.clone());
    server::serve_tls(listener, tls_config, app, state, options, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}
