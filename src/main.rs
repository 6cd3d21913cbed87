//! The `entourage` binary: one static binary for every role. `main` parses the command line ([`Cli`]) and
//! dispatches to the program the subcommand names; each program owns its flags (`<program>::cli`).
use anyhow::{Context, Result};
use clap::Parser;
use entourage::cli::{Cli, Command};
use entourage::{adapter, ambassador, certs, doctor, follow, offline, streamer, watchdog, webhook};

/// mimalloc: allocation is about a third of a review's CPU, and the static musl image's own allocator is slow.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Certs(args) => Ok(certs::cli::cmd(args).await?),
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
        Command::Watchdog(args) => Ok(watchdog::run(args).await?),
    }
}
