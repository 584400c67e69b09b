//! The SQLite backend (WAL, `secure_delete`).
//!
//! Writes go through one writer thread that owns the only write connection. It takes whatever
//! writes are queued (up to [`MAX_BATCH`]), runs each in its own savepoint inside one
//! `BEGIN IMMEDIATE` transaction and commits once — group commit: one fsync for the batch, and no
//! deferred transaction that could fail to upgrade its lock (`database is locked`). A write is
//! answered only after the commit.
//!
//! Each write says whether it must survive a power loss ([`Durability`]). A batch holding any
//! durable write commits with `synchronous = FULL` (the WAL is fsynced before the answer);
//! a batch of bookkeeping only (a delivery marked sent, a check-in, last-seen times, online
//! flags) commits with `NORMAL`: no fsync, still atomic and ordered before any later FULL
//! commit, and at worst lost to a power cut — after which the command is delivered again (the
//! agent's journal knows it) and the device reports its state again at its next check-in. Other processes (the admin CLI) take the same write lock with
//! `BEGIN IMMEDIATE` and wait for it with a busy timeout. Reads run on their own connections off
//! the async threads.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_common::sqlite::Cached;
use prost::Message;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use latchkey_platform::{ManagementMode, Platform, ResetTokenState, Status};
use latchkey_proto::v1;

use super::{CertMatch, NewCommand, NewResult, RetryPolicy, Store, StoreError};
use crate::records::{
    ActionFilter, ActionRecord, CertInfo, CommandState, DeviceRecord, DeviceStatus, EscrowKind, NewDevice,
    PasscodeKind, PasscodeRecord, QueueStats, ReportOutcome, Reported,
};

mod schema;

/// Most writes committed together.
pub const MAX_BATCH: usize = 256;
/// How long a writer waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections kept open for reuse.
const READERS_KEPT: usize = 8;
/// Page cache of each read connection, KiB. The kernel's page cache already holds the file, so a
/// reader's own cache mostly duplicates it; SQLite's default (2 MiB each) would be up to 16 MiB of
/// resident copies across the kept readers. The writer keeps the default: it modifies pages.
const READER_CACHE_KIB: i64 = 256;

type Finisher = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Run = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Finisher + Send>;

/// Whether a write must be on disk before it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Fsynced before the answer: commands, results, enrollments, tokens, escrow.
    Durable,
    /// Committed, not fsynced: bookkeeping that is rebuilt if lost (see the module doc).
    Bookkeeping,
}

struct Job {
    durability: Durability,
    run: Run,
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: SyncSender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

fn sql(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Failure(e.to_string()),
    }
}

/// The document a check-in is stored as (versioned: it holds the policies, opaque here).
#[derive(serde::Serialize, serde::Deserialize)]
struct ReportedDoc {
    v: u32,
    #[serde(flatten)]
    reported: Reported,
}

/// Creates the database file 0600 before SQLite opens it: SQLite gives its `-wal` and `-shm`
/// files the database file's permissions, so nothing is ever created wider.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Failure(format!("{}: {e}", path.display()))),
    }
}

fn connect(path: &Path, write: bool) -> Result<Connection, StoreError> {
    let conn = latchkey_common::sqlite::open(path).map_err(sql)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(sql)?;
    if write {
        // Freed pages are zeroed, so a deleted passcode or token does not linger in the file.
        conn.pragma_update(None, "secure_delete", "ON").map_err(sql)?;
    } else {
        conn.pragma_update(None, "query_only", "ON").map_err(sql)?;
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB).map_err(sql)?;
    }
    Ok(conn)
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job").map_err(sql)?;
    match f(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE job").map_err(sql)?;
            Ok(value)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

fn writer_loop(conn: Connection, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|job| job.durability == Durability::Durable);
        let sync = if durable { "FULL" } else { "NORMAL" };
        let begun = conn
            .pragma_update(None, "synchronous", sync)
            .and_then(|()| conn.execute_batch("BEGIN IMMEDIATE"))
            .map_err(sql);
        if let Err(e) = begun {
            for job in batch {
                (job.run)(Err(e.clone()))(Err(e.clone()));
            }
            continue;
        }
        let finishers: Vec<Finisher> = batch.into_iter().map(|job| (job.run)(Ok(&conn))).collect();
        let commit = conn.execute_batch("COMMIT").map_err(sql);
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for finish in finishers {
            finish(commit.clone());
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path)?;
        let conn = connect(path, true)?;
        schema::ensure(&conn)?;
        let (writer, jobs) = sync_channel::<Job>(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("latchkey-db-writer".into())
            .spawn(move || writer_loop(conn, jobs))
            .map_err(|e| StoreError::Failure(format!("starting the database writer: {e}")))?;
        Ok(Self { path: path.to_owned(), writer, readers: Arc::default() })
    }

    /// A write that must be on disk before it is answered.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(Durability::Durable, f).await
    }

    /// A bookkeeping write (see [`Durability::Bookkeeping`]).
    async fn note<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(Durability::Bookkeeping, f).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        durability: Durability,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let run: Run = Box::new(move |conn| match conn {
            Err(e) => {
                let _ = reply.send(Err(e));
                Box::new(|_| {})
            }
            Ok(conn) => {
                let result = in_savepoint(conn, f);
                Box::new(move |commit| {
                    let _ = reply.send(commit.and(result));
                })
            }
        });
        match self.writer.try_send(Job { durability, run }) {
            Ok(()) => {}
            // The queue is full: wait for room off the async threads.
            Err(TrySendError::Full(job)) => {
                let writer = self.writer.clone();
                tokio::task::spawn_blocking(move || writer.send(job))
                    .await
                    .map_err(|e| StoreError::Failure(e.to_string()))?
                    .map_err(|_| StoreError::Failure("the database writer stopped".into()))?;
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::Failure("the database writer stopped".into()))
            }
        }
        answer.await.map_err(|_| StoreError::Failure("the database writer stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (path, pool) = (self.path.clone(), self.readers.clone());
        tokio::task::spawn_blocking(move || {
            let kept = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match kept {
                Some(conn) => conn,
                None => connect(&path, false)?,
            };
            let result = f(&conn);
            let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS_KEPT {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Failure(e.to_string()))?
    }
}

/// Commands as `actions` shows them, newest last; on any connection (the writer's, inside its
/// transaction, sees its own change).
fn select_actions(c: &Connection, filter: ActionFilter, now: i64) -> Result<Vec<ActionRecord>, StoreError> {
    // Only the filters given become conditions, so SQLite can use the primary key (one
    // command) or `commands_by_device` instead of scanning every command (`?N IS NULL OR ...`
    // hides the index from the planner).
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = vec![Value::Integer(now)];
    // `column` is compared with the next parameter.
    let mut bind = |column: &str, op: &str, value: Value| {
        values.push(value);
        conditions.push(format!("{column} {op} ?{}", values.len()));
    };
    if let Some(id) = filter.command_id {
        bind("c.command_id", "=", Value::Text(id));
    }
    if let Some(device) = filter.device_id {
        bind("c.device_id", "=", Value::Text(device));
    }
    if let Some(state) = filter.state {
        bind(STATE_AT, "=", Value::Text(state.as_str().to_owned()));
    }
    if let Some(since) = filter.since {
        bind("c.issued_at", ">=", Value::Integer(since));
    }
    let clause = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT c.command_id, c.device_id, d.platform, c.requested, c.action, {STATE_AT},
               c.error_code, c.message, c.outputs_json, c.warning, c.attempts, c.issued_at, c.expires_at,
               c.sent_at, c.reported_at
             FROM commands c JOIN devices d ON d.device_id = c.device_id
             {clause}
             ORDER BY c.issued_at DESC, c.command_id DESC LIMIT ?{}",
            values.len() + 1
        ))
        .map_err(sql)?;
    values.push(Value::Integer(filter.limit.map(|n| n as i64).unwrap_or(-1)));
    let raw = stmt
        .query_map(rusqlite::params_from_iter(values), action_row)
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    let mut out = Vec::with_capacity(raw.len());
    for (mut record, platform, state, outputs) in raw.into_iter().rev() {
        record.platform = Platform::parse(&platform).ok_or_else(|| corrupt("platform", &platform))?;
        record.state = CommandState::parse(&state).ok_or_else(|| corrupt("command state", &state))?;
        record.outputs = serde_json::from_str(&outputs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        out.push(record);
    }
    Ok(out)
}

/// Whether a token exists, is unused and unexpired.
fn token_usable(c: &Connection, token_hash: &str, now: i64) -> Result<Option<String>, StoreError> {
    let row: Option<(i64, Option<i64>, Option<String>)> = c
        .row(
            "SELECT expires_at, used_at, reserved_by FROM enrollment_tokens WHERE token_hash = ?1",
            params![token_hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(sql)?;
    match row {
        None => Err(StoreError::TokenUnknown),
        Some((_, Some(_), _)) => Err(StoreError::TokenUsed),
        Some((expires_at, None, _)) if expires_at <= now => Err(StoreError::TokenExpired),
        Some((_, None, reserved_by)) => Ok(reserved_by),
    }
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

const DEVICE_COLUMNS: &str = "d.device_id, d.platform, d.mode, d.os_version, d.model, d.hostname, d.agent_version,
  d.status, d.enrolled_at, d.online, d.last_seen, d.last_checkin, d.reset_token_state, d.passcode_present,
  d.device_policy, d.locked, d.cert_not_after, d.reported,
  EXISTS(SELECT 1 FROM escrow e WHERE e.device_id = d.device_id AND e.kind = 'unlock')";

type RawDevice = (
    DeviceRecord,
    // platform, mode, status, reset token state, reported document — parsed after the row read
    (String, String, String, String, Option<String>),
);

fn device_row(r: &Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok((
        DeviceRecord {
            device_id: r.get(0)?,
            platform: Platform::Linux,
            mode: ManagementMode::LinuxSystem,
            os_version: r.get(3)?,
            model: r.get(4)?,
            hostname: r.get(5)?,
            agent_version: r.get(6)?,
            status: DeviceStatus::Active,
            enrolled_at: r.get(8)?,
            online: r.get(9)?,
            last_seen: r.get(10)?,
            last_checkin: r.get(11)?,
            reset_token_state: ResetTokenState::NotApplicable,
            passcode_present: r.get(13)?,
            device_policy: r.get(14)?,
            locked: r.get(15)?,
            cert_not_after: r.get(16)?,
            reported: None,
            unlock_token_escrowed: r.get(18)?,
        },
        (r.get(1)?, r.get(2)?, r.get(7)?, r.get(12)?, r.get(17)?),
    ))
}

fn finish_device((mut d, (platform, mode, status, token, reported)): RawDevice) -> Result<DeviceRecord, StoreError> {
    d.platform = Platform::parse(&platform).ok_or_else(|| corrupt("platform", &platform))?;
    d.mode = ManagementMode::parse(&mode).ok_or_else(|| corrupt("management mode", &mode))?;
    d.status = DeviceStatus::parse(&status).ok_or_else(|| corrupt("device status", &status))?;
    d.reset_token_state = ResetTokenState::parse(&token).ok_or_else(|| corrupt("reset token state", &token))?;
    d.reported = match reported {
        Some(text) => {
            let doc: ReportedDoc = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Some(doc.reported)
        }
        None => None,
    };
    Ok(d)
}

/// The state a command shows at `now`: one past its expiry without a result is expired.
const STATE_AT: &str =
    "CASE WHEN c.state IN ('pending', 'sent') AND c.expires_at <= ?1 THEN 'expired' ELSE c.state END";

fn action_row(r: &Row<'_>) -> rusqlite::Result<(ActionRecord, String, String, String)> {
    Ok((
        ActionRecord {
            command_id: r.get(0)?,
            device_id: r.get(1)?,
            platform: Platform::Linux,
            requested: r.get(3)?,
            action: r.get(4)?,
            state: CommandState::Pending,
            error_code: r.get(6)?,
            message: r.get(7)?,
            outputs: BTreeMap::new(),
            warning: r.get(9)?,
            attempts: r.get(10)?,
            issued_at: r.get(11)?,
            expires_at: r.get(12)?,
            sent_at: r.get(13)?,
            reported_at: r.get(14)?,
        },
        r.get(2)?,
        r.get(5)?,
        r.get(8)?,
    ))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_token(&self, token_hash: &str, now: i64, expires_at: i64) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        self.write(move |c| {
            c.exec(
                "INSERT INTO enrollment_tokens (token_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
                params![token_hash, now, expires_at],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn check_token(&self, token_hash: &str, now: i64) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        self.read(move |c| token_usable(c, &token_hash, now).map(|_| ())).await
    }

    async fn enroll(&self, token_hash: &str, now: i64, device: NewDevice) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        self.write(move |c| {
            // A token whose first enrollment never came back (the device died before storing its
            // certificate) is reserved, not spent: the retry replaces the orphan.
            if let Some(orphan) = token_usable(c, &token_hash, now)? {
                c.exec("DELETE FROM devices WHERE device_id = ?1 AND status = 'enrolling'", params![orphan])
                    .map_err(sql)?;
            }
            c.exec(
                "UPDATE enrollment_tokens SET reserved_by = ?1 WHERE token_hash = ?2",
                params![device.device_id, token_hash],
            )
            .map_err(sql)?;
            c.exec(
                "INSERT INTO devices (device_id, platform, mode, os_version, model, hostname, status, token_hash,
                   enrolled_at, cert_sha256, cert_not_after)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'enrolling', ?7, ?8, ?9, ?10)",
                params![
                    device.device_id,
                    device.facts.platform.as_str(),
                    device.facts.mode.as_str(),
                    device.facts.os_version,
                    device.facts.model,
                    device.hostname,
                    token_hash,
                    now,
                    device.cert.sha256,
                    device.cert.not_after
                ],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn device_by_cert(&self, sha256: &str) -> Result<Option<CertMatch>, StoreError> {
        let sha256 = sha256.to_owned();
        let found = self
            .read(move |c| {
                c.row(
                    "SELECT device_id, status, renewed_cert_sha256 IS NOT NULL AND renewed_cert_sha256 = ?1
                     FROM devices WHERE cert_sha256 = ?1 OR renewed_cert_sha256 = ?1",
                    params![sha256],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?)),
                )
                .optional()
                .map_err(sql)
            })
            .await?;
        let Some((device_id, status, renewed)) = found else { return Ok(None) };
        if status == "enrolling" {
            // First authenticated call: the device holds its certificate, so the token is spent.
            let id = device_id.clone();
            self.write(move |c| {
                let n = c
                    .exec(
                        "UPDATE devices SET status = 'active' WHERE device_id = ?1 AND status = 'enrolling'",
                        params![id],
                    )
                    .map_err(sql)?;
                if n == 1 {
                    c.exec(
                        "UPDATE enrollment_tokens SET used_at = ?2, device_id = ?1
                         WHERE token_hash = (SELECT token_hash FROM devices WHERE device_id = ?1)",
                        params![id, crate::now_ms()],
                    )
                    .map_err(sql)?;
                }
                Ok(())
            })
            .await?;
            return Ok(Some(CertMatch { device_id, status: DeviceStatus::Active, renewed }));
        }
        let status = DeviceStatus::parse(&status).ok_or_else(|| corrupt("device status", &status))?;
        Ok(Some(CertMatch { device_id, status, renewed }))
    }

    async fn set_renewed_cert(&self, device_id: &str, cert: CertInfo) -> Result<(), StoreError> {
        let device_id = device_id.to_owned();
        self.write(move |c| {
            let n = c
                .exec(
                    "UPDATE devices SET renewed_cert_sha256 = ?2, renewed_cert_not_after = ?3 WHERE device_id = ?1",
                    params![device_id, cert.sha256, cert.not_after],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(StoreError::UnknownDevice(device_id));
            }
            Ok(())
        })
        .await
    }

    async fn promote_renewed_cert(&self, device_id: &str, sha256: &str) -> Result<(), StoreError> {
        let (device_id, sha256) = (device_id.to_owned(), sha256.to_owned());
        self.write(move |c| {
            c.exec(
                "UPDATE devices SET cert_sha256 = renewed_cert_sha256, cert_not_after = renewed_cert_not_after,
                   renewed_cert_sha256 = NULL, renewed_cert_not_after = NULL
                 WHERE device_id = ?1 AND renewed_cert_sha256 = ?2",
                params![device_id, sha256],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn check_in(&self, device_id: &str, now: i64, reported: Reported) -> Result<(), StoreError> {
        let device_id = device_id.to_owned();
        let state = &reported.state;
        let (token, present, policy, locked) =
            (state.reset_token.as_str(), state.passcode_present, state.device_policy.is_some(), state.locked);
        let (os, model, host, agent) = (
            reported.facts.os_version.clone(),
            reported.facts.model.clone(),
            reported.hostname.clone(),
            reported.agent_version.clone(),
        );
        let doc =
            serde_json::to_string(&ReportedDoc { v: 1, reported }).map_err(|e| StoreError::Failure(e.to_string()))?;
        self.note(move |c| {
            let n = c
                .exec(
                    "UPDATE devices SET last_checkin = ?2, last_seen = MAX(last_seen, ?2), reset_token_state = ?3,
                       passcode_present = ?4, device_policy = ?5, locked = ?6, os_version = ?7, model = ?8,
                       hostname = ?9, agent_version = ?10, reported = ?11
                     WHERE device_id = ?1",
                    params![device_id, now, token, present, policy, locked, os, model, host, agent, doc],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(StoreError::UnknownDevice(device_id));
            }
            Ok(())
        })
        .await
    }

    async fn set_escrow(&self, device_id: &str, kind: EscrowKind, sealed: Vec<u8>, now: i64) -> Result<(), StoreError> {
        let device_id = device_id.to_owned();
        self.write(move |c| {
            c.exec(
                "INSERT INTO escrow (device_id, kind, sealed, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device_id, kind) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
                params![device_id, kind.as_str(), sealed, now],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::UnknownDevice(device_id.clone()),
                _ => sql(e),
            })?;
            Ok(())
        })
        .await
    }

    async fn escrow(&self, device_id: &str, kind: EscrowKind) -> Result<Option<Vec<u8>>, StoreError> {
        let device_id = device_id.to_owned();
        self.read(move |c| {
            c.row(
                "SELECT sealed FROM escrow WHERE device_id = ?1 AND kind = ?2",
                params![device_id, kind.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }

    async fn set_online(&self, device_id: &str, online: bool, now: i64) -> Result<(), StoreError> {
        let device_id = device_id.to_owned();
        self.note(move |c| {
            c.exec(
                "UPDATE devices SET online = ?2, last_seen = MAX(last_seen, ?3) WHERE device_id = ?1",
                params![device_id, online, now],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn all_offline(&self) -> Result<(), StoreError> {
        self.note(|c| c.exec("UPDATE devices SET online = 0 WHERE online = 1", []).map(|_| ()).map_err(sql)).await
    }

    async fn touch(&self, seen: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.note(move |c| {
            let mut stmt = c
                .prepare_cached("UPDATE devices SET last_seen = MAX(last_seen, ?2) WHERE device_id = ?1")
                .map_err(sql)?;
            for (device_id, at) in &seen {
                stmt.execute(params![device_id, at]).map_err(sql)?;
            }
            Ok(())
        })
        .await
    }

    async fn end_management(&self, device_id: &str, status: DeviceStatus, now: i64) -> Result<u64, StoreError> {
        let device_id = device_id.to_owned();
        self.write(move |c| {
            let n = c
                .exec(
                    "UPDATE devices SET status = ?2, ended_at = ?3, online = 0, renewed_cert_sha256 = NULL
                     WHERE device_id = ?1",
                    params![device_id, status.as_str(), now],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(StoreError::UnknownDevice(device_id));
            }
            let message = format!("cancelled: the device was {}", status.as_str());
            let cancelled = c
                .exec(
                    "UPDATE commands SET state = 'cancelled', payload = NULL, message = ?2
                     WHERE device_id = ?1 AND state IN ('pending', 'sent')",
                    params![device_id, message],
                )
                .map_err(sql)?;
            c.exec("DELETE FROM escrow WHERE device_id = ?1", params![device_id]).map_err(sql)?;
            c.exec("DELETE FROM passcodes WHERE device_id = ?1", params![device_id]).map_err(sql)?;
            Ok(cancelled as u64)
        })
        .await
    }

    async fn queue(&self, new: NewCommand) -> Result<(), StoreError> {
        self.write(move |c| {
            let cmd = &new.command;
            let status: Option<String> = c
                .row("SELECT status FROM devices WHERE device_id = ?1", params![cmd.device_id], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            match status.as_deref() {
                None => return Err(StoreError::UnknownDevice(cmd.device_id.clone())),
                Some("active") | Some("enrolling") => {}
                Some("retired") => return Err(StoreError::NotActive(cmd.device_id.clone(), "retired")),
                Some(_) => return Err(StoreError::NotActive(cmd.device_id.clone(), "unenrolled")),
            }
            c.exec(
                "INSERT INTO commands (command_id, device_id, requested, action, payload, state, issued_at, expires_at, warning)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8)",
                params![
                    cmd.command_id,
                    cmd.device_id,
                    new.requested,
                    new.action,
                    cmd.encode_to_vec(),
                    cmd.issued_at_unix_ms,
                    cmd.expires_at_unix_ms,
                    new.warning
                ],
            )
            .map_err(sql)?;
            if let Some((kind, sealed)) = &new.passcode {
                let created = cmd.issued_at_unix_ms;
                c.exec(
                    "INSERT INTO passcodes (command_id, device_id, kind, sealed, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![cmd.command_id, cmd.device_id, kind.as_str(), sealed, created, created + kind.visible_ms()],
                )
                .map_err(sql)?;
            }
            Ok(())
        })
        .await
    }

    async fn deliverable(&self, device_id: &str, now: i64) -> Result<Vec<v1::Command>, StoreError> {
        let device_id = device_id.to_owned();
        self.read(move |c| {
            // The open-commands index by name: without statistics the planner prefers
            // commands_by_device and reads every command the device ever had.
            let mut stmt = c
                .prepare_cached(
                    "SELECT payload FROM commands INDEXED BY commands_open WHERE device_id = ?1 AND state IN ('pending', 'sent')
                     AND deliver_after <= ?2 AND expires_at > ?2 AND payload IS NOT NULL ORDER BY issued_at, command_id",
                )
                .map_err(sql)?;
            let rows = stmt.query_map(params![device_id, now], |r| r.get::<_, Vec<u8>>(0)).map_err(sql)?;
            let mut out = Vec::new();
            for payload in rows {
                let payload = payload.map_err(sql)?;
                out.push(v1::Command::decode(payload.as_slice()).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            Ok(out)
        })
        .await
    }

    async fn mark_sent(&self, ids: Vec<String>, now: i64) -> Result<(), StoreError> {
        self.note(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "UPDATE commands SET state = 'sent', attempts = attempts + 1,
                       sent_at = CASE WHEN state = 'pending' THEN ?2 ELSE sent_at END
                     WHERE command_id = ?1 AND state IN ('pending', 'sent')",
                )
                .map_err(sql)?;
            for id in &ids {
                stmt.execute(params![id, now]).map_err(sql)?;
            }
            Ok(())
        })
        .await
    }

    async fn record_result(
        &self,
        device_id: &str,
        result: NewResult,
        now: i64,
        retry: RetryPolicy,
    ) -> Result<ReportOutcome, StoreError> {
        let device_id = device_id.to_owned();
        self.write(move |c| {
            let row: Option<(String, String, i64, u32, i64, i64)> = c
                .row(
                    "SELECT device_id, state, reported_at, not_now, expires_at, last_finished_at
                     FROM commands WHERE command_id = ?1",
                    params![result.command_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()
                .map_err(sql)?;
            let (owner, state, reported_at, not_now, expires_at, last_finished) =
                row.ok_or_else(|| StoreError::UnknownCommand(result.command_id.clone()))?;
            if owner != device_id {
                return Err(StoreError::WrongDevice(result.command_id.clone()));
            }
            if reported_at != 0 || state == "cancelled" || (last_finished != 0 && last_finished == result.finished_at) {
                return Ok(ReportOutcome::Duplicate);
            }
            let outputs = serde_json::to_string(&result.outputs).map_err(|e| StoreError::Failure(e.to_string()))?;
            if result.status == Status::NotNow && not_now + 1 < retry.max_attempts && expires_at > now {
                // Nothing was applied: deliver it again later, a bounded number of times.
                let deliver_after = now + retry.delay_ms(not_now + 1);
                c.exec(
                    "UPDATE commands SET state = 'pending', not_now = not_now + 1, deliver_after = ?2,
                       last_finished_at = ?3, error_code = ?4, message = ?5, outputs_json = ?6
                     WHERE command_id = ?1",
                    params![
                        result.command_id,
                        deliver_after,
                        result.finished_at,
                        result.error_code,
                        result.message,
                        outputs
                    ],
                )
                .map_err(sql)?;
                return Ok(ReportOutcome::Requeued(deliver_after));
            }
            c.exec(
                "UPDATE commands SET state = ?2, error_code = ?3, message = ?4, outputs_json = ?5, finished_at = ?6,
                   reported_at = ?7, last_finished_at = ?6, payload = NULL, not_now = not_now + ?8
                 WHERE command_id = ?1",
                params![
                    result.command_id,
                    result.status.as_str(),
                    result.error_code,
                    result.message,
                    outputs,
                    result.finished_at,
                    now,
                    u32::from(result.status == Status::NotNow)
                ],
            )
            .map_err(sql)?;
            if let Some(sealed) = &result.generated_pin {
                let kind = PasscodeKind::DevicePin;
                c.exec(
                    "INSERT OR REPLACE INTO passcodes (command_id, device_id, kind, sealed, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![result.command_id, device_id, kind.as_str(), sealed, now, now + kind.visible_ms()],
                )
                .map_err(sql)?;
            }
            // The record as `actions` shows it, read inside this transaction: the admin
            // waiting on the command gets it without reading it back.
            let filter = ActionFilter { command_id: Some(result.command_id.clone()), ..ActionFilter::default() };
            let record = select_actions(c, filter, now)?
                .pop()
                .ok_or_else(|| StoreError::UnknownCommand(result.command_id.clone()))?;
            Ok(ReportOutcome::Recorded(Box::new(record)))
        })
        .await
    }

    async fn expire_due(&self, now: i64) -> Result<u64, StoreError> {
        self.write(move |c| {
            c.exec(
                "DELETE FROM passcodes WHERE command_id IN (SELECT command_id FROM commands
                   WHERE state IN ('pending', 'sent') AND expires_at <= ?1)",
                params![now],
            )
            .map_err(sql)?;
            let n = c
                .exec(
                    "UPDATE commands SET state = 'expired', payload = NULL,
                       message = 'the command expired before the device answered; issue it again if it is still needed'
                     WHERE state IN ('pending', 'sent') AND expires_at <= ?1",
                    params![now],
                )
                .map_err(sql)?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_passcodes(&self, now: i64) -> Result<u64, StoreError> {
        self.write(move |c| {
            c.exec("DELETE FROM passcodes WHERE expires_at <= ?1", params![now]).map(|n| n as u64).map_err(sql)
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let raw = self
            .read(|c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT {DEVICE_COLUMNS} FROM devices d ORDER BY d.enrolled_at, d.device_id"
                    ))
                    .map_err(sql)?;
                let rows = stmt.query_map([], device_row).map_err(sql)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql)
            })
            .await?;
        raw.into_iter().map(finish_device).collect()
    }

    async fn device(&self, device_id: &str) -> Result<DeviceRecord, StoreError> {
        let id = device_id.to_owned();
        let raw = self
            .read(move |c| {
                c.row(
                    &format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.device_id = ?1"),
                    params![id],
                    device_row,
                )
                .optional()
                .map_err(sql)
            })
            .await?;
        finish_device(raw.ok_or_else(|| StoreError::UnknownDevice(device_id.to_owned()))?)
    }

    async fn actions(&self, filter: ActionFilter, now: i64) -> Result<Vec<ActionRecord>, StoreError> {
        self.read(move |c| select_actions(c, filter, now)).await
    }

    async fn passcodes(&self, device_id: &str, now: i64) -> Result<Vec<PasscodeRecord>, StoreError> {
        let device_id = device_id.to_owned();
        let raw = self
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(&format!(
                        "SELECT p.command_id, p.device_id, p.kind, p.sealed, p.created_at, p.expires_at, {STATE_AT}
                         FROM passcodes p JOIN commands c ON c.command_id = p.command_id
                         WHERE p.device_id = ?2 AND p.expires_at > ?1 ORDER BY p.created_at"
                    ))
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![now, device_id], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, String>(6)?,
                        ))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql)
            })
            .await?;
        raw.into_iter()
            .map(|(command_id, device_id, kind, sealed, created_at, expires_at, state)| {
                Ok(PasscodeRecord {
                    command_id,
                    device_id,
                    kind: PasscodeKind::parse(&kind).ok_or_else(|| corrupt("passcode kind", &kind))?,
                    sealed,
                    created_at,
                    expires_at,
                    command_state: CommandState::parse(&state).ok_or_else(|| corrupt("command state", &state))?,
                })
            })
            .collect()
    }

    async fn open_commands(&self, now: i64) -> Result<u64, StoreError> {
        // The open commands' own index alone: its size is the open commands', not the history's.
        self.read(move |c| {
            c.row(
                "SELECT count(*) FROM commands INDEXED BY commands_open_expiry
                 WHERE state IN ('pending', 'sent') AND expires_at > ?1",
                params![now],
                |r| r.get(0),
            )
            .map_err(sql)
        })
        .await
    }

    async fn stats(&self, now: i64) -> Result<QueueStats, StoreError> {
        self.read(move |c| {
            let mut stats = QueueStats::default();
            let mut stmt = c
                .prepare_cached(&format!("SELECT c.action, {STATE_AT}, count(*) FROM commands c GROUP BY 1, 2"))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?)))
                .map_err(sql)?;
            for row in rows {
                let (action, state, n) = row.map_err(sql)?;
                stats.by_action_state.insert((action, state), n);
            }
            let oldest: Option<i64> = c
                .row(
                    "SELECT min(issued_at) FROM commands INDEXED BY commands_open_expiry
                     WHERE state IN ('pending', 'sent') AND expires_at > ?1",
                    params![now],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            stats.oldest_open_ms = oldest.map(|t| now - t).unwrap_or(0);
            let mut stmt = c.prepare_cached("SELECT status, count(*) FROM devices GROUP BY 1").map_err(sql)?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))).map_err(sql)?;
            for row in rows {
                let (status, n) = row.map_err(sql)?;
                stats.devices_by_status.insert(status, n);
            }
            Ok(stats)
        })
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests;
