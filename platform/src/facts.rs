//! What a device is and what state its credentials are in: the inputs of every decision.
use serde::{Deserialize, Serialize};

use crate::policy::PasscodePolicy;

/// Operating-system family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Google Android.
    Android,
    /// Android Open Source Project builds without Google services.
    Aosp,
    /// iOS or iPadOS.
    Ios,
    /// macOS.
    Macos,
    /// Windows desktop.
    Windows,
    /// Windows 10 Mobile.
    WindowsMobile,
    /// Linux with local accounts.
    Linux,
}

/// How the device is managed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagementMode {
    /// Legacy Android device administrator.
    DeviceAdmin,
    /// Android Enterprise device owner (fully managed or dedicated).
    DeviceOwner,
    /// Android Enterprise personally-owned work profile.
    WorkProfilePersonal,
    /// Android Enterprise corporate-owned work profile.
    WorkProfileCorporate,
    /// AOSP corporate-owned, user-associated.
    AospUserAssociated,
    /// AOSP corporate-owned, userless.
    AospUserless,
    /// Apple device enrollment.
    AppleDevice,
    /// Apple User Enrollment.
    AppleUserEnrollment,
    /// Windows MDM.
    WindowsMdm,
    /// Linux system service.
    LinuxSystem,
}

impl ManagementMode {
    /// True for both Android Enterprise work-profile modes.
    pub fn is_work_profile(self) -> bool {
        matches!(self, Self::WorkProfilePersonal | Self::WorkProfileCorporate)
    }
}

/// Android reset-password token state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTokenState {
    /// Not applicable to this device.
    #[default]
    NotApplicable,
    /// No token registered.
    None,
    /// Registered; the user must confirm their credential before it works.
    PendingUser,
    /// Active: resets with the token will work.
    Active,
}

impl ResetTokenState {
    /// Stable text form used on the bridge and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotApplicable => "not_applicable",
            Self::None => "none",
            Self::PendingUser => "pending_user",
            Self::Active => "active",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "not_applicable" => Self::NotApplicable,
            "none" => Self::None,
            "pending_user" => Self::PendingUser,
            "active" => Self::Active,
            _ => return None,
        })
    }
}

/// Static facts about a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    /// Operating-system family.
    pub platform: Platform,
    /// OS version as the platform writes it ("6.0.1", "13", "17.4", "10.0.15063").
    pub os_version: String,
    /// Android API level; 0 elsewhere.
    #[serde(default)]
    pub api_level: u32,
    /// Management mode.
    pub mode: ManagementMode,
    /// Model name.
    #[serde(default)]
    pub model: String,
    /// Windows: the tenant's PassportForWork `EnablePinRecovery` policy, as applied.
    #[serde(default)]
    pub pin_recovery_enabled: bool,
    /// Windows: joined to Microsoft Entra ID.
    #[serde(default)]
    pub entra_joined: bool,
}

/// The credential state of a device right now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// A device passcode is set.
    pub passcode_present: bool,
    /// A separate work-profile passcode is set.
    #[serde(default)]
    pub work_profile_passcode_present: bool,
    /// Device passcode policy in force, if one is assigned.
    #[serde(default)]
    pub device_policy: Option<PasscodePolicy>,
    /// Work-profile passcode policy in force, if one is assigned.
    #[serde(default)]
    pub work_profile_policy: Option<PasscodePolicy>,
    /// Reset-password token state.
    #[serde(default)]
    pub reset_token: ResetTokenState,
    /// The device is locked.
    #[serde(default)]
    pub locked: bool,
}
