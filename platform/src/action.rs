//! The actions an admin can ask of a device, as the adapters see them (already validated for
//! expiry and addressee by the agent).
use crate::secret::{Secret, SecretBytes};

/// Which credential a reset targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The device credential.
    Device,
    /// The Android work-profile credential.
    WorkProfile,
}

/// Lock-screen details for a remote lock.
#[derive(Clone, Debug, Default)]
pub struct LockRequest {
    /// Message shown on the lock screen.
    pub message: String,
    /// Phone number shown on the lock screen.
    pub phone_number: String,
}

/// One action.
#[derive(Clone, Debug)]
pub enum Action {
    /// Set a new passcode (the temporary one the admin was shown).
    ResetPasscode {
        /// Device or work profile.
        scope: Scope,
        /// The new passcode.
        passcode: Secret,
        /// `RESET_PASSWORD_*` flags.
        flags: u32,
    },
    /// Remove the passcode with the escrowed unlock token.
    RemovePasscode {
        /// The token the server escrowed.
        unlock_token: SecretBytes,
    },
    /// Lock now.
    RemoteLock(LockRequest),
    /// Windows PIN recovery: the device generates the PIN.
    ResetPin,
}

impl Action {
    /// Stable name for logs, journal and the effects list.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ResetPasscode { scope: Scope::Device, .. } => "reset_passcode",
            Self::ResetPasscode { scope: Scope::WorkProfile, .. } => "reset_work_profile_passcode",
            Self::RemovePasscode { .. } => "remove_passcode",
            Self::RemoteLock(_) => "remote_lock",
            Self::ResetPin => "reset_pin",
        }
    }
}
