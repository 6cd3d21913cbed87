//! The adapter runtime (`entourage adapt`): follows a log file with the shared follower ([`crate::follow`]) and
//! writes one JSON object per line on stdout.
//!
//! The app writes plain-text logs to a file on an emptyDir shared with the adapter container; the adapter turns
//! each line into one object so that the node's log collector gets structured logs without touching the app.
//!
//! - `formats`: the pure core, one line in, one object out ([`render_line`]); also what the webhook uses to
//!   validate a format annotation ([`Format`]'s `FromStr`).
//! - `sink`: complete lines from the follower in, objects out (partial lines, long lines).
//! - `records`: lines to records: the format, multiline grouping (`multiline`), the record's shape (`keys`: time
//!   key, renames, levels) and its time (`timefmt`).
//! - `output`: the per-line context and JSON writing.

mod formats;
mod keys;
mod multiline;
mod output;
mod records;
mod sink;
mod timefmt;

pub use formats::{render_line, Format, FormatError, FORMAT_NAMES};
pub use output::{LineContext, MAX_LINE};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::follow::{FollowArgs, FollowError};

/// Command-line arguments of `entourage adapt`.
#[derive(Debug, Clone, clap::Args)]
pub struct AdaptArgs {
    /// What to follow, and how (shared with `entourage stream`).
    #[command(flatten)]
    pub follow: FollowArgs,
    /// The line format (`nginx`, `apache-combined`, `apache-common`, `syslog`, `logfmt`, `json`, `plain`, `regex:<pattern>`).
    #[arg(long, env = "ENTOURAGE_ADAPT_FORMAT", default_value = "plain")]
    pub format: String,
    /// A static field added to every object, as `key=value` (repeatable).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// Grouping, time and keys.
    #[command(flatten)]
    pub records: records::RecordArgs,
}

/// Errors of the adapter runtime.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// `--format` is not a known format.
    #[error("invalid --format: {0}")]
    Format(#[from] FormatError),
    /// A `--field` is not `key=value`, or its key is one the format writes itself.
    #[error("invalid --field {field:?}: {reason}")]
    Field {
        /// The argument as given.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// A grouping, time or key flag breaks its rule.
    #[error("invalid {flag} {value:?}: {reason}")]
    Record {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// Following the file failed.
    #[error(transparent)]
    Follow(#[from] FollowError),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// The follower thread ended abnormally.
    #[error("the follower thread failed: {0}")]
    Follower(String),
}

/// Runs the adapter until SIGTERM or SIGINT (then for `--drain-period`, then to the end of the file; exit status
/// 0), or with `--exit-at-eof` until the end of the file. A fatal error is also logged to stderr as one JSON object.
pub async fn run(args: AdaptArgs) -> Result<(), AdaptError> {
    let result = run_inner(args).await;
    if let Err(e) = &result {
        crate::follow::event::log("error", &e.to_string(), &[]);
    }
    result
}

/// What the flags ask for, every value checked.
struct Checked {
    format: Format,
    fields: Vec<(String, String)>,
    options: records::RecordOptions,
    zone: chrono_tz::Tz,
}

impl AdaptArgs {
    /// Checks every value the way [`run`] does before it opens anything: what passes here starts. The webhook's
    /// tests walk every adapter it injects through this, after the binary's own flag parser.
    pub fn check(&self) -> Result<(), AdaptError> {
        self.checked().map(drop)
    }

    fn checked(&self) -> Result<Checked, AdaptError> {
        let format: Format = self.format.parse()?;
        let fields = parse_fields(&self.fields, &format)?;
        let field_keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        let (options, zone) = self.records.parse(&format, &field_keys)?;
        Ok(Checked {
            format,
            fields,
            options,
            zone,
        })
    }
}

async fn run_inner(args: AdaptArgs) -> Result<(), AdaptError> {
    let Checked {
        format,
        fields,
        options,
        zone,
    } = args.checked()?;
    let mut ctx = LineContext::new(&args.follow.file.display().to_string(), &fields);
    ctx.set_zone(zone);
    let shutdown = crate::support::shutdown::shutdown_signal().map_err(AdaptError::Signal)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut follower = {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || {
            let mut sink = sink::JsonSink::new(format, options, ctx, std::io::stdout().lock());
            crate::follow::follow(&args.follow, &stop, &mut sink)
        })
    };
    let joined = tokio::select! {
        joined = &mut follower => joined,
        _ = shutdown => { stop.store(true, Ordering::Relaxed); follower.await }
    };
    Ok(joined.map_err(|e| AdaptError::Follower(e.to_string()))??)
}

/// The `--field` flags, by the grammar the webhook checks `entourage.dev/adapter-fields` with
/// ([`crate::core::logformat::parse_fields`]): a key the format writes itself is refused rather than silently
/// shadowed.
fn parse_fields(fields: &[String], format: &Format) -> Result<Vec<(String, String)>, AdaptError> {
    let (parsed, refused) = crate::core::logformat::parse_fields(fields.iter().map(String::as_str), format);
    match refused.first() {
        None => Ok(parsed),
        Some(first) => Err(AdaptError::Field {
            field: fields[first.pair].clone(),
            reason: format!("{:?} {}", first.value, first.rule),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(args: &[&str], format: &str) -> Result<Vec<(String, String)>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_fields(&args, &format.parse().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn static_fields_are_split_at_the_first_equals_sign() {
        assert_eq!(
            fields(&["app=shop", "expr=a=b", "empty="], "nginx").unwrap(),
            [
                ("app".into(), "shop".into()),
                ("expr".into(), "a=b".into()),
                ("empty".into(), String::new())
            ]
        );
    }

    #[test]
    fn static_field_that_the_format_writes_is_refused() {
        assert_eq!(
            fields(&["status=ok"], "nginx").unwrap_err(),
            "invalid --field \"status=ok\": \"status\" is a key the nginx format writes; two keys would collide"
        );
        assert!(fields(&["file=x"], "json").is_err());
        assert!(fields(&["level=x"], "regex:(?P<level>\\w+)").is_err());
        assert!(fields(&["level=x"], "logfmt").is_ok());
    }

    #[test]
    fn malformed_static_fields_are_refused() {
        assert!(fields(&["novalue"], "plain").unwrap_err().contains("is not key=value"));
        assert!(fields(&["=v"], "plain").unwrap_err().contains("is not a field name"));
        assert!(fields(&["a=1", "a=2"], "plain").unwrap_err().contains("given twice"));
    }
}
