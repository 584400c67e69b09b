//! The storage interface: every read and write the server makes, over typed records. The SQLite
//! backend ([`sqlite`]) is the only one today; a PostgreSQL backend implements the same trait.
//!
//! Contract every backend keeps:
//! - a write that returns `Ok` is durable (committed and synced);
//! - writes are serializable: a read-then-write (consuming a token, recording a result) never
//!   interleaves with another writer;
//! - secrets arrive sealed ([`crate::vault`]) and are stored as opaque bytes; a command's payload
//!   (which carries secrets) is dropped once the command is final.
use std::collections::BTreeMap;

use latchkey_platform::Status;
use latchkey_proto::v1;

use crate::records::{
    ActionFilter, ActionRecord, CertInfo, DeviceRecord, DeviceStatus, EscrowKind, NewDevice, PasscodeKind,
    PasscodeRecord, QueueStats, ReportOutcome, Reported,
};

pub mod sqlite;

/// Storage failures and refusals.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer held the database past the wait; nothing was changed, try again.
    #[error("storage is busy; nothing was changed, try again")]
    Busy,
    /// The backend failed.
    #[error("storage failure: {0}")]
    Failure(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// No such enrollment token.
    #[error("enrollment token is not valid")]
    TokenUnknown,
    /// The token was used before.
    #[error("enrollment token was already used")]
    TokenUsed,
    /// The token expired.
    #[error("enrollment token has expired")]
    TokenExpired,
    /// No such device.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// The device is no longer managed.
    #[error("device {0} is {1}")]
    NotActive(String, &'static str),
    /// No such command.
    #[error("unknown command {0}")]
    UnknownCommand(String),
    /// The command belongs to another device.
    #[error("command {0} belongs to another device")]
    WrongDevice(String),
}

/// Whose certificate this is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertMatch {
    /// The device.
    pub device_id: String,
    /// Its status.
    pub status: DeviceStatus,
    /// The certificate is the one issued by the last renewal and not used before.
    pub renewed: bool,
}

/// A command to queue, with the secret to keep for the admin, if any.
#[derive(Clone, Debug)]
pub struct NewCommand {
    /// The command as the device receives it (carries its secrets until it is final).
    pub command: v1::Command,
    /// What the admin asked for.
    pub requested: String,
    /// What the device is sent.
    pub action: String,
    /// What the server predicted and the admin overrode with `--force`.
    pub warning: String,
    /// A passcode or PIN to show the admin: its kind and sealed value.
    pub passcode: Option<(PasscodeKind, Vec<u8>)>,
}

/// A device's result, ready to store.
#[derive(Clone, Debug)]
pub struct NewResult {
    /// The command.
    pub command_id: String,
    /// Status.
    pub status: Status,
    /// Error code.
    pub error_code: String,
    /// Admin message.
    pub message: String,
    /// Non-secret outputs.
    pub outputs: BTreeMap<String, String>,
    /// When the device finished, Unix ms.
    pub finished_at: i64,
    /// A device-generated PIN, sealed.
    pub generated_pin: Option<Vec<u8>>,
}

/// How `not_now` answers are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Deliveries at most (the first included).
    pub max_attempts: u32,
    /// Delay before the second delivery; doubles after each `not_now`.
    pub first_delay_ms: i64,
    /// Longest delay.
    pub max_delay_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, first_delay_ms: 30_000, max_delay_ms: 30 * 60_000 }
    }
}

impl RetryPolicy {
    /// The delay after the `attempts`-th delivery answered `not_now`.
    pub fn delay_ms(&self, attempts: u32) -> i64 {
        let doublings = attempts.saturating_sub(1).min(20);
        self.first_delay_ms.saturating_mul(1 << doublings).min(self.max_delay_ms)
    }
}

/// The storage interface.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores a new enrollment token (its SHA-256, never the token).
    async fn insert_token(&self, token_hash: &str, now: i64, expires_at: i64) -> Result<(), StoreError>;
    /// Checks a token without consuming it.
    async fn check_token(&self, token_hash: &str, now: i64) -> Result<(), StoreError>;
    /// Consumes the token and records the device, in one transaction.
    async fn enroll(&self, token_hash: &str, now: i64, device: NewDevice) -> Result<(), StoreError>;

    /// The device a certificate (by SHA-256) belongs to, current or just renewed.
    async fn device_by_cert(&self, sha256: &str) -> Result<Option<CertMatch>, StoreError>;
    /// Records the certificate a renewal issued; the current one stays valid until it is used.
    async fn set_renewed_cert(&self, device_id: &str, cert: CertInfo) -> Result<(), StoreError>;
    /// The renewed certificate was used: it becomes the only valid one.
    async fn promote_renewed_cert(&self, device_id: &str, sha256: &str) -> Result<(), StoreError>;

    /// Records a check-in.
    async fn check_in(&self, device_id: &str, now: i64, reported: Reported) -> Result<(), StoreError>;
    /// Stores an escrowed token (sealed).
    async fn set_escrow(&self, device_id: &str, kind: EscrowKind, sealed: Vec<u8>, now: i64) -> Result<(), StoreError>;
    /// An escrowed token (sealed), if any.
    async fn escrow(&self, device_id: &str, kind: EscrowKind) -> Result<Option<Vec<u8>>, StoreError>;
    /// Records that the device opened (true) or lost (false) its push stream.
    async fn set_online(&self, device_id: &str, online: bool, now: i64) -> Result<(), StoreError>;
    /// Marks every device offline (the serving process starts with no streams).
    async fn all_offline(&self) -> Result<(), StoreError>;
    /// Records signs of life (heartbeats), batched.
    async fn touch(&self, seen: Vec<(String, i64)>) -> Result<(), StoreError>;
    /// Ends management of a device: refuses its certificate, cancels its queue, deletes its
    /// escrow and passcodes. Returns how many commands were cancelled.
    async fn end_management(&self, device_id: &str, status: DeviceStatus, now: i64) -> Result<u64, StoreError>;

    /// Queues a command.
    async fn queue(&self, command: NewCommand) -> Result<(), StoreError>;
    /// Commands the device should get now, oldest first.
    async fn deliverable(&self, device_id: &str, now: i64) -> Result<Vec<v1::Command>, StoreError>;
    /// Records a delivery.
    async fn mark_sent(&self, ids: Vec<String>, now: i64) -> Result<(), StoreError>;
    /// Records a result (idempotent by command id); `not_now` re-queues under `retry`.
    async fn record_result(
        &self,
        device_id: &str,
        result: NewResult,
        now: i64,
        retry: RetryPolicy,
    ) -> Result<ReportOutcome, StoreError>;
    /// Marks commands past their expiry `expired` (final); returns how many.
    async fn expire_due(&self, now: i64) -> Result<u64, StoreError>;
    /// Deletes passcodes past their visibility; returns how many.
    async fn purge_passcodes(&self, now: i64) -> Result<u64, StoreError>;

    /// Every device.
    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// One device.
    async fn device(&self, device_id: &str) -> Result<DeviceRecord, StoreError>;
    /// The device-actions view (states as of `now`: a command past its expiry shows `expired`).
    async fn actions(&self, filter: ActionFilter, now: i64) -> Result<Vec<ActionRecord>, StoreError>;
    /// Passcodes of a device still visible at `now`.
    async fn passcodes(&self, device_id: &str, now: i64) -> Result<Vec<PasscodeRecord>, StoreError>;
    /// Counts for the metrics endpoint.
    async fn stats(&self, now: i64) -> Result<QueueStats, StoreError>;
    /// How many commands are still open at `now` (pending or sent, not expired): cheap enough
    /// to ask often, unlike [`Store::stats`], which reads every command and device.
    async fn open_commands(&self, now: i64) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_now_retries_back_off_to_a_ceiling() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1), 30_000);
        assert_eq!(p.delay_ms(2), 60_000);
        assert_eq!(p.delay_ms(40), 30 * 60_000);
    }
}
