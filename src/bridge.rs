//! The platform bridge (`latchkey.bridge.v1`): the OS port served out of process over a Unix
//! socket, framed as a 4-byte big-endian length and a protobuf message. [`BridgePort`] is the
//! agent's side; [`serve`] exposes any port (the simulator, in `latchkey sim bridge`) so the
//! protocol is exercised end to end; [`conformance`] is the check any bridge implementation
//! (an Android DPC, an iOS daemon) can run against itself.
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use prost::Message;

use latchkey_platform::port::EffectId;
use latchkey_platform::{
    DevicePort, LockRequest, PortError, PortSnapshot, ResetTokenState, Scope, Secret, SecretBytes,
};
use latchkey_proto::bridge::v1 as b;
use latchkey_proto::MAX_BRIDGE_FRAME;

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

/// The agent's side of the bridge: one connection per call keeps it simple and restart-proof.
pub struct BridgePort {
    socket: PathBuf,
}

impl BridgePort {
    /// A port that talks to the bridge at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    fn call(&self, op: b::bridge_request::Op) -> Result<b::bridge_response::Result, PortError> {
        let io = |e: std::io::Error| PortError::Io(format!("bridge {}: {e}", self.socket.display()));
        let mut stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(io)?;
        write_frame(&mut stream, &b::BridgeRequest { op: Some(op) }.encode_to_vec()).map_err(io)?;
        let body = read_frame(&mut stream)
            .map_err(io)?
            .ok_or_else(|| PortError::Io("bridge closed without answering".into()))?;
        let response = b::BridgeResponse::decode(body.as_slice())
            .map_err(|e| PortError::Io(format!("bridge sent a malformed response: {e}")))?;
        match response.result {
            Some(b::bridge_response::Result::Error(e)) => Err(match b::BridgeErrorKind::try_from(e.kind) {
                Ok(b::BridgeErrorKind::TokenMismatch) => PortError::TokenMismatch,
                Ok(b::BridgeErrorKind::TokenNotActive) => PortError::TokenNotActive,
                Ok(b::BridgeErrorKind::NotCompliant) => PortError::NotCompliant(e.message),
                Ok(b::BridgeErrorKind::Unsupported) => PortError::Unsupported("this call (bridge)"),
                Ok(b::BridgeErrorKind::Refused) => PortError::Refused(e.message),
                _ => PortError::Io(e.message),
            }),
            Some(other) => Ok(other),
            None => Err(PortError::Io("bridge sent an empty response".into())),
        }
    }

    fn done(&self, op: b::bridge_request::Op) -> Result<(), PortError> {
        match self.call(op)? {
            b::bridge_response::Result::Done(_) => Ok(()),
            _ => Err(PortError::Io("bridge answered with the wrong message".into())),
        }
    }
}

fn wrong() -> PortError {
    PortError::Io("bridge answered with the wrong message".into())
}

impl DevicePort for BridgePort {
    fn snapshot(&mut self) -> Result<PortSnapshot, PortError> {
        match self.call(b::bridge_request::Op::Snapshot(b::SnapshotRequest {}))? {
            b::bridge_response::Result::Snapshot(s) => {
                serde_json::from_str(&s.json).map_err(|e| PortError::Io(format!("bridge snapshot: {e}")))
            }
            _ => Err(wrong()),
        }
    }

    fn set_credential(&mut self, scope: Scope, passcode: &Secret, effect: EffectId<'_>) -> Result<(), PortError> {
        self.done(b::bridge_request::Op::SetCredential(b::SetCredentialRequest {
            scope: scope_to_wire(scope),
            passcode: passcode.expose().to_owned(),
            flags: 0,
            command_id: effect.0.to_owned(),
            reset_token: Vec::new(),
        }))
    }

    fn reset_with_token(
        &mut self,
        scope: Scope,
        passcode: &Secret,
        token: &SecretBytes,
        effect: EffectId<'_>,
    ) -> Result<(), PortError> {
        // Sent along, as `resetPasswordWithToken` takes it, so a bridge that restarted and lost
        // its own copy still works.
        self.done(b::bridge_request::Op::ResetWithToken(b::SetCredentialRequest {
            scope: scope_to_wire(scope),
            passcode: passcode.expose().to_owned(),
            flags: 0,
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

    fn lock_now(&mut self, request: &LockRequest, effect: EffectId<'_>) -> Result<(), PortError> {
        self.done(b::bridge_request::Op::LockNow(b::LockRequest {
            message: request.message.clone(),
            phone_number: request.phone_number.clone(),
            command_id: effect.0.to_owned(),
        }))
    }

    fn generate_pin(&mut self, effect: EffectId<'_>) -> Result<Secret, PortError> {
        match self
            .call(b::bridge_request::Op::GeneratePin(b::GeneratePinRequest { command_id: effect.0.to_owned() }))?
        {
            b::bridge_response::Result::GeneratedPin(p) => Ok(Secret::new(p.pin)),
            _ => Err(wrong()),
        }
    }

    fn set_reset_token(&mut self, token: &SecretBytes) -> Result<ResetTokenState, PortError> {
        match self.call(b::bridge_request::Op::SetResetToken(b::TokenRequest {
            token: token.expose().to_vec(),
            command_id: String::new(),
        }))? {
            b::bridge_response::Result::ResetToken(a) => ResetTokenState::parse(&a.state).ok_or_else(wrong),
            _ => Err(wrong()),
        }
    }

    fn unlock_token(&mut self) -> Result<Option<SecretBytes>, PortError> {
        match self.call(b::bridge_request::Op::UnlockToken(b::UnlockTokenRequest {}))? {
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
        match self.call(b::bridge_request::Op::EffectApplied(b::EffectQuery { command_id: command_id.to_owned() }))? {
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
    match e {
        PortError::TokenMismatch => error(K::TokenMismatch, e.to_string()),
        PortError::TokenNotActive => error(K::TokenNotActive, e.to_string()),
        PortError::NotCompliant(_) => error(K::NotCompliant, e.to_string()),
        PortError::Unsupported(_) => error(K::Unsupported, e.to_string()),
        PortError::Refused(_) => error(K::Refused, e.to_string()),
        PortError::Io(_) => error(K::Unspecified, e.to_string()),
    }
}

fn scope_from_wire(value: i32) -> Scope {
    if value == b::Scope::WorkProfile as i32 {
        Scope::WorkProfile
    } else {
        Scope::Device
    }
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
    let result = match request.op {
        None => error(b::BridgeErrorKind::Unspecified, "empty request".into()),
        Some(Op::Snapshot(_)) => match port.snapshot() {
            Ok(s) => match serde_json::to_string(&s) {
                Ok(json) => Res::Snapshot(b::Snapshot { json }),
                Err(e) => error(b::BridgeErrorKind::Unspecified, e.to_string()),
            },
            Err(e) => port_error(e),
        },
        Some(Op::SetCredential(r)) => {
            done(port.set_credential(scope_from_wire(r.scope), &Secret::new(r.passcode), EffectId(&r.command_id)))
        }
        Some(Op::ResetWithToken(r)) => {
            // The agent's copy when it sent one, else the one registered through this bridge.
            let sent = Some(SecretBytes::new(r.reset_token)).filter(|t| !t.is_empty());
            match sent.as_ref().or(held_reset_token.as_ref()) {
                Some(token) => done(port.reset_with_token(
                    scope_from_wire(r.scope),
                    &Secret::new(r.passcode),
                    token,
                    EffectId(&r.command_id),
                )),
                None => port_error(PortError::TokenNotActive),
            }
        }
        Some(Op::ClearPasscode(r)) => done(port.clear_passcode(&SecretBytes::new(r.token), EffectId(&r.command_id))),
        Some(Op::LockNow(r)) => done(
            port.lock_now(&LockRequest { message: r.message, phone_number: r.phone_number }, EffectId(&r.command_id)),
        ),
        Some(Op::SetResetToken(r)) => {
            let token = SecretBytes::new(r.token);
            match port.set_reset_token(&token) {
                Ok(state) => {
                    *held_reset_token = Some(token);
                    Res::ResetToken(b::ResetTokenAnswer { state: state.as_str().into() })
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
            Ok(pin) => Res::GeneratedPin(b::GeneratedPinResponse { pin: pin.expose().to_owned() }),
            Err(e) => port_error(e),
        },
    };
    b::BridgeResponse { result: Some(result) }
}

/// Serves `port` on `socket` (0600) until `stop` returns true (checked between connections).
pub fn serve(socket: &Path, mut port: Box<dyn DevicePort>, stop: &dyn Fn() -> bool) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut held = None;
    for stream in listener.incoming() {
        if stop() {
            break;
        }
        let Ok(mut stream) = stream else { continue };
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

/// Runs the bridge conformance checks against a bridge. They change the device (a lock, a
/// reset token registration, effects under `conformance-*` ids): run them on a test device.
pub fn conformance(socket: &Path) -> Vec<Finding> {
    let mut port = BridgePort::new(socket);
    let mut findings = Vec::new();
    let mut check = |name: &'static str, result: Result<String, String>| {
        findings.push(match result {
            Ok(detail) => Finding { check: name, ok: true, detail },
            Err(detail) => Finding { check: name, ok: false, detail },
        })
    };
    let snapshot = port.snapshot();
    check(
        "snapshot answers with facts and state",
        snapshot.as_ref().map(|s| format!("{:?} {:?}", s.facts.platform, s.facts.mode)).map_err(|e| e.to_string()),
    );
    let Ok(snapshot) = snapshot else {
        return findings;
    };
    check(
        "unknown effect is reported as not applied or unknown",
        match port.effect_applied("conformance-never-issued") {
            Ok(Some(true)) => Err("claims an effect that never happened".into()),
            Ok(_) => Ok("ok".into()),
            Err(e) => Err(e.to_string()),
        },
    );
    check(
        "lock is applied and recorded once",
        port.lock_now(&LockRequest::default(), EffectId("conformance-lock")).map_err(|e| e.to_string()).and_then(
            |()| match port.effect_applied("conformance-lock") {
                Ok(Some(false)) => Err("lock not recorded as applied".into()),
                Ok(_) => Ok("locked".into()),
                Err(e) => Err(e.to_string()),
            },
        ),
    );
    check(
        "a wrong unlock token is refused as a mismatch",
        match port.clear_passcode(&SecretBytes::random(32), EffectId("conformance-clear")) {
            Err(PortError::TokenMismatch) | Err(PortError::Unsupported(_)) => Ok("refused".into()),
            Ok(()) => Err("cleared the passcode with a random token".into()),
            Err(e) => Err(format!("unexpected error: {e}")),
        },
    );
    if snapshot.state.reset_token != ResetTokenState::NotApplicable {
        check(
            "a short reset token is refused",
            match port.set_reset_token(&SecretBytes::random(8)) {
                Err(_) => Ok("refused".into()),
                Ok(_) => Err("accepted an 8-byte reset token".into()),
            },
        );
    }
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
