//! Small shared support, used by every program and depending on nothing else in the crate: the webhooks' caBundle
//! patch, one shutdown signal, one duration grammar, the Kubernetes name rules, the ambassador's upstream protocol
//! values, and the polling of files Kubernetes mounts.

pub mod cabundle;
pub mod duration;
pub mod mounted;
pub mod names;
pub mod protocol;
pub mod shutdown;
