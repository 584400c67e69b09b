//! The simulator's persisted state and the platform rules it enforces. Each rule is the vendor's
//! (sources in the functions that apply them); the decision tables in `decide/` refuse most
//! forbidden calls before they reach here, and the simulator refuses them again, as a real OS
//! would, for callers that skip the tables (a bridge client, a conformance run).
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::action::{LockRequest, ResetFlags, Scope};
use crate::facts::{enforced_policy, DeviceFacts, ManagementMode, Platform, ResetTokenState};
use crate::policy::{self, PasscodePolicy};
use crate::port::{EffectId, LockReport, MessageResult, PinReport, PortError};
use crate::secret::{Secret, SecretBytes};

/// Side effects kept in the state file (the oldest are dropped), as the linux port keeps its
/// effect records: enough to answer for any command still in flight after a crash.
pub const EFFECTS_KEPT: usize = 32;

/// One applied side effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The command that caused it.
    pub command_id: String,
    /// What it was (`reset_passcode`, `remote_lock`, …).
    pub kind: String,
    /// When, Unix milliseconds.
    pub at_unix_ms: u64,
    /// Non-secret details (lock message and phone number, reset flags).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// A registered reset-password token (stored as a crypt hash, never in clear).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetTokenRecord {
    /// SHA-512 crypt of the token's hex form.
    pub hash: String,
    /// The user confirmed their credential since registration (or there was none).
    pub active: bool,
}

/// Everything the simulated OS remembers. Credentials are kept as SHA-512 crypt hashes, as a
/// real OS keeps them; the device's own unlock token is kept in clear, as it lives in the
/// device's keychain (the file is 0600).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimState {
    /// Profile name the device was created from.
    pub profile: String,
    /// Static facts.
    pub facts: DeviceFacts,
    /// Device passcode policy delivered to the device (what it enforces may differ: see
    /// [`enforced_policy`]).
    pub device_policy: Option<PasscodePolicy>,
    /// Work-profile passcode policy delivered to the device.
    pub work_profile_policy: Option<PasscodePolicy>,
    /// Device passcode hash.
    pub device_passcode: Option<String>,
    /// Work-profile passcode hash.
    pub work_profile_passcode: Option<String>,
    /// Registered reset-password token.
    pub reset_token: Option<ResetTokenRecord>,
    /// The device's unlock token, hex (iOS-like).
    pub unlock_token: Option<String>,
    /// Locked now.
    pub locked: bool,
    /// Lock-screen message.
    pub lock_message: Option<String>,
    /// Lock-screen phone number.
    #[serde(default)]
    pub lock_phone_number: Option<String>,
    /// macOS: crypt hash of the Find My PIN the Mac is locked with.
    #[serde(default)]
    pub lock_pin: Option<String>,
    /// The user has been asked to set a new passcode.
    pub new_passcode_prompt: bool,
    /// Notifications on screen, by id.
    pub notifications: BTreeMap<String, String>,
    /// The latest side effects, in order ([`EFFECTS_KEPT`] at most).
    pub effects: Vec<Effect>,
    /// How many older effects were dropped: once any were, a command not in [`Self::effects`]
    /// may still have been applied, and the honest answer is "cannot tell".
    #[serde(default)]
    pub effects_dropped: u64,
}

/// The simulator keeps credentials as SHA-512 crypt hashes, as a Linux shadow file would.
fn hash(secret: &str) -> Result<String, PortError> {
    crate::linux::crypt(crate::linux::CryptMethod::Sha512, &Secret::from(secret))
}

fn matches(secret: &str, hashed: &str) -> bool {
    crate::linux::crypt_matches(&Secret::from(secret), hashed)
}

impl SimState {
    /// Reads a state file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let (bytes, _) = super::file::read(path)?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a simulator state file: {e}", path.display()))
    }

    /// Writes the state: all or nothing, durable when this returns (see [`super::file`]).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        self.save_versioned(path).map(|_| ())
    }

    /// [`Self::save`], returning the version written.
    pub(crate) fn save_versioned(&self, path: &Path) -> Result<super::file::Version, String> {
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        super::file::write(path, &bytes)
    }

    pub(crate) fn record(&mut self, effect: EffectId<'_>, kind: &str, details: BTreeMap<String, String>) {
        // A bounded history: the state file is read and rewritten on every call, so it must not
        // grow with the device's age. Recovery asks about the latest commands only.
        if self.effects.len() >= EFFECTS_KEPT {
            let excess = self.effects.len() + 1 - EFFECTS_KEPT;
            self.effects.drain(..excess);
            self.effects_dropped += excess as u64;
        }
        self.effects.push(Effect {
            command_id: effect.0.to_owned(),
            kind: kind.to_owned(),
            at_unix_ms: latchkey_common::time::now_ms_unsigned(),
            details,
        });
    }

    /// The credential the reset token is bound to is present.
    fn token_credential_present(&self) -> bool {
        if self.facts.mode.is_work_profile() {
            self.work_profile_passcode.is_some() || self.device_passcode.is_some()
        } else {
            self.device_passcode.is_some()
        }
    }

    /// The device policy the OS enforces (User Enrollment ignores the payload's keys).
    pub fn enforced_device_policy(&self) -> Option<PasscodePolicy> {
        enforced_policy(&self.facts, self.device_policy.as_ref())
    }

    /// Facts and credential state, as the port reports them.
    pub fn snapshot(&self) -> crate::port::PortSnapshot {
        crate::port::PortSnapshot {
            facts: self.facts.clone(),
            state: crate::facts::DeviceState {
                passcode_present: self.device_passcode.is_some(),
                work_profile_passcode_present: self.work_profile_passcode.is_some(),
                device_policy: self.enforced_device_policy(),
                work_profile_policy: self.work_profile_policy.clone(),
                reset_token: self.reset_token_state(),
                locked: self.locked,
            },
        }
    }

    /// The reset-token state as the device reports it.
    pub fn reset_token_state(&self) -> ResetTokenState {
        if !self.facts.platform.is_android_family() || self.facts.api_level < crate::decide::android::RESET_TOKEN_API {
            return ResetTokenState::NotApplicable;
        }
        match &self.reset_token {
            None => ResetTokenState::None,
            Some(t) if t.active => ResetTokenState::Active,
            Some(_) => ResetTokenState::PendingUser,
        }
    }

    pub(crate) fn reset_token_matches(&self, token: &SecretBytes) -> bool {
        self.reset_token.as_ref().is_some_and(|t| matches(token.to_hex().expose(), &t.hash))
    }

    /// `setResetPasswordToken`: active at once when no credential is set, otherwise only after
    /// the user confirms their credential (AOSP `DevicePolicyManager` semantics).
    pub(crate) fn register_reset_token(&mut self, token: &SecretBytes) -> Result<ResetTokenState, PortError> {
        if self.reset_token_state() == ResetTokenState::NotApplicable {
            return Err(PortError::Unsupported("register a reset token on this platform"));
        }
        if token.expose().len() < 32 {
            return Err(PortError::Refused("reset token must be at least 32 bytes".into()));
        }
        let active = !self.token_credential_present();
        self.reset_token = Some(ResetTokenRecord { hash: hash(token.to_hex().expose())?, active });
        Ok(self.reset_token_state())
    }

    pub(crate) fn set_passcode(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        effect: Option<(EffectId<'_>, ResetFlags)>,
    ) -> Result<(), PortError> {
        // The OS applies its own floor: printable ASCII, 4..=16 characters on Android-family
        // devices, the policy in force everywhere.
        let policy = match scope {
            Scope::Device => self.enforced_device_policy(),
            Scope::WorkProfile => self.work_profile_policy.clone(),
        };
        let floor =
            self.facts.platform.is_android_family().then(|| PasscodePolicy::Android(policy::AndroidPolicy::default()));
        for p in policy.iter().chain(floor.iter()) {
            let verdict = p.check(passcode.expose());
            if !verdict.compliant {
                return Err(PortError::NotCompliant(verdict.summary()));
            }
        }
        let hashed = hash(passcode.expose())?;
        match scope {
            Scope::Device => self.device_passcode = Some(hashed),
            Scope::WorkProfile => self.work_profile_passcode = Some(hashed),
        }
        if let Some((effect, flags)) = effect {
            let kind = match scope {
                Scope::Device => "reset_passcode",
                Scope::WorkProfile => "reset_work_profile_passcode",
            };
            let mut details = BTreeMap::new();
            if flags != ResetFlags::default() {
                details.insert("flags".to_owned(), format!("{:#x}", flags.bits()));
            }
            self.record(effect, kind, details);
        }
        Ok(())
    }

    pub(crate) fn clear_passcode(&mut self, unlock_token: &SecretBytes, effect: EffectId<'_>) -> Result<(), PortError> {
        // Apple `ClearPasscode`: forbidden under User Enrollment, absent on macOS.
        if self.facts.platform != Platform::Ios || self.facts.mode == ManagementMode::AppleUserEnrollment {
            return Err(PortError::Refused("ClearPasscode is not available on this device".into()));
        }
        let device = self.unlock_token.as_deref().and_then(SecretBytes::from_hex).ok_or(PortError::TokenMismatch)?;
        if !device.ct_eq(unlock_token.expose()) {
            return Err(PortError::TokenMismatch);
        }
        self.device_passcode = None;
        self.new_passcode_prompt = self.device_policy.is_some();
        self.record(effect, "remove_passcode", BTreeMap::new());
        Ok(())
    }

    /// A remote lock, as each platform performs it.
    pub(crate) fn lock(&mut self, request: &LockRequest, effect: EffectId<'_>) -> Result<LockReport, PortError> {
        let mut details = BTreeMap::new();
        for (key, value) in [("message", &request.message), ("phone_number", &request.phone_number)] {
            if !value.is_empty() {
                details.insert(key.to_owned(), value.clone());
            }
        }
        let platform = self.facts.platform;
        match platform {
            // RemoteLock CSP `Lock`: no PIN set → "the lock request is ignored" (405).
            Platform::WindowsMobile if self.device_passcode.is_none() => {
                return Err(PortError::Refused("405 Forbidden: no PIN is set on the device".into()))
            }
            Platform::Windows => return Err(PortError::Unsupported("lock a Windows desktop")),
            // Find My lock: the Mac keeps the first PIN until it is used.
            Platform::Macos => {
                let pin = request.pin.as_ref().filter(|p| crate::decide::apple::valid_lock_pin(p.expose()));
                let Some(pin) = pin else {
                    return Err(PortError::Refused("a macOS lock needs a six-digit PIN".into()));
                };
                if self.lock_pin.is_some() {
                    return Err(PortError::Refused("the Mac is already locked with an earlier PIN".into()));
                }
                self.lock_pin = Some(hash(pin.expose())?);
            }
            _ => {}
        }
        let credential = if self.facts.mode.is_work_profile() {
            self.device_passcode.is_some() || self.work_profile_passcode.is_some()
        } else {
            self.device_passcode.is_some()
        };
        // Android without a credential: "the device's screen will turn off but the device will
        // not be locked" (Intune). Apple locks either way.
        if platform.is_android_family() && !credential {
            self.record(effect, "screen_off", details);
            return Ok(LockReport { locked: false, message_result: None });
        }
        // Apple `DeviceLock` `MessageResult`: a message shows only when a passcode is set.
        let asked = !request.message.is_empty() || !request.phone_number.is_empty();
        let message_result = (matches!(platform, Platform::Ios | Platform::Macos) && asked).then(|| {
            if platform == Platform::Ios && self.device_passcode.is_none() {
                MessageResult::NoPasscodeSet
            } else {
                MessageResult::Success
            }
        });
        self.locked = true;
        let shows_message = message_result != Some(MessageResult::NoPasscodeSet);
        self.lock_message = Some(request.message.clone()).filter(|m| shows_message && !m.is_empty());
        self.lock_phone_number = Some(request.phone_number.clone()).filter(|p| shows_message && !p.is_empty());
        self.record(effect, "remote_lock", details);
        Ok(LockReport { locked: true, message_result })
    }

    /// RemoteLock `LockAndRecoverPIN`: a new PIN from the device's own generator, and a lock.
    pub(crate) fn generate_pin(&mut self, effect: EffectId<'_>) -> Result<PinReport, PortError> {
        if self.facts.platform != Platform::WindowsMobile || !self.facts.pin_recovery_enabled {
            return Err(PortError::Refused("PIN recovery is not available on this device".into()));
        }
        let policy = self.device_policy.clone().unwrap_or(PasscodePolicy::Windows(policy::WindowsPolicy::default()));
        let pin = policy::generate::temporary_passcode(&policy).map_err(PortError::Refused)?;
        self.device_passcode = Some(hash(pin.expose())?);
        self.locked = true;
        self.record(effect, "reset_pin", BTreeMap::new());
        self.record(effect, "remote_lock", BTreeMap::new());
        Ok(PinReport { pin, locked: true })
    }

    /// The user types their current credential (activates a pending reset token).
    pub fn user_confirm_credential(&mut self) {
        if let Some(t) = self.reset_token.as_mut() {
            t.active = true;
        }
    }

    /// The user sets a passcode on the device themselves.
    pub fn user_set_passcode(&mut self, scope: Scope, passcode: &Secret) -> Result<(), PortError> {
        self.set_passcode(scope, passcode, None)?;
        if scope == Scope::Device {
            self.new_passcode_prompt = false;
        }
        Ok(())
    }

    /// The user unlocks the device with its passcode, or a locked Mac with its Find My PIN.
    /// Returns false (and stays locked) when the secret is wrong.
    pub fn user_unlock(&mut self, secret: &Secret) -> bool {
        let unlocks = match (&self.lock_pin, &self.device_passcode) {
            (Some(pin), _) => matches(secret.expose(), pin),
            (None, Some(passcode)) => matches(secret.expose(), passcode),
            (None, None) => true,
        };
        if unlocks {
            self.locked = false;
            self.lock_pin = None;
            self.lock_message = None;
            self.lock_phone_number = None;
        }
        unlocks
    }

    /// Whether `passcode` is the current credential for `scope` (for tests and the user CLI).
    pub fn passcode_is(&self, scope: Scope, passcode: &Secret) -> bool {
        let stored = match scope {
            Scope::Device => &self.device_passcode,
            Scope::WorkProfile => &self.work_profile_passcode,
        };
        stored.as_deref().is_some_and(|h| matches(passcode.expose(), h))
    }

    /// Whether a command's effect happened: `None` when it is not in the history and older
    /// effects were dropped (it may be one of them).
    pub fn applied(&self, command_id: &str) -> Option<bool> {
        if self.effects.iter().any(|e| e.command_id == command_id) {
            Some(true)
        } else if self.effects_dropped == 0 {
            Some(false)
        } else {
            None
        }
    }

    /// How many times a command's effect of `kind` was applied.
    pub fn effects_of(&self, command_id: &str, kind: &str) -> usize {
        self.effects.iter().filter(|e| e.command_id == command_id && e.kind == kind).count()
    }
}

/// Hashes a starting passcode for a new profile (bypasses policy: it is the user's existing one).
pub(crate) fn hash_for_init(passcode: &Secret) -> Result<String, PortError> {
    hash(passcode.expose())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the kept window the simulator no longer claims a command was never applied.
    #[test]
    fn an_effect_older_than_the_kept_history_is_cannot_tell_not_never_applied() {
        let mut state = crate::sim::profile::build("android-do", &Default::default()).expect("profile");
        state.record(EffectId("first"), "remote_lock", BTreeMap::new());
        assert_eq!(state.applied("first"), Some(true));
        assert_eq!(state.applied("never-sent"), Some(false));
        for n in 0..EFFECTS_KEPT {
            state.record(EffectId(&format!("later-{n}")), "remote_lock", BTreeMap::new());
        }
        assert_eq!(state.effects.len(), EFFECTS_KEPT);
        assert_eq!(state.effects_dropped, 1);
        assert_eq!(state.applied("later-0"), Some(true));
        assert_eq!(state.applied("first"), None, "dropped: cannot tell");
        assert_eq!(state.applied("never-sent"), None);
    }
}
