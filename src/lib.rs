//! entourage gives annotated Pods their entourage — log-streaming sidecars, JSON log adapters and proxy
//! ambassadors — and gives Jobs and CronJobs safe defaults, as a Kubernetes mutating admission webhook.
//!
//! # The path of one request
//! 1. [`webhook::accept`] accepts a TLS connection (rustls, HTTP/1.1 or h2); the router of [`webhook::server`]
//!    reads `POST /mutate` (≤ 8 MiB).
//! 2. [`admission::decode`] turns the body into a [`admission::Review`] in one pass, parsing of the object only what
//!    the core reads ([`core::reads`], [`admission::pruned`]); a body that is not a review, or whose object holds a
//!    member the core reads with another type, is a 400.
//! 3. [`core::mutate::mutate`] — pure and synchronous — dispatches by kind: [`core::mutate::pod`] parses the
//!    [`core::annotations`] (with the settings of its [`core::mutate::profile`]), picks the app container
//!    ([`core::mutate::target`]) and plans containers, volumes, mounts and env; [`core::mutate::job`] applies
//!    defaults. [`core::patch::PatchBuilder`] turns the plan into RFC 6902 operations for exactly that object.
//! 4. [`admission::answer`] turns the verdict into the review's answer (base64 patch, warnings), in the review's
//!    own version; one log line records the decision.
//!
//! # Folders, and the rule that holds them
//! - [`support`]: one shutdown signal, one duration grammar, the Kubernetes name rules. Depends on nothing.
//! - [`core`]: config, annotations, mutation, patch building. Synchronous: no tokio, axum, hyper, file system or
//!   clock. Depends on `support`.
//! - [`admission`]: the AdmissionReview wire format (decoders, answer, writer); not to be confused with the
//!   `review` command of [`offline`], which runs it on a file. Depends on `core` and `support`.
//! - [`follow`]: the log follower both readers share (position, disk give-back, drain). A runtime layer below
//!   the programs: it may use `core` and `support`, never a program.
//! - The programs, one folder each: [`webhook`] (`serve`), [`adapter`] (`adapt`), [`streamer`] (`stream`),
//!   [`ambassador`] (`ambassador`), [`offline`] (`inject`, `review`), [`certs`] (`certs`), [`doctor`]
//!   (`doctor`), [`watchdog`] (`watchdog`). A program may use `follow`, `admission`, `core` and `support`, never
//!   another program.
//!
//! Unit tests hold to the same rule as the module they test; a test that needs two programs is an integration
//! test in `tests/`. `tests/repo_layering.rs` follows every `mod` from this file, as the compiler does, reads the
//! `crate::…` and `super::…` paths of every module, test modules included, and fails on an arrow that points up
//! or between two programs. [`cli`] is the one command line, above every program; `src/main.rs` parses it and
//! dispatches to the programs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod support;

pub mod core;

pub mod admission;

pub mod follow;

pub mod adapter;
pub mod ambassador;
pub mod certs;
pub mod doctor;
pub mod offline;
pub mod streamer;
pub mod watchdog;
pub mod webhook;

pub mod cli;
