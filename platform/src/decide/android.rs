//! Android (Google and AOSP) rows of the matrix.
//!
//! - Device admin: `resetPassword` works up to Android 6.x (API 23); from Android 7.0 (API 24)
//!   Google removed it for device admins (`NOT_SUPPORTED` / `API_LEVEL`).
//! - Android Enterprise device owner (8.0+, API 26): `resetPasswordWithToken` with an active
//!   reset-password token.
//! - Work profile (personal or corporate): device-level reset is `NOT_SUPPORTED` /
//!   `MANAGEMENT_MODE`; the work-profile reset needs 8.0+, a work-profile passcode policy and an
//!   active token.
//! - AOSP user-associated and userless: reset. Remote lock on AOSP needs a device passcode policy
//!   (Intune, "Reset or remove a device passcode", troubleshooting remote lock: "If the device
//!   does not have a device passcode assigned, the remote lock action will not succeed").
//! - Remote lock needs a credential on every Android mode (Intune, "Remotely lock devices with
//!   Intune": "Devices that don't have a PIN or password can't be remotely locked. When Remote
//!   lock is applied to a device that doesn't have a PIN or password, the device's screen will
//!   turn off but the device will not be locked"). Refused before any effect with `NO_PASSCODE`.
//!
//! Inferred: AOSP resets go through the privileged device-policy path without a reset token
//! (SPEC §3 lists a plain "reset" for AOSP, unlike Android Enterprise device owner).
//! Inferred: on a work-profile device a lock is possible when the work profile or the device has
//! a credential (either protects what the lock hides).
//! Ambiguous: "no work-profile passcode policy configured" (Intune: "you must configure the device
//! passcode within device restrictions") can mean the device passcode policy or the work-profile
//! passcode policy. We read it as the work-profile policy, the one the reset changes; the other
//! reading would refuse on a device that has a work-profile policy but no device policy.
use super::{non_compliant, unsupported_here, Decision, Plan};
use crate::action::{Action, Scope};
use crate::facts::{ManagementMode, Platform, ResetTokenState};
use crate::outcome::{ErrorCode, Outcome};
use crate::port::PortSnapshot;

/// Android 6.x is API 23; Android 7.0 is API 24.
pub const LAST_DEVICE_ADMIN_RESET_API: u32 = 23;
/// Android 8.0 is API 26: reset tokens and work-profile resets start here.
pub const RESET_TOKEN_API: u32 = 26;

/// Decides an action on an Android or AOSP device.
pub fn decide(s: &PortSnapshot, action: &Action) -> Decision {
    let mode = s.facts.mode;
    let api = s.facts.api_level;
    match action {
        Action::ResetPasscode { scope: Scope::Device, passcode, .. } => match mode {
            ManagementMode::DeviceAdmin if api <= LAST_DEVICE_ADMIN_RESET_API => {
                apply_if_compliant(s, Scope::Device, passcode.expose(), Plan::SetCredential(Scope::Device))
            }
            ManagementMode::DeviceAdmin => refuse_api(
                "Android 7.0 and later removed passcode reset for device-admin apps; move the device to Android Enterprise (device owner) to reset its passcode",
            ),
            ManagementMode::DeviceOwner if api < RESET_TOKEN_API => refuse_api(
                "device-owner passcode reset needs Android 8.0 or later; update the device",
            ),
            ManagementMode::DeviceOwner => with_active_token(s, Scope::Device, passcode.expose()),
            m if m.is_work_profile() => Decision::Refuse(Outcome::not_supported(
                ErrorCode::ManagementMode,
                "device-level passcode reset is not available on work-profile devices; reset the work-profile passcode instead (--scope work-profile)",
            )),
            ManagementMode::AospUserAssociated | ManagementMode::AospUserless => {
                apply_if_compliant(s, Scope::Device, passcode.expose(), Plan::SetCredential(Scope::Device))
            }
            _ => unsupported_here("passcode reset in this management mode", "Android"),
        },
        Action::ResetPasscode { scope: Scope::WorkProfile, passcode, .. } => {
            if api < RESET_TOKEN_API {
                return refuse_api(
                    "work-profile passcode reset needs Android 8.0 or later; it is not available on Android 7.x and earlier",
                );
            }
            if !mode.is_work_profile() {
                return Decision::Refuse(Outcome::not_supported(
                    ErrorCode::ManagementMode,
                    "this device has no work profile; use a device-level reset",
                ));
            }
            if s.state.work_profile_policy.is_none() {
                return Decision::Refuse(Outcome::failed(
                    ErrorCode::NoPasscodePolicy,
                    "no work-profile passcode policy is configured; assign one in the device restrictions, then retry the reset",
                ));
            }
            with_active_token(s, Scope::WorkProfile, passcode.expose())
        }
        Action::RemoteLock(_) => {
            if s.facts.platform == Platform::Aosp && s.state.device_policy.is_none() {
                return Decision::Refuse(Outcome::failed(
                    ErrorCode::NoPasscodePolicy,
                    "remote lock cannot succeed on this AOSP device because no device passcode policy is assigned; assign one, then retry",
                ));
            }
            let credential = if mode.is_work_profile() {
                s.state.work_profile_passcode_present || s.state.passcode_present
            } else {
                s.state.passcode_present
            };
            if !credential {
                return Decision::Refuse(super::no_passcode(
                    "this device has no PIN or password, so it cannot be locked remotely (its screen would only turn off); assign a passcode policy so the user sets one, then retry",
                ));
            }
            Decision::Apply(Plan::LockNow)
        }
        Action::RemovePasscode { .. } => unsupported_here(
            "passcode removal (it is an iOS/iPadOS action; reset the passcode instead)",
            "Android",
        ),
        Action::ResetPin => unsupported_here("PIN recovery (Windows 10 Mobile only)", "Android"),
    }
}

fn refuse_api(message: &str) -> Decision {
    Decision::Refuse(Outcome::not_supported(ErrorCode::ApiLevel, message))
}

fn apply_if_compliant(s: &PortSnapshot, scope: Scope, passcode: &str, plan: Plan) -> Decision {
    let policy = match scope {
        Scope::Device => s.state.device_policy.as_ref(),
        Scope::WorkProfile => s.state.work_profile_policy.as_ref(),
    };
    // With no policy assigned, the platform's own floor still applies (AOSP validates every
    // new credential against an unspecified policy: printable ASCII, 4..=16 characters).
    let floor = crate::policy::PasscodePolicy::Android(Default::default());
    match non_compliant(Some(policy.unwrap_or(&floor)), passcode) {
        Some(refusal) => Decision::Refuse(refusal),
        None => Decision::Apply(plan),
    }
}

fn with_active_token(s: &PortSnapshot, scope: Scope, passcode: &str) -> Decision {
    match s.state.reset_token {
        ResetTokenState::Active => apply_if_compliant(s, scope, passcode, Plan::ResetWithToken(scope)),
        ResetTokenState::PendingUser => Decision::Refuse(Outcome::failed(
            ErrorCode::ResetTokenNotActive,
            "the reset token is not active yet: the user must confirm their current passcode on the device (they were notified); retry after that",
        )),
        ResetTokenState::None | ResetTokenState::NotApplicable => Decision::Refuse(Outcome::failed(
            ErrorCode::ResetTokenNotActive,
            "no reset token is registered on this device; the agent registers one at enrollment — check the agent is running, then retry",
        )),
    }
}
