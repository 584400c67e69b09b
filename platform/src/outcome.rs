//! What an adapter reports: a status, a stable error code and a message that tells the admin what
//! to do next.
use std::collections::BTreeMap;
use std::fmt;

use crate::secret::Secret;

/// Outcome status (mirrors `latchkey.v1.CommandStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Applied.
    Succeeded,
    /// Attempted and failed, or cannot succeed in the current state.
    Failed,
    /// The platform or mode does not offer this action.
    NotSupported,
    /// Not possible right now; may be retried.
    NotNow,
    /// Malformed, expired or foreign.
    Rejected,
}

impl Status {
    /// Every status.
    pub const ALL: [Self; 5] = [Self::Succeeded, Self::Failed, Self::NotSupported, Self::NotNow, Self::Rejected];

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::NotSupported => "not_supported",
            Self::NotNow => "not_now",
            Self::Rejected => "rejected",
        }
    }
}

/// Machine-readable reasons (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The platform does not offer this action at all.
    PlatformUnsupported,
    /// The OS version / API level does not allow it.
    ApiLevel,
    /// The management mode does not allow it.
    ManagementMode,
    /// Apple User Enrollment does not allow it.
    UserEnrollment,
    /// A required passcode policy is not assigned.
    NoPasscodePolicy,
    /// The device has no PIN or password, so it cannot be locked.
    NoPasscode,
    /// A macOS lock's Find My PIN has not been used yet; a second lock would replace it.
    LockPinOutstanding,
    /// The new passcode violates the policy in force.
    PasscodeNotCompliant,
    /// The Android reset-password token is not active.
    ResetTokenNotActive,
    /// The escrowed unlock token does not match the device's.
    UnlockTokenMismatch,
    /// No unlock token was escrowed.
    UnlockTokenMissing,
    /// The tenant's PIN recovery policy is off.
    PinRecoveryDisabled,
    /// The command expired before it could be applied.
    Expired,
    /// The command is for another device.
    WrongDevice,
    /// The command could not be understood.
    Malformed,
    /// A crash interrupted the command while it was being applied.
    Interrupted,
    /// The OS refused for a reason of its own.
    PlatformError,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [Self; 17] = [
        Self::PlatformUnsupported,
        Self::ApiLevel,
        Self::ManagementMode,
        Self::UserEnrollment,
        Self::NoPasscodePolicy,
        Self::NoPasscode,
        Self::LockPinOutstanding,
        Self::PasscodeNotCompliant,
        Self::ResetTokenNotActive,
        Self::UnlockTokenMismatch,
        Self::UnlockTokenMissing,
        Self::PinRecoveryDisabled,
        Self::Expired,
        Self::WrongDevice,
        Self::Malformed,
        Self::Interrupted,
        Self::PlatformError,
    ];

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformUnsupported => "PLATFORM_UNSUPPORTED",
            Self::ApiLevel => "API_LEVEL",
            Self::ManagementMode => "MANAGEMENT_MODE",
            Self::UserEnrollment => "USER_ENROLLMENT",
            Self::NoPasscodePolicy => "NO_PASSCODE_POLICY",
            Self::NoPasscode => "NO_PASSCODE",
            Self::LockPinOutstanding => "LOCK_PIN_OUTSTANDING",
            Self::PasscodeNotCompliant => "PASSCODE_NOT_COMPLIANT",
            Self::ResetTokenNotActive => "RESET_TOKEN_NOT_ACTIVE",
            Self::UnlockTokenMismatch => "UNLOCK_TOKEN_MISMATCH",
            Self::UnlockTokenMissing => "UNLOCK_TOKEN_MISSING",
            Self::PinRecoveryDisabled => "PIN_RECOVERY_DISABLED",
            Self::Expired => "EXPIRED",
            Self::WrongDevice => "WRONG_DEVICE",
            Self::Malformed => "MALFORMED",
            Self::Interrupted => "INTERRUPTED",
            Self::PlatformError => "PLATFORM_ERROR",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one action.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Status.
    pub status: Status,
    /// Reason, absent on success.
    pub code: Option<ErrorCode>,
    /// What the admin should know or do.
    pub message: String,
    /// Non-secret outputs.
    pub outputs: BTreeMap<String, String>,
    /// Device-generated PIN (Windows PIN recovery).
    pub generated_pin: Option<Secret>,
}

impl Outcome {
    /// A success.
    pub fn succeeded(message: impl Into<String>) -> Self {
        Self {
            status: Status::Succeeded,
            code: None,
            message: message.into(),
            outputs: BTreeMap::new(),
            generated_pin: None,
        }
    }

    /// A refusal or failure with its reason.
    pub fn refused(status: Status, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code: Some(code), message: message.into(), outputs: BTreeMap::new(), generated_pin: None }
    }

    /// `NOT_SUPPORTED` with a reason.
    pub fn not_supported(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::refused(Status::NotSupported, code, message)
    }

    /// `FAILED` with a reason.
    pub fn failed(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::refused(Status::Failed, code, message)
    }

    /// Adds an output.
    pub fn with_output(mut self, key: &str, value: impl Into<String>) -> Self {
        self.outputs.insert(key.to_owned(), value.into());
        self
    }
}
