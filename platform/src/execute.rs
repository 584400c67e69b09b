//! Carries a decision out through a port and turns the port's answer into an outcome.
use crate::action::Action;
use crate::decide::{decide, Decision, Plan};
use crate::outcome::{ErrorCode, Outcome};
use crate::port::{DevicePort, EffectId, PortError};
use crate::secret::SecretBytes;

/// Everything `execute` needs besides the port.
pub struct Request<'a> {
    /// The command this is.
    pub command_id: &'a str,
    /// The action.
    pub action: &'a Action,
    /// The reset-password token held in the agent's secret store, if any.
    pub reset_token: Option<&'a SecretBytes>,
}

/// Decides and, when the decision is to act, acts. The callback runs after the decision and
/// before the first side effect, so the caller can journal "applying" exactly there.
pub fn execute(
    port: &mut dyn DevicePort,
    request: &Request<'_>,
    before_effect: &mut dyn FnMut() -> Result<(), String>,
) -> Outcome {
    let snapshot = match port.snapshot() {
        Ok(s) => s,
        Err(e) => return port_failure(e),
    };
    let plan = match decide(&snapshot, request.action) {
        Decision::Refuse(outcome) => return outcome,
        Decision::Apply(plan) => plan,
    };
    if let Err(e) = before_effect() {
        return Outcome::refused(
            crate::outcome::Status::NotNow,
            ErrorCode::PlatformError,
            format!("the agent could not record the command before acting ({e}); it will be retried"),
        );
    }
    let effect = EffectId(request.command_id);
    let result = match (&plan, request.action) {
        (Plan::SetCredential(scope), Action::ResetPasscode { passcode, .. }) => {
            port.set_credential(*scope, passcode, effect).map(|()| Outcome::succeeded(reset_message(*scope)))
        }
        (Plan::ResetWithToken(scope), Action::ResetPasscode { passcode, .. }) => match request.reset_token {
            Some(token) => port
                .reset_with_token(*scope, passcode, token, effect)
                .map(|()| Outcome::succeeded(reset_message(*scope))),
            None => Err(PortError::TokenNotActive),
        },
        (Plan::ClearPasscode { prompt_new_passcode }, Action::RemovePasscode { unlock_token }) => {
            port.clear_passcode(unlock_token, effect).map(|()| {
                if *prompt_new_passcode {
                    Outcome::succeeded(
                        "passcode removed; a passcode compliance policy is installed, so the user was prompted to set a new passcode",
                    )
                    .with_output("user_prompted_for_new_passcode", "true")
                } else {
                    Outcome::succeeded("passcode removed; the device has no passcode now")
                        .with_output("user_prompted_for_new_passcode", "false")
                }
            })
        }
        (Plan::LockNow, Action::RemoteLock(lock)) => {
            port.lock_now(lock, effect).map(|()| Outcome::succeeded("device locked"))
        }
        (Plan::GeneratePin(policy), _) => port.generate_pin(effect).and_then(|pin| {
            if let Some(problem) = crate::decide::non_compliant(policy.as_ref(), pin.expose()) {
                return Err(PortError::NotCompliant(problem.message));
            }
            let mut outcome = Outcome::succeeded(
                "the device generated a new PIN; give it to the user, it is shown for seven days",
            );
            outcome.generated_pin = Some(pin);
            Ok(outcome)
        }),
        _ => Err(PortError::Refused("plan does not fit the action".into())),
    };
    result.unwrap_or_else(port_failure)
}

fn reset_message(scope: crate::action::Scope) -> &'static str {
    match scope {
        crate::action::Scope::Device => {
            "passcode reset; the user unlocks with the temporary passcode shown to the admin"
        }
        crate::action::Scope::WorkProfile => {
            "work-profile passcode reset; the user unlocks the work profile with the temporary passcode shown to the admin"
        }
    }
}

/// Maps a port failure to an admin-facing outcome.
pub fn port_failure(error: PortError) -> Outcome {
    match error {
        PortError::TokenMismatch => Outcome::failed(
            ErrorCode::UnlockTokenMismatch,
            "the unlock token stored for this device does not match the device's; the passcode was not removed and the device may need to be wiped to regain access",
        ),
        PortError::TokenNotActive => Outcome::failed(
            ErrorCode::ResetTokenNotActive,
            "the device refused the reset token as not active; the user must confirm their passcode on the device, then retry",
        ),
        PortError::NotCompliant(why) => Outcome::failed(
            ErrorCode::PasscodeNotCompliant,
            format!("the platform rejected the passcode ({why}); the current passcode was left unchanged"),
        ),
        PortError::Unsupported(what) => {
            Outcome::not_supported(ErrorCode::PlatformUnsupported, format!("this device's port cannot {what}"))
        }
        PortError::Refused(why) => Outcome::failed(ErrorCode::PlatformError, format!("the platform refused: {why}")),
        PortError::Io(why) => Outcome::refused(
            crate::outcome::Status::NotNow,
            ErrorCode::PlatformError,
            format!("the device could not be reached through its platform port ({why}); retry later"),
        ),
    }
}
