//! entourage gives annotated Pods their entourage — log-streaming sidecars, JSON log adapters and proxy
//! ambassadors — and gives Jobs and CronJobs safe defaults, as a Kubernetes mutating admission webhook.
//!
//! # The path of one request
//! 1. [`server`] accepts a TLS connection (rustls, HTTP/1.1 or h2) and reads `POST /mutate` (body ≤ 8 MiB).
//! 2. [`mutate::decode`] turns the body into a [`admission::Review`] in one pass, parsing of the object only what
//!    the core reads ([`reads`]); a body that is not a review is a 400.
//! 3. [`mutate::mutate`] — pure and synchronous — dispatches by kind: [`mutate::pod`] parses the
//!    [`annotations`] and plans containers, volumes, mounts and env; [`mutate::job`] applies defaults.
//!    [`patch::PatchBuilder`] turns the plan into RFC 6902 operations that apply to exactly that object.
//! 4. [`admission::AdmissionResponse`] carries the verdict, the base64 patch and warnings back, in the
//!    review's own version; one log line records the decision.
//!
//! # Modules, dependencies pointing down
//! [`config`] → [`annotations`] → [`patch`] → [`reads`] → [`admission`] → [`mutate`] → [`server`] (with
//! [`tls`] and [`certs`]); [`reload`] re-reads certificate and config while serving, [`cabundle`] writes the CA into the
//! webhook configuration at start, [`offline`] runs the same core on files (`entourage inject`, `review`); the
//! container runtimes [`adapt`] and [`proxy`] stand apart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapt;
pub mod admission;
pub mod annotations;
pub mod cabundle;
pub mod certs;
pub mod config;
pub mod jsonlog;
pub mod logsink;
pub mod metrics;
pub mod mutate;
pub mod offline;
pub mod patch;
pub mod proxy;
pub mod reads;
pub mod reload;
pub mod server;
pub mod tls;
