//! Every `entourage.dev/adapter-*` annotation of a Pod, parsed in one place into an [`AdapterRequest`]: the
//! files, the format, static fields, multiline grouping, time key, renames and level. Each value is checked by
//! the grammar `entourage adapt` parses the flag it becomes with (`crate::core::logformat`), so admission and
//! runtime never disagree. (`adapter-resources` is parsed with the other patterns' resources.)

use super::{
    err, parse_paths, AnnotationError, Lookup, ADAPTER_FIELDS, ADAPTER_FORMAT, ADAPTER_LEVEL, ADAPTER_LOGS,
    ADAPTER_MULTILINE, ADAPTER_RENAME, ADAPTER_TIME_KEY,
};
use crate::core::logformat::{
    check_time_key_collisions, parse_renames, parse_time_key, Format, LevelMode, Multiline, MultilineError,
    DEFAULT_TIME_KEY,
};

/// The adapter pattern's annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterRequest {
    /// Files to adapt.
    pub logs: Vec<String>,
    /// The validated format text, passed to `entourage adapt --format`.
    pub format: String,
    /// Static fields.
    pub fields: Vec<(String, String)>,
    /// The validated multiline preset, passed to `entourage adapt --multiline`.
    pub multiline: Option<String>,
    /// The time key, when not the default `time`.
    pub time_key: Option<String>,
    /// Validated `from=to` renames.
    pub renames: Vec<(String, String)>,
    /// Level normalisation.
    pub level: LevelMode,
}

/// The adapter's annotations: `None` when the Pod asks for no adapter (`adapter-logs` absent); then any other
/// `adapter-*` key is an error, because it would be ignored.
pub(super) fn parse(get: Lookup<'_>, errors: &mut Vec<AnnotationError>) -> Option<AdapterRequest> {
    let Some(v) = get.text(ADAPTER_LOGS) else {
        for orphan in [
            ADAPTER_FORMAT,
            ADAPTER_FIELDS,
            ADAPTER_MULTILINE,
            ADAPTER_TIME_KEY,
            ADAPTER_RENAME,
            ADAPTER_LEVEL,
        ] {
            if let Some(v) = get.text(orphan) {
                errors.push(err(
                    orphan,
                    v,
                    format!("needs {ADAPTER_LOGS} to name the files to adapt"),
                ));
            }
        }
        return None;
    };
    let logs = parse_paths(ADAPTER_LOGS, v, errors);
    let format = get.text(ADAPTER_FORMAT).unwrap_or("plain");
    if let Err(rule) = check_format(format) {
        errors.push(err(ADAPTER_FORMAT, format, rule));
    }
    let fields = get
        .text(ADAPTER_FIELDS)
        .map(|f| parse_fields(f, format, errors))
        .unwrap_or_default();
    let mut adapter = AdapterRequest {
        logs,
        format: format.to_string(),
        fields,
        multiline: None,
        time_key: None,
        renames: Vec::new(),
        level: LevelMode::Keep,
    };
    parse_adapter_output(get, &mut adapter, errors);
    Some(adapter)
}

/// The adapter runtime's own parser decides which formats exist, so admission and runtime never disagree.
fn check_format(format: &str) -> Result<(), String> {
    use crate::core::logformat::{FormatError, FORMAT_NAMES};
    match format.parse::<Format>() {
        Ok(_) => Ok(()),
        Err(FormatError::Unknown(_)) => Err(format!(
            "is not a known format; known formats: {}",
            FORMAT_NAMES.join(", ")
        )),
        // The regex crate's message draws a caret under the pattern; its last line says what is wrong.
        Err(FormatError::InvalidRegex(e)) => Err(format!(
            "is not a valid regex: {}",
            e.to_string().lines().last().unwrap_or_default().trim()
        )),
        Err(FormatError::NoNamedGroups) => Err("has no named groups such as (?P<status>\\d+)".into()),
    }
}

/// Static fields, by the grammar `entourage adapt --field` parses (`logformat::parse_fields`), against the format's
/// own keys as the adapter checks them; an invalid format is reported on its own, its keys are then unknown.
fn parse_fields(value: &str, format: &str, errors: &mut Vec<AnnotationError>) -> Vec<(String, String)> {
    let format = format.parse().unwrap_or(crate::core::logformat::Format::Json);
    let pairs = value.split(',').filter(|p| !p.trim().is_empty());
    let (fields, refused) = crate::core::logformat::parse_fields(pairs, &format);
    errors.extend(refused.into_iter().map(|e| err(ADAPTER_FIELDS, &e.value, e.rule)));
    fields
}

/// Multiline grouping, time key, renames and level: each value checked by the parser `entourage adapt` uses for
/// the flag it becomes, so admission and runtime never disagree.
fn parse_adapter_output(get: Lookup<'_>, adapter: &mut AdapterRequest, errors: &mut Vec<AnnotationError>) {
    if let Some(v) = get.text(ADAPTER_MULTILINE) {
        match v.parse::<Multiline>() {
            Ok(_) => adapter.multiline = Some(v.to_string()),
            Err(MultilineError::Unknown(_)) => errors.push(err(
                ADAPTER_MULTILINE,
                v,
                format!(
                    "is not a known preset; known presets: {}",
                    crate::core::logformat::MULTILINE_NAMES.join(", ")
                ),
            )),
            Err(MultilineError::InvalidRegex(e)) => errors.push(err(
                ADAPTER_MULTILINE,
                v,
                format!(
                    "is not a valid regex: {}",
                    e.to_string().lines().last().unwrap_or_default().trim()
                ),
            )),
        }
    }
    // An invalid format is reported on its own; its keys are then unknown, like a JSON line's.
    let format: Format = adapter.format.parse().unwrap_or(Format::Json);
    let statics: Vec<&str> = adapter.fields.iter().map(|(k, _)| k.as_str()).collect();
    let time_key = match get.text(ADAPTER_TIME_KEY) {
        None => DEFAULT_TIME_KEY.to_string(),
        Some(v) => match parse_time_key(v).map_err(|e| e.to_string()).and_then(|key| {
            check_time_key_collisions(&key, &format, &statics)?;
            Ok(key)
        }) {
            Ok(key) => {
                adapter.time_key = (key != DEFAULT_TIME_KEY).then(|| key.clone());
                key
            }
            Err(rule) => {
                errors.push(err(ADAPTER_TIME_KEY, v, rule));
                DEFAULT_TIME_KEY.to_string()
            }
        },
    };
    if let Some(v) = get.text(ADAPTER_RENAME) {
        match parse_renames(v, &time_key, &statics, &format) {
            Ok(pairs) => adapter.renames = pairs,
            Err(refused) => errors.extend(refused.into_iter().map(|e| err(ADAPTER_RENAME, &e.value, e.rule))),
        }
    }
    if let Some(v) = get.text(ADAPTER_LEVEL) {
        match v.parse::<LevelMode>() {
            Ok(mode) => adapter.level = mode,
            Err(rule) => errors.push(err(ADAPTER_LEVEL, v, rule)),
        }
    }
}
