//! gRPC's status codes, as the protocol numbers and spells them: what the ambassador answers with, and the
//! `status` label of its gRPC metric. Apart from `grpc`, which counts calls in `metrics`, so that `metrics` can
//! name the statuses without using `grpc`.

/// `CANCELLED`: the client went away.
pub const CANCELLED: u16 = 1;
/// `UNKNOWN`: the response ended without a status.
pub const UNKNOWN: u16 = 2;
/// `DEADLINE_EXCEEDED`: `grpc-timeout` ran out.
pub const DEADLINE_EXCEEDED: u16 = 4;
/// `RESOURCE_EXHAUSTED`: the concurrency cap is reached.
pub const RESOURCE_EXHAUSTED: u16 = 8;
/// `UNAVAILABLE`: the upstream cannot be reached now; the one status a client may retry safely.
pub const UNAVAILABLE: u16 = 14;

/// The status names, by code (0-16), as gRPC spells them; the `status` label of the gRPC metric.
pub const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
