//! The `entourage` binary: one static binary for every role.
use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "entourage", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow a log file and write one JSON object per line (the adapter container).
    Adapt(entourage::adapt::AdaptArgs),
    /// Proxy a loopback port to an upstream service (the ambassador container).
    Ambassador(entourage::proxy::AmbassadorArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Adapt(args) => entourage::adapt::run(args).await?,
        Command::Ambassador(args) => entourage::proxy::run(args).await?,
    }
    Ok(())
}
