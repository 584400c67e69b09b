//! The Linux port's record of its own effects, so that after a crash it can answer "was it
//! applied?" honestly. Before touching anything it records an intent (with a digest of the
//! account's password field before and after, when it changes the password); after the change it
//! marks the record applied. A record still marked intent is settled by comparing the shadow
//! entry itself; a lock that only has an intent cannot be told apart and says so.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How many records are kept: enough for any command still unacknowledged.
pub const KEEP: usize = 256;

/// Where a recorded effect got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// About to act.
    Intent,
    /// Done.
    Applied,
}

/// One effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The command.
    pub command_id: String,
    /// `reset_passcode`, `remote_lock`.
    pub kind: String,
    /// Where it got to.
    pub stage: Stage,
    /// SHA-256 (hex) of the password field before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_sha256: Option<String>,
    /// SHA-256 (hex) of the password field the change writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_sha256: Option<String>,
    /// When, Unix ms.
    pub at_unix_ms: u64,
}

/// Lower-case hex SHA-256 of a password field (the field itself never leaves the shadow file).
pub fn digest(field: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, field.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The effects file.
pub struct Effects {
    path: PathBuf,
}

impl Effects {
    /// The records kept at `path`.
    pub fn at(path: &Path) -> Self {
        Self { path: path.to_owned() }
    }

    /// Every record, oldest first; an absent file is an empty list.
    pub fn load(&self) -> std::io::Result<Vec<Record>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Adds or replaces the record of `record.command_id`, keeping the newest [`KEEP`].
    pub fn put(&self, record: Record) -> std::io::Result<()> {
        let mut records = self.load()?;
        records.retain(|r| r.command_id != record.command_id);
        records.push(record);
        let excess = records.len().saturating_sub(KEEP);
        records.drain(..excess);
        let bytes = serde_json::to_vec_pretty(&records).map_err(std::io::Error::other)?;
        crate::atomic::write(&self.path, &bytes, 0o600)
    }

    /// The record of one command.
    pub fn find(&self, command_id: &str) -> std::io::Result<Option<Record>> {
        Ok(self.load()?.into_iter().find(|r| r.command_id == command_id))
    }
}

/// Whether a recorded effect happened, given the account's password field now: `None` when it
/// cannot be told.
pub fn applied(record: Option<&Record>, field_now: Option<&str>) -> Option<bool> {
    let Some(record) = record else {
        // The intent is written before anything is touched: no record, no effect.
        return Some(false);
    };
    if record.stage == Stage::Applied {
        return Some(true);
    }
    let now = field_now.map(digest)?;
    match (&record.before_sha256, &record.after_sha256) {
        (_, Some(after)) if *after == now => Some(true),
        (Some(before), _) if *before == now => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(before: &str, after: &str) -> Record {
        Record {
            command_id: "c".into(),
            kind: "reset_passcode".into(),
            stage: Stage::Intent,
            before_sha256: Some(digest(before)),
            after_sha256: Some(digest(after)),
            at_unix_ms: 1,
        }
    }

    #[test]
    fn an_intent_is_settled_by_the_shadow_entry_itself() {
        let r = intent("!", "$y$new");
        assert_eq!(applied(Some(&r), Some("$y$new")), Some(true));
        assert_eq!(applied(Some(&r), Some("!")), Some(false));
        assert_eq!(applied(Some(&r), Some("$y$someone-else")), None, "changed by another tool: cannot tell");
        assert_eq!(applied(Some(&r), None), None);
        let lock = Record { kind: "remote_lock".into(), before_sha256: None, after_sha256: None, ..r.clone() };
        assert_eq!(applied(Some(&lock), Some("x")), None, "a lock leaves nothing to compare");
        assert_eq!(applied(Some(&Record { stage: Stage::Applied, ..lock }), None), Some(true));
        assert_eq!(applied(None, Some("x")), Some(false));
    }

    #[test]
    fn the_file_keeps_a_bounded_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let effects = Effects::at(&dir.path().join("effects.json"));
        for i in 0..KEEP + 10 {
            effects.put(Record { command_id: format!("c{i}"), ..intent("a", "b") }).expect("put");
        }
        let all = effects.load().expect("load");
        assert_eq!(all.len(), KEEP);
        assert!(effects.find("c0").expect("find").is_none());
        assert!(effects.find(&format!("c{}", KEEP + 9)).expect("find").is_some());
    }
}
