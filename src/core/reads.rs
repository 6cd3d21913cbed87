//! What the core reads of an object: a tree of the members it looks at, declared next to the code that reads
//! them (`mutate::pod::READS`), with the JSON type each must have. The wire decoder (`admission::pruned`) parses a
//! request's object only this far, then [`Reads::check`]s what it kept: a member of the wrong type is a bad
//! request, never a silent "allowed".

use std::fmt;

use serde_json::Value;

/// Which parts of a JSON value to keep, and of which type each must be. `null` stands for an absent member
/// anywhere, as it does for the apiserver's own decoder.
#[derive(Debug, Clone, Copy)]
pub enum Reads {
    /// The whole value, of any type.
    All,
    /// The whole value, a string.
    Text,
    /// The whole value, a boolean.
    Flag,
    /// The whole value, an integer.
    Integer,
    /// Of an object, these members (each with what to keep of it); every other member is skipped.
    Members(&'static [(&'static str, Reads)]),
    /// Like [`Reads::Members`] when the value is an object; a value of any other type is kept whole and never
    /// refused: for readers that leave a malformed part alone with a warning (the Job defaults) rather than refuse
    /// the object.
    Within(&'static [(&'static str, Reads)]),
    /// Of an array, every element, keeping this of each.
    Each(&'static Reads),
    /// Of an object, the members whose key starts with this prefix, each kept as the second says.
    Prefixed(&'static str, &'static Reads),
    /// Of an object, the members whose key starts with any of these prefixes, each kept as the second says.
    Prefixes(&'static [&'static str], &'static Reads),
    /// Of an array of objects, each element's `key` member, a string, except the objects whose `key` the
    /// decoder's [`Names`] does not ask for: those are left out.
    EachNamed(&'static str),
}

/// Which names a [`Reads::EachNamed`] keeps.
pub type Names<'n> = &'n dyn Fn(&str) -> bool;

/// The type of a JSON value, for messages about a member of the wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonType {
    /// The type of `value`.
    pub fn of(value: &Value) -> Self {
        match value {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Bool,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }

    /// The type with its article, for messages ("an array").
    pub fn described(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Bool => "a boolean",
            JsonType::Number => "a number",
            JsonType::String => "a string",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
        }
    }
}

/// A member the core reads holds a value of another type than the one it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    /// Where, from the object: `metadata.annotations`, `spec.containers[0].name`,
    /// `metadata.annotations["entourage.dev/adapter-logs"]`.
    pub path: String,
    /// What it holds.
    pub found: JsonType,
    /// What the core reads there ("an object", "a string").
    pub expected: &'static str,
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}, expected {}",
            self.path,
            self.found.described(),
            self.expected
        )
    }
}

impl Reads {
    /// Whether the value is kept whole (the decoder parses it as it comes).
    pub fn is_whole(&self) -> bool {
        matches!(self, Reads::All | Reads::Text | Reads::Flag | Reads::Integer)
    }

    /// Whether `value` itself has the type this node reads (null stands for absent); its members and elements
    /// are not looked at. The one rule of types, for [`Reads::check`] and for the decoder, which asks it of every
    /// value it keeps, as it keeps it.
    pub fn admits(&self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Null) | (Reads::All | Reads::Within(_), _) => true,
            (Reads::Text, Value::String(_)) | (Reads::Flag, Value::Bool(_)) => true,
            (Reads::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Reads::Members(_) | Reads::Prefixed(..) | Reads::Prefixes(..), Value::Object(_)) => true,
            (Reads::Each(_) | Reads::EachNamed(_), Value::Array(_)) => true,
            _ => false,
        }
    }

    /// Checks that every member this tree names has its type in `value` (the object, or what the decoder kept of
    /// it); the first that does not is the error. The one place the types are checked, for every kind and path.
    pub fn check(&self, value: &Value) -> Result<(), TypeError> {
        self.check_at(value, None)
    }

    /// `path` is where `value` is, written out only for an error: on every review the check passes, and
    /// writing each member's path there was a tenth of the webhook's instructions for the seed's sidecar Pod.
    fn check_at(&self, value: &Value, path: Option<&Trail<'_>>) -> Result<(), TypeError> {
        if !self.admits(value) {
            return Err(mismatch(path, value, self.expected()));
        }
        match (self, value) {
            (Reads::Members(members) | Reads::Within(members), Value::Object(map)) => {
                for (name, reads) in *members {
                    if let Some(member) = map.get(*name) {
                        within(path, Segment::Member(name), |path| reads.check_at(member, path))?;
                    }
                }
            }
            (Reads::Prefixed(prefix, reads), Value::Object(map)) => {
                for (key, member) in map.iter().filter(|(k, _)| k.starts_with(prefix)) {
                    within(path, Segment::Key(key), |path| reads.check_at(member, path))?;
                }
            }
            (Reads::Prefixes(prefixes, reads), Value::Object(map)) => {
                for (key, member) in map.iter().filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p))) {
                    within(path, Segment::Key(key), |path| reads.check_at(member, path))?;
                }
            }
            (Reads::Each(each), Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    within(path, Segment::Index(i), |path| each.check_at(item, path))?;
                }
            }
            (Reads::EachNamed(key), Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    within(path, Segment::Index(i), |path| match item {
                        Value::Null => Ok(()),
                        Value::Object(map) => match map.get(*key) {
                            Some(named) => within(path, Segment::Member(key), |path| Reads::Text.check_at(named, path)),
                            None => Ok(()),
                        },
                        other => Err(mismatch(path, other, "an object")),
                    })?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The type this node reads, as an error names it.
    fn expected(&self) -> &'static str {
        match self {
            Reads::All | Reads::Within(_) => "any value",
            Reads::Text => "a string",
            Reads::Flag => "a boolean",
            Reads::Integer => "an integer",
            Reads::Members(_) | Reads::Prefixed(..) | Reads::Prefixes(..) => "an object",
            Reads::Each(_) | Reads::EachNamed(_) => "an array",
        }
    }
}

fn mismatch(path: Option<&Trail<'_>>, value: &Value, expected: &'static str) -> TypeError {
    TypeError {
        path: match path {
            None => "the object".into(),
            Some(trail) => {
                let mut text = String::new();
                trail.write(&mut text);
                text
            }
        },
        found: JsonType::of(value),
        expected,
    }
}

/// One step of a path.
enum Segment<'a> {
    /// `.name` (or `name` first).
    Member(&'a str),
    /// `["key/with.odd-chars"]`: annotation and label keys hold `/` and `.`.
    Key(&'a str),
    /// `[3]`.
    Index(usize),
}

/// A path from the object, as a chain of segments on the stack, each pointing at its parent.
struct Trail<'a> {
    parent: Option<&'a Trail<'a>>,
    segment: Segment<'a>,
}

impl Trail<'_> {
    /// Appends the whole path: `spec.containers[0].name`, `metadata.annotations["a/b"]`.
    fn write(&self, out: &mut String) {
        if let Some(parent) = self.parent {
            parent.write(out);
        }
        match &self.segment {
            Segment::Member(name) if out.is_empty() => out.push_str(name),
            Segment::Member(name) => {
                out.push('.');
                out.push_str(name);
            }
            Segment::Key(key) => {
                out.push('[');
                out.push_str(&serde_json::to_string(key).unwrap_or_default());
                out.push(']');
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

/// Runs `f` with `segment` appended to `path`.
fn within<'p, T>(path: Option<&'p Trail<'p>>, segment: Segment<'p>, f: impl FnOnce(Option<&Trail<'_>>) -> T) -> T {
    let trail = Trail { parent: path, segment };
    f(Some(&trail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const READS: Reads = Reads::Members(&[
        ("kind", Reads::Text),
        (
            "metadata",
            Reads::Members(&[
                ("annotations", Reads::Prefixed("x.dev/", &Reads::Text)),
                ("owners", Reads::Each(&Reads::Members(&[("controller", Reads::Flag)]))),
            ]),
        ),
        ("ports", Reads::Each(&Reads::Integer)),
        ("env", Reads::EachNamed("name")),
        ("any", Reads::All),
    ]);

    fn error(object: Value) -> String {
        READS.check(&object).unwrap_err().to_string()
    }

    #[test]
    fn members_of_the_types_the_core_reads_pass_and_null_counts_as_absent() {
        let object = json!({
            "kind": "Pod",
            "metadata": {"annotations": {"x.dev/a": "1", "other/b": 7}, "owners": [{"controller": true}, null]},
            "ports": [80, null],
            "env": [{"name": "A", "value": 1}, {}, null],
            "any": [{"x": 1}],
            "unread": {"deep": [1, "2"]},
        });
        assert_eq!(READS.check(&object), Ok(()));
        assert_eq!(
            READS.check(&json!({"kind": null, "metadata": null, "env": null})),
            Ok(())
        );
    }

    #[test]
    fn a_member_of_another_type_is_named_with_its_path_and_both_types() {
        assert_eq!(
            error(json!({"metadata": {"annotations": ["x.dev/a"]}})),
            "metadata.annotations is an array, expected an object"
        );
        assert_eq!(
            error(json!({"metadata": {"annotations": {"x.dev/a": 1}}})),
            r#"metadata.annotations["x.dev/a"] is a number, expected a string"#
        );
        assert_eq!(
            error(json!({"metadata": {"owners": [{"controller": "true"}]}})),
            "metadata.owners[0].controller is a string, expected a boolean"
        );
        assert_eq!(
            error(json!({"ports": [80, 8.5]})),
            "ports[1] is a number, expected an integer"
        );
        assert_eq!(
            error(json!({"env": [{"name": 7}]})),
            "env[0].name is a number, expected a string"
        );
        assert_eq!(error(json!({"env": ["A=1"]})), "env[0] is a string, expected an object");
        assert_eq!(error(json!({"kind": ["Pod"]})), "kind is an array, expected a string");
        assert_eq!(error(json!([])), "the object is an array, expected an object");
    }

    #[test]
    fn within_refuses_no_type_of_its_own_but_checks_the_members_it_names() {
        const WITHIN: Reads = Reads::Within(&[
            ("spec", Reads::Within(&[("backoffLimit", Reads::All)])),
            ("kind", Reads::Text),
        ]);
        for lenient in [
            json!("spec"),
            json!([1]),
            json!({"spec": 3}),
            json!({"spec": {"backoffLimit": "six"}}),
        ] {
            assert_eq!(WITHIN.check(&lenient), Ok(()), "{lenient}");
            assert!(WITHIN.admits(&lenient));
        }
        assert_eq!(
            WITHIN.check(&json!({"kind": 1})).unwrap_err().to_string(),
            "kind is a number, expected a string"
        );
    }
}
