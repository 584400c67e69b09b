//! The server's durable state in one SQLite database (WAL): enrollment tokens (stored hashed),
//! devices and their last check-in, the command queue and its results, escrowed tokens, and
//! temporary passcodes. Every admin command and the serving process open the same file.
//!
//! Command secrets (temporary passcode, unlock token) live in the queued payload only until the
//! device reports; the result scrubs the payload.
use std::path::Path;
use std::sync::Mutex;

use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use latchkey_proto::v1;

/// How long a temporary passcode stays visible to admins.
pub const PASSCODE_VISIBLE_MS: i64 = 7 * 24 * 3600 * 1000;

/// Database failures and refusals.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// No such enrollment token.
    #[error("enrollment token is not valid")]
    TokenUnknown,
    /// The token was used before.
    #[error("enrollment token was already used")]
    TokenUsed,
    /// The token expired.
    #[error("enrollment token has expired")]
    TokenExpired,
    /// No such device.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// No such command.
    #[error("unknown command {0}")]
    UnknownCommand(String),
    /// The command belongs to another device.
    #[error("command {0} belongs to another device")]
    WrongDevice(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// One row of `devices`: what enrollment recorded, plus what check-ins reported since.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceRow {
    /// Id, platform, mode, OS version, model, hostname (flattened in JSON).
    #[serde(flatten)]
    pub device: NewDevice,
    /// Enrolled at, Unix ms.
    pub enrolled_at: i64,
    /// Last check-in, Unix ms (0 = never).
    pub last_checkin: i64,
    /// Reset-token state as last reported.
    pub reset_token_state: String,
    /// A device passcode is set, as last reported.
    pub passcode_present: bool,
    /// A device passcode policy is assigned, as last reported.
    pub device_policy: bool,
    /// An unlock token is escrowed.
    pub unlock_token_escrowed: bool,
}

/// What enrollment records about a new device.
#[derive(Clone, Debug, Serialize)]
pub struct NewDevice {
    /// Assigned id.
    pub device_id: String,
    /// Platform name (`android`, `ios`, …).
    pub platform: String,
    /// Management mode name.
    pub mode: String,
    /// OS version.
    pub os_version: String,
    /// Model.
    pub model: String,
    /// Hostname.
    pub hostname: String,
}

impl NewDevice {
    /// From the facts the device reported.
    pub fn from_facts(device_id: String, facts: &latchkey_platform::DeviceFacts, hostname: &str) -> Self {
        let name = |v: serde_json::Result<serde_json::Value>| {
            v.ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        };
        Self {
            device_id,
            platform: name(serde_json::to_value(facts.platform)),
            mode: name(serde_json::to_value(facts.mode)),
            os_version: facts.os_version.clone(),
            model: facts.model.clone(),
            hostname: hostname.to_owned(),
        }
    }
}

/// One row of the device-actions view.
#[derive(Clone, Debug, Serialize)]
pub struct ActionRow {
    /// Command id.
    pub command_id: String,
    /// Device id.
    pub device_id: String,
    /// Device platform.
    pub platform: String,
    /// Action name.
    pub action: String,
    /// pending, sent, succeeded, failed, not_supported, not_now, rejected.
    pub state: String,
    /// Error code, empty on success.
    pub error_code: String,
    /// Admin message.
    pub message: String,
    /// Outputs reported by the device.
    pub outputs: serde_json::Value,
    /// Issued at, Unix ms.
    pub issued_at: i64,
    /// Expires at, Unix ms.
    pub expires_at: i64,
    /// Delivered at, Unix ms (0 = not yet).
    pub sent_at: i64,
    /// Result reported at, Unix ms (0 = not yet).
    pub reported_at: i64,
}

/// A temporary passcode still within its seven days.
#[derive(Clone, Serialize)]
pub struct PasscodeRow {
    /// The command it belongs to.
    pub command_id: String,
    /// Device.
    pub device_id: String,
    /// The passcode.
    pub passcode: String,
    /// "server-generated" or "device-generated".
    pub source: String,
    /// Created at, Unix ms.
    pub created_at: i64,
    /// Hidden after, Unix ms.
    pub expires_at: i64,
}

impl std::fmt::Debug for PasscodeRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasscodeRow").field("command_id", &self.command_id).field("passcode", &"<redacted>").finish()
    }
}

/// The database.
pub struct Db {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS enrollment_tokens (
  token_hash TEXT PRIMARY KEY, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  used_at INTEGER, device_id TEXT);
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY, platform TEXT NOT NULL, mode TEXT NOT NULL, os_version TEXT NOT NULL,
  model TEXT NOT NULL, hostname TEXT NOT NULL, enrolled_at INTEGER NOT NULL,
  last_checkin INTEGER NOT NULL DEFAULT 0, facts_json TEXT NOT NULL, state_json TEXT,
  reset_token_state TEXT NOT NULL DEFAULT '', unlock_token_hex TEXT, reset_token_hex TEXT);
CREATE TABLE IF NOT EXISTS commands (
  command_id TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(device_id),
  action TEXT NOT NULL, payload BLOB, state TEXT NOT NULL, issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, sent_at INTEGER NOT NULL DEFAULT 0, error_code TEXT NOT NULL DEFAULT '',
  message TEXT NOT NULL DEFAULT '', outputs_json TEXT NOT NULL DEFAULT '{}',
  finished_at INTEGER NOT NULL DEFAULT 0, reported_at INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS commands_by_device ON commands(device_id, state);
CREATE TABLE IF NOT EXISTS passcodes (
  command_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, passcode TEXT NOT NULL, source TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
";

/// SHA-256 hex of an enrollment token: the database never holds a usable token.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a token exists, is unused and unexpired.
fn token_usable(c: &Connection, token: &str, now: i64) -> Result<(), DbError> {
    let row: Option<(i64, Option<i64>)> = c
        .query_row(
            "SELECT expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?1",
            params![token_hash(token)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Err(DbError::TokenUnknown),
        Some((_, Some(_))) => Err(DbError::TokenUsed),
        Some((expires_at, None)) if expires_at <= now => Err(DbError::TokenExpired),
        Some(_) => Ok(()),
    }
}

fn status_state(status: i32) -> &'static str {
    match v1::CommandStatus::try_from(status) {
        Ok(v1::CommandStatus::Succeeded) => "succeeded",
        Ok(v1::CommandStatus::Failed) => "failed",
        Ok(v1::CommandStatus::NotSupported) => "not_supported",
        Ok(v1::CommandStatus::NotNow) => "not_now",
        Ok(v1::CommandStatus::Rejected) => "rejected",
        _ => "failed",
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path`, mode 0600.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let conn = Connection::open(path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        // A poisoned lock only means another thread panicked mid-call; SQLite kept the data
        // consistent, so carry on with the connection.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Stores a new enrollment token (hashed).
    pub fn insert_token(&self, token: &str, now: i64, expires_at: i64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO enrollment_tokens (token_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
                params![token_hash(token), now, expires_at],
            )?;
            Ok(())
        })
    }

    /// Checks a token without consuming it (so unauthenticated callers get no signing work).
    pub fn check_token(&self, token: &str, now: i64) -> Result<(), DbError> {
        self.with(|c| token_usable(c, token, now))
    }

    /// Consumes a token and records the new device, in one transaction.
    pub fn enroll(&self, token: &str, now: i64, device: &NewDevice, facts_json: &str) -> Result<(), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            token_usable(&tx, token, now)?;
            tx.execute(
                "UPDATE enrollment_tokens SET used_at = ?1, device_id = ?2 WHERE token_hash = ?3 AND used_at IS NULL",
                params![now, device.device_id, token_hash(token)],
            )?;
            tx.execute(
                "INSERT INTO devices (device_id, platform, mode, os_version, model, hostname, enrolled_at, facts_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    device.device_id,
                    device.platform,
                    device.mode,
                    device.os_version,
                    device.model,
                    device.hostname,
                    now,
                    facts_json
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// True when the device is enrolled.
    pub fn device_exists(&self, device_id: &str) -> Result<bool, DbError> {
        self.with(|c| {
            Ok(c.query_row("SELECT 1 FROM devices WHERE device_id = ?1", params![device_id], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    /// Records a check-in.
    pub fn check_in(
        &self,
        device_id: &str,
        now: i64,
        facts_json: Option<&str>,
        state_json: &str,
        reset_token_state: &str,
    ) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE devices SET last_checkin = ?2, state_json = ?3, reset_token_state = ?4,
                   facts_json = COALESCE(?5, facts_json) WHERE device_id = ?1",
                params![device_id, now, state_json, reset_token_state, facts_json],
            )?;
            Ok(())
        })
    }

    /// The device's last reported facts and state (JSON as stored).
    pub fn device_facts_state(&self, device_id: &str) -> Result<(String, Option<String>), DbError> {
        self.with(|c| {
            c.query_row("SELECT facts_json, state_json FROM devices WHERE device_id = ?1", params![device_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .ok_or_else(|| DbError::UnknownDevice(device_id.to_owned()))
        })
    }

    /// Escrows an unlock token (hex).
    pub fn set_unlock_token(&self, device_id: &str, hex: &str) -> Result<(), DbError> {
        self.set_column(device_id, "unlock_token_hex", hex)
    }

    /// Escrows a reset-password token (hex).
    pub fn set_reset_token(&self, device_id: &str, hex: &str) -> Result<(), DbError> {
        self.set_column(device_id, "reset_token_hex", hex)
    }

    fn set_column(&self, device_id: &str, column: &str, value: &str) -> Result<(), DbError> {
        self.with(|c| {
            let n = c.execute(
                &format!("UPDATE devices SET {column} = ?2 WHERE device_id = ?1"),
                params![device_id, value],
            )?;
            if n == 0 {
                return Err(DbError::UnknownDevice(device_id.to_owned()));
            }
            Ok(())
        })
    }

    /// The escrowed unlock token (hex), if any.
    pub fn unlock_token(&self, device_id: &str) -> Result<Option<String>, DbError> {
        self.with(|c| {
            c.query_row("SELECT unlock_token_hex FROM devices WHERE device_id = ?1", params![device_id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| DbError::UnknownDevice(device_id.to_owned()))
        })
    }

    /// Queues a command.
    pub fn queue(&self, command: &v1::Command, action: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO commands (command_id, device_id, action, payload, state, issued_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)",
                params![
                    command.command_id,
                    command.device_id,
                    action,
                    command.encode_to_vec(),
                    command.issued_at_unix_ms,
                    command.expires_at_unix_ms
                ],
            )?;
            Ok(())
        })
    }

    /// Commands the device has not answered yet, oldest first.
    pub fn unanswered(&self, device_id: &str) -> Result<Vec<v1::Command>, DbError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT payload FROM commands WHERE device_id = ?1 AND state IN ('pending', 'sent')
                 AND payload IS NOT NULL ORDER BY issued_at, command_id",
            )?;
            let rows = stmt.query_map(params![device_id], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for payload in rows {
                let payload = payload?;
                out.push(v1::Command::decode(payload.as_slice()).map_err(|e| DbError::Corrupt(e.to_string()))?);
            }
            Ok(out)
        })
    }

    /// Marks commands as delivered.
    pub fn mark_sent(&self, ids: &[String], now: i64) -> Result<(), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for id in ids {
                tx.execute(
                    "UPDATE commands SET state = 'sent', sent_at = ?2 WHERE command_id = ?1 AND state = 'pending'",
                    params![id, now],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Records a result; returns true when it had been recorded already (idempotent by id).
    pub fn record_result(&self, device_id: &str, result: &v1::CommandResult, now: i64) -> Result<bool, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let row: Option<(String, i64)> = tx
                .query_row(
                    "SELECT device_id, reported_at FROM commands WHERE command_id = ?1",
                    params![result.command_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (owner, reported_at) = row.ok_or_else(|| DbError::UnknownCommand(result.command_id.clone()))?;
            if owner != device_id {
                return Err(DbError::WrongDevice(result.command_id.clone()));
            }
            if reported_at != 0 {
                return Ok(true);
            }
            let outputs = serde_json::to_string(&result.outputs).unwrap_or_else(|_| "{}".into());
            tx.execute(
                "UPDATE commands SET state = ?2, error_code = ?3, message = ?4, outputs_json = ?5,
                   finished_at = ?6, reported_at = ?7, payload = NULL WHERE command_id = ?1",
                params![
                    result.command_id,
                    status_state(result.status),
                    result.error_code,
                    result.message,
                    outputs,
                    result.finished_at_unix_ms,
                    now
                ],
            )?;
            if !result.generated_pin.is_empty() {
                tx.execute(
                    "INSERT OR REPLACE INTO passcodes (command_id, device_id, passcode, source, created_at, expires_at)
                     VALUES (?1, ?2, ?3, 'device-generated', ?4, ?5)",
                    params![result.command_id, device_id, result.generated_pin, now, now + PASSCODE_VISIBLE_MS],
                )?;
            }
            tx.commit()?;
            Ok(false)
        })
    }

    /// Stores a server-generated temporary passcode.
    pub fn insert_passcode(&self, command_id: &str, device_id: &str, passcode: &str, now: i64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO passcodes (command_id, device_id, passcode, source, created_at, expires_at)
                 VALUES (?1, ?2, ?3, 'server-generated', ?4, ?5)",
                params![command_id, device_id, passcode, now, now + PASSCODE_VISIBLE_MS],
            )?;
            Ok(())
        })
    }

    /// Temporary passcodes still visible; expired ones are deleted first.
    pub fn passcodes(&self, device_id: &str, now: i64) -> Result<Vec<PasscodeRow>, DbError> {
        self.with(|c| {
            c.execute("DELETE FROM passcodes WHERE expires_at <= ?1", params![now])?;
            let mut stmt = c.prepare(
                "SELECT command_id, device_id, passcode, source, created_at, expires_at FROM passcodes
                 WHERE device_id = ?1 ORDER BY created_at",
            )?;
            let rows = stmt.query_map(params![device_id], |r| {
                Ok(PasscodeRow {
                    command_id: r.get(0)?,
                    device_id: r.get(1)?,
                    passcode: r.get(2)?,
                    source: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// All devices.
    pub fn devices(&self) -> Result<Vec<DeviceRow>, DbError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT device_id, platform, mode, os_version, model, hostname, enrolled_at, last_checkin,
                        reset_token_state, state_json, unlock_token_hex IS NOT NULL FROM devices ORDER BY enrolled_at, device_id",
            )?;
            let rows = stmt.query_map([], |r| {
                let state: Option<String> = r.get(9)?;
                let state: serde_json::Value = state.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
                Ok(DeviceRow {
                    device: NewDevice {
                        device_id: r.get(0)?,
                        platform: r.get(1)?,
                        mode: r.get(2)?,
                        os_version: r.get(3)?,
                        model: r.get(4)?,
                        hostname: r.get(5)?,
                    },
                    enrolled_at: r.get(6)?,
                    last_checkin: r.get(7)?,
                    reset_token_state: r.get(8)?,
                    passcode_present: state["passcode_present"].as_bool().unwrap_or(false),
                    device_policy: !state["device_policy"].is_null(),
                    unlock_token_escrowed: r.get(10)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The device-actions view, newest last.
    pub fn actions(&self, device_id: Option<&str>) -> Result<Vec<ActionRow>, DbError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT c.command_id, c.device_id, d.platform, c.action, c.state, c.error_code, c.message,
                        c.outputs_json, c.issued_at, c.expires_at, c.sent_at, c.reported_at
                 FROM commands c JOIN devices d ON d.device_id = c.device_id
                 WHERE (?1 IS NULL OR c.device_id = ?1) ORDER BY c.issued_at, c.command_id",
            )?;
            let rows = stmt.query_map(params![device_id], |r| {
                let outputs: String = r.get(7)?;
                Ok(ActionRow {
                    command_id: r.get(0)?,
                    device_id: r.get(1)?,
                    platform: r.get(2)?,
                    action: r.get(3)?,
                    state: r.get(4)?,
                    error_code: r.get(5)?,
                    message: r.get(6)?,
                    outputs: serde_json::from_str(&outputs).unwrap_or_default(),
                    issued_at: r.get(8)?,
                    expires_at: r.get(9)?,
                    sent_at: r.get(10)?,
                    reported_at: r.get(11)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_passcodes_are_listed_for_seven_days_then_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db")).expect("open");
        db.insert_token("tok", 0, i64::MAX).expect("token");
        let facts = latchkey_platform::sim::profile::build("android-do", &Default::default()).expect("facts").facts;
        let device = NewDevice::from_facts("d1".into(), &facts, "host");
        assert_eq!((device.platform.as_str(), device.mode.as_str()), ("android", "device_owner"));
        db.enroll("tok", 1, &device, "{}").expect("enroll");
        assert!(matches!(db.enroll("tok", 2, &device, "{}"), Err(DbError::TokenUsed)));
        db.insert_passcode("c1", "d1", "482913", 1_000).expect("insert");
        assert_eq!(db.passcodes("d1", 1_000 + PASSCODE_VISIBLE_MS - 1).expect("list").len(), 1);
        assert!(db.passcodes("d1", 1_000 + PASSCODE_VISIBLE_MS).expect("list").is_empty());
        let raw = std::fs::read(dir.path().join("t.db")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&raw).contains("tok\0"), "enrollment tokens are stored hashed");
    }
}
