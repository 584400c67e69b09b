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

pub mod file;
pub mod profile;
pub mod state;

pub use state::{Effect, SimState};

/// A simulated device bound to its state file.
pub struct SimPort {
    path: PathBuf,
    /// The state as last read or written, and which file it came from.
    cached: Option<(Stamp, SimState)>,
}

/// Identifies one version of the state file: the person at the device (`latchkey sim user`)
/// or a test may change it at any time — in place (a new version number) or by replacing it
/// (a new inode).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    version: file::Version,
}

impl Stamp {
    fn of(path: &Path) -> Result<Self, PortError> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).map_err(|e| PortError::Unavailable(format!("{}: {e}", path.display())))?;
        let version = file::version(path).map_err(PortError::Unavailable)?;
        Ok(Self { dev: m.dev(), ino: m.ino(), version })
    }
}

impl SimPort {
    /// Opens the simulator at `path` (the file must exist: `latchkey sim init`).
    pub fn open(path: &Path) -> Result<Self, PortError> {
        let mut port = Self { path: path.to_owned(), cached: None };
        port.current()?;
        Ok(port)
    }

    /// The state in the file now: parsed again only when the file changed since.
    fn current(&mut self) -> Result<&mut SimState, PortError> {
        let stamp = Stamp::of(&self.path)?;
        if self.cached.as_ref().map(|(s, _)| *s) != Some(stamp) {
            let state = SimState::load(&self.path).map_err(PortError::Unavailable)?;
            self.cached = Some((stamp, state));
        }
        match &mut self.cached {
            Some((_, state)) => Ok(state),
            None => Err(PortError::Unavailable("simulator state not loaded".into())),
        }
    }

    /// Changes the state and writes it back in one atomic replace: the effect and its record
    /// land together or not at all, so a failed save means nothing happened.
    fn update<T>(&mut self, f: impl FnOnce(&mut SimState) -> Result<T, PortError>) -> Result<T, PortError> {
        let path = self.path.clone();
        let outcome = self.current().and_then(|state| {
            let value = f(state)?;
            let version = state.save_versioned(&path).map_err(PortError::Unavailable)?;
            Ok((value, version))
        });
        match outcome {
            Ok((value, version)) => {
                // Our own write's version: a change by someone else after it shows as another.
                let stamp = Stamp { version, ..Stamp::of(&self.path)? };
                if let Some((cached, _)) = &mut self.cached {
                    *cached = stamp;
                }
                Ok(value)
            }
            // The copy in memory may be half-changed: the file is the truth.
            Err(e) => {
                self.cached = None;
                Err(e)
            }
        }
    }

    fn read(&mut self) -> Result<&SimState, PortError> {
        Ok(self.current()?)
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
        Ok(self.read()?.applied(command_id))
    }
}
