//! The OS port: the only way platform decisions touch a device. Narrow on purpose — every call is
//! one OS primitive (set or clear a credential, lock, register a token, notify), so a port for a
//! new OS, or a bridge to an out-of-process implementation, is small.
//!
//! Every failing call says whether the device may have changed: [`PortError::Indeterminate`] is
//! the only error after which the effect may have happened; every other error means nothing was
//! changed. The executor relies on that to never report a failure for something that happened.
use crate::action::{LockRequest, ResetFlags, Scope};
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
    /// The OS refused the call in this state; nothing changed.
    #[error("refused by the platform: {0}")]
    Refused(String),
    /// The unlock token did not match; nothing changed.
    #[error("unlock token does not match the device's")]
    TokenMismatch,
    /// The reset-password token is not active; nothing changed.
    #[error("reset-password token is not active")]
    TokenNotActive,
    /// The OS rejected the passcode against its own policy; nothing changed.
    #[error("the platform rejected the passcode: {0}")]
    NotCompliant(String),
    /// The port does not implement this call.
    #[error("not implemented by this port: {0}")]
    Unsupported(&'static str),
    /// The port could not be reached or failed before acting (bridge down, state file
    /// unreadable); nothing changed.
    #[error("port unavailable: {0}")]
    Unavailable(String),
    /// The call failed in a way that may have left the effect applied (a timeout after the
    /// request was sent, a failure part-way through). Only [`DevicePort::effect_applied`] can tell.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
}

/// Identifies the command a side effect belongs to, so effects can be audited and recognised
/// after a crash.
#[derive(Clone, Copy, Debug)]
pub struct EffectId<'a>(pub &'a str);

/// Apple's `DeviceLock` `MessageResult`: whether the lock-screen message could be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MessageResult {
    /// The message displayed.
    Success,
    /// The device is in Lost Mode.
    DeviceInLostMode,
    /// No passcode is set, so no message is shown.
    NoPasscodeSet,
    /// Something else went wrong.
    Unknown,
}

impl MessageResult {
    /// Apple's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::DeviceInLostMode => "DeviceInLostMode",
            Self::NoPasscodeSet => "NoPasscodeSet",
            Self::Unknown => "Unknown",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "Success" => Self::Success,
            "DeviceInLostMode" => Self::DeviceInLostMode,
            "NoPasscodeSet" => Self::NoPasscodeSet,
            "Unknown" => Self::Unknown,
            _ => return None,
        })
    }
}

/// What a lock did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockReport {
    /// The device is locked now. False when the OS only turned the screen off (Android without
    /// a credential: Intune, "the device's screen will turn off but the device will not be
    /// locked").
    pub locked: bool,
    /// Apple `MessageResult`, when a message or phone number was asked for.
    pub message_result: Option<MessageResult>,
}

/// What a PIN recovery did.
#[derive(Debug)]
pub struct PinReport {
    /// The PIN the device generated.
    pub pin: Secret,
    /// The device locked itself as part of the reset (RemoteLock `LockAndRecoverPIN`).
    pub locked: bool,
}

/// The operating-system port.
pub trait DevicePort: Send {
    /// Facts and credential state.
    fn snapshot(&mut self) -> Result<PortSnapshot, PortError>;
    /// Sets a credential directly (device admin ≤ 6, AOSP, Linux).
    fn set_credential(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        flags: ResetFlags,
        effect: EffectId<'_>,
    ) -> Result<(), PortError>;
    /// Sets a credential with the registered reset-password token (`resetPasswordWithToken`).
    fn reset_with_token(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        token: &SecretBytes,
        flags: ResetFlags,
        effect: EffectId<'_>,
    ) -> Result<(), PortError>;
    /// Clears the device passcode when `unlock_token` matches the device's (iOS `ClearPasscode`).
    fn clear_passcode(&mut self, unlock_token: &SecretBytes, effect: EffectId<'_>) -> Result<(), PortError>;
    /// Locks the device now.
    fn lock_now(&mut self, request: &LockRequest, effect: EffectId<'_>) -> Result<LockReport, PortError>;
    /// Generates and sets a new PIN, returning it (Windows PIN recovery).
    fn generate_pin(&mut self, effect: EffectId<'_>) -> Result<PinReport, PortError>;
    /// Registers a reset-password token; returns its state afterwards.
    fn set_reset_token(&mut self, token: &SecretBytes) -> Result<ResetTokenState, PortError>;
    /// The device's current unlock token, if it has one (iOS-like).
    fn unlock_token(&mut self) -> Result<Option<SecretBytes>, PortError>;
    /// Shows (`Some(text)`) or withdraws (`None`) a user notification.
    fn notify(&mut self, id: &str, text: Option<&str>) -> Result<(), PortError>;
    /// Whether the side effect of `command_id` was applied: `None` when the port cannot tell.
    fn effect_applied(&mut self, command_id: &str) -> Result<Option<bool>, PortError>;
}
