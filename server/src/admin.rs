//! Admin operations behind the CLI: tokens, actions, retirement, escrow import. They work on
//! storage directly and reach the serving process (to wake or close a device's stream) in
//! process or through the data directory's admin socket.
//!
//! An action is checked before it is queued: the server builds the command exactly as the device
//! will receive it and asks the platform rules ([`latchkey_platform::decide`]) what the device
//! would do given what it last reported. A predicted refusal is said at once and nothing is
//! queued unless the admin insists (`force`); no temporary passcode is ever shown for an action
//! predicted to fail.
use std::sync::Arc;
use std::time::Duration;

use latchkey_platform::policy::{generate, PasscodePolicy};
use latchkey_platform::request::{self, CommandKind, Request};
use latchkey_platform::{decide, Decision, ErrorCode, Scope, Secret, SecretBytes, Status};
use latchkey_proto::v1;

use crate::admin_socket::{AdminSocket, NoAnswer};
use crate::hub::Hub;
use crate::records::{ActionFilter, ActionRecord, DeviceRecord, DeviceStatus, EscrowKind, PasscodeKind};
use crate::service::{escrow_context, passcode_context, token_hash};
use crate::store::{NewCommand, Store, StoreError};
use crate::vault::Vault;
use crate::{limits, now_ms};

/// Default lifetime of a queued command.
pub const DEFAULT_COMMAND_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest lifetime of a command or an enrollment token.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest lifetime of a command or an enrollment token.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// How to reach a running server's push streams.
#[derive(Clone)]
pub enum Waker {
    /// The server runs in this process.
    InProcess(Arc<Hub>),
    /// The server's admin socket.
    Socket(AdminSocket),
}

/// Whether the serving process heard about a new command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Pushed on the device's stream now.
    Pushed,
    /// The server knows; the device has no stream and gets it on its next poll or connection.
    Queued,
    /// No serving process answered: delivery waits until `serve` runs.
    ServerDown,
}

fn delivery(reached: bool) -> Delivery {
    if reached {
        Delivery::Pushed
    } else {
        Delivery::Queued
    }
}

impl Waker {
    /// One line each way: `close ID` or `push COMMAND` (the serving process also takes `wake
    /// ID`), answered `reached` or `absent`.
    async fn ask(socket: &AdminSocket, line: &str) -> Delivery {
        match socket.ask(line, Duration::from_secs(2)).await {
            Ok(answer) if answer == "reached" => Delivery::Pushed,
            Ok(_) => Delivery::Queued,
            Err(NoAnswer::Unreachable) => Delivery::ServerDown,
            // The command is stored either way; a slow answer only loses the detail.
            Err(NoAnswer::Silent) => Delivery::Queued,
        }
    }

    /// Wakes the device's stream with a command just queued (durably), which the serving
    /// process pushes as it is instead of reading it back from storage. On the socket it is one
    /// line, `push` and the command's protobuf in hex (the socket is the server owner's alone;
    /// the line is zeroed after use: the command may carry a temporary passcode).
    pub async fn hand_over(&self, command: &v1::Command) -> Delivery {
        match self {
            Self::InProcess(hub) => delivery(hub.hand_over(command.clone())),
            Self::Socket(socket) => {
                let bytes = zeroize::Zeroizing::new(prost::Message::encode_to_vec(command));
                let hex = latchkey_common::hex::encode(&bytes);
                let mut line = zeroize::Zeroizing::new(String::with_capacity(hex.len() + 6));
                line.push_str("push ");
                line.push_str(&hex);
                line.push('\n');
                Self::ask(socket, &line).await
            }
        }
    }

    /// Ends the device's stream.
    pub async fn close(&self, device_id: &str) -> Delivery {
        match self {
            Self::InProcess(hub) => delivery(hub.close(device_id)),
            Self::Socket(socket) => Self::ask(socket, &format!("close {device_id}\n")).await,
        }
    }

    /// Returns once the serving process answers that the command is final, or at once when no
    /// server listens, or after `timeout`: the final record the server sent, or `None` when the
    /// caller must read the command from storage.
    async fn wait_socket(socket: &AdminSocket, command_id: &str, timeout: Duration) -> Option<ActionRecord> {
        let answer = socket.ask(&format!("wait {command_id}\n"), timeout).await.ok()?;
        let record: ActionRecord = serde_json::from_str(answer.strip_prefix("final ")?).ok()?;
        (record.command_id == command_id && record.state.is_final()).then_some(record)
    }
}

/// Waits until a command is final (a result, expiry or cancellation) and returns it; `None` for
/// an unknown command. Checks storage after subscribing, so a result stored in between is seen.
pub async fn wait_final(hub: &Hub, store: &dyn Store, command_id: &str) -> Result<Option<ActionRecord>, StoreError> {
    let mut changed = hub.watch_result(command_id);
    let outcome = loop {
        let record = match action_record(store, command_id).await {
            Ok(Some(record)) => record,
            other => break other,
        };
        if record.state.is_final() {
            break Ok(Some(record));
        }
        // The view shows it expired once its expiry passes; nothing else announces that.
        let left = record.expires_at - now_ms();
        let expiry = Duration::from_millis(u64::try_from(left).unwrap_or(0).saturating_add(1));
        tokio::select! {
            seen = changed.changed() => match seen {
                Ok(()) => {
                    // The serving process hands over the record it just stored: no read back.
                    let stored = changed.borrow_and_update().clone();
                    if let Some(record) = stored.filter(|r| r.state.is_final()) {
                        break Ok(Some(record.as_ref().clone()));
                    }
                }
                // Never while we hold the receiver; do not spin if it ever happens.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = tokio::time::sleep(expiry) => {}
        }
    };
    drop(changed);
    hub.unwatch(command_id);
    outcome
}

/// One command as `actions` shows it now; `None` for an unknown one.
async fn action_record(store: &dyn Store, command_id: &str) -> Result<Option<ActionRecord>, StoreError> {
    let filter = ActionFilter { command_id: Some(command_id.to_owned()), ..ActionFilter::default() };
    Ok(store.actions(filter, now_ms()).await?.into_iter().next())
}

/// Admin failures.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request cannot be carried out.
    #[error("{0}")]
    Invalid(String),
    /// The device is predicted to refuse; nothing was queued.
    #[error("not queued: the device would answer {status} {code}: {message} (it reported this state at its last check-in; --force queues it anyway)")]
    Predicted {
        /// Predicted status.
        status: &'static str,
        /// Predicted error code.
        code: &'static str,
        /// The platform's message.
        message: String,
    },
    /// A sealed secret could not be opened.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
}

/// Checks a TTL against the bounds.
pub fn check_ttl(ttl: Duration, what: &str) -> Result<(), AdminError> {
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(AdminError::Invalid(format!(
            "{what} TTL must be between {} and {}",
            humantime::format_duration(MIN_TTL),
            humantime::format_duration(MAX_TTL)
        )));
    }
    Ok(())
}

/// A queued action.
#[derive(Debug)]
pub struct Queued {
    /// Command id.
    pub command_id: String,
    /// What the admin asked for.
    pub requested: &'static str,
    /// What the device was sent.
    pub action: &'static str,
    /// The temporary passcode to give the user, when the server generated one and no failure is
    /// predicted.
    pub temporary_passcode: Option<Secret>,
    /// The macOS Find My PIN that unlocks the Mac, when one was generated.
    pub lock_pin: Option<Secret>,
    /// How the request was mapped, when the command differs from it.
    pub note: Option<&'static str>,
    /// The predicted refusal the admin overrode.
    pub warning: Option<String>,
    /// Whether the serving process heard about it.
    pub delivery: Delivery,
}

/// Options of `action`.
#[derive(Clone, Copy, Debug)]
pub struct ActionOptions {
    /// Lifetime of the command.
    pub ttl: Duration,
    /// Queue it even if the device is predicted to refuse.
    pub force: bool,
}

/// The admin side of the server.
pub struct Admin {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Sealing key.
    pub vault: Arc<Vault>,
    /// The serving process.
    pub waker: Waker,
}

/// Six CSPRNG digits for a macOS lock.
fn lock_pin() -> Secret {
    let mut pin = String::with_capacity(6);
    for byte in SecretBytes::random(6).expose() {
        // 256 is not a multiple of 10; the bias this leaves (under 1 %) does not matter for a
        // PIN Find My rate-limits, and keeps the digits uniform enough.
        pin.push(char::from(b'0' + byte % 10));
    }
    Secret::new(pin)
}

impl Admin {
    /// Creates a one-time enrollment token valid for `ttl`.
    pub async fn create_token(&self, ttl: Duration) -> Result<Secret, AdminError> {
        check_ttl(ttl, "token")?;
        let token = Secret::new(format!("lk1-{}", SecretBytes::random(24).to_hex().expose()));
        let now = now_ms();
        let expires = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.store.insert_token(&token_hash(token.expose()), now, expires).await?;
        Ok(token)
    }

    /// The command once it is final, or as it stands after `timeout` (`None`: unknown). Woken by
    /// the serving process, not by polling storage.
    pub async fn wait_result(&self, command_id: &str, timeout: Duration) -> Result<Option<ActionRecord>, AdminError> {
        match &self.waker {
            Waker::InProcess(hub) => {
                if let Ok(found) = tokio::time::timeout(timeout, wait_final(hub, self.store.as_ref(), command_id)).await
                {
                    return Ok(found?);
                }
            }
            Waker::Socket(socket) => {
                if let Some(record) = Waker::wait_socket(socket, command_id, timeout).await {
                    return Ok(Some(record));
                }
            }
        }
        Ok(action_record(self.store.as_ref(), command_id).await?)
    }

    /// Queues what the admin asks of a device and wakes it.
    pub async fn queue_action(
        &self,
        device_id: &str,
        request: &Request,
        options: ActionOptions,
    ) -> Result<Queued, AdminError> {
        check_ttl(options.ttl, "action")?;
        if let Request::Lock { message, phone } = request {
            if message.len() > limits::MESSAGE || phone.len() > limits::SHORT_TEXT {
                return Err(AdminError::Invalid("the lock-screen message or phone number is too long".into()));
            }
        }
        let device = match self.store.device(device_id).await {
            Ok(d) => d,
            Err(StoreError::UnknownDevice(_)) => {
                return Err(AdminError::Invalid(format!(
                    "unknown device {device_id}; `latchkey-server devices` lists enrolled devices"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        if matches!(device.status, DeviceStatus::Retired | DeviceStatus::Unenrolled) {
            return Err(AdminError::Invalid(format!(
                "device {device_id} is {}; it is no longer managed",
                device.status.as_str()
            )));
        }
        let reported = device.reported.clone().ok_or_else(|| {
            AdminError::Invalid(format!("device {device_id} has reported nothing yet; wait for its first check-in"))
        })?;
        let plan = request::plan(&reported.facts, request);
        let command_id = uuid::Uuid::new_v4().to_string();
        let (action, secret) = self.build(&device, &plan, request).await?;
        let warning = match predict(&device, &action) {
            None => None,
            Some((status, code, message)) if !options.force => {
                return Err(AdminError::Predicted { status, code, message });
            }
            Some((status, code, message)) => Some(format!("predicted {status} {code}: {message}")),
        };
        let now = now_ms();
        let mut command = v1::Command {
            command_id: command_id.clone(),
            device_id: device_id.to_owned(),
            issued_at_unix_ms: now,
            expires_at_unix_ms: now + i64::try_from(options.ttl.as_millis()).unwrap_or(i64::MAX),
            action: Some(action),
        };
        let passcode = secret
            .as_ref()
            .map(|(kind, value)| (*kind, self.vault.seal(value.expose().as_bytes(), &passcode_context(&command_id))));
        self.store
            .queue(NewCommand {
                command: command.clone(),
                requested: request.name().to_owned(),
                action: plan.kind.name().to_owned(),
                warning: warning.clone().unwrap_or_default(),
                passcode,
            })
            .await?;
        tracing::info!(device_id = %device_id, command_id = %command_id, action = plan.kind.name(), "action queued");
        let delivery = self.waker.hand_over(&command).await;
        latchkey_proto::scrub(&mut command);
        let (temporary_passcode, lock_pin) = match secret {
            // Never show a passcode for an action predicted to fail: `passcodes` shows it once
            // the action succeeds.
            Some((PasscodeKind::Temporary, value)) if warning.is_none() => (Some(value), None),
            Some((PasscodeKind::LockPin, value)) => (None, Some(value)),
            _ => (None, None),
        };
        Ok(Queued {
            command_id,
            requested: request.name(),
            action: plan.kind.name(),
            temporary_passcode,
            lock_pin,
            note: plan.note,
            warning,
            delivery,
        })
    }

    /// The command's action, with its secrets, as the device will receive it.
    async fn build(
        &self,
        device: &DeviceRecord,
        plan: &request::CommandPlan,
        request: &Request,
    ) -> Result<(v1::command::Action, Option<(PasscodeKind, Secret)>), AdminError> {
        let state = device.reported.as_ref().map(|r| &r.state);
        Ok(match plan.kind {
            CommandKind::ResetPasscode(scope) => {
                let flags = match request {
                    Request::ResetPasscode { flags, .. } => flags.bits(),
                    _ => 0,
                };
                let temporary = if plan.temporary_passcode {
                    let reported = state.and_then(|s| match scope {
                        Scope::Device => s.device_policy.clone(),
                        Scope::WorkProfile => s.work_profile_policy.clone(),
                    });
                    // With no policy reported, the platform's own floor (Android: 4..=16 printable).
                    let policy = reported.unwrap_or(PasscodePolicy::Android(Default::default()));
                    Some(generate::temporary_passcode(&policy).map_err(AdminError::Invalid)?)
                } else {
                    None
                };
                let wire_scope = match scope {
                    Scope::Device => v1::ResetScope::Device,
                    Scope::WorkProfile => v1::ResetScope::WorkProfile,
                };
                let action = v1::command::Action::ResetPasscode(v1::ResetPasscode {
                    scope: wire_scope as i32,
                    new_passcode: temporary.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default(),
                    flags,
                });
                (action, temporary.map(|p| (PasscodeKind::Temporary, p)))
            }
            CommandKind::RemovePasscode => {
                let sealed = self.store.escrow(&device.device_id, EscrowKind::Unlock).await?;
                let token = match sealed {
                    Some(sealed) => {
                        self.vault.open(&sealed, &escrow_context(&device.device_id, EscrowKind::Unlock))?.to_vec()
                    }
                    None => Vec::new(),
                };
                (v1::command::Action::RemovePasscode(v1::RemovePasscode { unlock_token: token }), None)
            }
            CommandKind::RemoteLock => {
                let (message, phone) = match request {
                    Request::Lock { message, phone } => (message.clone(), phone.clone()),
                    _ => (String::new(), String::new()),
                };
                let pin = plan.lock_pin.then(lock_pin);
                let action = v1::command::Action::RemoteLock(v1::RemoteLock {
                    message,
                    phone_number: phone,
                    pin: pin.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default(),
                });
                (action, pin.map(|p| (PasscodeKind::LockPin, p)))
            }
            CommandKind::ResetPin => (v1::command::Action::ResetPin(v1::ResetPin {}), None),
        })
    }

    /// Ends management of a device: its certificate is refused, its queue cancelled, its
    /// escrow and passcodes deleted, its stream closed.
    pub async fn retire(&self, device_id: &str) -> Result<(u64, Delivery), AdminError> {
        let cancelled = self.store.end_management(device_id, DeviceStatus::Retired, now_ms()).await?;
        Ok((cancelled, self.waker.close(device_id).await))
    }

    /// Replaces the escrowed unlock token (migration from another MDM, or recovery).
    pub async fn import_unlock_token(&self, device_id: &str, token: &SecretBytes) -> Result<(), AdminError> {
        if token.expose().len() < EscrowKind::Unlock.min_len() || token.expose().len() > limits::TOKEN {
            return Err(AdminError::Invalid("unlock token must be 16..=1024 bytes".into()));
        }
        let sealed = self.vault.seal(token.expose(), &escrow_context(device_id, EscrowKind::Unlock));
        self.store.set_escrow(device_id, EscrowKind::Unlock, sealed, now_ms()).await?;
        Ok(())
    }
}

/// What the device would answer, from the state it last reported; `None` when it would act.
/// What the device's own rules say about `action`, judged on what it last reported (at
/// enrollment or at a check-in since).
fn predict(device: &DeviceRecord, action: &v1::command::Action) -> Option<(&'static str, &'static str, String)> {
    let snapshot = device.snapshot()?;
    let command = v1::Command {
        command_id: String::new(),
        device_id: device.device_id.clone(),
        issued_at_unix_ms: 1,
        expires_at_unix_ms: i64::MAX,
        action: Some(action.clone()),
    };
    let platform_action = latchkey_proto::convert::action_from_wire(&command).ok()?;
    match decide(&snapshot, &platform_action) {
        Decision::Apply(_) => None,
        Decision::Refuse(outcome) => {
            let code = outcome.code.unwrap_or(ErrorCode::PlatformError);
            if outcome.status == Status::Succeeded {
                return None;
            }
            Some((outcome.status.as_str(), code.as_str(), outcome.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::CommandState;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    /// What `wait_socket` makes of one answer from a serving process that reads one request.
    async fn answered(answer: String) -> Option<ActionRecord> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (reader, mut writer) = stream.into_split();
            let mut request = String::new();
            tokio::io::BufReader::new(reader).read_line(&mut request).await.expect("request");
            writer.write_all(answer.as_bytes()).await.expect("answer");
            request
        });
        let got = Waker::wait_socket(&AdminSocket::new(path), "c1", Duration::from_secs(5)).await;
        assert_eq!(server.await.expect("server task"), "wait c1\n");
        got
    }

    #[tokio::test]
    async fn the_final_record_comes_with_the_answer() {
        let done = ActionRecord::example("c1", CommandState::Done(Status::Succeeded));
        let json = serde_json::to_string(&done).expect("json");
        assert_eq!(answered(format!("final {json}\n")).await, Some(done));
    }

    /// Anything but this command's final record sends the admin to storage instead.
    #[tokio::test]
    async fn any_other_answer_falls_back_to_storage() {
        let other =
            serde_json::to_string(&ActionRecord::example("c2", CommandState::Done(Status::Failed))).expect("json");
        let open = serde_json::to_string(&ActionRecord::example("c1", CommandState::Sent)).expect("json");
        for answer in
            ["final succeeded\n".to_owned(), "unknown\n".into(), format!("final {other}\n"), format!("final {open}\n")]
        {
            assert_eq!(answered(answer.clone()).await, None, "{answer}");
        }
    }

    #[tokio::test]
    async fn no_server_means_storage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = AdminSocket::new(dir.path().join("admin.sock"));
        assert_eq!(Waker::wait_socket(&socket, "c1", Duration::from_secs(5)).await, None);
    }
}
