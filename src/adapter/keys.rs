//! The record's shape on the way out: the time key and its RFC 3339 value, renamed keys, normalised levels, and
//! the continuation lines of a grouped record.
//!
//! Backends want one time key in one format (Elasticsearch `@timestamp`, GCP `timestamp` and `severity`, Datadog
//! `msg`). The formats write their own keys (`time`, `message`, `level`…); [`Shape::reshape`] rewrites an object a
//! format rendered, key by key, values passed through byte for byte except those it changes. It runs only for
//! records that need it (a grouped record, or a Pod that asked for a time key, renames or levels), so the plain
//! path keeps its speed.

use std::borrow::Cow;
use std::fmt;

use serde_json::value::RawValue;

use super::output::{LineContext, ObjectWriter};
use crate::core::logformat::{LevelMode, DEFAULT_TIME_KEY, TRUNCATED_KEY};

/// Keys whose value is a level, normalised with `--level normalize`.
const LEVEL_KEYS: &[&str] = &["level", "lvl", "severity"];

/// How the adapter writes keys: the time key, renames and level mode, checked by the shared grammar
/// (`core::logformat`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    pub(crate) time_key: Option<String>,
    pub(crate) renames: Vec<(String, String)>,
    pub(crate) level: LevelMode,
}

impl Shape {
    /// Whether objects are written as the format renders them.
    pub(crate) fn is_identity(&self) -> bool {
        self.time_key.is_none() && self.renames.is_empty() && self.level == LevelMode::Keep
    }

    /// Appends `object` (one JSON object and its newline, as a format rendered it) to `out`, reshaped: the `time`
    /// key under the time key with an RFC 3339 value, renames applied, levels normalised, `continuation` appended
    /// to `message` after a `\n` (or given as `message` when the first line had none), and `"truncated":true` when
    /// the record was cut at the size cap.
    pub(crate) fn reshape(
        &self,
        object: &[u8],
        continuation: Option<&str>,
        cut: bool,
        ctx: &LineContext,
        out: &mut Vec<u8>,
    ) {
        let Ok(Pairs(pairs)) = serde_json::from_slice::<Pairs<'_>>(object) else {
            // A format always renders one object; should one not, it goes out as rendered.
            out.extend_from_slice(object);
            return;
        };
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
        let mut obj = ObjectWriter::begin(out);
        let mut continuation = continuation;
        let has_message = keys.contains(&"message");
        for (key, value) in &pairs {
            if key == "file" && !has_message {
                // The extras (`file`, static fields) close every object: the grouped text goes before them.
                if let Some(rest) = continuation.take() {
                    obj.str(self.name("message", &keys), rest);
                }
            }
            let name = self.name(key, &keys);
            match key.as_ref() {
                DEFAULT_TIME_KEY => match as_str(value) {
                    Some(raw) => match ctx.normalize_time(&raw) {
                        Some(t) => obj.str(name, &t),
                        None => obj.str(name, &raw),
                    },
                    None => obj.raw(name, value.get().as_bytes()),
                },
                "message" if continuation.is_some() => {
                    let first = as_str(value).unwrap_or_else(|| Cow::Borrowed(value.get()));
                    let joined = format!("{first}\n{}", continuation.take().unwrap_or_default());
                    obj.str(name, &joined);
                }
                k if self.level == LevelMode::Normalize && LEVEL_KEYS.contains(&k) => {
                    let raw = as_str(value).unwrap_or_else(|| Cow::Borrowed(value.get()));
                    match normalize_level(&raw) {
                        Some(level) => obj.str(name, level),
                        None => obj.raw(name, value.get().as_bytes()),
                    }
                }
                _ => obj.raw(name, value.get().as_bytes()),
            }
        }
        if let Some(rest) = continuation {
            obj.str(self.name("message", &keys), rest);
        }
        if cut {
            obj.raw(self.name(TRUNCATED_KEY, &keys), b"true");
        }
        obj.close();
    }

    /// The key `key` is written under in a record whose keys are `present`: its new name, unless the record
    /// already has a key of that name (a JSON or logfmt line's own keys are not known at admission), which would
    /// then appear twice: the line's own key wins, and `key` keeps its name.
    fn name<'k>(&'k self, key: &'k str, present: &[&str]) -> &'k str {
        let to = if key == DEFAULT_TIME_KEY {
            self.time_key.as_deref().unwrap_or(DEFAULT_TIME_KEY)
        } else {
            self.renames
                .iter()
                .find(|(from, _)| from == key)
                .map_or(key, |(_, to)| to.as_str())
        };
        if to != key && present.contains(&to) {
            key
        } else {
            to
        }
    }
}

/// A JSON string's value.
fn as_str(value: &RawValue) -> Option<Cow<'_, str>> {
    let text = value.get();
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// The level vocabulary backends share, from the usual spellings: Python's and Java's names, one-letter forms
/// (glog's `E`, klog's `I`), syslog's severity names and numbers (0-7), pino's and bunyan's numbers (10-60).
pub(crate) fn normalize_level(raw: &str) -> Option<&'static str> {
    let lower = raw.trim().to_ascii_lowercase();
    Some(match lower.as_str() {
        "trace" | "trc" | "t" | "debug" | "dbg" | "d" | "fine" | "finer" | "finest" | "verbose" | "v" | "config"
        | "7" | "10" | "20" => "debug",
        "info" | "inf" | "i" | "information" | "informational" | "notice" | "n" | "5" | "6" | "30" => "info",
        "warn" | "warning" | "wrn" | "w" | "4" | "40" => "warn",
        "error" | "err" | "e" | "eror" | "severe" | "3" | "50" => "error",
        "fatal" | "ftl" | "f" | "critical" | "crit" | "c" | "alert" | "emerg" | "emergency" | "panic" | "dpanic"
        | "0" | "1" | "2" | "60" => "fatal",
        _ => return None,
    })
}

/// A JSON object's members in order, each value kept as its raw text.
struct Pairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Pairs<'de>, A::Error> {
                let mut pairs = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    pairs.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests;
