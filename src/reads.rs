//! Parsing only what the core reads.
//!
//! A review's Pod is several kilobytes of which the core reads a few hundred bytes (annotations, container names
//! and mounts, ports, env names, volume names). Building a full `serde_json::Value` allocates every string and map
//! of it, which was the largest single cost of a review. [`parse`] walks the same JSON with a [`Reads`] tree and
//! builds a `Value` holding only the members the tree names; every other member is checked by the parser and
//! skipped without being allocated. The core says what it reads (`mutate::object_reads`, `mutate::pod::READS`);
//! the decoder ([`crate::admission::decode_reading`]) parses the object as it goes, with a [`Pruned`] seed.
//!
//! Whatever is kept is kept exactly: a member of an unexpected type (an object where the tree expects an array,
//! a string where it expects an object) is kept whole, so the core sees the same shapes it would see in the full
//! object and decides the same way. `pruned_and_full_pods_get_the_same_answer` and
//! `pruned_and_full_objects_of_any_shape_get_the_same_answer` in `tests/properties.rs` hold the two to that.

use std::{borrow::Cow, fmt};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Which parts of a JSON value to keep.
#[derive(Debug)]
pub enum Reads {
    /// The whole value.
    All,
    /// Of an object, these members (each with what to keep of it); every other member is skipped.
    Members(&'static [(&'static str, Reads)]),
    /// Of an array, every element, keeping this of each.
    Each(&'static Reads),
}

/// Parses `json`, keeping what `reads` names.
pub fn parse(json: &str, reads: &Reads) -> serde_json::Result<Value> {
    from_str_seed(json, Pruned(reads))
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
pub struct Pruned<'r>(pub &'r Reads);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.0 {
            Reads::All => serde::Deserialize::deserialize(deserializer),
            _ => deserializer.deserialize_any(self),
        }
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
        // An array where an object was expected is kept whole.
        let each = match self.0 {
            Reads::Each(each) => *each,
            _ => &Reads::All,
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Pruned(each))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        match self.0 {
            Reads::Members(wanted) => {
                // Keys are borrowed from the input when they need no unescaping, so skipped keys cost nothing.
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match wanted.iter().find(|(name, _)| *name == key) {
                        Some((_, reads)) => {
                            let value = map.next_value_seed(Pruned(reads))?;
                            members.insert(key.into_owned(), value);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
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

    const READS: Reads = Reads::Members(&[
        ("keep", Reads::All),
        ("list", Reads::Each(&Reads::Members(&[("name", Reads::All)]))),
    ]);

    #[test]
    fn keeps_only_the_named_members() {
        let json = r#"{"keep": {"a": [1, 2.5, null, true]}, "drop": {"x": "y"},
                       "list": [{"name": "a", "other": 1}, {"name": "b"}]}"#;
        assert_eq!(
            parse(json, &READS).unwrap(),
            json!({"keep": {"a": [1, 2.5, null, true]}, "list": [{"name": "a"}, {"name": "b"}]})
        );
    }

    #[test]
    fn members_of_an_unexpected_type_are_kept_whole() {
        let json = r#"{"list": {"name": "a", "other": 1}, "keep": "s"}"#;
        assert_eq!(
            parse(json, &READS).unwrap(),
            json!({"list": {"name": "a", "other": 1}, "keep": "s"})
        );
        let json = r#"{"list": ["a", [1, {"x": 2}]]}"#;
        assert_eq!(parse(json, &READS).unwrap(), json!({"list": ["a", [1, {"x": 2}]]}));
        assert_eq!(parse(r#"[{"drop": 1}]"#, &READS).unwrap(), json!([{"drop": 1}]));
    }

    #[test]
    fn escaped_keys_and_strings_are_read_like_any_other() {
        let json = r#"{"k\u0065ep": "a\"b", "dr\u006fp": 1}"#;
        assert_eq!(parse(json, &READS).unwrap(), json!({"keep": "a\"b"}));
    }

    #[test]
    fn invalid_json_is_an_error_even_where_it_is_skipped() {
        assert!(parse(r#"{"drop": [1, }"#, &READS).is_err());
        assert!(parse(r#"{"keep": 1} trailing"#, &READS).is_err());
    }
}
