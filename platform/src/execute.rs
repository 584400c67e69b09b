//! Carries a decision out through a port and turns the port's answer into an outcome.
//!
//! The rule this module keeps: once the port has acted, nothing turns the result into a failure.
//! Refusals are decided before the first side effect; checks after it (is the device-generated
//! PIN compliant?) only add a warning; a port error that may have come after the effect
//! ([`PortError::Indeterminate`]) is settled by asking the port whether the effect happened, and
//! "cannot tell" is reported as such.
use crate::action::{Action, Scope};
use crate::decide::{decide, Decision, Plan};
use crate::outcome::{ErrorCode, Outcome, Status};
use crate::port::{DevicePort, EffectId, LockReport, MessageResult, PinReport, PortError};
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

/// Output key: whether the effect is known to have happened, where a failure left that open.
pub const EFFECT: &str = "effect";

/// Decides and, when the decision is to act, acts. The callback runs after the decision and
/// before the first side effect, so the caller can journal "applying" exactly there.
pub fn execute(
    port: &mut dyn DevicePort,
    request: &Request<'_>,
    before_effect: &mut dyn FnMut() -> Result<(), String>,
) -> Outcome {
    let snapshot = match port.snapshot() {
        Ok(s) => s,
        // Nothing was attempted yet, whatever the error says.
        Err(e) => return port_failure(not_attempted(e)),
    };
    let plan = match decide(&snapshot, request.action) {
        Decision::Refuse(outcome) => return outcome,
        Decision::Apply(plan) => plan,
    };
    if let Err(e) = before_effect() {
        return Outcome::refused(
            Status::NotNow,
            ErrorCode::PlatformError,
            format!(
                "the agent could not record the command before acting ({e}); nothing was applied and the server delivers it again"
            ),
        );
    }
    let effect = EffectId(request.command_id);
    let result = match (&plan, request.action) {
        (Plan::SetCredential(scope), Action::ResetPasscode { passcode, flags, .. }) => {
            port.set_credential(*scope, passcode, *flags, effect).map(|()| Outcome::succeeded(reset_message(*scope)))
        }
        (Plan::ResetWithToken(scope), Action::ResetPasscode { passcode, flags, .. }) => match request.reset_token {
            Some(token) => port
                .reset_with_token(*scope, passcode, token, *flags, effect)
                .map(|()| Outcome::succeeded(reset_message(*scope))),
            None => Err(PortError::TokenNotActive),
        },
        (Plan::ClearPasscode { prompt_new_passcode }, Action::RemovePasscode { unlock_token }) => {
            port.clear_passcode(unlock_token, effect).map(|()| removal_outcome(*prompt_new_passcode))
        }
        (Plan::LockNow, Action::RemoteLock(lock)) => {
            port.lock_now(lock, effect).map(|report| lock_outcome(report, lock.pin.is_some()))
        }
        (Plan::GeneratePin(policy), _) => port.generate_pin(effect).map(|report| pin_outcome(report, policy.as_ref())),
        _ => Err(PortError::Refused("plan does not fit the action".into())),
    };
    match result {
        Ok(outcome) => outcome,
        Err(PortError::Indeterminate(why)) => settle(port, request.command_id, request.action.kind(), &why),
        Err(e) => port_failure(e),
    }
}

/// Settles a command whose effect may or may not have happened (a crash mid-effect, or a port
/// error after the request was sent) by asking the port. Never applies anything.
pub fn settle(port: &mut dyn DevicePort, command_id: &str, kind: &str, why: &str) -> Outcome {
    match port.effect_applied(command_id) {
        Ok(Some(true)) if kind == "reset_pin" => Outcome::succeeded(format!(
            "the device changed its PIN, but the new PIN was lost ({why}); issue another PIN reset to get a PIN for the user"
        ))
        .with_output(EFFECT, "applied")
        .with_output("generated_pin_lost", "true"),
        Ok(Some(true)) => {
            Outcome::succeeded(format!("{kind} took effect; the device confirms it ({why}), so it was not applied again"))
                .with_output(EFFECT, "applied")
        }
        Ok(Some(false)) => Outcome::refused(
            Status::NotNow,
            ErrorCode::Interrupted,
            format!("{kind} was not applied ({why}); the device confirms nothing changed, and the server delivers it again"),
        )
        .with_output(EFFECT, "not_applied"),
        Ok(None) | Err(_) => Outcome::failed(
            ErrorCode::Interrupted,
            format!(
                "{kind} was interrupted ({why}) and the device cannot tell whether it took effect; check the device before issuing it again"
            ),
        )
        .with_output(EFFECT, "unknown"),
    }
}

/// A snapshot failure happens before any call that could act.
fn not_attempted(e: PortError) -> PortError {
    match e {
        PortError::Indeterminate(why) => PortError::Unavailable(why),
        other => other,
    }
}

fn reset_message(scope: Scope) -> &'static str {
    match scope {
        Scope::Device => "passcode reset; the user unlocks with the temporary passcode shown to the admin",
        Scope::WorkProfile => {
            "work-profile passcode reset; the user unlocks the work profile with the temporary passcode shown to the admin"
        }
    }
}

fn removal_outcome(prompt_new_passcode: bool) -> Outcome {
    if prompt_new_passcode {
        Outcome::succeeded(
            "passcode removed; a passcode compliance policy is installed, so the user was prompted to set a new passcode",
        )
        .with_output("user_prompted_for_new_passcode", "true")
    } else {
        Outcome::succeeded("passcode removed; the device has no passcode now")
            .with_output("user_prompted_for_new_passcode", "false")
    }
}

fn lock_outcome(report: LockReport, with_pin: bool) -> Outcome {
    if !report.locked {
        // The OS acted (the screen went off) but did not lock: say exactly that.
        return Outcome::failed(
            ErrorCode::NoPasscode,
            "the device turned its screen off but did not lock: it has no PIN or password; assign a passcode policy so the user sets one, then retry",
        )
        .with_output("screen_turned_off", "true");
    }
    let mut message = if with_pin {
        "device locked; it unlocks with the six-digit Find My PIN shown to the admin".to_owned()
    } else {
        "device locked".to_owned()
    };
    if report.message_result == Some(MessageResult::NoPasscodeSet) {
        message.push_str("; the lock-screen message was not shown because the device has no passcode");
    }
    let outcome = Outcome::succeeded(message);
    match report.message_result {
        Some(result) => outcome.with_output("message_result", result.as_str()),
        None => outcome,
    }
}

fn pin_outcome(report: PinReport, policy: Option<&crate::policy::PasscodePolicy>) -> Outcome {
    let mut outcome = Outcome::succeeded(if report.locked {
        "the device locked itself and generated a new PIN; give the PIN to the user (it is shown for seven days)"
    } else {
        "the device generated a new PIN; give it to the user (it is shown for seven days)"
    });
    if report.locked {
        outcome = outcome.with_output("device_locked", "true");
    }
    // Advisory only: the PIN is already set, so the user needs it whatever it looks like.
    if let Some(problem) = crate::decide::non_compliant(policy, report.pin.expose()) {
        outcome = outcome.with_output(
            "warning",
            format!("the device-generated PIN does not meet the reported PIN policy: {}", problem.message),
        );
    }
    outcome.generated_pin = Some(report.pin);
    outcome
}

/// Maps a port failure that changed nothing to an admin-facing outcome.
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
        PortError::Refused(why) => {
            Outcome::failed(ErrorCode::PlatformError, format!("the platform refused: {why}; nothing was changed"))
        }
        PortError::Unavailable(why) => Outcome::refused(
            Status::NotNow,
            ErrorCode::PlatformError,
            format!("the device could not be reached through its platform port ({why}); nothing was applied and the server delivers it again"),
        ),
        PortError::Indeterminate(why) => Outcome::failed(
            ErrorCode::Interrupted,
            format!("the platform port failed part-way ({why}); the device cannot tell whether it took effect"),
        )
        .with_output(EFFECT, "unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{LockRequest, ResetFlags};
    use crate::port::PortSnapshot;
    use crate::secret::Secret;
    use crate::sim::{profile, SimPort};

    /// A simulator whose calls can be made to fail after (or before) they act, as a real port can.
    struct Flaky {
        inner: SimPort,
        fail_after_effect: bool,
        effect_known: Option<bool>,
    }

    impl DevicePort for Flaky {
        fn snapshot(&mut self) -> Result<PortSnapshot, PortError> {
            self.inner.snapshot()
        }
        fn set_credential(&mut self, s: Scope, p: &Secret, f: ResetFlags, e: EffectId<'_>) -> Result<(), PortError> {
            self.inner.set_credential(s, p, f, e)?;
            if self.fail_after_effect {
                return Err(PortError::Indeterminate("bridge timed out waiting for the answer".into()));
            }
            Ok(())
        }
        fn reset_with_token(
            &mut self,
            s: Scope,
            p: &Secret,
            t: &SecretBytes,
            f: ResetFlags,
            e: EffectId<'_>,
        ) -> Result<(), PortError> {
            self.inner.reset_with_token(s, p, t, f, e)
        }
        fn clear_passcode(&mut self, t: &SecretBytes, e: EffectId<'_>) -> Result<(), PortError> {
            self.inner.clear_passcode(t, e)
        }
        fn lock_now(&mut self, r: &LockRequest, e: EffectId<'_>) -> Result<LockReport, PortError> {
            self.inner.lock_now(r, e)
        }
        fn generate_pin(&mut self, e: EffectId<'_>) -> Result<PinReport, PortError> {
            self.inner.generate_pin(e)
        }
        fn set_reset_token(&mut self, t: &SecretBytes) -> Result<crate::ResetTokenState, PortError> {
            self.inner.set_reset_token(t)
        }
        fn unlock_token(&mut self) -> Result<Option<SecretBytes>, PortError> {
            self.inner.unlock_token()
        }
        fn notify(&mut self, id: &str, text: Option<&str>) -> Result<(), PortError> {
            self.inner.notify(id, text)
        }
        fn effect_applied(&mut self, id: &str) -> Result<Option<bool>, PortError> {
            match self.effect_known {
                Some(_) => self.inner.effect_applied(id),
                None => Ok(None),
            }
        }
    }

    fn sim(dir: &std::path::Path, name: &str, options: &profile::InitOptions) -> SimPort {
        let path = dir.join(format!("{name}.json"));
        profile::build(name, options).expect("profile").save(&path).expect("save");
        SimPort::open(&path).expect("open")
    }

    #[test]
    fn a_pin_set_by_the_device_is_reported_with_its_pin_even_when_it_breaks_the_policy() {
        // The PIN is already set when the check runs: the check may only warn.
        let strict = crate::policy::PasscodePolicy::Windows(crate::policy::WindowsPolicy {
            min_length: Some(40),
            ..Default::default()
        });
        let outcome = pin_outcome(PinReport { pin: Secret::from("123456"), locked: true }, Some(&strict));
        assert_eq!(outcome.status, Status::Succeeded);
        assert!(outcome.generated_pin.is_some(), "the PIN must always reach the admin");
        assert!(outcome.outputs.contains_key("warning"));

        let dir = tempfile::tempdir().expect("tempdir");
        let mut port = sim(dir.path(), "windows10-mobile", &Default::default());
        let outcome = execute(
            &mut port,
            &Request { command_id: "pin-1", action: &Action::ResetPin, reset_token: None },
            &mut || Ok(()),
        );
        assert_eq!(outcome.status, Status::Succeeded, "{}", outcome.message);
        assert!(outcome.generated_pin.is_some());
        assert_eq!(outcome.outputs.get("device_locked").map(String::as_str), Some("true"));
    }

    #[test]
    fn an_error_after_the_effect_is_settled_by_asking_the_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let action = Action::ResetPasscode {
            scope: Scope::Device,
            passcode: Secret::from("482913"),
            flags: ResetFlags::default(),
        };
        for (effect_known, status, effect) in
            [(Some(true), Status::Succeeded, "applied"), (None, Status::Failed, "unknown")]
        {
            let mut port = Flaky {
                inner: sim(dir.path(), "android6-da", &Default::default()),
                fail_after_effect: true,
                effect_known,
            };
            let outcome =
                execute(&mut port, &Request { command_id: "c-1", action: &action, reset_token: None }, &mut || Ok(()));
            assert_eq!(outcome.status, status, "{}", outcome.message);
            assert_eq!(outcome.outputs.get(EFFECT).map(String::as_str), Some(effect));
            assert_ne!(outcome.code, Some(ErrorCode::PasscodeNotCompliant), "never 'left unchanged' after a change");
        }
    }

    #[test]
    fn nothing_happens_when_journaling_before_the_effect_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut port = sim(dir.path(), "aosp-user", &Default::default());
        let action = Action::RemoteLock(LockRequest::default());
        let outcome =
            execute(&mut port, &Request { command_id: "l-1", action: &action, reset_token: None }, &mut || {
                Err("disk full".into())
            });
        assert_eq!(outcome.status, Status::NotNow);
        assert_eq!(port.effect_applied("l-1").expect("effects"), Some(false));
        assert!(!port.snapshot().expect("snap").state.locked);
    }
}
