//! The Latchkey wire contracts, generated from `proto/` at build time.
//!
//! - [`v1`]: the device service spoken between agent and management server (gRPC over mTLS).
//! - [`bridge::v1`]: the local-socket protocol through which an out-of-process platform bridge
//!   implements the agent's OS port.
//! - [`convert`]: the one mapping between wire types and `latchkey-platform` types.
//! - `redact`: hand-written `Debug` impls for every message that carries a secret.
#![forbid(unsafe_code)]
#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// The device service (`latchkey.v1`).
pub mod v1 {
    tonic::include_proto!("latchkey.v1");
}

/// The platform bridge protocol (`latchkey.bridge.v1`).
pub mod bridge {
    /// Version 1 of the bridge protocol.
    pub mod v1 {
        tonic::include_proto!("latchkey.bridge.v1");
    }
}

pub mod codec;
pub mod convert;
mod redact;

pub use redact::scrub;

/// Largest bridge frame either side accepts.
pub const MAX_BRIDGE_FRAME: usize = 1 << 20;
