//! The SQLite schema, versioned with `PRAGMA user_version`.
use rusqlite::Connection;

use crate::store::StoreError;

/// The schema this build writes.
pub const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE enrollment_tokens (
  token_hash TEXT PRIMARY KEY, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  reserved_by TEXT, used_at INTEGER, device_id TEXT);
CREATE TABLE devices (
  device_id TEXT PRIMARY KEY,
  platform TEXT NOT NULL, mode TEXT NOT NULL, os_version TEXT NOT NULL, model TEXT NOT NULL,
  hostname TEXT NOT NULL, agent_version TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL, token_hash TEXT NOT NULL, enrolled_at INTEGER NOT NULL, ended_at INTEGER,
  cert_sha256 TEXT NOT NULL, cert_not_after INTEGER NOT NULL,
  renewed_cert_sha256 TEXT, renewed_cert_not_after INTEGER,
  online INTEGER NOT NULL DEFAULT 0, last_seen INTEGER NOT NULL DEFAULT 0, last_checkin INTEGER NOT NULL DEFAULT 0,
  reset_token_state TEXT NOT NULL DEFAULT 'not_applicable', passcode_present INTEGER NOT NULL DEFAULT 0,
  device_policy INTEGER NOT NULL DEFAULT 0, locked INTEGER NOT NULL DEFAULT 0,
  reported TEXT);
CREATE UNIQUE INDEX devices_by_cert ON devices(cert_sha256);
CREATE INDEX devices_by_renewed_cert ON devices(renewed_cert_sha256) WHERE renewed_cert_sha256 IS NOT NULL;
CREATE TABLE escrow (
  device_id TEXT NOT NULL REFERENCES devices(device_id), kind TEXT NOT NULL, sealed BLOB NOT NULL,
  updated_at INTEGER NOT NULL, PRIMARY KEY (device_id, kind));
CREATE TABLE commands (
  command_id TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(device_id),
  requested TEXT NOT NULL, action TEXT NOT NULL, payload BLOB, state TEXT NOT NULL,
  issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  sent_at INTEGER NOT NULL DEFAULT 0, deliver_after INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0, not_now INTEGER NOT NULL DEFAULT 0, last_finished_at INTEGER NOT NULL DEFAULT 0,
  error_code TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '', outputs_json TEXT NOT NULL DEFAULT '{}',
  warning TEXT NOT NULL DEFAULT '', finished_at INTEGER NOT NULL DEFAULT 0, reported_at INTEGER NOT NULL DEFAULT 0);
CREATE INDEX commands_open ON commands(device_id, issued_at) WHERE state IN ('pending', 'sent');
CREATE INDEX commands_open_expiry ON commands(expires_at) WHERE state IN ('pending', 'sent');
CREATE INDEX commands_by_issue ON commands(issued_at);
CREATE INDEX commands_by_device ON commands(device_id, issued_at);
CREATE TABLE passcodes (
  command_id TEXT PRIMARY KEY REFERENCES commands(command_id), device_id TEXT NOT NULL, kind TEXT NOT NULL,
  sealed BLOB NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX passcodes_by_device ON passcodes(device_id);
CREATE INDEX passcodes_by_expiry ON passcodes(expires_at);
";

/// Creates the schema in an empty database, or checks an existing one is this build's.
pub fn ensure(conn: &Connection) -> Result<(), StoreError> {
    let sql = |e: rusqlite::Error| StoreError::Failure(e.to_string());
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql)?;
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).map_err(sql)?;
    match (version, tables) {
        (VERSION, _) => Ok(()),
        (0, 0) => {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {VERSION}; COMMIT;"))
                .map_err(sql)
        }
        (0, _) => Err(StoreError::Corrupt(
            "this database was written by an older latchkey-server without a schema version; start the server on a new data directory".into(),
        )),
        (other, _) => Err(StoreError::Corrupt(format!(
            "this database has schema version {other}, this server understands {VERSION}; use a matching latchkey-server"
        ))),
    }
}
