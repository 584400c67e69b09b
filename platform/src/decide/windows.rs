//! Windows rows.
//!
//! - Desktop: no MDM passcode reset (seed, "Reset the passcode on Windows devices": not supported
//!   for "Windows") and no remote lock (Intune, "Remotely lock devices with Intune": "Remote lock
//!   isn't supported for: Windows 10 desktop"; the RemoteLock CSP "is only supported in Windows 10
//!   Mobile").
//! - Windows 10 Mobile resets its PIN through PIN recovery, on Creators Update (build 15063) or
//!   later, Entra-joined, and only when the tenant's `EnablePinRecovery` policy is true. The
//!   device generates the PIN (RemoteLock `LockAndRecoverPIN` + `NewPINValue`) and the same call
//!   locks the device: "the device has been locked with a new password".
//! - Windows 10 Mobile lock (RemoteLock `Lock`): "If no PIN is set, the lock request is ignored
//!   and the OMA DM (405) Forbidden error is returned" — refused before any effect.
use super::{no_passcode, unsupported_here, Decision, Plan};
use crate::action::Action;
use crate::facts::Platform;
use crate::outcome::{ErrorCode, Outcome};
use crate::port::PortSnapshot;

/// Windows 10 Creators Update (1703).
pub const CREATORS_UPDATE_BUILD: u32 = 15063;

/// The build number in "10.0.15063" (or "10.0.15063.0"); 0 when absent.
pub fn build_number(os_version: &str) -> u32 {
    os_version.split('.').nth(2).and_then(|b| b.parse().ok()).unwrap_or(0)
}

/// Decides an action on a Windows device.
pub fn decide(s: &PortSnapshot, action: &Action) -> Decision {
    let mobile = s.facts.platform == Platform::WindowsMobile;
    match action {
        Action::RemoteLock(_) if !mobile => Decision::Refuse(Outcome::not_supported(
            ErrorCode::PlatformUnsupported,
            "remote lock is not supported on Windows desktop (the RemoteLock CSP is Windows 10 Mobile only)",
        )),
        Action::RemoteLock(_) if !s.state.passcode_present => Decision::Refuse(no_passcode(
            "this device has no PIN, so Windows refuses the lock (RemoteLock answers 405 Forbidden); have the user set a PIN, then retry",
        )),
        Action::RemoteLock(_) => Decision::Apply(Plan::LockNow),
        Action::RemovePasscode { .. } => unsupported_here("passcode removal", "Windows"),
        Action::ResetPasscode { .. } | Action::ResetPin if !mobile => Decision::Refuse(Outcome::not_supported(
            ErrorCode::PlatformUnsupported,
            "Windows desktop does not support a device-level passcode reset from MDM; PIN reset through the PIN reset service is for Windows 10 Mobile",
        )),
        Action::ResetPasscode { .. } | Action::ResetPin => {
            if build_number(&s.facts.os_version) < CREATORS_UPDATE_BUILD {
                return Decision::Refuse(Outcome::not_supported(
                    ErrorCode::ApiLevel,
                    "PIN reset needs Windows 10 Mobile Creators Update (build 15063) or later; update the device",
                ));
            }
            if !s.facts.entra_joined {
                return Decision::Refuse(Outcome::not_supported(
                    ErrorCode::ManagementMode,
                    "PIN reset needs the device to be joined to Microsoft Entra ID",
                ));
            }
            if !s.facts.pin_recovery_enabled {
                return Decision::Refuse(Outcome::failed(
                    ErrorCode::PinRecoveryDisabled,
                    "PIN recovery is off for this tenant: set ./Device/Vendor/MSFT/PassportForWork/<tenant ID>/Policies/EnablePinRecovery to true and onboard the Microsoft PIN Reset Service, then retry",
                ));
            }
            Decision::Apply(Plan::GeneratePin(s.state.device_policy.clone()))
        }
    }
}
