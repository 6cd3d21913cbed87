//! Members of a review whose JSON type serde's derives would not check: a derived struct also accepts an *array*
//! of its fields (`"kind": ["", "v1", "Pod"]`), and a derived unit enum also accepts an object (`{"CREATE": null}`).
//! No apiserver sends either; a review that does is not a review, and is refused like any other malformed one.

use std::fmt;

use kube::core::{admission::Operation, gvk::GroupVersionKind};
use serde::de::{Deserialize, Deserializer, Error, MapAccess, Visitor};

use super::pruned::{Key, Skip};

/// `request.kind`: an object with string members `group`, `version` and `kind`.
pub(super) struct Gvk(pub GroupVersionKind);

impl<'de> Deserialize<'de> for Gvk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(GvkVisitor)
    }
}

struct GvkVisitor;

impl<'de> Visitor<'de> for GvkVisitor {
    type Value = Gvk;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with group, version and kind")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Gvk, A::Error> {
        let (mut group, mut version, mut kind) = (None, None, None);
        while let Some(Key(key)) = map.next_key()? {
            let slot = match key.as_ref() {
                "group" => &mut group,
                "version" => &mut version,
                "kind" => &mut kind,
                _ => {
                    map.next_value_seed(Skip)?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(A::Error::custom(format_args!(
                    "duplicate field `{key}` in request.kind"
                )));
            }
            *slot = Some(map.next_value::<String>()?);
        }
        Ok(Gvk(GroupVersionKind {
            group: group.ok_or_else(|| A::Error::missing_field("group"))?,
            version: version.ok_or_else(|| A::Error::missing_field("version"))?,
            kind: kind.ok_or_else(|| A::Error::missing_field("kind"))?,
        }))
    }
}

/// `request.operation`: one of the four strings the apiserver sends.
pub(super) struct Op(pub Operation);

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT"];
        let Key(name) = Key::deserialize(deserializer)?;
        Ok(Op(match name.as_ref() {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            other => return Err(D::Error::unknown_variant(other, NAMES)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_an_object_of_three_strings_and_nothing_else() {
        let Gvk(gvk) = serde_json::from_str(r#"{"group":"","version":"v1","kind":"Pod","x":[1]}"#).unwrap();
        assert_eq!(
            (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()),
            ("", "v1", "Pod")
        );
        for bad in [
            r#"["", "v1", "Pod"]"#,
            r#""Pod""#,
            r#"{"group":"","version":"v1"}"#,
            r#"{"group":"","version":1,"kind":"Pod"}"#,
            r#"{"group":"","version":"v1","kind":"Pod","kind":"Job"}"#,
        ] {
            assert!(serde_json::from_str::<Gvk>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_operation_is_one_of_four_strings() {
        for (text, op) in [
            (r#""CREATE""#, Operation::Create),
            (r#""UPDATE""#, Operation::Update),
            (r#""DELETE""#, Operation::Delete),
            (r#""CONNECT""#, Operation::Connect),
        ] {
            assert_eq!(serde_json::from_str::<Op>(text).unwrap().0, op);
        }
        for bad in [r#"{"CREATE":null}"#, "1", r#""create""#, r#"["CREATE"]"#, r#""PATCH""#] {
            assert!(serde_json::from_str::<Op>(bad).is_err(), "{bad}");
        }
    }
}
