//! Decoding a review body: in one pass over its text for the apiserver's reviews, carefully for anything else, so
//! that a body that is not a review gets a 400 saying exactly what is wrong.

use kube::core::{admission::Operation, gvk::GroupVersionKind};
use std::{cell::Cell, fmt, marker::PhantomData};

use serde::{
    de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor},
    Deserialize,
};
use serde_json::{error::Category, value::RawValue, Value};

use super::{
    members,
    pruned::{from_str_seed, JsonType, Key, Names, Pruned, Reads, Skip},
    AdmissionRequest, DecodeError, Review, V1, V1BETA1,
};
use crate::core::{config::Config, mutate};

/// Decodes a review body for [`mutate::mutate`] under `config`, in one pass, parsing of the object only what the core
/// reads of it ([`mutate::object_reads`], and of env lists the names [`mutate::reads_env`] looks up); a body that is
/// not a review is a [`DecodeError`].
pub fn decode(body: &[u8], config: &Config) -> Result<Review, DecodeError> {
    let names = |name: &str| mutate::reads_env(name, config);
    decode_reading(
        body,
        ObjectReads {
            parts: mutate::object_reads,
            names: &names,
        },
    )
}

/// What [`decode_reading`] parses of a request's object.
#[derive(Clone, Copy)]
pub struct ObjectReads<'a> {
    /// Which parts, from the request's kind, operation and subresource; `None` for nothing.
    pub parts: fn(&GroupVersionKind, &Operation, Option<&str>) -> Option<&'static Reads>,
    /// Which elements of [`Reads::EachNamed`] arrays.
    pub names: Names<'a>,
}

impl<'a> ObjectReads<'a> {
    fn pruned<'m>(
        self,
        kind: &GroupVersionKind,
        operation: &Operation,
        sub: Option<&str>,
        mismatch: &'m Cell<bool>,
    ) -> Option<Pruned<'m>>
    where
        'a: 'm,
    {
        let reads = (self.parts)(kind, operation, sub)?;
        Some(Pruned {
            reads,
            names: self.names,
            mismatch,
        })
    }
}

/// How much of `request.object` a decode parses.
#[derive(Clone, Copy)]
enum ObjectParse<'a> {
    /// What its [`ObjectReads`] says.
    Reading(ObjectReads<'a>),
    /// All of it.
    Whole,
}

impl<'de> Deserialize<'de> for AdmissionRequest {
    /// Parses the object whole (tests and tools build requests this way).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RequestSeed(ObjectParse::Whole).deserialize(deserializer)
    }
}

/// Deserialises a request in one pass over its text. The apiserver writes `kind` and `operation` before
/// `object`, so by the time the object comes the decoder knows what the core will read of it and parses only
/// that, while scanning it for the first and only time. Should the object come first, its text is kept and
/// parsed the same way at the end of the request.
#[derive(Clone, Copy)]
struct RequestSeed<'a>(ObjectParse<'a>);

/// The request's members, as serde's derive would name them for the errors.
const REQUEST_FIELDS: &[&str] = &[
    "uid",
    "kind",
    "subResource",
    "name",
    "namespace",
    "operation",
    "object",
    "oldObject",
    "dryRun",
];

/// `request.object` and `request.oldObject` are Kubernetes objects, or null (a DELETE has no `object`, a
/// CREATE no `oldObject`). No apiserver sends anything else; a review that does is not a review of an object, and
/// answering it `allowed` would let it pass silently.
fn object_or_null<E: serde::de::Error>(member: &str, found: JsonType) -> Result<(), E> {
    match found {
        JsonType::Object | JsonType::Null => Ok(()),
        other => Err(E::custom(format_args!(
            "request.{member} is {}, expected a JSON object or null",
            other.described()
        ))),
    }
}

/// [`object_or_null`] of a parsed member.
fn parsed_object_or_null<E: serde::de::Error>(member: &str, value: Option<Value>) -> Result<Option<Value>, E> {
    object_or_null(member, value.as_ref().map_or(JsonType::Null, JsonType::of))?;
    Ok(value)
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = AdmissionRequest;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<AdmissionRequest, D::Error> {
        deserializer.deserialize_struct("AdmissionRequest", REQUEST_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = AdmissionRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AdmissionRequest, A::Error> {
        /// Reads the member's value into its slot; a member given twice is an error, as with serde's derive.
        fn take<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
            map: &mut A,
            slot: &mut Option<T>,
            name: &'static str,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(serde::de::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }
        let mut uid: Option<String> = None;
        let mut kind: Option<members::Gvk> = None;
        let mut sub_resource: Option<Option<String>> = None;
        let mut name: Option<String> = None;
        let mut namespace: Option<Option<String>> = None;
        let mut operation: Option<members::Op> = None;
        let mut object: Option<Option<Value>> = None;
        // An object met before the kind and operation: its text, parsed at the end. Only `decode_reading`
        // parses by kind, and always with serde_json, which can lend the text.
        let mut pending: Option<Option<Box<RawValue>>> = None;
        // Set by the pruned parse when a value it kept has another type than its node reads.
        let mismatch = Cell::new(false);
        let mut dry_run: Option<Option<bool>> = None;
        let mut old_object = false;
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "uid" => take(&mut map, &mut uid, "uid")?,
                "kind" => take(&mut map, &mut kind, "kind")?,
                "subResource" => take(&mut map, &mut sub_resource, "subResource")?,
                "name" => take(&mut map, &mut name, "name")?,
                "namespace" => take(&mut map, &mut namespace, "namespace")?,
                "operation" => take(&mut map, &mut operation, "operation")?,
                "dryRun" => take(&mut map, &mut dry_run, "dryRun")?,
                // The core reads nothing of the old object: its type is checked, the rest only parsed.
                "oldObject" => {
                    if std::mem::replace(&mut old_object, true) {
                        return Err(serde::de::Error::duplicate_field("oldObject"));
                    }
                    object_or_null("oldObject", map.next_value_seed(Skip)?)?;
                }
                "object" => {
                    if object.is_some() || pending.is_some() {
                        return Err(serde::de::Error::duplicate_field("object"));
                    }
                    match (self.0, kind.as_ref().map(|k| &k.0), operation.as_ref().map(|o| &o.0)) {
                        (ObjectParse::Whole, _, _) => {
                            object = Some(parsed_object_or_null("object", map.next_value()?)?);
                        }
                        (ObjectParse::Reading(object_reads), Some(kind), Some(operation)) => {
                            let sub = sub_resource.as_ref().and_then(Option::as_deref);
                            object = Some(match object_reads.pruned(kind, operation, sub, &mismatch) {
                                Some(pruned) => {
                                    parsed_object_or_null("object", map.next_value_seed(OptionSeed(pruned))?)?
                                }
                                None => {
                                    object_or_null("object", map.next_value_seed(Skip)?)?;
                                    None
                                }
                            });
                        }
                        (ObjectParse::Reading(_), _, _) => pending = Some(map.next_value()?),
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let uid = uid.ok_or_else(|| serde::de::Error::missing_field("uid"))?;
        let kind = kind.ok_or_else(|| serde::de::Error::missing_field("kind"))?.0;
        let operation = operation.ok_or_else(|| serde::de::Error::missing_field("operation"))?.0;
        let sub_resource = sub_resource.flatten();
        if let (Some(Some(text)), ObjectParse::Reading(object_reads)) = (pending, self.0) {
            let text = text.get();
            match object_reads.pruned(&kind, &operation, sub_resource.as_deref(), &mismatch) {
                Some(pruned) => {
                    let value = from_str_seed(text, pruned).map_err(serde::de::Error::custom)?;
                    object = Some(parsed_object_or_null("object", Some(value))?);
                }
                None => object_or_null("object", from_str_seed(text, Skip).map_err(serde::de::Error::custom)?)?,
            }
        }
        let object = object.flatten();
        // Every member the core reads must have the type it reads; parsed whole or in part, the object holds all
        // of them. One check, here, for every path through the decoder: of an object parsed in part, only when a
        // value was kept with another type than its node reads (the parse asked `Reads::admits` of each).
        let reads = match self.0 {
            ObjectParse::Reading(_) if !mismatch.get() => None,
            ObjectParse::Reading(object_reads) => (object_reads.parts)(&kind, &operation, sub_resource.as_deref()),
            ObjectParse::Whole => mutate::object_reads(&kind, &operation, sub_resource.as_deref()),
        };
        if let (Some(reads), Some(object)) = (reads, &object) {
            reads
                .check(object)
                .map_err(|e| <A::Error as serde::de::Error>::custom(format_args!("request.object.{e}")))?;
        }
        Ok(AdmissionRequest {
            uid,
            kind,
            sub_resource,
            name: name.unwrap_or_default(),
            namespace: namespace.flatten(),
            operation,
            object,
            dry_run: dry_run.flatten(),
        })
    }
}

/// A review's envelope, with `request` as its seed makes it: the request itself (the one-pass decode), or its raw
/// text for the careful decode, parsed once on its own so that what is wrong with it can be told apart from what
/// is wrong with the envelope.
struct Envelope<R> {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<R>,
}

/// Deserialises an envelope, handing `request` to the seed `S`. Only an object is an envelope (a derived struct
/// would also take an array of its members).
#[derive(Clone, Copy)]
struct EnvelopeSeed<S>(S);

impl<'de, R, S: DeserializeSeed<'de, Value = Option<R>> + Copy> DeserializeSeed<'de> for EnvelopeSeed<S> {
    type Value = Envelope<R>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Envelope<R>, D::Error> {
        deserializer.deserialize_struct("AdmissionReview", &["apiVersion", "kind", "request"], self)
    }
}

impl<'de, R, S: DeserializeSeed<'de, Value = Option<R>> + Copy> Visitor<'de> for EnvelopeSeed<S> {
    type Value = Envelope<R>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionReview object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<R>, A::Error> {
        let mut review = Envelope {
            api_version: None,
            kind: None,
            request: None,
        };
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "apiVersion" => review.api_version = map.next_value()?,
                "kind" => review.kind = map.next_value()?,
                "request" => review.request = map.next_value_seed(self.0)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(review)
    }
}

/// `null` or what the inner seed makes of the value.
#[derive(Clone, Copy)]
struct OptionSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a value")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

fn version(api_version: Option<&str>) -> Option<&'static str> {
    match api_version {
        Some(V1) => Some(V1),
        Some(V1BETA1) => Some(V1BETA1),
        _ => None,
    }
}

/// Decodes a request body, parsing of the object only what `object_reads` names (the webhook decodes with
/// `mutate::decode`, which passes the core's).
pub fn decode_reading(body: &[u8], object_reads: ObjectReads<'_>) -> Result<Review, DecodeError> {
    decode_with(body, ObjectParse::Reading(object_reads))
}

/// Decodes a request body with the whole object (`entourage review` applies the patch to it).
pub fn decode_whole(body: &[u8]) -> Result<Review, DecodeError> {
    decode_with(body, ObjectParse::Whole)
}

fn decode_with(body: &[u8], parse: ObjectParse<'_>) -> Result<Review, DecodeError> {
    // The apiserver's reviews take one pass. Whatever that pass refuses is decoded again, carefully, to say
    // exactly what is wrong; both paths build the request with the same deserialiser, so they agree.
    // One UTF-8 check of the whole body up front (fast on long runs) spares serde_json checking every string.
    let fast = std::str::from_utf8(body)
        .ok()
        .map(|text| from_str_seed(text, EnvelopeSeed(OptionSeed(RequestSeed(parse)))));
    if let Some(Ok(Envelope {
        api_version,
        kind: Some(kind),
        request: Some(request),
    })) = fast
    {
        if let Some(api_version) = version(api_version.as_deref()) {
            if kind == "AdmissionReview" && !request.uid.is_empty() {
                return Ok(Review { api_version, request });
            }
        }
    }
    decode_carefully(body, parse)
}

/// Decodes a body that is not a plain, well-formed review, and says what is wrong with it.
fn decode_carefully(body: &[u8], parse: ObjectParse<'_>) -> Result<Review, DecodeError> {
    let careful = EnvelopeSeed(PhantomData::<Option<&RawValue>>);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = careful.deserialize(&mut deserializer).and_then(|review| {
        deserializer.end()?;
        Ok(review)
    });
    let review = parsed.map_err(|e| match e.classify() {
        // A `Value` (not `IgnoredAny`) so that JSON nested deeper than serde_json's limit still counts as not JSON.
        Category::Data => match serde_json::from_slice::<Value>(body) {
            // Well-formed JSON of the wrong shape.
            Ok(_) => DecodeError::NotAReview(e),
            // The shape was wrong before the syntax was (`[[[…` too deep, an array cut short…).
            Err(syntax) => DecodeError::NotJson(syntax),
        },
        _ => DecodeError::NotJson(e),
    })?;
    let kind = review.kind.unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(DecodeError::WrongKind(kind));
    }
    let Some(api_version) = version(review.api_version.as_deref()) else {
        return Err(DecodeError::WrongVersion(review.api_version.unwrap_or_default()));
    };
    let text = review.request.ok_or(DecodeError::MissingRequest)?.get();
    let request = from_str_seed(text, RequestSeed(parse)).map_err(DecodeError::BadRequest)?;
    if request.uid.is_empty() {
        return Err(DecodeError::EmptyUid);
    }
    Ok(Review { api_version, request })
}
