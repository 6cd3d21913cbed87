//! The adapter's record annotations: multiline grouping, time key, renames and level.

use super::{
    err, AdapterRequest, AnnotationError, Lookup, ADAPTER_LEVEL, ADAPTER_MULTILINE, ADAPTER_RENAME, ADAPTER_TIME_KEY,
};
use crate::core::logformat::{
    check_time_key_collisions, parse_renames, parse_time_key, Format, LevelMode, Multiline, MultilineError,
    DEFAULT_TIME_KEY,
};

/// Multiline grouping, time key, renames and level: each value checked by the parser `entourage adapt` uses for
/// the flag it becomes, so admission and runtime never disagree.
pub(super) fn parse_adapter_output(get: Lookup<'_>, adapter: &mut AdapterRequest, errors: &mut Vec<AnnotationError>) {
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
