//! Apple rows (apple/device-management `mdm/commands/passcode.clear.yaml` and
//! `mdm/commands/device.lock.yaml`; Intune "Reset or remove a device passcode" and "Remotely lock
//! devices with Intune").
//!
//! - iOS/iPadOS passcodes are removed, not reset (`ClearPasscode` with the escrowed unlock token;
//!   the seed: "Instead of being reset, passcodes are removed"). A reset request becomes a removal
//!   before it reaches the device (see [`crate::request`]); a bare reset that still arrives is
//!   refused.
//! - `ClearPasscode` is forbidden under User Enrollment (`userenrollment: forbidden`) and does
//!   not exist on macOS (`macOS: introduced: n/a`).
//! - `DeviceLock` is allowed under iOS User Enrollment (`userenrollment: mode: allowed`) and
//!   forbidden under macOS User Enrollment. It locks whether or not a passcode is set; the
//!   lock-screen message shows only when one is — the response's `MessageResult` is
//!   `NoPasscodeSet` then, reported as an output, not a failure.
//! - macOS: `PIN` is "the six-character PIN for Find My" (macOS 10.8+); Intune sets a 6-digit
//!   recovery PIN, shows it for 30 days and warns: "do not initiate this command again for the
//!   same device until the original pin is used to successfully unlock the device". A macOS lock
//!   without six digits is rejected as malformed; a lock while the Mac is still locked with an
//!   earlier PIN fails with `LOCK_PIN_OUTSTANDING` and changes nothing.
use super::{unsupported_here, Decision, Plan};
use crate::action::Action;
use crate::facts::{ManagementMode, Platform};
use crate::outcome::{ErrorCode, Outcome, Status};
use crate::port::PortSnapshot;

/// Length of the Find My PIN a macOS lock carries.
pub const MACOS_LOCK_PIN_LEN: usize = 6;

/// True when `pin` is a valid Find My PIN: exactly six ASCII digits.
pub fn valid_lock_pin(pin: &str) -> bool {
    pin.len() == MACOS_LOCK_PIN_LEN && pin.bytes().all(|b| b.is_ascii_digit())
}

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
        (Platform::Macos, Action::RemoteLock(_)) if user_enrollment => user_enrollment_refusal("remote lock on macOS"),
        (Platform::Macos, Action::RemoteLock(lock)) => {
            if !lock.pin.as_ref().is_some_and(|p| valid_lock_pin(p.expose())) {
                return Decision::Refuse(Outcome::refused(
                    Status::Rejected,
                    ErrorCode::Malformed,
                    "a macOS lock needs the six-digit Find My PIN that unlocks the Mac; the command carried none or a malformed one and was not applied — issue the lock again from the server, which generates the PIN",
                ));
            }
            if s.state.locked {
                return Decision::Refuse(Outcome::failed(
                    ErrorCode::LockPinOutstanding,
                    "the Mac is still locked with the PIN from an earlier lock; unlock it with that PIN (`latchkey-server passcodes` shows it) before locking it again — a second lock would replace the PIN the user may already have",
                ));
            }
            Decision::Apply(Plan::LockNow)
        }
        (_, Action::ResetPasscode { .. }) if user_enrollment => user_enrollment_refusal("passcode reset"),
        (_, Action::ResetPasscode { .. }) => Decision::Refuse(Outcome::not_supported(
            ErrorCode::PlatformUnsupported,
            "iOS/iPadOS passcodes are removed, not reset: the server sends a removal for a reset request",
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
        (_, Action::RemoteLock(_)) => Decision::Apply(Plan::LockNow),
        (_, Action::ResetPin) => unsupported_here("PIN recovery (Windows 10 Mobile only)", "Apple"),
    }
}
