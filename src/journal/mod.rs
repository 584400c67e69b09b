//! The command journal (SQLite, WAL, `synchronous = FULL`) under `state.dir/journal.db`.
//!
//! A command moves `received → applying → done` ([`state`]); a done command's result is kept
//! until the server acks it. The command is written before anything is decided, `applying` right
//! before the first side effect, and the result before it is reported — so a crash at any point
//! loses no result and never applies a command twice. The passcode or token a command carries is
//! dropped from the journal as soon as the command is done.
//!
//! The journal carries the id of the enrollment it belongs to. An enrolled agent that finds no
//! journal (deleted, or an empty file) knows it was lost: it starts a new one in recovery, and
//! until the commands issued before the loss are settled each is checked against the device
//! (was its effect applied?) before anything is done — never applied twice. Finished,
//! acknowledged rows are pruned after [`RETENTION_MS`], longer than any command may live.
use std::path::Path;
use std::sync::Mutex;

use latchkey_common::sqlite::Cached;
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

use latchkey_proto::v1;

pub mod state;

pub use state::{Event, State};

/// The journal connection's page cache, KiB.
const JOURNAL_CACHE_KIB: i64 = 256;

/// How long finished, acknowledged commands are kept: longer than the longest command TTL (30
/// days), so any command the server could still deliver is recognised.
pub const RETENTION_MS: i64 = 31 * 24 * 3600 * 1000;

/// Journal failures.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The file is not a journal (or is damaged).
    #[error("{0} is not a readable journal ({1}); it was left untouched — move it aside to start a new one (commands it recorded may then be settled as interrupted)")]
    Corrupt(String, String),
    /// The journal belongs to another enrollment.
    #[error("{0} belongs to another enrollment of this device; move it aside or enroll again")]
    Foreign(String),
    /// A transition the state table does not allow.
    #[error("{0}")]
    Transition(String),
    /// Creating the file failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

type R<T> = Result<T, JournalError>;

/// What the journal knew about a command when it arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Receipt {
    /// First time seen (or seen with a `not_now` result): act on it.
    New,
    /// Seen before: do not act again.
    Known(State),
}

/// How the journal was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It was there.
    Existing,
    /// A new one (at enrollment).
    Created,
    /// It should have been there and was not: a new one, in recovery since this time (Unix ms).
    Recovered(i64),
}

/// Journal counts for `latchkey status`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Commands received or applying.
    pub pending: u64,
    /// Results not yet acked by the server.
    pub unreported: u64,
    /// Commands finished and acked.
    pub reported: u64,
}

/// The journal.
pub struct Journal {
    conn: Mutex<Conn>,
    lost_at: Option<i64>,
}

/// The connection and the `synchronous` setting it has now.
struct Conn {
    sqlite: Connection,
    durable: bool,
}

/// Whether a journal write must be on disk before the agent goes on.
///
/// Durable (an fsync of the WAL): `applying` — written before any side effect, it is what
/// recovery reads after a crash — and the result. Not durable (committed, atomic, ordered before
/// the next durable commit, at worst lost to a power cut): receipt of a command (the server
/// delivers an unanswered command again), the server's acknowledgement (the result is then
/// reported again and the server answers "duplicate"), pruning and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    Durable,
    Lazy,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS commands (
  command_id TEXT PRIMARY KEY, state TEXT NOT NULL, kind TEXT NOT NULL, payload BLOB,
  result BLOB, result_status INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0,
  received_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS commands_unreported ON commands(updated_at) WHERE state = 'done' AND acked = 0;
CREATE INDEX IF NOT EXISTS commands_open ON commands(state) WHERE state != 'done';
CREATE INDEX IF NOT EXISTS commands_prunable ON commands(updated_at) WHERE acked = 1;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

const KV_JOURNAL_ID: &str = "journal_id";
const KV_LOST_AT: &str = "lost_at";

/// Checkpoints and truncates the WAL so older page images (which held the secret) leave the
/// file.
fn scrub_wal(c: &Connection) -> R<()> {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(JournalError::from)
}

/// Whether a journaled command payload carries a secret (a passcode, an unlock token, a PIN).
fn holds_secret(payload: &[u8]) -> bool {
    use v1::command::Action;
    match v1::Command::decode(payload).map(|c| c.action) {
        Ok(Some(Action::ResetPasscode(r))) => !r.new_passcode.is_empty(),
        Ok(Some(Action::RemovePasscode(r))) => !r.unlock_token.is_empty(),
        Ok(Some(Action::RemoteLock(l))) => !l.pin.is_empty(),
        Ok(Some(Action::ResetPin(_) | Action::Unsupported(_)) | None) => false,
        // Undecodable: assume the worst.
        Err(_) => true,
    }
}

fn kv_get(c: &Connection, key: &str) -> R<Option<String>> {
    Ok(c.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| r.get(0)).optional()?)
}

fn kv_set(c: &Connection, key: &str, value: &str) -> R<()> {
    c.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)", params![key, value])?;
    Ok(())
}

fn is_empty_or_missing(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true)
}

impl Journal {
    /// Opens the journal of the enrollment `journal_id`. `expected` says the enrollment already
    /// has one (the daemon, after enrollment created it): a missing one is then a loss.
    pub fn open(path: &Path, journal_id: &str, expected: bool) -> R<(Self, Opened)> {
        let display = path.display().to_string();
        let fresh = is_empty_or_missing(path);
        if fresh {
            use std::os::unix::fs::OpenOptionsExt;
            // 0600 from the start: SQLite gives its -wal and -shm files the database's mode.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| JournalError::Io(display.clone(), e))?;
        }
        let conn = latchkey_common::sqlite::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // A file that is not SQLite fails here, before anything writes to it.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| JournalError::Corrupt(display.clone(), e.to_string()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Zero freed content so a dropped passcode does not linger in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        // SQLite's page cache never shrinks, and its default (2 MiB) let a burst of commands
        // raise an agent's memory by up to 2 MiB for good (measured: +0.28 KiB per command).
        // What the agent reads again (open and unreported commands) is small and indexed, and
        // the kernel still caches the file.
        conn.pragma_update(None, "cache_size", -JOURNAL_CACHE_KIB)?;
        conn.execute_batch(SCHEMA).map_err(|e| JournalError::Corrupt(display.clone(), e.to_string()))?;
        let now = latchkey_common::time::now_ms();
        let opened = match kv_get(&conn, KV_JOURNAL_ID)? {
            Some(id) if id == journal_id => Opened::Existing,
            Some(_) => return Err(JournalError::Foreign(display)),
            None if fresh && expected => {
                kv_set(&conn, KV_JOURNAL_ID, journal_id)?;
                kv_set(&conn, KV_LOST_AT, &now.to_string())?;
                Opened::Recovered(now)
            }
            None => {
                kv_set(&conn, KV_JOURNAL_ID, journal_id)?;
                Opened::Created
            }
        };
        let lost_at = kv_get(&conn, KV_LOST_AT)?.and_then(|v| v.parse().ok());
        Ok((Self { conn: Mutex::new(Conn { sqlite: conn, durable: true }), lost_at }, opened))
    }

    /// When the journal was found lost, if it was: commands issued before then are checked
    /// against the device before anything is done.
    pub fn lost_at(&self) -> Option<i64> {
        self.lost_at
    }

    /// Runs `f` on the connection; its commits are as durable as `sync` says.
    fn with<T>(&self, sync: Sync, f: impl FnOnce(&mut Connection) -> R<T>) -> R<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let durable = sync == Sync::Durable;
        if conn.durable != durable {
            conn.sqlite.exec(if durable { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" }, [])?;
            conn.durable = durable;
        }
        f(&mut conn.sqlite)
    }

    /// Journals a command before anything is done with it.
    pub fn receive(&self, command: &v1::Command, kind: &str, now: i64) -> R<Receipt> {
        self.with(Sync::Lazy, |c| {
            let tx = c.transaction()?;
            let existing: Option<(String, i32)> = tx
                .row(
                    "SELECT state, result_status FROM commands WHERE command_id = ?1",
                    params![command.command_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((text, status)) = existing {
                let current = State::parse(&text).ok_or_else(|| JournalError::Transition(format!("journal: unknown state {text:?}")))?;
                let not_now = status == v1::CommandStatus::NotNow as i32;
                match state::next(current, Event::Redeliver, not_now) {
                    Ok(to) => {
                        tx.exec(
                            "UPDATE commands SET state = ?2, payload = ?3, result = NULL, result_status = 0, acked = 0,
                               updated_at = ?4 WHERE command_id = ?1",
                            params![command.command_id, to.as_str(), command.encode_to_vec(), now],
                        )?;
                        tx.commit()?;
                        return Ok(Receipt::New);
                    }
                    Err(_) => return Ok(Receipt::Known(current)),
                }
            }
            tx.exec(
                "INSERT INTO commands (command_id, state, kind, payload, received_at, updated_at) VALUES (?1, 'received', ?2, ?3, ?4, ?4)",
                params![command.command_id, kind, command.encode_to_vec(), now],
            )?;
            tx.commit()?;
            Ok(Receipt::New)
        })
    }

    fn transition(&self, command_id: &str, event: Event, result: Option<&v1::CommandResult>, now: i64) -> R<()> {
        self.with(Sync::Durable, |c| {
            let tx = c.transaction()?;
            let (text, payload): (String, Option<Vec<u8>>) =
                tx.row("SELECT state, payload FROM commands WHERE command_id = ?1", params![command_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            // Only a payload that held a secret leaves page images worth scrubbing.
            let scrub = result.is_some() && payload.as_deref().is_some_and(holds_secret);
            let current = State::parse(&text)
                .ok_or_else(|| JournalError::Transition(format!("journal: unknown state {text:?}")))?;
            let to = state::next(current, event, false).map_err(JournalError::Transition)?;
            match result {
                // Done: keep the result, drop the payload and its secrets.
                Some(r) => tx.exec(
                    "UPDATE commands SET state = ?2, result = ?3, result_status = ?4, payload = NULL, updated_at = ?5
                     WHERE command_id = ?1",
                    params![command_id, to.as_str(), r.encode_to_vec(), r.status, now],
                )?,
                None => tx.exec(
                    "UPDATE commands SET state = ?2, updated_at = ?3 WHERE command_id = ?1",
                    params![command_id, to.as_str(), now],
                )?,
            };
            tx.commit()?;
            if scrub {
                scrub_wal(c)?;
            }
            Ok(())
        })
    }

    /// Records that a side effect is about to start.
    pub fn applying(&self, command_id: &str, now: i64) -> R<()> {
        self.transition(command_id, Event::Apply, None, now)
    }

    /// Records the result.
    pub fn finish(&self, result: &v1::CommandResult, now: i64) -> R<()> {
        self.transition(&result.command_id, Event::Finish, Some(result), now)
    }

    /// The server acked the result: keep it, minus any device-generated PIN.
    pub fn ack(&self, command_id: &str, now: i64) -> R<()> {
        self.with(Sync::Lazy, |c| {
            let result: Option<Vec<u8>> = c
                .row("SELECT result FROM commands WHERE command_id = ?1", params![command_id], |r| r.get(0))
                .optional()?
                .flatten();
            let pin_dropped =
                result.and_then(|bytes| v1::CommandResult::decode(bytes.as_slice()).ok()).and_then(|mut r| {
                    (!r.generated_pin.is_empty()).then(|| {
                        zeroize::Zeroize::zeroize(&mut r.generated_pin);
                        r.encode_to_vec()
                    })
                });
            c.exec(
                "UPDATE commands SET acked = 1, result = COALESCE(?2, result), updated_at = ?3 WHERE command_id = ?1",
                params![command_id, pin_dropped, now],
            )?;
            if pin_dropped.is_some() {
                scrub_wal(c)?;
            }
            Ok(())
        })
    }

    /// A command delivered again after its result was acknowledged: the server did not keep the
    /// result (Apple's protocol hands a command out until it has one), so it is reported again —
    /// never applied again. Returns true when a result was queued for reporting.
    pub fn report_again(&self, command_id: &str, now: i64) -> R<bool> {
        self.with(Sync::Lazy, |c| {
            let n = c.exec(
                "UPDATE commands SET acked = 0, updated_at = ?2
                 WHERE command_id = ?1 AND state = 'done' AND acked = 1 AND result IS NOT NULL",
                params![command_id, now],
            )?;
            Ok(n > 0)
        })
    }

    /// Results the server has not acked, oldest first.
    pub fn unreported(&self) -> R<Vec<v1::CommandResult>> {
        self.with(Sync::Lazy, |c| {
            let mut stmt =
                c.prepare_cached("SELECT result FROM commands WHERE state = 'done' AND acked = 0 ORDER BY updated_at")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for bytes in rows {
                match v1::CommandResult::decode(bytes?.as_slice()) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::error!(error = %e, "journal holds an undecodable result; skipping it"),
                }
            }
            Ok(out)
        })
    }

    /// Commands journaled but not yet acted on (after a restart).
    pub fn received(&self) -> R<Vec<v1::Command>> {
        self.with(Sync::Lazy, |c| {
            let mut stmt = c.prepare(
                "SELECT payload FROM commands WHERE state = 'received' AND payload IS NOT NULL ORDER BY received_at",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for bytes in rows {
                match v1::Command::decode(bytes?.as_slice()) {
                    Ok(cmd) => out.push(cmd),
                    Err(e) => tracing::error!(error = %e, "journal holds an undecodable command; skipping it"),
                }
            }
            Ok(out)
        })
    }

    /// Commands that were mid-effect when the agent stopped: (id, kind).
    pub fn interrupted(&self) -> R<Vec<(String, String)>> {
        self.with(Sync::Lazy, |c| {
            let mut stmt = c.prepare("SELECT command_id, kind FROM commands WHERE state = 'applying'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Counts for status.
    pub fn counts(&self) -> R<Counts> {
        self.with(Sync::Lazy, |c| {
            Ok(c.query_row(
                "SELECT COALESCE(SUM(state != 'done'), 0), COALESCE(SUM(state = 'done' AND acked = 0), 0), COALESCE(SUM(acked = 1), 0) FROM commands",
                [],
                |r| Ok(Counts { pending: r.get(0)?, unreported: r.get(1)?, reported: r.get(2)? }),
            )?)
        })
    }

    /// Deletes acknowledged rows older than `RETENTION_MS`; returns how many.
    pub fn prune(&self, now: i64) -> R<u64> {
        self.with(Sync::Lazy, |c| {
            let n =
                c.execute("DELETE FROM commands WHERE acked = 1 AND updated_at < ?1", params![now - RETENTION_MS])?;
            Ok(n as u64)
        })
    }

    /// Reads a small value.
    pub fn get(&self, key: &str) -> R<Option<String>> {
        self.with(Sync::Lazy, |c| kv_get(c, key))
    }

    /// Writes a small value.
    pub fn set(&self, key: &str, value: &str) -> R<()> {
        self.with(Sync::Durable, |c| kv_set(c, key, value))
    }

    /// Looks at a journal without changing it (`latchkey check`): how many results wait to be
    /// reported, or what is wrong.
    pub fn inspect(path: &Path, journal_id: &str) -> R<Counts> {
        let display = path.display().to_string();
        if is_empty_or_missing(path) {
            return Err(JournalError::Io(display, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let id: Option<String> = conn
            .query_row("SELECT value FROM kv WHERE key = ?1", params![KV_JOURNAL_ID], |r| r.get(0))
            .optional()
            .map_err(|e| JournalError::Corrupt(display.clone(), e.to_string()))?;
        if id.as_deref().is_some_and(|id| id != journal_id) {
            return Err(JournalError::Foreign(display));
        }
        Ok(conn.query_row(
            "SELECT COALESCE(SUM(state != 'done'), 0), COALESCE(SUM(state = 'done' AND acked = 0), 0), COALESCE(SUM(acked = 1), 0) FROM commands",
            [],
            |r| Ok(Counts { pending: r.get(0)?, unreported: r.get(1)?, reported: r.get(2)? }),
        )?)
    }

    /// Deletes the journal files of `path` (unenrollment).
    pub fn remove(path: &Path) -> std::io::Result<()> {
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset_command(id: &str, passcode: &str) -> v1::Command {
        v1::Command {
            command_id: id.into(),
            action: Some(v1::command::Action::ResetPasscode(v1::ResetPasscode {
                new_passcode: passcode.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn result(id: &str, status: v1::CommandStatus) -> v1::CommandResult {
        v1::CommandResult { command_id: id.into(), status: status as i32, ..Default::default() }
    }

    #[test]
    fn a_command_is_received_once_and_its_secret_dropped_when_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, opened) = Journal::open(&dir.path().join("j.db"), "jid", false).expect("open");
        assert_eq!(opened, Opened::Created);
        let cmd = reset_command("c1", "SECRET-9");
        assert_eq!(j.receive(&cmd, "reset_passcode", 1).expect("r1"), Receipt::New);
        assert_eq!(j.receive(&cmd, "reset_passcode", 2).expect("r2"), Receipt::Known(State::Received));
        j.applying("c1", 3).expect("applying");
        assert_eq!(j.interrupted().expect("int").len(), 1);
        let mut done = result("c1", v1::CommandStatus::Succeeded);
        done.generated_pin = "PIN-7".into();
        j.finish(&done, 4).expect("finish");
        assert_eq!(j.unreported().expect("unreported").len(), 1);
        assert_eq!(j.receive(&cmd, "reset_passcode", 5).expect("r3"), Receipt::Known(State::Done));
        j.ack("c1", 5).expect("ack");
        assert!(j.unreported().expect("unreported").is_empty());
        let raw = std::fs::read(dir.path().join("j.db")).expect("read db");
        let wal = std::fs::read(dir.path().join("j.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("SECRET-9"), "passcode lingers in the journal files");
            assert!(!text.contains("PIN-7"), "generated PIN lingers in the journal files");
        }
    }

    #[test]
    fn a_not_now_command_runs_again_when_redelivered_and_nothing_else_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = Journal::open(&dir.path().join("j.db"), "jid", false).expect("open");
        let cmd = reset_command("c", "x");
        j.receive(&cmd, "reset_passcode", 1).expect("receive");
        j.finish(&result("c", v1::CommandStatus::NotNow), 2).expect("finish");
        j.ack("c", 3).expect("ack");
        assert_eq!(j.receive(&cmd, "reset_passcode", 4).expect("redeliver"), Receipt::New);
        j.applying("c", 5).expect("applying");
        j.finish(&result("c", v1::CommandStatus::Succeeded), 6).expect("finish");
        assert_eq!(j.receive(&cmd, "reset_passcode", 7).expect("again"), Receipt::Known(State::Done));
    }

    #[test]
    fn a_result_the_server_lost_is_reported_again_and_nothing_is_applied_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = Journal::open(&dir.path().join("j.db"), "jid", false).expect("open");
        let cmd = reset_command("c", "x");
        j.receive(&cmd, "reset_passcode", 1).expect("receive");
        assert!(!j.report_again("c", 2).expect("not done yet"), "nothing to report before a result");
        j.finish(&result("c", v1::CommandStatus::Failed), 3).expect("finish");
        assert!(!j.report_again("c", 4).expect("unacked"), "an unreported result is already queued");
        j.ack("c", 5).expect("ack");
        assert_eq!(j.receive(&cmd, "reset_passcode", 6).expect("again"), Receipt::Known(State::Done));
        assert!(j.report_again("c", 6).expect("report again"));
        let queued = j.unreported().expect("unreported");
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].status, v1::CommandStatus::Failed as i32);
        assert!(!j.report_again("missing", 7).expect("unknown id"));
    }

    #[test]
    fn a_missing_journal_of_an_enrolled_device_is_a_loss_and_a_foreign_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.db");
        let (_, opened) = Journal::open(&path, "jid", true).expect("open");
        assert!(matches!(opened, Opened::Recovered(_)), "{opened:?}");
        let (j, opened) = Journal::open(&path, "jid", true).expect("reopen");
        assert_eq!(opened, Opened::Existing);
        assert!(j.lost_at().is_some(), "recovery must survive a restart");
        drop(j);
        assert!(matches!(Journal::open(&path, "other", true), Err(JournalError::Foreign(_))));
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("write");
        assert!(matches!(Journal::open(&empty, "jid", true).expect("open").1, Opened::Recovered(_)));
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"not a database, but maybe evidence".repeat(50)).expect("write");
        assert!(matches!(Journal::open(&junk, "jid", true), Err(JournalError::Corrupt(..))));
    }

    #[test]
    fn the_page_cache_stays_small_whatever_the_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = Journal::open(&dir.path().join("j.db"), "jid", false).expect("open");
        let kib: i64 = j
            .with(Sync::Lazy, |c| c.query_row("PRAGMA cache_size", [], |r| r.get(0)).map_err(JournalError::from))
            .expect("cache_size");
        assert_eq!(kib, -JOURNAL_CACHE_KIB, "a negative cache_size is KiB");
    }

    #[test]
    fn acknowledged_history_is_pruned_after_the_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = Journal::open(&dir.path().join("j.db"), "jid", false).expect("open");
        for (i, at) in [(0, 1_000), (1, RETENTION_MS + 5_000)] {
            let id = format!("c{i}");
            j.receive(&reset_command(&id, "x"), "reset_passcode", at).expect("receive");
            j.finish(&result(&id, v1::CommandStatus::Succeeded), at).expect("finish");
            j.ack(&id, at).expect("ack");
        }
        assert_eq!(j.prune(RETENTION_MS + 2_000).expect("prune"), 1);
        assert_eq!(j.counts().expect("counts").reported, 1);
    }
}
