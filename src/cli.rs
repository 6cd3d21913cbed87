//! The command line of the one binary: global flags and one subcommand per program, each program owning its flags.
//! `src/main.rs` parses it and dispatches; tests parse the argv the webhook injects with it, as the container would.

use clap::{Parser, Subcommand};

use crate::{adapter, ambassador, certs, doctor, follow, offline, streamer, watchdog, webhook};

/// The command line of the `entourage` binary.
#[derive(Parser)]
#[command(
    name = "entourage",
    version,
    about = "Sidecars, adapters and ambassadors for annotated Pods; safe defaults for Jobs"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ENTOURAGE_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: webhook::cli::LogFormat,
    /// Log filter (`info`, `debug`, `entourage=debug`…).
    #[arg(long, global = true, env = "ENTOURAGE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    // The subcommand; a doc comment here would become help text.
    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,
}

/// The programs of the binary, one per subcommand.
#[derive(Subcommand)]
pub enum Command {
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
    /// Recreate, at a bounded rate, controllers' Pods admitted without the entourage they ask for (opt-in; runs
    /// beside the webhook).
    Watchdog(watchdog::WatchdogArgs),
}
