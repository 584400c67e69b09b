//! From a wire command to a journaled result: journal it, validate it (expired, foreign and
//! malformed commands are rejected, never applied), decide and apply it through the port,
//! journal the result. Runs on a blocking thread: ports do file and process I/O.
//!
//! After a restart, commands that were mid-effect are settled by asking the port (never
//! retried); after a lost journal, every command issued before the loss is checked against the
//! device first, so nothing already applied is applied again.
use std::sync::{Arc, Mutex};

use latchkey_platform::execute::{execute, settle, Request};
use latchkey_platform::{Action, DevicePort, ErrorCode, Outcome, Status};
use latchkey_proto::convert::{self, ActionError};
use latchkey_proto::v1;

use crate::journal::{Journal, Receipt};
use crate::lifecycle::RESET_TOKEN;
use crate::secrets::SecretStore;

/// Crash points for the fault-injection tests (`LATCHKEY_FAULT`); compiled only into test builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Abort after the side effect, before the result is journaled.
    CrashAfterApply,
    /// Abort after the result is journaled, before it is reported.
    CrashBeforeReport,
}

impl Fault {
    /// Reads `LATCHKEY_FAULT`. Only builds with the `fault-injection` feature (the test suite
    /// enables it through a dev-dependency) contain this code at all.
    #[cfg(feature = "fault-injection")]
    pub fn from_env() -> Option<Self> {
        match std::env::var("LATCHKEY_FAULT").ok()?.as_str() {
            "crash-after-apply" => Some(Self::CrashAfterApply),
            "crash-before-report" => Some(Self::CrashBeforeReport),
            _ => None,
        }
    }

    /// Without the `fault-injection` feature there is no fault to inject.
    #[cfg(not(feature = "fault-injection"))]
    pub fn from_env() -> Option<Self> {
        None
    }
}

/// Test builds only: `LATCHKEY_TEST_CLOCK_OFFSET_MS` shifts the agent's view of the time, to
/// exercise expiry without waiting.
#[cfg(feature = "fault-injection")]
fn clock_offset_ms() -> i64 {
    std::env::var("LATCHKEY_TEST_CLOCK_OFFSET_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(not(feature = "fault-injection"))]
fn clock_offset_ms() -> i64 {
    0
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
    convert::action_from_wire(command).map_err(|e| match e {
        ActionError::Malformed(what) => {
            reject(ErrorCode::Malformed, format!("command is malformed ({what}); it was not applied"))
        }
        ActionError::Unsupported(name) => Outcome::not_supported(
            ErrorCode::PlatformUnsupported,
            format!("{name} is not a command this agent implements; nothing was done"),
        ),
    })
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
        Some(v1::command::Action::Unsupported(_)) => "unsupported",
        None => "unknown",
    }
}

/// Outcome to wire result.
pub fn to_result(command_id: &str, outcome: Outcome, now_ms: i64) -> v1::CommandResult {
    v1::CommandResult {
        command_id: command_id.to_owned(),
        status: convert::status_to_wire(outcome.status) as i32,
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
    fn now(&self) -> i64 {
        latchkey_common::time::now_ms() + clock_offset_ms()
    }

    /// Handles one delivered command. Returns true when a new result was journaled.
    pub fn handle(&self, command: &v1::Command) -> bool {
        let now = self.now();
        match self.journal.receive(command, kind_of(command), now) {
            Ok(Receipt::New) => {}
            Ok(Receipt::Known(state)) => {
                tracing::info!(command_id = %command.command_id, state = state.as_str(), "command already journaled; not applying it again");
                match self.journal.report_again(&command.command_id, now) {
                    Ok(true) => tracing::info!(command_id = %command.command_id, "its result is reported again"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(command_id = %command.command_id, error = %e, "cannot queue the result again")
                    }
                }
                return false;
            }
            Err(e) => {
                tracing::error!(command_id = %command.command_id, error = %e, "cannot journal command; not acting on it");
                return false;
            }
        }
        tracing::debug!(command_id = %command.command_id, "command journaled");
        if let Some(lost_at) = self.journal.lost_at() {
            if command.issued_at_unix_ms <= lost_at && self.settled_after_loss(command) {
                return true;
            }
        }
        self.run_journaled(command)
    }

    /// A command issued before the journal was lost may have been applied already: ask the
    /// device first. Returns true when the command was settled without running.
    fn settled_after_loss(&self, command: &v1::Command) -> bool {
        let id = command.command_id.as_str();
        let applied = self.port.lock().unwrap_or_else(|p| p.into_inner()).effect_applied(id);
        if let Ok(Some(false)) = applied {
            return false;
        }
        let mut port = self.port.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = settle(port.as_mut(), id, kind_of(command), "the agent's journal was lost");
        drop(port);
        tracing::warn!(command_id = %id, status = outcome.status.as_str(), "settled a command issued before the journal was lost");
        self.finish(id, outcome)
    }

    fn finish(&self, id: &str, outcome: Outcome) -> bool {
        let result = to_result(id, outcome, latchkey_common::time::now_ms());
        let status = convert::status_from_wire(result.status).map(|s| s.as_str()).unwrap_or("unknown");
        tracing::info!(command_id = %id, status, error_code = %result.error_code, "command finished");
        if let Err(e) = self.journal.finish(&result, latchkey_common::time::now_ms()) {
            tracing::error!(command_id = %id, error = %e, "cannot journal the result");
            return false;
        }
        true
    }

    /// Runs a command that is journaled as received.
    pub fn run_journaled(&self, command: &v1::Command) -> bool {
        let id = command.command_id.as_str();
        let outcome = match validate(command, &self.device_id, self.now()) {
            Err(refusal) => refusal,
            Ok(action) => {
                // Only a reset uses the reset token: nothing else reads the secret store.
                let token = match &action {
                    Action::ResetPasscode { .. } => match self.secrets.get(RESET_TOKEN) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(error = %e, "secret store unreadable");
                            None
                        }
                    },
                    _ => None,
                };
                let request = Request { command_id: id, action: &action, reset_token: token.as_ref() };
                let mut port = self.port.lock().unwrap_or_else(|p| p.into_inner());
                let journal = self.journal.clone();
                let outcome = execute(port.as_mut(), &request, &mut || {
                    journal.applying(id, latchkey_common::time::now_ms()).map_err(|e| e.to_string())
                });
                drop(port);
                tracing::debug!(command_id = %id, "platform port answered");
                trip(self.fault, Fault::CrashAfterApply);
                outcome
            }
        };
        let finished = self.finish(id, outcome);
        if finished {
            trip(self.fault, Fault::CrashBeforeReport);
        }
        finished
    }

    /// After a restart: settle commands that were mid-effect, then return those never started.
    pub fn recover(&self) -> Vec<v1::Command> {
        match self.journal.interrupted() {
            Ok(rows) => {
                for (id, kind) in rows {
                    let mut port = self.port.lock().unwrap_or_else(|p| p.into_inner());
                    let outcome = settle(port.as_mut(), &id, &kind, "the agent stopped while applying it");
                    drop(port);
                    let outcome = if outcome.status == Status::Succeeded {
                        outcome.with_output("recovered_after_restart", "true")
                    } else {
                        outcome
                    };
                    tracing::warn!(command_id = %id, status = outcome.status.as_str(), "settled an interrupted command");
                    self.finish(&id, outcome);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read interrupted commands"),
        }
        if let Err(e) = self.journal.prune(latchkey_common::time::now_ms()) {
            tracing::warn!(error = %e, "pruning the journal");
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
        let mut bad_flags = command("me", 100);
        bad_flags.action =
            Some(v1::command::Action::ResetPasscode(v1::ResetPasscode { flags: 0x80, ..Default::default() }));
        assert_eq!(code(validate(&bad_flags, "me", 10)), Some(ErrorCode::Malformed));
        let mut unknown = command("me", 100);
        unknown.action = Some(v1::command::Action::Unsupported(v1::UnsupportedAction { name: "EraseDevice".into() }));
        let refusal = validate(&unknown, "me", 10).expect_err("unsupported");
        assert_eq!((refusal.status, refusal.code), (Status::NotSupported, Some(ErrorCode::PlatformUnsupported)));
        assert!(refusal.message.contains("EraseDevice"));
        assert!(validate(&command("me", 100), "me", 10).is_ok());
    }
}
