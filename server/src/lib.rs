//! `latchkey-server`: the reference management server and its admin commands.
//!
//! - [`ca`]: the enrollment CA (ECDSA P-256), the server's TLS identity, signing device CSRs.
//! - [`tls`]: the TLS 1.3-only rustls server config with optional client certificates.
//! - [`db`]: the SQLite (WAL) store: enrollment tokens, devices, command queue, results, escrow,
//!   temporary passcodes.
//! - [`hub`]: which devices hold a push stream, and waking them when work is queued.
//! - [`service`]: the `latchkey.v1.DeviceService` gRPC implementation.
//! - [`admin`]: the admin operations behind the CLI (tokens, actions, listings).
//! - [`serve`]: binding, accepting TLS, the admin wake socket, shutdown.
#![forbid(unsafe_code)]

pub mod admin;
pub mod ca;
pub mod db;
pub mod hub;
pub mod serve;
pub mod service;
pub mod tls;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
