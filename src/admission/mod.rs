//! The AdmissionReview wire format, `admission.k8s.io/v1` and `v1beta1` (the `entourage review` command, which
//! runs it on a file, is `crate::offline`).
//!
//! Requests reuse kube's `Operation` and group/version/kind types but keep `object` as raw JSON text: a typed
//! round trip would drop fields this build does not know, the patch must be computed against exactly what the
//! apiserver holds, and the webhook parses of it only what the core reads, by kind (`reads`). Responses are our
//! own small struct because the apiserver wants `patch` as a base64 *string* (kube's `AdmissionResponse`
//! serialises it as an array of numbers, kube-rs issue 1781).
//!
//! - [`decode`](mod@decode): a body in, a [`Review`] or the [`DecodeError`] that says why not.
//! - [`answer`](mod@answer): the core's outcome out, as the review's answer.

mod answer;
mod decode;
mod members;
pub mod pruned;

pub use answer::{answer, AdmissionResponse, Decision, ReviewOut, Status};
pub use decode::{decode, decode_reading, decode_whole, ObjectReads};

/// `apiVersion` of v1 reviews.
pub const V1: &str = "admission.k8s.io/v1";
/// `apiVersion` of v1beta1 reviews.
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

pub use crate::core::request::AdmissionRequest;

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

#[cfg(test)]
mod tests;
