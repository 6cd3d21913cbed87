//! The adapter runtime (`entourage adapt`): follows a log file like `tail -F` and writes one JSON object per line.
//! (Skeleton: being built in its own branch.)

use std::path::PathBuf;

/// Command-line arguments of `entourage adapt`.
#[derive(Debug, Clone, clap::Args)]
pub struct AdaptArgs {
    /// The log file to follow.
    #[arg(long, env = "ENTOURAGE_ADAPT_FILE")]
    pub file: PathBuf,
    /// The line format (`nginx`, `apache-combined`, `apache-common`, `syslog`, `logfmt`, `json`, `plain`, `regex:<pattern>`).
    #[arg(long, env = "ENTOURAGE_ADAPT_FORMAT", default_value = "plain")]
    pub format: String,
    /// A static field added to every object, as `key=value` (repeatable).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// Read the file from its start instead of from its end.
    #[arg(long)]
    pub from_start: bool,
}

/// Errors of the adapter runtime.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// Not built yet.
    #[error("the adapter runtime is not built yet")]
    NotBuilt,
}

/// Runs the adapter until SIGTERM.
pub async fn run(_args: AdaptArgs) -> Result<(), AdaptError> {
    Err(AdaptError::NotBuilt)
}
