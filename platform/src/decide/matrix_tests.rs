//! SPEC §3 as a table: one row per (profile, action), the expected status and error code.
use super::*;
use crate::action::LockRequest;
use crate::facts::ResetTokenState;
use crate::outcome::Status;
use crate::secret::{Secret, SecretBytes};
use crate::sim::profile::{build, InitOptions};

fn snapshot(profile: &str, token: ResetTokenState, options: &InitOptions) -> PortSnapshot {
    let mut snapshot = build(profile, options).expect("profile").snapshot();
    if snapshot.state.reset_token != ResetTokenState::NotApplicable {
        snapshot.state.reset_token = token;
    }
    snapshot
}

fn reset(scope: Scope) -> Action {
    Action::ResetPasscode { scope, passcode: Secret::from("385172"), flags: 0 }
}

fn remove() -> Action {
    Action::RemovePasscode { unlock_token: SecretBytes::random(32) }
}

fn lock() -> Action {
    Action::RemoteLock(LockRequest::default())
}

/// `None` status means "apply".
type Row = (&'static str, Action, Option<(Status, ErrorCode)>);

fn outcome(decision: Decision) -> Option<(Status, ErrorCode)> {
    match decision {
        Decision::Apply(_) => None,
        Decision::Refuse(o) => Some((o.status, o.code.expect("refusals carry a code"))),
    }
}

#[test]
fn device_level_reset_matrix() {
    use ErrorCode as E;
    use Status as S;
    let rows: Vec<Row> = vec![
        ("android6-da", reset(Scope::Device), None),
        ("android7-da", reset(Scope::Device), Some((S::NotSupported, E::ApiLevel))),
        ("android-do", reset(Scope::Device), None),
        ("android-wp-byod", reset(Scope::Device), Some((S::NotSupported, E::ManagementMode))),
        ("android-wp-cope", reset(Scope::Device), Some((S::NotSupported, E::ManagementMode))),
        ("aosp-user", reset(Scope::Device), None),
        ("aosp-userless", reset(Scope::Device), None),
        ("ios", reset(Scope::Device), Some((S::NotSupported, E::PlatformUnsupported))),
        ("ios-user-enrollment", reset(Scope::Device), Some((S::NotSupported, E::UserEnrollment))),
        ("macos", reset(Scope::Device), Some((S::NotSupported, E::PlatformUnsupported))),
        ("windows", reset(Scope::Device), Some((S::NotSupported, E::PlatformUnsupported))),
        ("windows10-mobile", Action::ResetPin, None),
        ("windows", Action::ResetPin, Some((S::NotSupported, E::PlatformUnsupported))),
    ];
    for (profile, action, expected) in rows {
        let s = snapshot(profile, ResetTokenState::Active, &InitOptions::default());
        assert_eq!(outcome(decide(&s, &action)), expected, "{profile} {}", action.kind());
    }
}

#[test]
fn work_profile_reset_matrix() {
    use ErrorCode as E;
    use Status as S;
    let rows: Vec<Row> = vec![
        ("android-wp-byod", reset(Scope::WorkProfile), None),
        ("android-wp-cope", reset(Scope::WorkProfile), None),
        ("android7-wp", reset(Scope::WorkProfile), Some((S::NotSupported, E::ApiLevel))),
        ("android7-da", reset(Scope::WorkProfile), Some((S::NotSupported, E::ApiLevel))),
        ("android-do", reset(Scope::WorkProfile), Some((S::NotSupported, E::ManagementMode))),
    ];
    for (profile, action, expected) in rows {
        let s = snapshot(profile, ResetTokenState::Active, &InitOptions::default());
        assert_eq!(outcome(decide(&s, &action)), expected, "{profile}");
    }
    let mut no_policy = snapshot("android-wp-byod", ResetTokenState::Active, &InitOptions::default());
    no_policy.state.work_profile_policy = None;
    assert_eq!(outcome(decide(&no_policy, &reset(Scope::WorkProfile))), Some((S::Failed, E::NoPasscodePolicy)));
}

#[test]
fn reset_token_must_be_active() {
    for token in [ResetTokenState::None, ResetTokenState::PendingUser] {
        for (profile, scope) in [("android-do", Scope::Device), ("android-wp-byod", Scope::WorkProfile)] {
            let s = snapshot(profile, token, &InitOptions::default());
            assert_eq!(
                outcome(decide(&s, &reset(scope))),
                Some((Status::Failed, ErrorCode::ResetTokenNotActive)),
                "{profile} {token:?}"
            );
        }
    }
}

#[test]
fn non_compliant_temporary_passcode_is_refused_before_any_effect() {
    let s = snapshot("android-do", ResetTokenState::Active, &InitOptions::default());
    let weak = Action::ResetPasscode { scope: Scope::Device, passcode: Secret::from("123456"), flags: 0 };
    assert_eq!(outcome(decide(&s, &weak)), Some((Status::Failed, ErrorCode::PasscodeNotCompliant)));
    let Decision::Refuse(o) = decide(&s, &weak) else { panic!("must refuse") };
    assert_eq!(o.outputs.get("violations").map(String::as_str), Some("CONTAINS_SEQUENCE"));
    assert!(!o.message.contains("123456"), "message leaks the passcode");
}

#[test]
fn removal_and_lock_matrix() {
    use ErrorCode as E;
    use Status as S;
    let rows: Vec<Row> = vec![
        ("ios", remove(), None),
        (
            "ios",
            Action::RemovePasscode { unlock_token: SecretBytes::default() },
            Some((S::Failed, E::UnlockTokenMissing)),
        ),
        ("ios-user-enrollment", remove(), Some((S::NotSupported, E::UserEnrollment))),
        ("ios-user-enrollment", lock(), Some((S::NotSupported, E::UserEnrollment))),
        ("macos", remove(), Some((S::NotSupported, E::PlatformUnsupported))),
        ("android-do", remove(), Some((S::NotSupported, E::PlatformUnsupported))),
        ("aosp-userless", lock(), Some((S::Failed, E::NoPasscodePolicy))),
        ("aosp-user", lock(), None),
        ("android-do", lock(), None),
        ("ios", lock(), None),
        ("windows", lock(), None),
    ];
    for (profile, action, expected) in rows {
        let s = snapshot(profile, ResetTokenState::Active, &InitOptions::default());
        assert_eq!(outcome(decide(&s, &action)), expected, "{profile} {}", action.kind());
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
