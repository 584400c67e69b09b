//! Apple rows: iOS/iPadOS remove the passcode rather than reset it (`ClearPasscode` with the
//! escrowed unlock token); User Enrollment allows neither; macOS has no passcode reset.
//!
//! Inferred: remote lock (`DeviceLock`) is not available to an MDM under User Enrollment, as
//! Apple limits User Enrollment to the managed volume and accounts.
use super::{unsupported_here, Decision, Plan};
use crate::action::Action;
use crate::facts::{ManagementMode, Platform};
use crate::outcome::{ErrorCode, Outcome};
use crate::port::PortSnapshot;

/// Decides an action on an Apple device.
pub fn decide(s: &PortSnapshot, action: &Action) -> Decision {
    let user_enrollment = s.facts.mode == ManagementMode::AppleUserEnrollment;
    let user_enrollment_refusal = |what: &str| {
        Decision::Refuse(Outcome::not_supported(
            ErrorCode::UserEnrollment,
            format!("{what} is not available for devices enrolled with User Enrollment"),
        ))
    };
    match (s.facts.platform, action) {
        (Platform::Macos, Action::ResetPasscode { .. }) => unsupported_here("passcode reset", "macOS"),
        (Platform::Macos, Action::RemovePasscode { .. }) => unsupported_here("passcode removal", "macOS"),
        (_, Action::ResetPasscode { .. }) if user_enrollment => user_enrollment_refusal("passcode reset"),
        (_, Action::ResetPasscode { .. }) => Decision::Refuse(Outcome::not_supported(
            ErrorCode::PlatformUnsupported,
            "iOS/iPadOS passcodes are removed, not reset: use remove-passcode",
        )),
        (_, Action::RemovePasscode { .. }) if user_enrollment => user_enrollment_refusal("passcode removal"),
        (_, Action::RemovePasscode { unlock_token }) if unlock_token.is_empty() => {
            Decision::Refuse(Outcome::failed(
                ErrorCode::UnlockTokenMissing,
                "no unlock token is escrowed for this device, so its passcode cannot be removed; the device may need to be wiped to regain access",
            ))
        }
        (_, Action::RemovePasscode { .. }) => Decision::Apply(Plan::ClearPasscode {
            prompt_new_passcode: s.state.device_policy.is_some(),
        }),
        (_, Action::RemoteLock(_)) if user_enrollment => user_enrollment_refusal("remote lock"),
        (_, Action::RemoteLock(_)) => Decision::Apply(Plan::LockNow),
        (_, Action::ResetPin) => unsupported_here("PIN recovery (Windows 10 Mobile only)", "Apple"),
    }
}
