//! Named device profiles: one per row of the platform matrix. Each gives the facts a real device
//! of that kind reports and a starting state (policies assigned, passcodes set, tokens).
use std::collections::BTreeMap;

use super::state::SimState;
use crate::facts::{DeviceFacts, ManagementMode, Platform};
use crate::policy::android::{AndroidPolicy, Quality};
use crate::policy::{ApplePolicy, PasscodePolicy, WindowsPolicy};
use crate::port::PortError;
use crate::secret::{Secret, SecretBytes};

/// Every profile name `latchkey sim init --profile` accepts.
pub const NAMES: &[&str] = &[
    "android6-da",
    "android7-da",
    "android-do",
    "android-wp-byod",
    "android-wp-cope",
    "android7-wp",
    "aosp-user",
    "aosp-userless",
    "ios",
    "ios-user-enrollment",
    "macos",
    "windows",
    "windows10-mobile",
];

/// The passcode each profile starts with where it has one (the "user's" passcode).
pub const INITIAL_PASSCODE: &str = "951753";

fn android_pin_policy() -> PasscodePolicy {
    PasscodePolicy::Android(AndroidPolicy {
        quality: Quality::NumericComplex,
        min_length: 6,
        ..AndroidPolicy::default()
    })
}

fn facts(platform: Platform, os_version: &str, api_level: u32, mode: ManagementMode, model: &str) -> DeviceFacts {
    DeviceFacts {
        platform,
        os_version: os_version.to_owned(),
        api_level,
        mode,
        model: model.to_owned(),
        pin_recovery_enabled: false,
        entra_joined: false,
    }
}

/// Options that change a profile's starting state.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Replace the profile's device policy.
    pub device_policy: Option<PasscodePolicy>,
    /// Assign no passcode policy (device, and work profile on work-profile devices).
    pub no_passcode_policy: bool,
    /// Windows: the tenant's EnablePinRecovery is off.
    pub pin_recovery_disabled: bool,
    /// The device starts without a passcode (and work-profile passcode).
    pub no_passcode: bool,
}

/// Builds the starting state for a profile.
pub fn build(name: &str, options: &InitOptions) -> Result<SimState, PortError> {
    use ManagementMode as M;
    use Platform as P;
    // (facts, device policy, work-profile policy, device passcode set, work-profile passcode set)
    let (facts, device_policy, wp_policy, device_pin, wp_pin) = match name {
        "android6-da" => {
            (facts(P::Android, "6.0.1", 23, M::DeviceAdmin, "Nexus 5X"), Some(android_pin_policy()), None, true, false)
        }
        "android7-da" => {
            (facts(P::Android, "7.1.2", 25, M::DeviceAdmin, "Pixel"), Some(android_pin_policy()), None, true, false)
        }
        "android-do" => (
            facts(P::Android, "13", 33, M::DeviceOwner, "Pixel 7 (dedicated)"),
            Some(android_pin_policy()),
            None,
            false,
            false,
        ),
        "android-wp-byod" => (
            facts(P::Android, "14", 34, M::WorkProfilePersonal, "Pixel 8"),
            None,
            Some(android_pin_policy()),
            true,
            true,
        ),
        "android-wp-cope" => (
            facts(P::Android, "13", 33, M::WorkProfileCorporate, "Galaxy S23"),
            None,
            Some(android_pin_policy()),
            true,
            true,
        ),
        "android7-wp" => (
            facts(P::Android, "7.1.1", 25, M::WorkProfilePersonal, "Galaxy S7"),
            None,
            Some(android_pin_policy()),
            true,
            true,
        ),
        "aosp-user" => (
            facts(P::Aosp, "12", 31, M::AospUserAssociated, "RealWear Navigator"),
            Some(android_pin_policy()),
            None,
            true,
            false,
        ),
        "aosp-userless" => (facts(P::Aosp, "12", 31, M::AospUserless, "Zebra TC58"), None, None, false, false),
        "ios" => (
            facts(P::Ios, "17.4", 0, M::AppleDevice, "iPhone 15"),
            Some(PasscodePolicy::Apple(ApplePolicy { min_length: 6, allow_simple: false, ..ApplePolicy::default() })),
            None,
            true,
            false,
        ),
        // The delivered payload asks for more than User Enrollment lets it: the device enforces
        // only forcePIN, allowSimple = false and minLength 6 (see `facts::enforced_policy`).
        "ios-user-enrollment" => (
            facts(P::Ios, "17.4", 0, M::AppleUserEnrollment, "iPhone 14"),
            Some(PasscodePolicy::Apple(ApplePolicy {
                min_length: 10,
                require_alphanumeric: true,
                min_complex_chars: 2,
                ..ApplePolicy::default()
            })),
            None,
            true,
            false,
        ),
        "macos" => (facts(P::Macos, "14.4", 0, M::AppleDevice, "MacBook Air"), None, None, true, false),
        "windows" => (
            facts(P::Windows, "10.0.22631", 0, M::WindowsMdm, "Surface Laptop"),
            Some(PasscodePolicy::Windows(WindowsPolicy::default())),
            None,
            true,
            false,
        ),
        "windows10-mobile" => {
            let mut f = facts(P::WindowsMobile, "10.0.15063", 0, M::WindowsMdm, "Lumia 950");
            f.entra_joined = true;
            f.pin_recovery_enabled = !options.pin_recovery_disabled;
            (
                f,
                Some(PasscodePolicy::Windows(WindowsPolicy { min_length: Some(6), ..WindowsPolicy::default() })),
                None,
                true,
                false,
            )
        }
        other => {
            return Err(PortError::Unavailable(format!(
                "unknown profile {other:?}; known profiles: {}",
                NAMES.join(", ")
            )))
        }
    };
    let device_policy = if options.no_passcode_policy { None } else { options.device_policy.clone().or(device_policy) };
    let unlock_token = (facts.platform == P::Ios).then(|| SecretBytes::random(32).to_hex().expose().to_owned());
    let mut state = SimState {
        profile: name.to_owned(),
        facts,
        device_policy,
        // For work-profile devices "no passcode policy" means no work-profile policy either.
        work_profile_policy: if options.no_passcode_policy { None } else { wp_policy },
        device_passcode: None,
        work_profile_passcode: None,
        reset_token: None,
        unlock_token,
        locked: false,
        lock_message: None,
        lock_phone_number: None,
        lock_pin: None,
        new_passcode_prompt: false,
        notifications: BTreeMap::new(),
        effects: Vec::new(),
        effects_dropped: 0,
    };
    let initial = Secret::from(INITIAL_PASSCODE);
    let (device_pin, wp_pin) = (device_pin && !options.no_passcode, wp_pin && !options.no_passcode);
    if device_pin {
        state.device_passcode = Some(super::state::hash_for_init(&initial)?);
    }
    if wp_pin {
        state.work_profile_passcode = Some(super::state::hash_for_init(&initial)?);
    }
    Ok(state)
}
