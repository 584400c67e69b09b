//! Token lifecycles that run beside the commands:
//! - Android reset-password token: created (32 random bytes) and stored in the secret store
//!   before it is registered with the OS, escrowed to the server, its state reported at every
//!   check-in; while it waits for the user, a notification asks them to confirm their passcode,
//!   withdrawn once the token is active.
//! - iOS-like unlock token: escrowed at enrollment and again whenever the device's changes.
use latchkey_platform::{DevicePort, PortError, PortSnapshot, ResetTokenState, SecretBytes};

use crate::journal::{Journal, JournalError};
use crate::secrets::{SecretError, SecretStore};

/// Name of the reset-password token in the secret store.
pub const RESET_TOKEN: &str = "reset_token";

/// Lifecycle failures. None of them stops the agent: they are reported and retried.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The secret store failed (a corrupt secret, a write error).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The platform port failed.
    #[error("platform port: {0}")]
    Port(#[from] PortError),
}

/// The notification asking the user to confirm their credential.
pub const CONFIRM_NOTIFICATION: &str = "latchkey.reset-token";
const CONFIRM_TEXT: &str =
    "Your organisation needs you to confirm your work passcode so it can help you if you forget it. Tap to confirm.";
const KV_RESET_ESCROWED: &str = "reset_token_escrowed";
const KV_UNLOCK_ESCROWED: &str = "unlock_token_escrowed_sha256";
const KV_NOTIFIED: &str = "reset_token_notification_shown";

/// What the lifecycle wants sent to the server.
#[derive(Default)]
pub struct Escrow {
    /// A reset token to escrow.
    pub reset_token: Option<SecretBytes>,
    /// An unlock token to escrow.
    pub unlock_token: Option<SecretBytes>,
}

impl Escrow {
    /// Nothing to escrow.
    pub fn is_empty(&self) -> bool {
        self.reset_token.is_none() && self.unlock_token.is_none()
    }
}

/// Lower-case hex SHA-256, for remembering which token was escrowed without keeping it.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    latchkey_common::hex::encode_public(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Brings tokens and the notification up to date; returns what still needs escrowing.
pub fn reconcile(
    port: &mut dyn DevicePort,
    snapshot: &PortSnapshot,
    secrets: &SecretStore,
    journal: &Journal,
) -> Result<Escrow, LifecycleError> {
    let mut escrow = Escrow::default();
    let mut token_state = snapshot.state.reset_token;
    if token_state != ResetTokenState::NotApplicable {
        let stored = secrets.get(RESET_TOKEN)?;
        if token_state == ResetTokenState::None || stored.is_none() {
            // Stored first: a crash after registering must not leave an active token we lost.
            let token = stored.unwrap_or_else(|| SecretBytes::random(32));
            secrets.put(RESET_TOKEN, &token)?;
            journal.set(KV_RESET_ESCROWED, "0")?;
            token_state = port.set_reset_token(&token)?;
            tracing::info!(state = token_state.as_str(), "reset token registered");
        }
        if journal.get(KV_RESET_ESCROWED)?.as_deref() != Some("1") {
            escrow.reset_token = secrets.get(RESET_TOKEN)?;
        }
        let credential_set = if snapshot.facts.mode.is_work_profile() {
            snapshot.state.work_profile_policy.is_some() && snapshot.state.work_profile_passcode_present
        } else {
            snapshot.state.passcode_present
        };
        let shown = journal.get(KV_NOTIFIED)?.as_deref() == Some("1");
        if token_state == ResetTokenState::PendingUser && credential_set && !shown {
            port.notify(CONFIRM_NOTIFICATION, Some(CONFIRM_TEXT))?;
            journal.set(KV_NOTIFIED, "1")?;
            tracing::info!("asked the user to confirm their credential to activate the reset token");
        } else if token_state == ResetTokenState::Active && shown {
            port.notify(CONFIRM_NOTIFICATION, None)?;
            journal.set(KV_NOTIFIED, "0")?;
            tracing::info!("reset token active; notification withdrawn");
        }
    }
    if let Some(token) = port.unlock_token()? {
        if journal.get(KV_UNLOCK_ESCROWED)?.as_deref() != Some(sha256_hex(token.expose()).as_str()) {
            escrow.unlock_token = Some(token);
        }
    }
    Ok(escrow)
}

/// Records a successful reset-token escrow.
pub fn reset_token_escrowed(journal: &Journal) -> Result<(), JournalError> {
    journal.set(KV_RESET_ESCROWED, "1")
}

/// Records a successful unlock-token escrow.
pub fn unlock_token_escrowed(journal: &Journal, token: &SecretBytes) -> Result<(), JournalError> {
    journal.set(KV_UNLOCK_ESCROWED, &sha256_hex(token.expose()))
}

/// True when the current unlock token is escrowed.
pub fn unlock_escrowed(journal: &Journal) -> bool {
    journal.get(KV_UNLOCK_ESCROWED).ok().flatten().is_some()
}
