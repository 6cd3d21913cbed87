//! The AdmissionReview wire format, `admission.k8s.io/v1` and `v1beta1`.
//!
//! Requests reuse kube's `Operation` and group/version/kind types but keep `object` as raw JSON text: a typed
//! round trip would drop fields this build does not know, the patch must be computed against exactly what the
//! apiserver holds, and the core parses of it only what it reads, by kind (`mutate::reads`). Responses are our own small struct because the apiserver wants `patch` as a base64 *string*
//! (kube's `AdmissionResponse` serialises it as an array of numbers, kube-rs issue 1781).

use base64::Engine;
use kube::core::{
    admission::Operation,
    gvk::{GroupVersionKind, GroupVersionResource},
};
use serde::{Deserialize, Serialize};
use serde_json::{error::Category, value::RawValue, Value};

use crate::patch::Patch;

/// `apiVersion` of v1 reviews.
pub const V1: &str = "admission.k8s.io/v1";
/// `apiVersion` of v1beta1 reviews.
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// The request part of an AdmissionReview.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Unique per call; echoed in the response.
    pub uid: String,
    /// The kind of the object.
    pub kind: GroupVersionKind,
    /// The resource being acted on.
    pub resource: Option<GroupVersionResource>,
    /// The subresource, if any (`status`, `exec`…).
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object name; empty when the object uses `generateName`.
    #[serde(default)]
    pub name: String,
    /// The namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: Operation,
    /// The object as the apiserver holds it, defaults applied: the JSON text as it came.
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    /// The old object (UPDATE, DELETE), as it came; never parsed, as only CREATE is mutated.
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
    /// A dry run is handled exactly like a real request (our sideEffects are None).
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl AdmissionRequest {
    /// The whole object as a `Value` (`entourage review` applies the patch to it).
    pub fn object_value(&self) -> Option<Value> {
        serde_json::from_str(self.object.as_ref()?.get()).ok()
    }
}

/// The envelope. `request` is kept as raw text and parsed once, straight into [`AdmissionRequest`]: parsing the
/// whole body into a `Value` and then deserialising `request` from it rebuilt every map of the object twice,
/// which was most of the cost of a review.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    request: Option<&'a RawValue>,
}

/// A decoded review: its version and its request.
#[derive(Debug, Clone)]
pub struct Review {
    /// The apiVersion the apiserver used; the answer uses the same.
    pub api_version: &'static str,
    /// The request.
    pub request: AdmissionRequest,
}

/// Why a body is not an AdmissionReview. Each becomes an HTTP 400 with this message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all, or truncated.
    #[error("body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but not an object with the review's fields.
    #[error("body is not an AdmissionReview: {0}")]
    NotAReview(serde_json::Error),
    /// `kind` is not `AdmissionReview`.
    #[error("kind is {0:?}, expected \"AdmissionReview\"")]
    WrongKind(String),
    /// `apiVersion` is not one we speak.
    #[error("apiVersion is {0:?}, expected \"admission.k8s.io/v1\" or \"admission.k8s.io/v1beta1\"")]
    WrongVersion(String),
    /// No `request` member.
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// `request` is there but malformed.
    #[error("AdmissionReview request is malformed: {0}")]
    BadRequest(serde_json::Error),
    /// `request.uid` is empty: the answer could not be matched to the call.
    #[error("AdmissionReview request has an empty uid")]
    EmptyUid,
}

/// A well-formed review, parsed in one pass straight into the typed request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewFast {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<AdmissionRequest>,
}

fn version(api_version: Option<&str>) -> Option<&'static str> {
    match api_version {
        Some(V1) => Some(V1),
        Some(V1BETA1) => Some(V1BETA1),
        _ => None,
    }
}

/// Decodes a request body.
pub fn decode(body: &[u8]) -> Result<Review, DecodeError> {
    // The apiserver's reviews take one pass. Whatever that pass refuses is decoded again, carefully, to say
    // exactly what is wrong; both paths build the request with the same deserialiser, so they agree.
    // One UTF-8 check of the whole body up front (fast on long runs) spares serde_json checking every string.
    let fast = std::str::from_utf8(body).ok().map(serde_json::from_str::<ReviewFast>);
    if let Some(Ok(ReviewFast {
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
    decode_carefully(body)
}

/// Decodes a body that is not a plain, well-formed review, and says what is wrong with it.
fn decode_carefully(body: &[u8]) -> Result<Review, DecodeError> {
    let review: ReviewIn = serde_json::from_slice(body).map_err(|e| match e.classify() {
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
    let request: AdmissionRequest = serde_json::from_str(review.request.ok_or(DecodeError::MissingRequest)?.get())
        .map_err(DecodeError::BadRequest)?;
    if request.uid.is_empty() {
        return Err(DecodeError::EmptyUid);
    }
    Ok(Review { api_version, request })
}

/// A denial's status, as metav1.Status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// Always `Failure` for a denial.
    pub status: &'static str,
    /// Shown to the user after "admission webhook ... denied the request:".
    pub message: String,
    /// `Invalid`: the object's annotations break a rule.
    pub reason: &'static str,
    /// HTTP-like code the apiserver returns to the user.
    pub code: u16,
}

/// The response part of an AdmissionReview.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Whether the object is admitted.
    pub allowed: bool,
    /// Why not, when denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch` when there is a patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The base64 of a JSON array of RFC 6902 operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to the kubectl user.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl AdmissionResponse {
    /// An answer allowing the object, with a patch only when it has operations.
    pub fn allow(uid: &str, patch: &Patch, warnings: Vec<String>) -> Self {
        let (patch_type, patch) = if patch.0.is_empty() {
            (None, None)
        } else {
            // A few KB for a typical injection: start there rather than grow from empty.
            let mut json = Vec::with_capacity(4096);
            serde_json::to_writer(&mut json, patch).expect("a patch of JSON values always serialises");
            (
                Some("JSONPatch"),
                Some(base64::engine::general_purpose::STANDARD.encode(json)),
            )
        };
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            patch_type,
            patch,
            warnings,
        }
    }

    /// An answer denying the object with a message for the user.
    pub fn deny(uid: &str, message: String, warnings: Vec<String>) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: false,
            status: Some(Status {
                status: "Failure",
                message,
                reason: "Invalid",
                code: 422,
            }),
            patch_type: None,
            patch: None,
            warnings,
        }
    }
}

/// A whole answer: the review envelope around a response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut {
    /// The version the request used.
    pub api_version: &'static str,
    /// `AdmissionReview`.
    pub kind: &'static str,
    /// The response.
    pub response: AdmissionResponse,
}

impl ReviewOut {
    /// Wraps a response in the request's version.
    pub fn new(api_version: &'static str, response: AdmissionResponse) -> Self {
        ReviewOut {
            api_version,
            kind: "AdmissionReview",
            response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn pod_review(version: &str) -> Value {
        json!({
            "apiVersion": version, "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default", "operation": "CREATE", "userInfo": {"username": "me"},
                "object": {"metadata": {"generateName": "web-"}, "spec": {"containers": []}},
                "dryRun": true
            }
        })
    }

    #[test]
    fn decodes_v1_and_v1beta1_and_remembers_which() {
        assert_eq!(decode(&body(pod_review(V1))).unwrap().api_version, V1);
        let r = decode(&body(pod_review(V1BETA1))).unwrap();
        assert_eq!(r.api_version, V1BETA1);
        assert_eq!(r.request.object_value().unwrap()["metadata"]["generateName"], "web-");
        assert_eq!(r.request.dry_run, Some(true));
    }

    #[test]
    fn refuses_what_is_not_a_review_with_a_precise_message() {
        let cases = [
            (b"{not json".to_vec(), "not valid JSON"),
            (body(json!([1, 2])), "not an AdmissionReview"),
            (body(json!({"apiVersion": V1, "kind": "Pod"})), "kind is \"Pod\""),
            (
                body(json!({"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview"})),
                "apiVersion is",
            ),
            (
                body(json!({"apiVersion": V1, "kind": "AdmissionReview"})),
                "has no request",
            ),
            (
                body(json!({"apiVersion": V1, "kind": "AdmissionReview", "request": {"uid": 5}})),
                "malformed",
            ),
        ];
        for (input, expected) in cases {
            let msg = decode(&input).unwrap_err().to_string();
            assert!(msg.contains(expected), "{expected:?} not in {msg:?}");
        }
    }

    #[test]
    fn member_order_does_not_matter_and_the_envelope_is_judged_before_the_request() {
        let request = r#"{"uid": "u-2", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE"}"#;
        let first = format!(r#"{{"request": {request}, "kind": "AdmissionReview", "apiVersion": "{V1}"}}"#);
        assert_eq!(decode(first.as_bytes()).unwrap().request.uid, "u-2");
        let wrong_kind = format!(r#"{{"request": {{"uid": 5}}, "kind": "Pod", "apiVersion": "{V1}"}}"#);
        assert!(matches!(decode(wrong_kind.as_bytes()), Err(DecodeError::WrongKind(k)) if k == "Pod"));
        let empty_uid = format!(
            r#"{{"apiVersion": "{V1}", "kind": "AdmissionReview", "request": {}}}"#,
            request.replace("u-2", "")
        );
        assert!(matches!(decode(empty_uid.as_bytes()), Err(DecodeError::EmptyUid)));
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(matches!(decode(deep.as_bytes()), Err(DecodeError::NotJson(_))));
    }

    #[test]
    fn patch_is_a_base64_string_and_only_present_when_non_empty() {
        let patch = Patch(vec![crate::patch::Operation {
            op: crate::patch::Op::Add,
            path: "/a".into(),
            value: serde_json::value::to_raw_value(&1).unwrap(),
        }]);
        let out = serde_json::to_value(ReviewOut::new(V1, AdmissionResponse::allow("u", &patch, vec![]))).unwrap();
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap(),
            json!([{"op": "add", "path": "/a", "value": 1}])
        );
        let empty = serde_json::to_value(AdmissionResponse::allow("u", &Patch::default(), vec![])).unwrap();
        assert_eq!(empty, json!({"uid": "u", "allowed": true}));
    }
}
