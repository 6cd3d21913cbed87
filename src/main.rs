//! The `entourage` binary: one static binary for every role. `main` parses the command line and dispatches to
//! the program the subcommand names; each program owns its flags (`<program>::cli`).
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use entourage::{adapter, ambassador, certs, doctor, follow, offline, streamer, webhook};

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
    log_format: webhook::cli::LogFormat,
    /// Log filter (`info`, `debug`, `entourage=debug`…).
    #[arg(long, global = true, env = "ENTOURAGE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(webhook::cli::ServeArgs),
    /// Write a development CA and serving certificate.
    Certs(certs::cli::CertsArgs),
    /// Follow a log file and write one JSON object per line (the adapter container).
    Adapt(adapter::AdaptArgs),
    /// Follow a log file and write its bytes to stdout, like `tail -F` (the sidecar container).
    Stream(streamer::StreamArgs),
    /// Exit 0 once the reader saving its position at --position has prepared its log file (its startup probe).
    Started(follow::StartedArgs),
    /// Proxy a loopback port to an upstream service (the ambassador container).
    Ambassador(ambassador::AmbassadorArgs),
    /// Inject into manifests offline: Pods and the Pod templates of workloads, multi-document YAML in and out.
    Inject(offline::cli::InjectArgs),
    /// Answer an AdmissionReview as the webhook would; print the answer, the patch and the patched object.
    Review(offline::cli::ReviewArgs),
    /// Check an installed entourage through the API server: one line per finding; exit 0 ok, 1 failed, 2 unable.
    Doctor(doctor::DoctorArgs),
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
    // The startup probe of every native log reader, run by the kubelet each second until it passes: no runtime.
    if let Command::Started(args) = &cli.command {
        if let Err(why) = follow::started(&args.position) {
            eprintln!("{why}");
            std::process::exit(1);
        }
        return Ok(());
    }
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
        Command::Serve(args) => Ok(webhook::cli::cmd(args, cli.log_format, &cli.log_level).await?),
        Command::Certs(args) => Ok(certs::cli::cmd(args)?),
        // The adapter writes its own errors to stderr as JSON (its stdout is a log stream): exit without a
        // second, plain-text copy.
        Command::Adapt(args) => match adapter::run(args).await {
            Ok(()) => Ok(()),
            Err(_) => std::process::exit(1),
        },
        Command::Stream(args) => match streamer::run(args).await {
            Ok(()) => Ok(()),
            Err(_) => std::process::exit(1),
        },
        Command::Started(_) => Ok(()),
        Command::Ambassador(args) => Ok(ambassador::run(args).await?),
        Command::Inject(args) => Ok(offline::cli::inject(args)?),
        Command::Review(args) => Ok(offline::cli::review(args)?),
        Command::Doctor(args) => std::process::exit(doctor::cmd(args).await),
    }
}
