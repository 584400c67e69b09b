//! The platform matrix (SPEC §3) as pure functions: `decide(snapshot, action) -> Decision`.
//! One module per target family; each returns either a plan for the port or a refusal whose
//! message tells the admin what to do.
//!
//! - [`android`]: device admin, Android Enterprise device owner and work profile, AOSP.
//! - [`apple`]: iOS/iPadOS, User Enrollment, macOS.
//! - [`windows`]: Windows desktop and Windows 10 Mobile PIN recovery.
//! - [`linux`]: Linux local accounts.
use crate::action::{Action, Scope};
use crate::facts::Platform;
use crate::outcome::{ErrorCode, Outcome};
use crate::policy::PasscodePolicy;
use crate::port::PortSnapshot;

pub mod android;
pub mod apple;
pub mod linux;
pub mod windows;

/// What the port should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// `set_credential(scope, passcode)`.
    SetCredential(Scope),
    /// `reset_with_token(scope, passcode, token)`.
    ResetWithToken(Scope),
    /// `clear_passcode(token)`; `prompt_new_passcode` when a compliance policy is installed.
    ClearPasscode {
        /// The device will ask the user for a new passcode afterwards.
        prompt_new_passcode: bool,
    },
    /// `lock_now`.
    LockNow,
    /// `generate_pin`, checked against this policy.
    GeneratePin(Option<PasscodePolicy>),
}

/// A decision: act, or refuse with a reason.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Carry out this plan.
    Apply(Plan),
    /// Do nothing; report this.
    Refuse(Outcome),
}

/// Decides what `action` means on the device described by `snapshot`.
pub fn decide(snapshot: &PortSnapshot, action: &Action) -> Decision {
    match snapshot.facts.platform {
        Platform::Android | Platform::Aosp => android::decide(snapshot, action),
        Platform::Ios | Platform::Macos => apple::decide(snapshot, action),
        Platform::Windows | Platform::WindowsMobile => windows::decide(snapshot, action),
        Platform::Linux => linux::decide(snapshot, action),
    }
}

/// Checks a new passcode against the policy in force; `None` means compliant.
pub(crate) fn non_compliant(policy: Option<&PasscodePolicy>, passcode: &str) -> Option<Outcome> {
    let policy = policy?;
    let verdict = policy.check(passcode);
    if verdict.compliant {
        return None;
    }
    let codes: Vec<&str> = verdict.violations.iter().map(|v| v.code).collect();
    Some(
        Outcome::failed(
            ErrorCode::PasscodeNotCompliant,
            format!(
                "the new passcode does not meet the {} passcode policy in force ({}); the current passcode was left unchanged — issue a new reset so a compliant passcode is generated",
                policy.dialect(),
                verdict.summary()
            ),
        )
        .with_output("violations", codes.join(",")),
    )
}

/// The refusal shared by every family for a lock on a device without a credential.
pub(crate) fn no_passcode(message: &str) -> Outcome {
    Outcome::failed(ErrorCode::NoPasscode, message)
}

/// The refusal shared by every family for an action its platform does not have.
pub(crate) fn unsupported_here(what: &str, platform: &str) -> Decision {
    Decision::Refuse(Outcome::not_supported(
        ErrorCode::PlatformUnsupported,
        format!("{platform} does not support {what}"),
    ))
}

#[cfg(test)]
mod matrix_tests;
