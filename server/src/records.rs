//! The server's typed records: what it stores about devices, commands, escrow and passcodes.
//! Storage backends ([`crate::store`]) keep these in columns where the server queries them and
//! in a versioned JSON document only for what must stay opaque (the policies a device reported).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use latchkey_platform::{DeviceFacts, DeviceState, ManagementMode, Platform, ResetTokenState, Status};

/// Where a device stands with the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Enrolled, certificate issued, not used yet: the enrollment token is reserved, not spent.
    Enrolling,
    /// Managed.
    Active,
    /// Retired by an admin: its certificate is refused, its queue cancelled.
    Retired,
    /// The device unenrolled itself.
    Unenrolled,
}

impl DeviceStatus {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrolling => "enrolling",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Unenrolled => "unenrolled",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Enrolling, Self::Active, Self::Retired, Self::Unenrolled].into_iter().find(|s| s.as_str() == text)
    }
}

/// A device certificate's identity: what the server checks on every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// What enrollment records about a new device.
#[derive(Clone, Debug)]
pub struct NewDevice {
    /// Assigned id (the certificate's common name).
    pub device_id: String,
    /// Facts the device reported.
    pub facts: DeviceFacts,
    /// Hostname the device reported.
    pub hostname: String,
    /// Its first certificate.
    pub cert: CertInfo,
}

/// The last check-in, as the device reported it. Stored as a versioned document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    /// Facts.
    pub facts: DeviceFacts,
    /// Credential state.
    pub state: DeviceState,
    /// Hostname.
    pub hostname: String,
    /// Agent version.
    pub agent_version: String,
}

/// One device as the admin sees it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceRecord {
    /// Id.
    pub device_id: String,
    /// Platform.
    pub platform: Platform,
    /// Management mode.
    pub mode: ManagementMode,
    /// OS version, as last reported.
    pub os_version: String,
    /// Model, as last reported.
    pub model: String,
    /// Hostname, as last reported.
    pub hostname: String,
    /// Agent version, as last reported.
    pub agent_version: String,
    /// Active, retired, unenrolled.
    pub status: DeviceStatus,
    /// Enrolled at, Unix ms.
    pub enrolled_at: i64,
    /// Holds a push stream right now (as the serving process last recorded it).
    pub online: bool,
    /// Last sign of life — a call or a heartbeat — Unix ms (0 = never).
    pub last_seen: i64,
    /// Last check-in, Unix ms (0 = never).
    pub last_checkin: i64,
    /// Reset-token state, as last reported.
    pub reset_token_state: ResetTokenState,
    /// A device passcode is set, as last reported.
    pub passcode_present: bool,
    /// A device passcode policy is in force, as last reported.
    pub device_policy: bool,
    /// Locked, as last reported.
    pub locked: bool,
    /// An unlock token is escrowed.
    pub unlock_token_escrowed: bool,
    /// The device certificate expires, Unix seconds.
    pub cert_not_after: i64,
    /// The full last check-in (facts, state, policies), when there was one.
    #[serde(skip)]
    pub reported: Option<Reported>,
}

impl DeviceRecord {
    /// The port snapshot the server last saw, for predicting outcomes with the platform rules.
    pub fn snapshot(&self) -> Option<latchkey_platform::PortSnapshot> {
        self.reported
            .as_ref()
            .map(|r| latchkey_platform::PortSnapshot { facts: r.facts.clone(), state: r.state.clone() })
    }
}

/// Where a command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandState {
    /// Queued, not delivered (or re-queued after `not_now`).
    Pending,
    /// Delivered, no result yet.
    Sent,
    /// A final device result.
    Done(Status),
    /// Past its expiry without a result (final).
    Expired,
    /// Cancelled because the device was retired or unenrolled (final).
    Cancelled,
}

impl CommandState {
    /// Every state name, for argument parsing.
    pub const NAMES: [&'static str; 9] =
        ["pending", "sent", "succeeded", "failed", "not_supported", "not_now", "rejected", "expired", "cancelled"];

    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Done(status) => status.as_str(),
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            other => Self::Done(Status::parse(other)?),
        })
    }

    /// True once nothing more will happen to the command.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Sent)
    }
}

impl Serialize for CommandState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CommandState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown command state {text:?}")))
    }
}

/// One row of the device-actions view (also the admin socket's answer to `wait`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Command id.
    pub command_id: String,
    /// Device id.
    pub device_id: String,
    /// Device platform.
    pub platform: Platform,
    /// What the admin asked for.
    pub requested: String,
    /// What the device was sent (differs for an iOS reset: a removal).
    pub action: String,
    /// State.
    pub state: CommandState,
    /// Error code, empty on success.
    pub error_code: String,
    /// Admin message.
    pub message: String,
    /// Outputs reported by the device.
    pub outputs: BTreeMap<String, String>,
    /// What the server warned about when it was queued (`--force`d past a predicted failure).
    pub warning: String,
    /// Deliveries so far (a `not_now` answer re-queues it, up to a bound).
    pub attempts: u32,
    /// Issued at, Unix ms.
    pub issued_at: i64,
    /// Expires at, Unix ms.
    pub expires_at: i64,
    /// Delivered at, Unix ms (0 = not yet).
    pub sent_at: i64,
    /// Result reported at, Unix ms (0 = not yet).
    pub reported_at: i64,
}

#[cfg(test)]
impl ActionRecord {
    /// A lock on an AOSP device in `state`, for tests.
    pub(crate) fn example(command_id: &str, state: CommandState) -> Self {
        Self {
            command_id: command_id.into(),
            device_id: "d1".into(),
            platform: Platform::Aosp,
            requested: "lock".into(),
            action: "remote_lock".into(),
            state,
            error_code: String::new(),
            message: "locked".into(),
            outputs: BTreeMap::new(),
            warning: String::new(),
            attempts: 1,
            issued_at: 10,
            expires_at: 20,
            sent_at: 11,
            reported_at: 12,
        }
    }
}

/// A filter for the device-actions view.
#[derive(Clone, Debug, Default)]
pub struct ActionFilter {
    /// Only this device.
    pub device_id: Option<String>,
    /// Only in this state.
    pub state: Option<CommandState>,
    /// Only issued at or after this time, Unix ms.
    pub since: Option<i64>,
    /// At most this many rows (the newest).
    pub limit: Option<usize>,
    /// Only this command.
    pub command_id: Option<String>,
}

/// What kind of secret a stored passcode row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasscodeKind {
    /// A temporary passcode the server generated for a reset (7 days).
    Temporary,
    /// A PIN the device generated (Windows PIN recovery; 7 days).
    DevicePin,
    /// A macOS Find My lock PIN the server generated (30 days).
    LockPin,
}

impl PasscodeKind {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Temporary => "temporary",
            Self::DevicePin => "device_pin",
            Self::LockPin => "lock_pin",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Temporary, Self::DevicePin, Self::LockPin].into_iter().find(|k| k.as_str() == text)
    }

    /// How long the admin sees it.
    pub fn visible_ms(self) -> i64 {
        match self {
            Self::Temporary | Self::DevicePin => 7 * 24 * 3600 * 1000,
            Self::LockPin => 30 * 24 * 3600 * 1000,
        }
    }
}

/// A stored passcode or PIN, still sealed.
#[derive(Clone)]
pub struct PasscodeRecord {
    /// The command it belongs to.
    pub command_id: String,
    /// Device.
    pub device_id: String,
    /// What it is.
    pub kind: PasscodeKind,
    /// The sealed value.
    pub sealed: Vec<u8>,
    /// Created at, Unix ms.
    pub created_at: i64,
    /// Hidden after, Unix ms.
    pub expires_at: i64,
    /// The command's state now.
    pub command_state: CommandState,
}

impl std::fmt::Debug for PasscodeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasscodeRecord").field("command_id", &self.command_id).field("kind", &self.kind).finish()
    }
}

/// Which escrowed token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowKind {
    /// iOS unlock token.
    Unlock,
    /// Android reset-password token.
    Reset,
}

impl EscrowKind {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unlock => "unlock",
            Self::Reset => "reset",
        }
    }

    /// Shortest acceptable token, in bytes.
    pub fn min_len(self) -> usize {
        match self {
            Self::Unlock => 16,
            Self::Reset => 32,
        }
    }
}

/// How a result report ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ReportOutcome {
    /// Recorded now: the command as `actions` shows it after the result.
    Recorded(Box<ActionRecord>),
    /// Recorded before (a re-sent report).
    Duplicate,
    /// A `not_now` answer: re-queued for another delivery after this time (Unix ms).
    Requeued(i64),
}

/// Counts for the metrics endpoint.
#[derive(Clone, Debug, Default)]
pub struct QueueStats {
    /// Commands by (action, state).
    pub by_action_state: BTreeMap<(String, String), u64>,
    /// Age of the oldest command still pending or sent, ms (0 when none).
    pub oldest_open_ms: i64,
    /// Enrolled devices by status.
    pub devices_by_status: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for name in CommandState::NAMES {
            let state = CommandState::parse(name).expect(name);
            assert_eq!(state.as_str(), name);
        }
        assert!(CommandState::parse("bogus").is_none());
        assert!(!CommandState::Sent.is_final());
        assert!(CommandState::Expired.is_final());
    }

    /// The admin socket answers `wait` with the record as JSON; the admin reads it back whole.
    #[test]
    fn an_action_record_survives_json() {
        let record = ActionRecord {
            error_code: "NO_PASSCODE_POLICY".into(),
            message: "no policy".into(),
            outputs: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            attempts: 2,
            ..ActionRecord::example("c1", CommandState::Done(Status::Failed))
        };
        let json = serde_json::to_string(&record).expect("serialises");
        assert_eq!(serde_json::from_str::<ActionRecord>(&json).expect("parses"), record);
        let bad = json.replace("\"failed\"", "\"melted\"");
        let error = serde_json::from_str::<ActionRecord>(&bad).expect_err("an unknown state is refused");
        assert!(error.to_string().contains("unknown command state \"melted\""), "{error}");
    }
}
