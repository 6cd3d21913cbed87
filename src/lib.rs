//! entourage: a Kubernetes mutating admission webhook (tour written with the spine).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapt;
pub mod proxy;
