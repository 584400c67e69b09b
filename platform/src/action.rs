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

/// `DevicePolicyManager.RESET_PASSWORD_*` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResetFlags {
    /// `RESET_PASSWORD_REQUIRE_ENTRY` (0x1): no other admin may reset the credential again until
    /// the user has entered it.
    pub require_entry: bool,
    /// `RESET_PASSWORD_DO_NOT_ASK_CREDENTIALS_ON_BOOT` (0x2): the device does not ask for the
    /// credential at boot.
    pub do_not_ask_credentials_on_boot: bool,
}

impl ResetFlags {
    /// `RESET_PASSWORD_REQUIRE_ENTRY`.
    pub const REQUIRE_ENTRY: u32 = 0x1;
    /// `RESET_PASSWORD_DO_NOT_ASK_CREDENTIALS_ON_BOOT`.
    pub const DO_NOT_ASK_CREDENTIALS_ON_BOOT: u32 = 0x2;

    /// Parses the DPM bit set; unknown bits are an error (the command is malformed).
    pub fn from_bits(bits: u32) -> Result<Self, u32> {
        let unknown = bits & !(Self::REQUIRE_ENTRY | Self::DO_NOT_ASK_CREDENTIALS_ON_BOOT);
        if unknown != 0 {
            return Err(unknown);
        }
        Ok(Self {
            require_entry: bits & Self::REQUIRE_ENTRY != 0,
            do_not_ask_credentials_on_boot: bits & Self::DO_NOT_ASK_CREDENTIALS_ON_BOOT != 0,
        })
    }

    /// The DPM bit set.
    pub fn bits(self) -> u32 {
        let mut bits = 0;
        if self.require_entry {
            bits |= Self::REQUIRE_ENTRY;
        }
        if self.do_not_ask_credentials_on_boot {
            bits |= Self::DO_NOT_ASK_CREDENTIALS_ON_BOOT;
        }
        bits
    }
}

/// Lock-screen details for a remote lock.
#[derive(Clone, Debug, Default)]
pub struct LockRequest {
    /// Message shown on the lock screen.
    pub message: String,
    /// Phone number shown on the lock screen.
    pub phone_number: String,
    /// macOS: the six-digit Find My PIN that unlocks the Mac. Secret.
    pub pin: Option<Secret>,
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
        flags: ResetFlags,
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
