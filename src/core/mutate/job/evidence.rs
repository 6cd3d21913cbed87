//! What the request proves the author wrote: `entourage.dev/defaults`, `entourage.dev/keep` and
//! `kubectl.kubernetes.io/last-applied-configuration`.
//!
//! The apiserver has already filled API defaults in, so `backoffLimit: 6` may be the author's or the API's.
//! These annotations tell them apart, and so do the `managedFields` entries of server-side apply (operation
//! `Apply`), whose field set is exactly the applied configuration. Entries of operation `Update` (`kubectl
//! create`, client-side apply, controllers) list defaulted fields too, so they prove nothing.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::core::annotations::{DEFAULTS, KEEP};

/// Written by `kubectl apply` (client-side): the JSON the author applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The `entourage.dev/defaults` switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Absent or `on`.
    On,
    /// `off`.
    Off,
    /// Any other value: warned about and treated as `off`, since a missed default is harmless and overriding
    /// an author who tried to opt out is not.
    Unclear,
}

/// The last-applied configuration, if any.
#[derive(Debug, Clone, PartialEq)]
enum LastApplied {
    Absent,
    Parsed(Value),
    /// Present but not a JSON object: it proves nothing, and may hide anything.
    Garbled,
}

/// What the annotations say about the author's intent.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The `defaults` switch.
    pub switch: Switch,
    keep: BTreeSet<String>,
    last_applied: LastApplied,
    /// `fieldsV1` of the server-side apply entries in `managedFields`.
    applied_fields: Vec<Value>,
    /// Warnings about the annotations themselves.
    pub warnings: Vec<String>,
}

impl Evidence {
    /// Reads the metadata of a Job or CronJob (`annotations` is its annotation map, possibly empty); `fields`
    /// are the names `keep` may list for that kind.
    pub fn read(metadata: Option<&Value>, annotations: &Map<String, Value>, kind: &str, fields: &[&str]) -> Evidence {
        let mut warnings = crate::core::annotations::unknown_key_warnings(annotations);
        let text = |k: &str| annotations.get(k).and_then(Value::as_str);
        let switch = match text(DEFAULTS).map(str::trim) {
            None | Some("on") => Switch::On,
            Some("off") => Switch::Off,
            Some(other) => {
                warnings.push(format!(
                    "entourage: {DEFAULTS}: {other:?} is neither \"on\" nor \"off\"; no defaults were applied"
                ));
                Switch::Unclear
            }
        };
        let mut keep = BTreeSet::new();
        for name in text(KEEP).unwrap_or_default().split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            if fields.contains(&name) {
                keep.insert(name.to_string());
            } else {
                let closest = fields
                    .iter()
                    .map(|f| (strsim::levenshtein(name, f), *f))
                    .min()
                    .map(|(_, f)| f)
                    .unwrap_or_default();
                warnings.push(format!(
                    "entourage: {KEEP}: {name:?} is not a {kind} field entourage defaults; did you mean {closest}?"
                ));
            }
        }
        let last_applied = match text(LAST_APPLIED) {
            None => LastApplied::Absent,
            Some(json) => match serde_json::from_str::<Value>(json) {
                Ok(v @ Value::Object(_)) if v.get("spec").is_none_or(Value::is_object) => LastApplied::Parsed(v),
                _ => {
                    warnings.push(format!(
                        "entourage: {LAST_APPLIED} is not the JSON of an object; only absent fields were defaulted"
                    ));
                    LastApplied::Garbled
                }
            },
        };
        let applied_fields = metadata
            .and_then(|m| m.get("managedFields"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.get("operation").and_then(Value::as_str) == Some("Apply"))
            .filter_map(|e| e.get("fieldsV1").filter(|f| f.is_object()).cloned())
            .collect();
        Evidence {
            switch,
            keep,
            last_applied,
            applied_fields,
            warnings,
        }
    }

    /// Whether `keep` names the field.
    pub fn kept(&self, field: &str) -> bool {
        self.keep.contains(field)
    }

    /// Whether the author may have written the field at `path` (object keys from the root): it is in the
    /// last-applied configuration or in a server-side apply field set, or the last-applied configuration is
    /// garbled and so cannot rule it out.
    pub fn maybe_written(&self, path: &[&str]) -> bool {
        let in_last_applied = match &self.last_applied {
            LastApplied::Absent => false,
            LastApplied::Garbled => true,
            LastApplied::Parsed(v) => contains(v, path, |k| k.to_string()),
        };
        in_last_applied
            || self
                .applied_fields
                .iter()
                .any(|f| contains(f, path, |k| format!("f:{k}")))
    }
}

/// Whether `path` leads to a present, non-null value; a node of the wrong shape on the way cannot rule the
/// field out, so it counts as present.
fn contains(root: &Value, path: &[&str], token: impl Fn(&str) -> String) -> bool {
    let mut node = root;
    for k in path {
        match node {
            Value::Object(map) => match map.get(&token(k)) {
                Some(child) => node = child,
                None => return false,
            },
            _ => return true,
        }
    }
    !node.is_null()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(a: Value) -> Evidence {
        Evidence::read(
            None,
            a.as_object().unwrap(),
            "Job",
            &["backoffLimit", "activeDeadlineSeconds"],
        )
    }

    #[test]
    fn keep_lists_known_fields_and_warns_about_others_with_a_suggestion() {
        let e = read(json!({KEEP: "backoffLimit, backofLimit,,"}));
        assert!(e.kept("backoffLimit"));
        assert_eq!(e.warnings.len(), 1);
        assert!(e.warnings[0].contains("\"backofLimit\"") && e.warnings[0].contains("did you mean backoffLimit"));
    }

    #[test]
    fn defaults_switch_other_than_on_or_off_warns_and_is_unclear() {
        assert_eq!(read(json!({})).switch, Switch::On);
        assert_eq!(read(json!({DEFAULTS: "off"})).switch, Switch::Off);
        let e = read(json!({DEFAULTS: "false"}));
        assert_eq!(e.switch, Switch::Unclear);
        assert!(e.warnings[0].contains("\"false\""));
    }

    #[test]
    fn last_applied_proves_written_fields_and_garbled_proves_nothing_away() {
        let e = read(json!({LAST_APPLIED: r#"{"spec": {"backoffLimit": 6}}"#}));
        assert!(e.maybe_written(&["spec", "backoffLimit"]));
        assert!(!e.maybe_written(&["spec", "activeDeadlineSeconds"]));
        let garbled = read(json!({LAST_APPLIED: "{\"spec\": "}));
        assert!(garbled.maybe_written(&["spec", "backoffLimit"]));
        assert_eq!(garbled.warnings.len(), 1);
        let wrong_shape = read(json!({LAST_APPLIED: r#"{"spec": "backoffLimit"}"#}));
        assert!(wrong_shape.maybe_written(&["spec", "backoffLimit"]));
        assert_eq!(wrong_shape.warnings.len(), 1, "a spec that is not an object is garbled");
        assert!(!read(json!({})).maybe_written(&["spec", "backoffLimit"]));
    }

    #[test]
    fn server_side_apply_field_sets_prove_written_fields_and_updates_do_not() {
        let meta = json!({"managedFields": [
            {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:backoffLimit": {}}}},
            {"manager": "kubectl-create", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:activeDeadlineSeconds": {}}}},
        ]});
        let e = Evidence::read(Some(&meta), &Map::new(), "Job", &[]);
        assert!(e.maybe_written(&["spec", "backoffLimit"]));
        assert!(!e.maybe_written(&["spec", "activeDeadlineSeconds"]));
    }

    #[test]
    fn unknown_entourage_keys_warn() {
        let e = read(json!({"entourage.dev/default": "off"}));
        assert!(
            e.warnings[0].contains("did you mean entourage.dev/defaults"),
            "{:?}",
            e.warnings
        );
    }
}
