//! The answer to a review: the core's outcome in the review's own version, with a base64 patch and warnings.

use serde::Serialize;

use super::Review;
use crate::core::{mutate, patch::Patch};

/// What became of a review, for the log line and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed unchanged.
    Allowed,
    /// Allowed with a patch.
    Patched,
    /// Denied.
    Denied,
}

impl Decision {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Patched => "patched",
            Decision::Denied => "denied",
        }
    }
}

/// The one place a decision becomes an answer: the core's `outcome` for `review`, in the review's own version,
/// with the review's uid. The warnings move into the answer (only their number is left to log).
pub fn answer(review: &Review, outcome: &mut mutate::Outcome) -> (Decision, ReviewOut) {
    let uid = &review.request.uid;
    let warnings = std::mem::take(&mut outcome.warnings);
    let (decision, response) = match &outcome.verdict {
        mutate::Verdict::Allow if outcome.patch.0.is_empty() => (
            Decision::Allowed,
            AdmissionResponse::allow(uid, &outcome.patch, warnings),
        ),
        mutate::Verdict::Allow => (
            Decision::Patched,
            AdmissionResponse::allow(uid, &outcome.patch, warnings),
        ),
        mutate::Verdict::Deny(message) => (
            Decision::Denied,
            AdmissionResponse::deny(uid, message.clone(), warnings),
        ),
    };
    (decision, ReviewOut::new(review.api_version, response))
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
            let json = patch.to_json();
            (
                Some("JSONPatch"),
                // SIMD: a scalar encoder spent ≈ 1 µs per review on the few KB of a typical patch.
                Some(base64_simd::STANDARD.encode_to_string(json)),
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

impl ReviewOut {
    /// The answer as JSON: exactly what `serde_json::to_vec` writes, but the base64 patch (a few KB, and the
    /// only long string) is copied as it is instead of being scanned for characters to escape; base64 has none.
    pub fn to_vec(&self) -> Vec<u8> {
        let r = &self.response;
        let mut out = Vec::with_capacity(r.patch.as_ref().map_or(0, String::len) + 256);
        let string = crate::core::patch::push_json_bytes;
        out.extend_from_slice(br#"{"apiVersion":"#);
        string(&mut out, self.api_version);
        out.extend_from_slice(br#","kind":"#);
        string(&mut out, self.kind);
        out.extend_from_slice(br#","response":{"uid":"#);
        string(&mut out, &r.uid);
        out.extend_from_slice(if r.allowed {
            br#","allowed":true"#
        } else {
            br#","allowed":false"#
        });
        if let Some(status) = &r.status {
            out.extend_from_slice(br#","status":"#);
            serde_json::to_writer(&mut out, status).expect("a status serialises");
        }
        if let Some(patch_type) = r.patch_type {
            out.extend_from_slice(br#","patchType":"#);
            string(&mut out, patch_type);
        }
        if let Some(patch) = &r.patch {
            debug_assert!(patch.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
            out.extend_from_slice(br#","patch":""#);
            out.extend_from_slice(patch.as_bytes());
            out.push(b'"');
        }
        if !r.warnings.is_empty() {
            out.extend_from_slice(br#","warnings":"#);
            serde_json::to_writer(&mut out, &r.warnings).expect("strings serialise");
        }
        out.extend_from_slice(b"}}");
        out
    }
}
