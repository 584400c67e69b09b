//! The simulator's persisted state and the rules it enforces.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::action::Scope;
use crate::facts::{DeviceFacts, ResetTokenState};
use crate::policy::{self, PasscodePolicy};
use crate::port::{EffectId, PortError};
use crate::secret::{Secret, SecretBytes};

/// One applied side effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The command that caused it.
    pub command_id: String,
    /// What it was (`reset_passcode`, `remote_lock`, …).
    pub kind: String,
    /// When, Unix milliseconds.
    pub at_unix_ms: u64,
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
    /// Device passcode policy in force.
    pub device_policy: Option<PasscodePolicy>,
    /// Work-profile passcode policy in force.
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
    /// The user has been asked to set a new passcode.
    pub new_passcode_prompt: bool,
    /// Notifications on screen, by id.
    pub notifications: BTreeMap<String, String>,
    /// Every side effect, in order.
    pub effects: Vec<Effect>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn hash(secret: &str) -> Result<String, PortError> {
    let params = sha_crypt::Sha512Params::new(5_000).map_err(|_| PortError::Io("crypt params".into()))?;
    sha_crypt::sha512_simple(secret, &params).map_err(|_| PortError::Io("crypt failed".into()))
}

fn matches(secret: &str, hashed: &str) -> bool {
    sha_crypt::sha512_check(secret, hashed).is_ok()
}

impl SimState {
    /// Reads a state file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a simulator state file: {e}", path.display()))
    }

    /// Writes the state file atomically (0600).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        crate::atomic::write(path, &bytes, 0o600).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn record(&mut self, effect: EffectId<'_>, kind: &str) {
        self.effects.push(Effect { command_id: effect.0.to_owned(), kind: kind.to_owned(), at_unix_ms: now_ms() });
    }

    /// The credential the reset token is bound to is present.
    fn token_credential_present(&self) -> bool {
        if self.facts.mode.is_work_profile() {
            self.work_profile_passcode.is_some() || self.device_passcode.is_some()
        } else {
            self.device_passcode.is_some()
        }
    }

    /// Facts and credential state, as the port reports them.
    pub fn snapshot(&self) -> crate::port::PortSnapshot {
        crate::port::PortSnapshot {
            facts: self.facts.clone(),
            state: crate::facts::DeviceState {
                passcode_present: self.device_passcode.is_some(),
                work_profile_passcode_present: self.work_profile_passcode.is_some(),
                device_policy: self.device_policy.clone(),
                work_profile_policy: self.work_profile_policy.clone(),
                reset_token: self.reset_token_state(),
                locked: self.locked,
            },
        }
    }

    /// The reset-token state as the device reports it.
    pub fn reset_token_state(&self) -> ResetTokenState {
        if !matches!(self.facts.platform, crate::facts::Platform::Android | crate::facts::Platform::Aosp)
            || self.facts.api_level < crate::decide::android::RESET_TOKEN_API
        {
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
        effect: Option<EffectId<'_>>,
    ) -> Result<(), PortError> {
        // The OS applies its own floor: printable ASCII, 4..=16 characters on Android-family
        // devices, the policy in force everywhere.
        let policy = match scope {
            Scope::Device => self.device_policy.clone(),
            Scope::WorkProfile => self.work_profile_policy.clone(),
        };
        let floor = match self.facts.platform {
            crate::facts::Platform::Android | crate::facts::Platform::Aosp => {
                Some(PasscodePolicy::Android(policy::AndroidPolicy::default()))
            }
            _ => None,
        };
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
        if let Some(effect) = effect {
            let kind = match scope {
                Scope::Device => "reset_passcode",
                Scope::WorkProfile => "reset_work_profile_passcode",
            };
            self.record(effect, kind);
        }
        Ok(())
    }

    pub(crate) fn clear_passcode(&mut self, unlock_token: &SecretBytes, effect: EffectId<'_>) -> Result<(), PortError> {
        let device = self.unlock_token.as_deref().and_then(SecretBytes::from_hex).ok_or(PortError::TokenMismatch)?;
        if !device.ct_eq(unlock_token.expose()) {
            return Err(PortError::TokenMismatch);
        }
        self.device_passcode = None;
        self.new_passcode_prompt = self.device_policy.is_some();
        self.record(effect, "remove_passcode");
        Ok(())
    }

    pub(crate) fn generate_pin(&mut self, effect: EffectId<'_>) -> Result<Secret, PortError> {
        let policy = self.device_policy.clone().unwrap_or(PasscodePolicy::Windows(policy::WindowsPolicy::default()));
        let pin = policy::generate::temporary_passcode(&policy).map_err(PortError::Refused)?;
        self.device_passcode = Some(hash(pin.expose())?);
        self.record(effect, "reset_pin");
        Ok(pin)
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

    /// Whether `passcode` is the current credential for `scope` (for tests and the user CLI).
    pub fn passcode_is(&self, scope: Scope, passcode: &Secret) -> bool {
        let stored = match scope {
            Scope::Device => &self.device_passcode,
            Scope::WorkProfile => &self.work_profile_passcode,
        };
        stored.as_deref().is_some_and(|h| matches(passcode.expose(), h))
    }
}

/// Hashes a starting passcode for a new profile (bypasses policy: it is the user's existing one).
pub(crate) fn hash_for_init(passcode: &Secret) -> Result<String, PortError> {
    hash(passcode.expose())
}
