//! peace-tracker: a gRPC service that tracks a negotiated peace plan clause by
//! clause, with every change kept as a revision and live, resumable watches.
//!
//! # Layout
//! - [`domain`]: plans, clauses, stances, revisions, consensus, limits, analysis. Pure, no I/O.
//! - [`store`]: sled key layout, reads at a revision, the committer (the one writer).
//! - [`hub`]: the in-memory ring of committed revisions that live watchers follow.
//! - [`grpc`]: the only place that sees protobuf: service, conversions, auth, watch feeder.
//! - [`seed`]: the seeded plans as data, loaded through the normal write path.
//! - [`server`]: wiring, serving and shutdown; [`coalesce`]: write coalescing under HTTP/2.
//! - [`error`]: the one error enum of domain and store.

pub mod coalesce;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod hub;
pub mod seed;
pub mod server;
pub mod store;

/// Generated protobuf types and gRPC stubs for `peace.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("peace.v1");
    pub use crate::grpc::wire::{watch_event, WatchEvent};
}
