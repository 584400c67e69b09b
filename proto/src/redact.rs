//! `Debug` for secret-bearing messages: every secret field prints as `<redacted>` (or its
//! emptiness), so a message can be logged with `?msg` without leaking a passcode or token.
use std::fmt;

use crate::bridge::v1 as b;
use crate::v1;

const REDACTED: &str = "<redacted>";

/// Shows only whether a secret is present.
fn secret<T: AsRef<[u8]>>(value: &T) -> &'static str {
    if value.as_ref().is_empty() {
        "<empty>"
    } else {
        REDACTED
    }
}

impl fmt::Debug for v1::EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("enrollment_token", &secret(&self.enrollment_token))
            .field("csr_der_len", &self.csr_der.len())
            .field("device_facts", &self.device_facts)
            .finish()
    }
}

impl fmt::Debug for v1::UnlockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockToken").field("token", &secret(&self.token)).finish()
    }
}

impl fmt::Debug for v1::ResetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetToken").field("token", &secret(&self.token)).finish()
    }
}

impl fmt::Debug for v1::ResetPasscode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetPasscode")
            .field("scope", &self.scope)
            .field("new_passcode", &secret(&self.new_passcode))
            .field("flags", &self.flags)
            .finish()
    }
}

impl fmt::Debug for v1::RemovePasscode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemovePasscode").field("unlock_token", &secret(&self.unlock_token)).finish()
    }
}

impl fmt::Debug for v1::RemoteLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteLock")
            .field("message", &self.message)
            .field("phone_number", &self.phone_number)
            .field("pin", &secret(&self.pin))
            .finish()
    }
}

impl fmt::Debug for v1::CommandResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandResult")
            .field("command_id", &self.command_id)
            .field("status", &self.status)
            .field("error_code", &self.error_code)
            .field("message", &self.message)
            .field("outputs", &self.outputs)
            .field("generated_pin", &secret(&self.generated_pin))
            .field("finished_at_unix_ms", &self.finished_at_unix_ms)
            .finish()
    }
}

impl fmt::Debug for b::SetCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetCredentialRequest")
            .field("scope", &self.scope)
            .field("passcode", &secret(&self.passcode))
            .field("flags", &self.flags)
            .field("command_id", &self.command_id)
            .field("reset_token", &secret(&self.reset_token))
            .finish()
    }
}

impl fmt::Debug for b::TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("token", &secret(&self.token))
            .field("command_id", &self.command_id)
            .finish()
    }
}

impl fmt::Debug for b::TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse").field("token", &secret(&self.token)).finish()
    }
}

impl fmt::Debug for b::GeneratedPinResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedPinResponse").field("pin", &secret(&self.pin)).field("locked", &self.locked).finish()
    }
}

impl fmt::Debug for b::LockRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockRequest")
            .field("message", &self.message)
            .field("phone_number", &self.phone_number)
            .field("command_id", &self.command_id)
            .field("pin", &secret(&self.pin))
            .finish()
    }
}

/// Zeroes the secrets a wire command carries (prost types do not zero themselves on drop).
pub fn scrub(command: &mut v1::Command) {
    use zeroize::Zeroize;
    match &mut command.action {
        Some(v1::command::Action::ResetPasscode(r)) => r.new_passcode.zeroize(),
        Some(v1::command::Action::RemovePasscode(r)) => r.unlock_token.zeroize(),
        Some(v1::command::Action::RemoteLock(l)) => l.pin.zeroize(),
        Some(v1::command::Action::ResetPin(_) | v1::command::Action::Unsupported(_)) | None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_empties_every_secret_field() {
        let secret = "S3cret";
        let mut commands = [
            v1::command::Action::ResetPasscode(v1::ResetPasscode { new_passcode: secret.into(), ..Default::default() }),
            v1::command::Action::RemovePasscode(v1::RemovePasscode { unlock_token: secret.into() }),
            v1::command::Action::RemoteLock(v1::RemoteLock { pin: secret.into(), ..Default::default() }),
        ]
        .map(|action| v1::Command { action: Some(action), ..Default::default() });
        for command in &mut commands {
            scrub(command);
            let left = match &command.action {
                Some(v1::command::Action::ResetPasscode(r)) => r.new_passcode.len(),
                Some(v1::command::Action::RemovePasscode(r)) => r.unlock_token.len(),
                Some(v1::command::Action::RemoteLock(l)) => l.pin.len(),
                _ => unreachable!("built above"),
            };
            assert_eq!(left, 0, "{command:?}");
        }
    }

    #[test]
    fn secret_fields_never_print() {
        let canary = "CANARY-7f3a";
        let rendered = [
            format!("{:?}", v1::ResetPasscode { new_passcode: canary.into(), ..Default::default() }),
            format!("{:?}", v1::RemovePasscode { unlock_token: canary.into() }),
            format!("{:?}", v1::RemoteLock { pin: canary.into(), ..Default::default() }),
            format!("{:?}", v1::CommandResult { generated_pin: canary.into(), ..Default::default() }),
            format!("{:?}", v1::EnrollRequest { enrollment_token: canary.into(), ..Default::default() }),
            format!("{:?}", v1::UnlockToken { token: canary.into() }),
            format!("{:?}", v1::ResetToken { token: canary.into() }),
            format!("{:?}", b::SetCredentialRequest { passcode: canary.into(), ..Default::default() }),
            format!("{:?}", b::TokenRequest { token: canary.into(), ..Default::default() }),
            format!("{:?}", b::TokenResponse { token: canary.into() }),
            format!("{:?}", b::GeneratedPinResponse { pin: canary.into(), locked: true }),
            format!("{:?}", b::LockRequest { pin: canary.into(), ..Default::default() }),
        ];
        for line in rendered {
            assert!(!line.contains(canary), "secret leaked: {line}");
            assert!(line.contains(REDACTED), "no redaction marker: {line}");
        }
    }
}
