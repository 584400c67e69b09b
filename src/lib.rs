//! `latchkey`: the device-side MDM agent as a library, so many agents can run in one process
//! (the fleet benchmark). It never links the reference server.
//!
//! - [`config`]: TOML configuration with `config.d/` drop-ins, checked apart from parsing.
//! - [`identity`]: the device key (made here, never sent) and certificate, one atomic file;
//!   [`certificate`]: the expiry, subject and key read from that certificate.
//! - [`secrets`]: the 0600 file secret store.
//! - [`journal`]: the SQLite command journal and its transition table.
//! - [`executor`]: validation of wire commands and their execution through the platform port.
//! - [`lifecycle`]: reset-token and unlock-token lifecycles.
//! - [`ports`]: choosing the OS port; [`bridge`]: the out-of-process port protocol.
//! - [`link`]: the server seam (`ServerLink`), the link's state machine and its driver.
//! - [`transport`]: the wire over TLS 1.3 — native gRPC and Apple MDM over HTTPS; the only
//!   tonic, hyper and rustls user.
//! - [`apple`]: Apple's MDM protocol: the enrollment profile and the plist messages.
//! - [`device`]: the device side of the link (check-ins, escrow, results, renewal).
//! - [`worker`]: the command worker; [`watchdog`]: liveness for the service manager.
//! - [`agent`]: the daemon; [`control`] and [`status`]: `latchkey status`; [`systemd`]:
//!   readiness notification.
//! - [`enroll`]: joining and leaving management; [`check`]: offline diagnostics.
#![forbid(unsafe_code)]

pub mod agent;
pub mod apple;
pub mod bridge;
pub mod certificate;
pub mod check;
pub mod config;
pub mod control;
pub mod device;
pub mod enroll;
pub mod executor;
pub mod identity;
pub mod journal;
pub mod lifecycle;
pub mod link;
pub mod ports;
pub mod secrets;
pub mod status;
pub mod systemd;
pub mod transport;
pub mod watchdog;
pub mod worker;

pub use latchkey_common::time::now_ms;
