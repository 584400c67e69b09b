//! From what an admin asks for to the command a device receives. Pure: the server, the demo and
//! the matrix tests all use it, so the wire command for a request is decided in one place and
//! the server never carries platform rules of its own.
//!
//! - iOS/iPadOS: a device passcode reset is sent as a removal with the escrowed unlock token (the
//!   seed: "Instead of being reset, passcodes are removed from iOS/iPadOS devices"; Microsoft
//!   Graph `resetPasscode` on iOS removes the passcode).
//! - Windows 10 Mobile: a passcode reset is PIN recovery; the device generates the PIN.
//! - Android, AOSP and Linux resets carry a temporary passcode the server generates for the
//!   policy the device last reported.
//! - macOS locks carry a six-digit Find My PIN the server generates (Apple `DeviceLock` `PIN`).
use crate::action::{ResetFlags, Scope};
use crate::facts::{DeviceFacts, Platform};

/// What an admin asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Reset the device or work-profile passcode.
    ResetPasscode {
        /// Which credential.
        scope: Scope,
        /// `RESET_PASSWORD_*` flags.
        flags: ResetFlags,
    },
    /// Remove the passcode (iOS-like).
    RemovePasscode,
    /// Lock now, with an optional lock-screen message and phone number.
    Lock {
        /// Lock-screen message.
        message: String,
        /// Lock-screen phone number.
        phone: String,
    },
    /// Windows PIN recovery.
    ResetPin,
}

impl Request {
    /// The name shown in the device-actions view.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ResetPasscode { scope: Scope::Device, .. } => "reset_passcode",
            Self::ResetPasscode { scope: Scope::WorkProfile, .. } => "reset_work_profile_passcode",
            Self::RemovePasscode => "remove_passcode",
            Self::Lock { .. } => "remote_lock",
            Self::ResetPin => "reset_pin",
        }
    }
}

/// The command a device receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// `ResetPasscode`.
    ResetPasscode(Scope),
    /// `RemovePasscode`.
    RemovePasscode,
    /// `RemoteLock`.
    RemoteLock,
    /// `ResetPin`.
    ResetPin,
}

impl CommandKind {
    /// The name shown in the device-actions view and the journal.
    pub fn name(self) -> &'static str {
        match self {
            Self::ResetPasscode(Scope::Device) => "reset_passcode",
            Self::ResetPasscode(Scope::WorkProfile) => "reset_work_profile_passcode",
            Self::RemovePasscode => "remove_passcode",
            Self::RemoteLock => "remote_lock",
            Self::ResetPin => "reset_pin",
        }
    }
}

/// The command for a request and the secrets the server must put in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandPlan {
    /// The command sent.
    pub kind: CommandKind,
    /// The server generates a temporary passcode for the policy the device last reported for
    /// the reset's scope, and shows it to the admin.
    pub temporary_passcode: bool,
    /// The server attaches the escrowed unlock token.
    pub unlock_token: bool,
    /// The server generates a six-digit Find My PIN and shows it to the admin.
    pub lock_pin: bool,
    /// What the admin should know about the mapping, when the command differs from the request.
    pub note: Option<&'static str>,
}

impl CommandPlan {
    fn just(kind: CommandKind) -> Self {
        Self { kind, temporary_passcode: false, unlock_token: false, lock_pin: false, note: None }
    }
}

/// The command a device of this kind receives for `request`.
pub fn plan(facts: &DeviceFacts, request: &Request) -> CommandPlan {
    match (facts.platform, request) {
        (Platform::Ios, Request::ResetPasscode { scope: Scope::Device, .. }) => CommandPlan {
            unlock_token: true,
            note: Some("iOS/iPadOS passcodes are removed, not reset: a passcode removal with the escrowed unlock token was queued"),
            ..CommandPlan::just(CommandKind::RemovePasscode)
        },
        (Platform::WindowsMobile, Request::ResetPasscode { .. }) => CommandPlan {
            note: Some("Windows 10 Mobile resets its PIN through PIN recovery: the device generates the new PIN and locks"),
            ..CommandPlan::just(CommandKind::ResetPin)
        },
        (Platform::Android | Platform::Aosp | Platform::Linux, Request::ResetPasscode { scope, .. }) => {
            CommandPlan { temporary_passcode: true, ..CommandPlan::just(CommandKind::ResetPasscode(*scope)) }
        }
        (_, Request::ResetPasscode { scope, .. }) => CommandPlan::just(CommandKind::ResetPasscode(*scope)),
        (_, Request::RemovePasscode) => {
            CommandPlan { unlock_token: true, ..CommandPlan::just(CommandKind::RemovePasscode) }
        }
        (Platform::Macos, Request::Lock { .. }) => {
            CommandPlan { lock_pin: true, ..CommandPlan::just(CommandKind::RemoteLock) }
        }
        (_, Request::Lock { .. }) => CommandPlan::just(CommandKind::RemoteLock),
        (_, Request::ResetPin) => CommandPlan::just(CommandKind::ResetPin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::profile;

    fn facts(name: &str) -> DeviceFacts {
        profile::build(name, &Default::default()).expect("profile").facts
    }

    #[test]
    fn ios_reset_is_a_removal_with_the_escrowed_token() {
        let reset = Request::ResetPasscode { scope: Scope::Device, flags: ResetFlags::default() };
        let p = plan(&facts("ios"), &reset);
        assert_eq!(p.kind, CommandKind::RemovePasscode);
        assert!(p.unlock_token && p.note.is_some() && !p.temporary_passcode);
        assert_eq!(plan(&facts("android-do"), &reset).kind, CommandKind::ResetPasscode(Scope::Device));
        assert!(plan(&facts("android-do"), &reset).temporary_passcode);
        assert_eq!(plan(&facts("windows10-mobile"), &reset).kind, CommandKind::ResetPin);
        assert!(!plan(&facts("macos"), &reset).temporary_passcode);
    }

    #[test]
    fn only_macos_locks_carry_a_pin() {
        let lock = Request::Lock { message: String::new(), phone: String::new() };
        assert!(plan(&facts("macos"), &lock).lock_pin);
        assert!(!plan(&facts("ios"), &lock).lock_pin);
    }
}
