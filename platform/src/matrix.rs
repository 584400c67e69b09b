//! SPEC §3 as one table: simulated devices, the admin requests made to each in order, and what
//! each request must end in — status, error code, outputs — with the vendor text it follows.
//! The platform unit tests (`decide/matrix_tests.rs`), the end-to-end matrix test and
//! `latchkey demo` all read this table; none of them writes its own expectations.
use crate::action::{ResetFlags, Scope};
use crate::outcome::{ErrorCode, Status};
use crate::request::Request;
use crate::sim::profile::InitOptions;

/// How a simulated device starts, beyond its profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// As the profile says.
    Profile,
    /// `--no-passcode-policy`: no device (and no work-profile) passcode policy.
    NoPasscodePolicy,
    /// `--pin-recovery-disabled`: the tenant's EnablePinRecovery is off.
    PinRecoveryDisabled,
    /// `--no-passcode`: the user has set no passcode.
    NoPasscode,
}

impl Init {
    /// The `latchkey sim init` flags.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Self::Profile => &[],
            Self::NoPasscodePolicy => &["--no-passcode-policy"],
            Self::PinRecoveryDisabled => &["--pin-recovery-disabled"],
            Self::NoPasscode => &["--no-passcode"],
        }
    }

    /// The same as simulator options.
    pub fn options(self) -> InitOptions {
        InitOptions {
            no_passcode_policy: self == Self::NoPasscodePolicy,
            pin_recovery_disabled: self == Self::PinRecoveryDisabled,
            no_passcode: self == Self::NoPasscode,
            ..InitOptions::default()
        }
    }
}

/// What happens on the device or server just before a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Before {
    /// Nothing.
    Nothing,
    /// The user confirms their credential (activates a pending reset token).
    UserConfirmsCredential,
    /// The server's escrowed unlock token is replaced by a wrong one.
    WrongUnlockTokenEscrowed,
    /// The user unlocks the locked Mac with the six-digit PIN of the device's last lock, as
    /// the admin read it to them.
    UserUnlocksWithLockPin,
}

/// What the admin asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// `action reset-passcode`.
    Reset,
    /// `action reset-passcode --scope work-profile`.
    ResetWorkProfile,
    /// `action remove-passcode`.
    Remove,
    /// `action lock --message … --phone …`.
    Lock,
    /// `action reset-pin`.
    ResetPin,
}

/// The lock-screen message the table's locks carry.
pub const LOCK_MESSAGE: &str = "Returned to IT: call the help desk";
/// The lock-screen phone number the table's locks carry.
pub const LOCK_PHONE: &str = "+1 555 0100";

impl Ask {
    /// As a request.
    pub fn request(self) -> Request {
        match self {
            Self::Reset => Request::ResetPasscode { scope: Scope::Device, flags: ResetFlags::default() },
            Self::ResetWorkProfile => {
                Request::ResetPasscode { scope: Scope::WorkProfile, flags: ResetFlags::default() }
            }
            Self::Remove => Request::RemovePasscode,
            Self::Lock => Request::Lock { message: LOCK_MESSAGE.into(), phone: LOCK_PHONE.into() },
            Self::ResetPin => Request::ResetPin,
        }
    }

    /// The admin CLI's arguments after `action`.
    pub fn cli(self) -> &'static [&'static str] {
        match self {
            Self::Reset => &["reset-passcode"],
            Self::ResetWorkProfile => &["reset-passcode", "--scope", "work-profile"],
            Self::Remove => &["remove-passcode"],
            Self::Lock => &["lock", "--message", LOCK_MESSAGE, "--phone", LOCK_PHONE],
            Self::ResetPin => &["reset-pin"],
        }
    }
}

/// One request and its expected outcome.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// What happens first.
    pub before: Before,
    /// The request.
    pub ask: Ask,
    /// Expected status.
    pub status: Status,
    /// Expected error code.
    pub code: Option<ErrorCode>,
    /// Outputs the result must carry.
    pub outputs: &'static [(&'static str, &'static str)],
    /// The vendor text the outcome follows.
    pub source: &'static str,
}

/// One simulated device and its requests, in order.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    /// What the row shows.
    pub label: &'static str,
    /// Simulator profile.
    pub profile: &'static str,
    /// Starting state beyond the profile.
    pub init: Init,
    /// The requests, in order.
    pub steps: &'static [Step],
}

const fn step(ask: Ask, status: Status, code: Option<ErrorCode>, source: &'static str) -> Step {
    Step { before: Before::Nothing, ask, status, code, outputs: &[], source }
}

const fn ok(ask: Ask, source: &'static str) -> Step {
    step(ask, Status::Succeeded, None, source)
}

const INTUNE_RESET: &str =
    "Intune, Reset or remove a device passcode: supported platforms for device level passcode reset";
const INTUNE_WP: &str = "Intune, Reset or remove a device passcode: Android Enterprise work profile passcode reset";
const INTUNE_LOCK: &str =
    "Intune, Remotely lock devices: devices that don't have a PIN or password can't be remotely locked";
const INTUNE_AOSP_LOCK: &str = "Intune, troubleshooting remote lock failures: AOSP needs a device passcode policy";
const APPLE_CLEAR: &str = "Apple passcode.clear.yaml (ClearPasscode, UnlockToken; userenrollment forbidden)";
const APPLE_LOCK: &str = "Apple device.lock.yaml (DeviceLock; MessageResult NoPasscodeSet; iOS userenrollment allowed)";
const APPLE_MAC_LOCK: &str =
    "Apple device.lock.yaml (macOS PIN for Find My); Intune: don't lock again until the PIN is used";
const REMOTELOCK_CSP: &str =
    "RemoteLock CSP: Lock without a PIN answers 405; LockAndRecoverPIN locks and sets NewPINValue";
const INTUNE_WIN: &str = "Intune, Reset the passcode on Windows devices (Windows 10 Mobile, EnablePinRecovery)";

/// The matrix.
pub const DEVICES: &[Device] = &[
    Device {
        label: "Android 6 device admin",
        profile: "android6-da",
        init: Init::Profile,
        steps: &[ok(Ask::Reset, INTUNE_RESET)],
    },
    Device {
        label: "Android 7 device admin",
        profile: "android7-da",
        init: Init::Profile,
        steps: &[
            step(Ask::Reset, Status::NotSupported, Some(ErrorCode::ApiLevel), INTUNE_RESET),
            step(Ask::ResetWorkProfile, Status::NotSupported, Some(ErrorCode::ApiLevel), INTUNE_WP),
        ],
    },
    Device {
        label: "Android Enterprise device owner",
        profile: "android-do",
        init: Init::Profile,
        steps: &[
            step(Ask::Lock, Status::Failed, Some(ErrorCode::NoPasscode), INTUNE_LOCK),
            ok(Ask::Reset, INTUNE_RESET),
            ok(Ask::Lock, INTUNE_LOCK),
            step(Ask::ResetWorkProfile, Status::NotSupported, Some(ErrorCode::ManagementMode), INTUNE_WP),
        ],
    },
    Device {
        label: "Android work profile (personal)",
        profile: "android-wp-byod",
        init: Init::Profile,
        steps: &[
            step(Ask::Reset, Status::NotSupported, Some(ErrorCode::ManagementMode), INTUNE_RESET),
            step(Ask::ResetWorkProfile, Status::Failed, Some(ErrorCode::ResetTokenNotActive), INTUNE_WP),
            Step { before: Before::UserConfirmsCredential, ..ok(Ask::ResetWorkProfile, INTUNE_WP) },
            ok(Ask::Lock, INTUNE_LOCK),
        ],
    },
    Device {
        label: "Android work profile (corporate)",
        profile: "android-wp-cope",
        init: Init::Profile,
        steps: &[
            step(Ask::Reset, Status::NotSupported, Some(ErrorCode::ManagementMode), INTUNE_RESET),
            Step { before: Before::UserConfirmsCredential, ..ok(Ask::ResetWorkProfile, INTUNE_WP) },
        ],
    },
    Device {
        label: "Android work profile, no WP policy",
        profile: "android-wp-byod",
        init: Init::NoPasscodePolicy,
        steps: &[Step {
            before: Before::UserConfirmsCredential,
            ..step(Ask::ResetWorkProfile, Status::Failed, Some(ErrorCode::NoPasscodePolicy), INTUNE_WP)
        }],
    },
    Device {
        label: "Android 7 work profile",
        profile: "android7-wp",
        init: Init::Profile,
        steps: &[step(Ask::ResetWorkProfile, Status::NotSupported, Some(ErrorCode::ApiLevel), INTUNE_WP)],
    },
    Device {
        label: "AOSP user-associated",
        profile: "aosp-user",
        init: Init::Profile,
        steps: &[ok(Ask::Reset, INTUNE_RESET), ok(Ask::Lock, INTUNE_AOSP_LOCK)],
    },
    Device {
        label: "AOSP userless, no passcode policy",
        profile: "aosp-userless",
        init: Init::Profile,
        steps: &[
            ok(Ask::Reset, INTUNE_RESET),
            step(Ask::Lock, Status::Failed, Some(ErrorCode::NoPasscodePolicy), INTUNE_AOSP_LOCK),
        ],
    },
    Device {
        label: "iOS/iPadOS",
        profile: "ios",
        init: Init::Profile,
        steps: &[
            Step { outputs: &[("message_result", "Success")], ..ok(Ask::Lock, APPLE_LOCK) },
            Step { outputs: &[("user_prompted_for_new_passcode", "true")], ..ok(Ask::Reset, APPLE_CLEAR) },
            Step { outputs: &[("message_result", "NoPasscodeSet")], ..ok(Ask::Lock, APPLE_LOCK) },
        ],
    },
    Device {
        label: "iOS/iPadOS, remove passcode",
        profile: "ios",
        init: Init::Profile,
        steps: &[Step { outputs: &[("user_prompted_for_new_passcode", "true")], ..ok(Ask::Remove, APPLE_CLEAR) }],
    },
    Device {
        label: "iOS, wrong token escrowed",
        profile: "ios",
        init: Init::Profile,
        steps: &[Step {
            before: Before::WrongUnlockTokenEscrowed,
            ..step(Ask::Remove, Status::Failed, Some(ErrorCode::UnlockTokenMismatch), APPLE_CLEAR)
        }],
    },
    Device {
        label: "iOS User Enrollment",
        profile: "ios-user-enrollment",
        init: Init::Profile,
        steps: &[
            step(Ask::Reset, Status::NotSupported, Some(ErrorCode::UserEnrollment), APPLE_CLEAR),
            step(Ask::Remove, Status::NotSupported, Some(ErrorCode::UserEnrollment), APPLE_CLEAR),
            Step { outputs: &[("message_result", "Success")], ..ok(Ask::Lock, APPLE_LOCK) },
        ],
    },
    Device {
        label: "macOS",
        profile: "macos",
        init: Init::Profile,
        steps: &[
            step(Ask::Reset, Status::NotSupported, Some(ErrorCode::PlatformUnsupported), INTUNE_RESET),
            ok(Ask::Lock, APPLE_MAC_LOCK),
            step(Ask::Lock, Status::Failed, Some(ErrorCode::LockPinOutstanding), APPLE_MAC_LOCK),
            Step { before: Before::UserUnlocksWithLockPin, ..ok(Ask::Lock, APPLE_MAC_LOCK) },
        ],
    },
    Device {
        label: "Windows desktop",
        profile: "windows",
        init: Init::Profile,
        steps: &[
            step(Ask::Reset, Status::NotSupported, Some(ErrorCode::PlatformUnsupported), INTUNE_WIN),
            step(Ask::Lock, Status::NotSupported, Some(ErrorCode::PlatformUnsupported), INTUNE_LOCK),
        ],
    },
    Device {
        label: "Windows 10 Mobile",
        profile: "windows10-mobile",
        init: Init::Profile,
        steps: &[
            Step { outputs: &[("device_locked", "true")], ..ok(Ask::ResetPin, REMOTELOCK_CSP) },
            ok(Ask::Lock, REMOTELOCK_CSP),
        ],
    },
    Device {
        label: "Windows 10 Mobile, no PIN",
        profile: "windows10-mobile",
        init: Init::NoPasscode,
        steps: &[step(Ask::Lock, Status::Failed, Some(ErrorCode::NoPasscode), REMOTELOCK_CSP)],
    },
    Device {
        label: "Windows 10 Mobile, recovery off",
        profile: "windows10-mobile",
        init: Init::PinRecoveryDisabled,
        steps: &[step(Ask::ResetPin, Status::Failed, Some(ErrorCode::PinRecoveryDisabled), INTUNE_WIN)],
    },
];

/// Every step of the table, with its device.
pub fn steps() -> impl Iterator<Item = (&'static Device, &'static Step)> {
    DEVICES.iter().flat_map(|d| d.steps.iter().map(move |s| (d, s)))
}
