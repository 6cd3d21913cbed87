//! `entourage inject` and `entourage review`: their flags and the commands.

use std::{
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
};

use crate::core::config::Config;

use super::OfflineError;

/// Flags of `entourage inject`.
#[derive(clap::Args)]
pub struct InjectArgs {
    /// The manifests (YAML, several documents allowed); `-` for stdin.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,
    /// Config file (YAML); the built-in default when absent.
    #[arg(long, env = "ENTOURAGE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Flags of `entourage review`.
#[derive(clap::Args)]
pub struct ReviewArgs {
    /// The AdmissionReview (JSON or YAML); `-` for stdin.
    #[arg(default_value = "-")]
    pub file: PathBuf,
    /// Config file (YAML); the built-in default when absent.
    #[arg(long, env = "ENTOURAGE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Why an offline command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A file (or stdin) could not be read.
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] crate::core::config::ConfigError),
    /// The input could not be injected or reviewed.
    #[error(transparent)]
    Offline(#[from] OfflineError),
    /// Standard output could not be written (a closed pipe is not an error: see [`print_out`]).
    #[error("writing to standard output: {0}")]
    Write(std::io::Error),
}

/// Prints the injected manifests on stdout, warnings on stderr.
pub fn inject(args: InjectArgs) -> Result<(), CommandError> {
    let config = load_config(args.config.as_deref())?;
    let injected = super::inject(&read_input(&args.file)?, &config)?;
    for warning in &injected.warnings {
        eprintln!("warning: {warning}");
    }
    print_out(&injected.to_yaml())
}

/// Prints the webhook's answer, the patch and the patched object.
pub fn review(args: ReviewArgs) -> Result<(), CommandError> {
    let config = load_config(args.config.as_deref())?;
    let answer = super::review(&read_input(&args.file)?, &config)?;
    let mut text = serde_json::to_string_pretty(&answer).expect("JSON values always serialise");
    text.push('\n');
    print_out(&text)
}

/// Writes `text` to standard output. A reader that stops reading (`entourage review … | head`) closes the pipe, and
/// the rest of the output is dropped quietly, as Unix tools do; `print!` would panic there.
fn print_out(text: &str) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        written => written.map_err(CommandError::Write),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, CommandError> {
    match path {
        Some(path) => Ok(crate::core::mutate::load_config(
            &read_input(path)?,
            &path.display().to_string(),
        )?),
        None => Ok(Config::default()),
    }
}

/// The file's text, or stdin's for `-`.
fn read_input(path: &Path) -> Result<String, CommandError> {
    let read = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| CommandError::Read(path.display().to_string(), e))
}
