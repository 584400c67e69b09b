//! The OS port: the only way platform decisions touch a device. Narrow on purpose — every call is
//! one OS primitive (set or clear a credential, lock, register a token, notify), so a port for a
//! new OS, or a bridge to an out-of-process implementation, is small.
use crate::action::{LockRequest, Scope};
use crate::facts::{DeviceFacts, DeviceState, ResetTokenState};
use crate::secret::{Secret, SecretBytes};

/// What the port reports about the device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortSnapshot {
    /// Static facts.
    pub facts: DeviceFacts,
    /// Credential state right now.
    pub state: DeviceState,
}

/// Why an OS call failed. Messages never contain secrets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    /// The OS refused the call in this state.
    #[error("refused by the platform: {0}")]
    Refused(String),
    /// The unlock token did not match.
    #[error("unlock token does not match the device's")]
    TokenMismatch,
    /// The reset-password token is not active.
    #[error("reset-password token is not active")]
    TokenNotActive,
    /// The OS rejected the passcode against its own policy.
    #[error("the platform rejected the passcode: {0}")]
    NotCompliant(String),
    /// The port does not implement this call.
    #[error("not implemented by this port: {0}")]
    Unsupported(&'static str),
    /// The port's own machinery failed (I/O, bridge connection, state file).
    #[error("port failure: {0}")]
    Io(String),
}

/// Identifies the command a side effect belongs to, so effects can be audited and recognised
/// after a crash.
#[derive(Clone, Copy, Debug)]
pub struct EffectId<'a>(pub &'a str);

/// The operating-system port.
pub trait DevicePort: Send {
    /// Facts and credential state.
    fn snapshot(&mut self) -> Result<PortSnapshot, PortError>;
    /// Sets a credential directly (device admin ≤ 6, AOSP, Linux).
    fn set_credential(&mut self, scope: Scope, passcode: &Secret, effect: EffectId<'_>) -> Result<(), PortError>;
    /// Sets a credential with the registered reset-password token (`resetPasswordWithToken`).
    fn reset_with_token(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        token: &SecretBytes,
        effect: EffectId<'_>,
    ) -> Result<(), PortError>;
    /// Clears the device passcode when `unlock_token` matches the device's (iOS `ClearPasscode`).
    fn clear_passcode(&mut self, unlock_token: &SecretBytes, effect: EffectId<'_>) -> Result<(), PortError>;
    /// Locks the device now.
    fn lock_now(&mut self, request: &LockRequest, effect: EffectId<'_>) -> Result<(), PortError>;
    /// Generates and sets a new PIN, returning it (Windows PIN recovery).
    fn generate_pin(&mut self, effect: EffectId<'_>) -> Result<Secret, PortError>;
    /// Registers a reset-password token; returns its state afterwards.
    fn set_reset_token(&mut self, token: &SecretBytes) -> Result<ResetTokenState, PortError>;
    /// The device's current unlock token, if it has one (iOS-like).
    fn unlock_token(&mut self) -> Result<Option<SecretBytes>, PortError>;
    /// Shows (`Some(text)`) or withdraws (`None`) a user notification.
    fn notify(&mut self, id: &str, text: Option<&str>) -> Result<(), PortError>;
    /// Whether the side effect of `command_id` was applied: `None` when the port cannot tell.
    fn effect_applied(&mut self, command_id: &str) -> Result<Option<bool>, PortError>;
}
