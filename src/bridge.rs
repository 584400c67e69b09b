//! The platform bridge (`latchkey.bridge.v1`): the OS port served out of process over a Unix
//! socket, framed as a 4-byte big-endian length and a protobuf message. [`BridgePort`] is the
//! agent's side; [`serve`] exposes any port (the simulator, in `latchkey sim bridge`) so the
//! protocol is exercised end to end; [`conformance`] is the check any bridge implementation (an
//! Android DPC, an iOS daemon) can run against itself.
//!
//! Every answer is typed (`bridge.proto`): facts, credential state, policies and token states are
//! messages and enums, so a bridge written against the proto alone reports exactly what the
//! agent checks in. A failed call says whether the device may have changed
//! (`BRIDGE_ERROR_KIND_INDETERMINATE`) — the agent then asks `effect_applied` instead of
//! guessing.
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;

use latchkey_platform::port::EffectId;
use latchkey_platform::{
    DevicePort, LockReport, LockRequest, PinReport, Platform, PortError, PortSnapshot, ResetFlags, ResetTokenState,
    Scope, Secret, SecretBytes,
};
use latchkey_proto::bridge::v1 as b;
use latchkey_proto::{convert, MAX_BRIDGE_FRAME};

/// How long the agent waits for a bridge answer; under the systemd watchdog period.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_BRIDGE_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bridge frame of {len} bytes exceeds {MAX_BRIDGE_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes one frame.
pub fn write_frame(stream: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn scope_to_wire(scope: Scope) -> i32 {
    match scope {
        Scope::Device => b::Scope::Device as i32,
        Scope::WorkProfile => b::Scope::WorkProfile as i32,
    }
}

fn scope_from_wire(value: i32) -> Scope {
    if value == b::Scope::WorkProfile as i32 {
        Scope::WorkProfile
    } else {
        Scope::Device
    }
}

/// The agent's side of the bridge: one connection per call keeps it simple and restart-proof.
pub struct BridgePort {
    socket: PathBuf,
}

fn wrong() -> PortError {
    PortError::Unavailable("bridge answered with the wrong message".into())
}

impl BridgePort {
    /// A port that talks to the bridge at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    /// One call. `effectful` calls that fail after the request went out may have acted.
    fn call(&self, op: b::bridge_request::Op, effectful: bool) -> Result<b::bridge_response::Result, PortError> {
        let socket = self.socket.display().to_string();
        let before = |e: std::io::Error| PortError::Unavailable(format!("bridge {socket}: {e}"));
        let mut stream = UnixStream::connect(&self.socket).map_err(before)?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(before)?;
        stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(before)?;
        write_frame(&mut stream, &b::BridgeRequest { op: Some(op) }.encode_to_vec()).map_err(before)?;
        // From here the bridge may have acted.
        let after = |e: String| {
            if effectful {
                PortError::Indeterminate(format!("bridge {socket}: {e}"))
            } else {
                PortError::Unavailable(format!("bridge {socket}: {e}"))
            }
        };
        let body = read_frame(&mut stream)
            .map_err(|e| after(e.to_string()))?
            .ok_or_else(|| after("closed without answering".into()))?;
        let response =
            b::BridgeResponse::decode(body.as_slice()).map_err(|e| after(format!("malformed response ({e})")))?;
        match response.result {
            Some(b::bridge_response::Result::Error(e)) => Err(match b::BridgeErrorKind::try_from(e.kind) {
                Ok(b::BridgeErrorKind::TokenMismatch) => PortError::TokenMismatch,
                Ok(b::BridgeErrorKind::TokenNotActive) => PortError::TokenNotActive,
                Ok(b::BridgeErrorKind::NotCompliant) => PortError::NotCompliant(e.message),
                Ok(b::BridgeErrorKind::Unsupported) => PortError::Unsupported("this call (bridge)"),
                Ok(b::BridgeErrorKind::Refused) => PortError::Refused(e.message),
                Ok(b::BridgeErrorKind::Indeterminate) => PortError::Indeterminate(e.message),
                _ => PortError::Unavailable(e.message),
            }),
            Some(other) => Ok(other),
            None => Err(after("empty response".into())),
        }
    }

    fn done(&self, op: b::bridge_request::Op) -> Result<(), PortError> {
        match self.call(op, true)? {
            b::bridge_response::Result::Done(_) => Ok(()),
            _ => Err(PortError::Indeterminate("bridge answered with the wrong message".into())),
        }
    }
}

impl DevicePort for BridgePort {
    fn snapshot(&mut self) -> Result<PortSnapshot, PortError> {
        match self.call(b::bridge_request::Op::Snapshot(b::SnapshotRequest {}), false)? {
            b::bridge_response::Result::Snapshot(s) => {
                convert::snapshot_from_bridge(&s).map_err(|e| PortError::Unavailable(format!("bridge snapshot: {e}")))
            }
            _ => Err(wrong()),
        }
    }

    fn set_credential(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        flags: ResetFlags,
        effect: EffectId<'_>,
    ) -> Result<(), PortError> {
        self.done(b::bridge_request::Op::SetCredential(b::SetCredentialRequest {
            scope: scope_to_wire(scope),
            passcode: passcode.expose().to_owned(),
            flags: flags.bits(),
            command_id: effect.0.to_owned(),
            reset_token: Vec::new(),
        }))
    }

    fn reset_with_token(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        token: &SecretBytes,
        flags: ResetFlags,
        effect: EffectId<'_>,
    ) -> Result<(), PortError> {
        // Sent along, as `resetPasswordWithToken` takes it, so a bridge that restarted and lost
        // its own copy still works.
        self.done(b::bridge_request::Op::ResetWithToken(b::SetCredentialRequest {
            scope: scope_to_wire(scope),
            passcode: passcode.expose().to_owned(),
            flags: flags.bits(),
            command_id: effect.0.to_owned(),
            reset_token: token.expose().to_vec(),
        }))
    }

    fn clear_passcode(&mut self, unlock_token: &SecretBytes, effect: EffectId<'_>) -> Result<(), PortError> {
        self.done(b::bridge_request::Op::ClearPasscode(b::TokenRequest {
            token: unlock_token.expose().to_vec(),
            command_id: effect.0.to_owned(),
        }))
    }

    fn lock_now(&mut self, request: &LockRequest, effect: EffectId<'_>) -> Result<LockReport, PortError> {
        let op = b::bridge_request::Op::LockNow(b::LockRequest {
            message: request.message.clone(),
            phone_number: request.phone_number.clone(),
            command_id: effect.0.to_owned(),
            pin: request.pin.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default(),
        });
        match self.call(op, true)? {
            b::bridge_response::Result::Lock(answer) => Ok(LockReport {
                locked: answer.locked,
                message_result: convert::message_result_from_bridge(answer.message_result)
                    .map_err(|e| PortError::Indeterminate(format!("bridge lock answer: {e}")))?,
            }),
            _ => Err(PortError::Indeterminate("bridge answered the lock with the wrong message".into())),
        }
    }

    fn generate_pin(&mut self, effect: EffectId<'_>) -> Result<PinReport, PortError> {
        let op = b::bridge_request::Op::GeneratePin(b::GeneratePinRequest { command_id: effect.0.to_owned() });
        match self.call(op, true)? {
            b::bridge_response::Result::GeneratedPin(p) => Ok(PinReport { pin: Secret::new(p.pin), locked: p.locked }),
            _ => Err(PortError::Indeterminate("bridge answered the PIN reset with the wrong message".into())),
        }
    }

    fn set_reset_token(&mut self, token: &SecretBytes) -> Result<ResetTokenState, PortError> {
        let op = b::bridge_request::Op::SetResetToken(b::TokenRequest {
            token: token.expose().to_vec(),
            command_id: String::new(),
        });
        match self.call(op, true)? {
            b::bridge_response::Result::ResetToken(a) => convert::reset_token_from_wire(a.state)
                .map_err(|e| PortError::Unavailable(format!("bridge reset-token answer: {e}"))),
            _ => Err(wrong()),
        }
    }

    fn unlock_token(&mut self) -> Result<Option<SecretBytes>, PortError> {
        match self.call(b::bridge_request::Op::UnlockToken(b::UnlockTokenRequest {}), false)? {
            b::bridge_response::Result::Token(t) if t.token.is_empty() => Ok(None),
            b::bridge_response::Result::Token(t) => Ok(Some(SecretBytes::new(t.token))),
            _ => Err(wrong()),
        }
    }

    fn notify(&mut self, id: &str, text: Option<&str>) -> Result<(), PortError> {
        self.done(b::bridge_request::Op::Notify(b::NotifyRequest {
            id: id.to_owned(),
            text: text.unwrap_or_default().to_owned(),
        }))
    }

    fn effect_applied(&mut self, command_id: &str) -> Result<Option<bool>, PortError> {
        let op = b::bridge_request::Op::EffectApplied(b::EffectQuery { command_id: command_id.to_owned() });
        match self.call(op, false)? {
            b::bridge_response::Result::Effect(a) if a.unknown => Ok(None),
            b::bridge_response::Result::Effect(a) => Ok(Some(a.applied)),
            _ => Err(wrong()),
        }
    }
}

fn error(kind: b::BridgeErrorKind, message: String) -> b::bridge_response::Result {
    b::bridge_response::Result::Error(b::BridgeError { kind: kind as i32, message })
}

fn port_error(e: PortError) -> b::bridge_response::Result {
    use b::BridgeErrorKind as K;
    let kind = match &e {
        PortError::TokenMismatch => K::TokenMismatch,
        PortError::TokenNotActive => K::TokenNotActive,
        PortError::NotCompliant(_) => K::NotCompliant,
        PortError::Unsupported(_) => K::Unsupported,
        PortError::Refused(_) => K::Refused,
        PortError::Unavailable(_) => K::Unavailable,
        PortError::Indeterminate(_) => K::Indeterminate,
    };
    error(kind, e.to_string())
}

/// Answers one request with `port`. The bridge side keeps the registered reset token itself.
pub fn answer(
    port: &mut dyn DevicePort,
    held_reset_token: &mut Option<SecretBytes>,
    request: b::BridgeRequest,
) -> b::BridgeResponse {
    use b::bridge_request::Op;
    use b::bridge_response::Result as Res;
    let done = |r: Result<(), PortError>| r.map(|()| Res::Done(b::Done {})).unwrap_or_else(port_error);
    let flags =
        |bits: u32| ResetFlags::from_bits(bits).map_err(|u| PortError::Refused(format!("unknown reset flags {u:#x}")));
    let result = match request.op {
        None => error(b::BridgeErrorKind::Unspecified, "empty request".into()),
        Some(Op::Snapshot(_)) => match port.snapshot() {
            Ok(s) => Res::Snapshot(convert::snapshot_to_bridge(&s)),
            Err(e) => port_error(e),
        },
        Some(Op::SetCredential(r)) => done(flags(r.flags).and_then(|f| {
            port.set_credential(scope_from_wire(r.scope), &Secret::new(r.passcode), f, EffectId(&r.command_id))
        })),
        Some(Op::ResetWithToken(r)) => {
            // The agent's copy when it sent one, else the one registered through this bridge.
            let sent = Some(SecretBytes::new(r.reset_token)).filter(|t| !t.is_empty());
            match sent.as_ref().or(held_reset_token.as_ref()) {
                Some(token) => done(flags(r.flags).and_then(|f| {
                    port.reset_with_token(
                        scope_from_wire(r.scope),
                        &Secret::new(r.passcode),
                        token,
                        f,
                        EffectId(&r.command_id),
                    )
                })),
                None => port_error(PortError::TokenNotActive),
            }
        }
        Some(Op::ClearPasscode(r)) => done(port.clear_passcode(&SecretBytes::new(r.token), EffectId(&r.command_id))),
        Some(Op::LockNow(r)) => {
            let request = LockRequest {
                message: r.message,
                phone_number: r.phone_number,
                pin: (!r.pin.is_empty()).then(|| Secret::new(r.pin)),
            };
            match port.lock_now(&request, EffectId(&r.command_id)) {
                Ok(report) => Res::Lock(b::LockAnswer {
                    locked: report.locked,
                    message_result: convert::message_result_to_bridge(report.message_result) as i32,
                }),
                Err(e) => port_error(e),
            }
        }
        Some(Op::SetResetToken(r)) => {
            let token = SecretBytes::new(r.token);
            match port.set_reset_token(&token) {
                Ok(state) => {
                    *held_reset_token = Some(token);
                    Res::ResetToken(b::ResetTokenAnswer { state: convert::reset_token_to_wire(state) as i32 })
                }
                Err(e) => port_error(e),
            }
        }
        Some(Op::UnlockToken(_)) => match port.unlock_token() {
            Ok(t) => Res::Token(b::TokenResponse { token: t.map(|t| t.expose().to_vec()).unwrap_or_default() }),
            Err(e) => port_error(e),
        },
        Some(Op::Notify(r)) => done(port.notify(&r.id, Some(r.text.as_str()).filter(|t| !t.is_empty()))),
        Some(Op::EffectApplied(q)) => match port.effect_applied(&q.command_id) {
            Ok(Some(applied)) => Res::Effect(b::EffectAnswer { applied, unknown: false }),
            Ok(None) => Res::Effect(b::EffectAnswer { applied: false, unknown: true }),
            Err(e) => port_error(e),
        },
        Some(Op::GeneratePin(r)) => match port.generate_pin(EffectId(&r.command_id)) {
            Ok(report) => Res::GeneratedPin(b::GeneratedPinResponse {
                pin: report.pin.expose().to_owned(),
                locked: report.locked,
            }),
            Err(e) => port_error(e),
        },
    };
    b::BridgeResponse { result: Some(result) }
}

/// Serves `port` on `socket` (0600 from the start) until `stop` returns true (checked between
/// connections).
pub fn serve(socket: &Path, mut port: Box<dyn DevicePort>, stop: &dyn Fn() -> bool) -> std::io::Result<()> {
    let listener: UnixListener = latchkey_common::socket::bind_private_std(socket)?;
    let mut held = None;
    let mut pause = Duration::from_millis(5);
    for stream in listener.incoming() {
        if stop() {
            break;
        }
        let mut stream = match stream {
            Ok(s) => {
                pause = Duration::from_millis(5);
                s
            }
            Err(e) => {
                // Out of descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "bridge: accept failed");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        loop {
            let body = match read_frame(&mut stream) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bridge: dropping a connection");
                    break;
                }
            };
            let response = match b::BridgeRequest::decode(body.as_slice()) {
                Ok(request) => answer(port.as_mut(), &mut held, request),
                Err(e) => b::BridgeResponse {
                    result: Some(error(b::BridgeErrorKind::Unspecified, format!("malformed request: {e}"))),
                },
            };
            if write_frame(&mut stream, &response.encode_to_vec()).is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// A conformance finding.
#[derive(Debug)]
pub struct Finding {
    /// The check.
    pub check: &'static str,
    /// Passed.
    pub ok: bool,
    /// Detail.
    pub detail: String,
}

/// A raw exchange, for checks that look at the typed answer itself.
fn raw(socket: &Path, op: Option<b::bridge_request::Op>) -> Result<b::BridgeResponse, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
    write_frame(&mut stream, &b::BridgeRequest { op }.encode_to_vec()).map_err(|e| e.to_string())?;
    let body = read_frame(&mut stream).map_err(|e| e.to_string())?.ok_or("closed without answering")?;
    b::BridgeResponse::decode(body.as_slice()).map_err(|e| format!("undecodable answer: {e}"))
}

/// Runs the conformance checks against a bridge. They change the device (a lock, a reset token
/// registration, effects under `conformance-*` ids): run them on a test device.
pub fn conformance(socket: &Path) -> Vec<Finding> {
    let mut port = BridgePort::new(socket);
    let mut findings = Vec::new();
    let mut check = |name: &'static str, result: Result<String, String>| {
        findings.push(match result {
            Ok(detail) => Finding { check: name, ok: true, detail },
            Err(detail) => Finding { check: name, ok: false, detail },
        })
    };
    // The snapshot is typed: facts with a platform and a mode, a defined reset-token state,
    // policies with defined enums. Checked on the raw message, then through the agent's mapping.
    let typed = raw(socket, Some(b::bridge_request::Op::Snapshot(b::SnapshotRequest {})));
    check(
        "snapshot is a typed Snapshot message with facts and credential state",
        typed.and_then(|r| match r.result {
            Some(b::bridge_response::Result::Snapshot(s)) => convert::snapshot_from_bridge(&s)
                .map(|p| format!("{} {} ({})", p.facts.platform.as_str(), p.facts.os_version, p.facts.mode.as_str()))
                .map_err(|e| format!("the snapshot does not map: {e}")),
            other => Err(format!("answered {other:?} instead of a Snapshot")),
        }),
    );
    let Ok(snapshot) = port.snapshot() else {
        return findings;
    };
    let android_tokens = snapshot.facts.platform.is_android_family() && snapshot.facts.api_level >= 26;
    check(
        "reset-token state fits the platform (unspecified outside Android 8+)",
        match (android_tokens, snapshot.state.reset_token) {
            (false, ResetTokenState::NotApplicable)
            | (true, ResetTokenState::None | ResetTokenState::PendingUser | ResetTokenState::Active) => {
                Ok(snapshot.state.reset_token.as_str().into())
            }
            (_, state) => Err(format!("reported {} on {}", state.as_str(), snapshot.facts.platform.as_str())),
        },
    );
    check(
        "unknown effect is reported as not applied or unknown",
        match port.effect_applied("conformance-never-issued") {
            Ok(Some(true)) => Err("claims an effect that never happened".into()),
            Ok(_) => Ok("ok".into()),
            Err(e) => Err(e.to_string()),
        },
    );
    let pin = (snapshot.facts.platform == Platform::Macos).then(|| Secret::from("482913"));
    let lock = LockRequest { message: "conformance".into(), phone_number: String::new(), pin };
    check(
        "lock answers with a typed LockAnswer and is recorded once",
        match port.lock_now(&lock, EffectId("conformance-lock")) {
            Ok(report) => {
                let apple = matches!(snapshot.facts.platform, Platform::Ios | Platform::Macos);
                if report.message_result.is_some() != apple {
                    Err(format!("MessageResult {:?} on {}", report.message_result, snapshot.facts.platform.as_str()))
                } else {
                    match port.effect_applied("conformance-lock") {
                        Ok(Some(false)) if report.locked => Err("lock not recorded as applied".into()),
                        Ok(_) => Ok(format!("locked: {}", report.locked)),
                        Err(e) => Err(e.to_string()),
                    }
                }
            }
            Err(PortError::Refused(why)) => Ok(format!("refused: {why}")),
            Err(PortError::Unsupported(what)) => Ok(format!("not supported: {what}")),
            Err(e) => Err(e.to_string()),
        },
    );
    check(
        "a wrong unlock token is refused as a mismatch",
        match port.clear_passcode(&SecretBytes::random(32), EffectId("conformance-clear")) {
            Err(PortError::TokenMismatch) | Err(PortError::Unsupported(_)) | Err(PortError::Refused(_)) => {
                Ok("refused".into())
            }
            Ok(()) => Err("cleared the passcode with a random token".into()),
            Err(e) => Err(format!("unexpected error: {e}")),
        },
    );
    if android_tokens {
        check(
            "a short reset token is refused",
            match port.set_reset_token(&SecretBytes::random(8)) {
                Err(_) => Ok("refused".into()),
                Ok(_) => Err("accepted an 8-byte reset token".into()),
            },
        );
        check(
            "reset-token registration answers a typed state",
            match port.set_reset_token(&SecretBytes::random(32)) {
                Ok(ResetTokenState::NotApplicable) => Err("answered UNSPECIFIED for an Android 8+ device".into()),
                Ok(state) => Ok(state.as_str().into()),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    check(
        "an empty request is answered with an error",
        match raw(socket, None) {
            Ok(b::BridgeResponse { result: Some(b::bridge_response::Result::Error(_)) }) => Ok("error response".into()),
            Ok(other) => Err(format!("answered {other:?}")),
            Err(e) => Err(e),
        },
    );
    check(
        "a malformed frame does not crash the bridge",
        (|| -> std::io::Result<String> {
            let mut stream = UnixStream::connect(socket)?;
            write_frame(&mut stream, &[0xff, 0xff, 0xff])?;
            let body = read_frame(&mut stream)?.ok_or_else(|| std::io::Error::other("closed"))?;
            let response = b::BridgeResponse::decode(body.as_slice()).map_err(std::io::Error::other)?;
            match response.result {
                Some(b::bridge_response::Result::Error(_)) => Ok("error response".into()),
                _ => Err(std::io::Error::other("answered a malformed request with success")),
            }
        })()
        .map_err(|e| e.to_string()),
    );
    check("snapshot still answers afterwards", port.snapshot().map(|_| "ok".into()).map_err(|e| e.to_string()));
    findings
}
