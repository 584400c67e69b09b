//! From a wire command to a journaled result: validate (expired, foreign, malformed commands are
//! rejected, never applied), journal, decide and apply through the port, journal the result.
//! Runs on a blocking thread: ports do file and process I/O.
use std::sync::{Arc, Mutex};

use latchkey_platform::execute::{execute, Request};
use latchkey_platform::{Action, DevicePort, ErrorCode, LockRequest, Outcome, Scope, Secret, SecretBytes, Status};
use latchkey_proto::v1;

use crate::journal::{Journal, Receipt};
use crate::secrets::SecretStore;

/// Name of the reset-password token in the secret store.
pub const RESET_TOKEN: &str = "reset_token";

/// Crash points for the fault-injection tests (`LATCHKEY_FAULT`); unset in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Abort after the side effect, before the result is journaled.
    CrashAfterApply,
    /// Abort after the result is journaled, before it is reported.
    CrashBeforeReport,
}

impl Fault {
    /// Reads `LATCHKEY_FAULT`.
    pub fn from_env() -> Option<Self> {
        match std::env::var("LATCHKEY_FAULT").ok()?.as_str() {
            "crash-after-apply" => Some(Self::CrashAfterApply),
            "crash-before-report" => Some(Self::CrashBeforeReport),
            _ => None,
        }
    }
}

fn trip(fault: Option<Fault>, at: Fault) {
    if fault == Some(at) {
        tracing::warn!(fault = ?at, "fault injection: aborting");
        std::process::abort();
    }
}

/// Checks a command before anything is done with it.
pub fn validate(command: &v1::Command, device_id: &str, now_ms: i64) -> Result<Action, Outcome> {
    let reject = |code, message: String| Outcome::refused(Status::Rejected, code, message);
    if command.device_id != device_id {
        return Err(reject(
            ErrorCode::WrongDevice,
            "command is addressed to another device; it was not applied".into(),
        ));
    }
    if command.expires_at_unix_ms <= 0 || command.issued_at_unix_ms <= 0 {
        return Err(reject(ErrorCode::Malformed, "command carries no issue or expiry time; it was not applied".into()));
    }
    if command.expires_at_unix_ms <= now_ms {
        return Err(reject(
            ErrorCode::Expired,
            "command expired before the device received it; issue it again if it is still needed".into(),
        ));
    }
    let malformed =
        |what: &str| reject(ErrorCode::Malformed, format!("command is malformed ({what}); it was not applied"));
    match &command.action {
        None => Err(malformed("no action")),
        Some(v1::command::Action::ResetPasscode(r)) => {
            let scope = match v1::ResetScope::try_from(r.scope) {
                Ok(v1::ResetScope::WorkProfile) => Scope::WorkProfile,
                Ok(_) => Scope::Device,
                Err(_) => return Err(malformed("unknown reset scope")),
            };
            Ok(Action::ResetPasscode { scope, passcode: Secret::new(r.new_passcode.clone()), flags: r.flags })
        }
        Some(v1::command::Action::RemovePasscode(r)) => {
            Ok(Action::RemovePasscode { unlock_token: SecretBytes::new(r.unlock_token.clone()) })
        }
        Some(v1::command::Action::RemoteLock(l)) => {
            Ok(Action::RemoteLock(LockRequest { message: l.message.clone(), phone_number: l.phone_number.clone() }))
        }
        Some(v1::command::Action::ResetPin(_)) => Ok(Action::ResetPin),
    }
}

/// Zeroes the secrets a wire command carries (prost types do not zero themselves on drop).
pub fn scrub(command: &mut v1::Command) {
    use zeroize::Zeroize;
    match &mut command.action {
        Some(v1::command::Action::ResetPasscode(r)) => r.new_passcode.zeroize(),
        Some(v1::command::Action::RemovePasscode(r)) => r.unlock_token.zeroize(),
        Some(v1::command::Action::RemoteLock(l)) => l.pin.zeroize(),
        Some(v1::command::Action::ResetPin(_)) | None => {}
    }
}

/// The action's name for the journal, before validation.
pub fn kind_of(command: &v1::Command) -> &'static str {
    match &command.action {
        Some(v1::command::Action::ResetPasscode(r)) if r.scope == v1::ResetScope::WorkProfile as i32 => {
            "reset_work_profile_passcode"
        }
        Some(v1::command::Action::ResetPasscode(_)) => "reset_passcode",
        Some(v1::command::Action::RemovePasscode(_)) => "remove_passcode",
        Some(v1::command::Action::RemoteLock(_)) => "remote_lock",
        Some(v1::command::Action::ResetPin(_)) => "reset_pin",
        None => "unknown",
    }
}

/// Outcome to wire result.
pub fn to_result(command_id: &str, outcome: Outcome, now_ms: i64) -> v1::CommandResult {
    let status = match outcome.status {
        Status::Succeeded => v1::CommandStatus::Succeeded,
        Status::Failed => v1::CommandStatus::Failed,
        Status::NotSupported => v1::CommandStatus::NotSupported,
        Status::NotNow => v1::CommandStatus::NotNow,
        Status::Rejected => v1::CommandStatus::Rejected,
    };
    v1::CommandResult {
        command_id: command_id.to_owned(),
        status: status as i32,
        error_code: outcome.code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
        message: outcome.message,
        outputs: outcome.outputs.into_iter().collect(),
        generated_pin: outcome.generated_pin.map(|p| p.expose().to_owned()).unwrap_or_default(),
        finished_at_unix_ms: now_ms,
    }
}

/// Everything a command needs to run.
pub struct Executor {
    /// This device.
    pub device_id: String,
    /// The journal.
    pub journal: Arc<Journal>,
    /// The OS port (one command at a time).
    pub port: Arc<Mutex<Box<dyn DevicePort>>>,
    /// Secret store.
    pub secrets: Arc<SecretStore>,
    /// Fault injection for tests.
    pub fault: Option<Fault>,
}

impl Executor {
    /// Handles one delivered command. Returns true when a new result was journaled.
    pub fn handle(&self, command: &v1::Command) -> bool {
        let now = crate::now_ms();
        match self.journal.receive(command, kind_of(command), now) {
            Ok(Receipt::New) => {}
            Ok(Receipt::Known(state)) => {
                tracing::info!(command_id = %command.command_id, ?state, "command already journaled; not applying it again");
                return false;
            }
            Err(e) => {
                tracing::error!(command_id = %command.command_id, error = %e, "cannot journal command; not acting on it");
                return false;
            }
        }
        self.run_journaled(command)
    }

    /// Runs a command that is journaled as received.
    pub fn run_journaled(&self, command: &v1::Command) -> bool {
        let id = command.command_id.as_str();
        let outcome = match validate(command, &self.device_id, crate::now_ms()) {
            Err(refusal) => refusal,
            Ok(action) => {
                let token = match self.secrets.get(RESET_TOKEN) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "secret store unreadable");
                        None
                    }
                };
                let request = Request { command_id: id, action: &action, reset_token: token.as_ref() };
                let mut port = self.port.lock().unwrap_or_else(|p| p.into_inner());
                let journal = self.journal.clone();
                let outcome = execute(port.as_mut(), &request, &mut || {
                    journal.applying(id, crate::now_ms()).map_err(|e| e.to_string())
                });
                drop(port);
                trip(self.fault, Fault::CrashAfterApply);
                outcome
            }
        };
        let result = to_result(id, outcome, crate::now_ms());
        tracing::info!(command_id = %id, kind = kind_of(command), status = result.status, error_code = %result.error_code, "command finished");
        if let Err(e) = self.journal.finish(&result, crate::now_ms()) {
            tracing::error!(command_id = %id, error = %e, "cannot journal the result");
            return false;
        }
        trip(self.fault, Fault::CrashBeforeReport);
        true
    }

    /// After a restart: settle commands that were mid-effect, then run those never started.
    pub fn recover(&self) -> Vec<v1::Command> {
        match self.journal.interrupted() {
            Ok(rows) => {
                for (id, kind) in rows {
                    let applied = self.port.lock().unwrap_or_else(|p| p.into_inner()).effect_applied(&id);
                    let outcome = match applied {
                        Ok(Some(true)) => Outcome::succeeded(format!(
                            "{kind} was applied just before the agent restarted; the device confirms it, so it was not applied again"
                        ))
                        .with_output("recovered_after_restart", "true"),
                        Ok(Some(false)) => Outcome::failed(
                            ErrorCode::Interrupted,
                            format!("the agent stopped while applying {kind} and the device shows it was not applied; it is not retried automatically — issue it again"),
                        ),
                        _ => Outcome::failed(
                            ErrorCode::Interrupted,
                            format!("the agent stopped while applying {kind}; the device cannot tell whether it took effect — check the device before issuing it again"),
                        ),
                    };
                    let result = to_result(&id, outcome, crate::now_ms());
                    tracing::warn!(command_id = %id, status = result.status, "settled an interrupted command");
                    if let Err(e) = self.journal.finish(&result, crate::now_ms()) {
                        tracing::error!(command_id = %id, error = %e, "cannot journal recovery result");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read interrupted commands"),
        }
        self.journal.received().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(device: &str, expires: i64) -> v1::Command {
        v1::Command {
            command_id: "c".into(),
            device_id: device.into(),
            issued_at_unix_ms: 1,
            expires_at_unix_ms: expires,
            action: Some(v1::command::Action::RemoteLock(v1::RemoteLock::default())),
        }
    }

    #[test]
    fn scrub_empties_every_secret_field() {
        let mut c = command("me", 100);
        c.action = Some(v1::command::Action::ResetPasscode(v1::ResetPasscode {
            new_passcode: "S3cret".into(),
            ..Default::default()
        }));
        scrub(&mut c);
        let Some(v1::command::Action::ResetPasscode(r)) = &c.action else { panic!("action") };
        assert!(r.new_passcode.is_empty());
    }

    #[test]
    fn rejects_foreign_expired_and_malformed_commands() {
        let code = |r: Result<Action, Outcome>| r.err().and_then(|o| o.code);
        assert_eq!(code(validate(&command("other", 100), "me", 10)), Some(ErrorCode::WrongDevice));
        assert_eq!(code(validate(&command("me", 5), "me", 10)), Some(ErrorCode::Expired));
        let mut no_action = command("me", 100);
        no_action.action = None;
        assert_eq!(code(validate(&no_action, "me", 10)), Some(ErrorCode::Malformed));
        let mut bad_scope = command("me", 100);
        bad_scope.action =
            Some(v1::command::Action::ResetPasscode(v1::ResetPasscode { scope: 77, ..Default::default() }));
        assert_eq!(code(validate(&bad_scope, "me", 10)), Some(ErrorCode::Malformed));
        assert!(validate(&command("me", 100), "me", 10).is_ok());
    }
}
