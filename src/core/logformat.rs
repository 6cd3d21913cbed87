//! The grammar of `entourage.dev/adapter-format`: the webhook validates the annotation with it and the adapter
//! (`entourage adapt --format`) parses its flag with it, so the two can never disagree.

use std::fmt;
use std::str::FromStr;

/// Keys the adapter writes itself for every line: a static `--field` (`entourage.dev/adapter-fields`) must not
/// use them.
pub const RESERVED_KEYS: &[&str] = &["time", "file", "message", "parse_error"];

/// The names of the formats, as accepted by [`Format::from_str`] (the last one is a pattern).
pub const FORMAT_NAMES: &[&str] = &[
    "nginx",
    "apache-combined",
    "apache-common",
    "syslog",
    "logfmt",
    "json",
    "plain",
    "regex:<pattern>",
];

/// How the lines of a followed file are parsed.
#[derive(Debug, Clone)]
pub enum Format {
    /// nginx's default `combined` access log (`\xHH` escapes inside quoted fields).
    Nginx,
    /// Apache's combined log format (`\"` escapes inside quoted fields).
    ApacheCombined,
    /// Apache's common log format (combined without referer and user agent).
    ApacheCommon,
    /// Syslog lines, RFC 5424 or RFC 3164 (BSD), with or without the `<PRI>` prefix.
    Syslog,
    /// `key=value key2="quoted value"` pairs; a bare key becomes `true`.
    Logfmt,
    /// One JSON object per line, passed through with the extra fields merged in.
    Json,
    /// The whole line as `message`.
    Plain,
    /// A regular expression with named groups; each named group that matched becomes a string field.
    Regex(regex::Regex),
}

/// Why a format name was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The name is none of [`FORMAT_NAMES`].
    #[error("unknown format {0:?}; known formats: {known}", known = FORMAT_NAMES.join(", "))]
    Unknown(String),
    /// The pattern of `regex:<pattern>` does not compile.
    #[error("invalid regex: {0}")]
    InvalidRegex(#[from] regex::Error),
    /// The pattern of `regex:<pattern>` has no named group, so it would produce no field.
    #[error("regex has no named groups")]
    NoNamedGroups,
}

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "nginx" => Format::Nginx,
            "apache-combined" => Format::ApacheCombined,
            "apache-common" => Format::ApacheCommon,
            "syslog" => Format::Syslog,
            "logfmt" => Format::Logfmt,
            "json" => Format::Json,
            "plain" => Format::Plain,
            _ => match name.strip_prefix("regex:") {
                Some(pattern) => {
                    let re = regex::Regex::new(pattern)?;
                    if re.capture_names().all(|n| n.is_none()) {
                        return Err(FormatError::NoNamedGroups);
                    }
                    Format::Regex(re)
                }
                None => return Err(FormatError::Unknown(name.to_owned())),
            },
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Nginx => f.write_str("nginx"),
            Format::ApacheCombined => f.write_str("apache-combined"),
            Format::ApacheCommon => f.write_str("apache-common"),
            Format::Syslog => f.write_str("syslog"),
            Format::Logfmt => f.write_str("logfmt"),
            Format::Json => f.write_str("json"),
            Format::Plain => f.write_str("plain"),
            Format::Regex(re) => write!(f, "regex:{}", re.as_str()),
        }
    }
}
