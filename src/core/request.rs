//! The admission request as the core sees it: kind, operation, subresource, names and the object. The wire
//! format (`admission`) decodes it from an AdmissionReview; the core never sees JSON text or HTTP.

use kube::core::{admission::Operation, gvk::GroupVersionKind};
use serde_json::Value;

/// The request part of an AdmissionReview: the members entourage uses. The others (`resource`, `requestKind`,
/// `userInfo`, `options`, `oldObject`…) are checked as JSON and skipped: the core decides by kind, operation,
/// subresource and object alone.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    /// Unique per call; echoed in the response.
    pub uid: String,
    /// The kind of the object.
    pub kind: GroupVersionKind,
    /// The subresource, if any (`status`, `exec`…).
    pub sub_resource: Option<String>,
    /// The object name; empty when the object uses `generateName`.
    pub name: String,
    /// The namespace.
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: Operation,
    /// The object as the apiserver holds it, defaults applied. `admission::decode_reading` parses only what its
    /// `ObjectReads` names (the webhook's: `mutate::object_reads`, a Pod's annotations, containers…, a Job
    /// whole, nothing of other kinds); `admission::decode_whole` and the `Deserialize` impl parse all of it. `oldObject`
    /// is never parsed: only CREATE is mutated.
    pub object: Option<Value>,
    /// A dry run is handled exactly like a real request (our sideEffects are None).
    pub dry_run: Option<bool>,
}
