//! `entourage inject` and `entourage review`: their flags and the commands.

use std::path::{Path, PathBuf};

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
}

/// Prints the injected manifests on stdout, warnings on stderr.
pub fn inject(args: InjectArgs) -> Result<(), CommandError> {
    let config = load_config(args.config.as_deref())?;
    let injected = super::inject(&read_input(&args.file)?, &config)?;
    for warning in &injected.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", injected.to_yaml());
    Ok(())
}

/// Prints the webhook's answer, the patch and the patched object.
pub fn review(args: ReviewArgs) -> Result<(), CommandError> {
    let config = load_config(args.config.as_deref())?;
    let answer = super::review(&read_input(&args.file)?, &config)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).expect("JSON values always serialise")
    );
    Ok(())
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
