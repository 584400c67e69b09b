//! The command journal (SQLite, WAL, synchronous=FULL) under `state.dir/journal.db`.
//!
//! A command moves `received → applying → done`; a done command's result is kept until the
//! server acks it. The command is written before anything is decided, `applying` is written
//! right before the first side effect, and the result is written before it is reported — so a
//! crash at any point loses no result and never applies a command twice. The passcode or token
//! a command carries is dropped from the journal as soon as the command is done.
use std::path::Path;
use std::sync::Mutex;

use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

use latchkey_proto::v1;

/// Where a command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Journaled, not acted on.
    Received,
    /// A side effect may have started.
    Applying,
    /// Result recorded.
    Done,
}

/// What happens to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// About to cause a side effect.
    Apply,
    /// A result was produced (including a refusal decided before any effect).
    Finish,
}

/// The transition table. Anything not listed is a bug, reported rather than acted on.
pub fn next(state: State, event: Event) -> Result<State, String> {
    match (state, event) {
        (State::Received, Event::Apply) => Ok(State::Applying),
        (State::Received | State::Applying, Event::Finish) => Ok(State::Done),
        (s, e) => Err(format!("journal: {e:?} is not allowed in state {s:?}")),
    }
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Applying => "applying",
            Self::Done => "done",
        }
    }

    fn parse(text: &str) -> rusqlite::Result<Self> {
        Ok(match text {
            "received" => Self::Received,
            "applying" => Self::Applying,
            "done" => Self::Done,
            other => return Err(rusqlite::Error::InvalidColumnType(0, other.to_owned(), rusqlite::types::Type::Text)),
        })
    }
}

/// What the journal knew about a command when it arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Receipt {
    /// First time seen: act on it.
    New,
    /// Seen before: do not act again.
    Known(State),
}

/// Journal counts for `latchkey status`.
#[derive(Debug, Default, serde::Serialize)]
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
    conn: Mutex<Connection>,
}

type R<T> = Result<T, rusqlite::Error>;

/// Checkpoints and truncates the WAL so older page images (which held the secret) leave the
/// file. Commands are rare, so the extra fsync is cheap.
fn scrub_wal(c: &Connection) -> R<()> {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

impl Journal {
    /// Opens (creating) the journal.
    pub fn open(path: &Path) -> R<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Zero freed content so a dropped passcode does not linger in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS commands (
               command_id TEXT PRIMARY KEY, state TEXT NOT NULL, kind TEXT NOT NULL, payload BLOB,
               result BLOB, acked INTEGER NOT NULL DEFAULT 0, received_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> R<T>) -> R<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Journals a command before anything is done with it.
    pub fn receive(&self, command: &v1::Command, kind: &str, now: i64) -> R<Receipt> {
        self.with(|c| {
            let tx = c.transaction()?;
            let existing: Option<String> =
                tx.query_row("SELECT state FROM commands WHERE command_id = ?1", params![command.command_id], |r| r.get(0)).optional()?;
            if let Some(state) = existing {
                return Ok(Receipt::Known(State::parse(&state)?));
            }
            tx.execute(
                "INSERT INTO commands (command_id, state, kind, payload, received_at, updated_at) VALUES (?1, 'received', ?2, ?3, ?4, ?4)",
                params![command.command_id, kind, command.encode_to_vec(), now],
            )?;
            tx.commit()?;
            Ok(Receipt::New)
        })
    }

    fn transition(&self, command_id: &str, event: Event, result: Option<&v1::CommandResult>, now: i64) -> R<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let state: String = tx.query_row("SELECT state FROM commands WHERE command_id = ?1", params![command_id], |r| r.get(0))?;
            let to = next(State::parse(&state)?, event).map_err(rusqlite::Error::InvalidParameterName)?;
            match result {
                // Done: keep the result, drop the payload and its secrets.
                Some(r) => tx.execute(
                    "UPDATE commands SET state = ?2, result = ?3, payload = NULL, updated_at = ?4 WHERE command_id = ?1",
                    params![command_id, to.as_str(), r.encode_to_vec(), now],
                )?,
                None => tx.execute("UPDATE commands SET state = ?2, updated_at = ?3 WHERE command_id = ?1", params![command_id, to.as_str(), now])?,
            };
            tx.commit()?;
            if result.is_some() {
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
        self.with(|c| {
            let result: Option<Vec<u8>> = c
                .query_row("SELECT result FROM commands WHERE command_id = ?1", params![command_id], |r| r.get(0))
                .optional()?
                .flatten();
            let scrubbed = result.and_then(|bytes| v1::CommandResult::decode(bytes.as_slice()).ok()).map(|mut r| {
                r.generated_pin.clear();
                r.encode_to_vec()
            });
            c.execute(
                "UPDATE commands SET acked = 1, result = COALESCE(?2, result), updated_at = ?3 WHERE command_id = ?1",
                params![command_id, scrubbed, now],
            )?;
            scrub_wal(c)
        })
    }

    /// Results the server has not acked.
    pub fn unreported(&self) -> R<Vec<v1::CommandResult>> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT result FROM commands WHERE state = 'done' AND acked = 0 ORDER BY updated_at")?;
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
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT payload FROM commands WHERE state = 'received' AND payload IS NOT NULL ORDER BY received_at",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for bytes in rows {
                if let Ok(cmd) = v1::Command::decode(bytes?.as_slice()) {
                    out.push(cmd);
                }
            }
            Ok(out)
        })
    }

    /// Commands that were mid-effect when the agent stopped: (id, kind).
    pub fn interrupted(&self) -> R<Vec<(String, String)>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT command_id, kind FROM commands WHERE state = 'applying'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Counts for status.
    pub fn counts(&self) -> R<Counts> {
        self.with(|c| {
            c.query_row(
                "SELECT COALESCE(SUM(state != 'done'), 0), COALESCE(SUM(state = 'done' AND acked = 0), 0), COALESCE(SUM(acked = 1), 0) FROM commands",
                [],
                |r| Ok(Counts { pending: r.get(0)?, unreported: r.get(1)?, reported: r.get(2)? }),
            )
        })
    }

    /// Reads a small value.
    pub fn get(&self, key: &str) -> R<Option<String>> {
        self.with(|c| c.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| r.get(0)).optional())
    }

    /// Writes a small value.
    pub fn set(&self, key: &str, value: &str) -> R<()> {
        self.with(|c| {
            c.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)", params![key, value]).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        assert_eq!(next(State::Received, Event::Apply), Ok(State::Applying));
        assert_eq!(next(State::Received, Event::Finish), Ok(State::Done));
        assert_eq!(next(State::Applying, Event::Finish), Ok(State::Done));
        assert!(next(State::Applying, Event::Apply).is_err());
        assert!(next(State::Done, Event::Apply).is_err());
        assert!(next(State::Done, Event::Finish).is_err());
    }

    #[test]
    fn a_command_is_received_once_and_its_secret_dropped_when_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j.db")).expect("open");
        let cmd = v1::Command {
            command_id: "c1".into(),
            action: Some(v1::command::Action::ResetPasscode(v1::ResetPasscode {
                new_passcode: "SECRET-9".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(j.receive(&cmd, "reset_passcode", 1).expect("r1"), Receipt::New);
        assert_eq!(j.receive(&cmd, "reset_passcode", 2).expect("r2"), Receipt::Known(State::Received));
        j.applying("c1", 3).expect("applying");
        assert_eq!(j.interrupted().expect("int").len(), 1);
        let result = v1::CommandResult {
            command_id: "c1".into(),
            status: 1,
            generated_pin: "PIN-7".into(),
            ..Default::default()
        };
        j.finish(&result, 4).expect("finish");
        assert_eq!(j.unreported().expect("unreported").len(), 1);
        j.ack("c1", 5).expect("ack");
        assert!(j.unreported().expect("unreported").is_empty());
        let raw = std::fs::read(dir.path().join("j.db")).expect("read db");
        let wal = std::fs::read(dir.path().join("j.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("SECRET-9"), "passcode lingers in the journal files");
            assert!(!text.contains("PIN-7"), "generated PIN lingers in the journal files");
        }
        drop(j);
    }
}
