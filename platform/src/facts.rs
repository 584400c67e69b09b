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

impl Platform {
    /// Every platform, in wire order.
    pub const ALL: [Self; 7] =
        [Self::Android, Self::Aosp, Self::Ios, Self::Macos, Self::Windows, Self::WindowsMobile, Self::Linux];

    /// Stable text form (logs, storage, listings); the serde spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Android => "android",
            Self::Aosp => "aosp",
            Self::Ios => "ios",
            Self::Macos => "macos",
            Self::Windows => "windows",
            Self::WindowsMobile => "windows_mobile",
            Self::Linux => "linux",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Android and AOSP: the DevicePolicyManager family.
    pub fn is_android_family(self) -> bool {
        matches!(self, Self::Android | Self::Aosp)
    }
}

impl ManagementMode {
    /// Every mode, in wire order.
    pub const ALL: [Self; 10] = [
        Self::DeviceAdmin,
        Self::DeviceOwner,
        Self::WorkProfilePersonal,
        Self::WorkProfileCorporate,
        Self::AospUserAssociated,
        Self::AospUserless,
        Self::AppleDevice,
        Self::AppleUserEnrollment,
        Self::WindowsMdm,
        Self::LinuxSystem,
    ];

    /// True for both Android Enterprise work-profile modes.
    pub fn is_work_profile(self) -> bool {
        matches!(self, Self::WorkProfilePersonal | Self::WorkProfileCorporate)
    }

    /// Stable text form (logs, storage, listings); the serde spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeviceAdmin => "device_admin",
            Self::DeviceOwner => "device_owner",
            Self::WorkProfilePersonal => "work_profile_personal",
            Self::WorkProfileCorporate => "work_profile_corporate",
            Self::AospUserAssociated => "aosp_user_associated",
            Self::AospUserless => "aosp_userless",
            Self::AppleDevice => "apple_device",
            Self::AppleUserEnrollment => "apple_user_enrollment",
            Self::WindowsMdm => "windows_mdm",
            Self::LinuxSystem => "linux_system",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
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
    /// Stable text form used in storage and status output.
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

/// The passcode policy a device enforces for a delivered payload. Under Apple User Enrollment
/// the payload's keys are ignored and its presence forces only `forcePIN`, `allowSimple = false`
/// and `minLength = 6` (Apple, DeviceManagement "Passcode": "For user enrollments, the system
/// allows this payload type, but ignores most of the keys"); everywhere else the payload is
/// enforced as delivered.
pub fn enforced_policy(facts: &DeviceFacts, delivered: Option<&PasscodePolicy>) -> Option<PasscodePolicy> {
    match (facts.mode, delivered) {
        (ManagementMode::AppleUserEnrollment, Some(_)) => {
            Some(PasscodePolicy::Apple(crate::policy::ApplePolicy::user_enrollment()))
        }
        (_, delivered) => delivered.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_match_serde_and_round_trip() {
        for p in Platform::ALL {
            assert_eq!(serde_json::to_value(p).expect("json"), serde_json::Value::from(p.as_str()));
            assert_eq!(Platform::parse(p.as_str()), Some(p));
        }
        for m in ManagementMode::ALL {
            assert_eq!(serde_json::to_value(m).expect("json"), serde_json::Value::from(m.as_str()));
            assert_eq!(ManagementMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(Platform::parse("beos"), None);
    }
}
