//! The agent's side of the server connection, in any wire dialect.
//!
//! [`ServerLink`] is the seam: typed calls (`check_in`, `escrow`, `poll`, `report`, `renew`,
//! `subscribe`, `unenroll`) that every dialect implements — the native gRPC one in
//! `transport::grpc`; Apple's MDM check-in and command protocol is designed to be the second. What a
//! dialect cannot do it says (`renew` → `None`, `subscribe` → `None`: poll instead), and a report
//! may hand back the next commands (Apple's protocol answers a result with the next command).
//!
//! - [`machine`]: the link's policy as a pure state machine (`next(event, now) -> actions`).
//! - [`driver`]: the loop that runs the machine against a link, the journal and the worker.
use std::time::Duration;

use latchkey_platform::{DeviceFacts, DeviceState, SecretBytes};
use latchkey_proto::v1;

pub mod driver;
pub mod machine;

/// What a check-in reports.
#[derive(Clone, Debug)]
pub struct CheckIn {
    /// Facts.
    pub facts: DeviceFacts,
    /// Credential state.
    pub state: DeviceState,
    /// Hostname.
    pub hostname: String,
    /// Agent version.
    pub agent_version: String,
    /// The device's current unlock token is escrowed.
    pub unlock_token_escrowed: bool,
}

/// A token to escrow.
#[derive(Debug)]
pub enum Escrow<'a> {
    /// iOS-like unlock token.
    Unlock(&'a SecretBytes),
    /// Android reset-password token.
    Reset(&'a SecretBytes),
}

/// The server's answer to a report.
#[derive(Debug, Default)]
pub struct ReportReply {
    /// The server had the result already.
    pub duplicate: bool,
    /// Commands the server handed back with the answer.
    pub next: Vec<v1::Command>,
}

/// Something the server pushed.
#[derive(Debug)]
pub enum Pushed {
    /// A command.
    Command(Box<v1::Command>),
    /// A heartbeat.
    Heartbeat,
    /// The server's heartbeat period (the stream's first event).
    Hello(Duration),
}

/// Why a call failed, as far as the agent must care.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// No connection (refused, unreachable, TLS handshake failed).
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("the server did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The server refused this device's certificate.
    #[error("the server refused this device's identity: {0}")]
    IdentityRefused(String),
    /// The server no longer manages this device (retired, unenrolled).
    #[error("the server no longer manages this device: {0}")]
    Unmanaged(String),
    /// The server will never accept this request (malformed, unknown command, wrong device).
    #[error("the server refused the request: {0}")]
    Refused(String),
    /// A server-side failure that may pass.
    #[error("the server failed: {0}")]
    Server(String),
    /// The stream or connection ended.
    #[error("the connection closed")]
    Closed,
}

/// A connection to the server in one dialect.
#[async_trait::async_trait]
pub trait ServerLink: Send {
    /// Reports device state; returns the server's clock (Unix ms) when the dialect carries one.
    async fn check_in(&mut self, report: &CheckIn) -> Result<Option<i64>, LinkError>;
    /// Escrows a token.
    async fn escrow(&mut self, token: Escrow<'_>) -> Result<(), LinkError>;
    /// Asks for queued commands.
    async fn poll(&mut self) -> Result<Vec<v1::Command>, LinkError>;
    /// Reports one result (idempotent by command id).
    async fn report(&mut self, result: &v1::CommandResult) -> Result<ReportReply, LinkError>;
    /// Has a new certificate issued for a CSR; `None` when the dialect renews some other way.
    async fn renew(&mut self, csr_der: &[u8]) -> Result<Option<String>, LinkError>;
    /// Opens the push stream, announcing our heartbeat; `None` when the dialect has no push.
    async fn subscribe(&mut self, heartbeat: Duration) -> Result<Option<Box<dyn PushStream>>, LinkError>;
    /// Leaves management.
    async fn unenroll(&mut self) -> Result<(), LinkError>;
}

/// An open push stream.
#[async_trait::async_trait]
pub trait PushStream: Send {
    /// The next pushed event; `Ok(None)` when the server ended the stream.
    async fn next(&mut self) -> Result<Option<Pushed>, LinkError>;
    /// Sends a heartbeat.
    async fn heartbeat(&mut self) -> Result<(), LinkError>;
}

/// Opens links with the current identity.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// A new connection.
    async fn connect(&self) -> Result<Box<dyn ServerLink>, LinkError>;
}
