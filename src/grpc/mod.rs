//! The gRPC edge: the only module that sees protobuf types. Requests are
//! validated and converted here, errors mapped to `Status` in one place.

pub mod auth;
pub mod codec;
pub mod convert;
pub mod mask;
pub mod page;
pub mod service;
pub mod status;
pub mod watch;
pub mod wire;
