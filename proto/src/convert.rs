//! The one mapping between wire messages and `latchkey-platform` values. Unknown enum values from
//! the wire map to errors, never to a guess.
use latchkey_platform::policy::android::{AndroidPolicy, Complexity, Quality};
use latchkey_platform::policy::windows::CharRule;
use latchkey_platform::policy::{ApplePolicy, PasscodePolicy, WindowsPolicy};
use latchkey_platform::{
    Action, DeviceFacts, DeviceState, LockRequest, ManagementMode, MessageResult, Platform, PortSnapshot, ResetFlags,
    ResetTokenState, Scope, Secret, SecretBytes, Status,
};

use crate::bridge::v1 as b;
use crate::v1;

/// A wire value that has no platform meaning.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown or unspecified {0}")]
pub struct Unknown(pub &'static str);

/// Platform to wire.
pub fn platform_to_wire(p: Platform) -> v1::Platform {
    match p {
        Platform::Android => v1::Platform::Android,
        Platform::Aosp => v1::Platform::Aosp,
        Platform::Ios => v1::Platform::Ios,
        Platform::Macos => v1::Platform::Macos,
        Platform::Windows => v1::Platform::Windows,
        Platform::WindowsMobile => v1::Platform::WindowsMobile,
        Platform::Linux => v1::Platform::Linux,
    }
}

/// Wire to platform.
pub fn platform_from_wire(value: i32) -> Result<Platform, Unknown> {
    Ok(match v1::Platform::try_from(value).map_err(|_| Unknown("platform"))? {
        v1::Platform::Android => Platform::Android,
        v1::Platform::Aosp => Platform::Aosp,
        v1::Platform::Ios => Platform::Ios,
        v1::Platform::Macos => Platform::Macos,
        v1::Platform::Windows => Platform::Windows,
        v1::Platform::WindowsMobile => Platform::WindowsMobile,
        v1::Platform::Linux => Platform::Linux,
        v1::Platform::Unspecified => return Err(Unknown("platform")),
    })
}

fn mode_to_wire(m: ManagementMode) -> v1::ManagementMode {
    use v1::ManagementMode as W;
    match m {
        ManagementMode::DeviceAdmin => W::DeviceAdmin,
        ManagementMode::DeviceOwner => W::DeviceOwner,
        ManagementMode::WorkProfilePersonal => W::WorkProfilePersonal,
        ManagementMode::WorkProfileCorporate => W::WorkProfileCorporate,
        ManagementMode::AospUserAssociated => W::AospUserAssociated,
        ManagementMode::AospUserless => W::AospUserless,
        ManagementMode::AppleDevice => W::AppleDevice,
        ManagementMode::AppleUserEnrollment => W::AppleUserEnrollment,
        ManagementMode::WindowsMdm => W::WindowsMdm,
        ManagementMode::LinuxSystem => W::LinuxSystem,
    }
}

fn mode_from_wire(value: i32) -> Result<ManagementMode, Unknown> {
    use v1::ManagementMode as W;
    Ok(match W::try_from(value).map_err(|_| Unknown("management mode"))? {
        W::DeviceAdmin => ManagementMode::DeviceAdmin,
        W::DeviceOwner => ManagementMode::DeviceOwner,
        W::WorkProfilePersonal => ManagementMode::WorkProfilePersonal,
        W::WorkProfileCorporate => ManagementMode::WorkProfileCorporate,
        W::AospUserAssociated => ManagementMode::AospUserAssociated,
        W::AospUserless => ManagementMode::AospUserless,
        W::AppleDevice => ManagementMode::AppleDevice,
        W::AppleUserEnrollment => ManagementMode::AppleUserEnrollment,
        W::WindowsMdm => ManagementMode::WindowsMdm,
        W::LinuxSystem => ManagementMode::LinuxSystem,
        W::Unspecified => return Err(Unknown("management mode")),
    })
}

/// Facts to wire.
pub fn facts_to_wire(f: &DeviceFacts, hostname: &str) -> v1::DeviceFacts {
    v1::DeviceFacts {
        platform: platform_to_wire(f.platform) as i32,
        os_version: f.os_version.clone(),
        api_level: f.api_level,
        management_mode: mode_to_wire(f.mode) as i32,
        model: f.model.clone(),
        hostname: hostname.to_owned(),
        pin_recovery_enabled: f.pin_recovery_enabled,
        entra_joined: f.entra_joined,
    }
}

/// Wire to facts.
pub fn facts_from_wire(f: &v1::DeviceFacts) -> Result<DeviceFacts, Unknown> {
    Ok(DeviceFacts {
        platform: platform_from_wire(f.platform)?,
        os_version: f.os_version.clone(),
        api_level: f.api_level,
        mode: mode_from_wire(f.management_mode)?,
        model: f.model.clone(),
        pin_recovery_enabled: f.pin_recovery_enabled,
        entra_joined: f.entra_joined,
    })
}

fn quality_to_wire(q: Quality) -> v1::PasswordQuality {
    use v1::PasswordQuality as W;
    match q {
        Quality::Unspecified => W::Unspecified,
        Quality::Something => W::Something,
        Quality::Numeric => W::Numeric,
        Quality::NumericComplex => W::NumericComplex,
        Quality::Alphabetic => W::Alphabetic,
        Quality::Alphanumeric => W::Alphanumeric,
        Quality::Complex => W::Complex,
    }
}

fn quality_from_wire(value: i32) -> Result<Quality, Unknown> {
    use v1::PasswordQuality as W;
    Ok(match W::try_from(value).map_err(|_| Unknown("password quality"))? {
        W::Unspecified => Quality::Unspecified,
        W::Something => Quality::Something,
        W::Numeric => Quality::Numeric,
        W::NumericComplex => Quality::NumericComplex,
        W::Alphabetic => Quality::Alphabetic,
        W::Alphanumeric => Quality::Alphanumeric,
        W::Complex => Quality::Complex,
    })
}

fn complexity_to_wire(c: Complexity) -> v1::PasswordComplexity {
    match c {
        Complexity::None => v1::PasswordComplexity::Unspecified,
        Complexity::Low => v1::PasswordComplexity::Low,
        Complexity::Medium => v1::PasswordComplexity::Medium,
        Complexity::High => v1::PasswordComplexity::High,
    }
}

fn complexity_from_wire(value: i32) -> Result<Complexity, Unknown> {
    Ok(match v1::PasswordComplexity::try_from(value).map_err(|_| Unknown("password complexity"))? {
        v1::PasswordComplexity::Unspecified => Complexity::None,
        v1::PasswordComplexity::Low => Complexity::Low,
        v1::PasswordComplexity::Medium => Complexity::Medium,
        v1::PasswordComplexity::High => Complexity::High,
    })
}

fn rule_to_wire(r: Option<CharRule>) -> v1::CharacterRule {
    match r {
        None => v1::CharacterRule::Unspecified,
        Some(CharRule::Allowed) => v1::CharacterRule::Allowed,
        Some(CharRule::Required) => v1::CharacterRule::Required,
        Some(CharRule::Disallowed) => v1::CharacterRule::Disallowed,
    }
}

/// Unspecified is "not configured": Windows' own default for the class applies.
fn rule_from_wire(value: i32) -> Result<Option<CharRule>, Unknown> {
    Ok(match v1::CharacterRule::try_from(value).map_err(|_| Unknown("character rule"))? {
        v1::CharacterRule::Unspecified => None,
        v1::CharacterRule::Allowed => Some(CharRule::Allowed),
        v1::CharacterRule::Required => Some(CharRule::Required),
        v1::CharacterRule::Disallowed => Some(CharRule::Disallowed),
    })
}

/// Policy to wire.
pub fn policy_to_wire(p: &PasscodePolicy) -> v1::PasscodePolicy {
    use v1::passcode_policy::Dialect;
    let dialect = match p {
        PasscodePolicy::Android(a) => Dialect::Android(v1::AndroidPasswordPolicy {
            quality: quality_to_wire(a.quality) as i32,
            min_length: a.min_length,
            complexity: complexity_to_wire(a.complexity) as i32,
            min_letters: a.min_letters,
            min_lowercase: a.min_lowercase,
            min_uppercase: a.min_uppercase,
            min_digits: a.min_digits,
            min_symbols: a.min_symbols,
            min_nonletter: a.min_nonletter,
        }),
        PasscodePolicy::Apple(a) => Dialect::Apple(v1::ApplePasscodePolicy {
            min_length: a.min_length,
            require_alphanumeric: a.require_alphanumeric,
            allow_simple: Some(a.allow_simple),
            min_complex_chars: a.min_complex_chars,
            pin_history: a.pin_history,
            max_pin_age_days: a.max_pin_age_days,
            max_failed_attempts: a.max_failed_attempts,
            force_pin: a.force_pin,
        }),
        PasscodePolicy::Windows(w) => Dialect::Windows(v1::WindowsPinPolicy {
            min_length: w.min_length.unwrap_or(0),
            max_length: w.max_length.unwrap_or(0),
            uppercase: rule_to_wire(w.uppercase) as i32,
            lowercase: rule_to_wire(w.lowercase) as i32,
            digits: rule_to_wire(w.digits) as i32,
            special: rule_to_wire(w.special) as i32,
        }),
    };
    v1::PasscodePolicy { dialect: Some(dialect) }
}

/// Wire to policy; an empty message means no policy.
pub fn policy_from_wire(p: &v1::PasscodePolicy) -> Result<Option<PasscodePolicy>, Unknown> {
    use v1::passcode_policy::Dialect;
    Ok(match &p.dialect {
        None => None,
        Some(Dialect::Android(a)) => Some(PasscodePolicy::Android(AndroidPolicy {
            quality: quality_from_wire(a.quality)?,
            min_length: a.min_length,
            complexity: complexity_from_wire(a.complexity)?,
            min_letters: a.min_letters,
            min_lowercase: a.min_lowercase,
            min_uppercase: a.min_uppercase,
            min_digits: a.min_digits,
            min_symbols: a.min_symbols,
            min_nonletter: a.min_nonletter,
        })),
        Some(Dialect::Apple(a)) => Some(PasscodePolicy::Apple(ApplePolicy {
            force_pin: a.force_pin,
            min_length: a.min_length,
            require_alphanumeric: a.require_alphanumeric,
            allow_simple: a.allow_simple.unwrap_or(true),
            min_complex_chars: a.min_complex_chars,
            pin_history: a.pin_history,
            max_pin_age_days: a.max_pin_age_days,
            max_failed_attempts: a.max_failed_attempts,
        })),
        Some(Dialect::Windows(w)) => Some(PasscodePolicy::Windows(WindowsPolicy {
            min_length: Some(w.min_length).filter(|n| *n != 0),
            max_length: Some(w.max_length).filter(|n| *n != 0),
            uppercase: rule_from_wire(w.uppercase)?,
            lowercase: rule_from_wire(w.lowercase)?,
            digits: rule_from_wire(w.digits)?,
            special: rule_from_wire(w.special)?,
        })),
    })
}

/// Reset-token state to wire.
pub fn reset_token_to_wire(s: ResetTokenState) -> v1::ResetTokenState {
    match s {
        ResetTokenState::NotApplicable => v1::ResetTokenState::Unspecified,
        ResetTokenState::None => v1::ResetTokenState::None,
        ResetTokenState::PendingUser => v1::ResetTokenState::PendingUser,
        ResetTokenState::Active => v1::ResetTokenState::Active,
    }
}

/// Wire to reset-token state; a value this contract does not define is an error.
pub fn reset_token_from_wire(value: i32) -> Result<ResetTokenState, Unknown> {
    Ok(match v1::ResetTokenState::try_from(value).map_err(|_| Unknown("reset token state"))? {
        v1::ResetTokenState::Unspecified => ResetTokenState::NotApplicable,
        v1::ResetTokenState::None => ResetTokenState::None,
        v1::ResetTokenState::PendingUser => ResetTokenState::PendingUser,
        v1::ResetTokenState::Active => ResetTokenState::Active,
    })
}

fn optional_policy_to_wire(p: Option<&PasscodePolicy>) -> Option<v1::PasscodePolicy> {
    p.map(policy_to_wire)
}

fn optional_policy_from_wire(p: Option<&v1::PasscodePolicy>) -> Result<Option<PasscodePolicy>, Unknown> {
    match p {
        Some(p) => policy_from_wire(p),
        None => Ok(None),
    }
}

/// A port snapshot as the bridge carries it.
pub fn snapshot_to_bridge(s: &PortSnapshot) -> b::Snapshot {
    b::Snapshot {
        facts: Some(facts_to_wire(&s.facts, "")),
        state: Some(b::CredentialState {
            passcode_present: s.state.passcode_present,
            work_profile_passcode_present: s.state.work_profile_passcode_present,
            device_policy: optional_policy_to_wire(s.state.device_policy.as_ref()),
            work_profile_policy: optional_policy_to_wire(s.state.work_profile_policy.as_ref()),
            reset_token_state: reset_token_to_wire(s.state.reset_token) as i32,
            locked: s.state.locked,
        }),
    }
}

/// A bridge snapshot as a port snapshot; a missing part or an unknown value is an error.
pub fn snapshot_from_bridge(s: &b::Snapshot) -> Result<PortSnapshot, Unknown> {
    let facts = facts_from_wire(s.facts.as_ref().ok_or(Unknown("snapshot facts"))?)?;
    let state = s.state.as_ref().ok_or(Unknown("snapshot credential state"))?;
    Ok(PortSnapshot {
        facts,
        state: DeviceState {
            passcode_present: state.passcode_present,
            work_profile_passcode_present: state.work_profile_passcode_present,
            device_policy: optional_policy_from_wire(state.device_policy.as_ref())?,
            work_profile_policy: optional_policy_from_wire(state.work_profile_policy.as_ref())?,
            reset_token: reset_token_from_wire(state.reset_token_state)?,
            locked: state.locked,
        },
    })
}

/// Apple `MessageResult` to the bridge.
pub fn message_result_to_bridge(r: Option<MessageResult>) -> b::MessageResult {
    match r {
        None => b::MessageResult::Unspecified,
        Some(MessageResult::Success) => b::MessageResult::Success,
        Some(MessageResult::DeviceInLostMode) => b::MessageResult::DeviceInLostMode,
        Some(MessageResult::NoPasscodeSet) => b::MessageResult::NoPasscodeSet,
        Some(MessageResult::Unknown) => b::MessageResult::Unknown,
    }
}

/// Apple `MessageResult` from the bridge.
pub fn message_result_from_bridge(value: i32) -> Result<Option<MessageResult>, Unknown> {
    Ok(match b::MessageResult::try_from(value).map_err(|_| Unknown("message result"))? {
        b::MessageResult::Unspecified => None,
        b::MessageResult::Success => Some(MessageResult::Success),
        b::MessageResult::DeviceInLostMode => Some(MessageResult::DeviceInLostMode),
        b::MessageResult::NoPasscodeSet => Some(MessageResult::NoPasscodeSet),
        b::MessageResult::Unknown => Some(MessageResult::Unknown),
    })
}

/// Why a wire command carries no action the platform layer can take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    /// The command is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The command names an action this contract does not implement.
    #[error("{0} is not an action Latchkey implements")]
    Unsupported(String),
}

/// The platform action a wire command carries.
pub fn action_from_wire(command: &v1::Command) -> Result<Action, ActionError> {
    use v1::command::Action as W;
    let malformed = |what: &str| ActionError::Malformed(what.to_owned());
    match &command.action {
        None => Err(malformed("no action")),
        Some(W::ResetPasscode(r)) => {
            let scope = match v1::ResetScope::try_from(r.scope) {
                Ok(v1::ResetScope::WorkProfile) => Scope::WorkProfile,
                Ok(v1::ResetScope::Device | v1::ResetScope::Unspecified) => Scope::Device,
                Err(_) => return Err(malformed("unknown reset scope")),
            };
            let flags = ResetFlags::from_bits(r.flags)
                .map_err(|unknown| ActionError::Malformed(format!("unknown reset flags {unknown:#x}")))?;
            Ok(Action::ResetPasscode { scope, passcode: Secret::new(r.new_passcode.clone()), flags })
        }
        Some(W::RemovePasscode(r)) => {
            Ok(Action::RemovePasscode { unlock_token: SecretBytes::new(r.unlock_token.clone()) })
        }
        Some(W::RemoteLock(l)) => Ok(Action::RemoteLock(LockRequest {
            message: l.message.clone(),
            phone_number: l.phone_number.clone(),
            pin: (!l.pin.is_empty()).then(|| Secret::new(l.pin.clone())),
        })),
        Some(W::ResetPin(_)) => Ok(Action::ResetPin),
        Some(W::Unsupported(u)) => Err(ActionError::Unsupported(u.name.clone())),
    }
}

/// Command status to wire.
pub fn status_to_wire(s: Status) -> v1::CommandStatus {
    match s {
        Status::Succeeded => v1::CommandStatus::Succeeded,
        Status::Failed => v1::CommandStatus::Failed,
        Status::NotSupported => v1::CommandStatus::NotSupported,
        Status::NotNow => v1::CommandStatus::NotNow,
        Status::Rejected => v1::CommandStatus::Rejected,
    }
}

/// Wire to command status; unspecified or unknown is an error.
pub fn status_from_wire(value: i32) -> Result<Status, Unknown> {
    Ok(match v1::CommandStatus::try_from(value).map_err(|_| Unknown("command status"))? {
        v1::CommandStatus::Succeeded => Status::Succeeded,
        v1::CommandStatus::Failed => Status::Failed,
        v1::CommandStatus::NotSupported => Status::NotSupported,
        v1::CommandStatus::NotNow => Status::NotNow,
        v1::CommandStatus::Rejected => Status::Rejected,
        v1::CommandStatus::Unspecified => return Err(Unknown("command status")),
    })
}

/// Credential state to wire (the policies are optional messages).
pub fn state_to_wire(
    facts: v1::DeviceFacts,
    s: &DeviceState,
    agent_version: &str,
    unlock_escrowed: bool,
) -> v1::DeviceState {
    v1::DeviceState {
        facts: Some(facts),
        passcode_present: s.passcode_present,
        passcode_compliant: true,
        device_policy: s.device_policy.as_ref().map(policy_to_wire),
        work_profile_policy: s.work_profile_policy.as_ref().map(policy_to_wire),
        reset_token_state: reset_token_to_wire(s.reset_token) as i32,
        unlock_token_escrowed: unlock_escrowed,
        agent_version: agent_version.to_owned(),
        locked: s.locked,
        work_profile_passcode_present: s.work_profile_passcode_present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip() {
        let policies = [
            PasscodePolicy::Android(AndroidPolicy {
                quality: Quality::Complex,
                min_length: 8,
                min_symbols: Some(2),
                ..Default::default()
            }),
            PasscodePolicy::Apple(ApplePolicy { allow_simple: false, min_length: 6, ..Default::default() }),
            PasscodePolicy::Windows(WindowsPolicy {
                min_length: Some(6),
                lowercase: Some(CharRule::Allowed),
                ..Default::default()
            }),
            PasscodePolicy::Windows(WindowsPolicy::default()),
        ];
        for p in policies {
            assert_eq!(policy_from_wire(&policy_to_wire(&p)), Ok(Some(p.clone())));
        }
    }

    #[test]
    fn unknown_enums_are_errors() {
        assert!(platform_from_wire(0).is_err());
        assert!(platform_from_wire(99).is_err());
        assert!(reset_token_from_wire(99).is_err());
        assert!(message_result_from_bridge(42).is_err());
    }

    #[test]
    fn bridge_snapshots_round_trip_and_refuse_missing_parts() {
        for profile in latchkey_platform::sim::profile::NAMES {
            let snapshot =
                latchkey_platform::sim::profile::build(profile, &Default::default()).expect("profile").snapshot();
            assert_eq!(snapshot_from_bridge(&snapshot_to_bridge(&snapshot)), Ok(snapshot), "{profile}");
        }
        assert_eq!(snapshot_from_bridge(&b::Snapshot::default()), Err(Unknown("snapshot facts")));
        let mut no_mode = snapshot_to_bridge(
            &latchkey_platform::sim::profile::build("ios", &Default::default()).expect("p").snapshot(),
        );
        if let Some(f) = no_mode.facts.as_mut() {
            f.management_mode = 0;
        }
        assert_eq!(snapshot_from_bridge(&no_mode), Err(Unknown("management mode")));
    }
}
