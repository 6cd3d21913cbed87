//! The synchronous core: config, annotations, mutation and patch building. Object and config in; verdict, patch
//! and warnings out. No tokio, axum, hyper, file system or clock: the webhook, the offline tools and the tests
//! all call [`mutate::mutate`].
//!
//! Inside, dependencies point down this list: [`config`] (with [`logformat`], the grammar the adapter shares) →
//! [`annotations`] → [`reads`], [`request`], [`patch`] → [`mutate`] → [`limits`].

pub mod annotations;
pub mod config;
pub mod limits;
pub mod logformat;
pub mod mutate;
pub mod patch;
pub mod reads;
pub mod request;
