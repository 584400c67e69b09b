//! The plist messages of Apple's MDM protocol, built and read without I/O.
//!
//! Check-in (`PUT` to the check-in URL, `Content-Type: application/x-apple-aspen-mdm-checkin`):
//! `Authenticate`, `TokenUpdate`, `CheckOut`. Command loop (`PUT` to the server URL): `Idle`,
//! then one result per command, each answered with the next command or an empty body.
//!
//! Results: Latchkey's `SUCCEEDED` is `Acknowledged` (with DeviceLock's `MessageResult`,
//! device.lock.yaml `responsekeys`); every refusal and failure — "cannot tell" included — is
//! `Error` with an `ErrorChain` whose entry carries Latchkey's error code and the admin message.
//! `NotNow` means "retry later" and Apple's devices never answer it for the commands this agent
//! executes: ClearPasscode and DeviceLock run even while the device is locked (the legacy MDM
//! Protocol Reference lists both among the commands that never return NotNow; the current
//! "Handling NotNow status responses" article names only conditions such as the first unlock
//! after boot — our reading). So a Latchkey `NOT_NOW` (nothing was applied: the journal or the
//! port was unavailable) is not sent at all: the command stays outstanding at the server, which
//! hands it out again on the next `Idle`, exactly as for a device that has not got to it yet.
use plist::{Dictionary, Value};
use zeroize::{Zeroize, Zeroizing};

use latchkey_platform::{DeviceFacts, ErrorCode, Platform, SecretBytes};
use latchkey_proto::v1;

use super::Enrollment;

/// Content type of check-in messages.
pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";
/// Content type of the command loop.
pub const COMMAND_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm";
/// The `ErrorDomain` of errors this agent reports.
pub const ERROR_DOMAIN: &str = "LatchkeyErrorDomain";

fn xml(dict: &Dictionary) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(512));
    // Writing a dictionary into memory cannot fail.
    if let Err(e) = plist::to_writer_xml(&mut *out, dict) {
        tracing::error!(error = %e, "encoding a plist");
    }
    out
}

fn base(message_type: &str, e: &Enrollment, id: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), message_type.into());
    d.insert("Topic".into(), e.topic.clone().into());
    d.insert(e.id_key().into(), id.into());
    d
}

/// `Authenticate` (authenticate.yaml): DeviceName, Model and ModelName are macOS-only keys;
/// OSVersion and ProductName need the device-information right; serial numbers and IMEI are
/// forbidden in User Enrollment and not known to this agent anyway.
pub fn authenticate(e: &Enrollment, id: &str, facts: &DeviceFacts, hostname: &str) -> Zeroizing<Vec<u8>> {
    let mut d = base("Authenticate", e, id);
    if e.platform == Platform::Macos {
        d.insert("DeviceName".into(), hostname.into());
        d.insert("Model".into(), facts.model.clone().into());
        d.insert("ModelName".into(), facts.model.clone().into());
    }
    if e.user_enrollment || e.access_rights & 16 != 0 {
        d.insert("OSVersion".into(), facts.os_version.clone().into());
        if !facts.model.is_empty() {
            d.insert("ProductName".into(), facts.model.clone().into());
        }
    }
    xml(&d)
}

/// The push token and PushMagic this device presents. There is no APNs connection here (push is
/// out of scope: the agent polls), so both are derived from the enrollment id: stable for the
/// life of the enrollment, as Apple's are, and meaningless to APNs.
pub fn push_identity(id: &str) -> (Vec<u8>, String) {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("latchkey-push:{id}").as_bytes());
    let token = digest.as_ref().to_vec();
    let magic = uuid::Builder::from_random_bytes(token[..16].try_into().unwrap_or_default()).into_uuid();
    (token, magic.hyphenated().to_string().to_uppercase())
}

/// `TokenUpdate` (tokenupdate.yaml), with the UnlockToken when the enrollment may send it.
pub fn token_update(e: &Enrollment, id: &str, unlock_token: Option<&SecretBytes>) -> Zeroizing<Vec<u8>> {
    let mut d = base("TokenUpdate", e, id);
    let (token, magic) = push_identity(id);
    d.insert("Token".into(), Value::Data(token));
    d.insert("PushMagic".into(), magic.into());
    if let Some(t) = unlock_token.filter(|_| e.sends_unlock_token()) {
        d.insert("UnlockToken".into(), Value::Data(t.expose().to_vec()));
    }
    let body = xml(&d);
    if let Some(Value::Data(t)) = d.get_mut("UnlockToken") {
        t.zeroize();
    }
    body
}

/// `CheckOut` (checkout.yaml).
pub fn checkout(e: &Enrollment, id: &str) -> Zeroizing<Vec<u8>> {
    xml(&base("CheckOut", e, id))
}

fn status_only(e: &Enrollment, id: &str, status: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert(e.id_key().into(), id.into());
    d.insert("Status".into(), status.into());
    d
}

/// `Idle`: "I have nothing to report; what is next?"
pub fn idle(e: &Enrollment, id: &str) -> Zeroizing<Vec<u8>> {
    xml(&status_only(e, id, "Idle"))
}

/// The number a Latchkey error code has in an `ErrorChain` (`ErrorCode` is an integer there):
/// its position in [`ErrorCode::ALL`], from 1; 0 for a code this build does not know. The list
/// only ever grows at its end, so numbers stay put.
pub fn error_number(code: &str) -> i64 {
    ErrorCode::ALL.iter().position(|c| c.as_str() == code).map_or(0, |i| i as i64 + 1)
}

/// The response to a command, or `None` when it must not be sent (a `NOT_NOW`: see the module
/// docs).
pub fn result(e: &Enrollment, id: &str, result: &v1::CommandResult) -> Option<Zeroizing<Vec<u8>>> {
    let status = v1::CommandStatus::try_from(result.status).unwrap_or(v1::CommandStatus::Failed);
    let mut d = match status {
        v1::CommandStatus::NotNow => return None,
        v1::CommandStatus::Succeeded => {
            let mut d = status_only(e, id, "Acknowledged");
            if let Some(message_result) = result.outputs.get("message_result") {
                d.insert("MessageResult".into(), message_result.clone().into());
            }
            d
        }
        _ => {
            let mut d = status_only(e, id, "Error");
            let code = if result.error_code.is_empty() { "PLATFORM_ERROR" } else { result.error_code.as_str() };
            let mut entry = Dictionary::new();
            entry.insert("ErrorCode".into(), Value::Integer(error_number(code).into()));
            entry.insert("ErrorDomain".into(), ERROR_DOMAIN.into());
            entry.insert("LocalizedDescription".into(), result.message.clone().into());
            entry.insert("USEnglishDescription".into(), format!("{code}: {}", result.message).into());
            // Apple's entries have no string code; an extra key keeps Latchkey's exact.
            entry.insert("LatchkeyErrorCode".into(), code.into());
            d.insert("ErrorChain".into(), Value::Array(vec![Value::Dictionary(entry)]));
            d
        }
    };
    d.insert("CommandUUID".into(), result.command_id.clone().into());
    Some(xml(&d))
}

/// A command from the server, as the journal and the platform layer take it.
pub struct Received {
    /// The command (its id is the CommandUUID).
    pub command: v1::Command,
    /// Apple's RequestType, for the logs.
    pub request_type: String,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("command_id", &self.command.command_id)
            .field("request_type", &self.request_type)
            .finish()
    }
}

fn text(d: &Dictionary, key: &str) -> String {
    d.get(key).and_then(Value::as_string).unwrap_or_default().to_owned()
}

/// Reads the server's answer: `Ok(None)` for an empty body (nothing queued), an error when the
/// body is not a command at all (no plist, no CommandUUID: nothing could be answered). A command
/// this agent does not carry out becomes an `unsupported` action, answered `Error` — never
/// dropped. Apple commands carry no issue or expiry time: the issue time is left at the
/// earliest valid value (so after a lost journal each is checked against the device first) and
/// the command never expires on the device.
pub fn command(e: &Enrollment, id: &str, body: &[u8]) -> Result<Option<Received>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value = Value::from_reader(std::io::Cursor::new(body))
        .map_err(|e| format!("the server's answer is not a property list ({e})"))?;
    let Value::Dictionary(mut top) = value else {
        return Err("the server's answer is not a dictionary".into());
    };
    let command_id = text(&top, "CommandUUID");
    if command_id.is_empty() {
        return Err("the server sent a command without a CommandUUID".into());
    }
    let mut body = match top.remove("Command") {
        Some(Value::Dictionary(d)) => d,
        _ => Dictionary::new(),
    };
    let request_type = text(&body, "RequestType");
    let name =
        if request_type.is_empty() { "a command without a RequestType".to_owned() } else { request_type.clone() };
    let unsupported = |name: String| v1::command::Action::Unsupported(v1::UnsupportedAction { name });
    let action = match request_type.as_str() {
        "ClearPasscode" | "DeviceLock" if !e.allows_lock_and_removal() => unsupported(format!(
            "{request_type} under an enrollment profile whose AccessRights lack 4 (device lock and passcode removal)"
        )),
        "ClearPasscode" => {
            let token = match body.remove("UnlockToken") {
                Some(Value::Data(bytes)) => bytes,
                _ => Vec::new(),
            };
            v1::command::Action::RemovePasscode(v1::RemovePasscode { unlock_token: token })
        }
        "DeviceLock" => v1::command::Action::RemoteLock(v1::RemoteLock {
            message: text(&body, "Message"),
            phone_number: text(&body, "PhoneNumber"),
            pin: text(&body, "PIN"),
        }),
        _ => unsupported(name),
    };
    // The PIN is a secret too: clear what is left of the parsed command.
    if let Some(Value::String(pin)) = body.get_mut("PIN") {
        pin.zeroize();
    }
    Ok(Some(Received {
        command: v1::Command {
            command_id,
            device_id: id.to_owned(),
            issued_at_unix_ms: 1,
            expires_at_unix_ms: i64::MAX,
            action: Some(action),
        },
        request_type,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::ALL_RIGHTS;
    use latchkey_platform::ManagementMode;

    fn enrollment(user: bool, platform: Platform, rights: u64) -> Enrollment {
        Enrollment {
            topic: "com.apple.mgmt.test".into(),
            server_url: "https://mdm.example:443/mdm".into(),
            checkin_url: "https://mdm.example:443/mdm".into(),
            access_rights: rights,
            checkout_when_removed: true,
            user_enrollment: user,
            platform,
        }
    }

    fn dict(body: &[u8]) -> Dictionary {
        match Value::from_reader(std::io::Cursor::new(body)).expect("plist") {
            Value::Dictionary(d) => d,
            other => panic!("not a dictionary: {other:?}"),
        }
    }

    fn facts(platform: Platform) -> DeviceFacts {
        DeviceFacts {
            platform,
            os_version: "17.4".into(),
            api_level: 0,
            mode: ManagementMode::AppleDevice,
            model: "iPhone".into(),
            pin_recovery_enabled: false,
            entra_joined: false,
        }
    }

    #[test]
    fn a_device_enrollment_names_itself_by_udid_and_escrows_its_unlock_token() {
        let e = enrollment(false, Platform::Ios, ALL_RIGHTS);
        let token = SecretBytes::new(vec![7; 32]);
        let d = dict(&token_update(&e, "UDID-1", Some(&token)));
        assert_eq!(text(&d, "MessageType"), "TokenUpdate");
        assert_eq!(text(&d, "UDID"), "UDID-1");
        assert!(d.get("EnrollmentID").is_none());
        assert_eq!(d.get("UnlockToken").and_then(Value::as_data), Some(&[7u8; 32][..]));
        assert!(d.get("Token").and_then(Value::as_data).is_some_and(|t| !t.is_empty()));
        assert!(!text(&d, "PushMagic").is_empty());
        let again = dict(&token_update(&e, "UDID-1", None));
        assert_eq!(again.get("Token"), d.get("Token"), "the push token is stable");
    }

    #[test]
    fn user_enrollment_uses_enrollment_id_and_never_sends_the_unlock_token() {
        let e = enrollment(true, Platform::Ios, ALL_RIGHTS);
        let token = SecretBytes::new(vec![7; 32]);
        for body in [token_update(&e, "E-1", Some(&token)), authenticate(&e, "E-1", &facts(Platform::Ios), "h")] {
            let d = dict(&body);
            assert_eq!(text(&d, "EnrollmentID"), "E-1");
            assert!(d.get("UDID").is_none(), "UDID is forbidden in User Enrollment");
            assert!(d.get("UnlockToken").is_none());
        }
    }

    #[test]
    fn no_unlock_token_without_the_right_or_on_macos() {
        let token = SecretBytes::new(vec![7; 32]);
        for e in [enrollment(false, Platform::Ios, 1 | 16), enrollment(false, Platform::Macos, ALL_RIGHTS)] {
            assert!(dict(&token_update(&e, "U", Some(&token))).get("UnlockToken").is_none());
        }
    }

    #[test]
    fn macos_authenticate_names_the_device() {
        let e = enrollment(false, Platform::Macos, ALL_RIGHTS);
        let d = dict(&authenticate(&e, "U", &facts(Platform::Macos), "mac-1"));
        assert_eq!(text(&d, "DeviceName"), "mac-1");
        assert_eq!(text(&d, "OSVersion"), "17.4");
        let ios = dict(&authenticate(&enrollment(false, Platform::Ios, 1), "U", &facts(Platform::Ios), "h"));
        assert!(ios.get("DeviceName").is_none() && ios.get("OSVersion").is_none());
    }

    fn wire_result(status: v1::CommandStatus, code: &str) -> v1::CommandResult {
        v1::CommandResult {
            command_id: "C-1".into(),
            status: status as i32,
            error_code: code.into(),
            message: "the escrowed unlock token does not match".into(),
            ..Default::default()
        }
    }

    #[test]
    fn failures_are_errors_carrying_the_latchkey_code_and_message() {
        let e = enrollment(false, Platform::Ios, ALL_RIGHTS);
        let body = result(&e, "U", &wire_result(v1::CommandStatus::Failed, "UNLOCK_TOKEN_MISMATCH")).expect("sent");
        let d = dict(&body);
        assert_eq!((text(&d, "Status"), text(&d, "CommandUUID")), ("Error".into(), "C-1".into()));
        let chain = d.get("ErrorChain").and_then(Value::as_array).expect("chain");
        let entry = chain[0].as_dictionary().expect("entry");
        assert_eq!(text(entry, "LatchkeyErrorCode"), "UNLOCK_TOKEN_MISMATCH");
        assert_eq!(text(entry, "ErrorDomain"), ERROR_DOMAIN);
        assert_eq!(text(entry, "LocalizedDescription"), "the escrowed unlock token does not match");
        assert_eq!(
            entry.get("ErrorCode").and_then(Value::as_signed_integer),
            Some(error_number("UNLOCK_TOKEN_MISMATCH"))
        );
        assert!(error_number("UNLOCK_TOKEN_MISMATCH") > 0);
        for status in [v1::CommandStatus::Rejected, v1::CommandStatus::NotSupported] {
            assert_eq!(
                text(&dict(&result(&e, "U", &wire_result(status, "USER_ENROLLMENT")).expect("sent")), "Status"),
                "Error"
            );
        }
    }

    #[test]
    fn success_is_acknowledged_with_the_message_result_and_not_now_is_never_sent() {
        let e = enrollment(false, Platform::Ios, ALL_RIGHTS);
        let mut ok = wire_result(v1::CommandStatus::Succeeded, "");
        ok.outputs.insert("message_result".into(), "NoPasscodeSet".into());
        let d = dict(&result(&e, "U", &ok).expect("sent"));
        assert_eq!(text(&d, "Status"), "Acknowledged");
        assert_eq!(text(&d, "MessageResult"), "NoPasscodeSet");
        assert!(d.get("ErrorChain").is_none());
        assert!(result(&e, "U", &wire_result(v1::CommandStatus::NotNow, "PLATFORM_ERROR")).is_none());
    }

    fn command_plist(command: Dictionary) -> Vec<u8> {
        let mut top = Dictionary::new();
        top.insert("CommandUUID".into(), "C-9".into());
        top.insert("Command".into(), Value::Dictionary(command));
        let mut out = Vec::new();
        Value::Dictionary(top).to_writer_xml(&mut out).expect("xml");
        out
    }

    #[test]
    fn commands_become_latchkey_actions_and_unknown_ones_are_kept_as_unsupported() {
        let e = enrollment(false, Platform::Ios, ALL_RIGHTS);
        let mut clear = Dictionary::new();
        clear.insert("RequestType".into(), "ClearPasscode".into());
        clear.insert("UnlockToken".into(), Value::Data(vec![1, 2, 3]));
        let got = command(&e, "U", &command_plist(clear)).expect("parses").expect("a command");
        assert_eq!((got.command.command_id.as_str(), got.command.device_id.as_str()), ("C-9", "U"));
        assert!(got.command.expires_at_unix_ms > latchkey_common::time::now_ms());
        let Some(v1::command::Action::RemovePasscode(r)) = got.command.action else { panic!("removal") };
        assert_eq!(r.unlock_token, vec![1, 2, 3]);

        let mut lock = Dictionary::new();
        lock.insert("RequestType".into(), "DeviceLock".into());
        lock.insert("Message".into(), "Call IT".into());
        lock.insert("PhoneNumber".into(), "+1 555".into());
        lock.insert("PIN".into(), "123456".into());
        let got = command(&e, "U", &command_plist(lock)).expect("parses").expect("a command");
        let Some(v1::command::Action::RemoteLock(l)) = got.command.action else { panic!("lock") };
        assert_eq!((l.message.as_str(), l.phone_number.as_str(), l.pin.as_str()), ("Call IT", "+1 555", "123456"));

        let mut other = Dictionary::new();
        other.insert("RequestType".into(), "EraseDevice".into());
        let got = command(&e, "U", &command_plist(other)).expect("parses").expect("a command");
        assert!(matches!(got.command.action, Some(v1::command::Action::Unsupported(ref u)) if u.name == "EraseDevice"));

        let got = command(&e, "U", &command_plist(Dictionary::new())).expect("parses").expect("a command");
        assert!(matches!(got.command.action, Some(v1::command::Action::Unsupported(_))));
    }

    #[test]
    fn without_the_lock_right_lock_and_removal_are_refused_by_name() {
        let e = enrollment(false, Platform::Ios, 1 | 16);
        let mut lock = Dictionary::new();
        lock.insert("RequestType".into(), "DeviceLock".into());
        let got = command(&e, "U", &command_plist(lock)).expect("parses").expect("a command");
        assert!(
            matches!(got.command.action, Some(v1::command::Action::Unsupported(ref u)) if u.name.contains("AccessRights"))
        );
    }

    #[test]
    fn empty_answers_are_no_command_and_junk_is_an_error() {
        let e = enrollment(false, Platform::Ios, ALL_RIGHTS);
        assert!(command(&e, "U", b"").expect("empty").is_none());
        assert!(command(&e, "U", b"\n").expect("blank").is_none());
        assert!(command(&e, "U", b"<html>500</html>").is_err());
        let mut top = Dictionary::new();
        top.insert("Command".into(), Value::Dictionary(Dictionary::new()));
        let mut out = Vec::new();
        Value::Dictionary(top).to_writer_xml(&mut out).expect("xml");
        assert!(command(&e, "U", &out).expect_err("no uuid").contains("CommandUUID"));
    }
}
