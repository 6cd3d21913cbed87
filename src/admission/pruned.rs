//! Parsing only what the core reads.
//!
//! A review's Pod is several kilobytes of which the core reads a few hundred bytes (annotations, container names
//! and mounts, ports, env names, volume names). Building a full `serde_json::Value` allocates every string and map
//! of it, which was the largest single cost of a review. [`parse`] walks the same JSON with a [`Reads`] tree and
//! builds a `Value` holding only the members the tree names; every other member is checked by the parser and
//! skipped without being allocated. The core says what it reads (`mutate::object_reads`, `mutate::pod::READS`);
//! the decoder ([`crate::admission::decode_reading`]) parses the object as it goes, with a [`Pruned`] seed.
//!
//! Two kinds of member are kept only in part, because real Pods carry many of them and the core looks for a few:
//! annotations by prefix ([`Reads::Prefixed`], the core reads only its own), and env entries by name
//! ([`Reads::EachNamed`], the core looks up only the names its [`Names`] filter asks for: parsing twenty env
//! entries into maps and strings cost a third of decoding the bench's Pod).
//!
//! Whatever is kept is kept exactly: a member of an unexpected type (an object where the tree expects an array,
//! a string where it expects an object) is kept whole, so that [`Reads::check`], run by the decoder on what is
//! kept, finds it as it would in the full object, and the review is refused naming it. `pruned_and_full_pods_get_the_same_answer` and
//! `pruned_and_full_objects_of_any_shape_get_the_same_answer` in `tests/core_properties.rs` hold the two to that.

use std::{borrow::Cow, cell::Cell, fmt};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{value::RawValue, Map, Value};

pub use crate::core::reads::{JsonType, Names, Reads};

/// Parses `json`, keeping what `reads` names (and of [`Reads::EachNamed`] arrays, the elements `names` asks for).
pub fn parse(json: &str, reads: &Reads, names: Names<'_>) -> serde_json::Result<Value> {
    let mismatch = Cell::new(false);
    from_str_seed(
        json,
        Pruned {
            reads,
            names,
            mismatch: &mismatch,
        },
    )
}

/// Parses `text` with a seed, as `serde_json::from_str` would (trailing characters refused).
pub fn from_str_seed<'de, S: DeserializeSeed<'de>>(text: &'de str, seed: S) -> serde_json::Result<S::Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = seed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A seed that deserialises one value, keeping what its [`Reads`] names.
#[derive(Clone, Copy)]
pub struct Pruned<'r> {
    /// What to keep.
    pub reads: &'r Reads,
    /// Which elements a [`Reads::EachNamed`] keeps.
    pub names: Names<'r>,
    /// Set when a kept value does not have the type its node reads ([`Reads::admits`]): only then does the
    /// decoder run [`Reads::check`] over what was kept, for the error naming where. A review whose types are right
    /// (every review but a bad one) is not walked a second time.
    pub mismatch: &'r Cell<bool>,
}

impl<'r> Pruned<'r> {
    fn with(self, reads: &'r Reads) -> Self {
        Pruned { reads, ..self }
    }
}

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let value = if self.reads.is_whole() {
            serde::Deserialize::deserialize(deserializer)?
        } else {
            deserializer.deserialize_any(self)?
        };
        if !self.reads.admits(&value) {
            self.mismatch.set(true);
        }
        Ok(value)
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        if let Reads::EachNamed(key) = self.reads {
            let element = NamedElement {
                key,
                names: self.names,
                mismatch: self.mismatch,
            };
            while let Some(item) = seq.next_element_seed(element)? {
                items.extend(item);
            }
            return Ok(Value::Array(items));
        }
        // An array where an object was expected is kept whole.
        let each = match self.reads {
            Reads::Each(each) => *each,
            _ => &Reads::All,
        };
        while let Some(item) = seq.next_element_seed(self.with(each))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        match self.reads {
            Reads::Members(wanted) | Reads::Within(wanted) => {
                // Keys are borrowed from the input when they need no unescaping, so skipped keys cost nothing.
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match wanted.iter().find(|(name, _)| *name == key) {
                        Some((_, reads)) => {
                            let value = map.next_value_seed(self.with(reads))?;
                            members.insert(key.into_owned(), value);
                        }
                        None => {
                            map.next_value_seed(Skip)?;
                        }
                    }
                }
            }
            Reads::Prefixed(prefix, reads) => {
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if key.starts_with(prefix) {
                        members.insert(key.into_owned(), map.next_value_seed(self.with(reads))?);
                    } else {
                        map.next_value_seed(Skip)?;
                    }
                }
            }
            Reads::Prefixes(prefixes, reads) => {
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if prefixes.iter().any(|prefix| key.starts_with(prefix)) {
                        members.insert(key.into_owned(), map.next_value_seed(self.with(reads))?);
                    } else {
                        map.next_value_seed(Skip)?;
                    }
                }
            }
            // An object where an array was expected is kept whole.
            _ => {
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    members.insert(key, value);
                }
            }
        }
        Ok(Value::Object(members))
    }
}

/// One element of a [`Reads::EachNamed`] array: `None` when it is left out.
#[derive(Clone, Copy)]
struct NamedElement<'r> {
    key: &'static str,
    names: Names<'r>,
    mismatch: &'r Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for NamedElement<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<Value>, D::Error> {
        let mismatch = self.mismatch;
        let item = deserializer.deserialize_any(self)?;
        // An element kept whole that is not an object (its named member is looked at in `visit_map`).
        if item
            .as_ref()
            .is_some_and(|v| !matches!(v, Value::Null | Value::Object(_)))
        {
            mismatch.set(true);
        }
        Ok(item)
    }
}

impl<'de> Visitor<'de> for NamedElement<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        // The member's text is borrowed while it is looked at: an element left out allocates nothing.
        let mut named: Option<&'de RawValue> = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == self.key {
                // As in a `Value`, a repeated member's last value counts.
                named = Some(map.next_value()?);
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        let Some(raw) = named else {
            return Ok(Some(Value::Object(Map::new())));
        };
        let text = raw.get();
        let plain = text.len() >= 2 && text.starts_with('"') && !text.contains('\\');
        if plain && !(self.names)(&text[1..text.len() - 1]) {
            return Ok(None);
        }
        // Kept: parsed like any other value (an escaped name is unescaped first, then asked about).
        let value: Value = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
        if !Reads::Text.admits(&value) {
            self.mismatch.set(true);
        }
        if let Value::String(name) = &value {
            if !plain && !(self.names)(name) {
                return Ok(None);
            }
        }
        Ok(Some(Value::Object(Map::from_iter([(self.key.to_string(), value)]))))
    }

    // Elements that are not objects are kept whole, as `Reads::Each` keeps them.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Value>, A::Error> {
        Pruned {
            reads: &Reads::All,
            names: self.names,
            mismatch: self.mismatch,
        }
        .visit_seq(seq)
        .map(Some)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }
}

/// Skips a value without keeping any of it, but checks it exactly as parsing it into a `Value` would: serde's
/// `IgnoredAny` only checks the syntax, so a number out of `f64`'s range (`9.0E420`) passed a skip and failed the
/// whole-object parse, and the two decoders disagreed about the same body. Says which type the value was.
#[derive(Clone, Copy)]
pub struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = JsonType;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<JsonType, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = JsonType;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<JsonType, E> {
        Ok(JsonType::Bool)
    }

    fn visit_i64<E>(self, _: i64) -> Result<JsonType, E> {
        Ok(JsonType::Number)
    }

    fn visit_u64<E>(self, _: u64) -> Result<JsonType, E> {
        Ok(JsonType::Number)
    }

    fn visit_f64<E>(self, _: f64) -> Result<JsonType, E> {
        Ok(JsonType::Number)
    }

    fn visit_str<E>(self, _: &str) -> Result<JsonType, E> {
        Ok(JsonType::String)
    }

    fn visit_unit<E>(self) -> Result<JsonType, E> {
        Ok(JsonType::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonType, A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(JsonType::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonType, A::Error> {
        while map.next_key::<Key<'de>>()?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(JsonType::Object)
    }
}

/// An object key, borrowed from the input when it needs no unescaping (serde's own `Cow<str>` always copies).
pub(crate) struct Key<'de>(pub Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all_names(_: &str) -> bool {
        true
    }

    const READS: Reads = Reads::Members(&[
        ("keep", Reads::All),
        ("list", Reads::Each(&Reads::Members(&[("name", Reads::All)]))),
    ]);

    #[test]
    fn keeps_only_the_named_members() {
        let json = r#"{"keep": {"a": [1, 2.5, null, true]}, "drop": {"x": "y"},
                       "list": [{"name": "a", "other": 1}, {"name": "b"}]}"#;
        assert_eq!(
            parse(json, &READS, &all_names).unwrap(),
            json!({"keep": {"a": [1, 2.5, null, true]}, "list": [{"name": "a"}, {"name": "b"}]})
        );
    }

    #[test]
    fn members_of_an_unexpected_type_are_kept_whole() {
        let json = r#"{"list": {"name": "a", "other": 1}, "keep": "s"}"#;
        assert_eq!(
            parse(json, &READS, &all_names).unwrap(),
            json!({"list": {"name": "a", "other": 1}, "keep": "s"})
        );
        let json = r#"{"list": ["a", [1, {"x": 2}]]}"#;
        assert_eq!(
            parse(json, &READS, &all_names).unwrap(),
            json!({"list": ["a", [1, {"x": 2}]]})
        );
        assert_eq!(
            parse(r#"[{"drop": 1}]"#, &READS, &all_names).unwrap(),
            json!([{"drop": 1}])
        );
    }

    #[test]
    fn within_keeps_the_named_members_of_an_object_and_any_other_value_whole() {
        const WITHIN: Reads = Reads::Within(&[("spec", Reads::Within(&[("keep", Reads::All)]))]);
        let json = r#"{"spec": {"keep": [1], "drop": {"x": 1}}, "drop": 2}"#;
        assert_eq!(
            parse(json, &WITHIN, &all_names).unwrap(),
            json!({"spec": {"keep": [1]}})
        );
        let json = r#"{"spec": ["keep", {"x": 1}]}"#;
        assert_eq!(
            parse(json, &WITHIN, &all_names).unwrap(),
            json!({"spec": ["keep", {"x": 1}]})
        );
    }

    #[test]
    fn escaped_keys_and_strings_are_read_like_any_other() {
        let json = r#"{"k\u0065ep": "a\"b", "dr\u006fp": 1}"#;
        assert_eq!(parse(json, &READS, &all_names).unwrap(), json!({"keep": "a\"b"}));
    }

    const NAMED: Reads = Reads::Members(&[
        ("meta", Reads::Prefixed("x/", &Reads::All)),
        ("env", Reads::EachNamed("name")),
    ]);

    #[test]
    fn of_an_object_read_by_several_prefixes_the_members_with_any_of_them_are_kept_and_type_checked() {
        const BOTH: Reads = Reads::Prefixes(&["x/", "kubectl.kubernetes.io/default-container"], &Reads::Text);
        let json = r#"{"x/a": "1", "kubectl.kubernetes.io/default-container": "web", "kubectl.kubernetes.io/other": "no", "y/b": "no"}"#;
        let kept = parse(json, &BOTH, &all_names).unwrap();
        assert_eq!(
            kept,
            json!({"x/a": "1", "kubectl.kubernetes.io/default-container": "web"})
        );
        assert_eq!(BOTH.check(&kept), Ok(()));
        let wrong = parse(
            r#"{"kubectl.kubernetes.io/default-container": 7, "y/b": 7}"#,
            &BOTH,
            &all_names,
        )
        .unwrap();
        assert_eq!(
            BOTH.check(&wrong).unwrap_err().to_string(),
            r#"["kubectl.kubernetes.io/default-container"] is a number, expected a string"#
        );
    }

    #[test]
    fn of_a_prefixed_object_only_the_members_with_the_prefix_are_kept_whole() {
        let json = r#"{"meta": {"x/a": {"deep": [1]}, "y/b": "no", "x/": "", "X/c": "no"}}"#;
        let wanted = |_: &str| true;
        assert_eq!(
            parse(json, &NAMED, &wanted).unwrap(),
            json!({"meta": {"x/a": {"deep": [1]}, "x/": ""}})
        );
        // Any other type where the object belongs is kept whole, as everywhere.
        assert_eq!(
            parse(r#"{"meta": ["y/b"]}"#, &NAMED, &wanted).unwrap(),
            json!({"meta": ["y/b"]})
        );
    }

    #[test]
    fn of_a_named_array_only_the_elements_asked_for_are_kept_and_every_odd_shape() {
        let json = r#"{"env": [
            {"name": "KEEP_ME", "value": "v"}, {"name": "DROP_ME", "valueFrom": {"x": 1}},
            {"value": "no name"}, {"name": 7}, {"name": {"odd": true}}, "text", [1, {"a": 2}], null,
            {"name": "DROP_ME", "name": "KEEP_ME"}, {"name": "K\u0045EP_ME"}
        ]}"#;
        let wanted = |name: &str| name == "KEEP_ME";
        assert_eq!(
            parse(json, &NAMED, &wanted).unwrap(),
            json!({"env": [
                {"name": "KEEP_ME"}, {}, {"name": 7}, {"name": {"odd": true}}, "text", [1, {"a": 2}], null,
                {"name": "KEEP_ME"}, {"name": "KEEP_ME"}
            ]})
        );
        // An object where the array belongs is kept whole.
        assert_eq!(
            parse(r#"{"env": {"name": "DROP_ME"}}"#, &NAMED, &wanted).unwrap(),
            json!({"env": {"name": "DROP_ME"}})
        );
        assert!(parse(r#"{"env": [{"name": "DROP_ME", "value": tru}]}"#, &NAMED, &wanted).is_err());
    }

    #[test]
    fn invalid_json_is_an_error_even_where_it_is_skipped() {
        assert!(parse(r#"{"drop": [1, }"#, &READS, &all_names).is_err());
        assert!(parse(r#"{"keep": 1} trailing"#, &READS, &all_names).is_err());
    }

    #[test]
    fn a_skipped_number_out_of_range_is_refused_as_a_value_parse_refuses_it() {
        // Found by `make fuzz`: IgnoredAny let this through where `Value` refuses it.
        let number = "9.0E000000000000000000000000000420";
        for json in [
            format!(r#"{{"drop": {number}}}"#),
            format!(r#"{{"drop": [{{"x": {number}}}]}}"#),
            format!(r#"{{"env": [{{"name": "DROP_ME", "value": {number}}}]}}"#),
            format!(r#"{{"meta": {{"y/b": {number}}}}}"#),
        ] {
            assert!(serde_json::from_str::<Value>(&json).is_err());
            let reads = if json.contains("drop") { &READS } else { &NAMED };
            let err = parse(&json, reads, &|n: &str| n == "KEEP_ME").unwrap_err();
            assert!(err.to_string().contains("out of range"), "{json}: {err}");
        }
        assert!(parse(r#"{"drop": 1.5e300, "keep": -0}"#, &READS, &all_names).is_ok());
    }
}
