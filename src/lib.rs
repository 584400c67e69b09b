//! `latchkey`: the device-side MDM agent as a library, so many agents can run in one process.
//!
//! - [`config`]: TOML configuration with `config.d/` drop-ins, checked apart from parsing.
//! - [`identity`]: the device key (made here, never sent) and certificate, stored atomically.
//! - [`secrets`]: the 0600 file secret store.
//! - [`transport`]: TLS 1.3 client, tonic channel, reconnect backoff — the only tonic user.
//! - [`journal`]: the SQLite command journal and its transition table.
//! - [`executor`]: validation of wire commands and their execution through the platform port.
//! - [`lifecycle`]: reset-token and unlock-token lifecycles.
//! - [`ports`]: choosing the OS port; [`bridge`]: the out-of-process port protocol.
//! - [`agent`]: the daemon loop; [`control`]: the `latchkey status` socket; [`systemd`]: readiness
//!   and watchdog notification.
//! - [`enroll`], [`check`], [`policy_cmd`], [`sim_cmd`]: the other CLI commands.
//! - `demo` (feature `demo`): the embedded end-to-end demonstration.
#![forbid(unsafe_code)]

pub mod agent;
pub mod bridge;
pub mod check;
pub mod config;
pub mod control;
#[cfg(feature = "demo")]
pub mod demo;
pub mod enroll;
pub mod executor;
pub mod identity;
pub mod journal;
pub mod lifecycle;
pub mod policy_cmd;
pub mod ports;
pub mod secrets;
pub mod sim_cmd;
pub mod systemd;
pub mod transport;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
