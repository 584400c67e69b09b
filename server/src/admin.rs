//! Admin operations behind `latchkey-server token|action|devices|actions|passcodes|escrow`.
//! They work on the database directly and wake the device's push stream — in process when the
//! server runs here (the demo), through the data directory's admin socket otherwise.
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use latchkey_platform::policy::{generate, AndroidPolicy, PasscodePolicy};
use latchkey_platform::{DeviceFacts, Platform, Secret, SecretBytes};
use latchkey_proto::v1;

use crate::db::{Db, DbError};
use crate::hub::Hub;
use crate::now_ms;

/// Default lifetime of a queued command.
pub const DEFAULT_COMMAND_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How to reach a running server's push streams.
#[derive(Clone)]
pub enum Waker {
    /// The server runs in this process.
    InProcess(Arc<Hub>),
    /// The server's admin socket.
    Socket(PathBuf),
}

impl Waker {
    /// Best effort: a device without a stream gets the command on its next poll.
    pub fn wake(&self, device_id: &str) {
        match self {
            Self::InProcess(hub) => {
                hub.wake(device_id);
            }
            Self::Socket(path) => {
                if let Ok(mut stream) = UnixStream::connect(path) {
                    let _ = stream.write_all(format!("{device_id}\n").as_bytes());
                }
            }
        }
    }
}

/// Admin failures.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Storage.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The request cannot be carried out.
    #[error("{0}")]
    Invalid(String),
}

/// Creates a one-time enrollment token valid for `ttl`.
pub fn create_token(db: &Db, ttl: Duration) -> Result<Secret, AdminError> {
    let token = Secret::new(format!("lk1-{}", SecretBytes::random(24).to_hex().expose()));
    let now = now_ms();
    db.insert_token(token.expose(), now, now + ttl.as_millis() as i64)?;
    Ok(token)
}

/// What the admin asks for.
#[derive(Clone, Debug)]
pub enum ActionSpec {
    /// Reset the device or work-profile passcode to a generated temporary passcode.
    ResetPasscode {
        /// Work profile instead of device.
        work_profile: bool,
    },
    /// Remove the passcode with the escrowed unlock token.
    RemovePasscode,
    /// Lock now.
    Lock {
        /// Lock-screen message.
        message: String,
        /// Lock-screen phone number.
        phone: String,
    },
    /// Windows PIN recovery.
    ResetPin,
}

impl ActionSpec {
    /// The name shown in the device-actions view.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ResetPasscode { work_profile: false } => "reset_passcode",
            Self::ResetPasscode { work_profile: true } => "reset_work_profile_passcode",
            Self::RemovePasscode => "remove_passcode",
            Self::Lock { .. } => "remote_lock",
            Self::ResetPin => "reset_pin",
        }
    }
}

/// A queued action.
#[derive(Debug)]
pub struct Queued {
    /// Command id.
    pub command_id: String,
    /// The temporary passcode to give the user, when the server generated one.
    pub temporary_passcode: Option<Secret>,
}

/// The policy a temporary passcode must satisfy: the one the device last reported for the scope,
/// or the platform's floor when none is assigned.
fn policy_for(db: &Db, device_id: &str, work_profile: bool) -> Result<(DeviceFacts, PasscodePolicy), AdminError> {
    let (facts_json, state_json) = db.device_facts_state(device_id)?;
    let facts: DeviceFacts = serde_json::from_str(&facts_json).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let state: serde_json::Value = state_json.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    let key = if work_profile { "work_profile_policy" } else { "device_policy" };
    let reported: Option<PasscodePolicy> = serde_json::from_value(state[key].clone()).ok().flatten();
    Ok((facts, reported.unwrap_or(PasscodePolicy::Android(AndroidPolicy::default()))))
}

/// Queues an action for a device and wakes it.
pub fn queue_action(
    db: &Db,
    waker: &Waker,
    device_id: &str,
    spec: &ActionSpec,
    ttl: Duration,
) -> Result<Queued, AdminError> {
    if !db.device_exists(device_id)? {
        return Err(AdminError::Invalid(format!(
            "unknown device {device_id}; `latchkey-server devices` lists enrolled devices"
        )));
    }
    let command_id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let mut temporary_passcode = None;
    let action = match spec {
        ActionSpec::ResetPasscode { work_profile } => {
            let (facts, policy) = policy_for(db, device_id, *work_profile)?;
            // Android, AOSP and Linux take an admin-side temporary passcode; other platforms
            // refuse a reset or generate their own PIN on the device.
            let passcode = if matches!(facts.platform, Platform::Android | Platform::Aosp | Platform::Linux) {
                let p = generate::temporary_passcode(&policy).map_err(AdminError::Invalid)?;
                db.insert_passcode(&command_id, device_id, p.expose(), now)?;
                let text = p.expose().to_owned();
                temporary_passcode = Some(p);
                text
            } else {
                String::new()
            };
            let scope = if *work_profile { v1::ResetScope::WorkProfile } else { v1::ResetScope::Device };
            v1::command::Action::ResetPasscode(v1::ResetPasscode {
                scope: scope as i32,
                new_passcode: passcode,
                flags: 0,
            })
        }
        ActionSpec::RemovePasscode => {
            let token = db.unlock_token(device_id)?.and_then(|hex| SecretBytes::from_hex(&hex)).unwrap_or_default();
            v1::command::Action::RemovePasscode(v1::RemovePasscode { unlock_token: token.expose().to_vec() })
        }
        ActionSpec::Lock { message, phone } => v1::command::Action::RemoteLock(v1::RemoteLock {
            message: message.clone(),
            phone_number: phone.clone(),
            pin: String::new(),
        }),
        ActionSpec::ResetPin => v1::command::Action::ResetPin(v1::ResetPin {}),
    };
    let command = v1::Command {
        command_id: command_id.clone(),
        device_id: device_id.to_owned(),
        issued_at_unix_ms: now,
        expires_at_unix_ms: now + ttl.as_millis() as i64,
        action: Some(action),
    };
    db.queue(&command, spec.name())?;
    tracing::info!(device_id = %device_id, command_id = %command_id, action = spec.name(), "action queued");
    waker.wake(device_id);
    Ok(Queued { command_id, temporary_passcode })
}

/// Replaces the escrowed unlock token (migration from another MDM, or recovery).
pub fn import_unlock_token(db: &Db, device_id: &str, token: &SecretBytes) -> Result<(), AdminError> {
    if token.expose().len() < 16 {
        return Err(AdminError::Invalid("unlock token must be at least 16 bytes".into()));
    }
    db.set_unlock_token(device_id, token.to_hex().expose())?;
    Ok(())
}
