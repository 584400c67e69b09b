//! Latchkey's platform layer: what each managed platform allows, decided by pure functions, and
//! the narrow OS port through which those decisions take effect.
//!
//! - [`secret`]: passcode and token holders that zero on drop and never print.
//! - [`facts`]: what a device is (platform, API level, management mode) and its credential state.
//! - [`policy`]: the passcode-policy engine in three dialects (Android, Apple, Windows) and the
//!   parsers for each platform's own policy documents.
//! - [`action`] and [`outcome`]: the commands an adapter decides on and the results it reports.
//! - [`request`]: which command a device receives for what an admin asks (iOS reset = removal).
//! - [`matrix`]: SPEC §3 as one table of rows, driving the unit tests, the end-to-end tests and
//!   the demo.
//! - [`decide`]: the platform matrix — `decide(snapshot, action) -> Decision`, no I/O.
//! - [`port`]: the OS port trait; [`execute`] carries a decision out through a port.
//! - [`sim`]: the device simulator, a real port with a persisted state file.
//! - [`linux`]: the real Linux port (local account password through crypt, session lock).
//! - [`atomic`]: crash-safe file replacement.
//!
//! Architecture invariant: this crate does no networking and no SQL.
#![forbid(unsafe_code)]

pub mod action;
pub mod atomic;
pub mod decide;
pub mod execute;
pub mod facts;
pub mod linux;
pub mod matrix;
pub mod outcome;
pub mod policy;
pub mod port;
pub mod request;
pub mod secret;
pub mod sim;

pub use action::{Action, LockRequest, ResetFlags, Scope};
pub use decide::{decide, Decision, Plan};
pub use facts::{DeviceFacts, DeviceState, ManagementMode, Platform, ResetTokenState};
pub use outcome::{ErrorCode, Outcome, Status};
pub use port::{DevicePort, LockReport, MessageResult, PinReport, PortError, PortSnapshot};
pub use secret::{Secret, SecretBytes};
