//! Building RFC 6902 patches that the apiserver will apply.
//!
//! Every operation is computed against the object exactly as the apiserver sent it, and the apiserver applies
//! them in order with evanphx/json-patch: an `add` whose parent does not exist fails the user's request with a
//! 500, whatever the webhook's failurePolicy. So [`PatchBuilder`] knows what exists: a missing parent is created
//! by one `add` of the whole missing subtree, and later additions under it are folded into that same value.
//! Pointers are built from tokens (annotation keys contain `/` and `~`), never by formatting strings.
//!
//! The builder only adds or replaces values at paths it is given: it never removes or rewrites anything else,
//! so fields this build does not know survive untouched.
//!
//! A [`Patch`] holds each value as JSON text: an injected container goes from its typed struct straight to text
//! ([`PatchBuilder::add_serialized`]), never through a `serde_json::Value` that would be built, serialised and
//! dropped on every review. That text is serde_json's own output, kept as a [`JsonText`]: a `RawValue` would
//! parse it all again to check it (`RawValue::from_string`), which was a fifth of a Pod's mutation.

use serde::Serialize;
use serde_json::{value::RawValue, Map, Value};

/// A JSON value as text that serde_json wrote: written into the patch as it is, never parsed again on the
/// review's path. It serialises as the value it holds (checked then, off the review's path: a debug log line,
/// `to_json_patch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(String);

impl JsonText {
    /// The JSON text of `value`, as `serde_json::to_string` writes it.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        JsonText(serde_json::to_string(value).expect("values without non-string map keys always serialise"))
    }

    /// The text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// Text a hand-written writer of this crate produced, byte for byte what `serde_json::to_string` writes for the
    /// same value (each such writer has a test holding it to that).
    pub(crate) fn written(text: String) -> Self {
        JsonText(text)
    }
}

/// The first byte of `bytes` at or after `from` that serde_json escapes (a control character, `"` or `\\`), looked
/// for eight bytes at a time: the strings of a patch are short and almost never need escaping, and a byte at a time
/// cost as much as serde_json's own escaping.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    // Whether a byte of `x` is zero, or less than `n` (n <= 128): exact as to "any", whatever the borrows, and the
    // lowest flagged byte is the first such byte.
    let less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let rest = bytes.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut at = from;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = less(x, 0x20) | less(x ^ (ONES * u64::from(b'"')), 1) | less(x ^ (ONES * u64::from(b'\\')), 1);
        if found != 0 {
            // Borrows only flag bytes above a flagged one: the lowest flag is exact.
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|i| at + i)
}

/// Whether serde_json escapes any byte of `s`.
fn needs_escaping(s: &str) -> bool {
    next_escape(s.as_bytes(), 0).is_some()
}

/// Appends `s` as a JSON string, exactly as serde_json writes it: copied as it is between quotes when nothing in it
/// needs escaping (serde_json's own writer looks every byte up in its escape table, and was the largest single
/// entry of a patched review's profile).
pub fn push_json_str(out: &mut String, s: &str) {
    if needs_escaping(s) {
        let mut bytes = Vec::with_capacity(s.len() + s.len() / 4 + 2);
        push_escaped(&mut bytes, s);
        // Whole characters of `s` and ASCII escapes.
        out.push_str(std::str::from_utf8(&bytes).expect("the JSON text of a str is UTF-8"));
    } else {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Appends a JSON array of strings, as serde_json writes it.
pub fn push_json_strs<S: AsRef<str>>(out: &mut String, items: &[S]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, item.as_ref());
    }
    out.push(']');
}

/// [`push_json_str`] into bytes.
pub fn push_json_bytes(out: &mut Vec<u8>, s: &str) {
    if needs_escaping(s) {
        push_escaped(out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// How serde_json writes each control character inside a string.
const CONTROL_ESCAPES: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b", "\\t", "\\n",
    "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015",
    "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// `s` as a JSON string with serde_json's escapes: `\"`, `\\` and [`CONTROL_ESCAPES`]; every other byte as it is,
/// the runs between escapes copied whole (the status annotation, JSON inside a string, has a quote every few bytes).
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 4 + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..at]);
        let b = bytes[at];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.extend_from_slice(CONTROL_ESCAPES[usize::from(b)].as_bytes()),
        }
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// An RFC 6902 operation kind; entourage only adds and replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `add`: insert into an array or set an object member.
    Add,
    /// `replace`: overwrite a value that exists.
    Replace,
}

/// One operation, its value already JSON text.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// What to do.
    pub op: Op,
    /// Where: an RFC 6901 pointer, tokens escaped.
    pub path: String,
    /// The value, as JSON text.
    pub value: JsonText,
}

impl PartialEq for Operation {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op && self.path == other.path && self.value == other.value
    }
}

/// A JSON Patch: serialises to the RFC 6902 array the apiserver applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Patch(pub Vec<Operation>);

impl Patch {
    /// The RFC 6902 array as JSON text, as `serde_json::to_vec` writes it, with the fixed parts written as they
    /// are rather than each through serde's string escaping.
    pub fn to_json(&self) -> Vec<u8> {
        // A few KB for a typical injection: start there rather than grow from empty.
        let mut out = Vec::with_capacity(4096);
        self.write_json(&mut out);
        out
    }

    /// Appends [`Patch::to_json`]'s text to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, operation) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(match operation.op {
                Op::Add => br#"{"op":"add","path":"#,
                Op::Replace => br#"{"op":"replace","path":"#,
            });
            push_json_bytes(out, &operation.path);
            out.extend_from_slice(br#","value":"#);
            out.extend_from_slice(operation.value.get().as_bytes());
            out.push(b'}');
        }
        out.push(b']');
    }

    /// The length of [`Patch::to_json`]'s text, at least (a path's escapes are not counted).
    pub fn json_len_hint(&self) -> usize {
        2 + self
            .0
            .iter()
            .map(|o| 32 + o.path.len() + o.value.get().len())
            .sum::<usize>()
    }

    /// The same operations as a `json_patch::Patch`, to apply to a document.
    pub fn to_json_patch(&self) -> json_patch::Patch {
        let text = serde_json::to_string(self).expect("a patch always serialises");
        serde_json::from_str(&text).expect("add and replace operations are valid RFC 6902")
    }
}

/// An operation while the patch is being built: values this patch creates stay `Value`s, so that later
/// additions under them can be folded in; an array this patch creates for serialised elements only (native
/// sidecars into a Pod without `initContainers`) keeps them as text, folded in the same way.
#[derive(Debug)]
enum Pending {
    Value(Value),
    Text(JsonText),
    Items(Vec<JsonText>),
}

impl Pending {
    /// The value as a `Value`, for an addition under it that is not a serialised element.
    fn make_value(&mut self) -> Option<&mut Value> {
        if let Pending::Items(items) = self {
            let parsed = items
                .iter()
                .map(|item| serde_json::from_str(item.get()).expect("our own JSON text parses"))
                .collect();
            *self = Pending::Value(Value::Array(parsed));
        }
        match self {
            Pending::Value(value) => Some(value),
            _ => None,
        }
    }
}

/// One step of a path: an object key, an array index, or the end of an array (`-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// An object member.
    Key(&'a str),
    /// An array element (insert before it when adding).
    Index(usize),
    /// After the last element of an array.
    End,
}

/// Short-hand for an object key step.
pub fn key(k: &str) -> Step<'_> {
    Step::Key(k)
}

/// A subtree a patch creates: its pointer, how many steps that is from the root, and the index of the op that
/// adds it. Pointers compare as their tokens do: each token is escaped, so one pointer is under another when it
/// starts with it and a `/` follows.
#[derive(Debug)]
struct Created {
    pointer: String,
    depth: usize,
    op: usize,
}

impl Created {
    /// Whether `pointer`, `depth` steps from the root, is strictly under this subtree.
    fn holds(&self, pointer: &str, depth: usize) -> bool {
        self.depth < depth
            && pointer.starts_with(&self.pointer)
            && pointer.as_bytes().get(self.pointer.len()) == Some(&b'/')
    }
}

/// Accumulates patch operations against one document.
#[derive(Debug)]
pub struct PatchBuilder<'d> {
    doc: &'d Value,
    ops: Vec<(Op, String, Pending)>,
    /// Subtrees this patch creates.
    created: Vec<Created>,
}

impl<'d> PatchBuilder<'d> {
    /// A builder for patches against `doc`.
    pub fn new(doc: &'d Value) -> Self {
        PatchBuilder {
            doc,
            ops: Vec::new(),
            created: Vec::new(),
        }
    }

    /// The document the patch is computed against.
    pub fn doc(&self) -> &'d Value {
        self.doc
    }

    /// Whether no operation has been added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub fn finish(self) -> Patch {
        Patch(
            self.ops
                .into_iter()
                .map(|(op, path, value)| Operation {
                    op,
                    path,
                    value: match value {
                        Pending::Text(text) => text,
                        Pending::Value(value) => to_text(&value),
                        Pending::Items(items) => {
                            let mut text =
                                String::with_capacity(items.iter().map(|i| i.0.len() + 1).sum::<usize>() + 1);
                            text.push('[');
                            for (i, item) in items.iter().enumerate() {
                                if i > 0 {
                                    text.push(',');
                                }
                                text.push_str(item.get());
                            }
                            text.push(']');
                            JsonText(text)
                        }
                    },
                })
                .collect(),
        )
    }

    /// Adds a serialisable value at `path` like [`PatchBuilder::add`], turning it straight into JSON text when
    /// its parent exists (the usual case), without building a `Value`.
    pub fn add_serialized<T: Serialize>(&mut self, path: &[Step<'_>], value: &T) {
        self.add_text(path, to_text(value));
    }

    /// Adds a value already written as JSON text at `path`, like [`PatchBuilder::add`]: kept as text when its
    /// parent exists (the usual case) or is an array this patch creates, parsed into a `Value` otherwise.
    pub fn add_text(&mut self, path: &[Step<'_>], text: JsonText) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        match get(self.doc, parents) {
            Some(parent) => {
                // A parent of the wrong type is left alone, as in `add`.
                if fits(parent, *last) {
                    self.ops.push((Op::Add, pointer_to(path), Pending::Text(text)));
                }
            }
            None => {
                if let Err(text) = self.add_item(path, text) {
                    self.add(
                        path,
                        serde_json::from_str(text.get()).expect("our own JSON text parses"),
                    );
                }
            }
        }
    }

    /// An element into an array that is missing from the document under an object that is there
    /// (`/spec/initContainers/0` of a Pod without init containers): the array is created by one `add` holding
    /// the elements as text, without a `Value` built for each. The text back when that case does not apply.
    fn add_item(&mut self, path: &[Step<'_>], text: JsonText) -> Result<(), JsonText> {
        let [grand @ .., Step::Key(_), last @ (Step::Index(_) | Step::End)] = path else {
            return Err(text);
        };
        if !matches!(get(self.doc, grand), Some(Value::Object(_))) {
            return Err(text);
        }
        let array = &path[..path.len() - 1];
        let at = pointer_to(array);
        if self.created.iter().any(|c| c.holds(&at, array.len())) {
            // Under a subtree this patch creates as a `Value`: folded in there.
            return Err(text);
        }
        match self.created.iter().find(|c| c.pointer == at) {
            Some(&Created { op, .. }) => match &mut self.ops[op].2 {
                Pending::Items(items) => {
                    let at = match last {
                        Step::Index(i) => (*i).min(items.len()),
                        _ => items.len(),
                    };
                    items.insert(at, text);
                }
                other => {
                    if let Some(root) = other.make_value() {
                        let item = serde_json::from_str(text.get()).expect("our own JSON text parses");
                        insert_nested(root, &[*last], item);
                    }
                }
            },
            None => {
                self.created.push(Created {
                    pointer: at.clone(),
                    depth: array.len(),
                    op: self.ops.len(),
                });
                self.ops.push((Op::Add, at, Pending::Items(vec![text])));
            }
        }
        Ok(())
    }

    /// Adds `value` at `path`, creating missing parents. The parent of an [`Step::Index`] or [`Step::End`] step is
    /// an array; of a [`Step::Key`] step, an object. Adding at an existing key replaces its value (RFC 6902).
    pub fn add(&mut self, path: &[Step<'_>], value: Value) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        // Walk the original document as far as it goes.
        let mut node = self.doc;
        let mut depth = 0;
        for step in parents {
            match lookup(node, *step) {
                Some(child) => {
                    node = child;
                    depth += 1;
                }
                None => break,
            }
        }
        let at = pointer_to(path);
        if depth == parents.len() {
            if fits(node, *last) {
                self.ops.push((Op::Add, at, Pending::Value(value)));
            }
            // A parent of the wrong type (a string where an object belongs) is left alone: the apiserver's
            // validation reports that object as invalid on its own, and a patch must never make it worse.
            return;
        }
        // Part of the path is missing. If an earlier op of ours creates that part, add into its value.
        let missing_from = depth;
        if let Some(&Created { depth: created, op, .. }) = self
            .created
            .iter()
            .filter(|c| c.holds(&at, path.len()))
            .max_by_key(|c| c.depth)
        {
            let rel = &path[created..];
            if let (Op::Add, _, pending) = &mut self.ops[op] {
                if let Some(root) = pending.make_value() {
                    insert_nested(root, rel, value);
                }
            }
            return;
        }
        // Otherwise create the whole missing subtree with one op at the first missing step.
        let subtree = nest(&path[missing_from + 1..], value);
        let create_at = pointer_to(&path[..=missing_from]);
        self.created.push(Created {
            pointer: create_at.clone(),
            depth: missing_from + 1,
            op: self.ops.len(),
        });
        self.ops.push((Op::Add, create_at, Pending::Value(subtree)));
    }

    /// Sets `value` at `path`: `replace` when the path exists in the document, `add` (creating parents) otherwise.
    pub fn set(&mut self, path: &[Step<'_>], value: Value) {
        if get(self.doc, path).is_some() {
            self.ops.push((Op::Replace, pointer_to(path), Pending::Value(value)));
        } else {
            self.add(path, value);
        }
    }

    /// Sets an annotation, creating `metadata.annotations` when the object has none.
    pub fn set_annotation(&mut self, meta_path: &[Step<'_>], name: &str, value: &str) {
        let mut path = meta_path.to_vec();
        path.push(key("annotations"));
        path.push(key(name));
        // The annotations are there (an annotated Pod's are): the value goes in as text, as `set` would write it,
        // without a `Value` in between.
        if let Some(Value::Object(annotations)) = get(self.doc, &path[..path.len() - 1]) {
            let op = if annotations.contains_key(name) {
                Op::Replace
            } else {
                Op::Add
            };
            let mut text = String::with_capacity(value.len() + 16);
            push_json_str(&mut text, value);
            self.ops.push((op, pointer_to(&path), Pending::Text(JsonText(text))));
            return;
        }
        self.set(&path, Value::String(value.to_string()));
    }
}

/// Looks a path up in a document.
pub fn get<'v>(doc: &'v Value, path: &[Step<'_>]) -> Option<&'v Value> {
    path.iter().try_fold(doc, |node, step| lookup(node, *step))
}

fn lookup<'v>(node: &'v Value, step: Step<'_>) -> Option<&'v Value> {
    match (node, step) {
        (Value::Object(map), Step::Key(k)) => map.get(k),
        (Value::Array(items), Step::Index(i)) => items.get(i),
        _ => None,
    }
}

/// Whether `step` can be added under `parent`: a key under an object, an index or the end under an array.
fn fits(parent: &Value, step: Step<'_>) -> bool {
    matches!(
        (parent, step),
        (Value::Object(_), Step::Key(_)) | (Value::Array(_), Step::Index(_) | Step::End)
    )
}

/// A step's token, unescaped (the tests' reference for [`pointer_to`]).
#[cfg(test)]
fn step_token(step: &Step<'_>) -> String {
    match step {
        Step::Key(k) => (*k).to_string(),
        Step::Index(i) => i.to_string(),
        Step::End => "-".to_string(),
    }
}

/// An RFC 6901 pointer: `/` before each token, `~` escaped as `~0` and `/` as `~1` (the tests' reference for
/// [`pointer_to`]).
#[cfg(test)]
fn pointer(tokens: &[String]) -> String {
    let mut out = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for token in tokens {
        push_token(&mut out, token);
    }
    out
}

/// The RFC 6901 pointer to `path`: `/` before each step's token, `~` escaped as `~0` and `/` as `~1`.
fn pointer_to(path: &[Step<'_>]) -> String {
    let mut out = String::with_capacity(64);
    for step in path {
        match step {
            Step::Key(k) => push_token(&mut out, k),
            Step::Index(i) => {
                out.push('/');
                out.push_str(itoa::Buffer::new().format(*i));
            }
            Step::End => out.push_str("/-"),
        }
    }
    out
}

fn push_token(out: &mut String, token: &str) {
    out.push('/');
    // `~` and `/` are ASCII: the runs between them are whole characters.
    let mut start = 0;
    for (at, b) in token.bytes().enumerate() {
        let escaped = match b {
            b'~' => "~0",
            b'/' => "~1",
            _ => continue,
        };
        out.push_str(&token[start..at]);
        out.push_str(escaped);
        start = at + 1;
    }
    out.push_str(&token[start..]);
}

fn to_text<T: Serialize + ?Sized>(value: &T) -> JsonText {
    JsonText::of(value)
}

/// Wraps `value` in the containers `rest` describes: `[Key("a"), End]` gives `{"a": [value]}`.
fn nest(rest: &[Step<'_>], value: Value) -> Value {
    rest.iter().rev().fold(value, |inner, step| match step {
        Step::Key(k) => {
            let mut map = Map::new();
            map.insert((*k).to_string(), inner);
            Value::Object(map)
        }
        Step::Index(_) | Step::End => Value::Array(vec![inner]),
    })
}

/// Inserts `value` at `rel` inside a value this patch creates, making containers on the way.
fn insert_nested(root: &mut Value, rel: &[Step<'_>], value: Value) {
    let Some((last, parents)) = rel.split_last() else {
        *root = value;
        return;
    };
    let mut node = root;
    for (i, step) in parents.iter().enumerate() {
        let next_is_array = matches!(rel[i + 1], Step::Index(_) | Step::End);
        let empty = if next_is_array {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        };
        node = match (node, step) {
            (Value::Object(map), Step::Key(k)) => map.entry((*k).to_string()).or_insert(empty),
            (Value::Array(items), step) => {
                let index = match step {
                    Step::Index(i) if *i < items.len() => *i,
                    _ => {
                        items.push(empty);
                        items.len() - 1
                    }
                };
                &mut items[index]
            }
            _ => return,
        };
    }
    match (node, last) {
        (Value::Object(map), Step::Key(k)) => {
            map.insert((*k).to_string(), value);
        }
        (Value::Array(items), Step::Index(i)) => items.insert((*i).min(items.len()), value),
        (Value::Array(items), Step::End) => items.push(value),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
