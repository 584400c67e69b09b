//! `latchkey-server`: the reference management server and its admin operations.
//!
//! - [`datadir`]: the data directory, its lock, and refusing a directory that is not one.
//! - [`ca`]: the enrollment CA (ECDSA P-256), the server's TLS identity, signing device CSRs.
//! - [`tls`]: the TLS 1.3-only rustls server config with optional client certificates.
//! - [`vault`]: sealing escrowed tokens and passcodes before they are stored.
//! - [`records`]: the typed records the server keeps.
//! - [`store`]: the storage interface and its SQLite backend.
//! - [`hub`]: which devices hold a push stream, waking and closing them, last-seen batching.
//! - [`service`]: the `latchkey.v1.DeviceService` gRPC implementation.
//! - [`limits`]: bounds on what devices and admins may send.
//! - [`admin`]: the admin operations behind the CLI (tokens, actions with prediction, retire).
//! - [`metrics`]: Prometheus metrics.
//! - [`serve`]: binding, accepting TLS, the admin socket, the sweeper, health, shutdown.
//!
//! Architecture invariant: the server never decides platform behaviour itself. It asks the
//! platform crate which command a request becomes ([`latchkey_platform::request::plan`]) and what
//! a device would answer ([`latchkey_platform::decide`]); it queues, delivers and records.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_socket;
pub mod ca;
pub mod datadir;
pub mod hub;
pub mod known_certs;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod records;
pub mod serve;
pub mod service;
pub mod store;
pub mod tls;
pub mod vault;

pub use latchkey_common::time::now_ms;
