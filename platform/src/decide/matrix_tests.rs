//! SPEC §3 through the platform layer: every row of [`crate::matrix::DEVICES`] runs against a
//! simulator in a temp dir, with the commands built the way the server builds them
//! ([`crate::request::plan`]), and each outcome and its trace on the device are checked. Then a
//! few rules the table cannot show on its own.
use super::*;
use crate::action::{LockRequest, ResetFlags};
use crate::execute::{execute, Request};
use crate::facts::ResetTokenState;
use crate::matrix::{self, Ask, Before};
use crate::outcome::Status;
use crate::policy::generate;
use crate::port::DevicePort;
use crate::request::{self, CommandKind};
use crate::secret::{Secret, SecretBytes};
use crate::sim::profile::{build, InitOptions};
use crate::sim::{SimPort, SimState};

/// One simulated device, and what a server and an agent would hold for it.
struct Rig {
    path: std::path::PathBuf,
    port: SimPort,
    reset_token: Option<SecretBytes>,
    escrowed_unlock_token: Option<SecretBytes>,
    /// The PIN of the last macOS lock that was applied.
    lock_pin: Option<Secret>,
}

impl Rig {
    fn enroll(dir: &std::path::Path, n: usize, device: &matrix::Device) -> Rig {
        let path = dir.join(format!("{n:02}-{}.json", device.profile));
        build(device.profile, &device.init.options()).expect("profile").save(&path).expect("save");
        let mut port = SimPort::open(&path).expect("open");
        // The agent's enrollment: register a reset token where the platform has them, escrow the
        // unlock token where it has one.
        let reset_token = (port.snapshot().expect("snap").state.reset_token != ResetTokenState::NotApplicable)
            .then(|| SecretBytes::random(32));
        if let Some(token) = &reset_token {
            port.set_reset_token(token).expect("register reset token");
        }
        let escrowed_unlock_token = port.unlock_token().expect("unlock token");
        Rig { path, port, reset_token, escrowed_unlock_token, lock_pin: None }
    }

    fn state(&self) -> SimState {
        SimState::load(&self.path).expect("load")
    }

    /// The command the server would queue for `ask`, with its secrets.
    fn command(&mut self, ask: Ask) -> (Action, Option<Secret>) {
        let snapshot = self.port.snapshot().expect("snapshot");
        let plan = request::plan(&snapshot.facts, &ask.request());
        match plan.kind {
            CommandKind::ResetPasscode(scope) => {
                let policy = match scope {
                    Scope::Device => snapshot.state.device_policy,
                    Scope::WorkProfile => snapshot.state.work_profile_policy,
                };
                let floor = PasscodePolicy::Android(Default::default());
                let passcode = if plan.temporary_passcode {
                    generate::temporary_passcode(policy.as_ref().unwrap_or(&floor)).expect("generate")
                } else {
                    Secret::default()
                };
                (
                    Action::ResetPasscode { scope, passcode: passcode.clone(), flags: ResetFlags::default() },
                    Some(passcode),
                )
            }
            CommandKind::RemovePasscode => {
                let token = self.escrowed_unlock_token.clone().unwrap_or_default();
                (Action::RemovePasscode { unlock_token: token }, None)
            }
            CommandKind::RemoteLock => {
                // Each lock its own PIN, as the server draws them.
                let pin = plan.lock_pin.then(|| Secret::new(format!("{:06}", 482_913 + self.state().effects.len())));
                let lock = LockRequest {
                    message: matrix::LOCK_MESSAGE.into(),
                    phone_number: matrix::LOCK_PHONE.into(),
                    pin: pin.clone(),
                };
                (Action::RemoteLock(lock), pin)
            }
            CommandKind::ResetPin => (Action::ResetPin, None),
        }
    }
}

#[test]
fn every_row_of_the_matrix_through_the_platform_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (n, device) in matrix::DEVICES.iter().enumerate() {
        let mut rig = Rig::enroll(dir.path(), n, device);
        for (i, step) in device.steps.iter().enumerate() {
            let what = format!("{} step {i} ({:?})", device.label, step.ask);
            match step.before {
                Before::Nothing => {}
                Before::UserConfirmsCredential => {
                    let mut state = rig.state();
                    state.user_confirm_credential();
                    state.save(&rig.path).expect("save");
                }
                Before::WrongUnlockTokenEscrowed => rig.escrowed_unlock_token = Some(SecretBytes::random(32)),
                Before::UserUnlocksWithLockPin => {
                    let mut state = rig.state();
                    let pin = rig.lock_pin.take().expect("an earlier lock's PIN");
                    assert!(!state.user_unlock(&Secret::from("000000")), "{what}: a wrong PIN unlocked the Mac");
                    assert!(state.user_unlock(&pin), "{what}: the lock's PIN does not unlock the Mac");
                    state.save(&rig.path).expect("save");
                }
            }
            let before = rig.state();
            let (action, secret) = rig.command(step.ask);
            let id = format!("cmd-{n}-{i}");
            let outcome = execute(
                &mut rig.port,
                &Request { command_id: &id, action: &action, reset_token: rig.reset_token.as_ref() },
                &mut || Ok(()),
            );
            assert_eq!((outcome.status, outcome.code), (step.status, step.code), "{what}: {}", outcome.message);
            for (key, value) in step.outputs {
                assert_eq!(outcome.outputs.get(*key).map(String::as_str), Some(*value), "{what}: output {key}");
            }
            let after = rig.state();
            let effects = after.effects.iter().filter(|e| e.command_id == id).count();
            if step.status != Status::Succeeded {
                assert_eq!(effects, 0, "{what}: a refused action touched the device");
                assert_eq!(after.locked, before.locked, "{what}: lock state changed");
                continue;
            }
            match &action {
                Action::ResetPasscode { scope, .. } => {
                    let secret = secret.as_ref().expect("temporary passcode");
                    assert!(after.passcode_is(*scope, secret), "{what}: device does not hold the new passcode");
                    assert_eq!(after.effects_of(&id, action.kind()), 1, "{what}");
                }
                Action::RemovePasscode { .. } => {
                    assert!(after.device_passcode.is_none(), "{what}: passcode still set");
                    assert_eq!(after.effects_of(&id, "remove_passcode"), 1, "{what}");
                }
                Action::RemoteLock(lock) => {
                    if lock.pin.is_some() {
                        rig.lock_pin = secret.clone();
                    }
                    assert!(after.locked, "{what}: not locked");
                    assert_eq!(after.effects_of(&id, "remote_lock"), 1, "{what}");
                    let phone =
                        after.effects.iter().find(|e| e.command_id == id).and_then(|e| e.details.get("phone_number"));
                    assert_eq!(phone.map(String::as_str), Some(matrix::LOCK_PHONE), "{what}: phone number lost");
                }
                Action::ResetPin => {
                    let pin = outcome.generated_pin.as_ref().expect("a generated PIN in the result");
                    assert!(
                        after.passcode_is(Scope::Device, pin),
                        "{what}: the reported PIN does not unlock the device"
                    );
                    assert!(after.locked, "{what}: LockAndRecoverPIN locks the device");
                    assert_eq!(after.effects_of(&id, "reset_pin"), 1, "{what}");
                    assert_eq!(after.effects_of(&id, "remote_lock"), 1, "{what}");
                }
            }
        }
    }
}

fn snapshot(profile: &str, token: ResetTokenState, options: &InitOptions) -> PortSnapshot {
    let mut snapshot = build(profile, options).expect("profile").snapshot();
    if snapshot.state.reset_token != ResetTokenState::NotApplicable {
        snapshot.state.reset_token = token;
    }
    snapshot
}

fn outcome(decision: Decision) -> Option<(Status, ErrorCode)> {
    match decision {
        Decision::Apply(_) => None,
        Decision::Refuse(o) => Some((o.status, o.code.expect("refusals carry a code"))),
    }
}

fn lock(pin: Option<&str>) -> Action {
    Action::RemoteLock(LockRequest { pin: pin.map(Secret::from), ..LockRequest::default() })
}

#[test]
fn reset_token_must_be_active() {
    for token in [ResetTokenState::None, ResetTokenState::PendingUser] {
        for (profile, scope) in [("android-do", Scope::Device), ("android-wp-byod", Scope::WorkProfile)] {
            let s = snapshot(profile, token, &InitOptions::default());
            let reset = Action::ResetPasscode { scope, passcode: Secret::from("385172"), flags: ResetFlags::default() };
            assert_eq!(
                outcome(decide(&s, &reset)),
                Some((Status::Failed, ErrorCode::ResetTokenNotActive)),
                "{profile} {token:?}"
            );
        }
    }
}

#[test]
fn non_compliant_temporary_passcode_is_refused_before_any_effect() {
    let s = snapshot("android-do", ResetTokenState::Active, &InitOptions::default());
    let weak =
        Action::ResetPasscode { scope: Scope::Device, passcode: Secret::from("123456"), flags: ResetFlags::default() };
    assert_eq!(outcome(decide(&s, &weak)), Some((Status::Failed, ErrorCode::PasscodeNotCompliant)));
    let Decision::Refuse(o) = decide(&s, &weak) else { panic!("must refuse") };
    assert_eq!(o.outputs.get("violations").map(String::as_str), Some("CONTAINS_SEQUENCE"));
    assert!(!o.message.contains("123456"), "message leaks the passcode");
}

#[test]
fn a_macos_lock_needs_six_digits() {
    let s = snapshot("macos", ResetTokenState::NotApplicable, &InitOptions::default());
    for bad in [None, Some(""), Some("12345"), Some("1234567"), Some("12345a"), Some("١٢٣٤٥٦")] {
        assert_eq!(outcome(decide(&s, &lock(bad))), Some((Status::Rejected, ErrorCode::Malformed)), "{bad:?}");
    }
    assert_eq!(outcome(decide(&s, &lock(Some("004821")))), None);
    // An iOS lock needs no PIN (Apple: PIN is macOS only).
    let ios = snapshot("ios", ResetTokenState::NotApplicable, &InitOptions::default());
    assert_eq!(outcome(decide(&ios, &lock(None))), None);
}

#[test]
fn no_credential_means_no_lock_on_every_platform_but_apple() {
    let none = InitOptions { no_passcode: true, ..InitOptions::default() };
    for profile in ["android6-da", "android-do", "android-wp-byod", "aosp-user", "windows10-mobile"] {
        let s = snapshot(profile, ResetTokenState::Active, &none);
        assert_eq!(outcome(decide(&s, &lock(None))), Some((Status::Failed, ErrorCode::NoPasscode)), "{profile}");
    }
    for profile in ["ios", "ios-user-enrollment"] {
        let s = snapshot(profile, ResetTokenState::NotApplicable, &none);
        assert_eq!(outcome(decide(&s, &lock(None))), None, "{profile}: DeviceLock locks without a passcode");
    }
}

#[test]
fn pin_recovery_needs_the_tenant_policy_and_creators_update() {
    let off = InitOptions { pin_recovery_disabled: true, ..InitOptions::default() };
    let s = snapshot("windows10-mobile", ResetTokenState::NotApplicable, &off);
    assert_eq!(outcome(decide(&s, &Action::ResetPin)), Some((Status::Failed, ErrorCode::PinRecoveryDisabled)));
    let mut old = snapshot("windows10-mobile", ResetTokenState::NotApplicable, &InitOptions::default());
    old.facts.os_version = "10.0.14393".into();
    assert_eq!(outcome(decide(&old, &Action::ResetPin)), Some((Status::NotSupported, ErrorCode::ApiLevel)));
}

#[test]
fn user_enrollment_enforces_its_own_passcode_rules_whatever_the_payload() {
    // The profile's payload asks for 10 characters, letters and two symbols; User Enrollment
    // enforces only six characters, not simple.
    let mut state = build("ios-user-enrollment", &InitOptions::default()).expect("profile");
    assert_eq!(
        state.snapshot().state.device_policy,
        Some(PasscodePolicy::Apple(crate::policy::ApplePolicy::user_enrollment()))
    );
    state.user_set_passcode(Scope::Device, &Secret::from("193746")).expect("six digits are enough");
    assert!(state.user_set_passcode(Scope::Device, &Secret::from("123456")).is_err(), "simple");
    assert!(state.user_set_passcode(Scope::Device, &Secret::from("19374")).is_err(), "too short");
}
