//! Linux rows: the managed local account's password is reset through the system's crypt format;
//! remote lock locks the sessions. Passcode removal and PIN recovery do not exist here.
//!
//! Inferred (no vendor text): a lock is refused with `NO_PASSCODE` when the managed account has
//! no usable password — a locked session with no password to unlock it protects nothing and may
//! lock the user out — the same rule the vendors apply to their own devices.
use super::{no_passcode, non_compliant, unsupported_here, Decision, Plan};
use crate::action::{Action, Scope};
use crate::outcome::{ErrorCode, Outcome};
use crate::port::PortSnapshot;

/// Decides an action on a Linux device.
pub fn decide(s: &PortSnapshot, action: &Action) -> Decision {
    match action {
        Action::ResetPasscode { scope: Scope::Device, passcode, .. } => {
            match non_compliant(s.state.device_policy.as_ref(), passcode.expose()) {
                Some(refusal) => Decision::Refuse(refusal),
                None => Decision::Apply(Plan::SetCredential(Scope::Device)),
            }
        }
        Action::ResetPasscode { scope: Scope::WorkProfile, .. } => Decision::Refuse(Outcome::not_supported(
            ErrorCode::ManagementMode,
            "Linux devices have no work profile; use a device-level reset",
        )),
        Action::RemoteLock(_) if !s.state.passcode_present => Decision::Refuse(no_passcode(
            "the managed account has no password, so locking its sessions would protect nothing; reset its password first, then lock",
        )),
        Action::RemoteLock(_) => Decision::Apply(Plan::LockNow),
        Action::RemovePasscode { .. } => unsupported_here("passcode removal", "Linux"),
        Action::ResetPin => unsupported_here("PIN recovery", "Linux"),
    }
}
