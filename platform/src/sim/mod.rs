//! The device simulator: a real [`DevicePort`] whose "OS" is a JSON state file, written
//! atomically on every change. It enforces the platform's own rules where the platform does
//! (a reset token is active only once the user confirmed their credential; `ClearPasscode` only
//! with the matching unlock token; the OS floor on new passcodes), and records one `effects` entry
//! per side effect so anyone can verify nothing was applied twice.
//!
//! - [`profile`]: the named device profiles (`android-do`, `ios`, `windows10-mobile`, …).
//! - [`state`]: the persisted state and the user's own actions on the device.
use std::path::{Path, PathBuf};

use crate::action::{LockRequest, ResetFlags, Scope};
use crate::facts::ResetTokenState;
use crate::port::{DevicePort, EffectId, LockReport, PinReport, PortError, PortSnapshot};
use crate::secret::{Secret, SecretBytes};

pub mod profile;
pub mod state;

pub use state::{Effect, SimState};

/// A simulated device bound to its state file.
pub struct SimPort {
    path: PathBuf,
}

impl SimPort {
    /// Opens the simulator at `path` (the file must exist: `latchkey sim init`).
    pub fn open(path: &Path) -> Result<Self, PortError> {
        SimState::load(path).map_err(PortError::Unavailable)?;
        Ok(Self { path: path.to_owned() })
    }

    /// Loads the state, changes it and writes it back in one atomic replace: the effect and its
    /// record land together or not at all, so a failed save means nothing happened.
    fn update<T>(&mut self, f: impl FnOnce(&mut SimState) -> Result<T, PortError>) -> Result<T, PortError> {
        let mut state = SimState::load(&self.path).map_err(PortError::Unavailable)?;
        let value = f(&mut state)?;
        state.save(&self.path).map_err(PortError::Unavailable)?;
        Ok(value)
    }

    fn read(&self) -> Result<SimState, PortError> {
        SimState::load(&self.path).map_err(PortError::Unavailable)
    }
}

impl DevicePort for SimPort {
    fn snapshot(&mut self) -> Result<PortSnapshot, PortError> {
        Ok(self.read()?.snapshot())
    }

    fn set_credential(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        flags: ResetFlags,
        effect: EffectId<'_>,
    ) -> Result<(), PortError> {
        self.update(|s| s.set_passcode(scope, passcode, Some((effect, flags))))
    }

    fn reset_with_token(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        token: &SecretBytes,
        flags: ResetFlags,
        effect: EffectId<'_>,
    ) -> Result<(), PortError> {
        self.update(|s| {
            if s.reset_token_state() != ResetTokenState::Active || !s.reset_token_matches(token) {
                return Err(PortError::TokenNotActive);
            }
            s.set_passcode(scope, passcode, Some((effect, flags)))
        })
    }

    fn clear_passcode(&mut self, unlock_token: &SecretBytes, effect: EffectId<'_>) -> Result<(), PortError> {
        self.update(|s| s.clear_passcode(unlock_token, effect))
    }

    fn lock_now(&mut self, request: &LockRequest, effect: EffectId<'_>) -> Result<LockReport, PortError> {
        self.update(|s| s.lock(request, effect))
    }

    fn generate_pin(&mut self, effect: EffectId<'_>) -> Result<PinReport, PortError> {
        self.update(|s| s.generate_pin(effect))
    }

    fn set_reset_token(&mut self, token: &SecretBytes) -> Result<ResetTokenState, PortError> {
        self.update(|s| s.register_reset_token(token))
    }

    fn unlock_token(&mut self) -> Result<Option<SecretBytes>, PortError> {
        let s = self.read()?;
        Ok(s.unlock_token.as_deref().and_then(SecretBytes::from_hex))
    }

    fn notify(&mut self, id: &str, text: Option<&str>) -> Result<(), PortError> {
        self.update(|s| {
            match text {
                Some(t) => {
                    s.notifications.insert(id.to_owned(), t.to_owned());
                }
                None => {
                    s.notifications.remove(id);
                }
            }
            Ok(())
        })
    }

    fn effect_applied(&mut self, command_id: &str) -> Result<Option<bool>, PortError> {
        Ok(Some(self.read()?.effects.iter().any(|e| e.command_id == command_id)))
    }
}
