//! The grammar of `entourage.dev/adapter-format`: the webhook validates the annotation with it and the adapter
//! (`entourage adapt --format`) parses its flag with it, so the two can never disagree.

use std::fmt;
use std::str::FromStr;

/// Keys the adapter writes itself (`truncated` on a grouped record cut at the size cap): a static `--field`
/// (`entourage.dev/adapter-fields`) or a rename must not use them.
pub const RESERVED_KEYS: &[&str] = &["time", "file", "message", "parse_error", TRUNCATED_KEY];

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

/// Every key the `nginx`, `apache-combined` and `apache-common` formats may write.
pub const CLF_KEYS: &[&str] = &[
    "time",
    "remote_addr",
    "ident",
    "remote_user",
    "method",
    "path",
    "protocol",
    "request",
    "status",
    "bytes",
    "referer",
    "user_agent",
    "extra",
];

/// Every key the `syslog` format may write.
pub const SYSLOG_KEYS: &[&str] = &[
    "time",
    "priority",
    "facility",
    "severity",
    "hostname",
    "app_name",
    "procid",
    "msgid",
    "structured_data",
    "message",
];

impl Format {
    /// The keys this format may write for a line, when they are known before reading any line; `None` for formats
    /// whose keys come from the line itself (`json`, `logfmt`: there the line's own key wins over an extra field).
    pub fn keys(&self) -> Option<Vec<&str>> {
        match self {
            Format::Nginx | Format::ApacheCombined | Format::ApacheCommon => Some(CLF_KEYS.to_vec()),
            Format::Syslog => Some(SYSLOG_KEYS.to_vec()),
            Format::Plain => Some(vec!["time", "message"]),
            Format::Regex(re) => Some(std::iter::once("time").chain(re.capture_names().flatten()).collect()),
            Format::Logfmt | Format::Json => None,
        }
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

/// The multiline presets, as accepted by [`Multiline::from_str`] (the last one is a pattern).
pub const MULTILINE_NAMES: &[&str] = &["java", "python", "go", "regex:<first-line pattern>"];

/// How the adapter groups the lines of one event (a stack trace, a goroutine dump) into one record
/// (`entourage.dev/adapter-multiline`, `entourage adapt --multiline`).
#[derive(Debug, Clone)]
pub enum Multiline {
    /// A logging framework's message line, then `Exception: …`, `\tat …`, `Caused by: …`, `\t... N more` and
    /// `Suppressed:` blocks.
    Java,
    /// A message line, then `Traceback (most recent call last):` through the final exception line, chained
    /// tracebacks (`During handling of the above exception…`, `The above exception was the direct cause…`) included.
    Python,
    /// `panic: …` / `fatal error: …` and every goroutine dump after it; a dump (`goroutine N [running]:`, as
    /// `runtime/debug.Stack` prints it) joins the message line before it.
    Go,
    /// A line that matches the pattern starts a record; any other line continues the record before it.
    Regex(regex::Regex),
}

/// Why a multiline value was refused.
#[derive(Debug, thiserror::Error)]
pub enum MultilineError {
    /// Not one of [`MULTILINE_NAMES`].
    #[error("unknown multiline preset {0:?}; known presets: {known}", known = MULTILINE_NAMES.join(", "))]
    Unknown(String),
    /// The pattern of `regex:<pattern>` does not compile.
    #[error("invalid regex: {0}")]
    InvalidRegex(#[from] regex::Error),
}

impl FromStr for Multiline {
    type Err = MultilineError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "java" => Multiline::Java,
            "python" => Multiline::Python,
            "go" => Multiline::Go,
            _ => match name.strip_prefix("regex:") {
                Some(pattern) => Multiline::Regex(regex::Regex::new(pattern)?),
                None => return Err(MultilineError::Unknown(name.to_owned())),
            },
        })
    }
}

impl fmt::Display for Multiline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Multiline::Java => f.write_str("java"),
            Multiline::Python => f.write_str("python"),
            Multiline::Go => f.write_str("go"),
            Multiline::Regex(re) => write!(f, "regex:{}", re.as_str()),
        }
    }
}

/// The key a record cut at the multiline size cap carries (`"truncated":true`).
pub const TRUNCATED_KEY: &str = "truncated";

/// The time key when `entourage.dev/adapter-time-key` is not set.
pub const DEFAULT_TIME_KEY: &str = "time";

/// Why a key (`adapter-time-key`, either side of an `adapter-rename` pair) was refused; the text follows the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty, too long, or with a character log backends treat specially.
    #[error("is not a key (1-63 letters, digits, _ . - @, not starting with . or -)")]
    Shape,
    /// A key the adapter writes itself.
    #[error("is a key the adapter writes itself ({})", RESERVED_KEYS.join(", "))]
    Reserved,
}

/// The shape every key the adapter is told to write must have: plain enough for every backend's field names
/// (Elasticsearch's `@timestamp`, GCP's `severity`, Datadog's `msg`) and never in need of JSON escaping.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    let shape = !key.is_empty()
        && key.len() <= 63
        && !key.starts_with(['.', '-'])
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'));
    if shape {
        Ok(())
    } else {
        Err(KeyError::Shape)
    }
}

/// Parses the time key: `time` itself, or any key the adapter does not write for something else.
pub fn parse_time_key(key: &str) -> Result<String, KeyError> {
    check_key(key)?;
    if key != DEFAULT_TIME_KEY && RESERVED_KEYS.contains(&key) {
        return Err(KeyError::Reserved);
    }
    Ok(key.to_owned())
}

/// Checks the time key against the other keys of a record: those the format writes and the static fields.
pub fn check_time_key_collisions(key: &str, format: &Format, static_fields: &[&str]) -> Result<(), String> {
    if key != DEFAULT_TIME_KEY && format.keys().unwrap_or_default().contains(&key) {
        return Err(format!("is a key the {format} format writes; two keys would collide"));
    }
    if static_fields.contains(&key) {
        return Err("is also a static field (entourage.dev/adapter-fields); two keys would collide".into());
    }
    Ok(())
}

/// The longest value of a static field.
pub const MAX_FIELD_VALUE: usize = 256;

/// One refused static field: the part at fault (the pair, its key or its value) and the rule, phrased to follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Which pair, counting from 0.
    pub pair: usize,
    /// The pair, key or value as written.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

/// Parses static fields, each `key=value` (`entourage.dev/adapter-fields` split at its commas, `entourage adapt
/// --field` one per flag): the one grammar both check, so a field the webhook admits never stops the adapter at
/// start. Key and value are trimmed. A key must be a field name, and not a key the adapter writes itself nor one
/// `format` writes (two keys of one object would collide); `json` and `logfmt` take their keys from each line,
/// where the line's own key wins. Returns the fields that pass and every refused one.
pub fn parse_fields<'a>(
    pairs: impl IntoIterator<Item = &'a str>,
    format: &Format,
) -> (Vec<(String, String)>, Vec<FieldError>) {
    let format_keys = format.keys().unwrap_or_default();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    for (i, pair) in pairs.into_iter().enumerate() {
        let mut refuse = |value: &str, rule: String| {
            errors.push(FieldError {
                pair: i,
                value: value.to_owned(),
                rule,
            })
        };
        let Some((k, v)) = pair.split_once('=') else {
            refuse(pair.trim(), "is not key=value".into());
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let key_ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && k.len() <= 63;
        if !key_ok {
            refuse(k, "is not a field name (letters, digits, _ . -; at most 63)".into());
        } else if RESERVED_KEYS.contains(&k) {
            refuse(
                k,
                format!("is a field the adapter writes itself ({})", RESERVED_KEYS.join(", ")),
            );
        } else if format_keys.contains(&k) {
            refuse(
                k,
                format!("is a key the {format} format writes; two keys would collide"),
            );
        } else if fields.iter().any(|(existing, _)| existing == k) {
            refuse(k, "is given twice".into());
        } else if v.chars().any(char::is_control) || v.len() > MAX_FIELD_VALUE {
            refuse(
                v,
                format!("must be at most {MAX_FIELD_VALUE} characters without control characters"),
            );
        } else {
            fields.push((k.to_owned(), v.to_owned()));
        }
    }
    (fields, errors)
}

/// One refused pair of `adapter-rename`: the pair (or key) and the rule, phrased to follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameError {
    /// The pair or key as written.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

/// Parses `from=to,from=to` (`entourage.dev/adapter-rename`, `entourage adapt --rename`): each key a record may
/// have is written under its new name. Every refused pair is reported. A target may not be a key the adapter
/// writes (the time key included: `adapter-time-key` names it), a key the format writes, a static field, or
/// another pair's key, since two keys of one object would then collide; `time` is renamed with `adapter-time-key`,
/// not here.
pub fn parse_renames(
    value: &str,
    time_key: &str,
    static_fields: &[&str],
    format: &Format,
) -> Result<Vec<(String, String)>, Vec<RenameError>> {
    let format_keys = format.keys().unwrap_or_default();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    let mut refuse = |value: &str, rule: String| {
        errors.push(RenameError {
            value: value.to_owned(),
            rule,
        })
    };
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((from, to)) = pair.split_once('=').map(|(f, t)| (f.trim(), t.trim())) else {
            refuse(pair, "is not from=to".into());
            continue;
        };
        if let Err(e) = check_key(from).and(check_key(to)) {
            refuse(pair, e.to_string());
        } else if from == DEFAULT_TIME_KEY || from == time_key {
            refuse(
                pair,
                "renames the time key; set entourage.dev/adapter-time-key instead".into(),
            );
        } else if to == time_key {
            refuse(
                to,
                "is the time key (entourage.dev/adapter-time-key); two keys would collide".into(),
            );
        } else if RESERVED_KEYS.contains(&to) {
            refuse(to, KeyError::Reserved.to_string());
        } else if format_keys.contains(&to) {
            refuse(
                to,
                format!("is a key the {format} format writes; two keys would collide"),
            );
        } else if static_fields.contains(&to) {
            refuse(
                to,
                "is a static field of entourage.dev/adapter-fields; two keys would collide".into(),
            );
        } else if from == to {
            refuse(pair, "renames a key to itself".into());
        } else if pairs.iter().any(|(f, _)| f == from) {
            refuse(from, "is renamed twice".into());
        } else if pairs.iter().any(|(_, t)| t == to) {
            refuse(to, "is the target of two renames; two keys would collide".into());
        } else if pairs.iter().any(|(f, t)| f == to || t == from) {
            refuse(
                pair,
                "chains with another rename; rename each key once, to its final name".into(),
            );
        } else {
            pairs.push((from.to_owned(), to.to_owned()));
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(errors)
    }
}

/// What the adapter does with level values (`entourage.dev/adapter-level`, `entourage adapt --level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LevelMode {
    /// Written as the line has them.
    #[default]
    Keep,
    /// The usual spellings (`WARNING`, `E`, `err`, `CRITICAL`, syslog severities and numbers, pino's numbers)
    /// mapped to one vocabulary: `debug`, `info`, `warn`, `error`, `fatal`; anything else is kept as written.
    Normalize,
}

/// The values [`LevelMode::from_str`] accepts.
pub const LEVEL_MODES: &[&str] = &["keep", "normalize"];

impl FromStr for LevelMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(LevelMode::Keep),
            "normalize" => Ok(LevelMode::Normalize),
            _ => Err(format!("is not one of {}", LEVEL_MODES.join(", "))),
        }
    }
}

impl fmt::Display for LevelMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LevelMode::Keep => "keep",
            LevelMode::Normalize => "normalize",
        })
    }
}

/// Parses the zone in which source times without an offset are read (config `adapter.timeZone`, `entourage
/// adapt --time-zone`): an IANA name such as `Europe/Paris`, or `UTC`.
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone name such as \"Europe/Paris\" or \"UTC\""))
}

/// Parses the multiline quiet period (config `adapter.multilineFlushAfter`, `entourage adapt
/// --multiline-flush-after`): 10ms to 1m. Zero would cut every trace at each read; past a minute a crashed app's
/// last exception would wait too long to reach the backend.
pub fn parse_flush_after(text: &str) -> Result<std::time::Duration, String> {
    let d = crate::support::duration::parse_duration(text)?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(60) {
        return Err(format!("{text:?} is outside 10ms..1m"));
    }
    Ok(d)
}
